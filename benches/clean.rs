//! Log cleaner benchmarks (issue: log compaction).
//!
//! - `cleaner_chunk/<codec>`: what the cleaner does to one 1 MiB chunk of 16 KiB batches of
//!   1 KiB records (half of them superseded): read each record's key, drop the old ones and
//!   write the batch again with its codec. The cleaner yields to its shard's other tasks
//!   after every chunk, so this time is the longest an append or fetch on the shard waits
//!   behind it (ARCHITECTURE.md states the bound).
//! - `cleaner_pass`: a whole pass (map, rewrite, swap) over a 32 MiB log of 1,000 keys
//!   through `runnel_log::Log::clean`, io_uring and the page cache included, in MB/s of log.
//!
//! Run: `cargo bench -p runnel-benches --bench clean`.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use runnel_log::clean::{CleanContext, OffsetMap, Throttle};
use runnel_log::{Log, LogConfig, OpenOptions};
use runnel_record::builder::BatchBuilder;
use runnel_record::compact::filter_batch;
use runnel_record::recompress::{recompress, Codec};
use runnel_record::{BatchHeader, Compression};
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

/// A 16-record batch of 1 KiB values (keys k0..k15 shifted by `seed`) with `codec`.
fn batch(seed: usize, codec: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    let value: Vec<u8> = (0..1024).map(|i| (i * 7 + seed) as u8).collect();
    for i in 0..16 {
        b.append(
            1_700_000_000_000 + i,
            Some(format!("key-{}", (seed * 16 + i as usize) % 4096).as_bytes()),
            Some(&value),
            &[],
        );
    }
    let out = b.build();
    if codec == Compression::None {
        return out;
    }
    let h = BatchHeader::parse(&out).unwrap();
    recompress(
        &out,
        &h,
        Codec {
            compression: codec,
            level: None,
        },
        1 << 24,
    )
    .unwrap()
    .unwrap()
}

fn bench_chunk(c: &mut Criterion) {
    let mut g = c.benchmark_group("cleaner_chunk");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, codec) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
        ("gzip", Compression::Gzip),
    ] {
        // 1 MiB of uncompressed records, as the cleaner's read chunk holds at most (a
        // compressed chunk holds more records: this is the uncompressed-equivalent bound).
        let batches: Vec<Vec<u8>> = (0..CHUNK / (16 * 1024 + 200))
            .map(|s| batch(s, codec))
            .collect();
        let headers: Vec<BatchHeader> = batches
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap())
            .collect();
        g.throughput(Throughput::Bytes((batches.len() * 16 * 1024) as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut kept = 0usize;
                for (bytes, h) in batches.iter().zip(&headers) {
                    let out = filter_batch(bytes, h, 1 << 24, |r| r.offset % 2 == 0, None).unwrap();
                    kept += matches!(out, runnel_record::compact::Filtered::Rewritten(_)) as usize;
                }
                kept
            })
        });
    }
    g.finish();
}

fn bench_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("cleaner_pass");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    let total: u64 = 32 << 20;
    g.throughput(Throughput::Bytes(total));
    g.bench_function("32MiB_1000_keys", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                spent += runnel_runtime::run_local(move || async move {
                    let tmp = tempfile::tempdir().unwrap();
                    let config = LogConfig {
                        compact: true,
                        segment_bytes: 4 << 20,
                        ..LogConfig::default()
                    };
                    let log = Log::open(tmp.path(), "b", 0, config, OpenOptions::default())
                        .await
                        .unwrap();
                    let mut written = 0u64;
                    let mut seed = 0usize;
                    while written < total {
                        let mut b = BatchBuilder::new(1_700_000_000_000);
                        for i in 0..16 {
                            b.append(
                                1_700_000_000_000,
                                Some(format!("key-{}", (seed * 16 + i) % 1000).as_bytes()),
                                Some(&[0x5a; 1024]),
                                &[],
                            );
                        }
                        let bytes = b.build();
                        written += bytes.len() as u64;
                        log.append(BytesMut::from(&bytes[..]), false).await.unwrap();
                        seed += 1;
                    }
                    log.roll().await.unwrap();
                    let range = log.cleanable(1_800_000_000_000).await.unwrap().unwrap();
                    let mut map = OffsetMap::new(128 << 20, (range.end - range.first_dirty) as u64);
                    let mut throttle = Throttle::new(f64::INFINITY);
                    let started = Instant::now();
                    log.clean(
                        range,
                        &mut CleanContext {
                            now_ms: 1_800_000_000_000,
                            map: &mut map,
                            throttle: &mut throttle,
                            crash_after: None,
                        },
                    )
                    .await
                    .unwrap();
                    started.elapsed()
                });
            }
            spent
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_chunk(&mut c);
    bench_pass(&mut c);
    c.final_summary();
}
