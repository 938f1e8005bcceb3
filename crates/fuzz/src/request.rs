//! Request frames (the bytes after the size prefix): the header check and decode the broker
//! runs first ([`runnel_protocol::parse_header`]), then the body decode of the request's API
//! at its version, through [`runnel_protocol::Request::decode_body`] as the handlers call
//! it. Every API and version the broker serves is reachable: the first bytes pick them.

use bytes::Bytes;
use kafka_protocol::messages::*;
use runnel_protocol::{parse_header, Request};
use std::rc::Rc;

pub fn run(data: &[u8]) {
    thread_local! {
        static HOST: Rc<str> = "/127.0.0.1".into();
    }
    let frame = Bytes::copy_from_slice(data);
    let Ok(req) = HOST.with(|h| parse_header(frame, h)) else {
        return; // refused with a close or UNSUPPORTED_VERSION: an answer, not a panic
    };
    assert!(runnel_protocol::wire::supported_range(req.api_key).is_some());
    let _ = decode(&req);
}

/// The body decode of `req`'s API, as its handler runs it.
pub fn decode(req: &Request) -> Result<(), String> {
    macro_rules! body {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match req.api_key {
                $(ApiKey::$key => req.decode_body::<$ty>().map(drop),)*
                other => Err(format!("{other:?} is not served")),
            }
        };
    }
    body! {
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        FindCoordinator => FindCoordinatorRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        DescribeCluster => DescribeClusterRequest,
        ElectLeaders => ElectLeadersRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest,
        DescribeProducers => DescribeProducersRequest,
        DescribeTopicPartitions => DescribeTopicPartitionsRequest,
        InitProducerId => InitProducerIdRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest,
        EndTxn => EndTxnRequest,
        WriteTxnMarkers => WriteTxnMarkersRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest,
        PushTelemetry => PushTelemetryRequest,
    }
}

/// Seeds: a default request of every served API at its lowest and highest version, encoded
/// by kafka-protocol (the e2e harness's captures of real clients are in fuzz/corpus).
pub fn seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
    fn enc<T: Encodable + HeaderVersion + Default>(key: ApiKey, v: i16) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")));
        let mut buf = bytes::BytesMut::new();
        if header
            .encode(&mut buf, key.request_header_version(v))
            .is_err()
        {
            return Vec::new();
        }
        if T::default().encode(&mut buf, v).is_err() {
            return Vec::new();
        }
        buf.to_vec()
    }
    let mut out = Vec::new();
    for &(key, lo, hi) in runnel_protocol::wire::SUPPORTED {
        for v in [lo, hi] {
            macro_rules! seed {
                ($($k:ident => $ty:ty),* $(,)?) => {
                    match key {
                        $(ApiKey::$k => enc::<$ty>(key, v),)*
                        _ => Vec::new(),
                    }
                };
            }
            let s = seed! {
                Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
                Metadata => MetadataRequest, FindCoordinator => FindCoordinatorRequest,
                ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
                DeleteTopics => DeleteTopicsRequest, JoinGroup => JoinGroupRequest,
                SyncGroup => SyncGroupRequest, OffsetCommit => OffsetCommitRequest,
                OffsetFetch => OffsetFetchRequest, InitProducerId => InitProducerIdRequest,
                AddPartitionsToTxn => AddPartitionsToTxnRequest, EndTxn => EndTxnRequest,
                TxnOffsetCommit => TxnOffsetCommitRequest,
                ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
                DescribeConfigs => DescribeConfigsRequest,
                IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
            };
            if !s.is_empty() {
                out.push(s);
            }
        }
    }
    out
}
