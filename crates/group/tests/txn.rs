//! The transaction coordinator's state machine without a broker.

use runnel_group::txn::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn coordinator() -> TxnCoordinator {
    let c = TxnCoordinator::new(60_000);
    for p in 0..DEFAULT_PARTITIONS {
        c.loading(p, DEFAULT_PARTITIONS);
        assert!(c.load_partition(p, 3, HashMap::new()).is_empty());
    }
    c
}

/// Writes `step`'s record successfully; returns what followed.
fn ok(c: &TxnCoordinator, step: Step) -> Written {
    match step {
        Step::Write(w) => c.written(w, Ok(())),
        Step::Reply(r) => Written {
            reply: Some(r),
            markers: None,
        },
    }
}

fn reply(c: &TxnCoordinator, step: Step) -> TxnReply {
    ok(c, step).reply.expect("an answer")
}

fn tp(t: &str, p: i32) -> TxnPartition {
    (Arc::from(t), p)
}

/// Writes the markers of `job` and the Complete record.
fn finish(c: &TxnCoordinator, job: &MarkerJob) {
    let w = c.markers_done(job).expect("a Complete record");
    let done = c.written(w, Ok(()));
    assert!(done.reply.is_none() && done.markers.is_none());
}

#[test]
fn commit_and_abort_cycle_with_markers_for_every_partition() {
    let c = coordinator();
    let r = reply(&c, c.init_producer_id("tx", 10_000, (-1, -1), 1000));
    assert_eq!((r.error, r.producer_id, r.producer_epoch), (0, 1000, 0));
    let r = reply(
        &c,
        c.add_partitions("tx", 1000, 0, &[tp("a", 0), tp("a", 1)]),
    );
    assert_eq!(r.error, 0);
    // Adding what is there already needs no write.
    assert!(matches!(
        c.add_partitions("tx", 1000, 0, &[tp("a", 1)]),
        Step::Reply(TxnReply { error: 0, .. })
    ));
    assert_eq!(c.verify("tx", 1000, 0, &tp("a", 0)), 0);
    assert_eq!(c.verify("tx", 1000, 0, &tp("b", 0)), INVALID_TXN_STATE);
    assert_eq!(c.verify("tx", 1000, 1, &tp("a", 0)), INVALID_PRODUCER_EPOCH);
    let w = ok(&c, c.end_txn("tx", 1000, 0, true));
    assert_eq!(w.reply.unwrap().error, 0);
    let job = w.markers.unwrap();
    assert!(job.commit);
    assert_eq!(job.coordinator_epoch, 3);
    assert_eq!(job.partitions, vec![tp("a", 0), tp("a", 1)]);
    // While the markers are written, the producer waits.
    assert!(matches!(
        c.add_partitions("tx", 1000, 0, &[tp("a", 0)]),
        Step::Reply(TxnReply {
            error: CONCURRENT_TRANSACTIONS,
            ..
        })
    ));
    finish(&c, &job);
    assert_eq!(c.describe("tx").unwrap().state, TxnState::CompleteCommit);
    // A retried commit is answered again; an abort of it is refused.
    assert_eq!(reply(&c, c.end_txn("tx", 1000, 0, true)).error, 0);
    assert_eq!(
        reply(&c, c.end_txn("tx", 1000, 0, false)).error,
        INVALID_TXN_STATE
    );
    // Next transaction, aborted.
    assert_eq!(
        reply(&c, c.add_partitions("tx", 1000, 0, &[tp("b", 2)])).error,
        0
    );
    assert_eq!(c.describe("tx").unwrap().partitions.len(), 1);
    let w = ok(&c, c.end_txn("tx", 1000, 0, false));
    let job = w.markers.unwrap();
    assert!(!job.commit && job.partitions == vec![tp("b", 2)]);
    finish(&c, &job);
    assert_eq!(c.describe("tx").unwrap().state, TxnState::CompleteAbort);
    // Errors: stale epoch, unknown producer id, unknown id.
    assert_eq!(
        reply(&c, c.end_txn("tx", 1000, 7, true)).error,
        PRODUCER_FENCED
    );
    assert_eq!(
        reply(&c, c.end_txn("tx", 99, 0, true)).error,
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        reply(&c, c.end_txn("nope", 1000, 0, true)).error,
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(c.describe("nope").unwrap_err(), TRANSACTIONAL_ID_NOT_FOUND);
}

#[test]
fn init_fences_an_open_transaction_and_bumps_the_epoch() {
    let c = coordinator();
    reply(&c, c.init_producer_id("tx", 10_000, (-1, -1), 5));
    reply(&c, c.add_partitions("tx", 5, 0, &[tp("a", 0)]));
    // A new instance: the open transaction is aborted with epoch 1.
    let w = ok(&c, c.init_producer_id("tx", 10_000, (-1, -1), 6));
    assert_eq!(w.reply.unwrap().error, CONCURRENT_TRANSACTIONS);
    let job = w.markers.unwrap();
    assert_eq!(
        (job.producer_id, job.producer_epoch, job.commit),
        (5, 1, false)
    );
    // Retried while the markers are written.
    assert_eq!(
        reply(&c, c.init_producer_id("tx", 10_000, (-1, -1), 7)).error,
        CONCURRENT_TRANSACTIONS
    );
    finish(&c, &job);
    let r = reply(&c, c.init_producer_id("tx", 10_000, (-1, -1), 8));
    assert_eq!((r.error, r.producer_id, r.producer_epoch), (0, 5, 2));
    // The old instance is fenced.
    assert_eq!(
        reply(&c, c.add_partitions("tx", 5, 0, &[tp("a", 0)])).error,
        PRODUCER_FENCED
    );
    // KIP-360: a client naming an older epoch may not bump.
    assert_eq!(
        reply(&c, c.init_producer_id("tx", 10_000, (5, 0), 9)).error,
        PRODUCER_FENCED
    );
    let r = reply(&c, c.init_producer_id("tx", 10_000, (5, 2), 9));
    assert_eq!((r.producer_id, r.producer_epoch), (5, 3));
    // Bad timeouts.
    assert_eq!(
        reply(&c, c.init_producer_id("tx", 60_001, (-1, -1), 9)).error,
        INVALID_TRANSACTION_TIMEOUT
    );
}

#[test]
fn timed_out_transactions_are_aborted_with_a_fencing_epoch() {
    let c = coordinator();
    reply(&c, c.init_producer_id("tx", 1_000, (-1, -1), 5));
    reply(&c, c.add_partitions("tx", 5, 0, &[tp("a", 0)]));
    assert!(c.tick().0.is_empty());
    c.advance_clock(Duration::from_millis(1_500));
    let (writes, jobs) = c.tick();
    assert!(jobs.is_empty());
    assert_eq!(writes.len(), 1);
    let w = c.written(writes.into_iter().next().unwrap(), Ok(()));
    assert!(w.reply.is_none());
    let job = w.markers.unwrap();
    assert_eq!((job.producer_epoch, job.commit), (1, false));
    finish(&c, &job);
    // The producer's next call with its old epoch is fenced.
    assert_eq!(
        reply(&c, c.end_txn("tx", 5, 0, true)).error,
        PRODUCER_FENCED
    );
    assert_eq!(
        c.list(&["CompleteAbort".into()], &[], -1),
        vec![("tx".to_string(), 5, TxnState::CompleteAbort)]
    );
}

#[test]
fn a_new_coordinator_finishes_prepared_transactions_from_the_log() {
    let c = coordinator();
    reply(&c, c.init_producer_id("tx", 10_000, (-1, -1), 5));
    reply(&c, c.add_partitions("tx", 5, 0, &[tp("a", 0), tp("b", 1)]));
    let Step::Write(w) = c.end_txn("tx", 5, 0, true) else {
        panic!("a write")
    };
    // What was appended, replayed by another coordinator.
    let key = decode_key(&w.key).unwrap();
    let meta = decode_value(&w.value).unwrap();
    assert_eq!(key, "tx");
    assert_eq!(meta.state, TxnState::PrepareCommit);
    let p = w.partition;
    let other = TxnCoordinator::new(60_000);
    other.loading(p, DEFAULT_PARTITIONS);
    assert_eq!(other.serves("tx"), Err(14));
    let jobs = other.load_partition(p, 9, HashMap::from([(key, meta)]));
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].commit && jobs[0].coordinator_epoch == 9 && jobs[0].partitions.len() == 2);
    finish(&other, &jobs[0]);
    assert_eq!(
        other.describe("tx").unwrap().state,
        TxnState::CompleteCommit
    );
    other.unload(p);
    assert_eq!(other.serves("tx"), Err(16));
    // A failed write changes nothing and answers the error.
    let w2 = c.written(w, Err(56));
    assert_eq!(w2.reply.unwrap().error, 56);
    assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
}
