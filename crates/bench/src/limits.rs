//! The machine's own ceilings, measured in the same run as the figures they bound:
//! loopback TCP with 1 and N streams (a built-in blaster: writers of 1 MiB buffers, readers
//! into a reused buffer), sequential buffered writes, and the same with an fdatasync after
//! every MiB.

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
