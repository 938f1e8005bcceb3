//! Durability and robustness of the log against hostile claims, power loss between a roll and
//! a sync, failed syncs, and handles that outlive their directory. Each test builds the state
//! a crash or a client would leave and checks what was acknowledged.

mod common;

use bytes::BytesMut;
use common::{batch, now_ms, run};
use runnel_log::{Log, LogConfig, LogError, OpenOptions, MAX_RELATIVE_OFFSET};
use runnel_record::builder::BatchBuilder;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const STORAGE_ERROR: i16 = 56;
const INVALID_RECORD: i16 = 87;

fn config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        preallocate: false,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig, opts: OpenOptions) -> Log {
    Log::open(dir, "t", 0, config, opts).await.unwrap()
}

/// Full recovery from offset 0, as after a crash with nothing checkpointed.
fn unclean() -> OpenOptions {
    OpenOptions {
        recovery_point: Some(0),
        ..OpenOptions::default()
    }
}

/// A producer batch flagged zstd whose header claims `claim` records: validation never
/// inflates compressed batches, so only the header's consistency and plausibility (about
/// 115 KB of zstd could hold 2^31 minimal records) are checked.
fn claiming(claim: i32) -> BytesMut {
    let mut b = batch(60, 2000, 3, now_ms());
    b[21..23].copy_from_slice(&4i16.to_be_bytes()); // attributes: zstd
    b[23..27].copy_from_slice(&(claim - 1).to_be_bytes()); // lastOffsetDelta
    b[57..61].copy_from_slice(&claim.to_be_bytes()); // recordCount
    runnel_record::set_crc(&mut b);
    b
}

/// An idempotent producer's batch of `n` records starting at sequence `seq`.
fn idempotent(seq: i32, n: usize) -> BytesMut {
    let now = now_ms();
    let mut b = BatchBuilder::new(now).producer(7, 0, seq);
    for i in 0..n {
        b.append(now, Some(b"key"), Some(&[seq as u8 + i as u8; 40]), &[]);
    }
    BytesMut::from(&b.build()[..])
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn seg(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(runnel_log::file_name(base, ext))
}

#[test]
fn record_counts_claimed_past_a_segments_offset_range_never_break_the_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        // The reported request: three batches claiming 2^31-1 records each, one append.
        let mut three = BytesMut::new();
        for _ in 0..3 {
            three.extend_from_slice(&claiming(i32::MAX));
        }
        let e = log.append(three, false).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), INVALID_RECORD, "{e}");
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));

        // One at a time each fits a segment; the writer rolls between them.
        let max = MAX_RELATIVE_OFFSET;
        for i in 0..3 {
            let info = log.append(claiming(i32::MAX), false).await.unwrap();
            assert_eq!(
                (info.base_offset, info.last_offset),
                (i * max, (i + 1) * max - 1)
            );
        }
        assert_eq!(log.segment_base_offsets(), vec![0, max, 2 * max]);
        // The full segment takes not one more offset: the next batch rolls.
        let info = log.append(batch(3, 10, 1, now_ms()), false).await.unwrap();
        assert_eq!(info.base_offset, 3 * max);
        let plan = log.read(3 * max, 1 << 20, true).await.unwrap();
        assert_eq!(plan.segment_base_offset, 3 * max);
        assert!(plan.len > 0);
        let end = log.log_end_offset();
        drop(log); // a crash: no close, no index files for the active segment

        let log = open(&dir, config(), unclean()).await;
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.segment_base_offsets(), vec![0, max, 2 * max, 3 * max]);
        for offset in [0, max - 1, max, 2 * max + 5, 3 * max] {
            let plan = log.read(offset, 1 << 20, true).await.unwrap();
            assert!(plan.len > 0, "offset {offset} reads a batch");
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_segment_roll_syncs_the_old_segment_before_creating_anything_new() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        log.append(batch(5, 100, 1, now_ms()), false).await.unwrap();
        let old_fd = log.read(0, 1 << 20, true).await.unwrap().file.as_raw_fd();
        let synced = Rc::new(RefCell::new(Vec::new()));
        let s = synced.clone();
        runnel_runtime::fault::set_fdatasync_hook(Some(Box::new(move |f| {
            s.borrow_mut().push(f.as_raw_fd());
            None
        })));
        log.roll().await.unwrap();
        runnel_runtime::fault::set_fdatasync_hook(None);
        let synced = synced.borrow().clone();
        assert_eq!(
            synced.first(),
            Some(&old_fd),
            "the old segment's data is the first thing synced at a roll: {synced:?}"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_gap_between_segments_ends_the_log_and_a_retry_of_the_lost_batch_is_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        let a = idempotent(0, 5);
        let a_len = a.len() as u64;
        log.append(a, false).await.unwrap(); // offsets 0..=4
        log.append(idempotent(5, 5), false).await.unwrap(); // 5..=9
        log.roll().await.unwrap(); // segment 10 and the snapshot at 10 (holds seq 0..=9)
        log.append(idempotent(10, 5), false).await.unwrap(); // 10..=14
        drop(log);
        assert!(seg(&dir, 10, "snapshot").exists());

        // The crash image: power lost before segment 0's second batch reached the disk,
        // while segment 10 and its snapshot did.
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg(&dir, 0, "log"))
            .unwrap()
            .set_len(a_len)
            .unwrap();

        let log = open(&dir, config(), unclean()).await;
        assert_eq!(log.log_end_offset(), 5, "the log ends where segment 0 ends");
        assert_eq!(log.segment_base_offsets(), vec![0]);
        assert!(!seg(&dir, 10, "log").exists());
        assert!(!seg(&dir, 10, "snapshot").exists());
        // The producer never got an answer for sequence 5 (or got one the disk did not
        // keep): its retry must be written, not answered as a duplicate of lost offsets.
        let info = log.append(idempotent(5, 5), false).await.unwrap();
        assert_eq!((info.base_offset, info.record_count), (5, 5));
        let plan = log.read(5, 1 << 20, true).await.unwrap();
        assert!(plan.len > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_fdatasync_takes_the_log_offline_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        log.append(batch(5, 100, 1, now_ms()), true).await.unwrap();
        let recovery_point = log.recovery_point();
        // Linux reports a writeback error once; the next fdatasync would succeed.
        let failed = Rc::new(Cell::new(false));
        let f = failed.clone();
        runnel_runtime::fault::set_fdatasync_hook(Some(Box::new(move |_| {
            (!f.replace(true)).then(|| io::Error::from_raw_os_error(libc::EIO))
        })));
        let e = log
            .append(batch(5, 100, 2, now_ms()), true)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), STORAGE_ERROR, "{e}");
        assert!(failed.get());
        assert!(log.offline_reason().is_some());
        assert_eq!(
            log.high_watermark(),
            5,
            "the unsynced batch is never visible"
        );
        assert_eq!(log.recovery_point(), recovery_point);
        // Everything is refused from now on, though fdatasync works again.
        for durable in [false, true] {
            let e = log
                .append(batch(1, 10, 3, now_ms()), durable)
                .await
                .unwrap_err();
            assert!(matches!(e, LogError::Offline { .. }), "{e}");
            assert_eq!(e.kafka_error_code(), STORAGE_ERROR);
        }
        assert_eq!(
            log.read(0, 1 << 20, true)
                .await
                .unwrap_err()
                .kafka_error_code(),
            STORAGE_ERROR
        );
        assert!(log.flush().await.is_err());
        assert_eq!(log.apply_retention(i64::MAX / 2).await.unwrap(), 0);
        assert!(
            log.close().await.is_err(),
            "an offline log is not closed cleanly"
        );
        runnel_runtime::fault::set_fdatasync_hook(None);

        // A restart recovers it from the recovery point: the files decide.
        let log = open(
            &dir,
            config(),
            OpenOptions {
                recovery_point: Some(recovery_point),
                ..OpenOptions::default()
            },
        )
        .await;
        assert!(log.offline_reason().is_none());
        assert!(log.log_end_offset() >= 5);
        log.append(batch(1, 10, 4, now_ms()), true).await.unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn the_high_watermark_moves_only_after_the_acks_all_fdatasync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (s, l) = (seen.clone(), log.clone());
        runnel_runtime::fault::set_fdatasync_hook(Some(Box::new(move |_| {
            s.borrow_mut().push(l.high_watermark());
            // ListOffsets answers only from what readers may see.
            assert_eq!(l.max_timestamp_offset().unwrap(), None);
            None
        })));
        let waiter = glommio::spawn_local({
            let (log, seen) = (log.clone(), seen.clone());
            async move {
                log.wait_for_data(0).await;
                // Woken only once the data is visible, which is after its sync.
                (log.high_watermark(), seen.borrow().len())
            }
        });
        let info = log.append(batch(5, 100, 1, now_ms()), true).await.unwrap();
        runnel_runtime::fault::set_fdatasync_hook(None);
        let seen = seen.borrow().clone();
        assert!(!seen.is_empty(), "the append was synced");
        assert!(
            seen.iter().all(|&hw| hw == 0),
            "a reader saw the batch before its sync: high watermarks at sync time {seen:?}"
        );
        assert_eq!(log.high_watermark(), info.last_offset + 1);
        let (hw, syncs_before_wake) = waiter.await;
        assert_eq!(hw, 5);
        assert_eq!(syncs_before_wake, seen.len());

        // Without acks=all nothing waits for a sync: visible as soon as written.
        let info = log.append(batch(2, 10, 2, now_ms()), false).await.unwrap();
        assert_eq!(log.high_watermark(), info.last_offset + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn a_closed_log_never_touches_the_files_of_a_log_recreated_in_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let moved = tmp.path().join("t-0.deleted");
    run(move || async move {
        let small = LogConfig {
            segment_bytes: 4096,
            ..config()
        };
        let fill = |log: Log| async move {
            for i in 0..8 {
                log.append(batch(4, 300, i, now_ms()), false).await.unwrap();
            }
            log
        };
        let old = fill(open(&dir, small.clone(), OpenOptions::default()).await).await;
        let stale = old.clone();
        old.close().await.unwrap();
        std::fs::rename(&dir, &moved).unwrap(); // the topic is deleted ...
        let new = fill(open(&dir, small.clone(), OpenOptions::default()).await).await; // ... and created again
        let before = file_names(&dir);
        assert!(before.len() > 3);

        assert!(stale.delete_records(stale.high_watermark()).await.is_err());
        assert_eq!(stale.apply_retention(i64::MAX / 2).await.unwrap(), 0);
        assert!(stale.roll().await.is_err());
        assert_eq!(
            file_names(&dir),
            before,
            "the new log's files are untouched"
        );

        // A handle that was not closed (DeleteRecords holding its log across awaits while
        // the topic goes): its directory is not the one at its path any more, so it refuses.
        let renamed = tmp_sibling(&dir, "t-0.again");
        let live = new.clone();
        std::fs::rename(&dir, &renamed).unwrap();
        let newest = fill(open(&dir, small, OpenOptions::default()).await).await;
        let newest_files = file_names(&dir);
        assert!(live.delete_records(live.high_watermark()).await.is_err());
        assert!(live.roll().await.is_err());
        assert_eq!(
            file_names(&dir),
            newest_files,
            "files in the path's new directory stay"
        );
        assert_eq!(file_names(&renamed), before, "and so do the handle's own");
        newest.close().await.unwrap();
    });
}

fn tmp_sibling(dir: &Path, name: &str) -> PathBuf {
    dir.parent().unwrap().join(name)
}

#[test]
fn producer_snapshots_have_kafkas_name_and_old_names_are_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        log.append(idempotent(0, 5), false).await.unwrap();
        log.roll().await.unwrap();
        log.close().await.unwrap();
        let snapshots: Vec<String> = file_names(&dir)
            .into_iter()
            .filter(|n| n.contains("snapshot"))
            .collect();
        assert_eq!(snapshots, vec!["00000000000000000005.snapshot"]);

        // A data dir written by an earlier version: `<offset>..snapshot`.
        std::fs::rename(
            dir.join("00000000000000000005.snapshot"),
            dir.join("00000000000000000005..snapshot"),
        )
        .unwrap();
        let clean = OpenOptions {
            clean_shutdown: true,
            ..OpenOptions::default()
        };
        let log = open(&dir, config(), clean).await;
        assert!(seg(&dir, 5, "snapshot").exists());
        assert!(!dir.join("00000000000000000005..snapshot").exists());
        // The snapshot was used: the retry is still recognised.
        let info = log.append(idempotent(0, 5), false).await.unwrap();
        assert_eq!((info.base_offset, info.record_count), (0, 0));
        log.close().await.unwrap();
    });
}

#[test]
fn appends_queued_behind_a_failed_fdatasync_are_refused_and_nothing_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        log.append(batch(2, 10, 1, now_ms()), true).await.unwrap();
        let failed = Rc::new(Cell::new(false));
        let f = failed.clone();
        runnel_runtime::fault::set_fdatasync_hook(Some(Box::new(move |_| {
            (!f.replace(true)).then(|| io::Error::from_raw_os_error(libc::EIO))
        })));
        let first = glommio::spawn_local({
            let log = log.clone();
            async move { log.append(batch(3, 10, 2, now_ms()), true).await }
        });
        // Let the writer take the first append and start its write; this one queues behind.
        common::yield_now().await;
        let second = log.append(batch(4, 10, 3, now_ms()), false).await;
        let first = first.await;
        runnel_runtime::fault::set_fdatasync_hook(None);
        assert!(failed.get());
        assert_eq!(first.unwrap_err().kafka_error_code(), STORAGE_ERROR);
        let second = second.unwrap_err();
        assert_eq!(second.kafka_error_code(), STORAGE_ERROR, "{second}");
        assert_eq!(
            log.high_watermark(),
            2,
            "nothing after the failed sync is visible"
        );
        assert!(log.close().await.is_err());
    });
}

#[test]
fn retention_never_deletes_a_segment_whose_data_is_not_visible_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let config = LogConfig {
            segment_bytes: 1500,
            retention_bytes: Some(1),
            ..config()
        };
        let log = open(&dir, config, OpenOptions::default()).await;
        // Retention decides (and moves the log start offset) before its first await: run that
        // part at every sync the writer does, as the shard's background task may then.
        let seen: Rc<RefCell<Vec<(i64, i64)>>> = Rc::default();
        let (s, l) = (seen.clone(), log.clone());
        runnel_runtime::fault::set_fdatasync_hook(Some(Box::new(move |_| {
            let retention = std::pin::pin!(l.apply_retention(now_ms()));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = retention.poll(&mut cx);
            s.borrow_mut()
                .push((l.log_start_offset(), l.high_watermark()));
            None
        })));
        // Two appends in one write group that does not fit one segment: the group rolls
        // between them and publishes only after its sync.
        // (The first append's group is under way when the other two queue behind it.)
        let (x, (a, b)) = common::join2(
            log.append(batch(1, 10, 0, now_ms()), true),
            common::join2(
                log.append(batch(4, 200, 1, now_ms()), true),
                log.append(batch(4, 200, 2, now_ms()), true),
            ),
        )
        .await;
        assert_eq!(x.unwrap().base_offset, 0);
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.base_offset, b.base_offset), (1, 5));
        runnel_runtime::fault::set_fdatasync_hook(None);
        let seen = seen.borrow().clone();
        assert!(!seen.is_empty(), "retention ran during the group's syncs");
        for (lso, hw) in &seen {
            assert!(
                lso <= hw,
                "log start {lso} past the high watermark {hw}: {seen:?}"
            );
        }
        assert_eq!(log.high_watermark(), b.last_offset + 1);
        assert_eq!(
            log.segment_base_offsets(),
            vec![0, 5],
            "the group rolled once"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_gap_below_the_recovery_point_refuses_the_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    run(move || async move {
        let log = open(&dir, config(), OpenOptions::default()).await;
        let a = batch(5, 100, 1, now_ms());
        let a_len = a.len() as u64;
        log.append(a, true).await.unwrap();
        log.append(batch(5, 100, 2, now_ms()), true).await.unwrap();
        log.roll().await.unwrap();
        log.append(batch(5, 100, 3, now_ms()), true).await.unwrap();
        let flushed = log.recovery_point();
        assert_eq!(flushed, 15);
        drop(log);
        // Flushed data of segment 0 went missing (a damaged disk, not a power loss: it was
        // synced before segment 10 existed).
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg(&dir, 0, "log"))
            .unwrap()
            .set_len(a_len)
            .unwrap();
        let e = Log::open(
            &dir,
            "t",
            0,
            config(),
            OpenOptions {
                recovery_point: Some(flushed),
                ..OpenOptions::default()
            },
        )
        .await
        .err()
        .expect("the open is refused");
        assert!(
            matches!(e, LogError::CorruptBelowRecoveryPoint { .. }),
            "{e}"
        );
        assert!(seg(&dir, 10, "log").exists(), "nothing was deleted");
    });
}
