//! Page-cache writes issued inline on the executor thread, where io_uring would only hand them
//! to a worker thread.
//!
//! io_uring writes to the page cache without a worker only on file systems that take
//! non-blocking buffered writes (RWF_NOWAIT: XFS, btrfs). ext4 and tmpfs refuse them
//! (EOPNOTSUPP, still so in Linux 6.18), so io_uring hands every write there to an io-wq
//! worker: a thread wake-up and two context switches per write, and with a shard confined to
//! one CPU the worker runs on that same CPU anyway. On ext4 here, writing inline took 11 %
//! off the broker's CPU per GB produced in an alternated A/B (docs/benchmarks.md).
//!
//! A buffered write copies the bytes into the page cache and returns. It sleeps only when
//! the kernel throttles writers because too much memory is dirty (balance_dirty_pages), or
//! waiting for the journal, for reclaim, or for a network or FUSE server. So a write runs
//! inline, as a plain `pwritev`, only when all of these hold:
//! - the data dir is on a local file system that refuses RWF_NOWAIT (ext4 or tmpfs), decided
//!   once at start ([`enable_for`]); anything else keeps the ring;
//! - dirty plus writeback pages are below 3/4 of the kernel's free-run ceiling (the midpoint
//!   of its background and dirty thresholds, under which balance_dirty_pages never sleeps),
//!   read from /proc/vmstat at most every [`DIRTY_SAMPLE`];
//! - the write is at most [`MAX_INLINE`] bytes, so one write holds the executor for at most
//!   a few hundred microseconds;
//! - no inline write of this thread stalled (slept in the kernel, and took over [`STALL`]
//!   more than its size explains) in the last [`PAUSE`]. Being preempted is not a stall:
//!   the task that took the CPU would have taken it from an io-wq worker as well.
//!
//! The last rule catches what the dirty check cannot see: a memory cgroup's own, tighter
//! dirty limits, a journal commit, direct reclaim. One stalled write does hold the executor,
//! which is the price of the rule; the ring takes over for the next second.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Writes larger than this go through the ring (about 0.4 ms of copying on a 2 GB/s core).
pub const MAX_INLINE: usize = 1 << 20;
/// An inline write that takes this much longer than its size explains has stalled.
pub const STALL: Duration = Duration::from_millis(1);
/// How long the ring takes over after a stall.
pub const PAUSE: Duration = Duration::from_secs(1);
/// How often a thread rereads the dirty-page figures.
pub const DIRTY_SAMPLE: Duration = Duration::from_millis(50);
/// Copying into the page cache at 1 GB/s (well under what a core does) is not a stall.
const NS_PER_BYTE: u64 = 1;

use crate::fsinfo::{EXT4_SUPER_MAGIC, TMPFS_MAGIC};

/// Set once at start: the data dir's file system is one where inline writes pay.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Decides, from the file system `dir` is on, whether page-cache writes may run inline
/// (process-wide, for every executor). Returns that file system's name and the decision.
pub fn enable_for(dir: &Path) -> io::Result<(&'static str, bool)> {
    let (name, inline) = classify(crate::fsinfo::of_path(dir)?.magic);
    ENABLED.store(inline, Ordering::Relaxed);
    Ok((name, inline))
}

/// A file system's name (by its statfs magic) and whether inline writes pay on it.
fn classify(magic: i64) -> (&'static str, bool) {
    match magic {
        EXT4_SUPER_MAGIC => ("ext4", true),
        TMPFS_MAGIC => ("tmpfs", true),
        0x5846_5342 => ("xfs", false),
        0x9123_683E => ("btrfs", false),
        0x6573_5546 => ("fuse", false),
        0x6969 => ("nfs", false),
        _ => ("other", false),
    }
}

/// Turns inline writes off (or back on) for the whole process, whatever the file system.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Page-cache writes of one executor thread, by the path they took (for /metrics).
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Writes done inline on the executor thread.
    pub inline: AtomicU64,
    /// Writes handed to the ring (and so, on ext4, to an io-wq worker).
    pub ring: AtomicU64,
    /// Inline writes that stalled, each followed by [`PAUSE`] of ring writes.
    pub stalls: AtomicU64,
}

impl WriteStats {
    fn bump(c: &AtomicU64) {
        // One writer (the owning thread): a relaxed load and store, no locked instruction.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// One thread's view of whether its next write may run inline.
#[derive(Default)]
pub(crate) struct Gate {
    paused_until: Cell<Option<Instant>>,
    sampled_at: Cell<Option<Instant>>,
    dirty_ok: Cell<bool>,
    vmstat: RefCell<Option<(File, Vec<u8>)>>,
}

impl Gate {
    /// Writes `iov` at `offset` inline if the caller (`allowed`) and the rules allow it:
    /// Some(result of pwritev), or None to use the ring.
    pub(crate) fn try_write(
        &self,
        stats: &WriteStats,
        allowed: bool,
        fd: RawFd,
        iov: &[libc::iovec],
        offset: u64,
        len: usize,
    ) -> Option<io::Result<usize>> {
        if !allowed || !ENABLED.load(Ordering::Relaxed) || len > MAX_INLINE || !self.open() {
            WriteStats::bump(&stats.ring);
            return None;
        }
        WriteStats::bump(&stats.inline);
        let start = Instant::now();
        let slept_before = voluntary_switches();
        let res = loop {
            // SAFETY: every iovec points into a buffer the caller keeps alive for this call;
            // pwritev only reads them.
            let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as i32, offset as i64) };
            if n >= 0 {
                break Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                break Err(e);
            }
        };
        let took = start.elapsed();
        // Slow, and the thread slept in the kernel (not merely preempted: another task taking
        // the CPU would have taken it from an io-wq worker just the same).
        if stalled(took, len) && voluntary_switches() != slept_before {
            WriteStats::bump(&stats.stalls);
            self.paused_until.set(Some(Instant::now() + PAUSE));
            tracing::debug!(
                "an inline page-cache write of {len} bytes took {took:?}: writes go through \
                 the ring for {PAUSE:?}"
            );
        }
        Some(res)
    }

    /// For tests: the dirty check passes until the next sample is due.
    #[cfg(test)]
    pub(crate) fn assume_clean(&self) {
        self.sampled_at.set(Some(Instant::now()));
        self.dirty_ok.set(true);
    }

    fn open(&self) -> bool {
        let now = Instant::now();
        if let Some(until) = self.paused_until.get() {
            if now < until {
                return false;
            }
            self.paused_until.set(None);
        }
        if self
            .sampled_at
            .get()
            .is_none_or(|at| now.duration_since(at) >= DIRTY_SAMPLE)
        {
            self.sampled_at.set(Some(now));
            self.dirty_ok.set(self.sample().unwrap_or(false));
        }
        self.dirty_ok.get()
    }

    /// Reads /proc/vmstat (kept open: one pread per sample); None if it cannot be read.
    fn sample(&self) -> Option<bool> {
        let mut slot = self.vmstat.borrow_mut();
        if slot.is_none() {
            *slot = Some((File::open("/proc/vmstat").ok()?, vec![0; 16 << 10]));
        }
        let (file, buf) = slot.as_mut()?;
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(_) => return None,
            }
        }
        below_free_run(std::str::from_utf8(&buf[..len]).ok()?)
    }
}

/// The calling thread's voluntary context switches so far: each is a sleep in the kernel.
fn voluntary_switches() -> i64 {
    // SAFETY: getrusage only writes into `ru`, plain old data we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid rusage buffer; it cannot fail with these arguments.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_nvcsw
}

fn stalled(took: Duration, len: usize) -> bool {
    took > STALL + Duration::from_nanos(len as u64 * NS_PER_BYTE)
}

/// Whether dirty plus writeback pages are under 3/4 of the free-run ceiling, from the text
/// of /proc/vmstat; None if a figure is missing.
fn below_free_run(vmstat: &str) -> Option<bool> {
    let (mut dirty, mut writeback, mut thresh, mut bg) = (None, None, None, None);
    for line in vmstat.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
            continue;
        };
        let slot = match k {
            "nr_dirty" => &mut dirty,
            "nr_writeback" => &mut writeback,
            "nr_dirty_threshold" => &mut thresh,
            "nr_dirty_background_threshold" => &mut bg,
            _ => continue,
        };
        *slot = v.parse::<u64>().ok();
    }
    let ceiling = (thresh? + bg?) / 2;
    Some((dirty? + writeback?) * 4 < ceiling * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMSTAT: &str = "nr_free_pages 5000000\nnr_dirty DIRTY\nnr_writeback WB\n\
        nr_writeback_temp 0\nnr_dirty_threshold 1000000\nnr_dirty_background_threshold 500000\n";

    fn vmstat(dirty: u64, wb: u64) -> String {
        VMSTAT
            .replace("DIRTY", &dirty.to_string())
            .replace("WB", &wb.to_string())
    }

    #[test]
    fn the_dirty_check_uses_three_quarters_of_the_free_run_ceiling() {
        // Ceiling (1,000,000 + 500,000) / 2 = 750,000 pages; 3/4 of it 562,500.
        assert_eq!(below_free_run(&vmstat(0, 0)), Some(true));
        assert_eq!(below_free_run(&vmstat(500_000, 62_499)), Some(true));
        assert_eq!(below_free_run(&vmstat(500_000, 62_500)), Some(false));
        assert_eq!(below_free_run(&vmstat(2_000_000, 0)), Some(false));
        assert_eq!(below_free_run("nr_dirty 1\nnr_writeback 0\n"), None);
        assert_eq!(below_free_run(""), None);
    }

    #[test]
    fn this_kernels_vmstat_has_the_figures() {
        let text = std::fs::read_to_string("/proc/vmstat").unwrap();
        assert!(below_free_run(&text).is_some(), "{text}");
    }

    #[test]
    fn a_stall_is_time_its_size_does_not_explain() {
        assert!(!stalled(Duration::from_micros(900), 64 << 10));
        assert!(stalled(Duration::from_millis(2), 64 << 10));
        // A MiB may take a millisecond of copying on top of the allowance.
        assert!(!stalled(Duration::from_micros(2000), 1 << 20));
        assert!(stalled(Duration::from_micros(2100), 1 << 20));
    }

    #[test]
    fn a_stall_pauses_inline_writes_and_the_pause_ends() {
        let gate = Gate::default();
        gate.sampled_at.set(Some(Instant::now()));
        gate.dirty_ok.set(true);
        assert!(gate.open());
        gate.paused_until
            .set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(!gate.open());
        gate.paused_until.set(Some(Instant::now()));
        assert!(gate.open());
        assert_eq!(gate.paused_until.get(), None);
    }

    #[test]
    fn inline_and_ring_writes_land_the_same_bytes_and_errors() {
        use bytes::Bytes;
        use std::os::fd::OwnedFd;
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("pagewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("segment");
        let file = std::fs::File::create(&path).unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        crate::run_local(move || async move {
            let ring = crate::ring();
            let stats = ring.write_stats();
            set_enabled(true);
            ring.gate.assume_clean();
            let file = Arc::new(OwnedFd::from(file));
            let a = Bytes::from(vec![1u8; 5000]);
            let b = Bytes::from(vec![2u8; 3000]);
            ring.write_all_at(&file, 0, vec![a, b]).await.unwrap();
            assert_eq!(stats.inline.load(Ordering::Relaxed), 1);
            // Paused, as after a stall: the ring writes the next bytes.
            ring.gate
                .paused_until
                .set(Some(Instant::now() + Duration::from_secs(60)));
            let c = Bytes::from(vec![3u8; 100]);
            ring.write_all_at(&file, 8000, vec![c.clone()])
                .await
                .unwrap();
            assert_eq!(stats.ring.load(Ordering::Relaxed), 1);
            // Too large for inline: the ring, even with the gate open.
            ring.gate.paused_until.set(None);
            ring.gate.assume_clean();
            let big = Bytes::from(vec![4u8; MAX_INLINE + 1]);
            ring.write_all_at(&file, 8100, vec![big]).await.unwrap();
            assert_eq!(stats.ring.load(Ordering::Relaxed), 2);
            // A caller that says the write would wait: the ring, even with the gate open.
            let d = Bytes::from(vec![4u8; 10]);
            ring.write_all_at_or_ring(&file, 8100, vec![d], false)
                .await
                .unwrap();
            assert_eq!(stats.ring.load(Ordering::Relaxed), 3);
            // An inline write's error comes back as the ring's would: EBADF, nothing written.
            let ro = Arc::new(OwnedFd::from(read_only));
            let (e, written) = ring.write_all_at(&ro, 0, vec![c]).await.unwrap_err();
            assert_eq!((e.raw_os_error(), written), (Some(libc::EBADF), 0));
            assert_eq!(stats.inline.load(Ordering::Relaxed), 2);
        });
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 8100 + MAX_INLINE + 1);
        assert!(got[..5000].iter().all(|&x| x == 1));
        assert!(got[5000..8000].iter().all(|&x| x == 2));
        assert!(got[8000..8100].iter().all(|&x| x == 3));
        assert!(got[8100..].iter().all(|&x| x == 4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_data_dirs_file_system_decides() {
        assert_eq!(classify(EXT4_SUPER_MAGIC), ("ext4", true));
        assert_eq!(classify(TMPFS_MAGIC), ("tmpfs", true));
        assert_eq!(classify(0x6573_5546), ("fuse", false));
        assert_eq!(classify(0x5846_5342), ("xfs", false));
        assert!(enable_for(Path::new("/no/such/dir")).is_err());
    }
}
