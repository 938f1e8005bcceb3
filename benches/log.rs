//! Partition log benchmarks (issue: the partition log).
//!
//! - `append_<size>`: appending batches of 1 KiB records through `runnel_log::Log` (io_uring
//!   writev into the page cache), against a plain sequential buffered `write(2)` of the same
//!   bytes in the same run. Both sides copy each batch once into a fresh buffer first (the log
//!   consumes its input, as the broker's receive buffer is consumed), so the ratio isolates the
//!   log's own cost. `runnel_log_4` keeps 4 appends in flight, as pipelined producers do, and
//!   lets group commit merge them.
//! - `read_plan/<n>`: planning a fetch at a random offset of a partition holding n batches
//!   (index binary search + a header scan in the page cache), and `index_lookup/<n>` the
//!   in-memory index search alone.
//!
//! Run: `cargo bench -p runnel-benches --bench log`. The append ratios, from criterion's
//! medians of the same run, are printed at the end.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use runnel_log::{Log, LogConfig, OpenOptions};
use runnel_record::builder::BatchBuilder;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The executor runs pinned, as a broker shard does (see runnel_runtime::run_pinned).
const BENCH_CPU: usize = 1;

fn record_batch(records: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    let value = vec![0x5a; 1024];
    for i in 0..records {
        b.append(
            1_700_000_000_000 + i as i64,
            Some(format!("key-{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.build()
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn bench_append(c: &mut Criterion) {
    for (name, records) in [("16KiB", 16usize), ("256KiB", 256)] {
        let batch = Arc::new(record_batch(records));
        let mut g = c.benchmark_group(format!("append_{name}"));
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for in_flight in [1usize, 4] {
            let id = if in_flight == 1 {
                "runnel_log".to_string()
            } else {
                format!("runnel_log_{in_flight}")
            };
            let batch = batch.clone();
            g.bench_function(&id, move |b| {
                b.iter_custom(|iters| {
                    let batch = batch.clone();
                    runnel_runtime::run_pinned(BENCH_CPU, move || async move {
                        let dir = tempfile::tempdir().unwrap();
                        let log = Log::open(
                            dir.path(),
                            "bench",
                            0,
                            LogConfig::default(),
                            OpenOptions::default(),
                        )
                        .await
                        .unwrap();
                        let t = Instant::now();
                        let mut pending = std::collections::VecDeque::new();
                        for _ in 0..iters {
                            if pending.len() == in_flight {
                                let p: glommio::task::JoinHandle<_> = pending.pop_front().unwrap();
                                p.await.unwrap();
                            }
                            let buf = BytesMut::from(&batch[..]);
                            let log = log.clone();
                            pending.push_back(
                                glommio::spawn_local(async move {
                                    log.append(buf, false).await.unwrap()
                                })
                                .detach(),
                            );
                        }
                        for p in pending {
                            p.await.unwrap();
                        }
                        t.elapsed()
                    })
                })
            });
        }
        let batch2 = batch.clone();
        g.bench_function("plain_write", move |b| {
            b.iter_custom(|iters| {
                pin_current_thread(BENCH_CPU);
                let dir = tempfile::tempdir().unwrap();
                let mut f = std::fs::File::create(dir.path().join("plain.log")).unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    let buf = BytesMut::from(&batch2[..]);
                    f.write_all(&buf).unwrap();
                }
                t.elapsed()
            })
        });
        g.finish();
    }
}

/// Builds a partition of `n` small batches (one 100-byte record each) in `dir`, closed cleanly.
fn build_partition(dir: PathBuf, n: usize) {
    runnel_runtime::run_pinned(BENCH_CPU, move || async move {
        let log = Log::open(
            &dir,
            "bench",
            0,
            LogConfig::default(),
            OpenOptions::default(),
        )
        .await
        .unwrap();
        let mut b = BatchBuilder::new(1_700_000_000_000);
        b.append(1_700_000_000_000, Some(b"key"), Some(&[7u8; 100]), &[]);
        let one = b.build();
        // Many batches per append call: building 1M batches one request at a time takes long.
        let per_call = 1000.min(n);
        let mut left = n;
        while left > 0 {
            let k = per_call.min(left);
            let mut buf = BytesMut::with_capacity(k * one.len());
            for _ in 0..k {
                buf.extend_from_slice(&one);
            }
            log.append(buf, false).await.unwrap();
            left -= k;
        }
        log.close().await.unwrap();
    });
}

fn bench_read_plan(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let sizes = [1usize, 1_000, 1_000_000];
    for n in sizes {
        build_partition(root.path().join(format!("p-{n}")), n);
    }
    let mut g = c.benchmark_group("read_plan");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    for n in sizes {
        let d = root.path().join(format!("p-{n}"));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, move |b, &n| {
            b.iter_custom(|iters| {
                let d = d.clone();
                runnel_runtime::run_pinned(BENCH_CPU, move || async move {
                    let opts = OpenOptions {
                        clean_shutdown: true,
                        ..Default::default()
                    };
                    let log = Log::open(&d, "bench", 0, LogConfig::default(), opts)
                        .await
                        .unwrap();
                    let mut x = 0x9e37_79b9_7f4a_7c15u64;
                    let t = Instant::now();
                    for _ in 0..iters {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let offset = (x % n as u64) as i64;
                        let plan = log.read(offset, 1 << 20, true).await.unwrap();
                        std::hint::black_box(plan.position);
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
    // The pure in-memory part: one sparse entry per ~4 KiB of 170-byte batches, as the log
    // builds it.
    let mut g = c.benchmark_group("index_lookup");
    g.sample_size(20).measurement_time(Duration::from_secs(1));
    for n in sizes {
        let mut index = runnel_log::index::OffsetIndex::default();
        let entries = (n * 170 / 4096).max(1) as u32;
        for i in 0..entries {
            index.append(i * 24 + 23, i * 4100 + 1);
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            b.iter(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::hint::black_box(index.lookup((x % n as u64) as u32))
            })
        });
    }
    g.finish();
}

/// Criterion's median time per iteration for `group/id` from this run's estimates.json.
fn median_ns(group: &str, id: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + 17..];
    value[..value.find([',', '}'])?].trim().parse().ok()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    bench_read_plan(&mut c);
    c.final_summary();
    println!("\nappend throughput, criterion medians of this run (ratio to plain_write):");
    for (size, bytes) in [
        ("16KiB", record_batch(16).len()),
        ("256KiB", record_batch(256).len()),
    ] {
        let group = format!("append_{size}");
        let Some(plain) = median_ns(&group, "plain_write") else {
            continue;
        };
        let gbps = |ns: f64| bytes as f64 / ns;
        for id in ["runnel_log", "runnel_log_4"] {
            if let Some(ns) = median_ns(&group, id) {
                println!(
                    "  {group:<14} {id:<13} {:5.2} GB/s   plain_write {:5.2} GB/s   ratio {:.2}",
                    gbps(ns),
                    gbps(plain),
                    plain / ns
                );
            }
        }
    }
}
