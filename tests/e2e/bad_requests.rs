//! Every API the broker advertises, at every version it advertises, sent bodies a client
//! would never send: its default request (every name empty, every id, count and timeout
//! zero) and mutations of it (a byte or two changed), none at all, all zero bytes (empty names, zero counts and timeouts,
//! null compact fields), all 0xff bytes (lengths of -1: nulls where none may be), and
//! random bytes. Each must get a well-formed answer of its own API and version (whatever
//! error codes it holds), or a logged close of its connection only; no answer at all is
//! right only for a Produce with acks=0. The broker never panics (every e2e test checks
//! its log) and keeps serving.
//!
//! The specific error codes for specific mistakes are checked where each API is tested
//! (protocol.rs, groups.rs, transactions.rs, configs.rs, ...); this sweep is the net under
//! them: no handler trusts a decoded value it should not.

use crate::common::*;
use crate::protocol::{answer_or_close, call, connect, send_raw};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;

/// A request frame (without its size prefix): `key` at `version`, correlation id 1, then
/// `body`.
fn frame(key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bad-requests")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    buf.put_slice(body);
    buf.to_vec()
}

/// ApiVersions v0 with correlation id 2: sent after each bad request on the same
/// connection, so a request that is rightly not answered (acks=0) shows as this answer
/// coming first.
fn probe() -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(0)
        .with_correlation_id(2);
    let mut buf = BytesMut::new();
    header.encode(&mut buf, 1).unwrap();
    buf.to_vec()
}

/// The default request of an API (every field at its default: empty names and lists,
/// zero ids, counts and timeouts), encoded at `version`; None for an API not listed here
/// or a version the defaults cannot be encoded at.
fn default_body(key: ApiKey, version: i16) -> Option<Bytes> {
    macro_rules! defaults {
        ($($api:ident,)*) => {
            match key {
                $(ApiKey::$api => RequestKind::$api(Default::default()),)*
                _ => return None,
            }
        };
    }
    let request = defaults!(
        AddOffsetsToTxn,
        AddPartitionsToTxn,
        AlterConfigs,
        AlterPartitionReassignments,
        ApiVersions,
        ConsumerGroupDescribe,
        ConsumerGroupHeartbeat,
        CreatePartitions,
        CreateTopics,
        DeleteGroups,
        DeleteRecords,
        DeleteTopics,
        DescribeCluster,
        DescribeConfigs,
        DescribeGroups,
        DescribeLogDirs,
        DescribeProducers,
        DescribeTopicPartitions,
        DescribeTransactions,
        ElectLeaders,
        EndTxn,
        Fetch,
        FindCoordinator,
        GetTelemetrySubscriptions,
        Heartbeat,
        IncrementalAlterConfigs,
        InitProducerId,
        JoinGroup,
        LeaveGroup,
        ListGroups,
        ListOffsets,
        ListPartitionReassignments,
        ListTransactions,
        Metadata,
        OffsetCommit,
        OffsetDelete,
        OffsetFetch,
        OffsetForLeaderEpoch,
        Produce,
        PushTelemetry,
        SyncGroup,
        TxnOffsetCommit,
        WriteTxnMarkers,
    );
    let mut buf = BytesMut::new();
    request.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    answered: u32,
    closed: u32,
    unanswered: u32,
}

/// What the broker did with one bad request.
fn send_one(addr: &str, key: ApiKey, version: i16, body: &[u8]) -> &'static str {
    let mut s = connect(addr);
    send_raw(&mut s, &frame(key, version, body));
    send_raw(&mut s, &probe());
    let Some(mut first) = answer_or_close(&mut s) else {
        return "closed";
    };
    let correlation = i32::from_be_bytes(first[..4].try_into().unwrap());
    if correlation == 2 {
        assert!(
            key == ApiKey::Produce,
            "{key:?} v{version} was not answered (body {body:02x?})"
        );
        return "unanswered";
    }
    assert_eq!(
        correlation, 1,
        "{key:?} v{version}: the answer's correlation id"
    );
    // ApiVersions answers a version it does not serve at v0 (KIP-511).
    if key != ApiKey::ApiVersions {
        ResponseHeader::decode(&mut first, key.response_header_version(version)).unwrap();
        let decoded = ResponseKind::decode(key, &mut first, version);
        assert!(
            decoded.is_ok(),
            "{key:?} v{version}: the answer does not decode: {:?} (body {body:02x?})",
            decoded.err()
        );
        assert!(
            first.is_empty(),
            "{key:?} v{version}: {} bytes after the answer",
            first.len()
        );
    }
    // The connection goes on serving.
    let probe_answer = answer_or_close(&mut s);
    assert!(
        probe_answer.is_some_and(|a| a[..4] == 2i32.to_be_bytes()),
        "{key:?} v{version}: the connection stopped serving after an answer"
    );
    "answered"
}

/// Sends every bad body to every advertised API and version of the broker at `addr`;
/// returns the outcomes per API.
fn sweep(addr: &str) -> BTreeMap<String, Outcomes> {
    let mut s = connect(addr);
    let versions: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    // xorshift: the same random bodies every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let mut outcomes: BTreeMap<String, Outcomes> = BTreeMap::new();
    for api in &versions.api_keys {
        let Ok(key) = ApiKey::try_from(api.api_key) else {
            panic!(
                "advertised an API kafka-protocol does not know: {}",
                api.api_key
            );
        };
        for version in api.min_version..=api.max_version {
            // (kafka-protocol cannot encode some versions Kafka 4 dropped, such as
            // Produce v0-2: those get the other bodies only.)
            let mut bodies: Vec<Bytes> = Vec::new();
            if let Some(d) = default_body(key, version) {
                // And mutations of it: a byte or two set to a random value, so that what
                // decodes reaches the handler with odd ids, counts, flags and lengths.
                for _ in 0..8 {
                    let mut m = d.to_vec();
                    for r in random(4).chunks(2) {
                        if !m.is_empty() {
                            let at = r[0] as usize % m.len();
                            m[at] = r[1];
                        }
                    }
                    bodies.push(Bytes::from(m));
                }
                bodies.push(d);
            }
            bodies.extend([
                Bytes::new(),
                Bytes::from(vec![0u8; 64]),
                Bytes::from(vec![0xffu8; 64]),
                Bytes::from(random(16)),
                Bytes::from(random(200)),
            ]);
            for body in &bodies {
                let o = outcomes.entry(format!("{key:?}")).or_default();
                match send_one(addr, key, version, body) {
                    "answered" => o.answered += 1,
                    "closed" => o.closed += 1,
                    _ => o.unanswered += 1,
                }
            }
        }
        // Still serving new connections after each API's bad requests.
        let mut fresh = connect(addr);
        let r: ApiVersionsResponse = call(
            &mut fresh,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        );
        assert_eq!(r.error_code, 0, "after {key:?}");
    }
    let total = outcomes
        .values()
        .fold(Outcomes::default(), |a, o| Outcomes {
            answered: a.answered + o.answered,
            closed: a.closed + o.closed,
            unanswered: a.unanswered + o.unanswered,
        });
    println!(
        "bad requests to {addr} over {} APIs: {total:?}",
        outcomes.len()
    );
    for (api, o) in &outcomes {
        println!("  {api}: {o:?}");
    }
    assert!(outcomes.len() >= 40, "APIs advertised: {}", outcomes.len());
    outcomes
}

#[test]
fn every_api_at_every_version_answers_or_closes_on_bodies_no_client_sends() {
    with_timeout(300, || {
        let b = Broker::start(&["--offsets-topic-partitions", "1"]);
        sweep(&b.addr);
        // Closes are logged (on one line each), never silent.
        assert!(b.logs().contains("closing connection"));
    });
}

#[test]
fn the_same_bad_requests_to_a_broker_of_a_cluster() {
    with_timeout(300, || {
        // Some APIs take other paths in a cluster: forwarded to the active controller,
        // answered for partitions another broker leads.
        let c = crate::cluster::Cluster::start(3, &[]);
        sweep(&c.brokers[1].addr);
        // Every broker still up and in the cluster.
        for b in &c.brokers {
            assert_eq!(crate::cluster::metadata(&b.addr, None).brokers.len(), 3);
        }
    });
}
