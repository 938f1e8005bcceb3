//! Opening a log: loading segments and indexes, and recovering after an unclean shutdown.
//!
//! After a clean shutdown the indexes are trusted and only each segment's tail (past its last
//! index entry) is read to find the log end offset. Otherwise every segment from the one
//! holding the recovery point on is re-read: each batch's CRC and offsets are checked, the
//! indexes rebuilt, and the file truncated at the first invalid byte; later segments go. A
//! segment that starts past the end of the one before it ends the log the same way: the older
//! segment lost a tail (a power loss before its data reached the disk) that the newer one was
//! rolled after.
//! Damage below the recovery point (data that was flushed) is never truncated away silently:
//! the log refuses to open.

use crate::checkpoint::{parent_dir, sync_dir};
use crate::config::LogConfig;
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::{create_segment, flush_now, Log, OpenOptions};
use crate::segment::{
    decode_txn_index, parse_file_name, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
};
use crate::{now_ms, LogError};
use runnel_record::{verify_stored, BatchError, BatchHeader};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// Recovery reads segments in chunks of this size (or one whole batch, if larger).
const SCAN_CHUNK: u64 = 4 << 20;

impl Log {
    /// Opens (creating if needed) the log in `dir` for `topic`-`partition`.
    pub async fn open(
        dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        opts: OpenOptions,
    ) -> Result<Log, LogError> {
        config.validate().map_err(LogError::Config)?;
        let created = std::fs::symlink_metadata(dir).is_err();
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create log dir", dir, e))?;
        if created {
            // A new partition directory must survive a crash as much as its first flushed
            // batch does.
            let parent = parent_dir(dir);
            sync_dir(parent)
                .await
                .map_err(|e| LogError::io("fsync directory", parent, e))?;
        }
        let dir_file =
            std::fs::File::open(dir).map_err(|e| LogError::io("open log dir", dir, e))?;
        let dir_meta = dir_file
            .metadata()
            .map_err(|e| LogError::io("stat log dir", dir, e))?;
        let dir_id = {
            use std::os::unix::fs::MetadataExt;
            (dir_meta.dev(), dir_meta.ino())
        };
        // Held only while the log opens (see `Inner::dir_id`).
        let dir_fd: Arc<OwnedFd> = Arc::new(dir_file.into());
        let bases = list_segments(dir)?;
        let interval = config.index_interval_bytes;
        let mut segments: Vec<Rc<Segment>> = Vec::new();
        let mut scanned_any = false;
        // Segment files were created or deleted: the directory needs a sync.
        let mut dir_changed = false;

        // The segment holding the recovery point and all after it are scanned, unless the
        // shutdown was clean. Corruption below this offset refuses the open.
        let (scan_from_base, flushed_up_to) = if opts.clean_shutdown {
            (i64::MAX, i64::MAX)
        } else {
            let rp = opts.recovery_point.unwrap_or(0);
            let from = bases
                .iter()
                .copied()
                .rfind(|&b| b <= rp)
                .unwrap_or(i64::MIN);
            (from, rp)
        };

        let mut truncated = false;
        for &base in &bases {
            let seg = open_segment(dir, base)?;
            if truncated {
                // Everything after a truncation point is unreachable: the log is contiguous.
                delete_segment_files(&dir_fd, &seg).await?;
                dir_changed = true;
                continue;
            }
            if let Some(prev) = segments.last() {
                if base > prev.next_offset.get() && prev.next_offset.get() < flushed_up_to {
                    // Flushed data is missing: as with damage below the recovery point, the
                    // log does not open rather than silently dropping what follows.
                    return Err(LogError::CorruptBelowRecoveryPoint {
                        path: seg.log_path.clone(),
                        position: 0,
                        offset: prev.next_offset.get(),
                        recovery_point: flushed_up_to,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            prev.next_offset.get()
                        ),
                    });
                }
                if base > prev.next_offset.get() {
                    // A gap: the previous segment lost a tail it had when this one was rolled
                    // (a power loss before its data reached the disk). The log ends where the
                    // surviving data ends; this segment and all after it go, and so do
                    // producer snapshots above the new end (restore_producers).
                    tracing::warn!(
                        path = %seg.log_path.display(),
                        "segment starts at offset {base} but the previous one ends at {}: \
                         the log ends there",
                        prev.next_offset.get()
                    );
                    truncated = true;
                    delete_segment_files(&dir_fd, &seg).await?;
                    dir_changed = true;
                    continue;
                }
                if base < prev.next_offset.get() {
                    return Err(LogError::Corrupt {
                        path: seg.log_path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base}, inside the previous segment (ends at {})",
                            prev.next_offset.get()
                        ),
                    });
                }
            }
            // Aborted transactions as of the segment's roll; restore_producers replaces the
            // entries of markers it replays.
            if let Some(bytes) = read_whole(&seg.txn_index_path()).await? {
                *seg.aborted.borrow_mut() = decode_txn_index(&bytes);
            }
            let size = seg.size.get();
            let needs_scan = base >= scan_from_base || !load_indexes(&seg).await?;
            let needs_scan = needs_scan || !tail_scan(&seg, interval).await?;
            if needs_scan {
                scanned_any = true;
                // Whatever survives the scan is synced before the recovery point moves past it.
                seg.synced_size.set(0);
                let valid = full_scan(&seg, interval, flushed_up_to).await?;
                if valid < size {
                    tracing::warn!(
                        path = %seg.log_path.display(),
                        "truncating {} invalid bytes at position {valid} (log end offset {})",
                        size - valid,
                        seg.next_offset.get()
                    );
                    runnel_runtime::ring()
                        .ftruncate(&seg.file, valid)
                        .await
                        .map_err(|e| LogError::io("truncate segment", &seg.log_path, e))?;
                    seg.size.set(valid);
                    seg.synced_size.set(0);
                    truncated = true;
                }
                let is_last = Some(&base) == bases.last();
                if !is_last && !truncated {
                    // As a roll leaves it (and as Kafka's recovery does): the time index ends
                    // with the segment's largest timestamp.
                    seg.seal_time_index();
                    seg.write_indexes(&dir_fd).await?;
                }
            }
            segments.push(Rc::new(seg));
        }

        let next_offset = segments.last().map(|s| s.next_offset.get());
        let requested_start = opts.log_start_offset.unwrap_or(0);
        let log_start_offset = match (segments.first(), next_offset) {
            (Some(first), Some(leo)) if requested_start <= leo => {
                requested_start.max(first.base_offset)
            }
            _ => {
                // No data, or the checkpointed start lies past what survived: start empty there.
                for seg in segments.drain(..) {
                    delete_segment_files(&dir_fd, &seg).await?;
                }
                dir_changed = true;
                let base = requested_start.max(next_offset.unwrap_or(0));
                segments.push(Rc::new(
                    create_segment(dir, &dir_fd, base, config.preallocate, config.segment_bytes)
                        .await?,
                ));
                base
            }
        };
        let active = segments.last().expect("a log has a segment");
        if !active.is_empty() {
            active.rolling_base_ms.set(Some(now_ms()));
        }
        let log_end_offset = active.next_offset.get();
        let log = Log::from_parts(
            dir.to_path_buf(),
            dir_id,
            topic.to_string(),
            partition,
            config,
            segments,
            log_start_offset,
            log_end_offset,
        );
        if scanned_any || truncated {
            let checkpointed = opts.recovery_point.unwrap_or(0);
            if checkpointed > log_end_offset {
                // The files end before data that was flushed: it is gone, whatever happened to
                // it (nothing here truncated it). The recovery point must not stay past the
                // log end, or the offsets appended next would count as flushed before they
                // are, and a torn write of them would later refuse the open.
                tracing::error!(
                    dir = %dir.display(),
                    "the recovery point checkpoint {checkpointed} is past the recovered log end \
                     offset {log_end_offset}: flushed records are missing from the segment files"
                );
            }
            // What recovery kept is now known good; sync it so the recovery point can move.
            log.inner
                .recovery_point
                .set(checkpointed.min(log_end_offset));
        }
        if scanned_any || truncated || dir_changed {
            log.inner.dir_dirty.set(true);
            flush_now(&log).await?;
        }
        crate::log::restore_producers(&log).await?;
        if let Some(hw) = opts.high_watermark {
            crate::log::restore_high_watermark(&log, hw).await?;
        }
        Ok(log)
    }
}

/// Finishes what a crash interrupted in the cleaner's swap (see [`crate::clean`]): a
/// `.cleaned` segment was never committed and goes; a `<base>.log.swap` was, so the
/// segments it replaces (every file of a base offset in `[base, its next offset)`) go and
/// it becomes `<base>.log`, its `.swap` indexes their files. Index `.swap` files of a
/// segment whose log was not committed are left for `list_segments` to remove.
fn complete_swaps(dir: &Path) -> Result<(), LogError> {
    use crate::clean::{CLEANED_SUFFIX, SWAP_SUFFIX};
    let io = |op, path: &Path, e| LogError::io(op, path, e);
    let mut swaps = Vec::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("list log dir", dir, e))? {
        let name = entry
            .map_err(|e| io("list log dir", dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            let path = dir.join(&name);
            tracing::info!(path = %path.display(), "removing an uncommitted cleaned segment");
            std::fs::remove_file(&path).map_err(|e| io("remove cleaned segment", &path, e))?;
        } else if let Some(base) = name
            .strip_suffix(&format!(".{SWAP_SUFFIX}"))
            .and_then(|n| parse_file_name(n, LOG_SUFFIX))
        {
            swaps.push(base);
        } else {
            names.push(name);
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        let swap = dir.join(format!(
            "{}.{SWAP_SUFFIX}",
            crate::file_name(base, LOG_SUFFIX)
        ));
        let end = next_offset_of(&swap)?.unwrap_or(base).max(base + 1);
        for name in &names {
            let replaced = [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ]
            .iter()
            .filter_map(|sfx| parse_file_name(name, sfx))
            .any(|b| (base..end).contains(&b));
            if replaced {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove replaced segment", &path, e)),
                }
            }
        }
        // Its indexes, written with it; the scan rebuilds any that are missing.
        for sfx in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
            let to = dir.join(crate::file_name(base, sfx));
            let from = dir.join(format!("{}.{SWAP_SUFFIX}", crate::file_name(base, sfx)));
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("rename swap index", &from, e)),
            }
        }
        let to = dir.join(crate::file_name(base, LOG_SUFFIX));
        std::fs::rename(&swap, &to).map_err(|e| io("rename swap segment", &swap, e))?;
        tracing::info!(path = %to.display(), "completed an interrupted cleaner swap (offsets {base}..{end})");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// The offset after the last whole batch of a segment file (None: no batch).
fn next_offset_of(path: &Path) -> Result<Option<i64>, LogError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| LogError::io("open swap segment", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io("stat swap segment", path, e))?
        .len();
    let (mut pos, mut next) = (0u64, None);
    let mut header = [0u8; runnel_record::HEADER_LEN];
    while pos + header.len() as u64 <= len {
        file.read_exact_at(&mut header, pos)
            .map_err(|e| LogError::io("read swap segment", path, e))?;
        let Ok(h) = BatchHeader::parse(&header) else {
            break;
        };
        if pos + h.total_len() as u64 > len {
            break;
        }
        next = Some(h.next_offset());
        pos += h.total_len() as u64;
    }
    Ok(next)
}

fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    complete_swaps(dir)?;
    let io = |e| LogError::io("list log dir", dir, e);
    let mut logs = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = parse_file_name(&name, LOG_SUFFIX) {
            logs.push(base);
        } else {
            others.push(name);
        }
    }
    logs.sort_unstable();
    for name in others {
        let orphan_index = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX]
            .iter()
            .any(|sfx| {
                parse_file_name(&name, sfx).is_some_and(|b| logs.binary_search(&b).is_err())
            });
        let leftover = [".tmp", ".deleted", ".cleaned", ".swap"]
            .iter()
            .any(|sfx| name.ends_with(sfx));
        if orphan_index || leftover {
            let path = dir.join(&name);
            tracing::info!(path = %path.display(), "removing leftover file");
            std::fs::remove_file(&path).map_err(|e| LogError::io("remove leftover", &path, e))?;
        }
    }
    Ok(logs)
}

fn open_segment(dir: &Path, base: i64) -> Result<Segment, LogError> {
    let path = dir.join(crate::file_name(base, LOG_SUFFIX));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io("open segment", &path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| LogError::io("stat segment", &path, e))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_ms, |d| d.as_millis() as i64);
    Ok(Segment::new(dir, base, file.into(), meta.len(), mtime_ms))
}

async fn delete_segment_files(dir: &Arc<OwnedFd>, seg: &Segment) -> Result<(), LogError> {
    crate::log::delete_segment_files(dir, seg).await?;
    tracing::warn!(path = %seg.log_path.display(), "deleted segment past the recovered log end");
    Ok(())
}

async fn read_whole(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open index", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| LogError::io("stat index", path, e))?
        .len();
    let fd: Arc<OwnedFd> = Arc::new(file.into());
    runnel_runtime::ring()
        .read_at(&fd, 0, len as usize)
        .await
        .map(Some)
        .map_err(|e| LogError::io("read index", path, e))
}

/// Loads both index files; false if either is missing or fails its sanity check.
async fn load_indexes(seg: &Segment) -> Result<bool, LogError> {
    let (Some(index), Some(time_index)) = (
        read_whole(&seg.index_path()).await?,
        read_whole(&seg.time_index_path()).await?,
    ) else {
        return Ok(seg.is_empty());
    };
    let index = match OffsetIndex::from_bytes(&index, seg.size.get()) {
        Ok(i) => i,
        Err(reason) => {
            tracing::warn!(path = %seg.index_path().display(), "rebuilding offset index: {reason}");
            return Ok(false);
        }
    };
    let time_index = match TimeIndex::from_bytes(&time_index, u32::MAX) {
        Ok(i) => i,
        Err(reason) => {
            tracing::warn!(path = %seg.time_index_path().display(), "rebuilding time index: {reason}");
            return Ok(false);
        }
    };
    if let Some(last) = time_index.last() {
        seg.max_timestamp.set(last.timestamp);
        seg.offset_of_max_timestamp
            .set(seg.base_offset + i64::from(last.relative_offset));
    }
    *seg.index.borrow_mut() = index;
    *seg.time_index.borrow_mut() = time_index;
    Ok(true)
}

/// Reads the batch headers past the last index entry to learn the segment's log end offset,
/// largest timestamp and rolling time. False if the tail is not a clean run of whole batches
/// or disagrees with the indexes (then the segment is scanned in full).
async fn tail_scan(seg: &Segment, interval: u32) -> Result<bool, LogError> {
    let size = seg.size.get();
    if size == 0 {
        return Ok(true);
    }
    let last_entry = seg.index.borrow().last();
    let from = last_entry.map_or(0, |e| u64::from(e.position));
    let mut ok = true;
    let mut first = true;
    let result = seg
        .for_each_header(from, size, |pos, h| {
            let end = pos + h.total_len() as u64;
            let offsets_ok = h.base_offset >= seg.base_offset
                && h.last_offset_delta >= 0
                && (first || h.base_offset >= seg.next_offset.get());
            let indexed_ok = !first
                || last_entry.is_none_or(|e| {
                    seg.base_offset + i64::from(e.relative_offset) == h.last_offset()
                });
            if end > size || !offsets_ok || !indexed_ok {
                ok = false;
                return false;
            }
            if first && last_entry.is_some() {
                // This batch is the one the last index entry points at: already indexed.
                if h.max_timestamp > seg.max_timestamp.get() {
                    seg.max_timestamp.set(h.max_timestamp);
                    seg.offset_of_max_timestamp.set(h.last_offset());
                }
                seg.bytes_since_index.set(h.total_len() as u64);
                seg.next_offset.set(h.next_offset());
            } else {
                seg.on_batch(h, pos, interval);
            }
            first = false;
            true
        })
        .await;
    if let Err(LogError::Corrupt { reason, .. }) = &result {
        tracing::warn!(path = %seg.log_path.display(), "segment tail is damaged, scanning it: {reason}");
        return Ok(false);
    }
    result?;
    let max_rel = seg.next_offset.get() - 1 - seg.base_offset;
    if !ok
        || seg
            .time_index
            .borrow()
            .last()
            .is_some_and(|e| i64::from(e.relative_offset) > max_rel)
    {
        return Ok(false);
    }
    Ok(true)
}

/// Reads the whole segment, checking every batch (CRC, offsets) and rebuilding the indexes.
/// Returns the length of the valid prefix. Corruption that would cut off offsets below
/// `flushed_up_to` is an error instead.
async fn full_scan(seg: &Segment, interval: u32, flushed_up_to: i64) -> Result<u64, LogError> {
    seg.reset_indexes();
    let size = seg.size.get();
    let ring = runnel_runtime::ring();
    let mut pos = 0u64;
    let mut want = SCAN_CHUNK;
    let invalid: Option<(u64, String)> = 'scan: loop {
        if pos == size {
            break None;
        }
        let buf = ring
            .read_at(&seg.file, pos, want.min(size - pos) as usize)
            .await
            .map_err(|e| LogError::io("read segment", &seg.log_path, e))?;
        if buf.is_empty() {
            break Some((pos, "file ended early".to_string()));
        }
        want = SCAN_CHUNK;
        let mut at = 0usize;
        while at < buf.len() {
            let rest = &buf[at..];
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                Err(BatchError::ShortHeader { .. }) if pos + (at + rest.len()) as u64 != size => {
                    break; // header straddles the chunk: read on from here
                }
                Err(e) => break 'scan Some((pos + at as u64, e.to_string())),
            };
            let len = header.total_len();
            if len > rest.len() {
                if pos + (at + len) as u64 <= size {
                    want = want.max(len as u64);
                    break; // batch straddles the chunk: re-read it whole
                }
                break 'scan Some((
                    pos + at as u64,
                    format!("torn batch: {len} bytes needed, {} on disk", rest.len()),
                ));
            }
            if let Err(e) = verify_stored(&rest[..len]) {
                break 'scan Some((pos + at as u64, e.to_string()));
            }
            let expected = seg.next_offset.get();
            if header.base_offset < expected
                || header.last_offset_delta < 0
                || header.last_offset() - seg.base_offset > i64::from(u32::MAX)
            {
                break 'scan Some((
                    pos + at as u64,
                    format!(
                        "batch offsets {}..={} do not follow {expected}",
                        header.base_offset,
                        header.last_offset()
                    ),
                ));
            }
            seg.on_batch(&header, pos + at as u64, interval);
            at += len;
        }
        pos += at as u64;
    };
    let Some((position, reason)) = invalid else {
        return Ok(size);
    };
    let offset = seg.next_offset.get();
    if offset < flushed_up_to {
        return Err(LogError::CorruptBelowRecoveryPoint {
            path: seg.log_path.clone(),
            position,
            offset,
            recovery_point: flushed_up_to,
            reason,
        });
    }
    Ok(position)
}
