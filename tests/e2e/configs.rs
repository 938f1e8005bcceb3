//! Topic and broker configs: every Kafka 4.x topic config accepted and described,
//! AlterConfigs and IncrementalAlterConfigs at their lowest and highest versions, applied to
//! an open partition and kept across a restart.

use crate::common::*;
use crate::protocol::{batch, call, connect, produce_to};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

const TOPIC: i8 = 2;
pub(crate) const BROKER: i8 = 4;
const INVALID_CONFIG: i16 = 40;

/// Apache Kafka 4.4's topic configs (its `LogConfig`), in name order (the differential test
/// compares the lists with a real Kafka).
const KAFKA_TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.type",
    "compression.zstd.level",
    "delete.retention.ms",
    "errors.deadletterqueue.group.enable",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.decompressed.message.bytes",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.copy.lag.bytes",
    "remote.copy.lag.ms",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// DescribeConfigs v4 of one resource: name -> (value, source).
fn describe(addr: &str, resource_type: i8, name: &str) -> (i16, BTreeMap<String, (String, i8)>) {
    let mut c = connect(addr);
    let r: DescribeConfigsResponse = call(
        &mut c,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))]),
    );
    let r = &r.results[0];
    (
        r.error_code,
        r.configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    (
                        c.value.as_ref().map_or(String::new(), |v| v.to_string()),
                        c.config_source,
                    ),
                )
            })
            .collect(),
    )
}

/// IncrementalAlterConfigs of one resource: (name, operation, value) each; its error code.
pub(crate) fn incremental(
    addr: &str,
    version: i16,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut c = connect(addr);
    let r: IncrementalAlterConfigsResponse = call(
        &mut c,
        ApiKey::IncrementalAlterConfigs,
        version,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(
                    ops.iter()
                        .map(|(k, op, v)| {
                            AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(*op)
                                .with_value(v.map(s))
                        })
                        .collect(),
                ),
        ]),
    );
    r.responses[0].error_code
}

/// AlterConfigs (replaces the topic's whole set of overrides); its error code.
fn alter(addr: &str, version: i16, topic: &str, kv: &[(&str, &str)], validate_only: bool) -> i16 {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let mut c = connect(addr);
    let r: AlterConfigsResponse = call(
        &mut c,
        ApiKey::AlterConfigs,
        version,
        &AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s(topic))
                .with_configs(
                    kv.iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                )]),
    );
    r.responses[0].error_code
}

#[test]
fn every_kafka_topic_config_is_accepted_and_configs_change_at_runtime_and_persist() {
    with_timeout(180, || {
        let mut b = Broker::start(&["--rack", "rack-a"]);
        let addr = b.addr.clone();
        // librdkafka's 0081 asks for these; Kafka Streams' changelogs for compact.
        let mut c = connect(&addr);
        let configs = [
            ("cleanup.policy", "compact"),
            ("compression.type", "lz4"),
            ("delete.retention.ms", "900"),
            ("min.cleanable.dirty.ratio", "0.2"),
        ];
        let r: CreateTopicsResponse = call(
            &mut c,
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s("cfg")))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )]),
        );
        assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);

        // Every topic config Kafka 4.x defines is listed; the overrides as DYNAMIC_TOPIC_CONFIG.
        let (e, all) = describe(&addr, TOPIC, "cfg");
        assert_eq!(e, 0);
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        assert_eq!(names, KAFKA_TOPIC_CONFIGS);
        for (k, v) in configs {
            assert_eq!(all[k], (v.to_string(), 1), "{k}");
        }
        assert_eq!(all["segment.jitter.ms"], ("0".to_string(), 5));
        assert_eq!(all["remote.storage.enable"], ("false".to_string(), 5));

        // IncrementalAlterConfigs v0 and v1: SET, APPEND, SUBTRACT, DELETE.
        assert_eq!(
            incremental(
                &addr,
                0,
                TOPIC,
                "cfg",
                &[
                    ("retention.ms", 0, Some("1000")),
                    ("cleanup.policy", 2, Some("delete")),
                    ("compression.type", 1, None),
                ]
            ),
            0
        );
        let (_, now) = describe(&addr, TOPIC, "cfg");
        assert_eq!(now["retention.ms"], ("1000".to_string(), 1));
        assert_eq!(now["cleanup.policy"], ("compact,delete".to_string(), 1));
        assert_eq!(now["compression.type"], ("producer".to_string(), 5));
        assert_eq!(
            incremental(
                &addr,
                1,
                TOPIC,
                "cfg",
                &[("cleanup.policy", 3, Some("compact"))]
            ),
            0
        );
        assert_eq!(
            describe(&addr, TOPIC, "cfg").1["cleanup.policy"].0,
            "delete"
        );
        // Refused, and nothing of a refused resource applies.
        for ops in [
            vec![("segment.index.bytes", 0, Some("2"))],
            vec![("retention.ms", 2, Some("5"))],
            vec![("no.such.config", 0, Some("1"))],
            vec![
                ("retention.ms", 0, Some("7")),
                ("max.message.bytes", 0, Some("-5")),
            ],
        ] {
            assert_eq!(
                incremental(&addr, 1, TOPIC, "cfg", &ops),
                INVALID_CONFIG,
                "{ops:?}"
            );
        }
        assert_eq!(describe(&addr, TOPIC, "cfg").1["retention.ms"].0, "1000");
        assert_eq!(
            incremental(&addr, 0, TOPIC, "nope", &[("retention.ms", 0, Some("1"))]),
            3
        );

        // AlterConfigs v0 (validate only: nothing changes) and v2 (replaces every override).
        assert_eq!(
            alter(&addr, 0, "cfg", &[("max.message.bytes", "2000")], true),
            0
        );
        assert_eq!(describe(&addr, TOPIC, "cfg").1["retention.ms"].0, "1000");
        assert_eq!(
            alter(&addr, 2, "cfg", &[("max.message.bytes", "x")], false),
            INVALID_CONFIG
        );
        assert_eq!(
            alter(&addr, 2, "cfg", &[("max.message.bytes", "2000")], false),
            0
        );
        let (_, now) = describe(&addr, TOPIC, "cfg");
        assert_eq!(now["max.message.bytes"], ("2000".to_string(), 1));
        assert_eq!(now["retention.ms"].1, 5, "replaced: back to the default");
        assert_eq!(now["cleanup.policy"], ("delete".to_string(), 5));

        // The open partition took the new limit: a 5000-byte batch is too large now.
        let big = vec![b'x'; 5000];
        let r = produce_to(&mut connect(&addr), 9, vec![("cfg", 0, batch(&[&big]))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 10);
        let r = produce_to(&mut connect(&addr), 9, vec![("cfg", 0, batch(&[b"small"]))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);

        // Timestamp bounds (CreateTime): Kafka 4's default refuses records an hour or more
        // ahead; a topic's message.timestamp.before.max.ms refuses old ones.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let at = |ts: i64| {
            let mut b = runnel_record::builder::BatchBuilder::new(ts);
            b.append(ts, None, Some(b"t"), &[]);
            bytes::Bytes::from(b.build())
        };
        let produce = |records| {
            let r = produce_to(&mut connect(&addr), 9, vec![("cfg", 0, records)]);
            r.responses[0].partition_responses[0].error_code
        };
        assert_eq!(produce(at(now + 2 * 3_600_000)), 32, "two hours ahead");
        assert_eq!(produce(at(now + 60_000)), 0, "a minute ahead");
        assert_eq!(
            incremental(
                &addr,
                1,
                TOPIC,
                "cfg",
                &[("message.timestamp.before.max.ms", 0, Some("86400000"))]
            ),
            0
        );
        assert_eq!(produce(at(1_700_000_000_000)), 32, "older than a day");
        assert_eq!(produce(at(now - 1000)), 0);
        // Records without a timestamp (-1) as librdkafka writes them when given -1 (its C++
        // API's "no timestamp"): a base timestamp of -1 and a max timestamp of 0 in the
        // header. Kafka checks the records (-1 passes), not the header's 0 (1970).
        let untimed = |ts: &[i64]| {
            let mut b = runnel_record::builder::BatchBuilder::new(-1);
            for &t in ts {
                b.append(t, None, Some(b"t"), &[]);
            }
            let mut v = b.build();
            if ts.iter().all(|&t| t < 0) {
                v[35..43].copy_from_slice(&0i64.to_be_bytes()); // maxTimestamp
                runnel_record::set_crc(&mut v);
            }
            bytes::Bytes::from(v)
        };
        assert_eq!(produce(untimed(&[-1, -1, -1])), 0, "no timestamps");
        assert_eq!(
            produce(untimed(&[-1, 1_700_000_000_000])),
            32,
            "no timestamp first, then one older than a day"
        );
        assert_eq!(produce(untimed(&[-1, now])), 0);
        assert_eq!(
            incremental(
                &addr,
                1,
                TOPIC,
                "cfg",
                &[("message.timestamp.type", 0, Some("LogAppendTime"))]
            ),
            0
        );
        assert_eq!(
            produce(at(1_700_000_000_000)),
            0,
            "LogAppendTime stamps its own"
        );

        // Broker configs: the throttles change at runtime, cluster-wide or per broker;
        // the rest are flags.
        let rate = "leader.replication.throttled.rate";
        assert_eq!(
            incremental(&addr, 1, BROKER, "", &[(rate, 0, Some("1000"))]),
            0
        );
        let (e, broker) = describe(&addr, BROKER, "");
        assert_eq!(e, 0);
        assert_eq!(broker[rate], ("1000".to_string(), 3));
        let me = broker["broker.id"].0.clone();
        // --rack, described as Kafka's broker.rack (a static broker config: 0101 reads it).
        assert_eq!(broker["broker.rack"], ("rack-a".to_string(), 4));
        assert_eq!(
            incremental(&addr, 0, BROKER, &me, &[(rate, 0, Some("2000"))]),
            0
        );
        assert_eq!(
            describe(&addr, BROKER, &me).1[rate],
            ("2000".to_string(), 2)
        );
        assert_eq!(
            incremental(&addr, 1, BROKER, "", &[("num.partitions", 0, Some("3"))]),
            INVALID_CONFIG
        );
        assert_eq!(
            incremental(&addr, 1, BROKER, "77", &[(rate, 0, Some("1"))]),
            42
        );

        // All of it survives a restart (it is in the metadata log).
        b.stop();
        b.restart();
        let (_, after) = describe(&b.addr, TOPIC, "cfg");
        assert_eq!(after["max.message.bytes"], ("2000".to_string(), 1));
        assert_eq!(
            describe(&b.addr, BROKER, &me).1[rate],
            ("2000".to_string(), 2)
        );
        let r = produce_to(&mut connect(&b.addr), 9, vec![("cfg", 0, batch(&[&big]))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 10);
    });
}

/// The batches at `offset` of partition 0 of `topic`: (codec bits, values).
fn fetched_batches(addr: &str, topic: &'static str, offset: i64) -> Vec<(i16, Vec<Vec<u8>>)> {
    let mut c = connect(addr);
    let req = crate::protocol::fetch_request(topic, &[(0, offset, 1 << 20)], 100, 1, 1 << 20);
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 12, &req);
    let mut records = r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut out = Vec::new();
    while records.len() > 61 {
        let attributes = i16::from_be_bytes([records[21], records[22]]);
        let len =
            12 + i32::from_be_bytes([records[8], records[9], records[10], records[11]]) as usize;
        let mut one = records.split_to(len);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one).expect("decodes");
        out.push((
            attributes & 7,
            set.records
                .iter()
                .map(|r| r.value.clone().unwrap_or_default().to_vec())
                .collect(),
        ));
    }
    out
}

/// compression.type other than `producer`: the broker rewrites batches of another codec
/// with the topic's (and its level), keeps those already in it, and stops once the topic
/// is back to `producer`; changed at runtime on the open partition.
#[test]
fn a_topic_codec_recompresses_batches_of_another_codec() {
    with_timeout(60, || {
        let b = Broker::start(&["--default-partitions", "1"]);
        let mut s = connect(&b.addr);
        crate::protocol::create_via_metadata(&mut s, "recomp");
        let set = [
            ("compression.type", "zstd"),
            ("compression.zstd.level", "5"),
        ];
        assert_eq!(alter(&b.addr, 1, "recomp", &set, false), 0);
        let r = produce_to(&mut s, 9, vec![("recomp", 0, batch(&[b"alpha", b"beta"]))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        // A gzip batch from a producer: rewritten too.
        let gz = kafka_batch(&[b"gamma"], kafka_protocol::records::Compression::Gzip);
        let r = produce_to(&mut s, 9, vec![("recomp", 0, gz)]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let zs = kafka_batch(&[b"delta"], kafka_protocol::records::Compression::Zstd);
        produce_to(&mut s, 9, vec![("recomp", 0, zs.clone())]);
        let got = fetched_batches(&b.addr, "recomp", 0);
        let values = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (4, values(&[b"alpha", b"beta"])),
                (4, values(&[b"gamma"])),
                (4, values(&[b"delta"])),
            ]
        );
        // Back to producer: batches are stored as they come.
        assert_eq!(
            alter(
                &b.addr,
                1,
                "recomp",
                &[("compression.type", "producer")],
                false
            ),
            0
        );
        produce_to(&mut s, 9, vec![("recomp", 0, batch(&[b"epsilon"]))]);
        let got = fetched_batches(&b.addr, "recomp", 4);
        assert_eq!(got, vec![(0, values(&[b"epsilon"]))]);
        // max.message.bytes holds after recompression too: a small zstd batch that inflates
        // past it is refused (MESSAGE_TOO_LARGE) and nothing of it is stored.
        let set = [
            ("compression.type", "uncompressed"),
            ("max.message.bytes", "2000"),
        ];
        assert_eq!(alter(&b.addr, 1, "recomp", &set, false), 0);
        let big = [b"x".repeat(1000), b"y".repeat(1000), b"z".repeat(1000)];
        let big: Vec<&[u8]> = big.iter().map(|v| v.as_slice()).collect();
        let zs = kafka_batch(&big, kafka_protocol::records::Compression::Zstd);
        assert!(zs.len() < 2000);
        let r = produce_to(&mut s, 9, vec![("recomp", 0, zs)]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 10);
        assert!(fetched_batches(&b.addr, "recomp", 5).is_empty());
    });
}

/// One batch of `values` encoded by kafka-protocol with `codec`.
fn kafka_batch(values: &[&[u8]], codec: kafka_protocol::records::Compression) -> bytes::Bytes {
    use kafka_protocol::records::*;
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // (kafka-protocol keeps records in one batch while offset - sequence holds.)
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(v)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .unwrap();
    buf.freeze()
}
