//! Transactions on one partition: the last stable offset, read_committed reads, the
//! aborted-transaction index, and all of them after a crash or a clean restart.

mod common;

use bytes::BytesMut;
use common::run;
use runnel_log::{Log, LogConfig, OpenOptions, Origin, Upto};
use runnel_record::builder::BatchBuilder;
use std::path::Path;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 10,
        index_interval_bytes: 256,
        preallocate: false,
        ..LogConfig::default()
    }
}

/// A batch of `n` records from producer `pid`, transactional or not.
fn txn_batch(pid: i64, seq: i32, n: usize, transactional: bool) -> BytesMut {
    let mut b = BatchBuilder::new(1000).producer(pid, 0, seq);
    for i in 0..n {
        b.append(1000, Some(b"k"), Some(format!("v{i:040}").as_bytes()), &[]);
    }
    let mut bytes = b.build();
    if transactional {
        bytes[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        runnel_record::set_crc(&mut bytes);
    }
    BytesMut::from(&bytes[..])
}

/// Producer `pid` (epoch 0) checked with its coordinator.
fn verified(pid: i64) -> Origin {
    Origin::Verified {
        producer_id: pid,
        epoch: 0,
    }
}

async fn open(dir: &Path, clean: bool) -> Log {
    Log::open(
        dir,
        "t",
        0,
        config(),
        OpenOptions {
            clean_shutdown: clean,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[test]
fn open_transactions_hold_the_stable_offset_and_aborts_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path, false).await;
        // A plain record, then producer 1 opens a transaction at offset 1.
        log.append(txn_batch(9, 0, 1, false), false).await.unwrap();
        // Not verified by a coordinator, and not yet in a transaction here: refused.
        let e = log
            .append(txn_batch(1, 0, 2, true), false)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 48, "{e}");
        let a = log
            .append_checked(txn_batch(1, 0, 2, true), false, verified(1))
            .await
            .unwrap();
        assert_eq!(a.base_offset, 1);
        // Later batches of the open transaction need no check.
        log.append(txn_batch(1, 2, 2, true), false).await.unwrap();
        // A plain batch of a producer whose transaction is open: INVALID_TXN_STATE.
        let e = log
            .append(txn_batch(1, 4, 1, false), false)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 48);
        // Another producer's plain records pass the open transaction.
        log.append(txn_batch(9, 1, 3, false), false).await.unwrap();
        assert_eq!(log.high_watermark(), 8);
        assert_eq!(log.last_stable_offset(), 1);
        assert_eq!(log.open_transactions(), vec![(1, 0, 1)]);
        // DescribeProducers' view: producer 1's transaction starts at 1, producer 9 has none.
        let starts: Vec<(i64, i64)> = log.active_producers().iter().map(|p| (p.0, p.5)).collect();
        assert_eq!(starts, vec![(1, 1), (9, -1)]);
        // read_committed stops before the transaction's first batch.
        let p = log.read_upto(0, 1 << 20, true, Upto::Stable).await.unwrap();
        assert!(p.len > 0 && p.last_stable_offset == 1);
        let all = log.read(0, 1 << 20, true).await.unwrap();
        assert!(p.len < all.len);
        let p = log.read_upto(1, 1 << 20, true, Upto::Stable).await.unwrap();
        assert_eq!(p.len, 0);
        // A client may not write control batches.
        let mut marker = runnel_record::control::marker(1, 0, false, 0, 1000);
        let e = log
            .append(BytesMut::from(&marker[..]), false)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 87);
        marker.clear();
        // The abort marker ends it: the stable offset moves to the end, the abort is listed.
        let m = log.append_marker(1, 0, false, 0, false).await.unwrap();
        assert_eq!(m.base_offset, 8);
        assert_eq!(log.last_stable_offset(), 9);
        assert_eq!(log.aborted_txns(0, 9), vec![(1, 1)]);
        assert!(log.aborted_txns(9, 20).is_empty());
        // A second transaction, committed, and a third left open.
        log.append_checked(txn_batch(1, 4, 1, true), false, verified(1))
            .await
            .unwrap();
        log.append_marker(1, 0, true, 0, false).await.unwrap();
        log.append_checked(txn_batch(1, 5, 1, true), false, verified(1))
            .await
            .unwrap();
        assert_eq!(log.last_stable_offset(), 11);
        assert_eq!(log.aborted_txns(0, 11), vec![(1, 1)]);
        drop(log);
        // A crash: the state comes back from the segments (no snapshot past offset 0).
        let log = open(&path, false).await;
        assert_eq!(log.last_stable_offset(), 11);
        assert_eq!(log.aborted_txns(0, 12), vec![(1, 1)]);
        // The open transaction can be aborted after the restart.
        log.append_marker(1, 0, false, 0, false).await.unwrap();
        assert_eq!(log.last_stable_offset(), 13);
        assert_eq!(log.aborted_txns(0, 13), vec![(1, 1), (1, 11)]);
        log.close().await.unwrap();
        // A clean restart reads the .txnindex and the snapshot.
        let log = open(&path, true).await;
        assert_eq!(log.aborted_txns(0, 13), vec![(1, 1), (1, 11)]);
        assert_eq!(log.last_stable_offset(), 13);
        assert!(log.open_transactions().is_empty());
        // A marker with an older epoch than the producer's is refused.
        log.append_checked(txn_batch(1, 6, 1, true), false, verified(1))
            .await
            .unwrap();
        let e = log.append_marker(1, -1, true, 0, false).await;
        assert!(e.is_err());
        // An epoch bump by the coordinator (a fenced producer) ends the transaction too.
        log.append_marker(1, 1, false, 1, false).await.unwrap();
        assert_eq!(log.last_stable_offset(), log.high_watermark());
    });
}

#[test]
fn aborted_transactions_survive_rolls_and_crashes_in_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path, false).await;
        let mut seq = 0;
        let mut aborted = Vec::new();
        // 30 transactions of 3 batches (segments of 4 KiB roll every few), every third
        // aborted.
        for t in 0..30 {
            let first = log
                .append_checked(txn_batch(5, seq, 4, true), false, verified(5))
                .await
                .unwrap()
                .base_offset;
            seq += 4;
            for _ in 0..2 {
                log.append(txn_batch(5, seq, 4, true), false).await.unwrap();
                seq += 4;
            }
            let commit = t % 3 != 0;
            log.append_marker(5, 0, commit, 0, false).await.unwrap();
            if !commit {
                aborted.push((5, first));
            }
        }
        assert!(log.segment_base_offsets().len() > 5);
        let end = log.high_watermark();
        assert_eq!(log.last_stable_offset(), end);
        assert_eq!(log.aborted_txns(0, end), aborted);
        drop(log);
        for clean in [false, true] {
            let log = open(&path, clean).await;
            assert_eq!(log.aborted_txns(0, end), aborted, "clean={clean}");
            assert_eq!(log.last_stable_offset(), end);
            // A fetch from the middle lists only the aborts at or after it.
            let mid = aborted[5].1 + 1;
            assert_eq!(log.aborted_txns(mid, end), aborted[5..].to_vec());
            log.close().await.unwrap();
        }
    });
}

#[test]
fn a_check_covers_only_its_producer_and_the_brokers_own_writes_keep_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path, false).await;
        // One append of two producers' transactional batches, checked for producer 1
        // only: producer 2 may not open a transaction on the strength of it.
        let mut both = txn_batch(1, 0, 1, true);
        both.extend_from_slice(&txn_batch(2, 0, 1, true));
        let e = log
            .append_checked(both, false, verified(1))
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 48);
        assert!(log.open_transactions().is_empty(), "nothing written");
        // The broker's own transactional write (no sequence) for producer 3 epoch 1...
        let mut own = txn_batch(3, -1, 1, true);
        own[51..53].copy_from_slice(&1i16.to_be_bytes());
        runnel_record::set_crc(&mut own);
        log.append_checked(own, false, Origin::Coordinator)
            .await
            .unwrap();
        log.append_marker(3, 2, false, 0, false).await.unwrap();
        // ... is refused once a newer epoch wrote there.
        let stale = txn_batch(3, -1, 1, true);
        let e = log
            .append_checked(stale, false, Origin::Coordinator)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 47);
    });
}

#[test]
fn a_truncation_below_an_abort_marker_leaves_no_stale_txnindex() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path, false).await;
        log.append_checked(txn_batch(1, 0, 1, true), false, verified(1))
            .await
            .unwrap();
        log.append_marker(1, 0, false, 0, false).await.unwrap();
        // Closed cleanly: the active segment's .txnindex lists the abort.
        log.close().await.unwrap();
        let index = path.join("00000000000000000000.txnindex");
        assert!(index.exists());
        let log = open(&path, true).await;
        assert_eq!(log.aborted_txns(0, 2), vec![(1, 0)]);
        // A follower's truncation cuts the marker (and the batch): the file must go too,
        // or the next clean start would list an abort that is not in the log.
        let log = log.truncate_to(1).await.unwrap();
        assert!(log.aborted_txns(0, 2).is_empty());
        log.close().await.unwrap();
        assert!(!index.exists());
        let log = open(&path, true).await;
        assert!(log.aborted_txns(0, 2).is_empty());
    });
}
