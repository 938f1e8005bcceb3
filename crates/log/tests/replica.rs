//! The follower side of the log: batches appended unchanged, the high watermark moved by the
//! leader, leader epochs, and truncation of a divergent tail (KIP-101).

mod common;

use bytes::Bytes;
use common::*;
use runnel_log::{Log, LogConfig, OpenOptions, Upto};
use std::path::Path;

async fn open(dir: &Path) -> Log {
    Log::open(dir, "t", 0, LogConfig::default(), OpenOptions::default())
        .await
        .unwrap()
}

/// What a follower's fetch from `offset` gets: the leader's bytes from its files.
async fn fetch(leader: &Log, offset: i64) -> Bytes {
    let plan = leader
        .read_upto(offset, 1 << 20, true, Upto::LogEnd)
        .await
        .unwrap();
    let path = leader
        .dir()
        .join(runnel_log::file_name(plan.segment_base_offset, "log"));
    let all = std::fs::read(path).unwrap();
    Bytes::copy_from_slice(&all[plan.position as usize..(plan.position + plan.len) as usize])
}

fn segment_bytes(log: &Log) -> Vec<u8> {
    log.segment_base_offsets()
        .iter()
        .flat_map(|b| std::fs::read(log.dir().join(runnel_log::file_name(*b, "log"))).unwrap())
        .collect()
}

#[test]
fn a_divergent_follower_truncates_exactly_to_the_end_of_its_epoch_and_follows() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let a = open(&tmp.path().join("a")).await;
        let b = open(&tmp.path().join("b")).await;
        // A leads in epoch 1: two batches reach B, two more do not.
        a.set_replicated(true);
        b.set_replicated(true);
        a.begin_epoch(1).await.unwrap();
        a.append(batch(3, 10, 1, now_ms()), false).await.unwrap();
        a.append(batch(2, 10, 2, now_ms()), false).await.unwrap();
        let leo = b.append_replica(fetch(&a, 0).await).await.unwrap();
        assert_eq!(leo, 5);
        // B's lag in bytes, as the leader counts it: from B's log end to A's.
        assert_eq!(a.bytes_from(5), 0);
        assert_eq!(a.bytes_from(0), a.size_bytes());
        a.append(batch(4, 10, 3, now_ms()), false).await.unwrap();
        a.append(batch(1, 10, 4, now_ms()), false).await.unwrap();
        assert_eq!(a.log_end_offset(), 10);
        // (Exact to within one index interval, from above.)
        let behind = a.size_bytes() - b.size_bytes();
        assert!((behind..=behind + 4096).contains(&a.bytes_from(5)));
        assert_eq!(a.bytes_from(10), 0);
        // Nothing is visible to consumers on A until the leader says so.
        assert_eq!(a.high_watermark(), 0);
        assert!(a.set_high_watermark(5));
        assert_eq!(a.high_watermark(), 5);
        let plan = a.read(0, 1 << 20, true).await.unwrap();
        assert_eq!(plan.high_watermark, 5);
        let consumer_bytes = plan.len;
        assert_eq!(consumer_bytes, fetch(&b, 0).await.len() as u64);

        // A dies; B leads in epoch 2 and writes three batches.
        b.begin_epoch(2).await.unwrap();
        for i in 0..3 {
            b.append(batch(2, 10, 10 + i, now_ms()), false)
                .await
                .unwrap();
        }
        assert_eq!(b.log_end_offset(), 11);
        assert_eq!(b.end_offset_for_epoch(1), (1, 5));
        assert_eq!(b.end_offset_for_epoch(2), (2, 11));

        // A comes back as a follower: its epoch 1 ended at 5 on the leader.
        let (epoch, end) = b.end_offset_for_epoch(a.latest_epoch().unwrap());
        assert_eq!((epoch, end), (1, 5));
        let a = a.truncate_to(end).await.unwrap();
        assert_eq!(a.log_end_offset(), 5);
        a.set_replicated(true);
        let leo = a.append_replica(fetch(&b, 5).await).await.unwrap();
        assert_eq!(leo, 11);
        assert_eq!(segment_bytes(&a), segment_bytes(&b), "replicas differ");
        assert_eq!(a.end_offset_for_epoch(1), (1, 5));
        assert_eq!(a.latest_epoch(), Some(2));

        // Reopened from disk (unclean), the follower has the same log and epochs.
        a.close().await.unwrap();
        let a = open(&tmp.path().join("a")).await;
        assert_eq!(a.log_end_offset(), 11);
        assert_eq!(a.end_offset_for_epoch(1), (1, 5));
        assert_eq!(a.end_offset_for_epoch(2), (2, 11));
        let text = std::fs::read_to_string(tmp.path().join("a/leader-epoch-checkpoint")).unwrap();
        assert_eq!(text, "0\n2\n1 0\n2 5\n");
    });
}

#[test]
fn replicated_batches_must_continue_the_log_and_keep_producer_state() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let leader = open(&tmp.path().join("l")).await;
        let follower = open(&tmp.path().join("f")).await;
        let idem = {
            let mut b = runnel_record::builder::BatchBuilder::new(now_ms()).producer(7, 0, 0);
            b.append(now_ms(), Some(b"k"), Some(b"v1"), &[]);
            b.append(now_ms(), Some(b"k"), Some(b"v2"), &[]);
            bytes::BytesMut::from(&b.build()[..])
        };
        leader.append(idem.clone(), false).await.unwrap();
        leader
            .append(batch(1, 10, 2, now_ms()), false)
            .await
            .unwrap();
        let bytes = fetch(&leader, 0).await;
        follower.append_replica(bytes.clone()).await.unwrap();
        // The same batches again (a fetch from the wrong offset) are refused, not written.
        let err = follower.append_replica(bytes).await.unwrap_err();
        assert!(
            matches!(err, runnel_log::LogError::NotContiguous { .. }),
            "{err}"
        );
        assert_eq!(follower.log_end_offset(), 3);
        // The follower knows the idempotent producer: a retry after it became leader is a
        // duplicate, answered with the original offsets.
        let info = follower.append(idem, false).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 1));
        assert_eq!(follower.log_end_offset(), 3);
        // A partial trailing batch waits for the next fetch.
        let more = {
            leader
                .append(batch(2, 10, 3, now_ms()), false)
                .await
                .unwrap();
            fetch(&leader, 3).await
        };
        let leo = follower
            .append_replica(more.slice(..more.len() - 1))
            .await
            .unwrap();
        assert_eq!(leo, 3);
        assert_eq!(follower.append_replica(more).await.unwrap(), 5);
    });
}

#[test]
fn a_checkpointed_high_watermark_hides_the_tail_after_a_reopen_until_the_leader_moves_it() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let log = open(&dir).await;
        log.set_replicated(true);
        for i in 0..4 {
            log.append(batch(2, 10, i, now_ms()), false).await.unwrap();
        }
        assert!(log.set_high_watermark(4));
        log.close().await.unwrap();
        // Opened with the checkpoint (unclean): consumers see 4 records, followers 8.
        let log = Log::open(
            &dir,
            "t",
            0,
            LogConfig::default(),
            OpenOptions {
                high_watermark: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        log.set_replicated(true);
        assert_eq!((log.high_watermark(), log.log_end_offset()), (4, 8));
        let plan = log.read(0, 1 << 20, true).await.unwrap();
        assert_eq!(plan.len as usize, fetch(&log, 0).await.len() / 2);
        // Past the high watermark but not the log end: an empty answer, not out of range.
        assert_eq!(log.read(6, 1 << 20, true).await.unwrap().len, 0);
        assert!(
            log.read(9, 1 << 20, true).await.is_err(),
            "past the log end"
        );
        // The leader moves it batch by batch; a single replica publishes everything.
        assert!(log.set_high_watermark(7));
        assert_eq!(log.high_watermark(), 6);
        log.set_replicated(false);
        assert_eq!(log.high_watermark(), 8);
        let plan = log.read(0, 1 << 20, true).await.unwrap();
        assert_eq!(plan.len as usize, fetch(&log, 0).await.len());
    });
}

/// A replicated log publishes a durable write group to its followers before the group's
/// fdatasync, so replication and the sync overlap; consumers (the high watermark) and the
/// leader's own end (`settled_end`) wait for the sync.
#[test]
fn a_replicated_log_publishes_to_followers_before_its_sync_and_settles_after() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(&tmp.path().join("a")).await;
        log.set_replicated(true);
        log.begin_epoch(1).await.unwrap();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let append = {
            let (log, done) = (log.clone(), done.clone());
            glommio::spawn_local(async move {
                let r = log.append(batch(3, 100, 1, now_ms()), true).await;
                done.set(true);
                r
            })
        };
        // Watch the log while the append and its sync run.
        let mut early = false;
        while !done.get() {
            if log.published_end() == 3 && log.settled_end() == 0 {
                early = true;
                // The leader cannot make it visible to consumers before the sync.
                assert!(!log.set_high_watermark(3));
                assert_eq!(log.high_watermark(), 0);
            }
            yield_now().await;
        }
        append.await.unwrap();
        assert!(
            early,
            "followers could fetch the group while it was syncing"
        );
        assert_eq!((log.published_end(), log.settled_end()), (3, 3));
        assert!(log.set_high_watermark(3));
        // A log with one replica publishes only once synced.
        let single = open(&tmp.path().join("b")).await;
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let append = {
            let (log, done) = (single.clone(), done.clone());
            glommio::spawn_local(async move {
                let r = log.append(batch(3, 100, 1, now_ms()), true).await;
                done.set(true);
                r
            })
        };
        while !done.get() {
            assert_eq!(single.published_end(), single.settled_end());
            yield_now().await;
        }
        append.await.unwrap();
        assert_eq!(single.high_watermark(), 3);
    });
}
