"""Python clients against a running broker: confluent-kafka (librdkafka) and kafka-python.

Run by tests/e2e/tools.rs as `python3 clients_test.py <confluent|kafka-python> HOST:PORT`.
Each check asserts; any failure exits non-zero with the traceback.
"""
import sys
import time

DEADLINE = 60


def confluent(bootstrap):
    import confluent_kafka as ck
    from confluent_kafka.admin import (AdminClient, NewTopic, NewPartitions, ConfigResource,
                                       ResourceType)

    admin = AdminClient({"bootstrap.servers": bootstrap})

    # CreateTopics: validate_only creates nothing; configs are kept; a duplicate fails.
    fs = admin.create_topics([NewTopic("py-valid", 2, 1)], validate_only=True)
    fs["py-valid"].result(10)
    assert "py-valid" not in admin.list_topics(timeout=10).topics
    fs = admin.create_topics([NewTopic("py-orders", 3, 1, config={"retention.ms": "3600000",
                                                                   "segment.bytes": "1048576"})])
    fs["py-orders"].result(10)
    try:
        admin.create_topics([NewTopic("py-orders", 3, 1)])["py-orders"].result(10)
        raise AssertionError("duplicate topic accepted")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS, e
    try:
        admin.create_topics([NewTopic("py-bad", 1, 1, config={"cleanup.policy": "shred"})])["py-bad"].result(10)
        raise AssertionError("a bad cleanup.policy accepted")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.INVALID_CONFIG, e
    try:
        admin.create_topics([NewTopic("py-rf", 1, 3)])["py-rf"].result(10)
        raise AssertionError("replication factor 3 accepted")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.INVALID_REPLICATION_FACTOR, e
    md = admin.list_topics(timeout=10)
    assert len(md.topics["py-orders"].partitions) == 3
    assert md.brokers[0].host == "127.0.0.1"

    # DescribeConfigs: the override with its source, the defaults with theirs.
    res = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "py-orders")])
    cfg = list(res.values())[0].result(10)
    assert cfg["retention.ms"].value == "3600000", cfg["retention.ms"]
    assert cfg["retention.ms"].source == ck.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["cleanup.policy"].source == ck.admin.ConfigSource.DEFAULT_CONFIG.value
    res = admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")])
    bcfg = list(res.values())[0].result(10)
    assert "log.segment.bytes" in bcfg

    # Produce with every codec, consume back in order.
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = ck.Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                         "linger.ms": 20, "enable.idempotence": codec == "zstd"})
        errors = []
        for i in range(500):
            p.produce("py-orders", key=b"k%d" % (i % 5), value=b"%s-%d" % (codec.encode(), i),
                      partition=i % 3, headers=[("codec", codec.encode())],
                      on_delivery=lambda err, msg: err and errors.append(err))
        assert p.flush(30) == 0
        assert not errors, errors

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "py-unused",
                     "enable.auto.commit": False})
    c.assign([ck.TopicPartition("py-orders", p, ck.OFFSET_BEGINNING) for p in range(3)])
    got = {0: [], 1: [], 2: []}
    t0 = time.time()
    while sum(map(len, got.values())) < 2500:
        assert time.time() - t0 < DEADLINE, "consume timed out"
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        got[m.partition()].append((m.offset(), m.value()))
    for part, msgs in got.items():
        assert [o for o, _ in msgs] == list(range(len(msgs))), "dense offsets"
    values = [v for _, v in got[0]]
    assert values[0] == b"none-0" and values[-1].startswith(b"zstd-"), values[-1]
    lo, hi = c.get_watermark_offsets(ck.TopicPartition("py-orders", 0), timeout=10)
    assert (lo, hi) == (0, len(got[0])), (lo, hi)
    c.close()

    # CreatePartitions, DeleteRecords, DeleteTopics.
    admin.create_partitions([NewPartitions("py-orders", 5)])["py-orders"].result(10)
    assert len(admin.list_topics(timeout=10).topics["py-orders"].partitions) == 5
    try:
        admin.create_partitions([NewPartitions("py-orders", 2)])["py-orders"].result(10)
        raise AssertionError("shrinking accepted")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.INVALID_PARTITIONS, e
    if hasattr(admin, "delete_records"):
        fs = admin.delete_records([ck.TopicPartition("py-orders", 0, 100)])
        for f in fs.values():
            f.result(10)
        c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "py-unused"})
        lo, _ = c.get_watermark_offsets(ck.TopicPartition("py-orders", 0), timeout=10)
        assert lo == 100, lo
        c.close()
    admin.delete_topics(["py-orders"])["py-orders"].result(10)
    t0 = time.time()
    while "py-orders" in admin.list_topics(timeout=10).topics:
        assert time.time() - t0 < 10
        time.sleep(0.1)


def kafka_python(bootstrap):
    import kafka
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("kp-topic", num_partitions=2, replication_factor=1)])
    assert "kp-topic" in admin.list_topics()

    # kafka-python 3 turns idempotence on by default (InitProducerId, sequence numbers).
    p = kafka.KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=10)
    futures = [p.send("kp-topic", key=b"k", value=b"v%d" % i, partition=i % 2,
                      timestamp_ms=1_700_000_000_000 + i) for i in range(400)]
    p.flush(30)
    metas = [f.get(10) for f in futures]
    assert [m.offset for m in metas if m.partition == 1] == list(range(200))

    tps = [kafka.TopicPartition("kp-topic", i) for i in range(2)]
    c = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                            consumer_timeout_ms=5000)
    c.assign(tps)
    c.seek_to_beginning()
    got = {0: [], 1: []}
    t0 = time.time()
    while sum(map(len, got.values())) < 400:
        assert time.time() - t0 < DEADLINE
        for tp, msgs in c.poll(timeout_ms=500).items():
            got[tp.partition] += [(m.offset, m.value) for m in msgs]
    assert got[0][0] == (0, b"v0") and got[1][-1] == (199, b"v399"), (got[0][0], got[1][-1])
    assert c.end_offsets(tps) == {tps[0]: 200, tps[1]: 200}
    assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
    # The batches are gzip-compressed: the broker never inflates them, so a time lookup
    # lands on the start of the batch holding the record (exact for uncompressed batches,
    # which the rdkafka test checks).
    found = c.offsets_for_times({tps[0]: 1_700_000_000_000 + 100})
    assert found[tps[0]].offset <= 50, found
    assert c.offsets_for_times({tps[0]: 1_800_000_000_000})[tps[0]] is None
    c.close()
    admin.delete_topics(["kp-topic"])
    admin.close()


def cluster(bootstrap):
    """Both clients against a 3-broker cluster through one bootstrap address: an RF=3 topic
    whose partitions have leaders on every broker."""
    import confluent_kafka as ck
    import kafka
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("py-rf3", 6, 3)])["py-rf3"].result(10)
    md = admin.list_topics("py-rf3", timeout=10)
    assert len(md.brokers) == 3, md.brokers
    parts = md.topics["py-rf3"].partitions
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts.values()), parts
    assert {p.leader for p in parts.values()} == set(md.brokers), parts
    try:
        admin.create_topics([NewTopic("py-rf4", 1, 4)])["py-rf4"].result(10)
        raise AssertionError("replication factor 4 accepted with 3 brokers")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.INVALID_REPLICATION_FACTOR, e

    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(600):
        p.produce("py-rf3", value=b"ck-%d" % i, partition=i % 6,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors
    kp = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [kp.send("py-rf3", value=b"kp-%d" % i, partition=i % 6) for i in range(300)]
    kp.flush(30)
    [f.get(10) for f in futures]
    kp.close()

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "py-rf3-group",
                     "auto.offset.reset": "earliest"})
    c.subscribe(["py-rf3"])
    got = set()
    t0 = time.time()
    while len(got) < 900:
        assert time.time() - t0 < DEADLINE, len(got)
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        got.add(m.value())
    c.commit(asynchronous=False)
    c.close()
    kc = kafka.KafkaConsumer("py-rf3", bootstrap_servers=bootstrap, group_id="py-rf3-kp",
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    n = sum(1 for _ in kc)
    kc.close()
    assert n == 900, n


if __name__ == "__main__":
    which, bootstrap = sys.argv[1], sys.argv[2]
    {"confluent": confluent, "kafka-python": kafka_python, "cluster": cluster}[which](bootstrap)
    print("OK", which)
