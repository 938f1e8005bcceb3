//! Command-line flags: every broker setting, with Kafka's defaults where Kafka has one.

use clap::Parser;
use runnel_log::LogConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A Kafka-compatible streaming broker: thread-per-core, io_uring, zero-copy fetch.
#[derive(Debug, Clone, Parser)]
#[command(name = "runnel", version, about, long_about = None)]
pub struct Config {
    /// Address to accept Kafka clients on. Port 0 picks a free port (logged at start).
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub listen: SocketAddr,

    /// host:port clients are told to connect to (Metadata). Default: the listen address, or
    /// this host's name when listening on 0.0.0.0 / [::].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,

    /// Directory holding the partition logs and the broker's metadata.
    #[arg(long, default_value = "./runnel-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Number of shards: one pinned executor per core. Default: every CPU this process may run on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cores: Option<u16>,

    /// How long a segment removed by retention or DeleteRecords stays on disk, renamed
    /// `*.deleted`, before it is unlinked (log.segment.delete.delay.ms, the default of the
    /// topic config file.delete.delay.ms).
    #[arg(long, default_value_t = runnel_log::DEFAULT_FILE_DELETE_DELAY_MS, value_name = "MS")]
    pub log_segment_delete_delay_ms: u64,

    /// Roll a partition's active segment before it grows past this many bytes (segment.bytes).
    #[arg(long, default_value_t = runnel_log::DEFAULT_SEGMENT_BYTES, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(runnel_log::MIN_SEGMENT_BYTES..=runnel_log::MAX_SEGMENT_BYTES))]
    pub segment_bytes: u64,

    /// Roll the active segment once it is this old, even if not full (segment.ms).
    #[arg(long, default_value_t = runnel_log::DEFAULT_SEGMENT_MS, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_ms: u64,

    /// Delete closed segments whose newest record is older than this (retention.ms); -1 keeps forever.
    #[arg(long, default_value_t = runnel_log::DEFAULT_RETENTION_MS as i64, value_name = "MS",
          allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pub retention_ms: i64,

    /// What happens to a topic's old records by default (log.cleanup.policy, the default of
    /// the topic config cleanup.policy): `delete` (retention), `compact` (keep the latest
    /// record of each key) or `compact,delete`.
    #[arg(long, default_value = "delete", value_name = "POLICY", value_parser = parse_cleanup_policy)]
    pub log_cleanup_policy: String,

    /// Run the log cleaner, which compacts topics with cleanup.policy=compact
    /// (log.cleaner.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub log_cleaner_enable: bool,

    /// Memory for the cleaner's key map, across all shards (log.cleaner.dedupe.buffer.size):
    /// 24 bytes per key; a pass whose dirty section has more keys cleans in several.
    #[arg(long, default_value_t = 128 << 20, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub log_cleaner_dedupe_buffer_size: u64,

    /// The most bytes per second each shard's cleaner reads and writes
    /// (log.cleaner.io.max.bytes.per.second). Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,

    /// How long a shard's cleaner waits when no log needs cleaning (log.cleaner.backoff.ms).
    #[arg(long, default_value_t = 15_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub log_cleaner_backoff_ms: u64,

    /// Clean a log once this share of it is dirty (log.cleaner.min.cleanable.ratio, the
    /// default of min.cleanable.dirty.ratio).
    #[arg(long, default_value_t = 0.5, value_name = "RATIO", value_parser = parse_ratio)]
    pub log_cleaner_min_cleanable_ratio: f64,

    /// How long a tombstone stays after the cleaner first sees it
    /// (log.cleaner.delete.retention.ms, the default of delete.retention.ms).
    #[arg(long, default_value_t = runnel_log::DEFAULT_DELETE_RETENTION_MS, value_name = "MS")]
    pub log_cleaner_delete_retention_ms: u64,

    /// A record stays uncompacted at least this long (log.cleaner.min.compaction.lag.ms).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub log_cleaner_min_compaction_lag_ms: u64,

    /// A record older than this is compacted whatever the dirty ratio
    /// (log.cleaner.max.compaction.lag.ms).
    #[arg(long, default_value_t = i64::MAX as u64, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    pub log_cleaner_max_compaction_lag_ms: u64,

    /// Fault point for crash tests, not for production: the broker kills itself (SIGKILL)
    /// right after its cleaner's first swap reaches this step: `cleaned` (new segment
    /// written), `swap` (renamed .swap, committed) or `old-removed` (an old segment gone).
    #[arg(long, hide = true, value_name = "STEP", value_parser = ["cleaned", "swap", "old-removed"])]
    pub test_cleaner_crash_after: Option<String>,

    /// Fault point for tests, not for production: shard N panics once it serves, to show
    /// that a panic stops the whole broker loudly (the panic hook aborts with its context).
    #[arg(long, hide = true, value_name = "N")]
    pub test_panic_shard: Option<usize>,

    /// Delete the oldest segments while a partition is larger than this (retention.bytes); -1: no limit.
    #[arg(long, default_value_t = -1, value_name = "BYTES", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    pub retention_bytes: i64,

    /// fdatasync a partition after this many records (flush.messages). Default: leave it to the OS, as Kafka does.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_interval_messages: Option<u64>,

    /// fdatasync data older than this many ms (flush.ms). Default: leave it to the OS.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_interval_ms: Option<u64>,

    /// fdatasync before answering a produce request with acks=-1 (all), so an acknowledged
    /// record survives a power loss. Off: acks=-1 behaves like acks=1, as on a one-replica Kafka.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sync_on_acks_all: bool,

    /// Reserve each new segment's disk blocks up front (log.preallocate): appends never wait
    /// on block allocation, at the price of segment.bytes of disk per partition at once.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub preallocate: bool,

    /// Create a topic when a client asks for its metadata (auto.create.topics.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub auto_create_topics: bool,

    /// Partitions of an auto-created topic, and of CreateTopics without a count (num.partitions).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub default_partitions: i32,

    /// Largest request frame accepted; a larger one closes the connection (socket.request.max.bytes).
    #[arg(long, default_value_t = 100 << 20, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1024..=i32::MAX as i64))]
    pub max_request_bytes: u32,

    /// Bytes of requests a shard holds (read, not yet answered) before it stops reading from
    /// its connections (queued.max.request.bytes); at least --max-request-bytes.
    #[arg(long, default_value_t = 512 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    pub queued_max_request_bytes: u64,

    /// Close a connection that sends no request for this long (connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_max_idle_ms: u64,

    /// Most client connections the broker holds (max.connections); one more is accepted and
    /// closed at once, counted and logged. Default: what the open-file limit leaves room for
    /// (see `limits::default_max_connections`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Most client connections from one IP address (max.connections.per.ip). Default: no
    /// limit beyond --max-connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: Option<u32>,

    /// Once the first byte of a request has arrived, the whole request must arrive within
    /// this, or the connection is closed: a client that trickles a request (slowloris)
    /// cannot hold a connection, and the request budget its bytes take, for long.
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub request_read_timeout_ms: u64,

    /// A client that takes no bytes of an answer for this long (it stopped reading its
    /// socket) is disconnected.
    #[arg(long, default_value_t = 60_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub socket_send_timeout_ms: u64,

    /// Requests one connection may have read and not yet answered; the connection is not
    /// read further until an answer goes out (Kafka clients keep at most 5 produce requests
    /// in flight).
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connection_max_in_flight_requests: u32,

    /// Largest fetch response, whatever a client asks for (fetch.max.bytes).
    #[arg(long, default_value_t = 57_671_680, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1024..=i32::MAX as i64 / 2))]
    pub fetch_max_bytes: u32,

    /// Largest record batch a topic accepts by default (max.message.bytes).
    #[arg(long, default_value_t = 1_048_588, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(61..=i32::MAX as i64))]
    pub max_message_bytes: u32,

    /// Serve fetches by splicing segment bytes from the page cache to the socket (on), or by
    /// reading them into user space and writing them (off: for comparison, or for filesystems
    /// that cannot splice).
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub zero_copy: bool,

    /// How often each shard applies retention (log.retention.check.interval.ms).
    #[arg(long, default_value_t = 300_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_check_interval_ms: u64,

    /// How often the recovery points and log start offsets are checkpointed to the data dir
    /// (log.flush.offset.checkpoint.interval.ms): after a crash, recovery re-reads only what
    /// was appended since, and DeleteRecords older than this survives.
    #[arg(long, default_value_t = 60_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub checkpoint_interval_ms: u64,

    /// Forget an idempotent producer idle for this long (producer.id.expiration.ms); a
    /// retry after that is no longer recognised as a duplicate.
    #[arg(long, default_value_t = runnel_log::DEFAULT_PRODUCER_ID_EXPIRATION_MS, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub producer_id_expiration_ms: u64,

    /// Smallest session timeout a group member may ask for (group.min.session.timeout.ms).
    #[arg(long, default_value_t = 6_000, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
    pub group_min_session_timeout_ms: i32,

    /// Largest session timeout a group member may ask for (group.max.session.timeout.ms).
    #[arg(long, default_value_t = 1_800_000, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
    pub group_max_session_timeout_ms: i32,

    /// How often KIP-848 consumer group members heartbeat
    /// (group.consumer.heartbeat.interval.ms): also how soon a member learns of a new
    /// assignment.
    #[arg(long, default_value_t = 5_000, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
    pub group_consumer_heartbeat_interval_ms: i32,

    /// A KIP-848 consumer group member not heard from for this long is removed
    /// (group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = 45_000, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
    pub group_consumer_session_timeout_ms: i32,

    /// How long the first rebalance of an empty group waits for more members
    /// (group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3_000, value_name = "MS")]
    pub group_initial_rebalance_delay_ms: u64,

    /// Committed offsets of a group without members are deleted after this long
    /// (offsets.retention.minutes, in ms).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub offsets_retention_ms: u64,

    /// Partitions of the internal __consumer_offsets topic, fixed when it is first created
    /// (offsets.topic.num.partitions).
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub offsets_topic_partitions: i32,

    /// This broker's node id (node.id): unique in the cluster, fixed for its data dir.
    #[arg(long, default_value_t = runnel_metadata::DEFAULT_NODE_ID, value_name = "N",
          value_parser = clap::value_parser!(i32).range(0..=1_000_000))]
    pub node_id: i32,

    /// The metadata quorum (controller.quorum.voters): every node of the cluster as
    /// ID@HOST:PORT, comma-separated, the address being its controller listener. Every node
    /// is a voter and a broker (Kafka's combined mode). Default: this node alone.
    #[arg(long, value_name = "ID@HOST:PORT,...", value_parser = parse_voters)]
    pub controller_quorum_voters: Option<Voters>,

    /// Address to accept the other controllers on. Default: this node's address in
    /// --controller-quorum-voters.
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<SocketAddr>,

    /// This broker's rack (broker.rack): replicas of a partition go to different racks.
    #[arg(long, value_name = "RACK", value_parser = parse_rack)]
    pub rack: Option<String>,

    /// Replication factor of topics created without one (default.replication.factor).
    /// Default: min(3, live brokers).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i16).range(1..=100))]
    pub default_replication_factor: Option<i16>,

    /// The active controller fences a broker it has not heard from for this long and moves
    /// its leaderships (broker.session.timeout.ms).
    #[arg(long, default_value_t = 9_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(200..))]
    pub broker_session_timeout_ms: u64,

    /// How often the active controller moves leaderships back to preferred replicas that
    /// are in the ISR (leader.imbalance.check.interval.seconds, in ms); 0: never.
    #[arg(long, default_value_t = 300_000, value_name = "MS")]
    pub leader_imbalance_check_interval_ms: u64,

    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (replica.lag.time.max.ms).
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub replica_lag_time_max_ms: u64,

    /// In-sync replicas an acks=all produce needs (min.insync.replicas; a topic config
    /// overrides it). Default: 2 for topics with 3 or more replicas, else 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=100))]
    pub min_insync_replicas: Option<i32>,

    /// Bytes a follower asks for per partition in one fetch (replica.fetch.max.bytes).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES", value_parser = clap::value_parser!(i32).range(1024..))]
    pub replica_fetch_max_bytes: i32,

    /// Bytes a follower asks for in one fetch, all partitions together
    /// (replica.fetch.response.max.bytes).
    #[arg(long, default_value_t = 10 << 20, value_name = "BYTES", value_parser = clap::value_parser!(i32).range(1024..))]
    pub replica_fetch_response_max_bytes: i32,

    /// How long a leader holds a follower's fetch when it has nothing new
    /// (replica.fetch.wait.max.ms).
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(i32).range(0..=30_000))]
    pub replica_fetch_wait_max_ms: i32,

    /// Bytes per second this broker, as a leader, sends to the replicas a reassignment is
    /// adding (leader.replication.throttled.rate; default: unlimited).
    #[arg(long, default_value_t = u64::MAX, hide_default_value = true, value_name = "BYTES_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub leader_replication_throttled_rate: u64,

    /// Bytes per second this broker, as a replica a reassignment is adding, fetches
    /// (follower.replication.throttled.rate; default: unlimited).
    #[arg(long, default_value_t = u64::MAX, hide_default_value = true, value_name = "BYTES_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub follower_replication_throttled_rate: u64,

    /// Snapshot the metadata log's state, and drop the entries before it, every this many
    /// entries (metadata.log.max.snapshot.interval, counted in entries).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub metadata_snapshot_interval_entries: u64,

    /// Replication factor of __consumer_offsets, capped by the number of voters
    /// (offsets.topic.replication.factor).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(i16).range(1..=100))]
    pub offsets_topic_replication_factor: i16,

    /// Partitions of the internal __transaction_state topic, created at the first
    /// transactional request (transaction.state.log.num.partitions).
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub transaction_state_log_num_partitions: i32,

    /// Replication factor of __transaction_state, capped by the live brokers when it is
    /// created (transaction.state.log.replication.factor).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(i16).range(1..=100))]
    pub transaction_state_log_replication_factor: i16,

    /// The longest transaction.timeout.ms a transactional producer may ask for
    /// (transaction.max.timeout.ms); InitProducerId with a longer one gets
    /// INVALID_TRANSACTION_TIMEOUT.
    #[arg(long, default_value_t = 900_000, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
    pub transaction_max_timeout_ms: i32,

    /// How often the transaction coordinator looks for transactions open past their
    /// timeout, and aborts them (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,

    /// Serve Prometheus metrics over HTTP on this address (GET /metrics). Default: off.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
}

/// --controller-quorum-voters: node id -> host:port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voters(pub std::collections::BTreeMap<i32, String>);

fn parse_voters(s: &str) -> Result<Voters, String> {
    let mut voters = std::collections::BTreeMap::new();
    for v in s.split(',') {
        let (id, addr) = v
            .split_once('@')
            .ok_or_else(|| format!("{v:?} is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("{v:?}: the node id must be a number >= 0"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{v:?} is not ID@HOST:PORT"))?;
        port.parse::<u16>()
            .map_err(|_| format!("{v:?} has a bad port"))?;
        runnel_metadata::cluster::validate_name("host", host)?;
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("node {id} appears twice"));
        }
    }
    Ok(Voters(voters))
}

fn parse_rack(s: &str) -> Result<String, String> {
    runnel_metadata::cluster::validate_name("rack", s).map(|_| s.to_string())
}

fn parse_cleanup_policy(s: &str) -> Result<String, String> {
    runnel_metadata::topic_config::normalize_topic_config("cleanup.policy", s)
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("expected delete, compact or compact,delete, got {s:?}"))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("expected a ratio between 0 and 1, got {s:?}"))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

impl Config {
    /// The log settings a topic without overrides gets.
    pub fn default_log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: Some(self.segment_ms),
            retention_ms: u64::try_from(self.retention_ms).ok(),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
            flush_messages: self.flush_interval_messages,
            flush_ms: self.flush_interval_ms,
            preallocate: self.preallocate,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            max_message_bytes: u64::from(self.max_message_bytes),
            file_delete_delay_ms: self.log_segment_delete_delay_ms,
            compact: self.log_cleanup_policy.split(',').any(|p| p == "compact"),
            delete: self.log_cleanup_policy.split(',').any(|p| p == "delete"),
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            min_compaction_lag_ms: self.log_cleaner_min_compaction_lag_ms,
            max_compaction_lag_ms: self.log_cleaner_max_compaction_lag_ms,
            min_cleanable_dirty_ratio: self.log_cleaner_min_cleanable_ratio,
            ..LogConfig::default()
        }
    }

    /// Checks the flags against each other; the error is for the operator (exit code 2).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(v) = &self.controller_quorum_voters {
            if !v.0.contains_key(&self.node_id) {
                return Err(format!(
                    "--node-id {} is not among --controller-quorum-voters ({}): every node \
                     is a voter",
                    self.node_id,
                    v.0.keys()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        } else if self.controller_listen.is_some() {
            return Err("--controller-listen needs --controller-quorum-voters".into());
        }
        Ok(())
    }

    /// The shard count in effect.
    pub fn shards(&self) -> usize {
        match self.cores {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}
