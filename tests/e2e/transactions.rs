//! Transactions: confluent-kafka's transactional producer and read_committed consumers
//! (tests/python/txn_test.py), the broker killed in the middle of a transaction and of a
//! commit, and bad input over raw requests.

use crate::common::*;
use crate::protocol::{call, connect, encode_request, read_response, send_raw};
use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const FLAGS: &[&str] = &[
    "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
    "500",
    "--group-initial-rebalance-delay-ms",
    "0",
];

fn case(b: &Broker, name: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/txn_test.py"
    );
    let (status, out, err) = run_cmd(
        Command::new("python3").args([script, name, &b.addr]),
        Duration::from_secs(300),
    );
    assert!(
        status.success() && out.contains("OK"),
        "{name} failed:\n{out}\n{err}\nbroker log:\n{}",
        b.logs()
    );
}

#[test]
fn committed_and_aborted_transactions_as_read_committed_and_uncommitted_consumers_see_them() {
    with_timeout(600, || case(&Broker::start(FLAGS), "commit_abort"));
}

#[test]
fn consume_transform_produce_is_exactly_once_across_a_killed_application() {
    with_timeout(600, || case(&Broker::start(FLAGS), "ctp"));
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    with_timeout(600, || case(&Broker::start(FLAGS), "timeout"));
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Retries `f` while it answers one of the "not yet" codes (coordinator loading or
/// moving, a transaction ending, the transaction log being created), as clients do.
fn settled<T>(mut f: impl FnMut() -> (i16, T)) -> (i16, T) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = f();
        if !matches!(code, 14 | 15 | 16 | 51) || std::time::Instant::now() > deadline {
            return (code, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn init_producer_id(s: &mut TcpStream, id: &str, timeout_ms: i32) -> (i16, (i64, i16)) {
    settled(|| {
        let r: InitProducerIdResponse = call(
            s,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(sb(id))))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        (r.error_code, (r.producer_id.0, r.producer_epoch))
    })
}

fn add_partitions(
    s: &mut TcpStream,
    id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
    ps: &[i32],
) -> i16 {
    settled(|| {
        let r: AddPartitionsToTxnResponse = call(
            s,
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(sb(id)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partitions(ps.to_vec())]),
        );
        let codes: Vec<i16> = r
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect();
        (codes.iter().copied().find(|c| *c != 0).unwrap_or(0), ())
    })
    .0
}

fn end_txn(s: &mut TcpStream, version: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    settled(|| {
        let r: EndTxnResponse = call(
            s,
            ApiKey::EndTxn,
            version,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(commit),
        );
        (r.error_code, ())
    })
    .0
}

fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let mut b = runnel_record::builder::BatchBuilder::new(1_700_000_000_000)
        .producer(pid, epoch, seq)
        .transactional();
    for i in 0..n {
        b.append(
            1_700_000_000_000,
            None,
            Some(format!("v{}", seq as usize + i).as_bytes()),
            &[],
        );
    }
    Bytes::from(b.build())
}

/// Produce (acks=-1) of `records` to `topic`-`partition`: (error, base offset).
fn produce(
    s: &mut TcpStream,
    version: i16,
    txn: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_transactional_id(txn.map(|t| TransactionalId(sb(t))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    send_raw(s, &encode_request(ApiKey::Produce, version, 7, &req));
    let mut resp = read_response(s).expect("a produce response");
    ResponseHeader::decode(&mut resp, ProduceResponse::header_version(version)).unwrap();
    let r = ProduceResponse::decode(&mut resp, version).unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// ListOffsets latest of `topic`-`partition` with `isolation` (1: read_committed).
fn latest(s: &mut TcpStream, topic: &str, partition: i32, isolation: i8) -> i64 {
    let r: ListOffsetsResponse = call(
        s,
        ApiKey::ListOffsets,
        5,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]),
    );
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn create_topic(s: &mut TcpStream, name: &str, partitions: i32) {
    let r: CreateTopicsResponse = call(
        s,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(sb(name)))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
    );
    assert_eq!(r.topics[0].error_code, 0);
}

fn describe(s: &mut TcpStream, id: &str) -> (i16, String, i16, usize) {
    let r: DescribeTransactionsResponse = call(
        s,
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(sb(id))]),
    );
    let t = &r.transaction_states[0];
    (
        t.error_code,
        t.transaction_state.to_string(),
        t.producer_epoch,
        t.topics.iter().map(|t| t.partitions.len()).sum(),
    )
}

#[test]
fn bad_transactional_requests_get_kafkas_errors() {
    with_timeout(120, || {
        let b = Broker::start(FLAGS);
        let mut s = connect(&b.addr);
        create_topic(&mut s, "bad", 2);
        // Longer than --transaction-max-timeout-ms (15 minutes).
        assert_eq!(init_producer_id(&mut s, "t1", 900_001).0, 50);
        let (e, (pid, epoch)) = init_producer_id(&mut s, "t1", 60_000);
        assert_eq!((e, epoch), (0, 0));
        // A transactional batch for a partition not added: INVALID_TXN_STATE (Produce v9),
        // TRANSACTION_ABORTABLE (v11).
        assert_eq!(
            produce(&mut s, 9, Some("t1"), "bad", 0, txn_batch(pid, 0, 0, 2)).0,
            48
        );
        assert_eq!(
            produce(&mut s, 11, Some("t1"), "bad", 0, txn_batch(pid, 0, 0, 2)).0,
            120
        );
        // Without a transactional id in the request.
        assert_eq!(
            produce(&mut s, 9, None, "bad", 0, txn_batch(pid, 0, 0, 2)).0,
            87
        );
        // Nobody writes to the transaction log but the brokers.
        let (e, _) = produce(
            &mut s,
            9,
            Some("t1"),
            "__transaction_state",
            0,
            txn_batch(pid, 0, 0, 1),
        );
        assert_eq!(e, 17);
        // A client's control batch.
        let marker = runnel_record::control::marker(pid, 0, true, 0, 1_700_000_000_000);
        assert_eq!(
            produce(&mut s, 9, None, "bad", 1, Bytes::from(marker)).0,
            87
        );
        // EndTxn with nothing open.
        assert_eq!(end_txn(&mut s, 3, "t1", pid, 0, true), 48);
        // Added, then written.
        assert_eq!(add_partitions(&mut s, "t1", pid, 0, "bad", &[0]), 0);
        assert_eq!(
            produce(&mut s, 9, Some("t1"), "bad", 0, txn_batch(pid, 0, 0, 2)),
            (0, 0)
        );
        // A plain batch of the same producer while its transaction is open.
        let plain = {
            let mut bb = runnel_record::builder::BatchBuilder::new(1).producer(pid, 0, 2);
            bb.append(1, None, Some(b"x"), &[]);
            Bytes::from(bb.build())
        };
        assert_eq!(produce(&mut s, 9, None, "bad", 0, plain).0, 48);
        let (e, state, _, parts) = describe(&mut s, "t1");
        assert_eq!((e, state.as_str(), parts), (0, "Ongoing", 1));
        assert_eq!(describe(&mut s, "nope").0, 105);
        // A wrong producer id; a stale epoch: PRODUCER_FENCED from EndTxn v2,
        // INVALID_PRODUCER_EPOCH before (what librdkafka sends).
        assert_eq!(end_txn(&mut s, 3, "t1", pid + 1000, 0, true), 49);
        assert_eq!(end_txn(&mut s, 3, "t1", pid, 5, true), 90);
        assert_eq!(end_txn(&mut s, 1, "t1", pid, 5, true), 47);
        // A second instance fences the first: its open transaction is aborted.
        let (e, (pid2, epoch2)) = init_producer_id(&mut s, "t1", 60_000);
        assert_eq!((e, pid2, epoch2), (0, pid, 2));
        assert_eq!(end_txn(&mut s, 3, "t1", pid, 0, true), 90);
        // The fenced instance's batches are refused by the partition too.
        assert_eq!(
            produce(&mut s, 9, Some("t1"), "bad", 0, txn_batch(pid, 0, 2, 1)).0,
            47
        );
        // Nothing of the aborted transaction is committed: the stable offset is the end.
        let hw = latest(&mut s, "bad", 0, 0);
        assert_eq!(latest(&mut s, "bad", 0, 1), hw);
        // ListTransactions names it (Empty again: the new instance has no transaction yet).
        let r: ListTransactionsResponse = call(
            &mut s,
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default().with_state_filters(vec![sb("Empty"), sb("Nope")]),
        );
        assert_eq!(r.unknown_state_filters, vec![sb("Nope")]);
        assert_eq!(r.transaction_states.len(), 1);
        assert_eq!(&*r.transaction_states[0].transactional_id.0, "t1");
    });
}

/// The log of `topic`-`partition` holds a transaction of producer `pid` that consumers
/// see as `committed`: read_committed's latest offset reaches the end, and a
/// read_committed fetch from 0 lists the transaction as aborted or not.
fn check_outcome(s: &mut TcpStream, topic: &str, partition: i32, pid: i64, committed: bool) {
    wait_until("the transaction's markers", Duration::from_secs(30), || {
        latest(s, topic, partition, 1) == latest(s, topic, partition, 0)
    });
    let r: FetchResponse = call(
        s,
        ApiKey::Fetch,
        12,
        &FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted: Vec<i64> = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| a.producer_id.0)
        .collect();
    assert_eq!(
        aborted.contains(&pid),
        !committed,
        "aborted list {aborted:?}"
    );
    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
}

#[test]
fn a_broker_killed_mid_transaction_and_mid_commit_finishes_as_its_log_says() {
    with_timeout(180, || {
        let mut b = Broker::start(FLAGS);
        let mut s = connect(&b.addr);
        create_topic(&mut s, "crash", 2);
        // Open: records written, no EndTxn. Killed.
        let (_, (pid, _)) = init_producer_id(&mut s, "open", 60_000);
        assert_eq!(add_partitions(&mut s, "open", pid, 0, "crash", &[0]), 0);
        assert_eq!(
            produce(&mut s, 9, Some("open"), "crash", 0, txn_batch(pid, 0, 0, 3)).0,
            0
        );
        // Committed: EndTxn answered (PrepareCommit logged), the broker killed at once,
        // so the markers may or may not be written.
        let (_, (pid2, _)) = init_producer_id(&mut s, "commit", 60_000);
        assert_eq!(add_partitions(&mut s, "commit", pid2, 0, "crash", &[1]), 0);
        assert_eq!(
            produce(
                &mut s,
                9,
                Some("commit"),
                "crash",
                1,
                txn_batch(pid2, 0, 0, 3)
            )
            .0,
            0
        );
        assert_eq!(end_txn(&mut s, 3, "commit", pid2, 0, true), 0);
        b.kill();
        b.restart();
        let mut s = connect(&b.addr);
        // The committed one is completed by the restarted coordinator.
        check_outcome(&mut s, "crash", 1, pid2, true);
        wait_until("CompleteCommit", Duration::from_secs(30), || {
            describe(&mut s, "commit").1 == "CompleteCommit"
        });
        // The open one is still open (its producer may come back and commit it)...
        let (e, state, _, _) = describe(&mut s, "open");
        assert_eq!((e, state.as_str()), (0, "Ongoing"));
        assert!(latest(&mut s, "crash", 0, 1) < latest(&mut s, "crash", 0, 0));
        // ... until a new instance of the producer fences it: aborted.
        let (e, (_, epoch)) = init_producer_id(&mut s, "open", 60_000);
        assert_eq!((e, epoch), (0, 2));
        check_outcome(&mut s, "crash", 0, pid, false);
    });
}

#[test]
fn transactions_continue_on_a_cluster_whose_coordinator_broker_is_killed() {
    with_timeout(400, || {
        let mut c = crate::cluster::Cluster::start(3, &["--broker-session-timeout-ms", "2000"]);
        let bootstrap = c.bootstrap();
        // The coordinator of the transactional id (asking creates the transaction log).
        let mut s = connect(&c.brokers[0].addr);
        let coordinator = settled(|| {
            let r: FindCoordinatorResponse = call(
                &mut s,
                ApiKey::FindCoordinator,
                3,
                &FindCoordinatorRequest::default()
                    .with_key(sb("cluster-tx"))
                    .with_key_type(1),
            );
            (r.error_code, r.node_id.0)
        });
        assert_eq!(coordinator.0, 0);
        let node = coordinator.1;
        let pid = c.node(node).pid().unwrap().to_string();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/txn_test.py"
        );
        let (status, out, err) = run_cmd(
            Command::new("python3").args([script, "cluster", &bootstrap, &pid]),
            Duration::from_secs(300),
        );
        let logs: Vec<String> = c.brokers.iter().map(|b| b.logs()).collect();
        assert!(
            status.success() && out.contains("OK"),
            "{out}\n{err}\nbroker logs:\n{}",
            logs.join("\n----\n")
        );
        // The killed broker comes back and catches up.
        c.node(node).wait(Duration::from_secs(10));
        c.node(node).restart();
    });
}
