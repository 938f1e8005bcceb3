"""Consumer groups with real clients against a running broker.

Run by tests/e2e/groups.rs as `python3 groups_test.py CASE HOST:PORT`. Each case asserts;
any failure exits non-zero with the traceback. The broker runs with short group timeouts
(--group-initial-rebalance-delay-ms 100, --group-min-session-timeout-ms 1000).
"""
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE = 60


def create(b, topic, partitions=3):
    a = AdminClient({"bootstrap.servers": b})
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def produce(b, topic, values, partitions=3):
    p = ck.Producer({"bootstrap.servers": b, "linger.ms": 5})
    for v in values:
        p.produce(topic, value=str(v).encode(), partition=v % partitions)
    assert p.flush(30) == 0


def consumer(b, group, **extra):
    conf = {"bootstrap.servers": b, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500}
    conf.update(extra)
    return ck.Consumer(conf)


def poll_until(consumers, want, seen, timeout=DEADLINE):
    """Polls round-robin until `want` distinct (partition, offset) were seen."""
    t0 = time.time()
    while len(seen) < want:
        assert time.time() - t0 < timeout, f"consumed {len(seen)} of {want}"
        for c in consumers:
            m = c.poll(0.1)
            if m is None:
                continue
            assert not m.error(), m.error()
            key = (m.partition(), m.offset())
            assert key not in seen, f"duplicate {key}"
            seen[key] = int(m.value())
    return seen


def assignment(c):
    return sorted(tp.partition for tp in c.assignment())


def wait_any(c, timeout=DEADLINE):
    """Polls until `c` holds at least one partition."""
    t0 = time.time()
    while not c.assignment():
        assert time.time() - t0 < timeout, "never assigned"
        c.poll(0.1)


def readline_polling(proc, consumers, timeout=DEADLINE):
    """A line from `proc`'s stdout, read while `consumers` are polled: a member that is not
    polled cannot rejoin, so the member in `proc` could wait for it forever."""
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    t0 = time.time()
    while True:
        try:
            return lines.get_nowait()
        except queue.Empty:
            pass
        assert time.time() - t0 < timeout, "no line from the member process"
        for c in consumers:
            c.poll(0.1)


def wait_assigned(consumers, total=3, timeout=DEADLINE):
    t0 = time.time()
    while sum(len(c.assignment()) for c in consumers) != total or \
            any(not c.assignment() for c in consumers):
        assert time.time() - t0 < timeout, [assignment(c) for c in consumers]
        for c in consumers:
            c.poll(0.1)


def split_commit_resume(b):
    create(b, "g-split")
    produce(b, "g-split", range(300))
    c1, c2 = consumer(b, "split", **{"client.id": "c1"}), consumer(b, "split", **{"client.id": "c2"})
    c1.subscribe(["g-split"])
    c2.subscribe(["g-split"])
    seen = poll_until([c1, c2], 300, {})
    a1, a2 = assignment(c1), assignment(c2)
    assert sorted(a1 + a2) == [0, 1, 2] and a1 and a2, (a1, a2)
    assert sorted(seen.values()) == list(range(300))
    c1.commit(asynchronous=False)
    c2.commit(asynchronous=False)
    c1.close()
    c2.close()
    # A third member resumes exactly at the committed offsets.
    produce(b, "g-split", range(300, 330))
    c3 = consumer(b, "split")
    c3.subscribe(["g-split"])
    seen3 = poll_until([c3], 30, {})
    assert sorted(seen3.values()) == list(range(300, 330)), sorted(seen3.values())
    assert all(off >= 100 for (_, off) in seen3), "no record before the committed offsets"
    # Nothing else arrives.
    t0 = time.time()
    while time.time() - t0 < 1:
        m = c3.poll(0.1)
        assert m is None or m.error(), f"unexpected {m.partition()}:{m.offset()}"
    c3.close()


KP_MEMBER = """
import kafka, sys, time
c = kafka.KafkaConsumer("kp-split", bootstrap_servers=sys.argv[1], group_id="kp-group",
                        client_id=sys.argv[2], auto_offset_reset="earliest",
                        enable_auto_commit=False, session_timeout_ms=6000,
                        heartbeat_interval_ms=500)
want = int(sys.argv[3])
got, t0, idle = [], time.time(), time.time()
# Consume until the group's share of `want` records is in and nothing came for 2 s.
while time.time() - t0 < 50:
    batch = c.poll(timeout_ms=200)
    for tp, msgs in batch.items():
        got += [(tp.partition, m.offset, int(m.value)) for m in msgs]
        idle = time.time()
    if got and time.time() - idle > 2 and c.assignment():
        break
c.commit()
print("GOT", sorted(got), flush=True)
c.close()
"""


def kafka_python_split_commit_resume(b):
    create(b, "kp-split")
    produce(b, "kp-split", range(300))
    # Two members in their own processes, as applications run them.
    members = [subprocess.Popen([sys.executable, "-c", KP_MEMBER, b, name, "300"],
                                stdout=subprocess.PIPE) for name in ("k1", "k2")]
    seen = []
    for m in members:
        out = m.communicate(timeout=DEADLINE)[0].decode()
        assert m.returncode == 0 and "GOT" in out, out
        seen.append(eval(out.split("GOT", 1)[1]))
    both = seen[0] + seen[1]
    assert seen[0] and seen[1], "both members consumed"
    assert len(both) == len(set((p, o) for p, o, _ in both)), "no record twice"
    assert sorted(v for _, _, v in both) == list(range(300)), len(both)
    # A third member resumes exactly at the committed offsets.
    produce(b, "kp-split", range(300, 330))
    third = subprocess.Popen([sys.executable, "-c", KP_MEMBER, b, "k3", "30"], stdout=subprocess.PIPE)
    out = third.communicate(timeout=DEADLINE)[0].decode()
    got = eval(out.split("GOT", 1)[1])
    assert sorted(v for _, _, v in got) == list(range(300, 330)), got


MEMBER = """
import confluent_kafka as ck, sys, time
c = ck.Consumer({"bootstrap.servers": sys.argv[1], "group.id": "expel",
                 "auto.offset.reset": "earliest", "session.timeout.ms": 2000,
                 "heartbeat.interval.ms": 300})
c.subscribe(["g-expel"])
while True:
    c.poll(0.1)
    if c.assignment():
        print("ASSIGNED", flush=True)
"""


def expel(b):
    create(b, "g-expel")
    c1 = consumer(b, "expel", **{"session.timeout.ms": 2000, "heartbeat.interval.ms": 300})
    c1.subscribe(["g-expel"])
    victim = subprocess.Popen([sys.executable, "-c", MEMBER, b], stdout=subprocess.PIPE)
    wait_any(c1)
    t0 = time.time()
    # Both hold partitions.
    line = readline_polling(victim, [c1])
    assert b"ASSIGNED" in line
    while len(c1.assignment()) not in (1, 2):
        assert time.time() - t0 < DEADLINE
        c1.poll(0.1)
    held = len(c1.assignment())
    assert held < 3, "the other member holds some partitions"
    # Killed without LeaveGroup: its session expires and c1 gets everything.
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.time()
    while len(c1.assignment()) != 3:
        assert time.time() - killed < 20, assignment(c1)
        c1.poll(0.1)
    elapsed = time.time() - killed
    assert elapsed > 1.0, f"reassigned after {elapsed:.1f} s: before the 2 s session timeout?"
    c1.close()


def cooperative(b):
    create(b, "g-coop")
    produce(b, "g-coop", range(90))
    events = {"c1": [], "c2": []}

    def cb(name):
        return {
            "on_assign": lambda c, ps: events[name].append(("assign", sorted(p.partition for p in ps))),
            "on_revoke": lambda c, ps: events[name].append(("revoke", sorted(p.partition for p in ps))),
        }
    extra = {"partition.assignment.strategy": "cooperative-sticky"}
    c1 = consumer(b, "coop", **extra)
    c1.subscribe(["g-coop"], **cb("c1"))
    wait_assigned([c1])
    assert assignment(c1) == [0, 1, 2]
    c2 = consumer(b, "coop", **extra)
    c2.subscribe(["g-coop"], **cb("c2"))
    wait_assigned([c1, c2])
    a1, a2 = assignment(c1), assignment(c2)
    assert sorted(a1 + a2) == [0, 1, 2] and a1 and a2, (a1, a2)
    # Incremental: c1 only gave up what moved, never everything at once.
    revoked = [p for kind, ps in events["c1"] if kind == "revoke" for p in ps]
    assert len(revoked) < 3, events["c1"]
    assert c1.memberid() and c2.memberid()
    c2.close()
    t0 = time.time()
    while assignment(c1) != [0, 1, 2]:
        assert time.time() - t0 < DEADLINE, assignment(c1)
        c1.poll(0.1)
    c1.close()


STATIC = """
import confluent_kafka as ck, sys, time
c = ck.Consumer({"bootstrap.servers": sys.argv[1], "group.id": "static",
                 "group.instance.id": "member-b", "auto.offset.reset": "earliest",
                 "session.timeout.ms": 20000, "heartbeat.interval.ms": 300})
c.subscribe(["g-static"])
t0 = time.time()
while not c.assignment():
    c.poll(0.1)
print("ASSIGNED", sorted(p.partition for p in c.assignment()), flush=True)
while True:
    c.poll(0.1)
"""


def static_membership(b):
    create(b, "g-static", 4)
    assigns = []
    c1 = consumer(b, "static", **{"group.instance.id": "member-a", "session.timeout.ms": 20000,
                                  "heartbeat.interval.ms": 300})
    c1.subscribe(["g-static"], on_assign=lambda c, ps: assigns.append(sorted(p.partition for p in ps)),
                 on_revoke=lambda c, ps: assigns.append(("revoke", sorted(p.partition for p in ps))))
    other = subprocess.Popen([sys.executable, "-c", STATIC, b], stdout=subprocess.PIPE)
    first = readline_polling(other, [c1]).decode()
    assert first.startswith("ASSIGNED"), first
    wait_any(c1)
    t0 = time.time()
    while len(c1.assignment()) == 0 or len(c1.assignment()) == 4:
        assert time.time() - t0 < DEADLINE
        c1.poll(0.1)
    mine = assignment(c1)
    # Let the group settle, then restart the static member (SIGKILL: no LeaveGroup).
    settle = time.time()
    while time.time() - settle < 2:
        c1.poll(0.1)
    before = list(assigns)
    other.send_signal(signal.SIGKILL)
    other.wait()
    again = subprocess.Popen([sys.executable, "-c", STATIC, b], stdout=subprocess.PIPE)
    line = readline_polling(again, [c1]).decode()
    assert line == first, f"the restarted static member got {line!r}, before {first!r}"
    t0 = time.time()
    while time.time() - t0 < 3:
        c1.poll(0.1)
    assert assigns == before, f"no rebalance for the other member: {before} -> {assigns}"
    assert assignment(c1) == mine
    again.send_signal(signal.SIGKILL)
    again.wait()
    c1.close()


def admin_groups(b):
    from confluent_kafka import ConsumerGroupState
    create(b, "g-admin")
    produce(b, "g-admin", range(30))
    c = consumer(b, "admin-group", **{"client.id": "admin-client"})
    c.subscribe(["g-admin"])
    poll_until([c], 30, {})
    c.commit(asynchronous=False)
    a = AdminClient({"bootstrap.servers": b})
    listed = a.list_consumer_groups().result(10)
    ids = {g.group_id: g for g in listed.valid}
    assert "admin-group" in ids, ids
    assert ids["admin-group"].state == ConsumerGroupState.STABLE, ids["admin-group"].state
    stable_only = a.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(10)
    assert "admin-group" in {g.group_id for g in stable_only.valid}
    d = a.describe_consumer_groups(["admin-group"])["admin-group"].result(10)
    assert d.state == ConsumerGroupState.STABLE
    assert d.partition_assignor == "range", d.partition_assignor
    assert len(d.members) == 1 and d.members[0].client_id == "admin-client"
    assigned = sorted(tp.partition for tp in d.members[0].assignment.topic_partitions)
    assert assigned == [0, 1, 2], assigned
    # Not while it has members.
    try:
        a.delete_consumer_groups(["admin-group"])["admin-group"].result(10)
        raise AssertionError("deleted a non-empty group")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.NON_EMPTY_GROUP, e
    c.close()
    a.delete_consumer_groups(["admin-group"])["admin-group"].result(10)
    try:
        a.delete_consumer_groups(["admin-group"])["admin-group"].result(10)
        raise AssertionError("deleted a missing group")
    except ck.KafkaException as e:
        assert e.args[0].code() == ck.KafkaError.GROUP_ID_NOT_FOUND, e
    # Its committed offsets went with it.
    c2 = consumer(b, "admin-group")
    committed = c2.committed([ck.TopicPartition("g-admin", p) for p in range(3)], timeout=10)
    assert all(tp.offset < 0 for tp in committed), committed
    c2.close()


def commit_before_restart(b):
    create(b, "g-restart")
    produce(b, "g-restart", range(60))
    c = consumer(b, "restart-group")
    c.subscribe(["g-restart"])
    poll_until([c], 60, {})
    c.commit(asynchronous=False)
    c.close()


def resume_after_restart(b):
    c = consumer(b, "restart-group")
    committed = c.committed([ck.TopicPartition("g-restart", p) for p in range(3)], timeout=10)
    assert [tp.offset for tp in committed] == [20, 20, 20], committed
    produce(b, "g-restart", range(60, 66))
    c.subscribe(["g-restart"])
    seen = poll_until([c], 6, {})
    assert sorted(seen.values()) == list(range(60, 66)), seen
    c.commit(asynchronous=False)
    c.close()


def subscription_changes(b):
    """librdkafka's 0113 u_multiple_subscription_changes (variation 1, no rebalance
    callback) with its playbook and timings: 8 cooperative-sticky members, two 16-partition
    topics with data, subscriptions changing faster than rebalances finish. The group must
    converge: every member ends with 2 partitions of the first topic, within a bound."""
    t1, t2 = "g-subs-1", "g-subs-2"
    create(b, t1, 16)
    create(b, t2, 16)
    produce(b, t1, range(16 * 200), partitions=16)
    produce(b, t2, range(16 * 200), partitions=16)
    consumers = [consumer(b, "subs", **{"client.id": f"C_{i}",
                                        "partition.assignment.strategy": "cooperative-sticky"})
                 for i in range(8)]
    s1, s2 = [t1], [t2]
    playbook = [(0, 0, s1), (4, 1, s1), (4, 1, s1), (4, 1, s1), (4, 2, s1), (6, 3, s1),
                (6, 4, s1), (6, 5, s1), (6, 6, s1), (6, 7, s2), (6, 1, s1), (6, 1, s2),
                (6, 1, s1), (6, 2, s2), (7, 2, s1), (7, 1, s2), (8, 0, s2), (8, 1, s1),
                (8, 0, s1), (13, 2, s1), (13, 1, s2), (13, 5, s2), (14, 6, s2), (15, 7, s1),
                (15, 1, s1), (15, 5, s1), (15, 6, s1)]
    t0 = time.time()
    for at, i, topics in playbook:
        while time.time() - t0 < at:
            for c in consumers:
                c.poll(0.01)
        consumers[i].subscribe(topics)
    last = time.time()
    while True:
        got = [sorted((p.topic, p.partition) for p in c.assignment()) for c in consumers]
        if all(len(a) == 2 and all(t == t1 for t, _ in a) for a in got):
            break
        assert time.time() - last < 60, f"not converged 60 s after the last change: {got}"
        for c in consumers:
            c.poll(0.01)
    assert sorted(p for a in got for _, p in a) == list(range(16))
    print(f"converged {time.time() - last:.1f} s after the last subscription change")
    for c in consumers:
        c.close()

if __name__ == "__main__":
    case, bootstrap = sys.argv[1], sys.argv[2]
    globals()[case](bootstrap)
    print("OK", case)
