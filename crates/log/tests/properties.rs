//! Property tests: a log built from random appends answers every fetch and every
//! ListOffsets-by-timestamp exactly as a linear scan of its segment files does, with the
//! indexes it kept while appending, with the indexes it wrote at a clean close, and with the
//! indexes recovery rebuilt after an unclean shutdown.

mod common;

use common::{batch_at, record_values};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use runnel_log::{Log, LogConfig, LogError, OpenOptions};
use runnel_record::{verify_stored, BatchHeader, Batches, Records, HEADER_LEN};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Fails the case with a message instead of panicking inside the executor thread.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

#[derive(Debug, Clone)]
struct BatchSpec {
    records: usize,
    record_bytes: usize,
    base_ts: i64,
    order: TsOrder,
}

/// How the record timestamps of a batch run (producers may send them in any order).
#[derive(Debug, Clone, Copy)]
enum TsOrder {
    Rising,
    Falling,
    Scrambled,
}

impl BatchSpec {
    fn timestamps(&self, span: i64) -> Vec<i64> {
        let n = self.records as i64;
        let base = self.base_ts % span;
        (0..n)
            .map(|i| match self.order {
                TsOrder::Rising => base + i,
                TsOrder::Falling => base + n - 1 - i,
                TsOrder::Scrambled => base + (i * 7) % n,
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// Batch timestamps are base_ts % ts_span: a small span gives many ties.
    ts_span: i64,
    segment_bytes: u64,
    index_interval_bytes: u32,
    preallocate: bool,
    /// All appends are issued at once (group commit), not one after the other.
    concurrent: bool,
    /// Each inner Vec is one append call: its batches concatenated in one buffer.
    appends: Vec<Vec<BatchSpec>>,
    /// DeleteRecords to this share of the high watermark before the checks.
    delete_to: Option<Index>,
    /// (fetch offset picked from [0, high watermark), max_bytes)
    fetches: Vec<(Index, u64)>,
    timestamps: Vec<i64>,
}

fn arb_batch() -> impl Strategy<Value = BatchSpec> {
    (
        1..=20usize,
        // Mostly small records so that several batches fit a segment, some large ones.
        prop_oneof![4 => 0..=300usize, 1 => 0..=3000usize],
        // Out of order across batches, with ties: the time index must cope.
        0..5_000i64,
        prop_oneof![
            6 => Just(TsOrder::Rising),
            1 => Just(TsOrder::Falling),
            1 => Just(TsOrder::Scrambled)
        ],
    )
        .prop_map(|(records, record_bytes, base_ts, order)| BatchSpec {
            records,
            record_bytes,
            base_ts,
            order,
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(50i64), Just(5_000i64)],
        (4u64 << 10)..=(64 << 10),
        64u32..=4096,
        any::<bool>(),
        any::<bool>(),
        vec(vec(arb_batch(), 1..=5), 1..40),
        prop_oneof![3 => Just(None), 1 => any::<Index>().prop_map(Some)],
        vec(
            (
                any::<Index>(),
                prop_oneof![0..=512u64, 512..=16_384u64, 16_384..=200_000u64],
            ),
            1..40,
        ),
        vec(-10i64..5_100, 1..20),
    )
        .prop_map(
            |(
                ts_span,
                segment_bytes,
                index_interval_bytes,
                preallocate,
                concurrent,
                appends,
                delete_to,
                fetches,
                timestamps,
            )| {
                Case {
                    ts_span,
                    segment_bytes,
                    index_interval_bytes,
                    preallocate,
                    concurrent,
                    appends,
                    delete_to,
                    fetches,
                    timestamps,
                }
            },
        )
}

fn config(case: &Case) -> LogConfig {
    LogConfig {
        segment_bytes: case.segment_bytes,
        index_interval_bytes: case.index_interval_bytes,
        preallocate: case.preallocate,
        segment_ms: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// One batch as a linear scan of the segment files finds it.
struct Scanned {
    segment: i64,
    position: u64,
    header: BatchHeader,
    /// (offset, timestamp) of every record, in offset order.
    records: Vec<(i64, i64)>,
}

/// A segment file as read straight from disk.
struct SegmentFile {
    base: i64,
    bytes: Vec<u8>,
}

/// Reads every segment of `dir` and walks its batches from the first byte, checking each
/// batch's CRC and that the files hold whole batches only.
fn scan(dir: &Path) -> Result<(Vec<SegmentFile>, Vec<Scanned>), String> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            runnel_log::parse_file_name(&name, "log")
        })
        .collect();
    bases.sort_unstable();
    let mut files = Vec::new();
    let mut batches = Vec::new();
    for base in bases {
        let bytes = std::fs::read(dir.join(runnel_log::file_name(base, "log")))
            .map_err(|e| e.to_string())?;
        let mut it = Batches::new(&bytes);
        for b in &mut it {
            let (pos, header) = b.map_err(|e| format!("segment {base}: {e}"))?;
            let whole = &bytes[pos..pos + header.total_len()];
            verify_stored(whole).map_err(|e| format!("segment {base} at {pos}: {e}"))?;
            let records = Records::new(&whole[HEADER_LEN..])
                .map(|r| {
                    let r = r.map_err(|e| e.to_string())?;
                    Ok((
                        header.base_offset + i64::from(r.offset_delta),
                        header.base_timestamp + r.timestamp_delta,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            batches.push(Scanned {
                segment: base,
                position: pos as u64,
                header,
                records,
            });
        }
        ensure!(
            it.position() == bytes.len(),
            "segment {base} holds {} bytes after its last whole batch",
            bytes.len() - it.position()
        );
        files.push(SegmentFile { base, bytes });
    }
    Ok((files, batches))
}

/// Kafka's TimeIndex.maybeAppend: only entries whose timestamp grew.
fn maybe_append(time_index: &mut Vec<(i64, u32)>, ts: i64, rel: u32) {
    match time_index.last() {
        Some(&(last_ts, last_rel)) if ts <= last_ts || rel < last_rel => {}
        _ => time_index.push((ts, rel)),
    }
}

/// The index files Kafka's rules give for `file` (one offset entry per `interval` bytes, a
/// time entry with each offset entry when the largest timestamp grew, and a final time entry
/// when the segment was closed by a roll).
fn expected_index_files(file: &SegmentFile, interval: u32, sealed: bool) -> (Vec<u8>, Vec<u8>) {
    let mut index = Vec::new();
    let mut time_index: Vec<(i64, u32)> = Vec::new();
    let mut since = 0u64;
    let mut max_ts = -1i64;
    let mut offset_of_max = file.base;
    for b in Batches::new(&file.bytes) {
        let (pos, h) = b.expect("scanned before");
        if h.max_timestamp > max_ts {
            max_ts = h.max_timestamp;
            offset_of_max = h.last_offset();
        }
        if since > u64::from(interval) {
            index.extend_from_slice(&((h.last_offset() - file.base) as u32).to_be_bytes());
            index.extend_from_slice(&(pos as u32).to_be_bytes());
            maybe_append(&mut time_index, max_ts, (offset_of_max - file.base) as u32);
            since = 0;
        }
        since += h.total_len() as u64;
    }
    if sealed && max_ts >= 0 {
        maybe_append(&mut time_index, max_ts, (offset_of_max - file.base) as u32);
    }
    let time_index = time_index
        .iter()
        .flat_map(|(ts, rel)| ts.to_be_bytes().into_iter().chain(rel.to_be_bytes()))
        .collect();
    (index, time_index)
}

/// Checks the index files of every segment against the model; the last segment is the
/// active one (its time index is not sealed).
fn check_index_files(
    dir: &Path,
    files: &[SegmentFile],
    interval: u32,
    phase: &str,
) -> Result<(), String> {
    for (i, file) in files.iter().enumerate() {
        let sealed = i + 1 < files.len();
        let (index, time_index) = expected_index_files(file, interval, sealed);
        let on_disk = |ext| {
            std::fs::read(dir.join(runnel_log::file_name(file.base, ext)))
                .map_err(|e| e.to_string())
        };
        ensure!(
            on_disk("index")? == index,
            "{phase}: offset index of segment {} differs from the model",
            file.base
        );
        ensure!(
            on_disk("timeindex")? == time_index,
            "{phase}: time index of segment {} differs from the model",
            file.base
        );
    }
    Ok(())
}

/// Every fetch and timestamp lookup of `case` against the linear scan of the files.
async fn check_log(log: &Log, case: &Case, lso: i64, phase: &str) -> Result<(), String> {
    let (files, batches) = scan(log.dir())?;
    let hw = log.high_watermark();
    ensure!(
        log.log_start_offset() == lso,
        "{phase}: log start offset {}, expected {lso}",
        log.log_start_offset()
    );
    ensure!(
        log.segment_base_offsets() == files.iter().map(|f| f.base).collect::<Vec<_>>(),
        "{phase}: segments {:?} but files {:?}",
        log.segment_base_offsets(),
        files.iter().map(|f| f.base).collect::<Vec<_>>()
    );
    ensure!(
        log.size_bytes() == files.iter().map(|f| f.bytes.len() as u64).sum::<u64>(),
        "{phase}: size_bytes {} differs from the files",
        log.size_bytes()
    );
    // Offsets are contiguous from the first segment's base to the high watermark, and no
    // segment but the active one lies wholly below the log start offset.
    let mut next = files.first().map_or(0, |f| f.base);
    for b in &batches {
        ensure!(
            b.header.base_offset == next,
            "{phase}: batch at {} of segment {} starts at {}, expected {next}",
            b.position,
            b.segment,
            b.header.base_offset
        );
        next = b.header.next_offset();
    }
    ensure!(
        next == hw,
        "{phase}: files end at offset {next}, high watermark {hw}"
    );
    for pair in files.windows(2) {
        ensure!(
            pair[1].base > lso,
            "{phase}: segment {} lies wholly below the log start offset {lso}",
            pair[0].base
        );
    }
    for f in &files {
        if f.bytes.len() as u64 > case.segment_bytes {
            return Err(format!(
                "{phase}: segment {} has {} bytes, more than segment.bytes {}",
                f.base,
                f.bytes.len(),
                case.segment_bytes
            ));
        }
    }

    for (pick, max_bytes) in &case.fetches {
        if hw == lso {
            break;
        }
        let offset = lso + pick.index((hw - lso) as usize) as i64;
        let first = batches
            .iter()
            .position(|b| b.header.last_offset() >= offset)
            .expect("offset below the high watermark");
        let expected = &batches[first];
        let plan = log
            .read(offset, *max_bytes, true)
            .await
            .map_err(|e| e.to_string())?;
        let at = format!("{phase}: fetch {offset} max_bytes {max_bytes}");
        ensure!(
            (plan.segment_base_offset, plan.position) == (expected.segment, expected.position),
            "{at}: plan starts at segment {} position {}, the batch holding the offset is at segment {} position {}",
            plan.segment_base_offset, plan.position, expected.segment, expected.position
        );
        ensure!(
            plan.high_watermark == hw && plan.log_start_offset == lso,
            "{at}: plan hw {} lso {}",
            plan.high_watermark,
            plan.log_start_offset
        );
        // The plan's bytes, read through the plan's own descriptor, are the file's bytes.
        let file = files
            .iter()
            .find(|f| f.base == plan.segment_base_offset)
            .expect("segment exists");
        let end = plan.position + plan.len;
        ensure!(
            plan.len > 0 && end <= file.bytes.len() as u64,
            "{at}: plan of {} bytes in a {} byte segment",
            plan.len,
            file.bytes.len()
        );
        let mut via_plan = vec![0u8; plan.len as usize];
        std::fs::File::from(plan.file.try_clone().map_err(|e| e.to_string())?)
            .read_exact_at(&mut via_plan, plan.position)
            .map_err(|e| e.to_string())?;
        ensure!(
            via_plan[..] == file.bytes[plan.position as usize..end as usize],
            "{at}: plan file is not the segment file"
        );
        // Ends on a batch boundary, within max_bytes unless it is one batch, and as long as
        // max_bytes allows: the next batch of the segment would not have fit, or the plan
        // stopped at an indexed boundary within max_bytes / SHORTFALL_DIVISOR of the limit.
        let in_plan: Vec<&Scanned> = batches[first..]
            .iter()
            .take_while(|b| b.segment == plan.segment_base_offset && b.position < end)
            .collect();
        let last = in_plan.last().expect("at least the first batch");
        ensure!(
            last.position + last.header.total_len() as u64 == end,
            "{at}: plan ends inside the batch at {}",
            last.position
        );
        ensure!(
            in_plan.len() == 1 || plan.len <= *max_bytes,
            "{at}: {} batches in {} bytes",
            in_plan.len(),
            plan.len
        );
        if let Some(next) = batches[first + in_plan.len()..]
            .first()
            .filter(|b| b.segment == plan.segment_base_offset)
        {
            let indexed_stop = max_bytes.saturating_sub(plan.len)
                <= *max_bytes / runnel_log::SHORTFALL_DIVISOR
                && in_plan.len() > 1;
            ensure!(
                plan.len + next.header.total_len() as u64 > *max_bytes || indexed_stop,
                "{at}: the next batch ({} bytes) would have fit",
                next.header.total_len()
            );
        }
        ensure!(
            last.header.next_offset() <= hw,
            "{at}: plan crosses the high watermark"
        );
        // Without min_one_batch an oversized first batch gives an empty plan, else the same.
        let strict = log
            .read(offset, *max_bytes, false)
            .await
            .map_err(|e| e.to_string())?;
        let first_len = expected.header.total_len() as u64;
        if first_len > *max_bytes {
            ensure!(
                strict.len == 0,
                "{at}: without min_one_batch the {first_len} byte batch was returned"
            );
        } else {
            ensure!(
                (strict.position, strict.len) == (plan.position, plan.len),
                "{at}: min_one_batch changed a plan that fits"
            );
        }
    }
    let at_end = log
        .read(hw, 1 << 20, true)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        at_end.len == 0 && at_end.high_watermark == hw,
        "{phase}: fetch at the high watermark returned {} bytes",
        at_end.len
    );
    match log.read(hw + 1, 1 << 20, true).await {
        Err(e @ LogError::OffsetOutOfRange { .. }) => {
            ensure!(e.kafka_error_code() == 1, "{phase}: {e}")
        }
        other => {
            return Err(format!(
                "{phase}: fetch past the high watermark gave {other:?}"
            ))
        }
    }

    if lso > 0 {
        match log.read(lso - 1, 1 << 20, true).await {
            Err(e @ LogError::OffsetOutOfRange { .. }) => {
                ensure!(e.kafka_error_code() == 1, "{phase}: {e}")
            }
            other => {
                return Err(format!(
                    "{phase}: fetch below the log start offset gave {other:?}"
                ))
            }
        }
    }

    let records: Vec<(i64, i64)> = batches
        .iter()
        .flat_map(|b| b.records.iter().copied())
        .collect();
    for &target in &case.timestamps {
        let expected = records
            .iter()
            .find(|&&(o, ts)| ts >= target && o >= lso)
            .map(|&(o, ts)| (o, ts));
        let got = log
            .offset_for_timestamp(target)
            .await
            .map_err(|e| e.to_string())?
            .map(|t| (t.offset, t.timestamp));
        ensure!(
            got == expected,
            "{phase}: offset_for_timestamp({target}) = {got:?}, a linear scan finds {expected:?}"
        );
    }
    // ListOffsets MAX_TIMESTAMP: the largest timestamp, in the first batch that holds it. The
    // offset is the record's own when its batch's timestamps rise (the usual case); the log
    // keeps only the batch's last offset (Kafka's "shallow" offset), so with other orders any
    // offset from that record to the end of its batch passes.
    let max = batches.iter().map(|b| b.header.max_timestamp).max();
    let got = log
        .max_timestamp_offset()
        .map_err(|e| e.to_string())?
        .map(|t| (t.offset, t.timestamp));
    match max.and_then(|m| batches.iter().find(|b| b.header.max_timestamp == m)) {
        None => ensure!(
            got.is_none(),
            "{phase}: max_timestamp_offset {got:?} of an empty log"
        ),
        Some(b) => {
            let m = b.header.max_timestamp;
            let first = b
                .records
                .iter()
                .find(|&&(_, ts)| ts == m)
                .expect("a record has the max")
                .0;
            let ok =
                got.is_some_and(|(o, ts)| ts == m && (first..=b.header.last_offset()).contains(&o));
            ensure!(
                ok,
                "{phase}: max_timestamp_offset {got:?}, a linear scan finds {m} at offset {first}"
            );
        }
    }
    Ok(())
}

async fn run_case(dir: &Path, case: &Case) -> Result<(), String> {
    let log = Log::open(dir, "p", 0, config(case), OpenOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for specs in &case.appends {
        let mut records = bytes::BytesMut::new();
        let mut count = 0;
        for (i, s) in specs.iter().enumerate() {
            let values = record_values(s.records, s.record_bytes, i as u8);
            records.extend_from_slice(&batch_at(&values, &s.timestamps(case.ts_span)));
            count += s.records as i64;
        }
        let (hw, size) = (log.high_watermark(), log.size_bytes());
        let len = records.len() as u64;
        let append = {
            let log = log.clone();
            async move { (len, count, log.append(records, false).await) }
        };
        if case.concurrent {
            tasks.push(glommio::spawn_local(append));
            continue;
        }
        match append.await {
            (_, _, Ok(info)) => {
                ensure!(
                    info.base_offset == hw && info.last_offset == hw + count - 1,
                    "append at {hw} got {info:?}"
                );
            }
            (len, _, Err(e @ LogError::BatchTooLarge { .. })) => {
                ensure!(len > case.segment_bytes, "{len} bytes refused: {e}");
                ensure!(e.kafka_error_code() == 10, "{e}");
                ensure!(
                    (log.high_watermark(), log.size_bytes()) == (hw, size),
                    "a refused append moved the log"
                );
            }
            (len, _, Err(e)) => return Err(format!("append of {len} bytes: {e}")),
        }
    }
    // Concurrent appends: each got its own range of offsets, together exactly [0, hw).
    let mut ranges = Vec::new();
    for task in tasks {
        match task.await {
            (_, count, Ok(info)) => {
                ensure!(info.last_offset - info.base_offset + 1 == count, "{info:?}");
                ranges.push((info.base_offset, info.last_offset));
            }
            (len, _, Err(e @ LogError::BatchTooLarge { .. })) => {
                ensure!(len > case.segment_bytes, "{len} bytes refused: {e}");
            }
            (len, _, Err(e)) => return Err(format!("append of {len} bytes: {e}")),
        }
    }
    ranges.sort_unstable();
    let mut next = 0;
    for (base, last) in ranges {
        ensure!(
            base == next,
            "concurrent appends got offsets {base}..={last} after {next}"
        );
        next = last + 1;
    }
    if case.concurrent {
        ensure!(
            next == log.high_watermark(),
            "acknowledged offsets end at {next}"
        );
    }
    let lso = match case.delete_to {
        None => 0,
        Some(pick) => {
            let target = pick.index(log.high_watermark() as usize + 1) as i64;
            let lso = log
                .delete_records(target)
                .await
                .map_err(|e| e.to_string())?;
            ensure!(
                lso == target,
                "delete_records({target}) moved the log start offset to {lso}"
            );
            lso
        }
    };
    check_log(&log, case, lso, "live").await?;

    log.close().await.map_err(|e| e.to_string())?;
    let (files, _) = scan(dir)?;
    check_index_files(dir, &files, case.index_interval_bytes, "after close")?;
    drop(log);
    let clean = OpenOptions {
        clean_shutdown: true,
        log_start_offset: Some(lso),
        ..OpenOptions::default()
    };
    let log = Log::open(dir, "p", 0, config(case), clean)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        log.recovery_point() == log.high_watermark(),
        "clean reopen: recovery point {}",
        log.recovery_point()
    );
    check_log(&log, case, lso, "clean reopen").await?;

    // Unclean: the log is dropped without close and every segment is scanned again.
    let (index_before, hw) = (snapshot_indexes(dir, &files), log.high_watermark());
    drop(log);
    let unclean = OpenOptions {
        recovery_point: Some(0),
        log_start_offset: Some(lso),
        ..OpenOptions::default()
    };
    let log = Log::open(dir, "p", 0, config(case), unclean)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        log.high_watermark() == hw,
        "unclean reopen lost data: {} of {hw}",
        log.high_watermark()
    );
    ensure!(
        log.recovery_point() == hw,
        "unclean reopen: recovery point {}",
        log.recovery_point()
    );
    check_log(&log, case, lso, "unclean reopen").await?;
    // Recovery rewrote the closed segments' indexes exactly as the rolls had written them.
    let closed = files.len().saturating_sub(1);
    ensure!(
        snapshot_indexes(dir, &files[..closed]) == index_before[..closed * 2],
        "indexes rebuilt by recovery differ from those written at roll"
    );

    // And the log goes on where it ended.
    let info = log
        .append(batch_at(&record_values(2, 10, 0), &[1, 2]), false)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        info.base_offset == hw,
        "append after recovery at {}",
        info.base_offset
    );
    Ok(())
}

fn snapshot_indexes(dir: &Path, files: &[SegmentFile]) -> Vec<Vec<u8>> {
    files
        .iter()
        .flat_map(|f| {
            ["index", "timeindex"].map(|ext| {
                std::fs::read(dir.join(runnel_log::file_name(f.base, ext))).unwrap_or_default()
            })
        })
        .collect()
}

proptest! {
    // 24 cases keep the suite quick; PROPTEST_CASES=1000 runs a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn index_lookups_agree_with_a_linear_scan(case in arb_case()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let result = runnel_runtime::run_local(move || async move { run_case(&dir, &case).await });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
