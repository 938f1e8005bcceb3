//! Requests and restarts that used to crash the broker or lose acknowledged data, against the
//! real binary over raw sockets.

use crate::common::*;
use crate::protocol::{batch, call, connect, create_via_metadata, fetch_parts, fetch_request};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::net::TcpStream;
use std::time::Duration;

const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_RECORD: i16 = 87;

/// A producer batch of `kib` KiB flagged with `codec` whose header claims `claim` records
/// (with a matching lastOffsetDelta and a valid CRC): the broker never inflates compressed
/// batches, so only the claim's consistency and plausibility can be checked.
fn claiming(claim: i32, codec: i16, kib: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..kib).map(|i| vec![i as u8; 1000]).collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    let mut b = BytesMut::from(&batch(&refs)[..]);
    b[21..23].copy_from_slice(&codec.to_be_bytes()); // attributes: the codec
    b[23..27].copy_from_slice(&(claim - 1).to_be_bytes()); // lastOffsetDelta
    b[57..61].copy_from_slice(&claim.to_be_bytes()); // recordCount
    runnel_record::set_crc(&mut b);
    b.freeze()
}

/// (error code, base offset) of a one-partition produce.
fn produce_one(s: &mut TcpStream, topic: &'static str, records: Bytes) -> (i16, i64) {
    let r = crate::protocol::produce_to(s, 9, vec![(topic, 0, records)]);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn a_produce_claiming_billions_of_records_is_refused_and_the_broker_serves_on() {
    with_timeout(90, || {
        let mut b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "claims");
        // The request that stopped the broker: three ~5 KB gzip batches to one partition,
        // each claiming 2^31-1 records. Refused (5 KB of gzip cannot hold that many), and so
        // is one of them alone.
        let mut three = BytesMut::new();
        for _ in 0..3 {
            three.extend_from_slice(&claiming(i32::MAX, 1, 5));
        }
        assert_eq!(
            produce_one(&mut s, "claims", three.freeze()),
            (INVALID_RECORD, -1)
        );
        assert_eq!(
            produce_one(&mut s, "claims", claiming(i32::MAX, 1, 5)),
            (INVALID_RECORD, -1)
        );
        // Plausible claims (120 KB of zstd) whose sum passes a segment's offset range in one
        // request: refused too.
        let mut two = BytesMut::new();
        for _ in 0..2 {
            two.extend_from_slice(&claiming(i32::MAX, 4, 120));
        }
        assert_eq!(
            produce_one(&mut s, "claims", two.freeze()),
            (INVALID_RECORD, -1)
        );
        assert_eq!(segment_batches(&b.partition_dir("claims", 0)), vec![]);

        // One request each, each gets its own segment's offset range: nothing wraps.
        let max = i64::from(i32::MAX);
        for i in 0..3 {
            assert_eq!(
                produce_one(&mut s, "claims", claiming(i32::MAX, 4, 120)),
                (0, i * max)
            );
        }
        assert_eq!(
            produce_one(&mut s, "claims", batch(&[b"after"])),
            (0, 3 * max)
        );
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("claims", &[(0, 3 * max, 1 << 20)], 0, 0, 1 << 20),
        );
        let parts = fetch_parts(&r);
        assert_eq!((parts[0].1, parts[0].2), (0, 3 * max + 1));
        assert!(parts[0].4 > 0, "the record after the claims is served");

        // A crash and full recovery of those segments: same log end, still serving.
        b.kill();
        b.restart();
        let mut s = connect(&b.addr);
        assert_eq!(
            produce_one(&mut s, "claims", batch(&[b"again"])),
            (0, 3 * max + 1)
        );
        assert!(!b.logs().contains("panicked"), "{}", b.logs());
    });
}

#[test]
fn delete_records_on_consumer_offsets_is_refused_and_commits_survive_a_restart() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    with_timeout(60, || {
        let mut b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "orders");
        // A standalone commit (an empty group, as kafka-consumer-groups --reset-offsets does).
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("keep")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42)])]);
        let r: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit);
        assert_eq!(r.topics[0].partitions[0].error_code, 0);

        let delete = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("__consumer_offsets")))
                .with_partitions(
                    (0..50)
                        .map(|p| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(p)
                                .with_offset(-1)
                        })
                        .collect(),
                )]);
        let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &delete);
        let codes: Vec<i16> = r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![INVALID_TOPIC_EXCEPTION; 50]);

        // The commit is replayed from __consumer_offsets after a restart.
        assert!(b.stop().success());
        b.restart();
        let mut s = connect(&b.addr);
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("keep")))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_indexes(vec![0])]));
        let mut committed = -1;
        wait_until("the offsets are loaded", Duration::from_secs(10), || {
            let r: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 7, &fetch);
            committed = r.topics[0].partitions[0].committed_offset;
            r.error_code == 0
        });
        assert_eq!(committed, 42);
    });
}

#[test]
fn the_clean_shutdown_marker_is_gone_before_any_partition_opens() {
    with_timeout(90, || {
        let mut b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "m");
        assert_eq!(produce_one(&mut s, "m", batch(&[b"kept"])), (0, 0));
        assert!(b.stop().success());
        let marker = b.dir.join(".runnel_cleanshutdown");
        assert!(marker.exists(), "a clean stop leaves the marker");

        // The next start cannot open a partition: it goes on without it (the partition is
        // offline), and by then the marker must be gone (and its removal synced), or a
        // crash of that start would let the start after it skip recovery of files written
        // meanwhile.
        let bad = b.partition_dir("m", 0).join("00000000000000000099.log");
        std::fs::create_dir(&bad).unwrap();
        b.restart();
        assert!(
            !marker.exists(),
            "the marker outlived a start that opened partitions"
        );
        wait_until("m-0 offline", Duration::from_secs(20), || {
            b.logs()
                .contains("cannot open the partition's log, it is offline")
        });
        b.kill();

        std::fs::remove_dir(&bad).unwrap();
        b.restart();
        assert!(b.logs().contains("clean_shutdown=false"), "{}", b.logs());
        let mut s = connect(&b.addr);
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("m", &[(0, 0, 1 << 20)], 0, 0, 1 << 20),
        );
        assert_eq!(fetch_parts(&r)[0].2, 1, "the acknowledged record is there");
    });
}
