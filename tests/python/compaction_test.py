"""Compacted topics with confluent-kafka (librdkafka) against a running broker.

Run by tests/e2e/compaction.rs as `python3 compaction_test.py CASE HOST:PORT [ARGS]`. Each
case asserts; a failure exits non-zero with the traceback. The broker runs with
--log-cleaner-backoff-ms 200.
"""
import glob
import json
import os
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE = 120
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create(b, topic, **configs):
    a = AdminClient({"bootstrap.servers": b})
    conf = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}
    conf.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    a.create_topics([NewTopic(topic, 1, 1, config=conf)])[topic].result(10)


def read_all(b, topic, quiet=2.0):
    """Every record of partition 0 from offset 0: (offset, key, value, headers)."""
    c = ck.Consumer({"bootstrap.servers": b, "group.id": f"read-{topic}",
                     "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    out = []
    t0 = time.time()
    while time.time() - t0 < DEADLINE:
        m = c.poll(quiet)
        if m is None:
            break
        if m.error():
            if m.error().code() == ck.KafkaError._PARTITION_EOF:
                break
            raise AssertionError(m.error())
        out.append((m.offset(), m.key().decode(), m.value(), m.headers()))
    c.close()
    return out


def fill(b, topic, updates, keys, state=None):
    """`updates` updates over `keys` keys, 5 producers (one codec each; each key always from
    the same producer, so a key's offsets follow its sequence numbers). Returns
    {key: (offset, value)} of each key's latest, as the delivery reports give them."""
    latest = {}
    lock = threading.Lock()

    def delivered(err, msg):
        assert err is None, err
        with lock:
            k = msg.key().decode()
            if k not in latest or latest[k][0] < msg.offset():
                latest[k] = (msg.offset(), msg.value().decode())

    producers = [ck.Producer({"bootstrap.servers": b, "compression.type": c, "linger.ms": 5,
                              "enable.idempotence": True}) for c in CODECS]
    for i in range(updates):
        k = (i * 7919) % keys
        p = producers[k % len(producers)]
        while True:
            try:
                p.produce(topic, key=f"key-{k:04d}", value=f"{k}:{i}:" + "x" * 60,
                          headers=[("seq", str(i).encode())], on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    for p in producers:
        assert p.flush(60) == 0
    if state:
        with open(state, "w") as f:
            json.dump(latest, f)
    return latest


def roll(b, topic, segment_ms):
    """Closes the active segment: a record after segment.ms rolls it (the sentinel stays in
    the new active segment)."""
    time.sleep(segment_ms / 1000 + 0.2)
    p = ck.Producer({"bootstrap.servers": b})
    p.produce(topic, key="zz-end", value=b"end")
    assert p.flush(10) == 0


def check_latest(got, latest):
    offsets = [r[0] for r in got]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    seen = {}
    for offset, key, value, headers in got:
        if key == "zz-end":
            continue
        assert key not in seen, f"{key} twice"
        seen[key] = (offset, value.decode())
        seq = value.decode().split(":")[1]
        assert headers == [("seq", seq.encode())], headers
    assert seen == {k: tuple(v) for k, v in latest.items()}, "one record per key, the latest, at its offset"


def wait_compacted(b, topic, n):
    t0 = time.time()
    while True:
        got = read_all(b, topic)
        if len(got) == n:
            return got
        assert time.time() - t0 < DEADLINE, f"not compacted to {n} records: {len(got)}"
        time.sleep(0.5)


def latest_case(b, data_dir):
    """200,000 updates over 1,000 keys, mixed codecs and headers: after cleaning one record
    per key, the latest, at its original offset; the segment files shrank. A reader going
    through the log meanwhile never errs and never sees an older value after a newer one."""
    topic = "compacted"
    create(b, topic, segment_bytes=1 << 20, segment_ms=3000)
    stop = threading.Event()
    reads = [0]
    failure = []

    def reader():
        try:
            while not stop.is_set():
                last = {}
                for offset, key, value, _ in read_all(b, topic, quiet=0.5):
                    if key == "zz-end":
                        continue
                    seq = int(value.decode().split(":")[1])
                    assert last.get(key, -1) < seq, f"{key}: {seq} after {last[key]} (offset {offset})"
                    last[key] = seq
                reads[0] += 1
        except Exception as e:  # reported by the main thread
            failure.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        latest = fill(b, topic, 200_000, 1_000)
        produced = sum(len(v[1]) for v in latest.values()) * 200
        roll(b, topic, 3000)
        got = wait_compacted(b, topic, 1_001)
    finally:
        stop.set()
        t.join(DEADLINE)
    assert not failure, failure
    assert reads[0] >= 2, f"the reader went through the log {reads[0]} times"
    check_latest(got, latest)
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(data_dir, f"{topic}-0", "*.log")))
    assert size * 20 < produced, f"segment files {size} bytes for {produced} bytes produced"
    print(f"compacted {produced} bytes to {size}; the reader read the log {reads[0]} times")


def tombstones_case(b):
    """A tombstone is served until delete.retention.ms after the cleaning that first kept
    it, then goes; the key stays gone."""
    topic = "tombstones"
    create(b, topic, segment_ms=1000, delete_retention_ms=3000)
    p = ck.Producer({"bootstrap.servers": b})
    for k in range(10):
        p.produce(topic, key=f"k{k}", value=b"v1")
    for k in range(10):
        p.produce(topic, key=f"k{k}", value=b"v2")
    for k in range(5):
        p.produce(topic, key=f"k{k}", value=None)
    assert p.flush(10) == 0
    roll(b, topic, 1000)
    got = wait_compacted(b, topic, 11)
    t_cleaned = time.time()
    deleted = sorted(r[1] for r in got if r[2] is None)
    assert deleted == [f"k{k}" for k in range(5)], got
    assert all(r[2] == b"v2" for r in got if r[1] in {f"k{k}" for k in range(5, 10)}), got
    got = wait_compacted(b, topic, 6)
    assert time.time() - t_cleaned > 2.5, "tombstones went before delete.retention.ms"
    assert sorted(r[1] for r in got) == [f"k{k}" for k in range(5, 10)] + ["zz-end"], got
    assert all(r[2] is not None for r in got)
    time.sleep(1)
    assert len(read_all(b, topic)) == 6, "the deleted keys stay gone"


def keyless_case(b):
    """A record without a key is refused (INVALID_RECORD) on a compacted topic. In a batch
    with keyed records, the answer names the keyless ones (KIP-467 record errors): the
    client fails those with INVALID_RECORD and the others as refused for another record's
    sake; none of the batch is written, and a batch of keyed records after it is."""
    topic = "keyless"
    create(b, topic)
    errors = []
    p = ck.Producer({"bootstrap.servers": b, "retries": 0})
    p.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == ck.KafkaError.INVALID_RECORD, errors[0]

    # One batch of 10 (linger, one partition): records 0, 3 and 7 without a key.
    outcome = {}
    p = ck.Producer({"bootstrap.servers": b, "retries": 0, "linger.ms": 200,
                     "enable.idempotence": False})
    for i in range(10):
        key = None if i in (0, 3, 7) else f"k{i}".encode()
        p.produce(topic, key=key, value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda err, msg, i=i: outcome.__setitem__(i, err))
    p.flush(10)
    different = getattr(ck.KafkaError, "_INVALID_DIFFERENT_RECORD", -138)
    codes = {i: (e.code() if e is not None else None) for i, e in sorted(outcome.items())}
    want = {i: ck.KafkaError.INVALID_RECORD if i in (0, 3, 7) else different for i in range(10)}
    assert codes == want, f"per-record outcome {codes}, expected {want}"

    acked = []
    for i in range(3):
        p.produce(topic, key=f"ok{i}".encode(), value=b"kept", partition=0,
                  on_delivery=lambda err, msg: acked.append(err))
    p.flush(10)
    assert acked == [None] * 3, acked
    got = read_all(b, topic)
    assert [r[1] for r in got] == ["ok0", "ok1", "ok2"], got


def fill_case(b, topic, state):
    """Fills a topic the cleaner leaves alone (min.compaction.lag.ms an hour) until all is
    written and the last segment closed, then lets it clean."""
    create(b, topic, segment_bytes=1 << 20, segment_ms=2000, min_compaction_lag_ms=3_600_000)
    fill(b, topic, 40_000, 300, state)
    roll(b, topic, 2000)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    a = AdminClient({"bootstrap.servers": b})
    r = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    for f in a.incremental_alter_configs([r]).values():
        f.result(10)


def verify_case(b, topic, state):
    """After a crash mid-swap and a restart: offsets increase and every key's latest value
    is there; once the cleaner has run again, exactly one record per key."""
    with open(state) as f:
        latest = json.load(f)
    got = read_all(b, topic)
    offsets = [r[0] for r in got]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    last = {}
    for offset, key, value, _ in got:
        last[key] = (offset, value.decode())
    last.pop("zz-end", None)
    assert last == {k: tuple(v) for k, v in latest.items()}, "every latest value present"
    check_latest(wait_compacted(b, topic, len(latest) + 1), latest)


def offsets_case(b, phase):
    """`commit`: a group commits 3,000 times over 10 partitions, __consumer_offsets made to
    roll and clean quickly (segment.ms, min.cleanable.dirty.ratio) and waited on until
    cleaned; `fetch` (after a restart): the last commits are what the group fetches."""
    topic, group = "offsets-src", "offsets-group"
    if phase == "commit":
        a = AdminClient({"bootstrap.servers": b})
        a.create_topics([NewTopic(topic, 10, 1)])[topic].result(10)
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
        r = ConfigResource(ResourceType.TOPIC, "__consumer_offsets", incremental_configs=[
            ConfigEntry("segment.ms", "1000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET)])
        for f in a.incremental_alter_configs([r]).values():
            f.result(10)
        c = ck.Consumer({"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False})
        for i in range(300):
            offsets = [ck.TopicPartition(topic, p, i * 10 + p) for p in range(10)]
            c.commit(offsets=offsets, asynchronous=False)
        time.sleep(1.2)
        # One more commit rolls the offsets partition's segment; the rest is the cleaner's.
        c.commit(offsets=[ck.TopicPartition(topic, p, 5_000 + p) for p in range(10)], asynchronous=False)
        c.close()
        print("committed")
    else:
        c = ck.Consumer({"bootstrap.servers": b, "group.id": group})
        got = c.committed([ck.TopicPartition(topic, p) for p in range(10)], timeout=30)
        c.close()
        assert [t.offset for t in got] == [5_000 + p for p in range(10)], got


if __name__ == "__main__":
    case, broker = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    {"latest": latest_case, "tombstones": tombstones_case, "keyless": keyless_case,
     "fill": fill_case, "verify": verify_case, "offsets": offsets_case}[case](broker, *args)
    print("OK")
