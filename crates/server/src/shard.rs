//! A shard: one pinned executor owning a set of partitions. Work for a partition is done on
//! its owner shard only; other shards reach it with a [`ShardMsg`] over glommio's channel
//! mesh (record bytes travel as `BytesMut`, never copied).

use crate::config::Config;
use crate::metrics::ShardCounters;
use bytes::BytesMut;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use runnel_log::checkpoint::Offsets;
use runnel_log::{AppendInfo, Log, LogConfig, LogError, ReadPlan, TimestampOffset};
use runnel_metadata::Snapshot;
use runnel_protocol::code;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

pub type PartitionKey = (Arc<str>, i32);

/// An error for one partition: the Kafka code and a message for logs and error_message fields.
pub type PartitionError = (i16, String);

/// A produce's error for one partition: its [`PartitionError`], and the records refused one
/// by one (KIP-467: each one's index in its batch and why), which the produce answer lists
/// from v8 so a client fails those records alone with the error and the rest of the batch
/// as refused for another record's sake.
#[derive(Debug)]
pub struct ProduceError {
    pub error: PartitionError,
    pub records: Vec<(i32, String)>,
}

impl From<PartitionError> for ProduceError {
    fn from(error: PartitionError) -> Self {
        ProduceError {
            error,
            records: Vec::new(),
        }
    }
}

/// A produce's error from its log: a keyless record for a compacted topic is refused by
/// index, with Kafka's message.
pub fn produce_error(key: &PartitionKey, e: LogError) -> ProduceError {
    let records = match &e {
        LogError::KeylessRecord { records } => {
            let why = format!(
                "Compacted topic cannot accept message without key in topic partition {}-{}",
                key.0, key.1
            );
            records.iter().map(|&i| (i, why.clone())).collect()
        }
        _ => Vec::new(),
    };
    ProduceError {
        error: log_error(e),
        records,
    }
}

/// Work for the owner shard of a partition, or for shard 0 (metadata, admin).
/// (producer id, epoch, last sequence, last append time, coordinator epoch of its last
/// transaction marker, first offset of its open transaction or -1) of an idempotent or
/// transactional producer.
pub type ActiveProducer = (i64, i16, i32, i64, i32, i64);

pub enum ShardMsg {
    /// Reading the partition's segment bytes failed with `errno` (on the connection's
    /// shard): its log goes offline.
    ReadFailed {
        key: PartitionKey,
        /// The segment file read: only a segment of this partition's current log counts.
        file: Arc<std::os::fd::OwnedFd>,
        errno: i32,
        reply: oneshot::Sender<()>,
    },
    Produce {
        key: PartitionKey,
        records: BytesMut,
        acks: i16,
        timeout_ms: i32,
        /// The request's transactional id and the Produce version (for the check of a
        /// transaction's first batch with its coordinator).
        txn: Option<(Arc<str>, i16)>,
        reply: oneshot::Sender<Result<AppendInfo, ProduceError>>,
    },
    Read {
        key: PartitionKey,
        offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
        /// A follower replica's fetch (its broker id and the leader epoch it fetches in):
        /// it reads up to the log end, and its fetch offset is its progress.
        replica: Option<(i32, i32)>,
        /// A read_committed consumer: up to the last stable offset, with the aborted
        /// transactions in what is read.
        committed: bool,
        reply: oneshot::Sender<Result<ReadPlan, PartitionError>>,
    },
    /// Resolves when the partition's high watermark (a follower: its log end offset) passes
    /// `offset`; dropped by the caller when its max_wait_ms is up.
    WaitForData {
        key: PartitionKey,
        offset: i64,
        upto: runnel_log::Upto,
        reply: oneshot::Sender<()>,
    },
    /// OffsetForLeaderEpoch: (epoch, end offset) of the largest epoch at or below `epoch`.
    EpochEnd {
        key: PartitionKey,
        epoch: i32,
        reply: oneshot::Sender<Result<(i32, i64), PartitionError>>,
    },
    ListOffset {
        key: PartitionKey,
        timestamp: i64,
        /// isolation_level read_committed: the latest offset is the last stable offset,
        /// and nothing at or past it is found by timestamp.
        committed: bool,
        reply: oneshot::Sender<Result<Option<TimestampOffset>, PartitionError>>,
    },
    DeleteRecords {
        key: PartitionKey,
        offset: i64,
        reply: oneshot::Sender<Result<i64, PartitionError>>,
    },
    /// Log start and end offsets (OffsetForLeaderEpoch, DescribeConfigs needs none of this).
    Offsets {
        key: PartitionKey,
        reply: oneshot::Sender<Result<(i64, i64), PartitionError>>,
    },
    /// This shard's replicas: (size in bytes, how far the log end trails the high
    /// watermark), for DescribeLogDirs.
    LogDirs {
        reply: oneshot::Sender<Vec<(PartitionKey, u64, i64)>>,
    },
    /// DescribeProducers: a partition this broker leads, its idempotent producers (id,
    /// epoch, last sequence, last append time).
    Producers {
        key: PartitionKey,
        reply: oneshot::Sender<Result<Vec<ActiveProducer>, PartitionError>>,
    },
    /// This shard's partitions' (recovery point, log start offset, high watermark, cleaner
    /// checkpoint of a compacted one), for the checkpoints.
    Checkpoint {
        reply: oneshot::Sender<Vec<CheckpointPoints>>,
    },
    /// A new metadata snapshot: open, reconfigure or delete this shard's partitions, then
    /// publish it.
    ApplyMetadata {
        snapshot: Arc<Snapshot>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// To shard 0: a producer id (-1: a new one) and epoch, answered with the id and epoch
    /// to use, or an error code.
    InitProducerId {
        producer_id: i64,
        epoch: i16,
        reply: oneshot::Sender<Result<(i64, i16), PartitionError>>,
    },
    /// To a group's coordinator shard; `done` is answered after the op's own reply.
    Group {
        op: runnel_group::GroupOp,
        done: oneshot::Sender<()>,
    },
    /// To a transactional id's coordinator shard.
    Txn(TxnOp),
    /// To a partition's owner: write a transaction marker (WriteTxnMarkers).
    WriteMarker {
        key: PartitionKey,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        reply: oneshot::Sender<Result<(), PartitionError>>,
    },
}

/// Work for the transaction coordinator of a transactional id (see [`crate::txns`]).
pub enum TxnOp {
    InitProducerId {
        id: String,
        timeout_ms: i32,
        /// KIP-360: the producer id and epoch the client had (-1, -1: none).
        expected: (i64, i16),
        reply: oneshot::Sender<runnel_group::txn::TxnReply>,
    },
    AddPartitions {
        id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<runnel_group::txn::TxnPartition>,
        reply: oneshot::Sender<runnel_group::txn::TxnReply>,
    },
    EndTxn {
        id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        reply: oneshot::Sender<runnel_group::txn::TxnReply>,
    },
    /// A partition leader's check of a transactional produce: one code per partition.
    Verify {
        id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<runnel_group::txn::TxnPartition>,
        reply: oneshot::Sender<Vec<i16>>,
    },
    Describe {
        ids: Vec<String>,
        reply: oneshot::Sender<Vec<(String, Result<runnel_group::txn::TxnMeta, i16>)>>,
    },
    List {
        states: Vec<String>,
        producer_ids: Vec<i64>,
        min_duration_ms: i64,
        reply: oneshot::Sender<Vec<(String, i64, runnel_group::txn::TxnState)>>,
    },
}

/// What the whole process shares: read-only after start, or atomics.
/// A partition's (recovery point, log start offset, high watermark, cleaner checkpoint).
pub type CheckpointPoints = (PartitionKey, i64, i64, i64, Option<i64>);

pub struct Shared {
    pub config: Config,
    pub defaults: LogConfig,
    pub nr_shards: usize,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub listen: std::net::SocketAddr,
    pub data_dir: PathBuf,
    pub startup: Startup,
    pub counters: Vec<ShardCounters>,
    /// Each shard's compacted partitions' dirty ratios, for /metrics (written by the
    /// shard's cleaner, off the request path).
    pub cleaner_ratios: Vec<std::sync::Mutex<crate::cleaner::Ratios>>,
    /// Each shard's page-cache writes by path (inline or io_uring), set when it starts.
    pub page_writes: Vec<std::sync::OnceLock<Arc<runnel_runtime::pagewrite::WriteStats>>>,
    /// This node's member of the metadata quorum.
    pub controller: runnel_controller::Controller,
    /// What the metadata log applies, until shard 0 takes it at start.
    pub applied: std::sync::Mutex<
        Option<futures_channel::mpsc::UnboundedReceiver<runnel_controller::Applied>>,
    >,
    /// This run's registration (a restart registers anew).
    pub incarnation: u64,
    /// SIGTERM or SIGINT arrived: shard 0 runs the controlled shutdown, then sets `stop`.
    pub signalled: Arc<std::sync::atomic::AtomicBool>,
    pub stop: std::sync::atomic::AtomicBool,
    /// Shards that finished a shutdown phase; see [`crate::server`].
    pub phase: [std::sync::atomic::AtomicUsize; 3],
    pub ready: std::sync::atomic::AtomicUsize,
    /// Shards whose client listener is bound: "runnel is ready" waits for every one, so
    /// whoever reads that line can connect.
    pub listening: std::sync::atomic::AtomicUsize,
    /// Client connections open, against --max-connections and --max-connections-per-ip.
    pub conn_limits: Arc<crate::limits::ConnLimits>,
}

/// How the logs are opened at start: from the checkpoints of the last run.
pub struct Startup {
    pub snapshot: Snapshot,
    pub clean_shutdown: bool,
    pub recovery_points: Offsets,
    pub log_start_offsets: Offsets,
    pub high_watermarks: Offsets,
    pub cleaner_offsets: Offsets,
}

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snapshot: RefCell<Arc<Snapshot>>,
    pub partitions: RefCell<HashMap<PartitionKey, Log>>,
    pub mesh: Senders<ShardMsg>,
    pub stopping: Latch,
    pub connections: Cell<usize>,
    /// Bytes of requests read and not yet answered on this shard (--queued-max-request-bytes).
    pub request_budget: Rc<glommio::sync::Semaphore>,
    /// Shard 0 only: the producer id allocator (serialised by its RefCell being taken
    /// across the persisting await: see [`Shard::init_producer_id`]).
    pub producer_ids: RefCell<Option<crate::producer_ids::ProducerIds>>,
    pub producer_ids_lock: glommio::sync::Semaphore,
    /// Shard 0: one checkpoint write at a time.
    pub checkpoint_lock: glommio::sync::Semaphore,
    /// The consumer groups placed on this shard.
    pub coordinator: runnel_group::Coordinator,
    /// The transactional ids placed on this shard.
    pub txn: runnel_group::txn::TxnCoordinator,
    /// Produce requests of one producer to one partition checking their transaction with
    /// its coordinator pass here one at a time, in arrival order, until their append is
    /// queued: a later request must not overtake one whose check is slower.
    pub txn_checks: RefCell<HashMap<(PartitionKey, i64), Rc<glommio::sync::Semaphore>>>,
    /// This shard's partitions this broker leads: the followers' progress.
    pub leading: RefCell<HashMap<PartitionKey, crate::replication::Leading>>,
    /// This shard's partitions this broker follows: whom, in which epoch.
    pub following: RefCell<HashMap<PartitionKey, crate::replication::Following>>,
    /// Leaders this shard's fetchers pull from (one fetcher per leader broker).
    pub fetchers: RefCell<std::collections::HashSet<i32>>,
    /// Partitions whose log a fetcher is truncating (closing and reopening it): set when
    /// the new log is in place. A role change waits for it.
    pub replacing: RefCell<HashMap<PartitionKey, Rc<Latch>>>,
    /// Partitions whose replica is offline (a storage error) that this run has told the
    /// controller about, or is telling it, with the topic id it named.
    pub offline_reported: RefCell<HashMap<PartitionKey, runnel_metadata::TopicId>>,
    /// Partitions whose log could not be opened, and why: offline replicas (reported), each
    /// opened again with the next metadata change.
    pub unopened: RefCell<HashMap<PartitionKey, String>>,
    /// This shard's share of the replication throttles (reassignments' new replicas).
    pub leader_throttle: crate::throttle::Throttle,
    pub follower_throttle: crate::throttle::Throttle,
}

impl Shard {
    pub fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.id]
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.shared.config.node_id
    }

    /// Whether this broker leads `topic`-`partition`, and whether the client's leader epoch
    /// (-1: none given) is the current one: FENCED_LEADER_EPOCH when the client's is
    /// older, UNKNOWN_LEADER_EPOCH when it is newer than this broker knows.
    pub fn check_leader(&self, topic: &str, partition: i32, client_epoch: i32) -> Result<(), i16> {
        let snapshot = self.snapshot.borrow();
        let Some(p) = snapshot.partition(topic, partition) else {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        };
        self.check_leads(p, client_epoch)
    }

    /// [`Shard::check_leader`] for a partition already looked up (the hot paths).
    pub fn check_leads(
        &self,
        p: &runnel_metadata::PartitionMeta,
        client_epoch: i32,
    ) -> Result<(), i16> {
        // As Kafka's offline partition: this broker's replica failed with a storage error
        // (whoever leads now).
        if p.offline.contains(&self.node_id()) {
            return Err(code::KAFKA_STORAGE_ERROR);
        }
        if p.leader != self.node_id() || !self.shared.controller.has_lease() {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        match client_epoch {
            e if e < 0 || e == p.leader_epoch => Ok(()),
            e if e < p.leader_epoch => Err(code::FENCED_LEADER_EPOCH),
            _ => Err(code::UNKNOWN_LEADER_EPOCH),
        }
    }

    /// Whether this broker may serve a consumer's fetch of `p` (KIP-392, Fetch v11+): as its
    /// leader, or as a replica (a follower serves up to the high watermark its leader last
    /// told it), with the client's leader epoch checked as for the leader.
    pub fn check_serves(
        &self,
        p: &runnel_metadata::PartitionMeta,
        client_epoch: i32,
    ) -> Result<(), i16> {
        if p.leader == self.node_id()
            || !p.replicas.contains(&self.node_id())
            || p.offline.contains(&self.node_id())
        {
            return self.check_leads(p, client_epoch);
        }
        if p.leader < 0 || !self.shared.controller.has_lease() {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        match client_epoch {
            e if e < 0 || e == p.leader_epoch => Ok(()),
            e if e < p.leader_epoch => Err(code::FENCED_LEADER_EPOCH),
            _ => Err(code::UNKNOWN_LEADER_EPOCH),
        }
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        runnel_metadata::placement::owner(topic, partition, self.shared.nr_shards)
    }

    pub fn log(&self, key: &PartitionKey) -> Result<Log, PartitionError> {
        self.partitions.borrow().get(key).cloned().ok_or_else(|| {
            (
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("partition {}-{} is not open on this shard", key.0, key.1),
            )
        })
    }

    /// Sends `msg` (built around a reply channel) to shard `to` and returns the channel the
    /// answer comes back on. Messages from one shard to another are handled in the order
    /// sent; work for this shard is spawned, and glommio runs new tasks in spawn order, so
    /// a connection's appends to one partition keep their request order either way.
    pub async fn send<R>(
        self: &Rc<Self>,
        to: usize,
        make: impl FnOnce(oneshot::Sender<R>) -> ShardMsg,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        let msg = make(tx);
        if to == self.id {
            glommio::spawn_local(crate::inbox::handle(self.clone(), msg)).detach();
        } else {
            self.counters().cross_shard_messages.incr();
            // On failure (the target is shutting down) the reply sender is dropped with the
            // message and the receiver reports the cancellation.
            let _ = self.mesh.send_to(to, msg).await;
        }
        rx
    }

    /// [`Shard::send`] and wait for the answer. None: the target shard is gone.
    pub async fn call<R>(
        self: &Rc<Self>,
        to: usize,
        make: impl FnOnce(oneshot::Sender<R>) -> ShardMsg,
    ) -> Option<R> {
        self.send(to, make).await.await.ok()
    }
}

pub fn log_error(e: LogError) -> PartitionError {
    (e.kafka_error_code(), e.to_string())
}

/// A one-shot broadcast: `set` wakes every waiter, and later waits finish at once.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait {
            latch: self,
            id: None,
        }
    }
}

/// Future of [`Latch::wait`]; unregisters itself when dropped.
pub struct LatchWait<'a> {
    latch: &'a Latch,
    id: Option<u64>,
}

impl Future for LatchWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.set.get() {
            return Poll::Ready(());
        }
        let latch = self.latch;
        let id = *self.id.get_or_insert_with(|| {
            latch.next_id.set(latch.next_id.get() + 1);
            latch.next_id.get()
        });
        latch.waiters.borrow_mut().insert(id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.latch.waiters.borrow_mut().remove(&id);
        }
    }
}
