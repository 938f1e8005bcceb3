//! Idempotent producers: InitProducerId, duplicates answered with their original offsets,
//! sequence gaps and fenced epochs refused, state kept across restarts and crashes.

use crate::clients::{consumer, producer, Deliveries};
use crate::common::*;
use crate::protocol::*;
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn init_producer_id(s: &mut TcpStream, id: i64, epoch: i16) -> (i16, i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let r: InitProducerIdResponse = call(s, ApiKey::InitProducerId, 4, &req);
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// DescribeProducers v0 of partition 0: its error and (producer id, epoch, last sequence).
fn describe_producers(s: &mut TcpStream, topic: &str) -> (i16, Vec<(i64, i32, i32)>) {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let r: DescribeProducersResponse = call(
        s,
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![0])]),
    );
    let p = &r.topics[0].partitions[0];
    (
        p.error_code,
        p.active_producers
            .iter()
            .map(|a| (a.producer_id.0, a.producer_epoch, a.last_sequence))
            .collect(),
    )
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let mut b =
        runnel_record::builder::BatchBuilder::new(1_700_000_000_000).producer(pid, epoch, seq);
    for i in 0..n {
        let v = format!("p{pid}e{epoch}s{}", seq as usize + i);
        b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    Bytes::from(b.build())
}

/// The encoded Produce v9 acks=-1 request, so a test can send the very same bytes twice.
fn produce_frame(topic: &'static str, records: Bytes) -> Vec<u8> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    encode_request(ApiKey::Produce, 9, 7, &req)
}

fn send_produce(s: &mut TcpStream, frame: &[u8]) -> (i16, i64) {
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    send_raw(s, frame);
    let mut resp = read_response(s).expect("a produce response");
    ResponseHeader::decode(&mut resp, ProduceResponse::header_version(9)).unwrap();
    let r = ProduceResponse::decode(&mut resp, 9).unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end(s: &mut TcpStream, topic: &'static str) -> i64 {
    let r: FetchResponse = call(
        s,
        ApiKey::Fetch,
        12,
        &fetch_request(topic, &[(0, 0, 1)], 0, 0, 1),
    );
    fetch_parts(&r)[0].2
}

#[test]
fn duplicates_gaps_and_fenced_epochs_over_raw_requests_and_across_restarts() {
    with_timeout(120, || {
        let mut b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "idem");
        let (err, pid, epoch) = init_producer_id(&mut s, -1, -1);
        assert_eq!((err, epoch), (0, 0));
        assert!(pid >= 0);

        let first = produce_frame("idem", idempotent_batch(pid, 0, 0, 3));
        assert_eq!(send_produce(&mut s, &first), (0, 0));
        assert_eq!(
            send_produce(
                &mut s,
                &produce_frame("idem", idempotent_batch(pid, 0, 3, 2))
            ),
            (0, 3)
        );
        // The captured first request again: its original offsets, nothing written.
        assert_eq!(send_produce(&mut s, &first), (0, 0));
        assert_eq!(log_end(&mut s, "idem"), 5);
        assert_eq!(segment_batches(&b.partition_dir("idem", 0)).len(), 2);
        // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing written.
        assert_eq!(
            send_produce(
                &mut s,
                &produce_frame("idem", idempotent_batch(pid, 0, 9, 1))
            )
            .0,
            45
        );
        assert_eq!(log_end(&mut s, "idem"), 5);
        // DescribeProducers (kafka-transactions describe-producers) sees it.
        assert_eq!(describe_producers(&mut s, "idem"), (0, vec![(pid, 0, 4)]));
        assert_eq!(describe_producers(&mut s, "nope").0, 3);

        // KIP-360: the same id with the next epoch; the old epoch is then fenced.
        assert_eq!(init_producer_id(&mut s, pid, 0), (0, pid, 1));
        let bumped = produce_frame("idem", idempotent_batch(pid, 1, 0, 1));
        assert_eq!(send_produce(&mut s, &bumped), (0, 5));
        assert_eq!(describe_producers(&mut s, "idem"), (0, vec![(pid, 1, 0)]));
        assert_eq!(
            send_produce(
                &mut s,
                &produce_frame("idem", idempotent_batch(pid, 0, 5, 1))
            )
            .0,
            47
        );
        // A new epoch must start at sequence 0.
        assert_eq!(
            send_produce(
                &mut s,
                &produce_frame("idem", idempotent_batch(pid, 2, 4, 1))
            )
            .0,
            45
        );
        // An id this broker never issued.
        assert_eq!(init_producer_id(&mut s, pid + 1_000_000, 0).0, 49);

        // A clean restart keeps the state (snapshot at close)...
        assert!(b.stop().success());
        b.restart();
        let mut s = connect(&b.addr);
        assert_eq!(
            send_produce(&mut s, &bumped),
            (0, 5),
            "duplicate after a clean restart"
        );
        let next = produce_frame("idem", idempotent_batch(pid, 1, 1, 1));
        assert_eq!(send_produce(&mut s, &next), (0, 6));
        // ...and so does a crash (snapshot plus the batches appended after it).
        b.kill();
        b.restart();
        let mut s = connect(&b.addr);
        assert_eq!(
            send_produce(&mut s, &next),
            (0, 6),
            "duplicate after a crash"
        );
        assert_eq!(log_end(&mut s, "idem"), 7);
        // Producer ids are never handed out twice, across restarts too.
        let (err, pid2, _) = init_producer_id(&mut s, -1, -1);
        assert_eq!(err, 0);
        assert!(pid2 > pid, "{pid2} > {pid}");
    });
}

/// Produces `values` (u32 BE) to `topic` partition value % 3 with librdkafka's idempotent
/// producer; returns the delivery reports.
fn produce_idempotent(addr: &str, topic: &str, values: std::ops::Range<u32>) -> Deliveries {
    let (p, d): (BaseProducer<Deliveries>, Deliveries) = producer(
        addr,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "120000"),
            ("retry.backoff.ms", "50"),
        ],
    );
    let bufs: Vec<[u8; 4]> = values.clone().map(|v| v.to_be_bytes()).collect();
    for (v, buf) in values.zip(bufs.iter()) {
        let mut r = BaseRecord::to(topic)
            .partition((v % 3) as i32)
            .payload(&buf[..])
            .key(&b"k"[..]);
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(150)).expect("flush");
    d
}

/// Every value on the 3 partitions, per partition in offset order.
fn consume_all(addr: &str, topic: &str, n: usize) -> Vec<Vec<u32>> {
    let c = consumer(addr, &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < n {
        assert!(Instant::now() < deadline, "consumed {got} of {n}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out[m.partition() as usize]
                .push(u32::from_be_bytes(m.payload().unwrap().try_into().unwrap()));
            got += 1;
        }
    }
    // Nothing more arrives (no duplicates beyond n).
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            panic!(
                "unexpected extra record at {}:{}",
                m.partition(),
                m.offset()
            );
        }
    }
    out
}

#[test]
fn librdkafka_idempotent_100k_records_land_exactly_once_in_order() {
    with_timeout(240, || {
        let b = Broker::start(&["--default-partitions", "3", "--cores", "2"]);
        let d = produce_idempotent(&b.addr, "exactly-once", 0..100_000);
        let reports = d.0.lock().unwrap().clone();
        assert_eq!(reports.len(), 100_000);
        assert!(
            reports.iter().all(|r| r.is_ok()),
            "every record acknowledged"
        );
        let parts = consume_all(&b.addr, "exactly-once", 100_000);
        for (p, values) in parts.iter().enumerate() {
            let want: Vec<u32> = (0..100_000).filter(|v| v % 3 == p as u32).collect();
            assert_eq!(values, &want, "partition {p}: exactly once, in order");
        }
        // The batches carry the producer id the broker issued.
        let stored = segment_batches(&b.partition_dir("exactly-once", 0));
        assert!(!stored.is_empty());
    });
}

#[test]
fn a_crash_in_the_middle_of_an_idempotent_stream_leaves_no_duplicates_and_no_gaps() {
    with_timeout(300, || {
        let mut b = Broker::start(&["--default-partitions", "3", "--segment-bytes", "262144"]);
        let addr = b.addr.clone();
        let total = 60_000u32;
        let producer = std::thread::spawn(move || produce_idempotent(&addr, "crashy", 0..total));
        // Let part of the stream land, then SIGKILL and restart on the same port.
        let mut s = connect(&b.addr);
        wait_until("some records are written", Duration::from_secs(60), || {
            let r: FetchResponse = call(
                &mut s,
                ApiKey::Fetch,
                12,
                &fetch_request("crashy", &[(0, 0, 1)], 0, 0, 1),
            );
            fetch_parts(&r).first().is_some_and(|p| p.2 > 2000)
        });
        b.kill();
        std::thread::sleep(Duration::from_millis(300));
        b.restart();
        let d = producer.join().unwrap();
        let reports = d.0.lock().unwrap().clone();
        let ok = reports.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok,
            total as usize,
            "librdkafka retried every record to success: {:?}",
            reports.iter().find(|r| r.is_err())
        );
        let parts = consume_all(&b.addr, "crashy", total as usize);
        for (p, values) in parts.iter().enumerate() {
            let want: Vec<u32> = (0..total).filter(|v| v % 3 == p as u32).collect();
            assert_eq!(
                values.len(),
                want.len(),
                "partition {p}: no duplicates, no gaps"
            );
            assert_eq!(values, &want, "partition {p}: in order");
        }
    });
}
