//! Reserving a busy partition's next disk blocks a little ahead of its writes.
//!
//! On ext4 (delayed allocation) a write into blocks the file does not have yet takes the
//! inode's block-map lock (i_data_sem) to note the delayed extent, and writeback holds that
//! lock while it allocates the blocks, reading allocation bitmaps from the disk if it must.
//! So the writer of a busy partition waits, milliseconds at a time, behind its own file's
//! writeback: measured here as the top of the produce-to-consume latency (p99 6-15 ms at
//! 390k records/s against 1.5-2.8 with the segment preallocated) and as the stalls that send
//! an inline write back to the ring (`runnel_runtime::pagewrite`). Writes into blocks already
//! reserved (fallocate, unwritten extents) find them in the extent cache and take no lock.
//!
//! `--preallocate` (Kafka's log.preallocate) reserves the whole segment, segment.bytes per
//! partition at once, which with many partitions is too much disk. This reserves only what a
//! partition will write in about half a second at its recent rate (at most [`MAX_AHEAD`]),
//! and nothing for a partition writing under [`MIN_RATE`], whose writeback is short anyway.
//! What is reserved past a segment's end when it rolls is given back (ftruncate to its
//! size). A crash or a restart can leave up to [`MAX_AHEAD`] reserved past the end of a
//! partition's last segment, given back when that segment rolls or is deleted; the file
//! size, which is all recovery looks at, never includes it (FALLOC_FL_KEEP_SIZE).
//!
//! Nothing is reserved where it cannot pay ([`room`]): on tmpfs (no block allocation to get
//! ahead of; a reservation there would only take memory early), nor on a file system with
//! less than [`LOW_SPACE`] (or a twentieth of its size) free, where the last blocks should go
//! to the writes themselves rather than sit reserved behind every hot partition.

use crate::segment::Segment;
use runnel_runtime::fsinfo::{self, FsInfo};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// A partition writing less than this per second reserves nothing ahead.
pub const MIN_RATE: u64 = 1 << 20;
/// The most reserved ahead of a partition's writes.
pub const MAX_AHEAD: u64 = 32 << 20;
/// A file system with less free than this, or than a twentieth of its size, gets no more
/// reservations (each hot partition could otherwise hold [`MAX_AHEAD`] of the last space).
pub const LOW_SPACE: u64 = 1 << 30;
/// Reservations are made in whole units of this.
const UNIT: u64 = 1 << 20;
/// The rate is measured over windows of this length.
const WINDOW_MS: i64 = 1000;

/// One log's recent append rate, and so how far ahead of its writes it reserves.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    window_start_ms: Cell<i64>,
    window_bytes: Cell<u64>,
    /// Bytes per second over the last full window.
    rate: Cell<u64>,
}

impl Ahead {
    /// Counts `bytes` appended at `now_ms` and returns how many bytes past the write
    /// position should be reserved (0: none).
    pub(crate) fn on_append(&self, now_ms: i64, bytes: u64) -> u64 {
        let start = self.window_start_ms.get();
        let elapsed = now_ms.saturating_sub(start);
        if start == 0 || elapsed < 0 {
            self.window_start_ms.set(now_ms);
            self.window_bytes.set(0);
        } else if elapsed >= WINDOW_MS {
            let total = self.window_bytes.get();
            self.rate.set(total.saturating_mul(1000) / elapsed as u64);
            self.window_start_ms.set(now_ms);
            self.window_bytes.set(0);
        }
        self.window_bytes.set(self.window_bytes.get() + bytes);
        let rate = self.rate.get();
        if rate < MIN_RATE {
            return 0;
        }
        (rate / 2)
            .div_ceil(UNIT)
            .saturating_mul(UNIT)
            .min(MAX_AHEAD)
    }
}

/// The range to reserve next, if any: when less than half of `ahead` remains reserved past
/// `size`, from what is reserved (or the write position) to `ahead` past it, not beyond
/// `segment_bytes` (the segment rolls there).
pub(crate) fn next_range(
    size: u64,
    reserved: u64,
    ahead: u64,
    segment_bytes: u64,
) -> Option<(u64, u64)> {
    if ahead == 0 || reserved >= size + ahead / 2 {
        return None;
    }
    let from = reserved.max(size);
    let end = (size + ahead).min(segment_bytes);
    (end > from).then_some((from, end - from))
}

/// Whether a reservation of `len` bytes pays on the file system `fs`: `None` never on this
/// file system, `Some(false)` not now (too little free), `Some(true)` yes.
pub(crate) fn room(fs: FsInfo, len: u64) -> Option<bool> {
    if fs.magic == fsinfo::TMPFS_MAGIC {
        return None;
    }
    Some(fs.free.saturating_sub(len) >= LOW_SPACE.max(fs.total / 20))
}

/// Reserves the next range of `seg` if it needs one and none is being reserved: in a task of
/// its own (fallocate waits on the file system), so the caller's write goes on.
pub(crate) fn reserve_ahead(seg: &Rc<Segment>, ahead: u64, segment_bytes: u64) {
    if seg.reserving.get() {
        return;
    }
    let Some((from, len)) = next_range(seg.size.get(), seg.reserved.get(), ahead, segment_bytes)
    else {
        return;
    };
    // (An error from fstatfs: no reservation.)
    let fs = fsinfo::of_fd(seg.file.as_raw_fd()).ok();
    match fs.and_then(|fs| room(fs, len)) {
        Some(true) => {}
        // Low on space: not for this segment (the next one asks again).
        Some(false) | None => {
            seg.reserved.set(u64::MAX);
            return;
        }
    }
    seg.reserving.set(true);
    let seg = seg.clone();
    glommio::spawn_local(async move {
        let ring = runnel_runtime::ring();
        let res = ring
            .fallocate(&seg.file, libc::FALLOC_FL_KEEP_SIZE, from, len)
            .await;
        seg.reserving.set(false);
        match res {
            Ok(()) => seg.reserved.set(from + len),
            // Out of space, or a file system without fallocate: stop trying for this
            // segment (a write past the reservation allocates as it always did).
            Err(e) => {
                tracing::debug!(path = %seg.log_path.display(), "cannot reserve blocks ahead: {e}");
                seg.reserved.set(u64::MAX);
            }
        }
        if seg.retired.get() {
            // The segment rolled while this ran: give back what lies past its end.
            let _ = ring.ftruncate(&seg.file, seg.size.get()).await;
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_slow_partition_reserves_nothing_and_a_fast_one_half_a_second() {
        let a = Ahead::default();
        assert_eq!(a.on_append(1_000, 512 << 10), 0, "no rate measured yet");
        assert_eq!(a.on_append(2_000, 0), 0, "512 KiB/s is under MIN_RATE");
        for t in 0..10 {
            a.on_append(2_000 + t * 100, 4 * MIB);
        }
        // 40 MiB over the window: half a second is 20 MiB.
        assert_eq!(a.on_append(3_000, 0), 20 * MIB);
        for t in 0..10 {
            a.on_append(3_000 + t * 100, 100 * MIB);
        }
        assert_eq!(a.on_append(4_000, 0), MAX_AHEAD, "capped");
        // A partition that stops: the next window's rate is 0.
        assert_eq!(a.on_append(5_000, 0), 0);
    }

    #[test]
    fn the_next_range_starts_where_the_reservation_ends_and_stops_at_the_segment_end() {
        // Nothing reserved yet: from the write position.
        assert_eq!(
            next_range(10 * MIB, 0, 8 * MIB, 1 << 30),
            Some((10 * MIB, 8 * MIB))
        );
        // More than half of `ahead` still reserved: nothing.
        assert_eq!(next_range(10 * MIB, 15 * MIB, 8 * MIB, 1 << 30), None);
        // Less than half: from the reservation's end.
        assert_eq!(
            next_range(10 * MIB, 13 * MIB, 8 * MIB, 1 << 30),
            Some((13 * MIB, 5 * MIB))
        );
        // Never past the segment's size limit.
        assert_eq!(
            next_range(60 * MIB, 0, 8 * MIB, 64 * MIB),
            Some((60 * MIB, 4 * MIB))
        );
        assert_eq!(next_range(64 * MIB, 0, 8 * MIB, 64 * MIB), None);
        // A whole preallocated segment, or a failed reservation (u64::MAX): nothing.
        assert_eq!(next_range(10 * MIB, 1 << 30, 8 * MIB, 1 << 30), None);
        assert_eq!(next_range(10 * MIB, u64::MAX, 8 * MIB, 1 << 30), None);
        assert_eq!(next_range(10 * MIB, 0, 0, 1 << 30), None);
    }

    #[test]
    fn nothing_is_reserved_on_tmpfs_or_on_a_nearly_full_file_system() {
        const GIB: u64 = 1 << 30;
        let fs = |magic, free, total| FsInfo { magic, free, total };
        let ext4 = fsinfo::EXT4_SUPER_MAGIC;
        assert_eq!(
            room(fs(fsinfo::TMPFS_MAGIC, 100 * GIB, 200 * GIB), 8 * MIB),
            None
        );
        assert_eq!(room(fs(ext4, 80 * GIB, 250 * GIB), 32 * MIB), Some(true));
        // Under a twentieth of the size free after the reservation.
        assert_eq!(room(fs(ext4, 12 * GIB, 250 * GIB), 32 * MIB), Some(false));
        // A small file system: the 1 GiB floor.
        assert_eq!(room(fs(ext4, GIB + 8 * MIB, 4 * GIB), 8 * MIB), Some(true));
        assert_eq!(room(fs(ext4, GIB + 4 * MIB, 4 * GIB), 8 * MIB), Some(false));
        assert_eq!(room(fs(ext4, 0, 4 * GIB), 8 * MIB), Some(false));
    }
}
