//! Property test: produce requests whose batch headers make arbitrary claims (record counts,
//! offset deltas, lengths, attributes, producer fields, base offsets, timestamps), with and
//! without a CRC that matches them, appended to a real log. Whatever the claims, the log
//! never panics, never answers with a storage error, and stays a log: its segment files hold
//! whole batches with contiguous offsets, its index files point at batch starts, reads walk
//! it batch by batch, and recovery (clean and unclean) finds the same end.

mod common;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use runnel_log::{Log, LogConfig, OpenOptions, MAX_RELATIVE_OFFSET};
use runnel_record::builder::BatchBuilder;
use runnel_record::{verify_stored, Batches, HEADER_LEN};
use std::path::Path;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

const STORAGE_ERROR: i16 = 56;

#[derive(Debug, Clone)]
enum Claim {
    Honest,
    /// recordCount with the lastOffsetDelta that matches it.
    Count(i32),
    /// recordCount and lastOffsetDelta independently.
    Counts(i32, i32),
    BatchLength(i32),
    Attributes(i16),
    Producer(i64, i16, i32),
    BaseOffset(i64),
    Timestamps(i64, i64),
    Magic(i8),
}

#[derive(Debug, Clone)]
struct Spec {
    records: usize,
    value_bytes: usize,
    /// Flag the batch compressed with this codec (its payload stays plain bytes: the broker
    /// never inflates, so only the header's claims are checked).
    codec: Option<i16>,
    claim: Claim,
    /// Recompute the CRC after the claim, so the claim itself is what gets checked.
    reseal: bool,
}

fn any_count() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => 1..8i32,
        2 => (i32::MAX - 8)..=i32::MAX,
        1 => (1i32 << 30)..=(1 << 30) + 4,
        1 => any::<i32>(),
    ]
}

fn arb_claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        3 => Just(Claim::Honest),
        4 => any_count().prop_map(Claim::Count),
        1 => (any_count(), any_count()).prop_map(|(a, b)| Claim::Counts(a, b)),
        1 => prop_oneof![any::<i32>(), -100..100_000i32].prop_map(Claim::BatchLength),
        1 => any::<i16>().prop_map(Claim::Attributes),
        2 => (
            prop_oneof![Just(-1i64), 1..3i64, any::<i64>()],
            prop_oneof![0..2i16, any::<i16>()],
            prop_oneof![0..6i32, (i32::MAX - 4)..=i32::MAX, any::<i32>()],
        )
            .prop_map(|(p, e, s)| Claim::Producer(p, e, s)),
        1 => any::<i64>().prop_map(Claim::BaseOffset),
        1 => (any::<i64>(), any::<i64>()).prop_map(|(a, b)| Claim::Timestamps(a, b)),
        1 => any::<i8>().prop_map(Claim::Magic),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        1..5usize,
        0..120usize,
        prop_oneof![2 => Just(None), 1 => (1..=4i16).prop_map(Some)],
        arb_claim(),
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(records, value_bytes, codec, claim, reseal)| Spec {
            records,
            value_bytes,
            codec,
            claim,
            reseal,
        })
}

#[derive(Debug, Clone)]
struct Case {
    segment_bytes: u64,
    index_interval_bytes: u32,
    concurrent: bool,
    appends: Vec<Vec<Spec>>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![400..2_000u64, 2_000..20_000u64],
        prop_oneof![Just(1u32), 64..512u32, Just(4096u32)],
        any::<bool>(),
        vec(vec(arb_spec(), 1..4), 1..12),
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, concurrent, appends)| Case {
                segment_bytes,
                index_interval_bytes,
                concurrent,
                appends,
            },
        )
}

fn build(spec: &Spec, seed: usize) -> Vec<u8> {
    let ts = 1_700_000_000_000 + seed as i64;
    let mut b = BatchBuilder::new(ts);
    if let Claim::Producer(p, e, s) = spec.claim {
        b = b.producer(p, e, s);
    }
    for i in 0..spec.records {
        let value = vec![(seed + i) as u8; spec.value_bytes];
        b.append(ts + i as i64, Some(b"k"), Some(&value), &[]);
    }
    let mut bytes = b.build();
    let put = |bytes: &mut Vec<u8>, at: usize, v: &[u8]| bytes[at..at + v.len()].copy_from_slice(v);
    if let Some(codec) = spec.codec {
        let attrs = i16::from_be_bytes([bytes[21], bytes[22]]) | codec;
        put(&mut bytes, 21, &attrs.to_be_bytes());
    }
    match spec.claim {
        Claim::Honest | Claim::Producer(..) => {}
        Claim::Count(n) => {
            put(&mut bytes, 23, &n.wrapping_sub(1).to_be_bytes());
            put(&mut bytes, 57, &n.to_be_bytes());
        }
        Claim::Counts(n, d) => {
            put(&mut bytes, 23, &d.to_be_bytes());
            put(&mut bytes, 57, &n.to_be_bytes());
        }
        Claim::BatchLength(l) => put(&mut bytes, 8, &l.to_be_bytes()),
        Claim::Attributes(a) => put(&mut bytes, 21, &a.to_be_bytes()),
        Claim::BaseOffset(o) => put(&mut bytes, 0, &o.to_be_bytes()),
        Claim::Timestamps(base, max) => {
            put(&mut bytes, 27, &base.to_be_bytes());
            put(&mut bytes, 35, &max.to_be_bytes());
        }
        Claim::Magic(m) => bytes[16] = m as u8,
    }
    if spec.reseal {
        runnel_record::set_crc(&mut bytes);
    }
    bytes
}

/// Every segment file read from disk: whole batches, valid CRCs, offsets contiguous from 0
/// across segments, each within its segment's relative offset range, and index entries
/// (of segments whose index files exist) at batch starts with their batch's last offset.
fn check_files(dir: &Path, log_end: i64) -> Result<usize, String> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| runnel_log::parse_file_name(&e.ok()?.file_name().to_string_lossy(), "log"))
        .collect();
    bases.sort_unstable();
    let mut next = 0i64;
    let mut batches = 0;
    for base in bases {
        let bytes = std::fs::read(dir.join(runnel_log::file_name(base, "log")))
            .map_err(|e| e.to_string())?;
        ensure!(
            bytes.is_empty() || base == next,
            "segment {base} starts after {next}"
        );
        let mut starts = std::collections::HashMap::new();
        let mut it = Batches::new(&bytes);
        for b in &mut it {
            let (pos, h) = b.map_err(|e| format!("segment {base}: {e}"))?;
            verify_stored(&bytes[pos..pos + h.total_len()])
                .map_err(|e| format!("segment {base} at {pos}: {e}"))?;
            ensure!(
                h.base_offset == next,
                "batch at {pos} of {base} has base {} after {next}",
                h.base_offset
            );
            ensure!(
                h.last_offset() - base <= MAX_RELATIVE_OFFSET,
                "batch at {pos} reaches offset {} in segment {base}",
                h.last_offset()
            );
            starts.insert(pos as u32, (h.last_offset() - base) as u32);
            next = h.next_offset();
            batches += 1;
        }
        ensure!(
            it.position() == bytes.len(),
            "segment {base} has a partial batch"
        );
        if let Ok(index) = std::fs::read(dir.join(runnel_log::file_name(base, "index"))) {
            let mut last: Option<(u32, u32)> = None;
            for e in index.chunks(8) {
                ensure!(e.len() == 8, "index of {base} has a partial entry");
                let rel = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let pos = u32::from_be_bytes(e[4..8].try_into().unwrap());
                ensure!(
                    last.is_none_or(|(r, p)| rel > r && pos > p),
                    "index of {base}: ({rel}, {pos}) after {last:?}"
                );
                ensure!(
                    starts.get(&pos) == Some(&rel),
                    "index of {base}: ({rel}, {pos}) is not a batch start with that last offset"
                );
                last = Some((rel, pos));
            }
        }
    }
    ensure!(
        next == log_end,
        "the files end at {next}, the log at {log_end}"
    );
    Ok(batches)
}

/// Walks the log with read plans from its start to its high watermark.
async fn walk(log: &Log) -> Result<usize, String> {
    let ring = runnel_runtime::ring();
    let mut offset = log.log_start_offset();
    let mut batches = 0;
    while offset < log.high_watermark() {
        let plan = log
            .read(offset, 1 << 16, true)
            .await
            .map_err(|e| e.to_string())?;
        ensure!(
            plan.len > 0,
            "empty plan at {offset} below {} ({plan:?}) segs {:?} leo {}",
            log.high_watermark(),
            log.segment_base_offsets(),
            log.log_end_offset()
        );
        let bytes = ring
            .read_at(&plan.file, plan.position, plan.len as usize)
            .await
            .map_err(|e| e.to_string())?;
        for b in Batches::new(&bytes) {
            let (_, h) = b.map_err(|e| e.to_string())?;
            ensure!(
                h.base_offset <= offset && offset < h.next_offset() || h.base_offset == offset,
                "plan at {offset} starts with batch {}",
                h.base_offset
            );
            offset = h.next_offset();
            batches += 1;
        }
        ensure!(bytes.len() >= HEADER_LEN, "plan shorter than a header");
    }
    Ok(batches)
}

async fn run_case(dir: &Path, case: &Case) -> Result<(), String> {
    let config = LogConfig {
        segment_bytes: case.segment_bytes,
        index_interval_bytes: case.index_interval_bytes,
        segment_ms: None,
        retention_ms: None,
        preallocate: false,
        ..LogConfig::default()
    };
    let open = |opts| Log::open(dir, "t", 0, config.clone(), opts);
    let log = open(OpenOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let requests: Vec<BytesMut> = case
        .appends
        .iter()
        .enumerate()
        .map(|(i, specs)| {
            let mut buf = BytesMut::new();
            for (j, s) in specs.iter().enumerate() {
                buf.extend_from_slice(&build(s, i * 8 + j));
            }
            buf
        })
        .collect();
    let results = if case.concurrent {
        let tasks: Vec<_> = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append(r, i % 3 == 0).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    } else {
        let mut out = Vec::new();
        for (i, r) in requests.into_iter().enumerate() {
            out.push(log.append(r, i % 3 == 0).await);
        }
        out
    };
    let mut fresh: Vec<(i64, i64)> = Vec::new();
    for r in &results {
        match r {
            Ok(info) if info.record_count > 0 => fresh.push((info.base_offset, info.last_offset)),
            Ok(_) => {} // a duplicate of an earlier idempotent batch
            Err(e) => ensure!(
                e.kafka_error_code() != STORAGE_ERROR,
                "a claim reached the storage layer: {e}"
            ),
        }
    }
    fresh.sort_unstable();
    let mut next = 0;
    for (first, last) in &fresh {
        ensure!(*first == next, "appends answered {fresh:?}: not contiguous");
        next = last + 1;
    }
    let end = log.log_end_offset();
    ensure!(
        end == next && log.high_watermark() == end,
        "log end {end}, answers end at {next}"
    );
    check_files(dir, end)?;
    walk(&log).await.map_err(|e| format!("first walk: {e}"))?;
    log.close().await.map_err(|e| e.to_string())?;
    let batches = check_files(dir, end)?;

    for opts in [
        OpenOptions {
            clean_shutdown: true,
            ..OpenOptions::default()
        },
        OpenOptions {
            recovery_point: Some(0),
            ..OpenOptions::default()
        },
    ] {
        let log = open(opts).await.map_err(|e| format!("{opts:?}: {e}"))?;
        ensure!(
            log.log_end_offset() == end,
            "{opts:?}: reopened at {}",
            log.log_end_offset()
        );
        let walked = walk(&log).await?;
        ensure!(
            walked == batches,
            "{opts:?}: read {walked} batches of {batches}"
        );
        log.close().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

proptest! {
    // 32 cases keep the suite quick; PROPTEST_CASES=2000 runs a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32),
        ..ProptestConfig::default()
    })]

    #[test]
    fn produce_batches_with_arbitrary_header_claims_never_break_the_log(case in arb_case()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        let result = runnel_runtime::run_local(move || async move { run_case(&dir, &case).await });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
