//! One segment: a `.log` file of batches exactly as served, plus its offset and time indexes.

use crate::index::{OffsetIndex, TimeIndex};
use crate::LogError;
use runnel_record::{BatchHeader, HEADER_LEN, NO_TIMESTAMP};
use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Kafka's aborted-transaction index: the transactions aborted by a marker in the segment.
pub const TXN_INDEX_SUFFIX: &str = "txnindex";
/// Bytes of one `.txnindex` entry: version i16 (0) | producer id i64 | first offset i64 |
/// last offset i64 | last stable offset i64.
const TXN_ENTRY_LEN: usize = 34;

/// One aborted transaction (Kafka's AbortedTxn): its producer, its first offset, its abort
/// marker's offset and the partition's last stable offset once the marker was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// A `.txnindex` file's entries (a torn last entry is dropped).
pub(crate) fn decode_txn_index(bytes: &[u8]) -> Vec<AbortedTxn> {
    bytes
        .chunks_exact(TXN_ENTRY_LEN)
        .map(|e| {
            let i = |at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
            AbortedTxn {
                producer_id: i(2),
                first_offset: i(10),
                last_offset: i(18),
                last_stable_offset: i(26),
            }
        })
        .collect()
}

fn encode_txn_index(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TXN_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&0i16.to_be_bytes());
        for v in [
            e.producer_id,
            e.first_offset,
            e.last_offset,
            e.last_stable_offset,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out
}

/// Kafka's file name: the base offset in 20 digits.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Creates (or truncates) the file `name` in the directory `dir`, opened read-write.
pub(crate) fn create_at(
    dir: &OwnedFd,
    name: impl AsRef<std::ffi::OsStr>,
) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        dir,
        name.as_ref(),
        OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(Into::into)
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<OwnedFd>,
    pub log_path: PathBuf,
    /// Bytes of whole, written batches: where the writer appends next.
    pub size: Cell<u64>,
    /// Bytes readers may see: batches below the high watermark. Lags `size` while an
    /// acks=all write waits for its fdatasync.
    pub visible_size: Cell<u64>,
    /// Bytes written and published (a write group done, synced if it had to be): what a
    /// follower replica may fetch. `visible_size` (below the high watermark) trails it
    /// while followers have not caught up.
    pub published_size: Cell<u64>,
    /// (max_timestamp, offset_of_max_timestamp) as of `visible_size`: what ListOffsets -3
    /// may answer.
    pub visible_max_timestamp: Cell<(i64, i64)>,
    /// Offset after the last batch (== base_offset while empty).
    pub next_offset: Cell<i64>,
    pub index: RefCell<OffsetIndex>,
    pub time_index: RefCell<TimeIndex>,
    pub max_timestamp: Cell<i64>,
    pub offset_of_max_timestamp: Cell<i64>,
    pub bytes_since_index: Cell<u64>,
    /// Reference time for segment.ms: when the first batch was appended (or, for a segment
    /// reopened at startup, the open time). Kafka uses the first batch's timestamp instead,
    /// which rolls a segment per append when producers send old timestamps; wall-clock time
    /// keeps segment.ms about segment age.
    pub rolling_base_ms: Cell<Option<i64>>,
    /// Wall-clock time of the last append; the retention time of a segment without timestamps.
    pub last_modified_ms: Cell<i64>,
    /// Bytes known to be on stable storage (fdatasync'ed).
    pub synced_size: Cell<u64>,
    /// Transactions aborted by a marker in this segment, in marker order (written to the
    /// `.txnindex` file with the other indexes).
    pub aborted: RefCell<Vec<AbortedTxn>>,
    /// Bytes of the file known to have disk blocks reserved (fallocate, past the size);
    /// u64::MAX once reserving failed ([`crate::reserve`]).
    pub reserved: Cell<u64>,
    /// A reservation is being made.
    pub reserving: Cell<bool>,
    /// No longer the active segment: what a reservation finishing now reserved past the
    /// end is given back.
    pub retired: Cell<bool>,
}

impl Segment {
    pub fn new(dir: &Path, base_offset: i64, file: OwnedFd, size: u64, mtime_ms: i64) -> Segment {
        Segment {
            base_offset,
            file: Arc::new(file),
            log_path: dir.join(file_name(base_offset, LOG_SUFFIX)),
            size: Cell::new(size),
            visible_size: Cell::new(size),
            published_size: Cell::new(size),
            visible_max_timestamp: Cell::new((NO_TIMESTAMP, base_offset)),
            next_offset: Cell::new(base_offset),
            index: RefCell::new(OffsetIndex::default()),
            time_index: RefCell::new(TimeIndex::default()),
            max_timestamp: Cell::new(NO_TIMESTAMP),
            offset_of_max_timestamp: Cell::new(base_offset),
            bytes_since_index: Cell::new(0),
            rolling_base_ms: Cell::new(None),
            last_modified_ms: Cell::new(mtime_ms),
            synced_size: Cell::new(size),
            aborted: RefCell::new(Vec::new()),
            reserved: Cell::new(0),
            reserving: Cell::new(false),
            retired: Cell::new(false),
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.log_path.with_extension(INDEX_SUFFIX)
    }

    pub fn time_index_path(&self) -> PathBuf {
        self.log_path.with_extension(TIME_INDEX_SUFFIX)
    }

    pub fn is_empty(&self) -> bool {
        self.size.get() == 0
    }

    /// The time retention.ms is measured from: the newest record's timestamp, else the last
    /// append (Kafka's largestTimestamp).
    pub fn largest_timestamp(&self) -> i64 {
        match self.max_timestamp.get() {
            t if t >= 0 => t,
            _ => self.last_modified_ms.get(),
        }
    }

    /// `offset` relative to the segment's base, as the indexes store it. The writer rolls
    /// before an append would pass [`crate::MAX_RELATIVE_OFFSET`], so this fits; it clamps
    /// rather than wraps should that ever not hold (a wrapped value would corrupt the index).
    pub fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset).max(0)).unwrap_or(u32::MAX)
    }

    pub fn txn_index_path(&self) -> PathBuf {
        self.log_path.with_extension(TXN_INDEX_SUFFIX)
    }

    /// The names of this segment's files in its directory (the `.txnindex` may not exist).
    pub fn file_names(&self) -> [String; 4] {
        [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ]
        .map(|sfx| file_name(self.base_offset, sfx))
    }

    /// Index bookkeeping for a batch that now lies whole in the file at `position`, as Kafka's
    /// LogSegment.append does it: track the largest timestamp, and every `interval` bytes add
    /// an offset index entry (batch last offset -> batch position) and a time index entry.
    pub fn on_batch(&self, header: &BatchHeader, position: u64, interval: u32) {
        let last = header.last_offset();
        if header.max_timestamp > self.max_timestamp.get() {
            self.max_timestamp.set(header.max_timestamp);
            self.offset_of_max_timestamp.set(last);
        }
        if self.bytes_since_index.get() > u64::from(interval) {
            self.index
                .borrow_mut()
                .append(self.relative(last), position as u32);
            self.time_index.borrow_mut().maybe_append(
                self.max_timestamp.get(),
                self.relative(self.offset_of_max_timestamp.get()),
            );
            self.bytes_since_index.set(0);
        }
        self.bytes_since_index
            .set(self.bytes_since_index.get() + header.total_len() as u64);
        self.next_offset.set(header.next_offset());
    }

    /// Forgets everything learnt about the content (before a rebuild scan).
    pub fn reset_indexes(&self) {
        *self.index.borrow_mut() = OffsetIndex::default();
        *self.time_index.borrow_mut() = TimeIndex::default();
        self.max_timestamp.set(NO_TIMESTAMP);
        self.offset_of_max_timestamp.set(self.base_offset);
        self.bytes_since_index.set(0);
        self.next_offset.set(self.base_offset);
    }

    /// Final time index entry at roll, so the index knows the segment's largest timestamp.
    pub fn seal_time_index(&self) {
        if self.max_timestamp.get() >= 0 {
            self.time_index.borrow_mut().maybe_append(
                self.max_timestamp.get(),
                self.relative(self.offset_of_max_timestamp.get()),
            );
        }
    }

    /// Writes both index files (create, write, fdatasync) from the in-memory indexes, in the
    /// partition directory `dir` (see `Inner::open_dir`).
    pub async fn write_indexes(&self, dir: &OwnedFd) -> Result<(), LogError> {
        self.write_index_files(dir, None).await
    }

    /// The index files' names with `.<suffix>` appended (the cleaner's `.cleaned`), or the
    /// files themselves (None), written and synced. With a suffix, an empty aborted list
    /// writes no `.txnindex` and removes none.
    pub async fn write_index_files(
        &self,
        dir: &OwnedFd,
        suffix: Option<&str>,
    ) -> Result<(), LogError> {
        let ring = runnel_runtime::ring();
        // Serialise before any await: a borrow held across it would collide with an append.
        let index = self.index.borrow().to_bytes();
        let time_index = self.time_index.borrow().to_bytes();
        let named = |p: PathBuf| match suffix {
            Some(sfx) => {
                let mut s = p.into_os_string();
                s.push(format!(".{sfx}"));
                PathBuf::from(s)
            }
            None => p,
        };
        let mut files = vec![
            (named(self.index_path()), index),
            (named(self.time_index_path()), time_index),
        ];
        if self.aborted.borrow().is_empty() && suffix.is_some() {
            // Nothing to write.
        } else if self.aborted.borrow().is_empty() {
            // None (any more: a truncation may have cut the markers an older file lists).
            let path = self.txn_index_path();
            let name = path.file_name().unwrap_or_default();
            match rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(LogError::io("remove txn index", &path, e.into())),
            }
        } else {
            files.push((
                named(self.txn_index_path()),
                encode_txn_index(&self.aborted.borrow()),
            ));
        }
        for (path, bytes) in files {
            let io = |e| LogError::io("write index", &path, e);
            let name = path.file_name().unwrap_or_default();
            let file: Arc<OwnedFd> = Arc::new(create_at(dir, name).map_err(io)?);
            ring.write_all_at(&file, 0, vec![bytes.into()])
                .await
                .map_err(|(e, _)| io(e))?;
            ring.fdatasync(&file).await.map_err(io)?;
        }
        Ok(())
    }

    /// Calls `f(position, header)` for each batch header from `from` up to `end` (exclusive),
    /// reading the file in small chunks; stops when `f` returns false. The range must hold
    /// whole batches (it is below the segment's committed size), so a header that does not
    /// parse is corruption and reported as such.
    pub async fn for_each_header(
        &self,
        pos: u64,
        end: u64,
        mut f: impl FnMut(u64, &BatchHeader) -> bool,
    ) -> Result<(), LogError> {
        self.for_each_batch(pos, end, |p, h, _| f(p, h)).await
    }

    /// [`Segment::for_each_header`] that also hands over the whole bytes of each control
    /// batch (a transaction marker: small), None for other batches.
    pub async fn for_each_batch(
        &self,
        mut pos: u64,
        end: u64,
        mut f: impl FnMut(u64, &BatchHeader, Option<&[u8]>) -> bool,
    ) -> Result<(), LogError> {
        // One chunk covers an index interval (4 KiB) plus a batch header in the usual case;
        // with larger batches each hop to the next header is one more small read.
        const CHUNK: u64 = (4 << 10) + 64;
        let ring = runnel_runtime::ring();
        while pos < end {
            let want = CHUNK.min(end - pos) as usize;
            let buf = ring
                .read_at(&self.file, pos, want)
                .await
                .map_err(|e| LogError::io("read segment", &self.log_path, e))?;
            let mut at = 0usize;
            while at + HEADER_LEN <= buf.len() && pos + (at as u64) < end {
                let header = BatchHeader::parse(&buf[at..]).map_err(|e| LogError::Corrupt {
                    path: self.log_path.clone(),
                    position: pos + at as u64,
                    reason: e.to_string(),
                })?;
                let control = if header.is_control() {
                    match buf.get(at..at + header.total_len()) {
                        Some(b) => Some(b),
                        // Cut by the chunk: read again from this batch on (a marker is far
                        // smaller than a chunk, so it is whole at the start of one).
                        None if at > 0 => break,
                        None => None,
                    }
                } else {
                    None
                };
                if !f(pos + at as u64, &header, control) {
                    return Ok(());
                }
                at += header.total_len();
            }
            if at == 0 {
                return Err(LogError::Corrupt {
                    path: self.log_path.clone(),
                    position: pos,
                    reason: format!(
                        "{} bytes left before the end, less than a header",
                        end - pos
                    ),
                });
            }
            pos += at as u64;
        }
        Ok(())
    }
}
