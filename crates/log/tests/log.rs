mod common;

use bytes::BytesMut;
use common::{batch, batch_at, batch_with, now_ms, record_values, run, yield_now};
use runnel_log::{Log, LogConfig, LogError, OpenOptions, ReadPlan};
use runnel_record::{Batches, Records, HEADER_LEN};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 512,
        preallocate: false,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig, opts: OpenOptions) -> Result<Log, LogError> {
    Log::open(dir, "t", 0, config, opts).await
}

fn plan_bytes(plan: &ReadPlan) -> Vec<u8> {
    let file = std::fs::File::from(plan.file.try_clone().unwrap());
    let mut buf = vec![0u8; plan.len as usize];
    file.read_exact_at(&mut buf, plan.position).unwrap();
    buf
}

/// Every record from `from` to the high watermark as (offset, value), read through plans of
/// at most `max_bytes`.
async fn read_all(log: &Log, from: i64, max_bytes: u64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.high_watermark() {
        let plan = log.read(next, max_bytes, true).await.unwrap();
        assert!(plan.len > 0, "no progress at offset {next}");
        let bytes = plan_bytes(&plan);
        let mut batches = Batches::new(&bytes);
        for b in &mut batches {
            let (pos, h) = b.expect("plans hold whole batches");
            runnel_record::verify_stored(&bytes[pos..pos + h.total_len()]).unwrap();
            let records = &bytes[pos + HEADER_LEN..pos + h.total_len()];
            for r in Records::new(records) {
                let r = r.unwrap();
                let offset = h.base_offset + i64::from(r.offset_delta);
                if offset >= next {
                    out.push((offset, r.value.unwrap().to_vec()));
                }
            }
            next = h.next_offset();
        }
        assert_eq!(
            batches.position(),
            bytes.len(),
            "plan ends on a batch boundary"
        );
    }
    out
}

fn values(n: usize, size: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..size)
                .map(|j| seed.wrapping_add((i * 7 + j) as u8))
                .collect()
        })
        .collect()
}

#[test]
fn append_and_read_round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path, small_config(8 << 10), OpenOptions::default())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..120u8 {
            let vals = values(1 + (i as usize % 4), 100 + i as usize, i);
            let info = log
                .append(batch_with(&vals, 1_000 + i64::from(i)), false)
                .await
                .unwrap();
            assert_eq!(info.base_offset, expected.len() as i64);
            assert_eq!(info.last_offset, (expected.len() + vals.len()) as i64 - 1);
            for v in vals {
                expected.push((expected.len() as i64, v));
            }
        }
        assert!(log.segment_base_offsets().len() > 3, "segments rolled");
        assert_eq!(log.high_watermark(), expected.len() as i64);
        for max_bytes in [1, 700, 4096, 1 << 20] {
            assert_eq!(
                read_all(&log, 0, max_bytes).await,
                expected,
                "max_bytes {max_bytes}"
            );
        }
        // Restart (clean) keeps every record, and appends continue the offsets.
        log.close().await.unwrap();
        let log = open(
            &path,
            small_config(8 << 10),
            OpenOptions {
                clean_shutdown: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(log.high_watermark(), expected.len() as i64);
        assert_eq!(read_all(&log, 0, 4096).await, expected);
        let info = log.append(batch(2, 10, 9, 5_000), false).await.unwrap();
        assert_eq!(info.base_offset, expected.len() as i64);
    });
}

#[test]
fn fetch_from_middle_of_batch_returns_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        log.append(batch(5, 50, 1, 100), false).await.unwrap();
        log.append(batch(5, 50, 2, 200), false).await.unwrap();
        let plan = log.read(7, 1 << 20, true).await.unwrap();
        let bytes = plan_bytes(&plan);
        let (_, h) = Batches::new(&bytes).next().unwrap().unwrap();
        assert_eq!(h.base_offset, 5, "the batch holding offset 7 starts at 5");
        assert_eq!(plan.len as usize, h.total_len());
        assert_eq!(plan.high_watermark, 10);
    });
}

#[test]
fn read_plan_respects_max_bytes_and_returns_one_oversized_batch() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        let a = log.append(batch(1, 1000, 1, 1), false).await.unwrap();
        log.append(batch(1, 1000, 2, 2), false).await.unwrap();
        let one = log.read(a.base_offset, 10, true).await.unwrap();
        assert!(
            one.len > 10,
            "at least one whole batch even when it exceeds max_bytes"
        );
        let none = log.read(a.base_offset, 10, false).await.unwrap();
        assert_eq!(none.len, 0, "without min_one_batch nothing fits");
        let first = log.read(0, one.len + 500, true).await.unwrap();
        assert_eq!(
            first.len, one.len,
            "stops at the last whole batch within max_bytes"
        );
        let both = log.read(0, 2 * one.len, true).await.unwrap();
        assert_eq!(both.len, 2 * one.len);
    });
}

#[test]
fn offsets_outside_the_log_are_out_of_range_and_the_end_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(4096), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..20 {
            log.append(batch(2, 300, i, 1), false).await.unwrap();
        }
        let err = log.read(41, 100, true).await.unwrap_err();
        assert!(matches!(
            err,
            LogError::OffsetOutOfRange {
                offset: 41,
                log_end_offset: 40,
                ..
            }
        ));
        assert_eq!(err.kafka_error_code(), 1);
        assert_eq!(log.read(40, 100, true).await.unwrap().len, 0);
        let lso = log.delete_records(10).await.unwrap();
        assert_eq!(lso, 10);
        assert!(matches!(
            log.read(9, 100, true).await.unwrap_err(),
            LogError::OffsetOutOfRange {
                log_start_offset: 10,
                ..
            }
        ));
        assert_eq!(read_all(&log, 10, 1000).await.len(), 30);
        assert!(
            log.delete_records(41).await.is_err(),
            "past the high watermark"
        );
    });
}

#[test]
fn invalid_batch_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        log.append(batch(1, 10, 1, 1), false).await.unwrap();
        let size = log.size_bytes();
        // A good batch followed by a corrupt one: the whole request is refused.
        let mut records = batch(2, 10, 2, 1);
        let mut bad = batch(2, 10, 3, 1);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        records.extend_from_slice(&bad);
        let err = log.append(records, false).await.unwrap_err();
        assert_eq!(err.kafka_error_code(), 2, "CORRUPT_MESSAGE: {err}");
        let err = log
            .append(BytesMut::from(&b"garbage"[..]), false)
            .await
            .unwrap_err();
        assert_eq!(err.kafka_error_code(), 2, "{err}");
        assert_eq!(log.size_bytes(), size);
        assert_eq!(log.high_watermark(), 1);
    });
}

#[test]
fn concurrent_appends_are_group_committed_with_unique_offsets() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..64u8)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(
                    async move { log.append(batch(3, 20, i, 1), false).await.unwrap() },
                )
            })
            .collect();
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await.base_offset);
        }
        bases.sort();
        assert_eq!(bases, (0..64).map(|i| i * 3).collect::<Vec<_>>());
        let writes = log.stats().writes.get();
        assert!(writes < 64, "appends merged into fewer writes ({writes})");
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 192);
    });
}

#[test]
fn flush_messages_policy_syncs_every_n_records_and_moves_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let config = LogConfig {
            flush_messages: Some(10),
            ..small_config(1 << 20)
        };
        let log = open(dir.path(), config, OpenOptions::default())
            .await
            .unwrap();
        for i in 0..25 {
            log.append(batch(1, 10, i, 1), false).await.unwrap();
        }
        assert_eq!(log.stats().fdatasyncs.get(), 2);
        assert_eq!(log.recovery_point(), 20);
        // A durable append syncs regardless of the policy.
        log.append(batch(1, 10, 0, 1), true).await.unwrap();
        assert_eq!(log.stats().fdatasyncs.get(), 3);
        assert_eq!(log.recovery_point(), 26);
    });
}

#[test]
fn default_policy_leaves_flushing_to_the_os_and_flush_ms_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..50 {
            log.append(batch(1, 10, i, 1), false).await.unwrap();
        }
        assert_eq!(log.stats().fdatasyncs.get(), 0);
        assert!(
            !log.flush_if_due(now_ms() + 1_000_000).await.unwrap(),
            "no flush.ms set"
        );
        let config = LogConfig {
            flush_ms: Some(1000),
            ..small_config(1 << 20)
        };
        log.set_config(config).unwrap();
        assert!(!log.flush_if_due(now_ms()).await.unwrap(), "not due yet");
        assert!(log.flush_if_due(now_ms() + 1000).await.unwrap());
        assert_eq!(log.stats().fdatasyncs.get(), 1);
        assert_eq!(log.recovery_point(), 50);
        assert!(
            !log.flush_if_due(now_ms() + 5000).await.unwrap(),
            "nothing left to flush"
        );
    });
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(runnel_log::file_name(base, ext))
}

#[test]
fn recovery_after_truncating_last_batch_at_every_byte_keeps_exactly_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let src = dir.path().join("src");
        let log = open(&src, small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..30 {
            log.append(batch(2, 40, i, 1), false).await.unwrap();
        }
        let before_last = log.size_bytes();
        log.append(batch(3, 30, 99, 1), false).await.unwrap();
        let full = std::fs::read(segment_path(&src, 0, "log")).unwrap();
        let expected = read_all(&log, 0, 1 << 20).await;
        drop(log);
        for cut in before_last..full.len() as u64 {
            let d = dir.path().join(format!("cut-{cut}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(segment_path(&d, 0, "log"), &full[..cut as usize]).unwrap();
            let log = open(
                &d,
                small_config(1 << 20),
                OpenOptions {
                    recovery_point: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(log.high_watermark(), 60, "cut at {cut}");
            assert_eq!(log.size_bytes(), before_last);
            assert_eq!(
                std::fs::metadata(segment_path(&d, 0, "log")).unwrap().len(),
                before_last
            );
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected[..60]);
            // The log takes appends right where the valid prefix ended.
            assert_eq!(
                log.append(batch(1, 5, 1, 1), false)
                    .await
                    .unwrap()
                    .base_offset,
                60
            );
            drop(log);
            std::fs::remove_dir_all(&d).unwrap();
        }
    });
}

#[test]
fn recovery_truncates_garbage_appended_to_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let path = dir.path().join("t-0");
        let log = open(&path, small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..10 {
            log.append(batch(2, 100, i, 1), false).await.unwrap();
        }
        let size = log.size_bytes();
        let expected = read_all(&log, 0, 1 << 20).await;
        drop(log);
        for garbage in [
            vec![0u8; 5000],
            (0..3000).map(|i| (i * 31) as u8).collect::<Vec<u8>>(),
        ] {
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(segment_path(&path, 0, "log"))
                .unwrap();
            f.write_all_at(&garbage, size).unwrap();
            let log = open(
                &path,
                small_config(1 << 20),
                OpenOptions {
                    recovery_point: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(log.size_bytes(), size);
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            assert_eq!(
                log.recovery_point(),
                20,
                "recovered data is synced and checkpointable"
            );
        }
    });
}

#[test]
fn corruption_below_the_recovery_point_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..10 {
            log.append(batch(2, 100, i, 1), false).await.unwrap();
        }
        log.flush().await.unwrap();
        let rp = log.recovery_point();
        drop(log);
        let seg = segment_path(dir.path(), 0, "log");
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[600] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let err = open(
            dir.path(),
            small_config(1 << 20),
            OpenOptions {
                recovery_point: Some(rp),
                ..Default::default()
            },
        )
        .await
        .err()
        .expect("must refuse");
        assert!(
            matches!(err, LogError::CorruptBelowRecoveryPoint { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was truncated");
    });
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let path = dir.path().join("t-0");
        let cfg = || small_config(16 << 10);
        let log = open(&path, cfg(), OpenOptions::default()).await.unwrap();
        for i in 0..100 {
            log.append(batch(2, 150, i, 1_000 + i64::from(i)), false)
                .await
                .unwrap();
        }
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3);
        let expected = read_all(&log, 0, 3000).await;
        log.close().await.unwrap();
        let index = segment_path(&path, bases[1], "index");
        let good = std::fs::read(&index).unwrap();
        assert!(good.len() >= 16, "closed segment has an index");
        std::fs::remove_file(&index).unwrap();
        std::fs::write(segment_path(&path, bases[0], "index"), b"not an index").unwrap();
        std::fs::remove_file(segment_path(&path, bases[2], "timeindex")).unwrap();
        let log = open(
            &path,
            cfg(),
            OpenOptions {
                clean_shutdown: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&index).unwrap(), good, "rebuilt identically");
        assert_eq!(read_all(&log, 0, 3000).await, expected);
        for (offset, _) in expected.iter().step_by(17) {
            let plan = log.read(*offset, 1, true).await.unwrap();
            let bytes = plan_bytes(&plan);
            let (_, h) = Batches::new(&bytes).next().unwrap().unwrap();
            assert!(h.base_offset <= *offset && *offset <= h.last_offset());
        }
        let by_time = log.offset_for_timestamp(1_050).await.unwrap().unwrap();
        assert_eq!(
            by_time.offset, 99,
            "batch 49 holds t=1049 (offset 98) and t=1050 (offset 99)"
        );
    });
}

#[test]
fn retention_by_time_deletes_old_segments_and_keeps_reads_correct() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let now = now_ms();
        let day = 24 * 3600 * 1000;
        let cfg = LogConfig {
            retention_ms: Some(day as u64),
            ..small_config(4 << 10)
        };
        let log = open(dir.path(), cfg, OpenOptions::default()).await.unwrap();
        // 30 batches three days old, then 30 fresh ones.
        for i in 0..60 {
            let ts = if i < 30 { now - 3 * day } else { now };
            log.append(batch(1, 500, i, ts), false).await.unwrap();
        }
        let before = log.segment_base_offsets();
        let deleted = log.apply_retention(now).await.unwrap();
        let after = log.segment_base_offsets();
        assert_eq!(before.len() - after.len(), deleted);
        assert!(deleted > 0);
        assert!(after[0] <= 30, "no fresh record was deleted");
        assert!(log.log_start_offset() > 0 && log.log_start_offset() == after[0]);
        for b in &before[..deleted] {
            assert!(!segment_path(dir.path(), *b, "log").exists());
        }
        let rest = read_all(&log, log.log_start_offset(), 4096).await;
        assert_eq!(rest.first().unwrap().0, log.log_start_offset());
        assert_eq!(rest.last().unwrap().0, 59);
        // Everything expired: the active segment is rolled and deleted too.
        let gone = log.apply_retention(now + 2 * day).await.unwrap();
        assert!(gone > 0);
        assert_eq!(log.log_start_offset(), 60);
        assert_eq!(log.high_watermark(), 60);
        assert_eq!(
            log.append(batch(1, 5, 1, now), false)
                .await
                .unwrap()
                .base_offset,
            60
        );
    });
}

#[test]
fn retention_by_size_deletes_oldest_segments_beyond_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let cfg = LogConfig {
            retention_bytes: Some(10 << 10),
            retention_ms: None,
            ..small_config(4 << 10)
        };
        let log = open(dir.path(), cfg, OpenOptions::default()).await.unwrap();
        for i in 0..100 {
            log.append(batch(1, 400, i, now_ms()), false).await.unwrap();
        }
        let total = log.size_bytes();
        assert!(total > 30 << 10);
        log.apply_retention(now_ms()).await.unwrap();
        let kept = log.size_bytes();
        assert!(kept >= 10 << 10, "keeps at least retention.bytes ({kept})");
        assert!(kept < (10 << 10) + (4 << 10), "deletes all it may ({kept})");
        let rest = read_all(&log, log.log_start_offset(), 4096).await;
        assert_eq!(rest.len() as i64, 100 - log.log_start_offset());
    });
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(4096), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..40 {
            // batch i holds 3 records at 100*i, 100*i+1, 100*i+2
            log.append(batch(3, 100, i as u8, 100 * i), false)
                .await
                .unwrap();
        }
        let at = |ts| {
            let log = log.clone();
            async move {
                log.offset_for_timestamp(ts)
                    .await
                    .unwrap()
                    .map(|t| (t.offset, t.timestamp))
            }
        };
        assert_eq!(at(0).await, Some((0, 0)));
        assert_eq!(at(1001).await, Some((31, 1001)));
        assert_eq!(at(1003).await, Some((33, 1100)));
        assert_eq!(at(3902).await, Some((119, 3902)));
        assert_eq!(at(3903).await, None, "after the last record");
        assert_eq!(log.max_timestamp_offset().unwrap().unwrap().offset, 119);
    });
}

#[test]
fn group_commit_never_grows_a_segment_past_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let segment_bytes = 4096;
        let log = open(
            dir.path(),
            small_config(segment_bytes),
            OpenOptions::default(),
        )
        .await
        .unwrap();
        // 64 appends of ~700 bytes queued at once: one group, ~11 segments' worth.
        let tasks: Vec<_> = (0..64u8)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append(batch(2, 300, i, 1), false).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(log.stats().writes.get() < 64, "appends were still grouped");
        let bases = log.segment_base_offsets();
        assert!(bases.len() > 5, "{bases:?}");
        for base in bases {
            let len = std::fs::metadata(segment_path(dir.path(), base, "log"))
                .unwrap()
                .len();
            assert!(len <= segment_bytes, "segment {base} holds {len} bytes");
        }
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 128);
    });
}

#[test]
fn an_append_racing_close_is_refused_or_synced_by_it() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        for i in 0..10 {
            log.append(batch(2, 1000, i, 1), false).await.unwrap();
        }
        let closing = {
            let log = log.clone();
            glommio::spawn_local(async move { log.close().await })
        };
        // close() queues its flush and the writer starts the fdatasync; then a produce comes.
        yield_now().await;
        yield_now().await;
        let late = log.append(batch(1, 10, 1, 1), false).await;
        closing.await.unwrap();
        match late {
            Ok(info) => assert!(
                log.recovery_point() > info.last_offset,
                "close returned without syncing acknowledged offset {} (recovery point {})",
                info.last_offset,
                log.recovery_point()
            ),
            Err(e) => assert!(matches!(e, LogError::Closed(_)), "{e}"),
        }
        assert!(log.append(batch(1, 10, 1, 1), false).await.is_err());
    });
}

#[test]
fn recovery_point_never_stays_past_the_recovered_log_end() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let cfg = || small_config(1 << 20);
        let seg = segment_path(dir.path(), 0, "log");
        let log = open(dir.path(), cfg(), OpenOptions::default())
            .await
            .unwrap();
        let mut half = 0;
        for i in 0..10 {
            log.append(batch(2, 100, i, 1), false).await.unwrap();
            if i == 4 {
                half = log.size_bytes();
            }
        }
        log.flush().await.unwrap();
        assert_eq!(log.recovery_point(), 20);
        drop(log);
        // The file ends early, on a batch boundary (flushed data lost below the log): nothing
        // to truncate, offsets 10..20 are simply gone.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(half)
            .unwrap();
        let opts = |rp| OpenOptions {
            recovery_point: Some(rp),
            ..Default::default()
        };
        let log = open(dir.path(), cfg(), opts(20)).await.unwrap();
        assert_eq!(log.high_watermark(), 10);
        assert!(
            log.recovery_point() <= 10,
            "recovery point {}",
            log.recovery_point()
        );
        // Offsets 10..20 are appended again, not flushed, and the last write is torn by a
        // crash: recovery must truncate it, not refuse it as flushed data.
        for i in 0..5 {
            log.append(batch(2, 100, i, 1), false).await.unwrap();
        }
        let (rp, size) = (log.recovery_point(), log.size_bytes());
        drop(log);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(size - 10)
            .unwrap();
        let log = open(dir.path(), cfg(), opts(rp)).await.unwrap();
        assert_eq!(log.high_watermark(), 18);
    });
}

#[test]
fn offset_for_timestamp_looks_past_records_below_the_log_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        // Segment 0: offsets 0-2 at 300, 100, 100 (newest first), 3 at 1000, 4 at 200.
        // Segment 5: offset 5 at 500.
        log.append(batch_at(&record_values(3, 10, 0), &[300, 100, 100]), false)
            .await
            .unwrap();
        log.append(batch_at(&record_values(1, 10, 1), &[1000]), false)
            .await
            .unwrap();
        log.append(batch_at(&record_values(1, 10, 2), &[200]), false)
            .await
            .unwrap();
        log.roll().await.unwrap();
        log.append(batch_at(&record_values(1, 10, 3), &[500]), false)
            .await
            .unwrap();
        let at = |ts| {
            let log = log.clone();
            async move {
                let t = log.offset_for_timestamp(ts).await.unwrap();
                t.map(|t| (t.offset, t.timestamp))
            }
        };
        assert_eq!(at(150).await, Some((0, 300)));
        // Offset 0 goes: in its batch no record from offset 1 on reaches 150, the next batch's does.
        assert_eq!(log.delete_records(1).await.unwrap(), 1);
        assert_eq!(at(150).await, Some((3, 1000)));
        // Offsets 0-3 go: nothing left in segment 0 reaches 400, segment 5 does.
        assert_eq!(log.delete_records(4).await.unwrap(), 4);
        assert_eq!(log.segment_base_offsets(), vec![0, 5]);
        assert_eq!(at(400).await, Some((5, 500)));
        assert_eq!(at(150).await, Some((4, 200)));
        assert_eq!(at(501).await, None);
    });
}

#[test]
fn max_timestamp_offset_on_a_tie_is_the_first_record_to_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        log.append(batch_at(&record_values(2, 10, 0), &[100, 500]), false)
            .await
            .unwrap();
        log.append(batch_at(&record_values(1, 10, 1), &[500]), false)
            .await
            .unwrap();
        assert_eq!(
            log.max_timestamp_offset().unwrap().unwrap().offset,
            1,
            "within a segment"
        );
        log.roll().await.unwrap();
        log.append(batch_at(&record_values(1, 10, 2), &[500]), false)
            .await
            .unwrap();
        let max = log.max_timestamp_offset().unwrap().unwrap();
        assert_eq!((max.offset, max.timestamp), (1, 500), "across segments");
    });
}

#[test]
fn waits_for_data_that_are_dropped_leave_no_waker_behind() {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    #[derive(Default)]
    struct CountingWake(AtomicUsize);
    impl Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        let log = open(dir.path(), small_config(1 << 20), OpenOptions::default())
            .await
            .unwrap();
        let counter = Arc::new(CountingWake::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        // Long-poll fetches on an idle partition that time out: each wait is polled, maybe
        // again, then dropped.
        for _ in 0..100 {
            let mut wait = Box::pin(log.wait_for_data(0));
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            Arc::strong_count(&counter),
            2,
            "the log holds wakers of dropped waits"
        );
        // A wait still pending is woken by the append that gives it data.
        let mut wait = Box::pin(log.wait_for_data(0));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        log.append(batch(1, 10, 1, 1), false).await.unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        drop(wait);
        assert_eq!(Arc::strong_count(&counter), 2);
    });
}

/// segment.index.bytes: a segment rolls once its offset index (8-byte entries) or time index
/// (12-byte entries) would outgrow it, as Kafka rolls on a full index.
#[test]
fn a_full_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    run(move || async move {
        // Room for 6 offset index entries (48 / 8); each batch of more than 512 bytes
        // adds one (these batches share one timestamp, so the time index stays small).
        let config = LogConfig {
            segment_index_bytes: 48,
            ..small_config(1 << 20)
        };
        let log = open(dir.path(), config, OpenOptions::default())
            .await
            .unwrap();
        for i in 0..40 {
            log.append(batch(1, 600, i, 1), false).await.unwrap();
        }
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 5, "rolled on full indexes: {bases:?}");
        assert!(
            bases.windows(2).all(|w| w[1] - w[0] <= 7),
            "no segment holds more than its index allows: {bases:?}"
        );
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 40);
    });
}

/// file.delete.delay.ms: segments removed below the log start offset are renamed
/// `*.deleted` at once (no longer part of the log) and unlinked after the delay.
#[test]
fn deleted_segments_wait_out_file_delete_delay_as_dot_deleted_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            file_delete_delay_ms: 300,
            ..small_config(2048)
        };
        let log = open(&path, config, OpenOptions::default()).await.unwrap();
        for i in 0..20 {
            log.append(batch(2, 300, i, 1), false).await.unwrap();
        }
        let before = log.segment_base_offsets();
        assert!(before.len() > 3);
        log.delete_records(before[2]).await.unwrap();
        let names = |suffix: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect();
            v.sort();
            v
        };
        let deleted = names(".log.deleted");
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        assert_eq!(log.segment_base_offsets()[0], before[2]);
        assert_eq!(names(".log").len(), before.len() - 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !names(".deleted").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "still there: {:?}",
                names(".deleted")
            );
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            read_all(&log, before[2], 1 << 20).await.len() as i64,
            40 - before[2]
        );
    });
}

/// Disk bytes the file at `path` has allocated (st_blocks).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_busy_log_reserves_blocks_ahead_and_gives_them_back_when_it_rolls() {
    // (Under target/: tmpfs, where /tmp may be, has no unwritten extents to look at.)
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reserve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("t-0");
    let seg0 = segment_path(&path, 0, "log");
    run(move || async move {
        let log = open(&path, small_config(256 << 20), OpenOptions::default())
            .await
            .unwrap();
        // Over a second at several MiB/s: the log's rate is measured, then a reservation of
        // about half a second's bytes is made past the write position.
        let vals = values(64, 1000, 1);
        let start = std::time::Instant::now();
        let deadline = start + std::time::Duration::from_secs(10);
        let mut reserved = false;
        while std::time::Instant::now() < deadline {
            log.append(batch_with(&vals, now_ms()), false)
                .await
                .unwrap();
            for _ in 0..4 {
                yield_now().await;
            }
            let size = std::fs::metadata(&seg0).unwrap().len();
            if start.elapsed().as_millis() > 1100 && allocated(&seg0) >= size + (1 << 20) {
                reserved = true;
                break;
            }
            // About 16 MiB/s.
            glommio::timer::sleep(std::time::Duration::from_millis(4)).await;
        }
        assert!(reserved, "blocks reserved ahead of the writes");
        let size = std::fs::metadata(&seg0).unwrap().len();
        assert!(
            allocated(&seg0) <= size + (32 << 20) + (1 << 20),
            "at most MAX_AHEAD ahead"
        );
        // A roll gives back what lies past the old segment's end (now, or when a reservation
        // still running finishes).
        log.roll().await.unwrap();
        let size = std::fs::metadata(&seg0).unwrap().len();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while allocated(&seg0) >= size + (1 << 20) && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            allocated(&seg0) < size + (1 << 20),
            "reserved blocks given back at the roll"
        );
        // The records are all there.
        assert_eq!(
            read_all(&log, 0, 1 << 20).await.len() as i64,
            log.high_watermark()
        );
        // A reservation left by a run that ended (here: a close) is given back at the next
        // roll of the reopened log too.
        let seg1 = segment_path(&path, log.high_watermark(), "log");
        let start = std::time::Instant::now();
        loop {
            log.append(batch_with(&vals, now_ms()), false)
                .await
                .unwrap();
            yield_now().await;
            let size = std::fs::metadata(&seg1).unwrap().len();
            if start.elapsed().as_millis() > 1100 && allocated(&seg1) >= size + (1 << 20) {
                break;
            }
            assert!(
                start.elapsed().as_secs() < 10,
                "no reservation on the new segment"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(4)).await;
        }
        // (Let a reservation still being made finish before the close.)
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        log.close().await.unwrap();
        let log = open(
            &path,
            small_config(256 << 20),
            OpenOptions {
                clean_shutdown: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let size = std::fs::metadata(&seg1).unwrap().len();
        assert!(
            allocated(&seg1) >= size + (1 << 20),
            "the reservation outlived the close"
        );
        log.roll().await.unwrap();
        assert!(
            allocated(&seg1) < size + (1 << 20),
            "given back at the reopened log's roll"
        );
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch whose records have no timestamp, as librdkafka writes it when given -1 for every
/// message: baseTimestamp -1 and maxTimestamp 0. Kafka checks the records (-1 passes) and
/// stores their true max; so does the log. A record of such a batch with a timestamp out
/// of bounds is still refused.
#[test]
fn a_batch_without_timestamps_is_kept_with_its_records_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig {
            timestamp_before_max_ms: 86_400_000,
            ..small_config(1 << 20)
        };
        let log = open(&path, config, OpenOptions::default()).await.unwrap();
        let untimed = |timestamps: &[i64], header_max: Option<i64>| {
            let mut b = runnel_record::builder::BatchBuilder::new(-1);
            for &t in timestamps {
                b.append(t, Some(b"k"), Some(b"v"), &[]);
            }
            let mut v = b.build();
            if let Some(max) = header_max {
                runnel_record::set_max_timestamp(&mut v, max);
            }
            BytesMut::from(&v[..])
        };
        let info = log
            .append(untimed(&[-1, -1, -1], Some(0)), false)
            .await
            .unwrap();
        assert_eq!(info.record_count, 3);
        let now = now_ms();
        log.append(untimed(&[-1, now], None), false).await.unwrap();
        let old = log.append(untimed(&[-1, now - 2 * 86_400_000], None), false);
        assert!(
            matches!(old.await, Err(LogError::InvalidTimestamp { .. })),
            "a record two days old is refused"
        );
        // Stored: the first batch's max is its records' (-1), the second's `now`.
        let plan = log.read(0, 1 << 20, true).await.unwrap();
        let bytes = plan_bytes(&plan);
        let maxes: Vec<i64> = Batches::new(&bytes)
            .map(|b| {
                let (pos, h) = b.unwrap();
                runnel_record::verify_stored(&bytes[pos..pos + h.total_len()]).unwrap();
                h.max_timestamp
            })
            .collect();
        assert_eq!(maxes, vec![-1, now]);
    });
}
