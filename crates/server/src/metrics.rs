//! Counters, one set per shard (each shard writes only its own, so there is no contention),
//! summed when Prometheus scrapes `GET /metrics` on `--metrics-listen`.

use crate::shard::Shared;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn incr(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        // Only the owning shard writes; a relaxed load+store is enough and avoids a locked op.
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub fn sub(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) - n, Ordering::Relaxed);
    }

    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($name:ident: $kind:literal, $help:literal;)*) => {
        #[derive(Debug, Default)]
        pub struct ShardCounters {
            $(pub $name: Counter,)*
        }

        impl ShardCounters {
            fn describe() -> &'static [(&'static str, &'static str, &'static str)] {
                &[$((stringify!($name), $kind, $help),)*]
            }

            fn value(&self, name: &str) -> u64 {
                match name {
                    $(stringify!($name) => self.$name.get(),)*
                    _ => 0,
                }
            }
        }
    };
}

counters! {
    connections_accepted: "counter", "Client connections accepted.";
    connections_open: "gauge", "Client connections open now.";
    connections_refused_max: "counter", "Connections accepted and closed at once because --max-connections were open.";
    connections_refused_per_ip: "counter", "Connections accepted and closed at once because --max-connections-per-ip were open from that address.";
    accept_errors: "counter", "Failed accepts (out of descriptors or memory): the listener backs off and retries.";
    connections_closed_slow_request: "counter", "Connections closed because a request did not arrive in full within --request-read-timeout-ms.";
    connections_closed_slow_reader: "counter", "Connections closed because the client took no bytes of an answer for --socket-send-timeout-ms.";
    connections_closed_idle: "counter", "Connections closed after --connections-max-idle-ms without a request.";
    requests: "counter", "Requests received.";
    request_errors: "counter", "Connections closed for a bad request (oversized, malformed, unsupported).";
    produce_bytes: "counter", "Record batch bytes appended by produce requests.";
    produce_records: "counter", "Records appended by produce requests.";
    fetch_bytes_spliced: "counter", "Record bytes sent to consumers by splice, never entering user space.";
    fetch_bytes_copied: "counter", "Record bytes sent to consumers by reading them into user space (--zero-copy=off).";
    produce_bytes_copied: "counter", "Produce record bytes copied in user space (0 unless a frame was shared).";
    cross_shard_messages: "counter", "Messages sent to another shard.";
    isr_shrinks: "counter", "Followers this broker's leaderships dropped from their ISR (they fell behind).";
    isr_expands: "counter", "Followers this broker's leaderships took back into their ISR (they caught up).";
    replica_fetch_bytes: "counter", "Record bytes this broker's followers fetched from leaders and appended.";
    replica_fetch_bytes_spliced: "counter", "Record bytes sent to follower replicas by splice, never entering user space.";
    replica_fetch_bytes_copied: "counter", "Record bytes sent to follower replicas by reading them into user space (--zero-copy=off).";
    follower_max_lag_records: "gauge", "Records the furthest-behind follower of this shard's leaderships lacks (the leader's log end minus the follower's last fetch offset).";
    follower_max_lag_bytes: "gauge", "Bytes the furthest-behind follower (in bytes) of this shard's leaderships lacks, from its last fetch offset to the leader's log end (to within one index interval).";
    offline_partitions: "gauge", "Partitions taken offline by a storage error (a failed fdatasync); they refuse produce and fetch until a restart recovers them.";
    cleaner_passes: "counter", "Log cleaner passes (one compacted log cleaned each).";
    cleaner_bytes_read: "counter", "Bytes the log cleaner read (mapping keys and copying what it keeps).";
    cleaner_bytes_written: "counter", "Bytes the log cleaner wrote into cleaned segments.";
    cleaner_records_removed: "counter", "Records the log cleaner removed (older values, expired tombstones, aborted records).";
    cleaner_time_ms: "counter", "Milliseconds the log cleaner spent in passes (Kafka's max-clean-time-secs, summed).";
    cleaner_max_dirty_percent: "gauge", "The highest cleanable dirty ratio, in percent, among this shard's compacted logs (Kafka's max-dirty-percent).";
    cleaner_max_compaction_delay_ms: "gauge", "How far past max.compaction.lag.ms the most overdue dirty record of this shard's compacted logs is (Kafka's max-compaction-delay-secs, in ms).";
    cleaner_buffer_utilization_percent: "gauge", "How full the key map of the last cleaner pass was (Kafka's max-buffer-utilization-percent).";
}

/// The Prometheus text exposition of every shard's counters.
pub fn render(shared: &Shared) -> String {
    let mut out = String::new();
    for (name, kind, help) in ShardCounters::describe() {
        let _ = writeln!(out, "# HELP runnel_{name} {help}");
        let _ = writeln!(out, "# TYPE runnel_{name} {kind}");
        for (i, c) in shared.counters.iter().enumerate() {
            let _ = writeln!(out, "runnel_{name}{{shard=\"{i}\"}} {}", c.value(name));
        }
    }
    type Get = fn(&runnel_runtime::pagewrite::WriteStats) -> u64;
    let page_writes: [(&str, &str, Get); 3] = [
        ("page_cache_writes_inline", "Log writes done inline on the shard's thread (see ARCHITECTURE: page-cache writes).", |w| w.inline.load(Ordering::Relaxed)),
        ("page_cache_writes_ring", "Log writes handed to io_uring (on ext4 and tmpfs, to an io-wq worker thread).", |w| w.ring.load(Ordering::Relaxed)),
        ("page_cache_write_stalls", "Inline log writes that slept in the kernel, holding the shard for over a millisecond more than their size explains; each sends the next second's writes through io_uring.", |w| w.stalls.load(Ordering::Relaxed)),
    ];
    for (name, help, get) in page_writes {
        let _ = writeln!(out, "# HELP runnel_{name} {help}");
        let _ = writeln!(out, "# TYPE runnel_{name} counter");
        for (i, w) in shared.page_writes.iter().enumerate() {
            let v = w.get().map_or(0, |w| get(w));
            let _ = writeln!(out, "runnel_{name}{{shard=\"{i}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP runnel_log_cleanable_dirty_ratio A compacted partition's dirty bytes over its cleanable bytes, as the cleaner last saw it.\n# TYPE runnel_log_cleanable_dirty_ratio gauge"
    );
    for ratios in &shared.cleaner_ratios {
        let Ok(r) = ratios.lock() else { continue };
        for ((topic, partition), ratio) in r.iter() {
            let _ = writeln!(
                out,
                "runnel_log_cleanable_dirty_ratio{{topic=\"{topic}\",partition=\"{partition}\"}} {ratio:.4}"
            );
        }
    }
    out
}

/// The cluster as this broker's metadata snapshot has it (Kafka's ActiveControllerCount,
/// LeaderCount, OfflinePartitionsCount and the broker counts).
pub fn render_cluster(snapshot: &runnel_metadata::Snapshot, node: i32) -> String {
    let mut out = String::new();
    let leaders = snapshot
        .topics
        .values()
        .flat_map(|t| t.assignment.iter())
        .fold((0u64, 0u64), |(mine, none), p| {
            (
                mine + u64::from(p.leader == node),
                none + u64::from(p.leader < 0),
            )
        });
    let live = snapshot.live_brokers().count();
    let under_replicated = snapshot
        .topics
        .values()
        .flat_map(|t| t.assignment.iter())
        .filter(|p| p.leader == node && p.isr.len() < p.original().len())
        .count() as u64;
    for (name, help, value) in [
        (
            "active_controller",
            "1 on the broker whose controller leads the metadata quorum.",
            u64::from(snapshot.controller_id == node),
        ),
        (
            "live_brokers",
            "Brokers registered and not fenced.",
            live as u64,
        ),
        (
            "fenced_brokers",
            "Brokers registered but fenced or shut down.",
            (snapshot.brokers.len() - live) as u64,
        ),
        (
            "leader_partitions",
            "Partitions this broker leads.",
            leaders.0,
        ),
        (
            "under_replicated_partitions",
            "Partitions this broker leads whose ISR lacks some of their replicas (Kafka's UnderReplicatedPartitions).",
            under_replicated,
        ),
        (
            "partitions_without_leader",
            "Partitions with no leader (every in-sync replica is down).",
            leaders.1,
        ),
    ] {
        let _ = writeln!(out, "# HELP runnel_{name} {help}");
        let _ = writeln!(out, "# TYPE runnel_{name} gauge");
        let _ = writeln!(out, "runnel_{name}{{node=\"{node}\"}} {value}");
    }
    out
}

/// Serves `GET /metrics` (any path, in fact) on shard 0 until the broker stops.
pub async fn serve(shard: std::rc::Rc<crate::shard::Shard>, listener: glommio::net::TcpListener) {
    let shared = shard.shared.clone();
    loop {
        let mut stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!("metrics accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(10)));
        let shared = shared.clone();
        let cluster = render_cluster(&shard.snapshot(), shard.node_id());
        glommio::spawn_local(async move {
            let mut buf = [0u8; 4096];
            // One request per connection; the request line is all we need.
            let _ = stream.read(&mut buf).await;
            let body = render(&shared) + &cluster;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.close().await;
        })
        .detach();
    }
}
