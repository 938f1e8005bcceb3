"""Transactions with confluent-kafka (librdkafka) against a running broker.

Run by tests/e2e/transactions.rs as `python3 txn_test.py CASE HOST:PORT [ARGS]`. Each case
asserts; a failure exits non-zero with the traceback. The broker runs with
--transaction-abort-timed-out-transaction-cleanup-interval-ms 500.
"""
import os
import signal
import subprocess
import sys
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE = 60


def create(b, topic, partitions=3):
    a = AdminClient({"bootstrap.servers": b})
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def read_all(b, topic, isolation, expect=None, quiet=3.0, partitions=3):
    """Every record of `topic` from the start as (partition, offset, value), read with
    `isolation`; stops `quiet` seconds after the last record (or once `expect` came)."""
    c = ck.Consumer({"bootstrap.servers": b, "group.id": f"read-{topic}-{isolation}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "isolation.level": isolation})
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    t0 = last = time.time()
    while time.time() - last < quiet and time.time() - t0 < DEADLINE:
        if expect is not None and len(out) >= expect:
            break
        m = c.poll(0.2)
        if m is None:
            continue
        assert not m.error(), m.error()
        out.append((m.partition(), m.offset(), m.value().decode()))
        last = time.time()
    c.close()
    return out


def commit_abort(b):
    """20 transactions over 3 partitions, alternately committed and aborted."""
    topic = "txn-commit-abort"
    create(b, topic)
    p = ck.Producer({"bootstrap.servers": b, "transactional.id": "commit-abort",
                     "linger.ms": 5})
    p.init_transactions(30)
    committed, everything = [], []
    for t in range(20):
        p.begin_transaction()
        values = [f"{t}:{i}" for i in range(30)]
        for i, v in enumerate(values):
            p.produce(topic, value=v.encode(), partition=i % 3)
        # Sent before the end: an abort of records still queued would drop them unsent.
        assert p.flush(30) == 0
        everything += values
        if t % 2 == 0:
            p.commit_transaction(30)
            committed += values
        else:
            p.abort_transaction(30)
    rc = read_all(b, topic, "read_committed", expect=len(committed))
    ru = read_all(b, topic, "read_uncommitted", expect=len(everything))
    # read_committed: exactly the committed records, in order per partition.
    assert sorted(v for _, _, v in rc) == sorted(committed), (len(rc), len(committed))
    for part in range(3):
        mine = [v for p_, _, v in rc if p_ == part]
        assert mine == [v for i, v in enumerate(committed) if i % 30 % 3 == part], part
    # read_uncommitted: every record; control records never reach the application.
    assert sorted(v for _, _, v in ru) == sorted(everything), (len(ru), len(everything))
    # Offsets skip the markers: 20 per partition.
    top = max(o for p_, o, _ in ru if p_ == 0)
    assert top == 10 * 20 + 20 - 2, top  # 200 records and 19 markers before the last one
    print("OK")


INPUT = "ctp-in"
OUTPUT = "ctp-out"
GROUP = "ctp-app"


def ctp(b):
    """Consume-transform-produce across a crash of the application mid-transaction."""
    create(b, INPUT)
    create(b, OUTPUT)
    n = 3000
    p = ck.Producer({"bootstrap.servers": b, "linger.ms": 5})
    for i in range(n):
        p.produce(INPUT, value=str(i).encode(), partition=i % 3)
    assert p.flush(30) == 0
    me = os.path.abspath(__file__)
    # The first instance kills itself (SIGKILL) in the middle of its 5th transaction.
    first = subprocess.run([sys.executable, me, "ctp_app", b, "5", str(n)], capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stdout, first.stderr)
    assert "CRASHING" in first.stdout, first.stdout
    # A new instance with the same transactional id fences the old one and resumes.
    second = subprocess.run([sys.executable, me, "ctp_app", b, "0", str(n)], capture_output=True,
                            text=True, timeout=180)
    assert second.returncode == 0 and "DONE" in second.stdout, (second.stdout, second.stderr)
    out = read_all(b, OUTPUT, "read_committed", expect=n)
    values = sorted(int(v.split(":")[1]) for _, _, v in out)
    assert values == list(range(n)), (len(values), len(set(values)))
    # Everything the crashed transaction wrote is in the log, aborted.
    raw = read_all(b, OUTPUT, "read_uncommitted", quiet=2.0)
    assert len(raw) > n, len(raw)
    print("OK")


def ctp_app(b, crash_in, total):
    """The application: reads INPUT in group GROUP, writes 'x:<value>' to OUTPUT, commits
    its input offsets in the same transaction. crash_in > 0: SIGKILLs itself in the
    middle of that transaction (records sent, offsets not yet committed)."""
    crash_in = int(crash_in)
    c = ck.Consumer({"bootstrap.servers": b, "group.id": GROUP, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "session.timeout.ms": 6000})
    c.subscribe([INPUT])
    p = ck.Producer({"bootstrap.servers": b, "transactional.id": "ctp-app", "linger.ms": 5})
    p.init_transactions(60)
    txns = 0
    t0 = time.time()
    while True:
        assert time.time() - t0 < 120, "the input was not consumed in time"
        # Done once the committed positions cover the whole input (all 3 partitions).
        pos = c.position(c.assignment())
        if len(pos) == 3 and sum(max(tp.offset, 0) for tp in pos) >= int(total):
            break
        msgs = c.consume(200, 0.5)
        msgs = [m for m in msgs if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(OUTPUT, value=b"x:" + m.value(), partition=m.partition())
        txns += 1
        if txns == crash_in:
            assert p.flush(30) == 0
            print("CRASHING", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(),
                                      30)
        p.commit_transaction(30)
    c.close()
    print("DONE", txns, flush=True)


def timeout(b):
    """A transaction left open past transaction.timeout.ms is aborted by the broker, and
    the producer is fenced."""
    topic = "txn-timeout"
    create(b, topic)
    p = ck.Producer({"bootstrap.servers": b, "transactional.id": "slow",
                     "transaction.timeout.ms": 2000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=f"late:{i}".encode(), partition=0)
    assert p.flush(30) == 0
    # The broker aborts it (its timer runs every 500 ms in this test).
    a = AdminClient({"bootstrap.servers": b})
    time.sleep(4)  # the timeout under test: the transaction must outlive it
    try:
        p.commit_transaction(30)
        raise AssertionError("the commit of a timed-out transaction succeeded")
    except ck.KafkaException as e:
        err = e.args[0]
        assert err.fatal() or err.txn_requires_abort(), err
        print("commit refused:", err, flush=True)
    # Another producer's committed records behind it are readable: the stable offset moved.
    q = ck.Producer({"bootstrap.servers": b, "transactional.id": "after"})
    q.init_transactions(30)
    q.begin_transaction()
    q.produce(topic, value=b"after", partition=0)
    q.commit_transaction(30)
    rc = read_all(b, topic, "read_committed", expect=1)
    assert [v for _, _, v in rc] == ["after"], rc
    del a
    print("OK")


def cluster(b, kill_pid):
    """30 transactions on a 3-broker cluster, every fifth aborted; the transaction
    coordinator's broker is killed (SIGKILL) after the 8th commit. Every transaction the
    producer saw committed is read exactly once by a read_committed consumer, nothing of
    the aborted ones."""
    topic = "txn-cluster"
    a = AdminClient({"bootstrap.servers": b})
    a.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
    p = ck.Producer({"bootstrap.servers": b, "transactional.id": "cluster-tx", "linger.ms": 5,
                     "transaction.timeout.ms": 60000})
    p.init_transactions(60)
    committed, aborted = [], []
    killed = False
    for t in range(30):
        values = [f"{t}:{i}" for i in range(30)]
        p.begin_transaction()
        for i, v in enumerate(values):
            p.produce(topic, value=v.encode(), partition=i % 3)
        try:
            assert p.flush(60) == 0
            if t % 5 == 4:
                p.abort_transaction(60)
                aborted += values
                continue
            while True:
                try:
                    p.commit_transaction(60)
                    break
                except ck.KafkaException as e:
                    if not e.args[0].retriable():
                        raise
            committed += values
            print("COMMITTED", t, flush=True)
        except ck.KafkaException as e:
            err = e.args[0]
            assert err.txn_requires_abort(), err
            print("ABORTING", t, err, flush=True)
            p.abort_transaction(60)
            aborted += values
        if len([v for v in committed if v.endswith(":0")]) == 8 and not killed:
            os.kill(int(kill_pid), signal.SIGKILL)
            killed = True
            print("KILLED the coordinator", flush=True)
    assert killed
    rc = read_all(b, topic, "read_committed", expect=len(committed), quiet=5.0)
    got = sorted(v for _, _, v in rc)
    assert got == sorted(committed), (len(got), len(committed), len(set(got) & set(aborted)))
    print("committed", len(committed), "aborted", len(aborted))
    print("OK")


if __name__ == "__main__":
    case, broker = sys.argv[1], sys.argv[2]
    globals()[case](broker, *sys.argv[3:])
