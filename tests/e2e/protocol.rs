//! The protocol traps and bad input, over raw sockets with kafka-protocol's encoders.

use crate::common::*;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub(crate) fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

pub(crate) fn send_raw(s: &mut TcpStream, frame: &[u8]) {
    let mut buf = Vec::with_capacity(frame.len() + 4);
    buf.extend_from_slice(&(frame.len() as i32).to_be_bytes());
    buf.extend_from_slice(frame);
    s.write_all(&buf).unwrap();
}

pub(crate) fn encode_request<T: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("e2e")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Reads one response frame; None if the broker closed the connection.
pub(crate) fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return None;
    }
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(Bytes::from(buf))
}

/// Reads one response frame; None if the broker closed the connection. Unlike
/// [`read_response`], a read that times out fails the test: no answer is not a close.
pub(crate) fn answer_or_close(s: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    let started = std::time::Instant::now();
    let check = |e: std::io::Error| {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "no answer and no close after {:?}",
            started.elapsed()
        );
    };
    if let Err(e) = s.read_exact(&mut size) {
        check(e);
        return None;
    }
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    if let Err(e) = s.read_exact(&mut buf) {
        check(e);
        return None;
    }
    Some(Bytes::from(buf))
}

pub(crate) fn call<Req, Resp>(s: &mut TcpStream, key: ApiKey, version: i16, body: &Req) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    send_raw(s, &encode_request(key, version, 7, body));
    let mut resp = read_response(s).expect("a response");
    let header = ResponseHeader::decode(&mut resp, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let r = Resp::decode(&mut resp, version).unwrap();
    assert!(!resp.has_remaining(), "no trailing bytes");
    r
}

fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!("expected the connection to be closed"),
    }
}

fn still_serves(addr: &str) {
    let mut s = connect(addr);
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(r.error_code, 0);
}

#[test]
fn api_versions_v3_has_a_v0_header_and_no_default_tagged_fields() {
    with_timeout(60, || {
        let b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        send_raw(
            &mut s,
            &encode_request(ApiKey::ApiVersions, 3, 11, &ApiVersionsRequest::default()),
        );
        let mut resp = read_response(&mut s).unwrap();
        // Header v0: the correlation id and nothing else (no tagged-field byte).
        assert_eq!(resp.get_i32(), 11);
        let body = resp.clone();
        let r = ApiVersionsResponse::decode(&mut resp, 3).unwrap();
        assert_eq!(r.error_code, 0);
        // The body ends with throttle_time_ms and an empty tagged-field section: the default
        // features fields are left out, as Apache Kafka does.
        assert_eq!(&body[body.len() - 5..], &[0, 0, 0, 0, 0]);
        let range = |k: ApiKey| {
            r.api_keys
                .iter()
                .find(|v| v.api_key == k as i16)
                .map(|v| (v.min_version, v.max_version))
        };
        assert_eq!(range(ApiKey::Produce), Some((0, 11)));
        assert_eq!(range(ApiKey::Fetch), Some((4, 16)));
        assert_eq!(range(ApiKey::Metadata), Some((0, 12)));
        assert_eq!(range(ApiKey::ApiVersions), Some((0, 4)));
        // Served but not advertised, as Kafka without a client-metrics plugin: clients do
        // not ask for a telemetry subscription on every connection.
        assert_eq!(range(ApiKey::GetTelemetrySubscriptions), None);
        assert_eq!(range(ApiKey::PushTelemetry), None);
    });
}

#[test]
fn api_versions_of_an_unknown_version_gets_unsupported_version_and_the_list() {
    with_timeout(60, || {
        let b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        // Version 99: the body is unknowable, so only the header is sent.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(99);
        frame.put_i32(5);
        frame.put_i16(-1);
        frame.put_slice(&[0; 8]);
        send_raw(&mut s, &frame);
        let mut resp = read_response(&mut s).unwrap();
        assert_eq!(resp.get_i32(), 5);
        let r = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
        assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
        assert!(r
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));
        // The connection stays usable for the retry at a supported version.
        let r: ApiVersionsResponse = call(
            &mut s,
            ApiKey::ApiVersions,
            0,
            &ApiVersionsRequest::default(),
        );
        assert_eq!(r.error_code, 0);
    });
}

#[test]
fn metadata_advertises_the_ipv4_listener_and_auto_creates() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "2"]);
        let mut s = connect(&b.addr);
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("auto"))))]))
            .with_allow_auto_topic_creation(true);
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
        let port: i32 = b.addr.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(&*r.brokers[0].host, "127.0.0.1");
        assert_eq!(r.brokers[0].port, port);
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].partitions.len(), 2);
        let id = r.topics[0].topic_id;
        assert!(!id.is_nil());
        // By id, with an empty name beside it as the Java client sends.
        let req =
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
                .with_topic_id(id)
                .with_name(Some(TopicName(StrBytes::from_static_str(""))))]));
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].name.as_ref().map(|n| n.as_str()), Some("auto"));
        // Without permission to create: UNKNOWN_TOPIC_OR_PARTITION.
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("nope"))))]))
            .with_allow_auto_topic_creation(false);
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
        assert_eq!(r.topics[0].error_code, 3);
        // An invalid name: INVALID_TOPIC_EXCEPTION, never created.
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("bad/name"))))]))
            .with_allow_auto_topic_creation(true);
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 4, &req);
        assert_eq!(r.topics[0].error_code, 17);
    });
}

pub(crate) fn batch(records: &[&[u8]]) -> Bytes {
    let mut b = runnel_record::builder::BatchBuilder::new(1_700_000_000_000);
    for r in records {
        b.append(1_700_000_000_000, None, Some(r), &[]);
    }
    Bytes::from(b.build())
}

/// A batch of `n` records whose values are `tag`, their index, and padding to `size`
/// bytes each (checks find each record by its value); the batch and the values.
pub(crate) fn tagged_batch(tag: u32, n: u32, size: usize) -> (Bytes, Vec<Vec<u8>>) {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut v = format!("{tag}:{i}:").into_bytes();
            v.resize(size, b'.');
            v
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
    (batch(&refs), values)
}

pub(crate) fn produce_to(
    s: &mut TcpStream,
    version: i16,
    parts: Vec<(&'static str, i32, Bytes)>,
) -> ProduceResponse {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (t, p, records) in parts {
        let data = PartitionProduceData::default()
            .with_index(p)
            .with_records(Some(records));
        match topics.iter_mut().find(|x| &*x.name.0 == t) {
            Some(x) => x.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(t)))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(topics);
    call(s, ApiKey::Produce, version, &req)
}

#[test]
fn a_corrupt_batch_is_rejected_for_its_partition_only_and_nothing_of_it_is_written() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "2"]);
        let mut s = connect(&b.addr);
        // Create the topic through Metadata.
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("mixed"))))]));
        let _: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            9,
            &req.with_allow_auto_topic_creation(true),
        );
        let good = batch(&[b"one", b"two"]);
        let mut bad = BytesMut::from(&batch(&[b"three"])[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // CRC no longer matches
        let r = produce_to(
            &mut s,
            9,
            vec![
                ("mixed", 0, good),
                ("mixed", 1, bad.freeze()),
                ("missing", 0, batch(&[b"x"])),
            ],
        );
        let parts: Vec<(i32, i16, i64)> = r
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(|p| (p.index, p.error_code, p.base_offset))
            })
            .collect();
        assert_eq!(parts, vec![(0, 0, 0), (1, 2, -1), (0, 3, -1)]);
        assert_eq!(segment_batches(&b.partition_dir("mixed", 1)), vec![]);
        assert_eq!(segment_batches(&b.partition_dir("mixed", 0)).len(), 1);
        // Too large for max.message.bytes: MESSAGE_TOO_LARGE.
        let huge = batch(&[&vec![7u8; 1_100_000]]);
        let r = produce_to(&mut s, 9, vec![("mixed", 0, huge)]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 10);
    });
}

#[test]
fn produce_v2_message_formats_are_refused_with_a_logged_close() {
    with_timeout(60, || {
        let b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Produce as i16);
        frame.put_i16(2);
        frame.put_i32(1);
        frame.put_i16(-1);
        frame.put_slice(&[0, 1, 0, 0, 0x13, 0x88, 0, 0, 0, 0]);
        send_raw(&mut s, &frame);
        assert_closed(&mut s);
        wait_until("the refusal is logged", Duration::from_secs(5), || {
            b.logs().contains("unsupported version 2 of Produce")
        });
        still_serves(&b.addr);
    });
}

#[test]
fn oversized_and_garbage_frames_close_only_their_connection() {
    with_timeout(60, || {
        let b = Broker::start(&["--max-request-bytes", "1048576"]);
        let mut other = connect(&b.addr);
        let _: ApiVersionsResponse = call(
            &mut other,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        );

        // A frame announcing 200 MB.
        let mut s = connect(&b.addr);
        s.write_all(&(200_000_000i32).to_be_bytes()).unwrap();
        assert_closed(&mut s);
        wait_until("oversize logged", Duration::from_secs(5), || {
            b.logs().contains("exceeds --max-request-bytes")
        });
        // A negative size.
        let mut s = connect(&b.addr);
        s.write_all(&(-5i32).to_be_bytes()).unwrap();
        assert_closed(&mut s);
        // An unknown API key: the close is logged with the client id.
        let mut s = connect(&b.addr);
        send_raw(
            &mut s,
            &[
                0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 5, b'p', b'r', b'o', b'b', b'e',
            ],
        );
        assert_closed(&mut s);
        wait_until("the unknown API logged", Duration::from_secs(5), || {
            b.logs()
                .contains("unknown API key 32639 (client id \"probe\")")
        });
        // Random bytes as a Metadata body.
        let mut s = connect(&b.addr);
        let mut frame = vec![0, 3, 0, 9, 0, 0, 0, 1, 0, 0];
        frame.extend((0..300u32).map(|i| (i * 31 % 256) as u8));
        send_raw(&mut s, &frame);
        assert_closed(&mut s);
        // Array counts and string lengths far beyond the frame: a Metadata v0 announcing 2^31
        // topics, a Produce with a 2 GiB transactional id. Refused, never allocated.
        for frame in [
            &[0u8, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff][..],
            &[
                0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0x80, 0x80, 0x80, 0x80, 0x08,
            ][..],
            &[
                0, 1, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
            ][..],
        ] {
            let mut s = connect(&b.addr);
            send_raw(&mut s, frame);
            assert_closed(&mut s);
        }
        // A frame shorter than a header, and a truncated one.
        let mut s = connect(&b.addr);
        send_raw(&mut s, &[1, 2]);
        assert_closed(&mut s);
        let mut s = connect(&b.addr);
        s.write_all(&100i32.to_be_bytes()).unwrap();
        s.write_all(&[0; 10]).unwrap();
        drop(s);

        // The first connection and new ones still work.
        let r: ApiVersionsResponse = call(
            &mut other,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        );
        assert_eq!(r.error_code, 0);
        still_serves(&b.addr);
        assert!(b.metric_sum("request_errors") >= 4);
    });
}

#[test]
fn bad_flags_exit_with_code_2_and_a_message() {
    with_timeout(60, || {
        for args in [
            vec!["--cores", "zero"],
            vec!["--listen", "nowhere"],
            vec!["--segment-bytes", "10"],
            vec!["--zero-copy", "maybe"],
            vec!["--no-such-flag"],
        ] {
            let (status, _, err) = run_cmd(
                std::process::Command::new(BIN).args(&args),
                Duration::from_secs(20),
            );
            assert_eq!(status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains("error:"), "{args:?}: {err}");
        }
        let (status, out, _) = run_cmd(
            std::process::Command::new(BIN).arg("--help"),
            Duration::from_secs(20),
        );
        assert!(status.success());
        for flag in [
            "--listen",
            "--advertised-listener",
            "--data-dir",
            "--cores",
            "--segment-bytes",
            "--segment-ms",
            "--retention-ms",
            "--retention-bytes",
            "--flush-interval-messages",
            "--flush-interval-ms",
            "--auto-create-topics",
            "--default-partitions",
            "--max-request-bytes",
            "--metrics-listen",
            "--log-level",
            "--zero-copy",
        ] {
            assert!(out.contains(flag), "--help explains {flag}");
        }
    });
}

pub(crate) fn create_via_metadata(s: &mut TcpStream, topic: &'static str) -> [u8; 16] {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(topic))))]))
        .with_allow_auto_topic_creation(true);
    let r: MetadataResponse = call(s, ApiKey::Metadata, 12, &req);
    assert_eq!(r.topics[0].error_code, 0);
    *r.topics[0].topic_id.as_bytes()
}

pub(crate) fn fetch_request(
    topic: &'static str,
    parts: &[(i32, i64, i32)],
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(
                parts
                    .iter()
                    .map(|(p, o, max)| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(*o)
                            .with_partition_max_bytes(*max)
                    })
                    .collect(),
            )])
}

/// (partition, error, high watermark, log start offset, record bytes) per partition.
pub(crate) fn fetch_parts(r: &FetchResponse) -> Vec<(i32, i16, i64, i64, usize)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    p.partition_index,
                    p.error_code,
                    p.high_watermark,
                    p.log_start_offset,
                    p.records.as_ref().map_or(0, |r| r.len()),
                )
            })
        })
        .collect()
}

#[test]
fn fetch_limits_out_of_range_and_long_polling_woken_by_an_append() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "2", "--cores", "2"]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "lp");
        // Three batches of ~10 KB in each partition.
        let big = vec![9u8; 10_000];
        for _ in 0..3 {
            let r = produce_to(
                &mut s,
                9,
                vec![("lp", 0, batch(&[&big])), ("lp", 1, batch(&[&big]))],
            );
            assert!(r.responses[0]
                .partition_responses
                .iter()
                .all(|p| p.error_code == 0));
        }
        let one = batch(&[&big]).len();

        // max_bytes across partitions: the first partition gets its first batch even though
        // it is larger than the limit (KIP-74), the second nothing.
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("lp", &[(0, 0, 1 << 20), (1, 0, 1 << 20)], 0, 0, 100),
        );
        assert_eq!(fetch_parts(&r), vec![(0, 0, 3, 0, one), (1, 0, 3, 0, 0)]);
        // partition_max_bytes: two whole batches fit in 2.5 batches' worth, not three.
        let limit = (one * 5 / 2) as i32;
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            11,
            &fetch_request("lp", &[(0, 0, limit), (1, 1, limit)], 0, 0, 1 << 20),
        );
        assert_eq!(
            fetch_parts(&r),
            vec![(0, 0, 3, 0, 2 * one), (1, 0, 3, 0, 2 * one)]
        );
        // Out of range: the error with the log's bounds.
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("lp", &[(0, 99, 1 << 20)], 0, 0, 1 << 20),
        );
        assert_eq!(fetch_parts(&r), vec![(0, 1, 3, 0, 0)]);
        // Unknown partition.
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            4,
            &fetch_request("lp", &[(7, 0, 1 << 20)], 0, 0, 1 << 20),
        );
        assert_eq!(fetch_parts(&r)[0].1, 3);

        // Long poll at the end of partition 1: answered when an append arrives, not at the
        // 20 s max_wait.
        let addr = b.addr.clone();
        let started = std::time::Instant::now();
        let waiter = std::thread::spawn(move || {
            let mut s = connect(&addr);
            let r: FetchResponse = call(
                &mut s,
                ApiKey::Fetch,
                12,
                &fetch_request(
                    "lp",
                    &[(0, 3, 1 << 20), (1, 3, 1 << 20)],
                    20_000,
                    1,
                    1 << 20,
                ),
            );
            (fetch_parts(&r), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "the fetch waits for data");
        let r = produce_to(&mut s, 9, vec![("lp", 1, batch(&[b"wake up"]))]);
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 3);
        let (parts, waited) = waiter.join().unwrap();
        assert!(
            waited < Duration::from_secs(10),
            "woken by the append after {waited:?}"
        );
        assert_eq!(parts[1].0, 1);
        assert_eq!(parts[1].4, batch(&[b"wake up"]).len());
        // And with nothing arriving, max_wait_ms is honoured.
        let t = std::time::Instant::now();
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("lp", &[(0, 3, 1 << 20)], 300, 1, 1 << 20),
        );
        assert_eq!(fetch_parts(&r), vec![(0, 0, 3, 0, 0)]);
        assert!(t.elapsed() >= Duration::from_millis(250));
    });
}

#[test]
fn list_offsets_leader_epochs_describe_cluster_and_magic_v1_batches() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    with_timeout(60, || {
        let b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "lo");
        for _ in 0..4 {
            produce_to(&mut s, 9, vec![("lo", 0, batch(&[b"a", b"b"]))]);
        }
        let list = |s: &mut TcpStream, version: i16, ts: i64| -> (i16, i64, i64) {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("lo")))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts)])]);
            let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, version, &req);
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.offset, p.timestamp)
        };
        assert_eq!(list(&mut s, 1, -2), (0, 0, -1));
        assert_eq!(list(&mut s, 8, -1), (0, 8, -1));
        assert_eq!(list(&mut s, 7, -3).0, 0, "max timestamp");
        assert_eq!(
            list(&mut s, 5, 1_700_000_000_000),
            (0, 0, 1_700_000_000_000)
        );
        assert_eq!(list(&mut s, 5, 1_800_000_000_000), (0, -1, -1));

        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("lo")))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_leader_epoch(0)
                        .with_current_leader_epoch(0),
                    OffsetForLeaderPartition::default()
                        .with_partition(5)
                        .with_leader_epoch(0),
                ])]);
        let r: OffsetForLeaderEpochResponse = call(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &req);
        let p = &r.topics[0].partitions;
        assert_eq!(
            (p[0].error_code, p[0].leader_epoch, p[0].end_offset),
            (0, 0, 8)
        );
        assert_eq!(p[1].error_code, 3);

        let r: DescribeClusterResponse = call(
            &mut s,
            ApiKey::DescribeCluster,
            1,
            &DescribeClusterRequest::default(),
        );
        assert_eq!(r.error_code, 0);
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(&*r.brokers[0].host, "127.0.0.1");
        assert!(!r.cluster_id.is_empty());

        // Only RecordBatch v2: a batch claiming magic 1 is refused and not written.
        let mut old = BytesMut::from(&batch(&[b"old"])[..]);
        old[16] = 1;
        let r = produce_to(&mut s, 9, vec![("lo", 0, old.freeze())]);
        assert_ne!(r.responses[0].partition_responses[0].error_code, 0);
        assert_eq!(list(&mut s, 8, -1), (0, 8, -1));
    });
}

#[test]
fn delete_records_survives_a_crash_once_checkpointed() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    with_timeout(60, || {
        let mut b = Broker::start(&["--checkpoint-interval-ms", "200"]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "dr");
        for _ in 0..10 {
            produce_to(
                &mut s,
                9,
                vec![(
                    "dr",
                    0,
                    batch(&[b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", b"10"]),
                )],
            );
        }
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("dr")))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(55)])]);
        let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, 55));
        let ck = b.dir.join("log-start-offset-checkpoint");
        wait_until(
            "the log start offset is checkpointed",
            Duration::from_secs(10),
            || std::fs::read_to_string(&ck).is_ok_and(|t| t.contains("dr 0 55")),
        );
        b.kill();
        b.restart();
        let mut s = connect(&b.addr);
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("dr", &[(0, 0, 1 << 20)], 0, 0, 1 << 20),
        );
        assert_eq!(
            fetch_parts(&r),
            vec![(0, 1, 100, 55, 0)],
            "offset 0 is gone after the crash"
        );
    });
}

#[test]
fn pipelined_requests_are_processed_in_order() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    with_timeout(60, || {
        let b = Broker::start(&["--cores", "2", "--auto-create-topics", "false"]);
        let mut s = connect(&b.addr);
        // CreateTopics, then a Produce to the new topic, then ListOffsets(latest), all sent
        // before reading any answer: each sees the effect of the one before.
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("piped")))
                .with_num_partitions(4)
                .with_replication_factor(1)]);
        let produce = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("piped")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(3)
                    .with_records(Some(batch(&[b"a", b"b", b"c"])))])]);
        let list = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("piped")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(3)
                    .with_timestamp(-1)])]);
        let mut frames = Vec::new();
        for f in [
            encode_request(ApiKey::CreateTopics, 7, 1, &create),
            encode_request(ApiKey::Produce, 9, 2, &produce),
            encode_request(ApiKey::ListOffsets, 7, 3, &list),
        ] {
            frames.extend_from_slice(&(f.len() as i32).to_be_bytes());
            frames.extend_from_slice(&f);
        }
        s.write_all(&frames).unwrap();
        let mut r1 = read_response(&mut s).unwrap();
        ResponseHeader::decode(&mut r1, CreateTopicsResponse::header_version(7)).unwrap();
        let r1 = CreateTopicsResponse::decode(&mut r1, 7).unwrap();
        assert_eq!(r1.topics[0].error_code, 0);
        let mut r2 = read_response(&mut s).unwrap();
        let h = ResponseHeader::decode(&mut r2, ProduceResponse::header_version(9)).unwrap();
        assert_eq!(h.correlation_id, 2);
        let r2 = ProduceResponse::decode(&mut r2, 9).unwrap();
        assert_eq!(
            r2.responses[0].partition_responses[0].error_code, 0,
            "the topic existed"
        );
        let mut r3 = read_response(&mut s).unwrap();
        let h = ResponseHeader::decode(&mut r3, ListOffsetsResponse::header_version(7)).unwrap();
        assert_eq!(h.correlation_id, 3);
        let r3 = ListOffsetsResponse::decode(&mut r3, 7).unwrap();
        assert_eq!(
            r3.topics[0].partitions[0].offset, 3,
            "the append was visible"
        );
    });
}

#[test]
fn a_recreated_topic_does_not_inherit_the_deleted_ones_checkpoints() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    with_timeout(60, || {
        let mut b = Broker::start(&["--checkpoint-interval-ms", "100"]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "again");
        for _ in 0..10 {
            produce_to(&mut s, 9, vec![("again", 0, batch(&[&b"old"[..]; 10]))]);
        }
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("again")))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(80)])]);
        let _: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &req);
        let ck = b.dir.join("log-start-offset-checkpoint");
        wait_until(
            "the log start offset is checkpointed",
            Duration::from_secs(10),
            || std::fs::read_to_string(&ck).is_ok_and(|t| t.contains("again 0 80")),
        );
        let del = DeleteTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topic_names(vec![TopicName(StrBytes::from_static_str("again"))]);
        let r: DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, 4, &del);
        assert_eq!(r.responses[0].error_code, 0);
        assert!(
            !std::fs::read_to_string(&ck).unwrap().contains("again 0"),
            "the deleted partition left the checkpoint before DeleteTopics answered"
        );
        // Recreated: 5 records, acknowledged after an fdatasync (acks=-1), then a crash.
        create_via_metadata(&mut s, "again");
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("again")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&[&b"new"[..]; 5])))])]);
        let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &req);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        b.kill();
        b.restart();
        let mut s = connect(&b.addr);
        let r: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            12,
            &fetch_request("again", &[(0, 0, 1 << 20)], 0, 0, 1 << 20),
        );
        let parts = fetch_parts(&r);
        assert_eq!(
            (parts[0].1, parts[0].2, parts[0].3),
            (0, 5, 0),
            "the acknowledged records survive"
        );
    });
}

/// One page: (topic, error, partition) each, and the cursor (topic, partition) to the next.
type TopicPartitionsPage = (Vec<(String, i16, i32)>, Option<(String, i32)>);

/// DescribeTopicPartitions v0 (KIP-966): one page of (topic, partition) pairs and the
/// cursor to the next.
fn describe_topic_partitions(
    s: &mut TcpStream,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> TopicPartitionsPage {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let r: DescribeTopicPartitionsResponse = call(
        s,
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        TopicRequest::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    })
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_index(p)
            })),
    );
    let mut out = Vec::new();
    for t in &r.topics {
        let name = t.name.as_ref().map_or(String::new(), |n| n.0.to_string());
        if t.partitions.is_empty() {
            out.push((name.clone(), t.error_code, -1));
        }
        for p in &t.partitions {
            assert_eq!(p.leader_id.0, p.replica_nodes[0].0);
            out.push((name.clone(), t.error_code, p.partition_index));
        }
    }
    (
        out,
        r.next_cursor
            .map(|c| (c.topic_name.0.to_string(), c.partition_index)),
    )
}

#[test]
fn describe_topic_partitions_pages_through_topics_with_a_cursor() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "3"]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "dtp-a");
        create_via_metadata(&mut s, "dtp-b");
        let all = describe_topic_partitions(&mut s, &["dtp-b", "dtp-a"], 0, None);
        let pairs = |v: &[(&str, i32)]| {
            v.iter()
                .map(|(t, p)| (t.to_string(), 0i16, *p))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all,
            (
                pairs(&[
                    ("dtp-a", 0),
                    ("dtp-a", 1),
                    ("dtp-a", 2),
                    ("dtp-b", 0),
                    ("dtp-b", 1),
                    ("dtp-b", 2)
                ]),
                None
            )
        );
        // Pages of four: the cursor names where the next starts.
        let first = describe_topic_partitions(&mut s, &["dtp-a", "dtp-b"], 4, None);
        assert_eq!(
            first,
            (
                pairs(&[("dtp-a", 0), ("dtp-a", 1), ("dtp-a", 2), ("dtp-b", 0)]),
                Some(("dtp-b".to_string(), 1))
            )
        );
        let next = describe_topic_partitions(&mut s, &["dtp-a", "dtp-b"], 4, Some(("dtp-b", 1)));
        assert_eq!(next, (pairs(&[("dtp-b", 1), ("dtp-b", 2)]), None));
        // An unknown topic is answered with its error.
        let (missing, _) = describe_topic_partitions(&mut s, &["nope"], 0, None);
        assert_eq!(missing, vec![("nope".to_string(), 3, -1)]);
    });
}

fn cg_heartbeat(
    s: &mut TcpStream,
    version: i16,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
) -> ConsumerGroupHeartbeatResponse {
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("cg-raw")))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
        .with_subscribed_topic_names(topics.map(|ts| {
            ts.iter()
                .map(|t| TopicName(StrBytes::from_string(t.to_string())))
                .collect()
        }))
        .with_topic_partitions((epoch == 0).then(Vec::new));
    call(s, ApiKey::ConsumerGroupHeartbeat, version, &req)
}

fn assigned(r: &ConsumerGroupHeartbeatResponse) -> Option<Vec<i32>> {
    r.assignment.as_ref().map(|a| {
        let mut v: Vec<i32> = a
            .topic_partitions
            .iter()
            .flat_map(|t| t.partitions.clone())
            .collect();
        v.sort();
        v
    })
}

/// KIP-848 and KIP-714 at each end of their version ranges: ConsumerGroupHeartbeat v0
/// (the coordinator names the member) and v1 (the member names itself),
/// ConsumerGroupDescribe v0-1, ListGroups v5's type filter, GetTelemetrySubscriptions and
/// PushTelemetry v0.
#[test]
fn consumer_group_heartbeat_describe_list_and_telemetry_at_their_versions() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "2"]);
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "cg-t");
        let r = cg_heartbeat(&mut s, 0, "", 0, Some(&["cg-t"]));
        assert_eq!(r.error_code, 0, "{r:?}");
        let m0 = r
            .member_id
            .clone()
            .expect("v0: the coordinator names the member");
        assert!(!m0.is_empty());
        assert!(r.member_epoch > 0);
        assert_eq!(assigned(&r), Some(vec![0, 1]));
        assert_eq!(r.heartbeat_interval_ms, 5_000, "Kafka's default");
        // v1: the member names itself; without a name the request is refused.
        let r = cg_heartbeat(&mut s, 1, "", 0, Some(&["cg-t"]));
        assert_eq!(r.error_code, 42, "INVALID_REQUEST");
        assert!(r.error_message.is_some());
        let r = cg_heartbeat(&mut s, 1, "member-v1", 0, Some(&["cg-t"]));
        assert_eq!(r.error_code, 0, "{r:?}");
        assert_eq!(r.member_id.as_ref().map(|m| m.as_str()), Some("member-v1"));
        assert_eq!(
            assigned(&r),
            Some(vec![]),
            "its share is still the first member's"
        );

        for version in [0, 1] {
            let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![
                GroupId(StrBytes::from_static_str("cg-raw")),
                GroupId(StrBytes::from_static_str("cg-none")),
            ]);
            let d: ConsumerGroupDescribeResponse =
                call(&mut s, ApiKey::ConsumerGroupDescribe, version, &req);
            let g = &d.groups[0];
            assert_eq!(g.error_code, 0);
            assert_eq!(g.group_state.as_str(), "Reconciling");
            assert_eq!(g.assignor_name.as_str(), "uniform");
            assert_eq!(g.members.len(), 2);
            let first = g.members.iter().find(|m| m.member_id == m0).unwrap();
            assert_eq!(
                first.assignment.topic_partitions[0].topic_name.as_str(),
                "cg-t"
            );
            assert_eq!(first.member_type, if version >= 1 { 1 } else { -1 });
            assert_eq!(d.groups[1].error_code, 69, "GROUP_ID_NOT_FOUND");
        }

        // ListGroups v5: filtered by type; v4 has no types.
        for (types, listed) in [(vec!["consumer"], true), (vec!["classic"], false)] {
            let req = ListGroupsRequest::default().with_types_filter(
                types
                    .iter()
                    .map(|t| StrBytes::from_string(t.to_string()))
                    .collect(),
            );
            let r: ListGroupsResponse = call(&mut s, ApiKey::ListGroups, 5, &req);
            let g = r.groups.iter().find(|g| g.group_id.as_str() == "cg-raw");
            assert_eq!(g.is_some(), listed, "{types:?}: {r:?}");
            if let Some(g) = g {
                assert_eq!(g.group_type.as_str(), "consumer");
                assert_eq!(g.protocol_type.as_str(), "consumer");
            }
        }

        // Leaving (epoch -1) at v0.
        let r = cg_heartbeat(&mut s, 0, &m0, -1, None);
        assert_eq!((r.error_code, r.member_epoch), (0, -1));

        // KIP-714 (not advertised, answered when asked): an empty subscription; a push with
        // it is accepted, a wrong one is not.
        let r: GetTelemetrySubscriptionsResponse = call(
            &mut s,
            ApiKey::GetTelemetrySubscriptions,
            0,
            &GetTelemetrySubscriptionsRequest::default(),
        );
        assert_eq!(r.error_code, 0);
        assert!(
            !r.client_instance_id.is_nil(),
            "an instance id is handed out"
        );
        assert!(r.requested_metrics.is_empty());
        assert_eq!(r.push_interval_ms, 300_000);
        for (sub, code) in [(r.subscription_id, 0), (r.subscription_id ^ 1, 117)] {
            let push = PushTelemetryRequest::default()
                .with_client_instance_id(r.client_instance_id)
                .with_subscription_id(sub);
            let p: PushTelemetryResponse = call(&mut s, ApiKey::PushTelemetry, 0, &push);
            assert_eq!(p.error_code, code);
        }
    });
}
