//! A shard: one pinned executor owning a set of partitions. Work for a partition is done on
//! its owner shard only; other shards reach it with a [`ShardMsg`] over glommio's channel
//! mesh (record bytes travel as `BytesMut`, never copied).

use crate::admin::AdminOp;
use crate::config::Config;
use crate::metadata::{self, Snapshot};
use crate::metrics::ShardCounters;
use crate::wire::code;
use bytes::BytesMut;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use runnel_log::checkpoint::Offsets;
use runnel_log::{AppendInfo, Log, LogConfig, LogError, OpenOptions, ReadPlan, TimestampOffset};
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

/// Work for the owner shard of a partition, or for shard 0 (metadata, admin).
pub enum ShardMsg {
    Produce {
        key: PartitionKey,
        records: BytesMut,
        durable: bool,
        reply: oneshot::Sender<Result<AppendInfo, PartitionError>>,
    },
    Read {
        key: PartitionKey,
        offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
        reply: oneshot::Sender<Result<ReadPlan, PartitionError>>,
    },
    /// Resolves when the partition's log end offset passes `offset`; dropped by the caller
    /// when its max_wait_ms is up.
    WaitForData {
        key: PartitionKey,
        offset: i64,
        reply: oneshot::Sender<()>,
    },
    ListOffset {
        key: PartitionKey,
        timestamp: i64,
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
    /// This shard's partitions' (recovery point, log start offset), for the checkpoints.
    Checkpoint {
        reply: oneshot::Sender<Vec<(PartitionKey, i64, i64)>>,
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
        op: crate::group::GroupOp,
        done: oneshot::Sender<()>,
    },
    /// To shard 0, the metadata writer.
    Admin {
        op: AdminOp,
        reply: oneshot::Sender<crate::admin::AdminResult>,
    },
}

/// What the whole process shares: read-only after start, or atomics.
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
    pub stop: std::sync::atomic::AtomicBool,
    /// Shards that finished a shutdown phase; see [`crate::server`].
    pub phase: [std::sync::atomic::AtomicUsize; 3],
    pub ready: std::sync::atomic::AtomicUsize,
}

/// How the logs are opened at start: from the checkpoints of the last run.
pub struct Startup {
    pub snapshot: Snapshot,
    pub clean_shutdown: bool,
    pub recovery_points: Offsets,
    pub log_start_offsets: Offsets,
}

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snapshot: RefCell<Arc<Snapshot>>,
    pub partitions: RefCell<HashMap<PartitionKey, Log>>,
    pub mesh: Senders<ShardMsg>,
    pub stopping: Latch,
    /// Serialises admin operations on shard 0.
    pub admin_lock: glommio::sync::Semaphore,
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
    pub coordinator: crate::group::Coordinator,
}

/// Stable placement: partitions of a topic go round-robin over the shards from a start
/// derived from the topic name (FNV-1a, not std's randomly seeded hasher: the placement
/// must be the same in every process).
pub fn owner(topic: &str, partition: i32, nr_shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h.wrapping_add(partition as u64) % nr_shards as u64) as usize
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

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        owner(topic, partition, self.shared.nr_shards)
    }

    fn log(&self, key: &PartitionKey) -> Result<Log, PartitionError> {
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
            glommio::spawn_local(self.clone().handle(msg)).detach();
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

    /// Does the work of one message on this (the owner) shard.
    pub async fn handle(self: Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Produce {
                key,
                records,
                durable,
                reply,
            } => {
                let r = match self.log(&key) {
                    Ok(log) => log.append(records, durable).await.map_err(log_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ShardMsg::Read {
                key,
                offset,
                max_bytes,
                min_one_batch,
                reply,
            } => {
                let r = match self.log(&key) {
                    Ok(log) => log
                        .read(offset, max_bytes, min_one_batch)
                        .await
                        .map_err(log_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ShardMsg::WaitForData {
                key,
                offset,
                mut reply,
            } => {
                let Ok(log) = self.log(&key) else {
                    let _ = reply.send(());
                    return;
                };
                // Closing the log (shutdown, topic deletion) also ends the wait.
                let wait = log.wait_for_data(offset);
                let cancelled = reply.cancellation();
                futures_lite::future::or(wait, cancelled).await;
                let _ = reply.send(());
            }
            ShardMsg::ListOffset {
                key,
                timestamp,
                reply,
            } => {
                let r = match self.log(&key) {
                    Ok(log) => list_offset(&log, timestamp).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ShardMsg::DeleteRecords { key, offset, reply } => {
                let r = match self.log(&key) {
                    Ok(log) => log.delete_records(offset).await.map_err(log_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ShardMsg::Offsets { key, reply } => {
                let r = self
                    .log(&key)
                    .map(|log| (log.log_start_offset(), log.high_watermark()));
                let _ = reply.send(r);
            }
            ShardMsg::Checkpoint { reply } => {
                let points = self
                    .partitions
                    .borrow()
                    .iter()
                    .map(|(k, log)| (k.clone(), log.recovery_point(), log.log_start_offset()))
                    .collect();
                let _ = reply.send(points);
            }
            ShardMsg::ApplyMetadata { snapshot, reply } => {
                let r = self.apply_metadata(snapshot, false).await;
                let _ = reply.send(r);
            }
            ShardMsg::InitProducerId {
                producer_id,
                epoch,
                reply,
            } => {
                let r = self.init_producer_id(producer_id, epoch).await;
                let _ = reply.send(r);
            }
            ShardMsg::Group { op, done } => {
                let log = op.group_id().and_then(|g| {
                    let (_, p) = crate::group_api::coordinator_of(&self, g);
                    self.partitions
                        .borrow()
                        .get(&(Arc::from(crate::offsets_store::TOPIC), p))
                        .cloned()
                });
                self.coordinator.handle(op, log).await;
                let _ = done.send(());
            }
            ShardMsg::Admin { op, reply } => {
                let r = crate::admin::run(&self, op).await;
                let _ = reply.send(r);
            }
        }
    }

    /// Shard 0's side of InitProducerId. A new producer gets a new id with epoch 0. A producer
    /// that names its id and epoch (v3+, KIP-360) gets the next epoch of the same id, or a
    /// new id when the epoch would overflow.
    async fn init_producer_id(
        &self,
        producer_id: i64,
        epoch: i16,
    ) -> Result<(i64, i16), PartitionError> {
        let _permit = self.producer_ids_lock.acquire_permit(1).await;
        // Taken out for the await (the allocator persists a block) and put back after.
        let mut ids = self.producer_ids.borrow_mut().take().ok_or((
            code::NOT_COORDINATOR,
            "producer ids are allocated by shard 0".to_string(),
        ))?;
        let result = async {
            if producer_id >= 0 {
                if !ids.issued(producer_id) {
                    return Err((
                        code::INVALID_PRODUCER_ID_MAPPING,
                        format!("producer id {producer_id} was not issued by this broker"),
                    ));
                }
                if (0..i16::MAX - 1).contains(&epoch) {
                    return Ok((producer_id, epoch + 1));
                }
            }
            ids.allocate()
                .await
                .map(|id| (id, 0))
                .map_err(|e| (code::KAFKA_STORAGE_ERROR, e))
        }
        .await;
        *self.producer_ids.borrow_mut() = Some(ids);
        result
    }

    /// Opens the partitions of `snapshot` this shard owns, reconfigures the open ones and
    /// closes and deletes those of deleted topics; then publishes the snapshot here.
    pub async fn apply_metadata(
        self: &Rc<Self>,
        snapshot: Arc<Snapshot>,
        at_startup: bool,
    ) -> Result<(), String> {
        let nr = self.shared.nr_shards;
        // Open what is new.
        for t in snapshot.topics.values() {
            let config = metadata::log_config(&self.shared.defaults, &t.overrides);
            for p in 0..t.partitions {
                if owner(&t.name, p, nr) != self.id {
                    continue;
                }
                let key: PartitionKey = (t.name.clone(), p);
                let existing = self.partitions.borrow().get(&key).cloned();
                match existing {
                    Some(log) => {
                        if log.config() != config {
                            log.set_config(config.clone()).map_err(|e| e.to_string())?;
                        }
                    }
                    None => {
                        let log = self.open_log(&key, config.clone(), at_startup).await?;
                        self.partitions.borrow_mut().insert(key, log);
                    }
                }
            }
        }
        // Close and delete what is gone (a deleted topic, or one recreated with a new id).
        let old = self.snapshot();
        let doomed: Vec<PartitionKey> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(name, p)| match (snapshot.topic(name), old.topic(name)) {
                (Some(new), Some(prev)) => new.id != prev.id || *p >= new.partitions,
                (Some(new), None) => *p >= new.partitions,
                (None, _) => true,
            })
            .cloned()
            .collect();
        *self.snapshot.borrow_mut() = snapshot;
        for key in doomed {
            let Some(log) = self.partitions.borrow_mut().remove(&key) else {
                continue;
            };
            if let Err(e) = log.close().await {
                tracing::warn!(topic = %key.0, partition = key.1, "closing a deleted partition: {e}");
            }
            delete_partition_dir(log.dir().to_path_buf());
        }
        Ok(())
    }

    async fn open_log(
        &self,
        key: &PartitionKey,
        config: LogConfig,
        at_startup: bool,
    ) -> Result<Log, String> {
        let dir = self.shared.data_dir.join(format!("{}-{}", key.0, key.1));
        let ck = (key.0.to_string(), key.1);
        let st = &self.shared.startup;
        let opts = if at_startup {
            OpenOptions {
                recovery_point: st.recovery_points.get(&ck).copied(),
                log_start_offset: st.log_start_offsets.get(&ck).copied(),
                clean_shutdown: st.clean_shutdown,
            }
        } else {
            OpenOptions::default()
        };
        Log::open(&dir, &key.0, key.1, config, opts)
            .await
            .map_err(|e| format!("cannot open partition {}-{}: {e}", key.0, key.1))
    }
}

/// Renames a deleted partition's directory out of the way at once (a new topic of the same
/// name may be created right after), then removes it on the deleter thread: removing a large
/// directory is many blocking syscalls, and the segment files may still be held open by
/// in-flight fetches, which keep reading them until they finish.
fn delete_partition_dir(dir: PathBuf) {
    let mut doomed = dir.clone().into_os_string();
    doomed.push(format!(".{}-delete", metadata::hex(&metadata::random_id())));
    let doomed = PathBuf::from(doomed);
    if let Err(e) = std::fs::rename(&dir, &doomed) {
        tracing::warn!("cannot rename {} for deletion: {e}", dir.display());
        return;
    }
    static DELETER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<PathBuf>>> =
        std::sync::OnceLock::new();
    let deleter = DELETER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("runnel-deleter".into())
            .spawn(move || {
                for dir in rx {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!("cannot delete {}: {e}", dir.display());
                    }
                }
            })
            .map_err(|e| tracing::warn!("no deleter thread ({e}): deleting inline"))
            .ok()
            .map(|_| tx)
    });
    let leftover = match deleter {
        Some(tx) => tx.send(doomed).err().map(|e| e.0),
        None => Some(doomed),
    };
    if let Some(doomed) = leftover {
        // No deleter thread: the next start removes it (remove_deleted_dirs).
        tracing::warn!("{} is left for the next start to delete", doomed.display());
    }
}

/// Removes directories left by deletions a crash interrupted.
pub fn remove_deleted_dirs(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with("-delete") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn list_offset(log: &Log, timestamp: i64) -> Result<Option<TimestampOffset>, PartitionError> {
    const LATEST: i64 = -1;
    const EARLIEST: i64 = -2;
    const MAX_TIMESTAMP: i64 = -3;
    const EARLIEST_LOCAL: i64 = -4;
    const LATEST_TIERED: i64 = -5;
    let at = |offset| {
        Ok(Some(TimestampOffset {
            timestamp: -1,
            offset,
        }))
    };
    match timestamp {
        LATEST | LATEST_TIERED => at(log.high_watermark()),
        EARLIEST | EARLIEST_LOCAL => at(log.log_start_offset()),
        MAX_TIMESTAMP => Ok(log.max_timestamp_offset()),
        t if t >= 0 => log.offset_for_timestamp(t).await.map_err(log_error),
        t => Err((
            code::INVALID_REQUEST,
            format!("timestamp {t} is not a ListOffsets target"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_a_topics_partitions() {
        assert_eq!(owner("orders", 0, 4), owner("orders", 0, 4));
        let shards: std::collections::HashSet<usize> =
            (0..4).map(|p| owner("orders", p, 4)).collect();
        assert_eq!(shards.len(), 4);
        assert!((0..100).all(|p| owner("t", p, 1) == 0));
    }
}
