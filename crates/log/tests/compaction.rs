//! The log cleaner on one partition log: what stays (the latest record of each key, at its
//! offset; tombstones until their horizon; a producer's last batch), what goes, the files
//! shrinking, and a crash at each step of the swap leaving the old or the new segments.

mod common;

use bytes::BytesMut;
use common::*;
use runnel_log::clean::{CleanContext, CleanStats, OffsetMap, SwapStep, Throttle};
use runnel_log::{Log, LogConfig, OpenOptions};
use runnel_record::compact::for_each_record;
use runnel_record::recompress::{recompress, Codec};
use runnel_record::{verify_stored, BatchHeader, Batches, Compression};
use std::collections::BTreeMap;
use std::path::Path;

fn config() -> LogConfig {
    LogConfig {
        compact: true,
        segment_bytes: 4096,
        retention_ms: None,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, "t", 0, config, OpenOptions::default())
        .await
        .unwrap()
}

/// A batch of (key, value) records; None values are tombstones. Compressed with `codec`.
fn keyed(
    records: &[(String, Option<Vec<u8>>)],
    codec: Compression,
    producer: Option<(i64, i32)>,
) -> BytesMut {
    let ts = now_ms();
    let mut b = runnel_record::builder::BatchBuilder::new(ts);
    if let Some((pid, seq)) = producer {
        b = b.producer(pid, 0, seq);
    }
    for (i, (k, v)) in records.iter().enumerate() {
        b.append(
            ts + i as i64,
            Some(k.as_bytes()),
            v.as_deref(),
            &[(b"h", Some(b"x"))],
        );
    }
    let mut out = b.build();
    if codec != Compression::None {
        let h = BatchHeader::parse(&out).unwrap();
        out = recompress(
            &out,
            &h,
            Codec {
                compression: codec,
                level: None,
            },
            1 << 24,
        )
        .unwrap()
        .unwrap();
    }
    BytesMut::from(&out[..])
}

/// Every record in the segment files, in file order: (offset, key, value, headers).
type Rec = (i64, Vec<u8>, Option<Vec<u8>>, usize);

fn records_on_disk(log: &Log) -> Vec<Rec> {
    let mut out = Vec::new();
    for base in log.segment_base_offsets() {
        let bytes = std::fs::read(log.dir().join(runnel_log::file_name(base, "log"))).unwrap();
        for b in Batches::new(&bytes) {
            let (at, h) = b.unwrap();
            let batch = &bytes[at..at + h.total_len()];
            verify_stored(batch).unwrap();
            if h.is_control() {
                continue;
            }
            for_each_record(batch, &h, 1 << 24, |r| {
                out.push((
                    r.offset,
                    r.key.unwrap().to_vec(),
                    r.value.map(<[u8]>::to_vec),
                    r.headers,
                ))
            })
            .unwrap();
        }
    }
    out
}

fn files_size(log: &Log) -> u64 {
    log.segment_base_offsets()
        .iter()
        .map(|b| {
            std::fs::metadata(log.dir().join(runnel_log::file_name(*b, "log")))
                .unwrap()
                .len()
        })
        .sum()
}

async fn clean_at(log: &Log, now: i64, crash_after: Option<SwapStep>) -> Option<CleanStats> {
    let range = log.cleanable(now).await.unwrap()?;
    let mut map = OffsetMap::new(1 << 20, (range.end - range.first_dirty) as u64);
    let mut throttle = Throttle::new(f64::INFINITY);
    let mut ctx = CleanContext {
        now_ms: now,
        map: &mut map,
        throttle: &mut throttle,
        crash_after,
    };
    Some(log.clean(range, &mut ctx).await.unwrap())
}

/// Writes `updates` updates over `keys` keys (codecs in turn) and returns each key's latest
/// (offset, value).
async fn write_updates(
    log: &Log,
    updates: usize,
    keys: usize,
) -> BTreeMap<Vec<u8>, (i64, Vec<u8>)> {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Snappy,
    ];
    let mut latest = BTreeMap::new();
    let mut i = 0;
    let mut n = 0;
    while i < updates {
        let recs: Vec<(String, Option<Vec<u8>>)> = (i..(i + 5).min(updates))
            .map(|j| {
                (
                    format!("key-{}", (j * 7) % keys),
                    Some(format!("value-{j}").into_bytes()),
                )
            })
            .collect();
        let info = log
            .append(keyed(&recs, codecs[n % codecs.len()], None), false)
            .await
            .unwrap();
        for (d, (k, v)) in recs.iter().enumerate() {
            latest.insert(
                k.clone().into_bytes(),
                (info.base_offset + d as i64, v.clone().unwrap()),
            );
        }
        i += recs.len();
        n += 1;
    }
    log.roll().await.unwrap();
    latest
}

fn assert_latest_only(got: &[Rec], latest: &BTreeMap<Vec<u8>, (i64, Vec<u8>)>) {
    let offsets: Vec<i64> = got.iter().map(|r| r.0).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets strictly increase"
    );
    let mut seen = BTreeMap::new();
    for (offset, key, value, headers) in got {
        assert_eq!(*headers, 1, "headers kept");
        assert!(
            seen.insert(key.clone(), (*offset, value.clone().unwrap()))
                .is_none(),
            "one record per key"
        );
    }
    assert_eq!(&seen, latest);
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key_at_its_offset_and_shrinks_the_files() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), config()).await;
        let latest = write_updates(&log, 3_000, 40).await;
        let before = files_size(&log);
        let segments_before = log.segment_base_offsets().len();
        let stats = clean_at(&log, now_ms(), None).await.expect("cleanable");
        assert_eq!(
            stats.end,
            log.segment_base_offsets().last().copied().unwrap()
        );
        assert!(stats.records_removed >= 3_000 - 40, "{stats:?}");
        assert_latest_only(&records_on_disk(&log), &latest);
        let after = files_size(&log);
        assert!(after * 10 < before, "{before} -> {after} bytes");
        // Reads from any offset still work (gaps are skipped), and a reopened log agrees.
        let plan = log.read(0, 1 << 20, true).await.unwrap();
        assert!(plan.len > 0);
        log.close().await.unwrap();
        let log = open(tmp.path(), config()).await;
        assert_latest_only(&records_on_disk(&log), &latest);
        assert_eq!(log.log_end_offset(), 3_000);
        // The next pass merges the small cleaned segments (up to segment.bytes).
        let mut latest = latest;
        latest.extend(write_updates(&log, 200, 40).await);
        clean_at(&log, now_ms(), None).await.expect("cleanable");
        assert_latest_only(&records_on_disk(&log), &latest);
        assert!(
            log.segment_base_offsets().len() < segments_before / 4,
            "small cleaned segments merge: {} of {segments_before}",
            log.segment_base_offsets().len()
        );
        // Nothing new: nothing to clean.
        assert!(log.cleanable(now_ms()).await.unwrap().is_none());
    });
}

#[test]
fn a_tombstone_stays_until_its_delete_horizon_and_the_key_stays_gone() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            delete_retention_ms: 3_600_000,
            ..config()
        };
        let log = open(tmp.path(), cfg).await;
        let put = |k: &str, v: Option<&str>| (k.to_string(), v.map(|v| v.as_bytes().to_vec()));
        log.append(
            keyed(
                &[put("a", Some("1")), put("b", Some("1"))],
                Compression::None,
                None,
            ),
            false,
        )
        .await
        .unwrap();
        log.append(keyed(&[put("a", None)], Compression::Gzip, None), false)
            .await
            .unwrap();
        log.roll().await.unwrap();
        let now = now_ms();
        clean_at(&log, now, None).await.unwrap();
        let keys = |log: &Log| {
            records_on_disk(log)
                .into_iter()
                .map(|r| (String::from_utf8(r.1).unwrap(), r.2.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&log),
            vec![("b".into(), true), ("a".into(), false)],
            "the tombstone is served"
        );
        // Nothing dirty: no pass is due until the tombstone's horizon has passed.
        assert!(log.cleanable(now + 1_000).await.unwrap().is_none());
        assert!(log
            .cleanable(now + 3_600_000 + 1)
            .await
            .unwrap()
            .is_some_and(|c| c.horizon_due));
        // More writes, cleaned before the horizon: the tombstone stays.
        put_and_roll(&log, "c", "1").await;
        clean_at(&log, now + 1_000, None).await.unwrap();
        assert!(keys(&log).contains(&("a".into(), false)));
        // Past the horizon: gone, and "a" stays gone.
        put_and_roll(&log, "d", "1").await;
        clean_at(&log, now + 3_600_000 + 1, None).await.unwrap();
        assert_eq!(
            keys(&log),
            vec![("b".into(), true), ("c".into(), true), ("d".into(), true)]
        );
        // Nothing left for a horizon to remove: no pass is due (not one every backoff).
        assert!(log
            .cleanable(now + 100 * 3_600_000)
            .await
            .unwrap()
            .is_none());
    });
}

#[test]
fn a_producers_last_batch_stays_so_its_retry_is_still_a_duplicate() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), config()).await;
        let first = keyed(
            &[("k".into(), Some(b"1".to_vec()))],
            Compression::None,
            Some((9, 0)),
        );
        let last = keyed(
            &[("k".into(), Some(b"2".to_vec()))],
            Compression::None,
            Some((9, 1)),
        );
        log.append(first, false).await.unwrap();
        log.append(last.clone(), false).await.unwrap();
        // Another producer overwrites the key: the idempotent producer's records all go.
        put_and_roll(&log, "k", "3").await;
        clean_at(&log, now_ms(), None).await.unwrap();
        assert_eq!(records_on_disk(&log).len(), 1);
        log.close().await.unwrap();
        let log = open(tmp.path(), config()).await;
        let info = log.append(last, false).await.unwrap();
        assert_eq!(
            info.base_offset, 1,
            "a retry of the last batch is answered, not written"
        );
        assert_eq!(log.log_end_offset(), 3);
    });
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), config()).await;
        let mut b = runnel_record::builder::BatchBuilder::new(now_ms());
        b.append(now_ms(), None, Some(b"v"), &[]);
        let err = log
            .append(BytesMut::from(&b.build()[..]), false)
            .await
            .unwrap_err();
        assert_eq!(err.kafka_error_code(), 87, "{err}");
        // Compressed too.
        let h = BatchHeader::parse(&b.build()).unwrap();
        let z = recompress(
            &b.build(),
            &h,
            Codec {
                compression: Compression::Zstd,
                level: None,
            },
            1 << 20,
        )
        .unwrap()
        .unwrap();
        let err = log.append(BytesMut::from(&z[..]), false).await.unwrap_err();
        assert_eq!(err.kafka_error_code(), 87, "{err}");
    });
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_a_consistent_log_with_every_latest_value() {
    for step in [SwapStep::Cleaned, SwapStep::Swap, SwapStep::OldRemoved] {
        run(move || async move {
            let tmp = tempfile::tempdir().unwrap();
            let log = open(tmp.path(), config()).await;
            let latest = write_updates(&log, 1_500, 30).await;
            let all_before = records_on_disk(&log);
            clean_at(&log, now_ms(), Some(step)).await.unwrap();
            // The process dies here: the log is opened again without a clean close.
            let log = Log::open(tmp.path(), "t", 0, config(), OpenOptions::default())
                .await
                .unwrap();
            let got = records_on_disk(&log);
            let offsets: Vec<i64> = got.iter().map(|r| r.0).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{step:?}: offsets increase"
            );
            let mut last: BTreeMap<Vec<u8>, (i64, Vec<u8>)> = BTreeMap::new();
            for (o, k, v, _) in &got {
                last.insert(k.clone(), (*o, v.clone().unwrap()));
            }
            assert_eq!(last, latest, "{step:?}: every latest value present");
            if step == SwapStep::Cleaned {
                assert_eq!(got, all_before, "not committed: the old segments");
            } else {
                assert!(
                    got.len() < all_before.len(),
                    "{step:?}: committed: the first group is cleaned"
                );
            }
            let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            // And a full pass from there cleans it all.
            clean_at(&log, now_ms(), None).await;
            assert_latest_only(&records_on_disk(&log), &latest);
        });
    }
}

/// A transactional batch of (key, value) records from producer `pid` (epoch 0).
fn txn(pid: i64, seq: i32, records: &[(&str, &str)]) -> BytesMut {
    let mut b = runnel_record::builder::BatchBuilder::new(now_ms()).producer(pid, 0, seq);
    for (k, v) in records {
        b.append(now_ms(), Some(k.as_bytes()), Some(v.as_bytes()), &[]);
    }
    let mut bytes = b.transactional().build();
    runnel_record::set_crc(&mut bytes);
    BytesMut::from(&bytes[..])
}

fn markers_on_disk(log: &Log) -> usize {
    let mut n = 0;
    for base in log.segment_base_offsets() {
        let bytes = std::fs::read(log.dir().join(runnel_log::file_name(base, "log"))).unwrap();
        n += Batches::new(&bytes)
            .filter(|b| b.as_ref().is_ok_and(|(_, h)| h.is_control()))
            .count();
    }
    n
}

/// One uncompressed record `key` = `value`, then a roll (the record's segment closes).
async fn put_and_roll(log: &Log, key: &str, value: &str) {
    let rec = [(key.to_string(), Some(value.as_bytes().to_vec()))];
    log.append(keyed(&rec, Compression::None, None), false)
        .await
        .unwrap();
    log.roll().await.unwrap();
}

fn cfg_again() -> LogConfig {
    LogConfig {
        delete_retention_ms: 1_000,
        ..config()
    }
}

#[test]
fn aborted_records_go_and_markers_go_after_their_horizon_once_their_records_are_gone() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            delete_retention_ms: 1_000,
            ..config()
        };
        let log = open(tmp.path(), cfg).await;
        let verified = |pid| runnel_log::Origin::Verified {
            producer_id: pid,
            epoch: 0,
        };
        // Producer 1 commits a, b; producer 2's c, d are aborted; then a is overwritten.
        log.append_checked(txn(1, 0, &[("a", "1"), ("b", "1")]), false, verified(1))
            .await
            .unwrap();
        log.append_checked(txn(2, 0, &[("c", "1"), ("d", "1")]), false, verified(2))
            .await
            .unwrap();
        log.append_marker(1, 0, true, 0, false).await.unwrap();
        log.append_marker(2, 0, false, 0, false).await.unwrap();
        put_and_roll(&log, "a", "2").await;
        let now = now_ms();
        clean_at(&log, now, None).await.unwrap();
        let keys: Vec<(String, Vec<u8>)> = records_on_disk(&log)
            .into_iter()
            .map(|r| (String::from_utf8(r.1).unwrap(), r.2.unwrap()))
            .collect();
        assert_eq!(
            keys,
            vec![("b".into(), b"1".to_vec()), ("a".into(), b"2".to_vec())],
            "aborted records gone, the committed b kept"
        );
        assert_eq!(markers_on_disk(&log), 2, "markers stay until their horizon");
        // Past the horizon: the abort marker (no records left) goes; the commit marker of b
        // stays while b does.
        put_and_roll(&log, "e", "1").await;
        clean_at(&log, now + 2_000, None).await.unwrap();
        assert_eq!(markers_on_disk(&log), 1);
        // Its aborted transaction is no longer indexed either: a read_committed reader told
        // of it would skip producer 2's batches until an abort marker that is gone.
        assert!(log.aborted_txns(0, i64::MAX).is_empty());
        // b overwritten: its commit marker goes too, after its horizon.
        put_and_roll(&log, "b", "2").await;
        clean_at(&log, now + 4_000, None).await.unwrap();
        put_and_roll(&log, "f", "1").await;
        clean_at(&log, now + 6_000, None).await.unwrap();
        assert_eq!(markers_on_disk(&log), 0);
        // A read_committed reader of what is left sees no aborted record.
        let plan = log
            .read_upto(0, 1 << 20, true, runnel_log::Upto::Stable)
            .await
            .unwrap();
        assert!(plan.len > 0);
        // Segments stay contiguous (a gap would read as a lost tail): the log opens again,
        // cleanly closed or not, with everything.
        let before = records_on_disk(&log);
        let end = log.log_end_offset();
        drop(log);
        let log = Log::open(tmp.path(), "t", 0, cfg_again(), OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(records_on_disk(&log), before);
        assert_eq!(log.log_end_offset(), end);
    });
}

#[test]
fn the_throttle_holds_a_pass_to_its_byte_rate() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), config()).await;
        write_updates(&log, 3_000, 40).await;
        let range = log.cleanable(now_ms()).await.unwrap().unwrap();
        let size = log.size_bytes();
        let mut map = OffsetMap::new(1 << 20, 3_000);
        // Reading the log twice (map, copy) at 1 MB/s.
        let mut throttle = Throttle::new(1_000_000.0);
        let started = std::time::Instant::now();
        let stats = log
            .clean(
                range,
                &mut CleanContext {
                    now_ms: now_ms(),
                    map: &mut map,
                    throttle: &mut throttle,
                    crash_after: None,
                },
            )
            .await
            .unwrap();
        let floor = (stats.bytes_read + stats.bytes_written) as f64 / 1_000_000.0;
        assert!(stats.bytes_read >= size / 2);
        // (A lower bound only: a slow machine takes longer, never shorter.)
        assert!(
            started.elapsed().as_secs_f64() >= floor * 0.9,
            "{:?} for {floor} s worth of bytes",
            started.elapsed()
        );
    });
}
