//! [`Log`]: one partition's segments, the append path (group commit), read plans, offset
//! lookups, roll, retention and the flush policy.

use crate::config::LogConfig;
use crate::producer_state::{
    BatchMeta, CompletedTxn, Origin, ProducerEntry, ProducerState, SequenceError, Verdict,
    SNAPSHOT_SUFFIX,
};
use crate::segment::{file_name, AbortedTxn, Segment, LOG_SUFFIX};
use crate::{now_ms, LogError};
use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use runnel_record::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, BatchHeader, Batches,
    Compression, Records, HEADER_LEN,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A read plan may end this fraction of max_bytes short of it when an index entry marks a
/// batch boundary there, instead of scanning headers for the exact last boundary.
pub const SHORTFALL_DIVISOR: u64 = 16;

/// The leader epoch of a log that was never told one (a single broker's partitions): the
/// epoch of every batch written before replication existed.
pub const LEADER_EPOCH: i32 = 0;

/// How far a read may go: a consumer reads below the high watermark, a follower replica up
/// to the published log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upto {
    HighWatermark,
    LogEnd,
    /// read_committed consumers: below the last stable offset.
    Stable,
}

/// The largest offset relative to a segment's base the writer puts in it (Kafka's limit: its
/// indexes read relative offsets as signed 32-bit). One append may claim at most this many
/// records, so it always fits an empty segment; the writer rolls before an append would
/// pass it. Compressed batches are never inflated, so their record counts are the
/// producer's claim: this bound is what keeps a false claim from breaking the indexes.
pub const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// Where an append landed: what a produce response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped into the batches, or -1 for CreateTime topics.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    pub record_count: u64,
}

/// What a fetch sends for one partition: a byte range of one segment file that starts and
/// ends on batch boundaries. Holding the plan keeps the file open.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub file: Arc<OwnedFd>,
    pub segment_base_offset: i64,
    pub position: u64,
    pub len: u64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The first offset a read_committed consumer may not read yet (Kafka's LSO).
    pub last_stable_offset: i64,
    /// For read_committed: the aborted transactions (producer id, first offset) the
    /// range overlaps (filled in by the caller from [`Log::aborted_txns`]).
    pub aborted: Vec<(i64, i64)>,
}

/// A ListOffsets-by-timestamp answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

/// Counters for tests, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct LogStats {
    pub appended_batches: Cell<u64>,
    pub appended_bytes: Cell<u64>,
    /// Vectored writes issued: fewer than appends when group commit merges them.
    pub writes: Cell<u64>,
    pub fdatasyncs: Cell<u64>,
    pub rolls: Cell<u64>,
    pub deleted_segments: Cell<u64>,
    /// Segments the cleaner replaced by cleaned ones.
    pub cleaned_segments: Cell<u64>,
}

/// Options for [`Log::open`], usually read from the data dir's checkpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Offset below which everything is known flushed; recovery scans from its segment on.
    /// None: scan every segment (unless `clean_shutdown`).
    pub recovery_point: Option<i64>,
    pub log_start_offset: Option<i64>,
    /// The broker shut down cleanly: indexes are trusted, nothing is scanned.
    pub clean_shutdown: bool,
    /// The high watermark as last checkpointed (Kafka's replication-offset-checkpoint):
    /// consumers of a replicated log see nothing above it until its leader says so. None:
    /// everything in the files is visible.
    pub high_watermark: Option<i64>,
}

struct PendingAppend {
    batches: Vec<(BatchHeader, BytesMut)>,
    bytes: u64,
    durable: bool,
    /// Who asks: the checks of transactional batches depend on it.
    origin: Origin,
    /// A transaction marker the broker wrote; clients' control batches are refused.
    marker: Option<runnel_record::control::Marker>,
    reply: oneshot::Sender<Result<AppendInfo, LogError>>,
}

impl PendingAppend {
    fn records(&self) -> u64 {
        self.batches
            .iter()
            .map(|(h, _)| h.record_count as u64)
            .sum()
    }
}

/// Batches a follower fetched from its leader, appended unchanged.
struct PendingReplica {
    batches: Vec<(BatchHeader, Bytes)>,
    reply: oneshot::Sender<Result<i64, LogError>>,
}

enum Work {
    Append(PendingAppend),
    Replica(PendingReplica),
    /// Starts a leader epoch at the log end offset (this broker became its leader).
    Epoch(i32, oneshot::Sender<Result<(), LogError>>),
    Flush(oneshot::Sender<Result<(), LogError>>),
    Roll(oneshot::Sender<Result<(), LogError>>),
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub topic: String,
    pub partition: i32,
    pub config: RefCell<LogConfig>,
    /// Sorted by base offset; the last one is the active segment.
    pub segments: RefCell<Vec<Rc<Segment>>>,
    /// The partition directory's (device, inode) when the log was opened: every file of the
    /// log is created, renamed and removed relative to a descriptor of the directory that is
    /// checked to be this one (`open_dir`), so a handle that outlived its topic (deleted, and
    /// perhaps created again under the same name) never touches another log's files. Not a
    /// descriptor held open: that would cost one more per partition.
    pub dir_id: (u64, u64),
    pub log_start_offset: Cell<i64>,
    /// Log end offset: the offset the next batch gets (written, maybe not yet visible).
    pub next_offset: Cell<i64>,
    /// Published: what follower replicas may fetch. Moves to the log end offset when a
    /// write group is done, after its fdatasync when it had acks=all appends (`durable`).
    pub published: Cell<i64>,
    /// Published and, where a write group had to be, synced: what this replica holds as a
    /// leader must before its records count as acknowledged (its own log end offset in the
    /// high watermark). A replicated log publishes a group to its followers before the
    /// group's fdatasync, so the two overlap; this moves once the sync is done. Otherwise
    /// it equals `published`.
    pub settled: Cell<i64>,
    /// What consumers see: batches below it. For a log with one replica it follows
    /// `published`, so a consumer never reads a record a power loss could take back once
    /// acknowledged to acks=all; for a replicated log (`replicated`) the partition's leader
    /// moves it (`set_high_watermark`) to what every in-sync replica has.
    pub high_watermark: Cell<i64>,
    pub replicated: Cell<bool>,
    /// (end offset, segment, end position) of every published batch above the high
    /// watermark: where each segment's `visible_size` goes when the high watermark passes it.
    commit_points: RefCell<VecDeque<(i64, Rc<Segment>, u64)>>,
    /// Stamped into every batch this log appends as leader.
    pub leader_epoch: Cell<i32>,
    pub epochs: RefCell<crate::epochs::EpochCache>,
    /// The cache has an entry its file lacks: written before the next batch is.
    epochs_dirty: Cell<bool>,
    /// Set when an fdatasync failed: Linux reports a writeback error once, so later syncs
    /// would succeed over lost pages. Everything but close is refused from then on.
    pub offline: RefCell<Option<String>>,
    pub recovery_point: Cell<i64>,
    pub unflushed_records: Cell<u64>,
    pub oldest_unflushed_ms: Cell<Option<i64>>,
    /// A segment file was created or deleted since the directory was last synced.
    pub dir_dirty: Cell<bool>,
    queue: RefCell<VecDeque<Work>>,
    writer_running: Cell<bool>,
    waiters: RefCell<Waiters>,
    pub closed: Cell<bool>,
    pub stats: LogStats,
    /// The recent append rate, for reserving blocks ahead of the writes.
    pub ahead: crate::reserve::Ahead,
    /// Idempotent producers' sequences; see [`crate::producer_state`].
    pub producers: RefCell<ProducerState>,
    /// (first offset, marker offset) of transactions ended by a marker the high watermark
    /// may not have passed yet, in marker order: they still hold the last stable offset.
    unreplicated: RefCell<VecDeque<(i64, i64)>>,
    /// The cleaner checkpoint: where the dirty (not yet compacted) section starts.
    pub first_dirty: Cell<i64>,
    /// The earliest delete horizon (KIP-534) of a batch the cleaner kept with one: once it
    /// has passed, a pass is due even with nothing dirty, to remove what it kept.
    pub delete_horizon: Cell<Option<i64>>,
    /// Held while the set of closed segments changes (the cleaner's swap, retention's
    /// deletion, a truncation), so one never works on a list another is replacing.
    pub layout: glommio::sync::Semaphore,
}

impl Inner {
    fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark.get();
        let mut lso = hw;
        {
            let mut un = self.unreplicated.borrow_mut();
            while un.front().is_some_and(|&(_, marker)| marker < hw) {
                un.pop_front();
            }
            if let Some(first) = un.iter().map(|&(f, _)| f).min() {
                lso = lso.min(first);
            }
        }
        if let Some(first) = self.producers.borrow().first_unstable_offset() {
            lso = lso.min(first);
        }
        // (A transaction whose start DeleteRecords removed.)
        lso.max(self.log_start_offset.get())
    }

    /// The partition directory, opened now and checked to be the one the log was opened in
    /// (same device and inode): files are created and removed relative to it. A log whose
    /// directory is gone or replaced gets `Closed`.
    pub(crate) fn open_dir(&self) -> Result<Arc<OwnedFd>, LogError> {
        use std::os::unix::fs::MetadataExt;
        let gone = || LogError::Closed(self.dir.clone());
        let file = std::fs::File::open(&self.dir).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => gone(),
            _ => LogError::io("open log dir", &self.dir, e),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| LogError::io("stat log dir", &self.dir, e))?;
        if (meta.dev(), meta.ino()) != self.dir_id {
            return Err(gone());
        }
        Ok(Arc::new(file.into()))
    }
}

/// A partition log. Cheap to clone (a handle); lives on its owner shard's thread.
#[derive(Clone)]
pub struct Log {
    pub(crate) inner: Rc<Inner>,
}

impl Log {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        dir: PathBuf,
        dir_id: (u64, u64),
        topic: String,
        partition: i32,
        config: LogConfig,
        segments: Vec<Rc<Segment>>,
        log_start_offset: i64,
        recovery_point: i64,
    ) -> Log {
        let next_offset = segments
            .last()
            .expect("a log has a segment")
            .next_offset
            .get();
        // Whatever the files hold when the log opens is visible.
        for s in &segments {
            s.visible_size.set(s.size.get());
            s.published_size.set(s.size.get());
            s.visible_max_timestamp
                .set((s.max_timestamp.get(), s.offset_of_max_timestamp.get()));
        }
        Log {
            inner: Rc::new(Inner {
                dir,
                dir_id,
                topic,
                partition,
                config: RefCell::new(config),
                segments: RefCell::new(segments),
                log_start_offset: Cell::new(log_start_offset),
                next_offset: Cell::new(next_offset),
                published: Cell::new(next_offset),
                settled: Cell::new(next_offset),
                high_watermark: Cell::new(next_offset),
                replicated: Cell::new(false),
                commit_points: RefCell::new(VecDeque::new()),
                leader_epoch: Cell::new(LEADER_EPOCH),
                epochs: RefCell::new(Default::default()),
                epochs_dirty: Cell::new(false),
                offline: RefCell::new(None),
                recovery_point: Cell::new(recovery_point),
                unflushed_records: Cell::new(0),
                oldest_unflushed_ms: Cell::new(None),
                dir_dirty: Cell::new(false),
                queue: RefCell::new(VecDeque::new()),
                writer_running: Cell::new(false),
                waiters: RefCell::new(Waiters::default()),
                closed: Cell::new(false),
                stats: LogStats::default(),
                ahead: Default::default(),
                producers: RefCell::new(ProducerState::default()),
                unreplicated: RefCell::new(VecDeque::new()),
                first_dirty: Cell::new(log_start_offset),
                delete_horizon: Cell::new(None),
                layout: glommio::sync::Semaphore::new(1),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    pub fn partition(&self) -> i32 {
        self.inner.partition
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Applies changed topic configs; they take effect at the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::Config)?;
        *self.inner.config.borrow_mut() = config;
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start_offset.get()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.inner.next_offset.get()
    }

    /// What consumers may read: see `Inner::high_watermark`. (Also the last stable offset:
    /// there are no transactions.)
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.get()
    }

    /// The log end offset as far as it is published (written, and synced where it had to
    /// be): what a follower may fetch, and this replica's log end offset to its leader.
    /// The last stable offset: below it, every transaction is decided (committed or
    /// aborted, its marker below the high watermark); read_committed consumers stop there.
    pub fn last_stable_offset(&self) -> i64 {
        self.inner.last_stable_offset()
    }

    /// The aborted transactions a read_committed fetch of `[from, upto)` must list, as
    /// (producer id, first offset): those whose abort marker is at or after `from` and
    /// whose first offset is below `upto`.
    pub fn aborted_txns(&self, from: i64, upto: i64) -> Vec<(i64, i64)> {
        let segments = self.inner.segments.borrow();
        let i = segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        for seg in &segments[i..] {
            for t in seg.aborted.borrow().iter() {
                if t.last_offset >= from && t.first_offset < upto {
                    out.push((t.producer_id, t.first_offset));
                }
            }
        }
        out
    }

    /// Open transactions on this partition: (producer id, epoch, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        let producers = self.inner.producers.borrow();
        producers
            .ongoing
            .iter()
            .map(|&(first, pid)| {
                (
                    pid,
                    producers.entries.get(&pid).map_or(-1, |e| e.epoch),
                    first,
                )
            })
            .collect()
    }

    /// Whether `producer_id` has an open transaction here (its first transactional batch
    /// needs no coordinator check).
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.inner
            .producers
            .borrow()
            .entries
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    pub fn published_end(&self) -> i64 {
        self.inner.published.get()
    }

    /// The published end as far as its fdatasync (where one was due) is done: a leader's own
    /// log end offset in its high watermark. See `Inner::settled`.
    pub fn settled_end(&self) -> i64 {
        self.inner.settled.get()
    }

    /// A replicated log's high watermark is moved by its partition's leader (or, on a
    /// follower, by the leader's answers) rather than by each write.
    pub fn set_replicated(&self, replicated: bool) {
        self.inner.replicated.set(replicated);
        if !replicated {
            advance_high_watermark(self, self.inner.settled.get());
        }
    }

    /// Moves the high watermark to `offset` (at most the settled end; never back). It
    /// lands on the last batch boundary at or below `offset`. Returns whether it moved.
    pub fn set_high_watermark(&self, offset: i64) -> bool {
        advance_high_watermark(self, offset)
    }

    /// The leader epoch stamped into batches this log appends.
    pub fn leader_epoch(&self) -> i32 {
        self.inner.leader_epoch.get()
    }

    /// This broker became the partition's leader in `epoch`: the epoch starts at the log
    /// end offset (in the leader epoch cache; its file is written before the epoch's first
    /// batch, so a leadership without appends costs no file write), and the batches
    /// appended from now on carry it.
    pub async fn begin_epoch(&self, epoch: i32) -> Result<(), LogError> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Epoch(epoch, tx));
        rx.await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` this log has, and the
    /// offset where it ended (Kafka's rules, see [`crate::epochs::EpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.inner
            .epochs
            .borrow()
            .end_offset_for(epoch, self.inner.published.get())
    }

    /// The offset where `epoch` starts in this log, if it is in the epoch cache.
    pub fn epoch_start(&self, epoch: i32) -> Option<i64> {
        self.inner
            .epochs
            .borrow()
            .entries()
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, o)| *o)
    }

    /// The latest leader epoch of the batches in this log (None: empty, never written).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.epochs.borrow().latest_epoch()
    }

    /// Appends batches fetched from the partition's leader exactly as they are (offsets,
    /// leader epochs, producer fields): each is checked (framing, CRC) and must continue
    /// this log's offsets. A trailing partial batch is left for the next fetch. Returns the
    /// new (published) log end offset.
    pub async fn append_replica(&self, mut records: Bytes) -> Result<i64, LogError> {
        self.check_open()?;
        let mut batches = Vec::new();
        while let Ok(h) = BatchHeader::parse(&records) {
            if h.total_len() > records.len() {
                break;
            }
            let buf = records.split_to(h.total_len());
            let h = runnel_record::verify_stored(&buf)?;
            batches.push((h, buf));
        }
        if batches.is_empty() {
            return Ok(self.published_end());
        }
        let (reply, rx) = oneshot::channel();
        self.enqueue(Work::Replica(PendingReplica { batches, reply }));
        rx.await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// Reading bytes of `file` for an answer failed with `e` (the connection's shard
    /// splices or reads them itself). A device error in one of this log's segments takes
    /// the log offline, as after a failed write; a file that is not (or no longer) this
    /// log's, such as a deleted topic's, changes nothing.
    pub fn read_failed(&self, file: &Arc<OwnedFd>, e: std::io::Error) {
        if !is_device_error(&e) {
            return;
        }
        let Some(path) = self
            .inner
            .segments
            .borrow()
            .iter()
            .find(|s| Arc::ptr_eq(&s.file, file))
            .map(|s| s.log_path.clone())
        else {
            return;
        };
        take_offline(self, &LogError::io("send segment bytes of", &path, e));
    }

    /// Why the log is offline (a failed write or fdatasync, a failed read), or None while
    /// it serves.
    pub fn offline_reason(&self) -> Option<String> {
        self.inner.offline.borrow().clone()
    }

    /// Refuses work on a closed or offline log.
    fn check_open(&self) -> Result<(), LogError> {
        if self.inner.closed.get() {
            return Err(LogError::Closed(self.inner.dir.clone()));
        }
        self.check_online()
    }

    pub(crate) fn check_online(&self) -> Result<(), LogError> {
        match &*self.inner.offline.borrow() {
            Some(reason) => Err(LogError::Offline {
                dir: self.inner.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn recovery_point(&self) -> i64 {
        self.inner.recovery_point.get()
    }

    pub fn stats(&self) -> &LogStats {
        &self.inner.stats
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .segments
            .borrow()
            .iter()
            .map(|s| s.size.get())
            .sum()
    }

    /// Bytes of the log from `offset` to the published end, to within one index interval
    /// (over, never under): how far behind a replica fetching from `offset` is, in bytes.
    pub fn bytes_from(&self, offset: i64) -> u64 {
        let segments = self.inner.segments.borrow();
        let mut total = 0;
        for seg in segments.iter().rev() {
            let size = seg.published_size.get();
            if seg.base_offset > offset {
                total += size;
                continue;
            }
            if offset < seg.next_offset.get() {
                let from = seg
                    .index
                    .borrow()
                    .lookup(seg.relative(offset))
                    .map_or(0, |e| u64::from(e.position));
                total += size.saturating_sub(from);
            }
            break;
        }
        total
    }

    /// The idempotent producers this log remembers: (producer id, epoch, last sequence,
    /// broker time of its last append, epoch of the coordinator of its last marker, first
    /// offset of its open transaction or -1).
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64, i32, i64)> {
        let producers = self.inner.producers.borrow();
        let mut out: Vec<_> = producers
            .entries
            .iter()
            .map(|(pid, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (
                    *pid,
                    e.epoch,
                    last_seq,
                    e.last_append_ms,
                    e.coordinator_epoch,
                    e.txn_first_offset.unwrap_or(-1),
                )
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.inner
            .segments
            .borrow()
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }

    /// Appends the batches of one produce request (its records field for this partition):
    /// every batch is validated (CRC included) before anything is written, so a bad batch
    /// rejects the whole request and writes nothing. Appends that arrive while a write is in
    /// flight are merged into the next single vectored write (group commit). `durable` asks for
    /// an fdatasync before the answer (acks=all with a flush-on-ack broker policy).
    pub async fn append(&self, records: BytesMut, durable: bool) -> Result<AppendInfo, LogError> {
        self.append_checked(records, durable, Origin::Client).await
    }

    /// [`Log::append`] of a producer whose transaction coordinator confirmed that this
    /// partition is in its open transaction, or of the broker itself (see [`Origin`]).
    pub async fn append_checked(
        &self,
        records: BytesMut,
        durable: bool,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        self.submit(records, durable, origin)?
            .await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// Queues an append at once (its place in the partition's order is taken now) and gives
    /// the channel its outcome comes on: for a caller that must not let a later append
    /// overtake this one while it awaits something else.
    pub fn submit(
        &self,
        records: BytesMut,
        durable: bool,
        origin: Origin,
    ) -> Result<oneshot::Receiver<Result<AppendInfo, LogError>>, LogError> {
        self.check_open()?;
        let mut batches = split_validated(records)?;
        check_timestamps(&self.inner.config.borrow(), &mut batches, now_ms())?;
        let (codec, max_message_bytes) = {
            let c = self.inner.config.borrow();
            (c.compression, c.max_message_bytes)
        };
        if let Some(codec) = codec {
            recompress_all(&mut batches, codec, max_message_bytes)?;
        }
        if self.inner.config.borrow().compact {
            check_keys(&batches)?;
        }
        let claimed: i64 = batches.iter().map(|(h, _)| i64::from(h.record_count)).sum();
        if claimed > MAX_RELATIVE_OFFSET
            || self.inner.next_offset.get().checked_add(claimed).is_none()
        {
            return Err(LogError::TooManyRecords {
                records: claimed,
                max: MAX_RELATIVE_OFFSET,
            });
        }
        let bytes: u64 = batches.iter().map(|(h, _)| h.total_len() as u64).sum();
        let segment_bytes = self.inner.config.borrow().segment_bytes;
        if bytes > segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: bytes,
                segment_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.enqueue(Work::Append(PendingAppend {
            batches,
            bytes,
            durable,
            origin,
            marker: None,
            reply,
        }));
        Ok(rx)
    }

    /// Writes a transaction marker (WriteTxnMarkers): ends the producer's open transaction
    /// here, committed or aborted. Refused (INVALID_PRODUCER_EPOCH) if the producer has a
    /// newer epoch. `durable` as for appends.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        durable: bool,
    ) -> Result<AppendInfo, LogError> {
        self.check_open()?;
        let bytes = runnel_record::control::marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms(),
        );
        let h = BatchHeader::parse(&bytes)?;
        let len = bytes.len() as u64;
        let (reply, rx) = oneshot::channel();
        self.enqueue(Work::Append(PendingAppend {
            batches: vec![(h, BytesMut::from(&bytes[..]))],
            bytes: len,
            durable,
            origin: Origin::Coordinator,
            marker: Some(runnel_record::control::Marker {
                commit,
                coordinator_epoch,
            }),
            reply,
        }));
        rx.await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// Syncs everything written so far and advances the recovery point.
    pub async fn flush(&self) -> Result<(), LogError> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Flush(tx));
        rx.await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// Rolls a new active segment now (no-op on an empty active segment).
    pub async fn roll(&self) -> Result<(), LogError> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Roll(tx));
        rx.await
            .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))
    }

    /// flush.ms: flushes if unflushed data is older than the policy allows. The owner shard
    /// calls this from one periodic task for all its logs (no timer per partition).
    pub async fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        if self.check_open().is_err() {
            return Ok(false); // an offline log said so once, loudly; no error every tick
        }
        let Some(flush_ms) = self.inner.config.borrow().flush_ms else {
            return Ok(false);
        };
        match self.inner.oldest_unflushed_ms.get() {
            Some(t) if now_ms - t >= flush_ms as i64 => self.flush().await.map(|_| true),
            _ => Ok(false),
        }
    }

    fn enqueue(&self, work: Work) {
        self.inner.queue.borrow_mut().push_back(work);
        if !self.inner.writer_running.get() {
            self.inner.writer_running.set(true);
            // The writer is a task of its own, not part of the caller's future: a request
            // dropped mid-write must never leave a write in flight that a later writer races.
            let inner = self.inner.clone();
            glommio::spawn_local(async move { writer(inner).await }).detach();
        }
    }

    /// Resolves once the high watermark is past `offset` (data to fetch), or the log closes
    /// or goes offline.
    pub fn wait_for_data(&self, offset: i64) -> WaitForData {
        self.wait_for(offset, Upto::HighWatermark)
    }

    /// [`Log::wait_for_data`] for `upto`: a follower waits for the published log end.
    pub fn wait_for(&self, offset: i64, upto: Upto) -> WaitForData {
        WaitForData {
            inner: self.inner.clone(),
            offset,
            upto,
            id: None,
        }
    }

    /// Plans a fetch from `fetch_offset` of up to `max_bytes`: a range of one segment from the
    /// start of the batch holding `fetch_offset` to the last batch boundary within `max_bytes`,
    /// never past the high watermark. With `min_one_batch`, the first batch is returned even if
    /// larger than `max_bytes` (KIP-74), otherwise such a fetch gets an empty plan.
    pub async fn read(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
    ) -> Result<ReadPlan, LogError> {
        self.read_upto(fetch_offset, max_bytes, min_one_batch, Upto::HighWatermark)
            .await
    }

    /// [`Log::read`] bounded by `upto`: a follower replica reads up to the published log end,
    /// past the high watermark (the plan still reports the high watermark).
    pub async fn read_upto(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
        upto: Upto,
    ) -> Result<ReadPlan, LogError> {
        let plan = self
            .plan_read(fetch_offset, max_bytes, min_one_batch, upto)
            .await;
        // A device error under a read (a batch header looked up in the segment): the log
        // goes offline as after a failed write.
        if let Err(e @ LogError::Io { source, .. }) = &plan {
            if is_device_error(source) {
                take_offline(self, e);
            }
        }
        plan
    }

    async fn plan_read(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
        upto: Upto,
    ) -> Result<ReadPlan, LogError> {
        self.check_online()?;
        let hw = self.high_watermark();
        let stable = self.last_stable_offset();
        let (end_offset, size_of): (i64, fn(&Segment) -> u64) = match upto {
            Upto::HighWatermark => (hw, |s| s.visible_size.get()),
            Upto::Stable => (stable, |s| s.visible_size.get()),
            Upto::LogEnd => (self.published_end(), |s| s.published_size.get()),
        };
        // A read below the last stable offset stops at the batch holding it (the first
        // batch of the oldest open transaction), inside its segment.
        let mut cut: Option<(i64, u64)> = None;
        if upto == Upto::Stable && stable < hw && fetch_offset < stable {
            let seg = {
                let all = self.inner.segments.borrow();
                let i = all
                    .partition_point(|s| s.base_offset <= stable)
                    .saturating_sub(1);
                all[i].clone()
            };
            cut = Some((seg.base_offset, position_of(&seg, stable).await?));
        }
        let lso = self.log_start_offset();
        // Out of range is judged against the log end, as Kafka does: an offset between the
        // high watermark and the log end (a consumer that read up to a previous leader's
        // high watermark, which this new leader's may trail for a moment) gets an empty
        // answer, not a reset.
        let published = self.published_end();
        if fetch_offset < lso || fetch_offset > published.max(end_offset) {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: lso,
                log_end_offset: published,
            });
        }
        let segments: Vec<Rc<Segment>> = if fetch_offset >= end_offset {
            Vec::new() // nothing below the end to send: the empty plan below
        } else {
            let all = self.inner.segments.borrow();
            let i = all
                .partition_point(|s| s.base_offset <= fetch_offset)
                .saturating_sub(1);
            all[i..].to_vec()
        };
        for seg in &segments {
            // Capture the visible end once: appends during our reads must not extend it.
            let end = match cut {
                Some((base, position)) if base == seg.base_offset => position,
                _ => size_of(seg),
            };
            if fetch_offset >= seg.next_offset.get() || end == 0 {
                continue; // past this segment's data (or empty): the next one has it
            }
            let from = seg
                .index
                .borrow()
                .lookup(seg.relative(fetch_offset.max(seg.base_offset)))
                .map_or(0, |e| u64::from(e.position));
            let mut first: Option<(u64, u64)> = None; // (position, length)
            seg.for_each_header(from, end, |pos, h| {
                if h.last_offset() >= fetch_offset {
                    first = Some((pos, h.total_len() as u64));
                    false
                } else {
                    true
                }
            })
            .await?;
            let Some((start, first_len)) = first else {
                continue;
            };
            let plan_end = self
                .batch_boundary_within(seg, start, first_len, end, max_bytes)
                .await?;
            let len = match plan_end {
                Some(e) => e - start,
                None if min_one_batch => first_len,
                None => 0,
            };
            return Ok(ReadPlan {
                file: seg.file.clone(),
                segment_base_offset: seg.base_offset,
                position: start,
                len,
                high_watermark: hw,
                log_start_offset: lso,
                last_stable_offset: stable,
                aborted: Vec::new(),
            });
        }
        // fetch_offset == the end: nothing to send yet.
        let active = self.active();
        Ok(ReadPlan {
            file: active.file.clone(),
            segment_base_offset: active.base_offset,
            position: size_of(&active),
            len: 0,
            high_watermark: hw,
            log_start_offset: lso,
            last_stable_offset: stable,
            aborted: Vec::new(),
        })
    }

    /// The largest batch boundary in `(start, min(end, start + max_bytes)]`, or None when even
    /// the first batch does not fit.
    async fn batch_boundary_within(
        &self,
        seg: &Segment,
        start: u64,
        first_len: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<Option<u64>, LogError> {
        let limit = start.saturating_add(max_bytes);
        if limit >= end {
            return Ok(Some(end));
        }
        if start + first_len > limit {
            return Ok(None);
        }
        // Jump to the last indexed batch start at or before the limit, then walk headers.
        let mut boundary = start + first_len;
        let from = seg
            .index
            .borrow()
            .lookup_position(limit.min(u64::from(u32::MAX)) as u32)
            .map_or(boundary, |e| u64::from(e.position).max(boundary));
        if from > boundary {
            boundary = from; // an indexed position is a batch start, hence a boundary
                             // Close enough to the limit: stop at the indexed boundary and save the header read
                             // (the dominant cost of a plan). The fetch comes up at most 1/16 short of
                             // max_bytes; the consumer gets the rest with its next fetch.
            if limit - boundary <= max_bytes / SHORTFALL_DIVISOR {
                return Ok(Some(boundary));
            }
        }
        seg.for_each_header(from, end, |pos, h| {
            let batch_end = pos + h.total_len() as u64;
            if batch_end <= limit {
                boundary = batch_end;
                true
            } else {
                false
            }
        })
        .await?;
        Ok(Some(boundary))
    }

    /// ListOffsets by timestamp: the first record whose timestamp is >= `timestamp`, or None
    /// when every record is older. Exact per record in uncompressed batches; in compressed
    /// batches (never inflated by the broker) the batch's base offset.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        self.check_online()?;
        let lso = self.log_start_offset();
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        // Segments before the first whose largest timestamp reaches the target hold only
        // older records. The ones after it are searched too: with the log start offset inside
        // a segment, every record there that reaches the target may lie below it.
        for seg in segments
            .iter()
            .filter(|s| s.max_timestamp.get() >= timestamp && s.next_offset.get() > lso)
        {
            if let Some(found) = offset_for_timestamp_in(seg, timestamp, lso).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the visible record with the largest timestamp
    /// (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, LogError> {
        self.check_online()?;
        // On a tie the earliest segment wins, as within a segment (and as in Kafka): the
        // first record to reach the largest timestamp. (`max_by_key` would pick the last.)
        let segments = self.inner.segments.borrow();
        let mut best: Option<(i64, i64)> = None;
        for (ts, offset) in segments.iter().map(|s| s.visible_max_timestamp.get()) {
            if ts >= 0 && best.is_none_or(|(b, _)| ts > b) {
                best = Some((ts, offset));
            }
        }
        Ok(best.map(|(timestamp, offset)| TimestampOffset { timestamp, offset }))
    }

    /// DeleteRecords: advances the log start offset to `offset` (-1: the high watermark) and
    /// deletes the segments wholly below it. Returns the new log start offset.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, LogError> {
        self.check_open()?;
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: hw,
            });
        }
        if target > self.log_start_offset() {
            self.inner.log_start_offset.set(target);
        }
        self.delete_segments_below_start().await?;
        Ok(self.log_start_offset())
    }

    /// Retention by time and size (Kafka's deleteOldSegments): deletes whole segments from the
    /// oldest end and advances the log start offset. Off the hot path: the shard runs it from a
    /// low-priority task. If every segment, the active one included, has expired, the active
    /// one is rolled first so it can go too. Returns the number of segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        if self.check_open().is_err() {
            return Ok(0); // a closed log's files are no longer its to delete
        }
        let mut config = self.config();
        self.inner
            .producers
            .borrow_mut()
            .expire(now_ms, config.producer_id_expiration_ms);
        if !config.delete {
            // A compact-only topic keeps its segments (the cleaner shrinks them).
            config.retention_ms = None;
            config.retention_bytes = None;
        }
        if let Some(ms) = config.retention_ms {
            let active = self.active();
            if !active.is_empty() && now_ms - active.largest_timestamp() > ms as i64 {
                let all_expired = self
                    .inner
                    .segments
                    .borrow()
                    .iter()
                    .all(|s| now_ms - s.largest_timestamp() > ms as i64);
                if all_expired {
                    self.roll().await?;
                    self.check_open()?; // closed while the roll was queued
                }
            }
        }
        let doomed: usize = {
            let segments = self.inner.segments.borrow();
            let closed = &segments[..segments.len() - 1];
            let mut total: u64 = segments.iter().map(|s| s.size.get()).sum();
            let mut n = 0;
            let hw = self.high_watermark();
            for seg in closed {
                if seg.next_offset.get() > hw {
                    break; // not all visible yet (Kafka's deletableSegments rule)
                }
                let expired = config
                    .retention_ms
                    .is_some_and(|ms| now_ms - seg.largest_timestamp() > ms as i64);
                let oversize = config
                    .retention_bytes
                    .is_some_and(|max| total.saturating_sub(seg.size.get()) >= max);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size.get();
                n += 1;
            }
            n
        };
        if doomed == 0 {
            return Ok(0);
        }
        let next_base = self.inner.segments.borrow()[doomed].base_offset;
        if next_base > self.log_start_offset() {
            self.inner.log_start_offset.set(next_base);
        }
        self.delete_segments_below_start().await
    }

    /// Removes closed segments whose records all lie below the log start offset. In-flight
    /// read plans keep their file descriptors, so unlinking never breaks a fetch.
    async fn delete_segments_below_start(&self) -> Result<usize, LogError> {
        // Counted under the permit: a cleaner swap may merge segments meanwhile.
        let _layout = self.inner.layout.acquire_permit(1).await;
        let lso = self.log_start_offset();
        // Producers whose every remembered batch is gone are forgotten, as in Kafka.
        self.inner.producers.borrow_mut().remove_below(lso);
        let count = {
            let segments = self.inner.segments.borrow();
            segments[..segments.len() - 1]
                .iter()
                .position(|s| s.next_offset.get() > lso)
                .unwrap_or(segments.len() - 1)
        };
        if count == 0 {
            return Ok(0);
        }
        // The directory first: a log whose directory went (topic deleted) keeps its list.
        let dir = self.inner.open_dir()?;
        let doomed: Vec<Rc<Segment>> = self.inner.segments.borrow_mut().drain(..count).collect();
        let delay = self.inner.config.borrow().file_delete_delay_ms;
        for seg in &doomed {
            if delay == 0 {
                delete_segment_files(&dir, seg).await?;
            } else {
                delete_segment_files_later(&dir, seg, delay)?;
            }
            tracing::info!(
                topic = %self.inner.topic, partition = self.inner.partition,
                base_offset = seg.base_offset, "deleted segment below log start offset {lso}"
            );
        }
        if !doomed.is_empty() {
            self.inner.dir_dirty.set(true);
            let s = &self.inner.stats;
            s.deleted_segments
                .set(s.deleted_segments.get() + doomed.len() as u64);
        }
        Ok(doomed.len())
    }

    /// Clean close: waits for queued appends, syncs the data, writes the active segment's
    /// index files. After this the log refuses appends.
    pub async fn close(&self) -> Result<(), LogError> {
        // An offline log has data whose sync failed: it must not look cleanly closed (the
        // broker then writes no clean-shutdown marker, and the next start recovers it).
        let offline = self.check_online();
        // Refuse appends before flushing, not after: one accepted while the flush runs would
        // be acknowledged yet neither synced nor indexed, and the broker writes its clean
        // shutdown marker next. Appends accepted before this point are queued ahead of the
        // flush, so they are still written and synced.
        self.inner.closed.set(true);
        let result = async {
            offline?;
            let (tx, rx) = oneshot::channel();
            self.enqueue(Work::Flush(tx));
            rx.await
                .unwrap_or_else(|_| Err(LogError::Closed(self.inner.dir.clone())))?;
            let dir = self.inner.open_dir()?;
            self.active().write_indexes(&dir).await?;
            write_producer_snapshot(&self.inner).await
        }
        .await;
        self.wake_waiters();
        result
    }

    pub(crate) fn active(&self) -> Rc<Segment> {
        self.inner
            .segments
            .borrow()
            .last()
            .expect("a log has a segment")
            .clone()
    }

    fn wake_waiters(&self) {
        // Taken out first: a task dropped by its waker may drop a WaitForData, which
        // unregisters itself.
        let wakers: Vec<Waker> = self
            .inner
            .waiters
            .borrow_mut()
            .wakers
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in wakers {
            w.wake();
        }
    }
}

/// The most a batch's records may inflate to when the broker recompresses it (64 times
/// Kafka's default max.message.bytes): a small compressed batch cannot make the broker
/// allocate gigabytes.
pub const MAX_INFLATED_BYTES: usize = 64 << 20;

/// A topic's compression.type: batches with another codec are rewritten with the topic's
/// (Kafka's LogValidator does the same); the only rewrite of a producer's records besides
/// LogAppendTime. It runs inline on the owner shard, costing that shard's CPU.
/// A rewritten batch over max.message.bytes is refused (MESSAGE_TOO_LARGE), as Kafka
/// checks the size after recompressing.
fn recompress_all(
    batches: &mut [(BatchHeader, BytesMut)],
    codec: runnel_record::recompress::Codec,
    max_message_bytes: u64,
) -> Result<(), LogError> {
    for (h, buf) in batches.iter_mut() {
        if let Some(out) = runnel_record::recompress::recompress(buf, h, codec, MAX_INFLATED_BYTES)?
        {
            if out.len() as u64 > max_message_bytes {
                return Err(runnel_record::BatchError::Recompressed {
                    size: out.len(),
                    max: max_message_bytes,
                }
                .into());
            }
            // Built and checksummed just now: its header need not be validated again.
            *h = BatchHeader::parse(&out)?;
            *buf = BytesMut::from(Bytes::from(out)); // (no copy: the Vec is unique)
        }
    }
    Ok(())
}

/// A compacted topic keeps the latest record per key, so a record without one is refused
/// (INVALID_RECORD), as Kafka's LogValidator does; a compressed batch is inflated to check.
/// The error names every keyless record of the first batch that has one, by its index in
/// the batch, as Kafka's record errors do.
fn check_keys(batches: &[(BatchHeader, BytesMut)]) -> Result<(), LogError> {
    for (h, buf) in batches {
        let (mut index, mut keyless) = (0i32, Vec::new());
        runnel_record::compact::for_each_record(buf, h, MAX_INFLATED_BYTES, |r| {
            if r.key.is_none() {
                keyless.push(index);
            }
            index += 1;
        })?;
        if !keyless.is_empty() {
            return Err(LogError::KeylessRecord { records: keyless });
        }
    }
    Ok(())
}

/// Splits a produce request's records into batches and validates every one of them.
/// Kafka's bounds on CreateTime timestamps, checked on a batch's first record (its base
/// timestamp) and its newest (the max timestamp): the batch header has both, and a
/// compressed batch stays compressed. (Kafka checks every record.)
///
/// A batch whose first record has no timestamp (-1, which Kafka lets through) is checked
/// record by record instead: its header's max timestamp is no bound then. librdkafka, given
/// -1 for every message (its C++ API's "no timestamp"), writes a base of -1 and a max of 0,
/// which the header check would refuse as 1970 though no record has that timestamp. Such a
/// header's max is replaced by its records' (-1 when none has one), as Kafka's validator
/// does, so that retention and the time index do not take the batch for one from 1970.
fn check_timestamps(
    config: &LogConfig,
    batches: &mut [(BatchHeader, BytesMut)],
    now: i64,
) -> Result<(), LogError> {
    if config.log_append_time {
        return Ok(());
    }
    let before = i64::try_from(config.timestamp_before_max_ms).unwrap_or(i64::MAX);
    let after = i64::try_from(config.timestamp_after_max_ms).unwrap_or(i64::MAX);
    let check = |ts: i64| {
        // (-1: no timestamp, which Kafka lets through.)
        if ts >= 0 && (ts < now.saturating_sub(before) || ts > now.saturating_add(after)) {
            Err(LogError::InvalidTimestamp {
                timestamp: ts,
                now,
                before_ms: config.timestamp_before_max_ms,
                after_ms: config.timestamp_after_max_ms,
            })
        } else {
            Ok(())
        }
    };
    for (h, buf) in batches.iter_mut() {
        if h.base_timestamp >= 0 {
            check(h.base_timestamp)?;
            check(h.max_timestamp)?;
        } else {
            let (mut checked, mut max) = (Ok(()), runnel_record::NO_TIMESTAMP);
            runnel_record::compact::for_each_record(buf, h, MAX_INFLATED_BYTES, |r| {
                if checked.is_ok() {
                    checked = check(r.timestamp);
                }
                max = max.max(r.timestamp);
            })?;
            checked?;
            if max != h.max_timestamp {
                runnel_record::set_max_timestamp(buf, max);
                h.max_timestamp = max;
            }
        }
    }
    Ok(())
}

/// Splits a produce request's records into validated batches (each checked whole: header,
/// CRC, record count, and for compressed batches the inflated records): the batch splitter
/// every append goes through. Public for the fuzz targets.
pub fn split_validated(mut records: BytesMut) -> Result<Vec<(BatchHeader, BytesMut)>, LogError> {
    let mut headers = Vec::new();
    for batch in Batches::new(&records) {
        let (pos, header) = batch?;
        headers.push(runnel_record::validate(
            &records[pos..pos + header.total_len()],
        )?);
    }
    if headers.is_empty() {
        return Err(runnel_record::BatchError::ShortHeader {
            needed: HEADER_LEN,
            available: 0,
        }
        .into());
    }
    Ok(headers
        .into_iter()
        .map(|h| (h, records.split_to(h.total_len())))
        .collect())
}

/// The single writer of a log: drains the queue, merging every append queued meanwhile into
/// one vectored write, and runs flushes and rolls in order with them.
async fn writer(inner: Rc<Inner>) {
    let log = Log { inner };
    loop {
        let work: Vec<Work> = log.inner.queue.borrow_mut().drain(..).collect();
        if work.is_empty() {
            break;
        }
        let mut appends = Vec::new();
        let mut controls = Vec::new();
        for w in work {
            match w {
                Work::Append(a) => appends.push(a),
                other => controls.push(other),
            }
        }
        if !appends.is_empty() {
            write_group(&log, appends).await;
        }
        for c in controls {
            match c {
                Work::Flush(reply) => {
                    let _ = reply.send(flush_now(&log).await);
                }
                Work::Roll(reply) => {
                    let r = if log.active().is_empty() {
                        Ok(())
                    } else {
                        roll_now(&log).await
                    };
                    let _ = reply.send(r);
                }
                Work::Replica(r) => {
                    let _ = r.reply.send(write_replica(&log, r.batches).await);
                }
                Work::Epoch(epoch, reply) => {
                    let r = log.check_online().map(|()| {
                        log.inner.leader_epoch.set(epoch);
                        record_epoch(&log.inner, epoch, log.inner.next_offset.get());
                    });
                    let _ = reply.send(r);
                }
                Work::Append(_) => unreachable!("appends were split out"),
            }
        }
    }
    log.inner.writer_running.set(false);
}

async fn write_group(log: &Log, appends: Vec<PendingAppend>) {
    let inner = &log.inner;
    if let Err(e) = log.check_online() {
        // Queued before a sync failed: nothing more is written to an offline log.
        for a in appends {
            let _ = a.reply.send(Err(storage_error(&e)));
        }
        return;
    }
    // The first batch of a leader epoch is written only once the epoch cache file says
    // where the epoch starts (once per epoch: a leader's `begin_epoch` usually did it).
    let epoch = inner.leader_epoch.get();
    record_epoch(inner, epoch, inner.next_offset.get());
    {
        if let Err(e) = persist_epochs(inner).await {
            if write_error_is_fatal(&e) {
                take_offline(log, &e);
            }
            for a in appends {
                let _ = a.reply.send(Err(storage_error(&e)));
            }
            return;
        }
    }
    let config = inner.config.borrow().clone();
    let now = now_ms();
    let mut rest: VecDeque<PendingAppend> = appends.into();
    let mut done: Vec<(PendingAppend, Result<AppendInfo, LogError>)> =
        Vec::with_capacity(rest.len());
    // The group goes out in runs that each fit the active segment, so group commit never
    // grows a segment past segment.bytes (nor its positions past u32): one vectored write per
    // run, a roll between runs. Usually the whole group is one run.
    while !rest.is_empty() {
        let (first_bytes, first_records) = (rest[0].bytes, rest[0].records());
        if needs_roll(
            &log.active(),
            &config,
            first_bytes,
            first_records,
            inner.next_offset.get(),
            now,
        ) {
            if let Err(e) = roll_now(log).await {
                tracing::error!(topic = %inner.topic, partition = inner.partition, "segment roll failed: {e}");
                if write_error_is_fatal(&e) {
                    take_offline(log, &e);
                }
                done.extend(rest.drain(..).map(|a| (a, Err(storage_error(&e)))));
                break;
            }
        }
        let active = log.active();
        let (mut bytes, mut records, mut n) = (active.size.get(), 0u64, 0usize);
        for a in &rest {
            bytes += a.bytes;
            records += a.records();
            let fits = bytes <= config.segment_bytes
                && inner.next_offset.get() + records as i64 - active.base_offset
                    <= MAX_RELATIVE_OFFSET;
            // The first append of a run always goes: it fits after the roll above (or the
            // segment is empty and takes any append that passed the size and record-count
            // checks of `Log::append`, even if segment.bytes shrank since).
            if n > 0 && !fits {
                break;
            }
            n += 1;
        }
        let mut run: Vec<PendingAppend> = rest.drain(..n).collect();
        match write_run(log, &active, &mut run, &config, now).await {
            Ok(results) => done.extend(run.into_iter().zip(results)),
            Err(e) => {
                if write_error_is_fatal(&e) {
                    take_offline(log, &e);
                }
                // A storage error is seldom transient: fail the rest of the group too, as a
                // failed write of a whole group always did, rather than retry run by run.
                done.extend(
                    run.into_iter()
                        .chain(rest.drain(..))
                        .map(|a| (a, Err(storage_error(&e)))),
                );
                break;
            }
        }
    }

    let wants_durable = done.iter().any(|(a, r)| a.durable && r.is_ok());
    let policy_due = config
        .flush_messages
        .is_some_and(|n| inner.unflushed_records.get() >= n);
    let must_sync = wants_durable || policy_due;
    // A replicated log's followers may fetch the group while it syncs here: the sync and the
    // replication round trip an acks=all answer waits for overlap instead of adding up.
    // Consumers still wait for the sync (the high watermark stops at the settled end).
    if must_sync && inner.replicated.get() {
        publish(log, false);
    }
    let flush_result = if must_sync {
        flush_now(log).await
    } else {
        Ok(())
    };
    // Readers see the group only now, after its sync: a consumer must never read (and
    // commit past) an acks=all record that a power loss could still take away. A failed
    // sync leaves it unsettled (and the log offline).
    if flush_result.is_ok() {
        publish(log, true);
    }
    for (a, r) in done {
        let r = match (&flush_result, r) {
            (Err(e), Ok(_)) if a.durable => Err(storage_error(e)),
            (_, r) => r,
        };
        let _ = a.reply.send(r);
    }
}

/// Writes `run` (appends that together fit the active segment `active`) in one vectored
/// write at the segment's end, then publishes it: offsets, indexes, sizes, the high
/// watermark. On error nothing is published and the file is cut back to its committed size.
async fn write_run(
    log: &Log,
    active: &Segment,
    run: &mut [PendingAppend],
    config: &LogConfig,
    now: i64,
) -> Result<Vec<Result<AppendInfo, LogError>>, LogError> {
    let inner = &log.inner;
    let position = active.size.get();
    // Assign offsets in place: baseOffset and partitionLeaderEpoch are outside the CRC.
    let mut next = inner.next_offset.get();
    let epoch = inner.leader_epoch.get();
    let append_time = if config.log_append_time { now } else { -1 };
    let mut results: Vec<Option<Result<AppendInfo, LogError>>> = Vec::with_capacity(run.len());
    let mut bufs: Vec<Bytes> = Vec::new();
    let mut headers: Vec<BatchHeader> = Vec::new();
    let (mut total, mut records) = (0u64, 0u64);
    // Idempotent producers: checked here, by the log's single writer, in append order. What
    // this write changes stays in `pending` until the write has succeeded.
    let mut pending: HashMap<i64, ProducerEntry> = HashMap::new();
    let mut completed: Vec<CompletedTxn> = Vec::new();
    {
        let producers = inner.producers.borrow();
        for a in run.iter_mut() {
            if a.batches
                .iter()
                .any(|(h, _)| h.has_producer_id() || h.is_control())
            {
                let lso = inner.log_start_offset.get();
                match check_producers(&producers, &mut pending, &mut completed, a, next, now, lso) {
                    Ok(None) => {}
                    Ok(Some(duplicate)) => {
                        results.push(Some(Ok(duplicate)));
                        continue;
                    }
                    Err(e) => {
                        results.push(Some(Err(e)));
                        continue;
                    }
                }
            }
            let base = next;
            let mut count = 0u64;
            for (h, buf) in a.batches.drain(..) {
                let mut buf = buf;
                let mut h = h;
                set_base_offset(&mut buf, next);
                set_partition_leader_epoch(&mut buf, epoch);
                h.partition_leader_epoch = epoch;
                if config.log_append_time {
                    set_log_append_time(&mut buf, now);
                    h.max_timestamp = now;
                }
                h.base_offset = next;
                next = h.next_offset();
                count += h.record_count as u64;
                headers.push(h);
                bufs.push(buf.freeze());
            }
            total += a.bytes;
            records += count;
            results.push(Some(Ok(AppendInfo {
                base_offset: base,
                last_offset: next - 1,
                log_append_time_ms: append_time,
                log_start_offset: inner.log_start_offset.get(),
                record_count: count,
            })));
        }
    }
    let results: Vec<Result<AppendInfo, LogError>> = results.into_iter().flatten().collect();
    if bufs.is_empty() {
        return Ok(results); // every append was a duplicate or refused: nothing to write
    }
    let ring = runnel_runtime::ring();
    inner.stats.writes.set(inner.stats.writes.get() + 1);
    // While blocks are being reserved ahead (`reserve`), fallocate holds the inode lock a
    // write needs: that write goes through the ring instead of waiting on the shard.
    let inline_ok = !active.reserving.get();
    if let Err((e, written)) = ring
        .write_all_at_or_ring(&active.file, position, bufs, inline_ok)
        .await
    {
        let err = LogError::io("append to", &active.log_path, e);
        tracing::error!(topic = %inner.topic, partition = inner.partition, "{err} ({written} bytes written)");
        // Cut off what did reach the file: nothing past the committed size may survive to be
        // mistaken for acknowledged data after a restart.
        if written > 0 {
            if let Err(e) = ring.ftruncate(&active.file, position).await {
                // Bytes past the committed size stay in the file: only recovery can cut them.
                take_offline(log, &LogError::io("cut back", &active.log_path, e));
            }
        }
        return Err(err);
    }
    // Publish: indexes first, then the sizes and offsets readers look at.
    let interval = config.index_interval_bytes;
    let mut pos = position;
    let active_rc = log.active();
    {
        let mut points = inner.commit_points.borrow_mut();
        for h in &headers {
            active.on_batch(h, pos, interval);
            pos += h.total_len() as u64;
            points.push_back((h.next_offset(), active_rc.clone(), pos));
        }
    }
    if active.rolling_base_ms.get().is_none() {
        active.rolling_base_ms.set(Some(now));
    }
    active.last_modified_ms.set(now);
    active.size.set(pos);
    inner.next_offset.set(next);
    let ahead = inner.ahead.on_append(now, pos - position);
    crate::reserve::reserve_ahead(&active_rc, ahead, config.segment_bytes);
    // Idempotence state moves with the write, not with the high watermark: a retry of a
    // batch written but not yet visible is a duplicate of it, not a second copy.
    inner.producers.borrow_mut().commit(pending);
    end_transactions(inner, active, &completed);
    let stats = &inner.stats;
    stats
        .appended_batches
        .set(stats.appended_batches.get() + headers.len() as u64);
    stats.appended_bytes.set(stats.appended_bytes.get() + total);
    inner
        .unflushed_records
        .set(inner.unflushed_records.get() + records);
    if inner.oldest_unflushed_ms.get().is_none() {
        inner.oldest_unflushed_ms.set(Some(now));
    }
    Ok(results)
}

/// Makes everything written so far visible to followers and, with `settle` (it is synced
/// where it had to be), to readers: the high watermark of a log with one replica moves to
/// the log end offset, and each segment's visible size to its written size.
fn publish(log: &Log, settle: bool) {
    let inner = &log.inner;
    if inner.offline.borrow().is_some() {
        return;
    }
    if settle && inner.settled.get() != inner.next_offset.get() {
        inner.settled.set(inner.next_offset.get());
        if inner.published.get() == inner.next_offset.get() {
            // Published before its sync. (The partition's leader moves a replicated log's
            // high watermark once the append returns; a log that stopped being replicated
            // meanwhile moves its own.)
            if !inner.replicated.get() {
                advance_high_watermark(log, inner.next_offset.get());
            }
            return;
        }
    }
    if inner.published.get() == inner.next_offset.get() {
        return;
    }
    let published = inner.published.get();
    for seg in inner.segments.borrow().iter().rev() {
        if seg.next_offset.get() <= published {
            break; // this segment and all before it were published whole already
        }
        // (An empty segment rolled after the last write is passed over: data before it may
        // still be unpublished.)
        seg.published_size.set(seg.size.get());
        // (For a replicated log this may name a record above the high watermark: ListOffsets
        // -3 is answered from the published end.)
        seg.visible_max_timestamp
            .set((seg.max_timestamp.get(), seg.offset_of_max_timestamp.get()));
    }
    inner.published.set(inner.next_offset.get());
    if !inner.replicated.get() && settle {
        advance_high_watermark(log, inner.next_offset.get());
    }
    log.wake_waiters();
}

/// At open: puts the high watermark back at `offset` (a checkpoint), below the log end. The
/// batches above it are walked once to queue their commit points, and each segment's visible
/// size is cut to what lies below it. A target inside a batch lands on that batch's start.
pub(crate) async fn restore_high_watermark(log: &Log, offset: i64) -> Result<(), LogError> {
    let inner = &log.inner;
    let target = offset.max(inner.log_start_offset.get());
    if target >= inner.next_offset.get() {
        return Ok(());
    }
    let segments: Vec<Rc<Segment>> = inner.segments.borrow().clone();
    let first = segments
        .iter()
        .rposition(|s| s.base_offset <= target)
        .unwrap_or(0);
    let mut hw: Option<i64> = None;
    let mut points = VecDeque::new();
    for seg in &segments[first..] {
        let from = seg
            .index
            .borrow()
            .lookup(seg.relative(target.max(seg.base_offset)))
            .map_or(0, |e| u64::from(e.position));
        let mut visible = None;
        seg.for_each_header(from, seg.size.get(), |pos, h| {
            if h.last_offset() >= target {
                if visible.is_none() {
                    visible = Some(pos);
                    hw.get_or_insert(h.base_offset);
                }
                points.push_back((h.next_offset(), seg.clone(), pos + h.total_len() as u64));
            }
            true
        })
        .await?;
        if let Some(pos) = visible {
            seg.visible_size.set(pos);
        }
    }
    if let Some(hw) = hw {
        inner.high_watermark.set(hw);
        *inner.commit_points.borrow_mut() = points;
    }
    Ok(())
}

/// Moves the high watermark up to `offset` (capped at the settled end), to the last batch
/// boundary at or below it, and each segment's visible size with it.
fn advance_high_watermark(log: &Log, offset: i64) -> bool {
    let inner = &log.inner;
    let target = offset.min(inner.settled.get());
    let old = inner.high_watermark.get();
    if target <= old {
        return false;
    }
    let mut hw = old;
    {
        let mut points = inner.commit_points.borrow_mut();
        while let Some((end, seg, pos)) = points.front() {
            if *end > target {
                break;
            }
            seg.visible_size.set(*pos);
            hw = *end;
            points.pop_front();
        }
    }
    if hw == old {
        return false;
    }
    inner.high_watermark.set(hw);
    log.wake_waiters();
    true
}

/// Records in the epoch cache that `epoch` starts at `offset` (if it is a new epoch); the
/// file follows with [`persist_epochs`].
fn record_epoch(inner: &Inner, epoch: i32, offset: i64) {
    if inner.epochs.borrow_mut().assign(epoch, offset) {
        inner.epochs_dirty.set(true);
    }
}

/// Writes the epoch cache file (synced) if the cache changed since it was last written.
async fn persist_epochs(inner: &Inner) -> Result<(), LogError> {
    if !inner.epochs_dirty.get() {
        return Ok(());
    }
    let text = inner.epochs.borrow().encode();
    write_epochs(inner, text).await?;
    inner.epochs_dirty.set(false);
    Ok(())
}

pub(crate) async fn write_epochs(inner: &Inner, text: String) -> Result<(), LogError> {
    let dir = inner.open_dir()?;
    crate::checkpoint::write_atomic_at(&dir, crate::epochs::FILE, text.into())
        .await
        .map_err(|e| LogError::io("write", &inner.dir.join(crate::epochs::FILE), e))
}

/// Writes batches fetched from the leader, unchanged, in runs that fit the active segment
/// (rolling between them), and publishes them. Returns the new log end offset.
async fn write_replica(log: &Log, batches: Vec<(BatchHeader, Bytes)>) -> Result<i64, LogError> {
    let result = write_replica_runs(log, batches).await;
    if let Err(e) = &result {
        if write_error_is_fatal(e) {
            take_offline(log, e);
        }
    }
    result
}

async fn write_replica_runs(
    log: &Log,
    batches: Vec<(BatchHeader, Bytes)>,
) -> Result<i64, LogError> {
    let inner = &log.inner;
    log.check_online()?;
    let config = inner.config.borrow().clone();
    let now = now_ms();
    let mut rest: VecDeque<(BatchHeader, Bytes)> = batches.into();
    while let Some((first, _)) = rest.front() {
        let next = inner.next_offset.get();
        // Offsets may jump (a compacted leader's log has gaps), never go back.
        if first.base_offset < next {
            return Err(LogError::NotContiguous {
                expected: next,
                got: first.base_offset,
            });
        }
        // (Measured from the batch's own offsets: a compacted leader's batch may start past
        // the log end and hold fewer records than offsets.)
        if needs_roll(
            &log.active(),
            &config,
            first.total_len() as u64,
            first.last_offset_delta.max(0) as u64 + 1,
            first.base_offset,
            now,
        ) {
            roll_now(log).await?;
        }
        let active = log.active();
        if first.last_offset() - active.base_offset > MAX_RELATIVE_OFFSET {
            // A compacted leader's gap of 2^31 offsets or more: the batch does not fit the
            // segment's relative offsets (Kafka rolls a segment at the batch's own base,
            // KAFKA-6264). Refused rather than indexed wrong.
            return Err(LogError::Unsupported(format!(
                "offset {} is more than 2^31 past the segment at {}: an offset gap this large \
                 is not supported",
                first.base_offset, active.base_offset
            )));
        }
        // The run: batches in offset order that fit the active segment (the first always
        // goes).
        let (mut bytes, mut expect, mut n) = (active.size.get(), next, 0usize);
        for (h, _) in &rest {
            bytes += h.total_len() as u64;
            let fits = bytes <= config.segment_bytes
                && h.last_offset() - active.base_offset <= MAX_RELATIVE_OFFSET;
            if h.base_offset < expect || (n > 0 && !fits) {
                break;
            }
            expect = h.next_offset();
            n += 1;
        }
        let run: Vec<(BatchHeader, Bytes)> = rest.drain(..n).collect();
        // A new leader epoch is in the cache file before its first batch is on disk.
        for (h, _) in &run {
            record_epoch(inner, h.partition_leader_epoch, h.base_offset);
        }
        persist_epochs(inner).await?;
        let position = active.size.get();
        let bufs: Vec<Bytes> = run.iter().map(|(_, b)| b.clone()).collect();
        inner.stats.writes.set(inner.stats.writes.get() + 1);
        let ring = runnel_runtime::ring();
        let inline_ok = !active.reserving.get();
        if let Err((e, written)) = ring
            .write_all_at_or_ring(&active.file, position, bufs, inline_ok)
            .await
        {
            let err = LogError::io("append to", &active.log_path, e);
            tracing::error!(topic = %inner.topic, partition = inner.partition, "{err} ({written} bytes written)");
            if written > 0 {
                if let Err(e) = ring.ftruncate(&active.file, position).await {
                    take_offline(log, &LogError::io("cut back", &active.log_path, e));
                }
            }
            return Err(err);
        }
        let mut pos = position;
        let mut records = 0u64;
        let mut completed = Vec::new();
        {
            let mut points = inner.commit_points.borrow_mut();
            let mut producers = inner.producers.borrow_mut();
            for (h, b) in &run {
                active.on_batch(h, pos, config.index_interval_bytes);
                pos += h.total_len() as u64;
                points.push_back((h.next_offset(), active.clone(), pos));
                let marker = h
                    .is_control()
                    .then(|| runnel_record::control::marker_kind(b))
                    .flatten();
                completed.extend(producers.replay(h, marker, now));
                records += h.record_count.max(0) as u64;
            }
        }
        end_transactions(inner, &active, &completed);
        if active.rolling_base_ms.get().is_none() {
            active.rolling_base_ms.set(Some(now));
        }
        active.last_modified_ms.set(now);
        active.size.set(pos);
        inner.next_offset.set(expect);
        let ahead = inner.ahead.on_append(now, pos - position);
        crate::reserve::reserve_ahead(&active, ahead, config.segment_bytes);
        let stats = &inner.stats;
        stats
            .appended_batches
            .set(stats.appended_batches.get() + run.len() as u64);
        stats
            .appended_bytes
            .set(stats.appended_bytes.get() + (pos - position));
        inner
            .unflushed_records
            .set(inner.unflushed_records.get() + records);
        if inner.oldest_unflushed_ms.get().is_none() {
            inner.oldest_unflushed_ms.set(Some(now));
        }
    }
    if config
        .flush_messages
        .is_some_and(|n| inner.unflushed_records.get() >= n)
    {
        flush_now(log).await?;
    }
    publish(log, true);
    Ok(inner.next_offset.get())
}

/// Checks the idempotent batches of one append against the producer state. Ok(None): write
/// it (its batches are recorded in `pending` at the offsets they will get from `next`).
/// Ok(Some(info)): a retry of batches already written, answered with their offsets.
#[allow(clippy::too_many_arguments)]
fn check_producers(
    state: &ProducerState,
    pending: &mut HashMap<i64, ProducerEntry>,
    completed: &mut Vec<CompletedTxn>,
    a: &PendingAppend,
    mut next: i64,
    now: i64,
    log_start_offset: i64,
) -> Result<Option<AppendInfo>, LogError> {
    let mut scratch = pending.clone();
    let mut duplicates: Vec<BatchMeta> = Vec::new();
    let mut ended = Vec::new();
    let mut fresh = 0;
    for (h, _) in &a.batches {
        // Offsets advance by the claimed record count (validated: lastOffsetDelta + 1); the
        // producer's baseOffset may be anything and is never used in arithmetic here.
        if h.is_control() && a.marker.is_none() {
            return Err(LogError::Unsupported("control batches from clients".into()));
        }
        if h.is_transactional() && !h.has_producer_id() {
            return Err(LogError::Unsupported(
                "transactional batches without a producer id".into(),
            ));
        }
        if h.has_producer_id() {
            if let Verdict::Duplicate(d) = state.check(&scratch, h, a.origin)? {
                duplicates.push(d);
                continue;
            }
            let mut placed = *h;
            placed.base_offset = next;
            ended.extend(state.record(&mut scratch, &placed, a.marker, now));
        }
        fresh += 1;
        next += i64::from(h.record_count);
    }
    match (duplicates.first(), duplicates.last()) {
        (Some(first), Some(last)) if fresh == 0 => Ok(Some(AppendInfo {
            base_offset: first.first_offset,
            last_offset: last.last_offset,
            log_append_time_ms: -1,
            log_start_offset,
            record_count: 0,
        })),
        (Some(_), _) => Err(SequenceError::OutOfOrder {
            producer_id: a.batches[0].0.producer_id,
            epoch: a.batches[0].0.producer_epoch,
            expected: None,
            got: a.batches[0].0.base_sequence,
        }
        .into()),
        _ => {
            *pending = scratch;
            completed.extend(ended);
            Ok(None)
        }
    }
}

/// Transactions ended by markers just written into `seg`: they hold the last stable offset
/// until the high watermark passes their markers, and an aborted one goes into the
/// segment's aborted-transaction index.
fn end_transactions(inner: &Inner, seg: &Segment, done: &[CompletedTxn]) {
    if done.is_empty() {
        return;
    }
    {
        // Those the high watermark passed are stable already (also where nobody reads,
        // which is where `last_stable_offset` would drain them).
        let hw = inner.high_watermark.get();
        let mut un = inner.unreplicated.borrow_mut();
        while un.front().is_some_and(|&(_, marker)| marker < hw) {
            un.pop_front();
        }
    }
    for t in done {
        inner
            .unreplicated
            .borrow_mut()
            .push_back((t.first_offset, t.last_offset));
        if !t.commit {
            let lso = inner
                .producers
                .borrow()
                .first_unstable_offset()
                .unwrap_or(i64::MAX)
                .min(t.last_offset + 1);
            seg.aborted.borrow_mut().push(AbortedTxn {
                producer_id: t.producer_id,
                first_offset: t.first_offset,
                last_offset: t.last_offset,
                last_stable_offset: lso,
            });
        }
    }
}

/// The position of the batch starting at `offset` in `seg` (the end of the data if none
/// does): where a read below a last stable offset stops.
async fn position_of(seg: &Segment, offset: i64) -> Result<u64, LogError> {
    let from = seg
        .index
        .borrow()
        .lookup(seg.relative(offset))
        .map_or(0, |e| u64::from(e.position));
    let end = seg.visible_size.get();
    let mut found = end;
    seg.for_each_header(from, end, |pos, h| {
        if h.last_offset() >= offset {
            found = pos;
            false
        } else {
            true
        }
    })
    .await?;
    Ok(found)
}

/// [`Log::offset_for_timestamp`] within one segment: the first record at or after
/// `timestamp` and at or after the log start offset `lso`.
async fn offset_for_timestamp_in(
    seg: &Segment,
    timestamp: i64,
    lso: i64,
) -> Result<Option<TimestampOffset>, LogError> {
    // Visible batches only: nothing at or past the high watermark is answered.
    let end = seg.visible_size.get();
    let start_offset = seg
        .time_index
        .borrow()
        .lookup(timestamp)
        .map_or(seg.base_offset, |e| {
            seg.base_offset + i64::from(e.relative_offset)
        })
        .max(lso);
    let mut from = seg
        .index
        .borrow()
        .lookup(seg.relative(start_offset.max(seg.base_offset)))
        .map_or(0, |e| u64::from(e.position));
    loop {
        let mut found: Option<(u64, BatchHeader)> = None;
        seg.for_each_header(from, end, |pos, h| {
            if h.max_timestamp >= timestamp && h.last_offset() >= lso {
                found = Some((pos, *h));
                false
            } else {
                true
            }
        })
        .await?;
        let Some((pos, h)) = found else {
            return Ok(None);
        };
        if h.compression() != Ok(Compression::None)
            || h.timestamp_type() == runnel_record::TimestampType::LogAppendTime
        {
            return Ok(Some(TimestampOffset {
                timestamp: h.max_timestamp,
                offset: h.base_offset.max(lso),
            }));
        }
        let bytes = runnel_runtime::ring()
            .read_at(&seg.file, pos, h.total_len())
            .await
            .map_err(|e| LogError::io("read segment", &seg.log_path, e))?;
        for record in Records::new(bytes.get(HEADER_LEN..).unwrap_or_default()).flatten() {
            // Deltas come from the producer: saturate rather than overflow.
            let ts = h.base_timestamp.saturating_add(record.timestamp_delta);
            let offset = h.base_offset.saturating_add(i64::from(record.offset_delta));
            if ts >= timestamp && offset >= lso {
                return Ok(Some(TimestampOffset {
                    timestamp: ts,
                    offset,
                }));
            }
        }
        // The records of this batch that reach the target all lie below the log start
        // offset (its largest timestamp is not the last record's): go on with the next.
        from = pos + h.total_len() as u64;
    }
}

fn needs_roll(
    active: &Segment,
    config: &LogConfig,
    incoming_bytes: u64,
    incoming_records: u64,
    next_offset: i64,
    now: i64,
) -> bool {
    if active.is_empty() {
        return false;
    }
    let full = active.size.get() + incoming_bytes > config.segment_bytes;
    let old = config
        .segment_ms
        .zip(active.rolling_base_ms.get())
        .is_some_and(|(ms, base)| {
            now - base >= ms.saturating_sub(roll_jitter(active, config, ms)) as i64
        });
    // segment.index.bytes: an index would take one more entry than it may hold.
    let index_full = active.index.borrow().len() as u64 + 1 > config.segment_index_bytes / 8
        || active.time_index.borrow().len() as u64 + 1 > config.segment_index_bytes / 12;
    // Relative offsets in the indexes (see MAX_RELATIVE_OFFSET).
    let offsets_overflow =
        next_offset + incoming_records as i64 - active.base_offset > MAX_RELATIVE_OFFSET;
    full || old || offsets_overflow || index_full
}

/// This segment's segment.jitter.ms share (below segment.ms, as in Kafka): taken from a hash
/// of its file path, so each partition's segments differ and a segment keeps its amount
/// across restarts. Kafka draws it at random when the segment is created.
fn roll_jitter(segment: &Segment, config: &LogConfig, segment_ms: u64) -> u64 {
    let jitter = config.segment_jitter_ms.min(segment_ms);
    if jitter == 0 {
        return 0;
    }
    let hash = segment
        .log_path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
    hash % jitter
}

/// Closes the active segment (syncs it, seals and writes its indexes) and starts a new one at
/// the log end offset.
async fn roll_now(log: &Log) -> Result<(), LogError> {
    let inner = &log.inner;
    let old = log.active();
    let dir = inner.open_dir()?;
    // The old segment's data must be on disk before anything of the new segment is: after a
    // power loss, a durable new segment and producer snapshot above an older segment that
    // lost its tail would claim batches that are gone (a retry of one would be answered as a
    // duplicate at offsets not in the log). Recovery also treats a gap between segments as
    // the end of the log. One fdatasync per roll.
    flush_now(log).await?;
    old.seal_time_index();
    old.write_indexes(&dir).await?;
    let base = inner.next_offset.get();
    let config = inner.config.borrow().clone();
    let seg = create_segment(
        &inner.dir,
        &dir,
        base,
        config.preallocate,
        config.segment_bytes,
    )
    .await?;
    inner.segments.borrow_mut().push(Rc::new(seg));
    inner.dir_dirty.set(true);
    inner.stats.rolls.set(inner.stats.rolls.get() + 1);
    // The producer state as of the new segment's base: after a crash, recovery replays
    // only the batches appended since.
    write_producer_snapshot(inner).await?;
    // The old file's preallocated or reserved blocks past its end are no longer needed (a
    // reservation still being made gives its blocks back when it finishes). Always, not only
    // after a reservation of this run: a segment reopened after a restart may hold one too.
    old.retired.set(true);
    if !old.reserving.get() {
        let _ = runnel_runtime::ring()
            .ftruncate(&old.file, old.size.get())
            .await;
    }
    tracing::debug!(topic = %inner.topic, partition = inner.partition, base_offset = base, "rolled segment");
    Ok(())
}

/// Writes `<log end offset>.snapshot` with the producer state, then deletes all but the
/// newest two snapshots.
pub(crate) async fn write_producer_snapshot(inner: &Inner) -> Result<(), LogError> {
    let offset = inner.next_offset.get();
    let name = file_name(offset, SNAPSHOT_SUFFIX);
    let path = inner.dir.join(&name);
    let bytes = inner.producers.borrow().encode();
    let dir = inner.open_dir()?;
    crate::checkpoint::write_atomic_at(&dir, &name, bytes.into())
        .await
        .map_err(|e| LogError::io("write producer snapshot", &path, e))?;
    let mut offsets = list_snapshots(&inner.dir, &dir)?;
    offsets.sort_unstable();
    let keep_from = offsets.len().saturating_sub(2);
    for old in &offsets[..keep_from] {
        let _ = runnel_runtime::ring()
            .unlink_at(&dir, &file_name(*old, SNAPSHOT_SUFFIX))
            .await;
    }
    Ok(())
}

/// The offsets of the producer state snapshots in a partition directory. Snapshots named
/// by older versions (`<offset>..snapshot`) are renamed to Kafka's name on the way.
pub(crate) fn list_snapshots(dir: &Path, dir_fd: &OwnedFd) -> Result<Vec<i64>, LogError> {
    let io = |e| LogError::io("list log dir", dir, e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if let Some(o) = crate::segment::parse_file_name(&name, SNAPSHOT_SUFFIX) {
            out.push(o);
        } else if let Some(o) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|s| s.strip_suffix('.'))
            .and_then(|stem| crate::segment::parse_file_name(stem, ""))
        {
            let new = file_name(o, SNAPSHOT_SUFFIX);
            rustix::fs::renameat(dir_fd, &*name, dir_fd, &new)
                .map_err(|e| LogError::io("rename producer snapshot", &dir.join(&new), e.into()))?;
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Recovery of the producer state: the newest readable snapshot at or below the log end,
/// then the headers of every batch appended after it. Snapshots past the log end (the log
/// was truncated below them) are deleted.
pub(crate) async fn restore_producers(log: &Log) -> Result<(), LogError> {
    let inner = &log.inner;
    let leo = log.log_end_offset();
    let lso = log.log_start_offset();
    let mut state = ProducerState::default();
    let mut from = i64::MIN;
    let dir = inner.open_dir()?;
    let snapshots = list_snapshots(&inner.dir, &dir)?;
    let stale: Vec<i64> = snapshots.iter().copied().filter(|&o| o > leo).collect();
    for &o in &stale {
        // A snapshot past the log end describes batches that are gone; its removal must be
        // durable before anything is appended at those offsets again.
        let name = file_name(o, SNAPSHOT_SUFFIX);
        runnel_runtime::ring()
            .unlink_at(&dir, &name)
            .await
            .map_err(|e| LogError::io("delete producer snapshot", &inner.dir.join(&name), e))?;
    }
    if !stale.is_empty() {
        runnel_runtime::ring()
            .fdatasync(&dir)
            .await
            .map_err(|e| LogError::io("fsync directory", &inner.dir, e))?;
    }
    for &o in snapshots.iter().rev().filter(|&&o| o <= leo) {
        let path = inner.dir.join(file_name(o, SNAPSHOT_SUFFIX));
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| ProducerState::decode(&b))
        {
            Ok(s) => {
                state = s;
                from = o;
                break;
            }
            Err(e) => tracing::warn!(path = %path.display(), "ignoring producer snapshot: {e}"),
        }
    }
    // The leader epoch cache, from its file, cut to the log end; batches replayed below
    // add epochs a crash kept out of the file.
    let epochs_path = inner.dir.join(crate::epochs::FILE);
    let stored = match std::fs::read_to_string(&epochs_path) {
        Ok(text) => crate::epochs::EpochCache::decode(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %epochs_path.display(), "ignoring the leader epoch file: {e}");
            Default::default()
        }),
        Err(_) => Default::default(),
    };
    let mut epochs = stored.clone();
    epochs.truncate_from_end(leo);
    if epochs.entries().is_empty() && leo > lso {
        // Written before leader epochs were kept: every batch carries epoch 0.
        epochs.assign(LEADER_EPOCH, lso);
    }
    let segments: Vec<Rc<Segment>> = inner.segments.borrow().clone();
    // The aborted transactions of markers at or past the snapshot are found again below.
    for seg in &segments {
        seg.aborted.borrow_mut().retain(|t| t.last_offset < from);
    }
    let mut ended: Vec<(Rc<Segment>, CompletedTxn)> = Vec::new();
    if from < leo {
        for seg in segments
            .iter()
            .filter(|s| s.next_offset.get() > from && s.size.get() > 0)
        {
            let start = if from > seg.base_offset {
                seg.index
                    .borrow()
                    .lookup(seg.relative(from))
                    .map_or(0, |e| u64::from(e.position))
            } else {
                0
            };
            let append_ms = seg.last_modified_ms.get();
            seg.for_each_batch(start, seg.size.get(), |_, h, control| {
                if h.base_offset >= from {
                    let marker = control.and_then(runnel_record::control::marker_kind);
                    if let Some(t) = state.replay(h, marker, append_ms) {
                        ended.push((seg.clone(), t));
                    }
                    epochs.assign(h.partition_leader_epoch, h.base_offset);
                }
                true
            })
            .await?;
        }
    }
    state.remove_below(lso);
    *inner.producers.borrow_mut() = state;
    for (seg, t) in ended {
        end_transactions(inner, &seg, &[t]);
    }
    if let Some(latest) = epochs.latest_epoch() {
        inner.leader_epoch.set(latest);
    }
    let changed = epochs != stored;
    let text = epochs.encode();
    *inner.epochs.borrow_mut() = epochs;
    if changed {
        write_epochs(inner, text).await?;
    }
    Ok(())
}

/// Creates an empty segment file. With `preallocate`, its blocks are reserved without
/// changing the file size (FALLOC_FL_KEEP_SIZE), so recovery still sees only real data.
pub(crate) async fn create_segment(
    dir: &Path,
    dir_fd: &Arc<OwnedFd>,
    base_offset: i64,
    preallocate: bool,
    segment_bytes: u64,
) -> Result<Segment, LogError> {
    let name = file_name(base_offset, LOG_SUFFIX);
    let file = crate::segment::create_at(dir_fd, &name)
        .map_err(|e| LogError::io("create segment", &dir.join(&name), e))?;
    let seg = Segment::new(dir, base_offset, file, 0, now_ms());
    if preallocate {
        // Best effort: a filesystem without fallocate simply allocates as we write.
        let reserved = runnel_runtime::ring()
            .fallocate(&seg.file, libc::FALLOC_FL_KEEP_SIZE, 0, segment_bytes)
            .await;
        seg.reserved.set(if reserved.is_ok() {
            segment_bytes
        } else {
            u64::MAX
        });
    }
    Ok(seg)
}

/// fdatasync of every segment with unsynced bytes (and the directory if files came or went),
/// then the recovery point moves to the log end offset as it was when the flush began.
pub(crate) async fn flush_now(log: &Log) -> Result<(), LogError> {
    log.check_online()?;
    let result = sync_all(log).await;
    let sync_failed = matches!(
        &result,
        Err(LogError::Io {
            op: "fdatasync" | "fsync directory",
            ..
        })
    );
    if let (true, Err(e)) = (sync_failed, &result) {
        // As Kafka takes a log dir offline on an I/O error: a failed fdatasync may have lost
        // pages that readers already saw, and Linux reports it only once (the next fdatasync
        // would succeed), so nothing written here can be trusted until recovery re-reads it.
        take_offline(log, e);
    }
    result
}

/// Takes the log offline after a storage error: it refuses appends and reads until the
/// broker restarts and recovers it (the broker reports it to the controller, which moves
/// its leadership away).
fn take_offline(log: &Log, e: &LogError) {
    let inner = &log.inner;
    if inner.offline.borrow().is_some() {
        return;
    }
    tracing::error!(
        topic = %inner.topic, partition = inner.partition,
        "{e}: the partition is offline until the broker restarts and recovers it"
    );
    *inner.offline.borrow_mut() = Some(e.to_string());
    log.wake_waiters();
}

/// Whether a failed write takes the log offline: only when the device or file system
/// failed (see [`is_device_error`]). Kafka takes the log dir offline on any IOException;
/// Runnel keeps a partition online through a full disk (ENOSPC, EDQUOT: nothing was written
/// past the committed size, and appends resume once space returns, without a restart) and
/// through a passing shortage (out of descriptors or memory, a full submission queue).
fn write_error_is_fatal(e: &LogError) -> bool {
    match e {
        LogError::Io { source, .. } => is_device_error(source),
        _ => false,
    }
}

/// An error from the device or the file system under a partition's files, which takes the
/// partition offline (Kafka's log dir failure): I/O error, read-only file system, device
/// gone, file system corrupt (EUCLEAN is Linux's EFSCORRUPTED), a bad message from the
/// device, a FUSE or network file system whose server went away. Not: a full disk, a
/// missing descriptor or memory, an interruption or cancellation, an error without an
/// errno (ours).
pub fn is_device_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EIO
                | libc::EROFS
                | libc::ENXIO
                | libc::ENODEV
                | libc::EUCLEAN
                | libc::EBADMSG
                | libc::ENOTCONN
                | libc::EREMOTEIO
        )
    )
}

async fn sync_all(log: &Log) -> Result<(), LogError> {
    let inner = &log.inner;
    let target = inner.next_offset.get();
    let dirty: Vec<Rc<Segment>> = inner
        .segments
        .borrow()
        .iter()
        .filter(|s| s.synced_size.get() < s.size.get())
        .cloned()
        .collect();
    let ring = runnel_runtime::ring();
    for seg in dirty {
        let size = seg.size.get();
        ring.fdatasync(&seg.file)
            .await
            .map_err(|e| LogError::io("fdatasync", &seg.log_path, e))?;
        inner.stats.fdatasyncs.set(inner.stats.fdatasyncs.get() + 1);
        seg.synced_size.set(size);
    }
    if inner.dir_dirty.replace(false) {
        // Not being able to open the directory (gone, or out of descriptors) is no failed
        // sync: the entries stay dirty for the next flush.
        let dir = inner
            .open_dir()
            .inspect_err(|_| inner.dir_dirty.set(true))?;
        if let Err(e) = ring.fdatasync(&dir).await {
            inner.dir_dirty.set(true);
            return Err(LogError::io("fsync directory", &inner.dir, e));
        }
    }
    if target > inner.recovery_point.get() {
        inner.recovery_point.set(target);
    }
    if inner.next_offset.get() == target {
        inner.unflushed_records.set(0);
        inner.oldest_unflushed_ms.set(None);
    }
    Ok(())
}

/// file.delete.delay.ms: renames a segment's files `*.deleted` now and unlinks them `delay_ms`
/// later, off this call (a stop in between leaves them for recovery to remove). Readers
/// holding the files' descriptors are unaffected either way.
fn delete_segment_files_later(
    dir: &Arc<OwnedFd>,
    seg: &Segment,
    delay_ms: u64,
) -> Result<(), LogError> {
    let mut renamed = Vec::new();
    for name in seg.file_names() {
        let to = format!("{name}.deleted");
        match rustix::fs::renameat(&**dir, name.as_str(), &**dir, to.as_str()) {
            Ok(()) => renamed.push(to),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(LogError::io(
                    "rename deleted segment",
                    &seg.log_path.with_file_name(&name),
                    e.into(),
                ))
            }
        }
    }
    let dir = dir.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let ring = runnel_runtime::ring();
        for name in renamed {
            // Gone already (the topic was deleted): nothing to do.
            let _ = ring.unlink_at(&dir, &name).await;
        }
    })
    .detach();
    Ok(())
}

/// Removes a segment's files (relative to its directory descriptor; missing ones are fine).
pub(crate) async fn delete_segment_files(
    dir: &Arc<OwnedFd>,
    seg: &Segment,
) -> Result<(), LogError> {
    let ring = runnel_runtime::ring();
    for name in seg.file_names() {
        match ring.unlink_at(dir, &name).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LogError::io(
                    "delete segment",
                    &seg.log_path.with_file_name(&name),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// A copy of a write-path error for each append it fails (io::Error is not Clone). An I/O
/// error keeps its operation, file and errno (ENOSPC stays ENOSPC for the caller).
fn storage_error(e: &LogError) -> LogError {
    match e {
        LogError::Closed(p) => LogError::Closed(p.clone()),
        LogError::Offline { dir, reason } => LogError::Offline {
            dir: dir.clone(),
            reason: reason.clone(),
        },
        LogError::Io { op, path, source } => LogError::Io {
            op,
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(errno) => std::io::Error::from_raw_os_error(errno),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => LogError::Io {
            op: "append",
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// The fetches waiting for data, by [`WaitForData`] id: each keeps one entry, which it
/// removes when dropped, so fetches that time out on an idle partition leave nothing behind.
#[derive(Default)]
struct Waiters {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

/// Future of [`Log::wait_for_data`].
pub struct WaitForData {
    inner: Rc<Inner>,
    offset: i64,
    upto: Upto,
    id: Option<u64>,
}

impl Future for WaitForData {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let inner = &this.inner;
        let end = match this.upto {
            Upto::HighWatermark => inner.high_watermark.get(),
            Upto::Stable => inner.last_stable_offset(),
            Upto::LogEnd => inner.published.get(),
        };
        if end > this.offset || inner.closed.get() || inner.offline.borrow().is_some() {
            if let Some(id) = this.id.take() {
                this.inner.waiters.borrow_mut().wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let mut waiters = this.inner.waiters.borrow_mut();
        let id = *this.id.get_or_insert_with(|| {
            waiters.next_id += 1;
            waiters.next_id
        });
        match waiters.wakers.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                waiters.wakers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitForData {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.waiters.borrow_mut().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod roll_tests {
    use super::*;

    fn segment(dir: &str) -> Segment {
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let s = Segment::new(std::path::Path::new(dir), 0, file, 100, 0);
        s.rolling_base_ms.set(Some(1_000_000));
        s
    }

    /// segment.jitter.ms: each segment rolls its own share earlier than segment.ms, never
    /// more than segment.ms, and not at all without jitter.
    #[test]
    fn segments_roll_early_by_their_own_jitter() {
        let ms = 10_000u64;
        let config = LogConfig {
            segment_ms: Some(ms),
            segment_jitter_ms: ms,
            ..LogConfig::default()
        };
        let jitters: Vec<u64> = (0..20)
            .map(|i| roll_jitter(&segment(&format!("/data/t-{i}")), &config, ms))
            .collect();
        assert!(jitters.iter().all(|j| *j < ms), "{jitters:?}");
        assert!(
            jitters.windows(2).any(|w| w[0] != w[1]),
            "partitions differ: {jitters:?}"
        );
        for (i, j) in jitters.iter().enumerate() {
            let s = segment(&format!("/data/t-{i}"));
            let due = 1_000_000 + (ms - j) as i64;
            assert!(!needs_roll(&s, &config, 0, 0, 0, due - 1));
            assert!(needs_roll(&s, &config, 0, 0, 0, due));
        }
        let none = LogConfig {
            segment_jitter_ms: 0,
            ..config
        };
        let s = segment("/data/t-0");
        assert_eq!(roll_jitter(&s, &none, ms), 0);
        assert!(!needs_roll(&s, &none, 0, 0, 0, 1_000_000 + ms as i64 - 1));
    }
}
