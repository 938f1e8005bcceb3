//! Log compaction (Kafka's log cleaner) for one partition log: keep the latest record of
//! every key, drop older ones, tombstones after `delete.retention.ms`, aborted transactions'
//! records and their markers.
//!
//! A pass ([`Log::clean`]) works as Kafka's `Cleaner.clean` does:
//! 1. Map the dirty section, from the cleaner checkpoint (`first_dirty`) to the end of the
//!    cleanable range: each key's hash to the offset of its latest record. The map has a
//!    fixed memory bound (`--log-cleaner-dedupe-buffer-size`); when it fills, the pass cleans
//!    up to where it got, as Kafka does.
//! 2. Rewrite the closed segments from the log start in groups (small ones merged, up to
//!    segment.bytes): a record stays if it is the latest of its key (or lies past the mapped
//!    range), a tombstone until its batch's delete horizon (KIP-534: set when first cleaned,
//!    `delete.retention.ms` ahead) has passed. Batches keep their base offsets, producer
//!    fields and codec; a producer's last batch stays, empty if need be, so idempotence keeps
//!    working.
//! 3. Swap each group in crash-safely, with Kafka's protocol: the new segment is written as
//!    `<base>.log.cleaned` and synced, renamed `<base>.log.swap` (the commit point), the old
//!    segments' files are removed and the swap renamed `<base>.log`. Recovery deletes a
//!    `.cleaned` file and completes a `.swap` (see `recovery::complete_swaps`), so a crash at
//!    any point leaves the old segments or the new one, never a mix.
//!
//! The pass runs on the log's shard between its other work: it reads and writes through
//! the shard's io_uring, lets the shard's other tasks run after every chunk it reads (1 MiB)
//! and after every compressed batch it inflates, and is throttled to a byte rate. So an
//! append or fetch on the shard waits behind it for at most one chunk of uncompressed
//! batches or one compressed batch (docs/benchmarks.md has the times). In-flight
//! fetches keep the descriptors of the segments they read, so a swap never breaks one.

use crate::log::Log;
use crate::segment::{create_at, file_name, Segment, INDEX_SUFFIX, LOG_SUFFIX};
use crate::segment::{TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX};
use crate::{LogError, MAX_RELATIVE_OFFSET};
use runnel_record::compact::{empty_batch, filter_batch, for_each_record, Filtered};
use runnel_record::{verify_stored, BatchHeader, Batches};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Suffix of a cleaned segment being written (deleted by recovery).
pub const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a cleaned segment that replaces its group (completed by recovery).
pub const SWAP_SUFFIX: &str = "swap";
/// The cleaner reads segments in chunks of this size (or one whole batch, if larger).
const CHUNK: usize = 1 << 20;
/// A compressed batch inflates to at most this much for the cleaner (a batch is at most
/// max.message.bytes compressed; this bounds what a hostile one can cost).
const MAX_INFLATED: usize = 256 << 20;
/// Kafka's log.cleaner.io.buffer.load.factor: the map counts as full at 90 %.
const LOAD_FACTOR: f64 = 0.9;
/// Bytes per map entry: a 128-bit key hash and an offset (Kafka's MD5 + offset: 24 too).
pub const MAP_ENTRY_BYTES: usize = 24;

/// Key hash -> offset of the key's latest record, in a fixed-size open-addressing table so
/// its memory is exactly what the operator allowed. Written here rather than using a
/// HashMap: a HashMap's memory grows in steps of two and is not bounded up front. Keys are
/// hashed with two independently keyed SipHashes (128 bits, as Kafka's MD5), so two keys
/// colliding, which would drop the older one's latest record, is as unlikely as in Kafka.
pub struct OffsetMap {
    /// (hash low, hash high, offset); offset u64::MAX marks a free slot.
    slots: Vec<[u64; 3]>,
    used: usize,
    max_used: usize,
    hashers: [std::collections::hash_map::RandomState; 2],
    latest: i64,
}

const FREE: u64 = u64::MAX;

impl OffsetMap {
    /// A map of at most `max_bytes`, sized down to what `records` keys can need.
    pub fn new(max_bytes: usize, records: u64) -> OffsetMap {
        let by_memory = (max_bytes / MAP_ENTRY_BYTES).max(16);
        let by_need = ((records as f64 / LOAD_FACTOR) as usize).saturating_add(16);
        let n = by_memory.min(by_need);
        OffsetMap {
            slots: vec![[0, 0, FREE]; n],
            used: 0,
            max_used: ((n as f64 * LOAD_FACTOR) as usize).max(1),
            hashers: Default::default(),
            latest: -1,
        }
    }

    fn hash(&self, key: &[u8]) -> (u64, u64) {
        (self.hashers[0].hash_one(key), self.hashers[1].hash_one(key))
    }

    fn slot(&self, (lo, hi): (u64, u64)) -> usize {
        let n = self.slots.len();
        let mut i = (lo % n as u64) as usize;
        loop {
            let s = &self.slots[i];
            if s[2] == FREE || (s[0] == lo && s[1] == hi) {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Whether another key fits.
    pub fn is_full(&self) -> bool {
        self.used >= self.max_used
    }

    /// Records `offset` as `key`'s latest. False (and nothing stored) when the map is full
    /// and the key is new.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let h = self.hash(key);
        let i = self.slot(h);
        if self.slots[i][2] == FREE {
            if self.is_full() {
                return false;
            }
            self.used += 1;
        }
        self.slots[i] = [h.0, h.1, offset as u64];
        self.latest = self.latest.max(offset);
        true
    }

    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let s = self.slots[self.slot(self.hash(key))];
        (s[2] != FREE).then_some(s[2] as i64)
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Bytes the table takes.
    pub fn size_bytes(&self) -> usize {
        self.slots.len() * MAP_ENTRY_BYTES
    }
}

/// Keeps a pass's I/O under a byte rate (Kafka's log.cleaner.io.max.bytes.per.second, which
/// counts what the cleaner reads and writes).
pub struct Throttle {
    bytes_per_sec: f64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: f64) -> Throttle {
        Throttle {
            bytes_per_sec,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes and sleeps as long as the pass is ahead of its rate; yields to the
    /// shard's other tasks in any case.
    async fn account(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.bytes_per_sec.is_finite() && self.bytes_per_sec > 0.0 {
            let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                glommio::timer::sleep(due - elapsed).await;
                return;
            }
        }
        runnel_runtime::yield_now().await;
    }
}

/// What the cleaner may clean in a log now, and how dirty it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Where the dirty section starts: the cleaner checkpoint (clamped to the log).
    pub first_dirty: i64,
    /// The first offset the pass must not clean: the base of the first segment it may not
    /// touch (the active one, one holding an open transaction or records above the high
    /// watermark, or one younger than min.compaction.lag.ms).
    pub end: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// When the oldest dirty record was appended (ms), if known: max.compaction.lag.ms.
    pub dirty_since_ms: Option<i64>,
    /// A tombstone or marker the cleaner kept has reached its delete horizon: a pass is due
    /// whatever the dirty ratio.
    pub horizon_due: bool,
}

impl Cleanable {
    /// Kafka's cleanable ratio: dirty bytes over all bytes in the cleanable range.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub batches_read: u64,
    pub records_removed: u64,
    pub segments_before: u64,
    pub segments_after: u64,
    /// The new cleaner checkpoint: the first offset the pass did not map.
    pub end: i64,
}

/// A pass's inputs that come from the broker rather than the log.
pub struct CleanContext<'a> {
    pub now_ms: i64,
    pub map: &'a mut OffsetMap,
    pub throttle: &'a mut Throttle,
    /// Test hook: stop the pass (as a crash would) after this step of the first group's swap.
    pub crash_after: Option<SwapStep>,
}

/// The points of a swap a crash test stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    /// The cleaned segment is written and synced, not yet renamed `.swap`.
    Cleaned,
    /// Renamed `.swap` (committed); the old segments still there.
    Swap,
    /// Some old segments removed, the swap not yet renamed.
    OldRemoved,
}

/// Reads a segment's whole batches in chunks.
struct Reader {
    file: Arc<OwnedFd>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl Reader {
    fn new(seg: &Segment) -> Reader {
        Reader {
            file: seg.file.clone(),
            pos: 0,
            end: seg.size.get(),
            buf: Vec::new(),
        }
    }

    /// The next chunk of whole batches, None at the end. `path` names the file in errors.
    async fn next(&mut self, path: &std::path::Path) -> Result<Option<&[u8]>, LogError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let ring = runnel_runtime::ring();
        let mut want = CHUNK.min((self.end - self.pos) as usize);
        loop {
            ring.read_at_into(&self.file, self.pos, want, &mut self.buf)
                .await
                .map_err(|e| LogError::io("read segment", path, e))?;
            let mut batches = Batches::new(&self.buf);
            let mut whole = 0;
            let mut needed = None;
            for b in batches.by_ref() {
                match b {
                    Ok((at, h)) => whole = at + h.total_len(),
                    Err(_) => {
                        needed = Some(());
                        break;
                    }
                }
            }
            if whole > 0 {
                self.pos += whole as u64;
                return Ok(Some(&self.buf[..whole]));
            }
            // Not even one whole batch: it is larger than the chunk (read it whole), or the
            // file is damaged.
            let header = BatchHeader::parse(&self.buf).map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                position: self.pos,
                reason: e.to_string(),
            })?;
            let len = header.total_len();
            if needed.is_none() || len <= want || self.pos + len as u64 > self.end {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: self.pos,
                    reason: "a batch runs past the end of the segment".into(),
                });
            }
            want = len;
        }
    }
}

fn is_compressed(h: &BatchHeader) -> bool {
    !matches!(h.compression(), Ok(runnel_record::Compression::None))
}

fn corrupt(seg: &Segment, e: impl std::fmt::Display) -> LogError {
    LogError::Corrupt {
        path: seg.log_path.clone(),
        position: 0,
        reason: e.to_string(),
    }
}

impl Log {
    /// The cleaner checkpoint: where the dirty section starts.
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.inner
            .first_dirty
            .get()
            .clamp(self.log_start_offset(), self.log_end_offset())
    }

    /// Sets the cleaner checkpoint (from the data dir's `cleaner-offset-checkpoint` at open).
    pub fn set_cleaner_checkpoint(&self, offset: i64) {
        self.inner.first_dirty.set(offset);
    }

    /// What a pass could clean now; None when nothing (no closed segment past the checkpoint
    /// may be cleaned yet).
    pub async fn cleanable(&self, now_ms: i64) -> Result<Option<Cleanable>, LogError> {
        self.check_online()?;
        let config = self.config();
        let first_dirty = self.cleaner_checkpoint();
        // Offsets at or past this may not be cleaned: an open transaction or records not yet
        // replicated (above the high watermark) must stay as they are.
        let unstable = self.last_stable_offset().min(self.high_watermark());
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        let closed = &segments[..segments.len() - 1];
        let mut end = segments.last().expect("a log has a segment").base_offset;
        for seg in closed {
            let too_young = config.min_compaction_lag_ms > 0
                && now_ms - seg.largest_timestamp() < config.min_compaction_lag_ms as i64;
            if seg.next_offset.get() > unstable || too_young {
                end = seg.base_offset;
                break;
            }
        }
        let horizon_due = self.inner.delete_horizon.get().is_some_and(|h| h <= now_ms);
        if end < first_dirty || (end == first_dirty && !horizon_due) {
            return Ok(None);
        }
        let (mut clean_bytes, mut dirty_bytes) = (0, 0);
        let mut first_dirty_seg = None;
        for seg in closed.iter().filter(|s| s.base_offset < end) {
            if seg.next_offset.get() <= first_dirty {
                clean_bytes += seg.size.get();
            } else {
                dirty_bytes += seg.size.get();
                first_dirty_seg.get_or_insert(seg.clone());
            }
        }
        let dirty_since_ms = match first_dirty_seg {
            Some(seg) => first_timestamp(&seg, first_dirty).await?,
            None => None,
        };
        Ok(Some(Cleanable {
            first_dirty,
            end,
            clean_bytes,
            dirty_bytes,
            dirty_since_ms,
            horizon_due,
        }))
    }

    /// One cleaning pass over `range` (from [`Log::cleanable`]). Returns what it did; the
    /// cleaner checkpoint moves to `CleanStats::end`.
    pub async fn clean(
        &self,
        range: Cleanable,
        ctx: &mut CleanContext<'_>,
    ) -> Result<CleanStats, LogError> {
        self.check_online()?;
        let config = self.config();
        let mut stats = CleanStats::default();
        let segments: Vec<Rc<Segment>> = self.inner.segments.borrow().clone();
        let closed: Vec<Rc<Segment>> = segments[..segments.len() - 1]
            .iter()
            .filter(|s| s.base_offset < range.end)
            .cloned()
            .collect();
        let aborted = aborted_ranges(&segments);

        // 1. The offset map of the dirty section.
        let mut end = range.end;
        'map: for seg in closed
            .iter()
            .filter(|s| s.next_offset.get() > range.first_dirty)
        {
            let mut reader = Reader::new(seg);
            while let Some(chunk) = reader.next(&seg.log_path).await? {
                let n = chunk.len();
                for b in Batches::new(chunk) {
                    let (at, h) = b.map_err(|e| corrupt(seg, e))?;
                    stats.batches_read += 1;
                    if h.next_offset() <= range.first_dirty
                        || h.is_control()
                        || is_aborted(&aborted, &h)
                    {
                        continue;
                    }
                    if h.base_offset >= end {
                        break 'map;
                    }
                    let batch = &chunk[at..at + h.total_len()];
                    let mut full = false;
                    for_each_record(batch, &h, MAX_INFLATED, |r| {
                        if let Some(k) = r.key.filter(|_| r.offset >= range.first_dirty) {
                            full |= !ctx.map.put(k, r.offset);
                        }
                    })
                    .map_err(|e| corrupt(seg, e))?;
                    if is_compressed(&h) {
                        // Inflating is the costly part: the shard's other tasks go first.
                        runnel_runtime::yield_now().await;
                    }
                    if full {
                        // Cleans what it mapped: this batch and what follows wait for the
                        // next pass. (A batch's keys are all mapped or it is not counted.)
                        end = h.base_offset;
                        break 'map;
                    }
                }
                stats.bytes_read += n as u64;
                ctx.throttle.account(n).await;
            }
        }
        if end <= range.first_dirty && range.end > range.first_dirty {
            return Err(LogError::Config(format!(
                "the cleaner's dedupe buffer ({} bytes) cannot hold the keys of one batch",
                ctx.map.size_bytes()
            )));
        }
        stats.end = end;

        // 2. and 3. Rewrite and swap, group by group, from the log start.
        let groups = group_segments(&closed, end, config.segment_bytes);
        let producer_last: HashMap<i64, i64> = self
            .inner
            .producers
            .borrow()
            .entries
            .iter()
            .filter_map(|(&pid, e)| e.last_offset().map(|o| (pid, o)))
            .collect();
        let mut txn_kept: HashMap<i64, bool> = HashMap::new();
        let mut horizon: Option<i64> = None;
        let rules = Rules {
            end,
            now_ms: ctx.now_ms,
            delete_horizon: ctx.now_ms.saturating_add(config.delete_retention_ms as i64),
            aborted: &aborted,
            producer_last: &producer_last,
        };
        stats.segments_before = closed.len() as u64;
        for group in groups {
            let cleaned = self
                .clean_group(&group, &rules, &mut txn_kept, &mut horizon, ctx, &mut stats)
                .await?;
            if !self.swap_in(&group, cleaned, ctx.crash_after).await? {
                // The log changed under the pass (closed, truncated): stop here, and the
                // dirty section stays where it was.
                return Ok(stats);
            }
            if ctx.crash_after.is_some() {
                break;
            }
            stats.segments_after += 1;
        }
        self.inner.first_dirty.set(end);
        self.inner.delete_horizon.set(horizon);
        Ok(stats)
    }

    /// Writes `group`'s kept batches into a new `<base>.log.cleaned`, synced.
    async fn clean_group(
        &self,
        group: &[Rc<Segment>],
        rules: &Rules<'_>,
        txn_kept: &mut HashMap<i64, bool>,
        horizon: &mut Option<i64>,
        ctx: &mut CleanContext<'_>,
        stats: &mut CleanStats,
    ) -> Result<Segment, LogError> {
        let dir_fd = self.inner.open_dir()?;
        let base = group[0].base_offset;
        let name = format!("{}.{CLEANED_SUFFIX}", file_name(base, LOG_SUFFIX));
        let file = create_at(&dir_fd, &name)
            .map_err(|e| LogError::io("create cleaned segment", &self.inner.dir.join(&name), e))?;
        let last_modified = group.iter().map(|s| s.last_modified_ms.get()).max();
        let seg = Segment::new(
            &self.inner.dir,
            base,
            file,
            0,
            last_modified.unwrap_or(ctx.now_ms),
        );
        let interval = self.config().index_interval_bytes;
        let group_end = group.last().expect("a group").next_offset.get();
        let mut kept_markers = std::collections::HashSet::new();
        let ring = runnel_runtime::ring();
        for old in group {
            let mut reader = Reader::new(old);
            while let Some(chunk) = reader.next(&old.log_path).await? {
                let n = chunk.len();
                let mut out: Vec<bytes::Bytes> = Vec::new();
                let mut out_len = 0usize;
                for b in Batches::new(chunk) {
                    let (at, h) = b.map_err(|e| corrupt(old, e))?;
                    let bytes = &chunk[at..at + h.total_len()];
                    let (kept, pending) = rules
                        .apply(bytes, &h, group_end, ctx.map, txn_kept, stats)
                        .map_err(|e| corrupt(old, e))?;
                    if is_compressed(&h) {
                        // Inflated (and compressed again): the shard's other tasks go first.
                        runnel_runtime::yield_now().await;
                    }
                    if let Some(t) = pending {
                        *horizon = Some(horizon.map_or(t, |m: i64| m.min(t)));
                    }
                    if h.is_control() && !matches!(kept, Kept::Nothing) {
                        kept_markers.insert(h.base_offset);
                    }
                    let kept = match kept {
                        Kept::Verbatim => bytes::Bytes::copy_from_slice(bytes),
                        Kept::New(b) => bytes::Bytes::from(b),
                        Kept::Nothing => continue,
                    };
                    let nh = BatchHeader::parse(&kept).map_err(|e| corrupt(old, e))?;
                    seg.on_batch(&nh, seg.size.get() + out_len as u64, interval);
                    out_len += kept.len();
                    out.push(kept);
                }
                if !out.is_empty() {
                    ring.write_all_at(&seg.file, seg.size.get(), out)
                        .await
                        .map_err(|(e, _)| {
                            LogError::io("write cleaned segment", &seg.log_path, e)
                        })?;
                    seg.size.set(seg.size.get() + out_len as u64);
                }
                stats.bytes_read += n as u64;
                stats.bytes_written += out_len as u64;
                ctx.throttle.account(n + out_len).await;
            }
            // An aborted transaction stays indexed only while its abort marker does: a
            // read_committed reader told of one skips that producer's batches until it meets
            // the marker (Kafka keeps the entries of kept markers too).
            seg.aborted.borrow_mut().extend(
                old.aborted
                    .borrow()
                    .iter()
                    .filter(|t| kept_markers.contains(&t.last_offset))
                    .copied(),
            );
        }
        seg.seal_time_index();
        ring.fdatasync(&seg.file)
            .await
            .map_err(|e| LogError::io("fdatasync", &seg.log_path, e))?;
        // Its indexes too, before the commit point, so the swap brings them along.
        seg.write_index_files(&dir_fd, Some(CLEANED_SUFFIX)).await?;
        let size = seg.size.get();
        seg.visible_size.set(size);
        seg.published_size.set(size);
        seg.synced_size.set(size);
        seg.visible_max_timestamp
            .set((seg.max_timestamp.get(), seg.offset_of_max_timestamp.get()));
        Ok(seg)
    }

    /// Replaces `group` by `cleaned` on disk (Kafka's swap protocol) and in the segment
    /// list. False when the log changed meanwhile (closed, truncated, segments removed): the
    /// cleaned file is removed and the log left as it was.
    async fn swap_in(
        &self,
        group: &[Rc<Segment>],
        cleaned: Segment,
        crash_after: Option<SwapStep>,
    ) -> Result<bool, LogError> {
        let inner = &self.inner;
        let _layout = inner.layout.acquire_permit(1).await;
        let dir_fd = inner.open_dir()?;
        let base = cleaned.base_offset;
        let log_name = file_name(base, LOG_SUFFIX);
        let cleaned_name = format!("{log_name}.{CLEANED_SUFFIX}");
        let swap_name = format!("{log_name}.{SWAP_SUFFIX}");
        let still_there = {
            let segs = inner.segments.borrow();
            let at = segs.iter().position(|s| Rc::ptr_eq(s, &group[0]));
            !inner.closed.get()
                && at.is_some_and(|i| {
                    segs.len() > i + group.len()
                        && segs[i..i + group.len()]
                            .iter()
                            .zip(group)
                            .all(|(a, b)| Rc::ptr_eq(a, b))
                })
        };
        // (The index files travel with the log: `.cleaned`, then `.swap`, then their names.)
        let index_names: Vec<String> = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX]
            .iter()
            .map(|sfx| file_name(base, sfx))
            .collect();
        if !still_there {
            let ring = runnel_runtime::ring();
            let _ = ring.unlink_at(&dir_fd, &cleaned_name).await;
            for n in &index_names {
                let _ = ring
                    .unlink_at(&dir_fd, &format!("{n}.{CLEANED_SUFFIX}"))
                    .await;
            }
            return Ok(false);
        }
        let io = |op, e: std::io::Error| LogError::io(op, &inner.dir.join(&swap_name), e);
        if crash_after == Some(SwapStep::Cleaned) {
            return Ok(true);
        }
        let rename = |from: &str, to: &str| match rustix::fs::renameat(&*dir_fd, from, &*dir_fd, to)
        {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io("rename cleaned index", e.into())),
        };
        for n in &index_names {
            rename(
                &format!("{n}.{CLEANED_SUFFIX}"),
                &format!("{n}.{SWAP_SUFFIX}"),
            )?;
        }
        // The log's rename is the commit point.
        rustix::fs::renameat(
            &*dir_fd,
            cleaned_name.as_str(),
            &*dir_fd,
            swap_name.as_str(),
        )
        .map_err(|e| io("rename cleaned segment", e.into()))?;
        runnel_runtime::ring()
            .fdatasync(&dir_fd)
            .await
            .map_err(|e| io("fsync directory", e))?;
        if crash_after == Some(SwapStep::Swap) {
            return Ok(true);
        }
        // Committed: recovery completes the swap from here on.
        for (i, old) in group.iter().enumerate() {
            crate::log::delete_segment_files(&dir_fd, old).await?;
            if i == 0 && crash_after == Some(SwapStep::OldRemoved) {
                return Ok(true);
            }
        }
        for n in &index_names {
            rename(&format!("{n}.{SWAP_SUFFIX}"), n)?;
        }
        rustix::fs::renameat(&*dir_fd, swap_name.as_str(), &*dir_fd, log_name.as_str())
            .map_err(|e| io("rename swap segment", e.into()))?;
        runnel_runtime::ring()
            .fdatasync(&dir_fd)
            .await
            .map_err(|e| io("fsync directory", e))?;
        {
            let mut segs = inner.segments.borrow_mut();
            let i = segs
                .iter()
                .position(|s| Rc::ptr_eq(s, &group[0]))
                .expect("checked under the layout lock");
            segs.splice(i..i + group.len(), [Rc::new(cleaned)]);
        }
        let s = &inner.stats;
        s.cleaned_segments
            .set(s.cleaned_segments.get() + group.len() as u64);
        Ok(true)
    }
}

/// When the first record at or after `offset` in `seg` was written (its batch's first
/// timestamp), for max.compaction.lag.ms.
async fn first_timestamp(seg: &Segment, offset: i64) -> Result<Option<i64>, LogError> {
    let mut found = None;
    seg.for_each_header(0, seg.size.get(), |_, h| {
        if h.next_offset() > offset {
            found = Some(h.base_timestamp);
            false
        } else {
            true
        }
    })
    .await?;
    // (A batch with a delete horizon has lost its first timestamp: use the segment's time.)
    Ok(found.filter(|&t| t >= 0).or(Some(seg.largest_timestamp())))
}

/// Producer id -> (first offset, marker offset) of each aborted transaction in the log.
type Aborted = HashMap<i64, Vec<(i64, i64)>>;

fn aborted_ranges(segments: &[Rc<Segment>]) -> Aborted {
    let mut out: Aborted = HashMap::new();
    for seg in segments {
        for t in seg.aborted.borrow().iter() {
            out.entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
    }
    out
}

fn is_aborted(aborted: &Aborted, h: &BatchHeader) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.get(&h.producer_id).is_some_and(|r| {
            r.iter()
                .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
        })
}

/// Consecutive segments up to the one holding `end - 1`, in groups whose sizes add up to at
/// most `max_bytes` and whose offsets fit one segment's relative offsets (Kafka's
/// groupSegmentsBySize): small cleaned segments merge.
fn group_segments(closed: &[Rc<Segment>], end: i64, max_bytes: u64) -> Vec<Vec<Rc<Segment>>> {
    let mut groups: Vec<Vec<Rc<Segment>>> = Vec::new();
    let mut size = 0u64;
    for seg in closed.iter().filter(|s| s.base_offset < end) {
        let fits = groups.last().is_some_and(|g| {
            size + seg.size.get() <= max_bytes
                && seg.next_offset.get() - 1 - g[0].base_offset <= MAX_RELATIVE_OFFSET
        });
        if fits {
            size += seg.size.get();
            groups.last_mut().expect("checked").push(seg.clone());
        } else {
            size = seg.size.get();
            groups.push(vec![seg.clone()]);
        }
    }
    groups
}

/// What stays of a batch.
enum Kept {
    Verbatim,
    New(Vec<u8>),
    Nothing,
}

/// Kafka's retention rules for one pass.
struct Rules<'a> {
    /// Records at or past this were not mapped: kept as they are.
    end: i64,
    now_ms: i64,
    /// The horizon a batch that keeps a tombstone or is a marker gets on its first cleaning.
    delete_horizon: i64,
    aborted: &'a Aborted,
    /// Each producer's last batch (its last offset): kept even when emptied.
    producer_last: &'a HashMap<i64, i64>,
}

impl Rules<'_> {
    fn apply(
        &self,
        bytes: &[u8],
        h: &BatchHeader,
        group_end: i64,
        map: &OffsetMap,
        txn_kept: &mut HashMap<i64, bool>,
        stats: &mut CleanStats,
    ) -> Result<(Kept, Option<i64>), runnel_record::BatchError> {
        if h.base_offset >= self.end {
            return Ok((Kept::Verbatim, None));
        }
        let horizon_passed = h.delete_horizon().is_some_and(|t| self.now_ms >= t);
        // The last batch of the mapped range and of the group stay, empty if need be: a
        // cleaned segment then ends where its group did, so segments stay contiguous
        // (recovery takes a gap between segments for a lost tail) and recovery knows which
        // old segments a `.swap` replaces (Kafka keeps the range's last batch for the latter).
        let ends_group = h.next_offset() == self.end || h.next_offset() == group_end;
        // What a later pass could remove at a horizon still ahead: a pass is due then.
        let pending = |t: i64| Some(t).filter(|&t| t > self.now_ms);
        if h.is_control() {
            // A transaction marker goes once its horizon passed and no record of its
            // transaction is left before it (Kafka's rule); it gets a horizon otherwise.
            let data_left = txn_kept.remove(&h.producer_id).unwrap_or(false);
            let removable = !data_left && !ends_group;
            if horizon_passed && removable {
                stats.records_removed += h.record_count.max(0) as u64;
                return Ok((Kept::Nothing, None));
            }
            verify_stored(bytes)?;
            let kept =
                match filter_batch(bytes, h, MAX_INFLATED, |_| true, Some(self.delete_horizon))? {
                    Filtered::Rewritten(b) => Kept::New(b),
                    _ => Kept::Verbatim,
                };
            let horizon = h.delete_horizon().unwrap_or(self.delete_horizon);
            return Ok((kept, pending(horizon).filter(|_| removable)));
        }
        // A producer's last batch stays too (its sequence and epoch), empty if need be.
        let last_of_producer = (h.has_producer_id()
            && self.producer_last.get(&h.producer_id) == Some(&h.last_offset()))
            || ends_group;
        let emptied = |stats: &mut CleanStats| -> Result<Kept, runnel_record::BatchError> {
            stats.records_removed += h.record_count.max(0) as u64;
            Ok(if last_of_producer {
                Kept::New(empty_batch(bytes, h)?)
            } else {
                Kept::Nothing
            })
        };
        if is_aborted(self.aborted, h) {
            return Ok((emptied(stats)?, None));
        }
        if h.record_count <= 0 {
            let kept = if last_of_producer {
                Kept::Verbatim
            } else {
                Kept::Nothing
            };
            return Ok((kept, None));
        }
        verify_stored(bytes)?;
        let mut tombstone_kept = false;
        let mut removed = 0u64;
        let end = self.end;
        let filtered = filter_batch(
            bytes,
            h,
            MAX_INFLATED,
            |r| {
                let keep = r.offset >= end
                    || match r.key {
                        // Kafka's cleaner drops records without a key.
                        None => false,
                        Some(k) => {
                            map.get(k).is_none_or(|latest| r.offset >= latest)
                                && !(r.tombstone && horizon_passed)
                        }
                    };
                tombstone_kept |= keep && r.tombstone;
                removed += u64::from(!keep);
                keep
            },
            None,
        )?;
        stats.records_removed += removed;
        if h.is_transactional() && !matches!(filtered, Filtered::Empty) {
            txn_kept.insert(h.producer_id, true);
        }
        // A kept tombstone's batch gets its horizon on first cleaning; a pass is due then.
        let horizon = h.delete_horizon().unwrap_or(self.delete_horizon);
        let horizon = pending(horizon).filter(|_| tombstone_kept);
        let kept = match filtered {
            Filtered::Empty => emptied(stats)?,
            Filtered::Unchanged if !tombstone_kept || h.delete_horizon().is_some() => {
                Kept::Verbatim
            }
            Filtered::Unchanged => {
                // Kept whole, with a tombstone seen for the first time: set the horizon.
                match filter_batch(bytes, h, MAX_INFLATED, |_| true, Some(self.delete_horizon))? {
                    Filtered::Rewritten(b) => Kept::New(b),
                    _ => Kept::Verbatim,
                }
            }
            Filtered::Rewritten(b) if tombstone_kept && h.delete_horizon().is_none() => {
                let nh = BatchHeader::parse(&b)?;
                match filter_batch(&b, &nh, MAX_INFLATED, |_| true, Some(self.delete_horizon))? {
                    Filtered::Rewritten(b2) => Kept::New(b2),
                    _ => Kept::New(b),
                }
            }
            Filtered::Rewritten(b) => Kept::New(b),
        };
        Ok((kept, horizon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_keeps_each_keys_latest_offset_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::new(MAP_ENTRY_BYTES * 20, 1_000);
        assert_eq!(m.size_bytes(), MAP_ENTRY_BYTES * 20);
        for i in 0..18 {
            assert!(m.put(format!("k{i}").as_bytes(), i));
        }
        assert!(m.is_full());
        assert!(!m.put(b"new", 99));
        assert!(m.put(b"k3", 50), "a known key still updates");
        assert_eq!(m.get(b"k3"), Some(50));
        assert_eq!(m.get(b"k4"), Some(4));
        assert_eq!(m.get(b"absent"), None);
        assert_eq!(m.len(), 18);
    }

    #[test]
    fn the_map_is_sized_down_to_the_records_it_can_see() {
        let m = OffsetMap::new(128 << 20, 90);
        assert!(m.size_bytes() < 200 * MAP_ENTRY_BYTES);
    }
}
