//! The machine's own ceilings, measured in the same run as the figures they bound:
//! loopback TCP with 1 and N streams (a built-in blaster: writers of 1 MiB buffers, readers
//! into a reused buffer), sequential buffered writes, and the same with an fdatasync after
//! every MiB; the CPU cost of a page-cache write into memory as the machine hands it out
//! and into memory just freed; and the kernel's CPU cost of one small request and its
//! answer between two threads that sleep in between, which bounds what any broker spends
//! per request.

use crate::report::Report;
use crate::LimitsArgs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub fn run(a: &LimitsArgs) -> Result<Report, String> {
    let mut r = Report {
        mode: "limits".into(),
        ..Default::default()
    };
    let one = tcp(1, a.seconds)?;
    r.figures
        .push(("loopback_tcp_1_stream".into(), one, "GB/s".into()));
    let n = tcp(a.streams.max(1), a.seconds)?;
    r.figures.push((
        format!("loopback_tcp_{}_streams", a.streams.max(1)),
        n,
        "GB/s".into(),
    ));
    r.figures.push((
        "request_round_trip_answerer_cpu".into(),
        round_trip(a.seconds)?,
        "us".into(),
    ));
    let (fresh, reused) = page_cache_cpu(&a.dir, a.file_mib)?;
    r.figures.push((
        "page_cache_write_cpu_fresh".into(),
        fresh,
        "CPU-s/GB".into(),
    ));
    r.figures.push((
        "page_cache_write_cpu_reused".into(),
        reused,
        "CPU-s/GB".into(),
    ));
    let (buffered, synced) = disk(&a.dir, a.file_mib)?;
    r.figures
        .push(("sequential_buffered_write".into(), buffered, "GB/s".into()));
    r.figures.push((
        "sequential_write_fdatasync_per_mib".into(),
        synced,
        "GB/s".into(),
    ));
    Ok(r)
}

/// Loopback throughput in GB/s with `streams` parallel connections.
fn tcp(streams: usize, seconds: f64) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let readers = std::thread::spawn(move || -> u64 {
        let mut hs = Vec::new();
        for _ in 0..streams {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            hs.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                total
            }));
        }
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let writers: Vec<_> = (0..streams)
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                let buf = vec![7u8; 1 << 20];
                while Instant::now() < until {
                    s.write_all(&buf).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().map_err(|_| "writer panicked")??;
    }
    let total = readers.join().map_err(|_| "reader panicked")?;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e9)
}

/// Round trips per second in [`round_trip`]: few enough that both sides sleep between them.
const ROUND_TRIPS_PER_S: f64 = 2000.0;

/// The answering side's CPU, in microseconds, per round trip of a 100-byte request and a
/// 100-byte answer over loopback (TCP_NODELAY, blocking calls), the two threads on the first
/// and last CPU this process may use. Each round trip wakes the answerer, and its answer
/// wakes the asker: the kernel's fixed cost per request, which on a virtual machine (wake-ups
/// cross vCPUs by interrupts the hypervisor delivers) can be many times bare metal's.
fn round_trip(seconds: f64) -> Result<f64, String> {
    let cpus = allowed_cpus();
    let (first, last) = (cpus.first().copied(), cpus.last().copied());
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let answerer = std::thread::spawn(move || -> Result<(f64, u64), String> {
        pin(first);
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 100];
        let cpu0 = thread_cpu_s();
        let mut n = 0u64;
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok((thread_cpu_s() - cpu0, n))
    });
    pin(last);
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 100];
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed().as_secs_f64() < seconds {
        let due = start + Duration::from_secs_f64(f64::from(i) / ROUND_TRIPS_PER_S);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        s.write_all(&buf).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        i += 1;
    }
    drop(s);
    pin_all(&cpus);
    let (cpu, n) = answerer.join().map_err(|_| "answerer panicked")??;
    Ok(cpu / n.max(1) as f64 * 1e6)
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills the one we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set we own, in range.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins this thread to `cpu` (nothing when None).
fn pin(cpu: Option<usize>) {
    if let Some(c) = cpu {
        pin_all(&[c]);
    }
}

fn pin_all(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is an empty set, filled with CPUs in range.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c came from sched_getaffinity, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is this thread; a failure only leaves it where it was.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// This thread's CPU seconds, user and system. (CLOCK_THREAD_CPUTIME_ID is the scheduler's
/// own count; getrusage's split into user and system is scaled from ticks and can stand
/// still over a few milliseconds.)
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU-s per GB of sequential 1 MiB writes into the page cache: (a file written as the
/// kernel hands out free memory, a second file written right after the first is deleted).
/// On a dedicated host the two are the same. On a virtual machine whose host takes back
/// the guest's free memory (free page reporting, a balloon), the first can cost many times
/// the second: each page the host took back faults on the host when it is written again.
fn page_cache_cpu(dir: &std::path::Path, mib: u64) -> Result<(f64, f64), String> {
    let buf = vec![42u8; 1 << 20];
    let path = |i| dir.join(format!(".runnel-bench-pages-{}-{i}", std::process::id()));
    let mut out = [0f64; 2];
    for (i, cpu) in out.iter_mut().enumerate() {
        let p = path(i);
        let mut f = std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let c0 = thread_cpu_s();
        for _ in 0..mib {
            f.write_all(&buf).map_err(|e| e.to_string())?;
        }
        *cpu = (thread_cpu_s() - c0) / ((mib << 20) as f64 / 1e9);
        drop(f);
        // Deleting the file frees its pages: the second file's writes take them back.
        let _ = std::fs::remove_file(&p);
    }
    Ok((out[0], out[1]))
}

/// (buffered, fdatasync per MiB) sequential write bandwidth in GB/s.
fn disk(dir: &std::path::Path, mib: u64) -> Result<(f64, f64), String> {
    use std::os::fd::AsRawFd;
    let buf = vec![42u8; 1 << 20];
    let mut results = [0f64; 2];
    for (i, sync) in [false, true].into_iter().enumerate() {
        let path = dir.join(format!(".runnel-bench-limits-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let start = Instant::now();
        for _ in 0..mib {
            f.write_all(&buf).map_err(|e| e.to_string())?;
            if sync {
                // SAFETY: fdatasync on a file we own.
                if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
            }
        }
        results[i] = (mib << 20) as f64 / start.elapsed().as_secs_f64() / 1e9;
        drop(f);
        let _ = std::fs::remove_file(&path);
    }
    Ok((results[0], results[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_trip_and_page_cache_figures_are_measured_and_leave_nothing_behind() {
        // About 200 round trips: the answerer spends some CPU on each, and well under a
        // second (it sleeps between them).
        let us = round_trip(0.1).unwrap();
        assert!(us > 0.0 && us < 1e6, "{us} us per round trip");
        // The thread's own affinity is back to what it was.
        let before = allowed_cpus();
        round_trip(0.05).unwrap();
        assert_eq!(allowed_cpus(), before);
        let dir = tempfile::tempdir().unwrap();
        let (fresh, reused) = page_cache_cpu(dir.path(), 8).unwrap();
        assert!(fresh > 0.0 && reused > 0.0, "{fresh} / {reused} CPU-s/GB");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
