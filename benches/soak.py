#!/usr/bin/env python3
"""Soak: a mixed workload against one Runnel broker for a given time, with verification
on, reporting throughput, RSS and open files over time (run through benches/soak.sh).

Workload (confluent-kafka):
- 2 idempotent acks=all producers to topic `soak` (8 partitions) at --rate records/s each;
  every delivery report is recorded;
- a consumer group of 2 members reading `soak` and committing every second; a third
  member joins and leaves every --churn-s seconds (two rebalances each time);
- every --churn-s seconds a topic is created, written, read back and deleted;
- the broker runs with 1 MiB segments and 60 s retention checked every 5 s, so segments
  are deleted all along.

Verification: each record the group reads is checked against its producer's sequence:
per partition and producer, offsets only grow and sequences never go back (a rebalance
may replay from the last commit: replays below the highest offset seen are skipped, not
errors); at the end, every acknowledged record was read by the group (unless retention
deleted it before the group got to it, which is counted apart); each churn topic reads
back exactly what was written. Sampled every --sample-s seconds: records produced,
acknowledged and consumed per second, broker RSS and open descriptors; a summary compares
the last quarter's RSS and descriptors with the second quarter's (after warm-up).

Usage: benches/soak.py --bootstrap HOST:PORT --pid PID [--seconds 3600] [--rate 2000]
                       [--churn-s 20] [--sample-s 30] [--csv FILE]
"""

import argparse
import os
import sys
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC, PARTITIONS, GROUP = "soak", 8, "soak-group"
failures = []
fail_lock = threading.Lock()


def fail(msg):
    with fail_lock:
        failures.append(msg)
        if len(failures) <= 20:
            print(f"VERIFICATION FAILURE: {msg}", flush=True)


class Seqs:
    """A bit per sequence number, growing as needed."""

    def __init__(self):
        self.bits = bytearray()

    def set(self, i):
        if i >> 3 >= len(self.bits):
            self.bits.extend(bytes(max(1 << 16, (i >> 3) + 1 - len(self.bits))))
        self.bits[i >> 3] |= 1 << (i & 7)

    def has(self, i):
        return i >> 3 < len(self.bits) and self.bits[i >> 3] & (1 << (i & 7))


class Producer(threading.Thread):
    def __init__(self, who, bootstrap, rate, stop):
        super().__init__(daemon=True)
        self.who, self.rate, self.stop = who, rate, stop
        self.p = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                              "acks": "all", "linger.ms": 5, "log_level": 3})
        self.sent = 0
        self.acked = Seqs()
        self.n_acked = 0
        self.lock = threading.Lock()

    def report(self, err, msg):
        if err is not None:
            fail(f"producer {self.who}: delivery failed: {err}")
            return
        seq = int(msg.value().split(b"-")[1])
        with self.lock:
            self.acked.set(seq)
            self.n_acked += 1

    def run(self):
        t0 = time.time()
        while not self.stop.is_set():
            ahead = self.sent / self.rate - (time.time() - t0)
            if ahead > 0:
                self.p.poll(min(ahead, 0.05))
                continue
            try:
                self.p.produce(TOPIC, value=f"{self.who}-{self.sent}".encode(),
                               partition=self.sent % PARTITIONS, on_delivery=self.report)
                self.sent += 1
            except BufferError:
                self.p.poll(0.05)
            self.p.poll(0)
        if self.p.flush(60):
            fail(f"producer {self.who}: records undelivered at the end")


class Member(threading.Thread):
    def __init__(self, name, bootstrap, stop, seen, lifetime=None):
        super().__init__(daemon=True)
        self.stop, self.seen, self.lifetime, self.name = stop, seen, lifetime, name
        self.c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP,
                              "auto.offset.reset": "earliest", "enable.auto.commit": True,
                              "auto.commit.interval.ms": 1000, "log_level": 3,
                              "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
        self.read = 0

    def run(self):
        self.c.subscribe([TOPIC])
        t0 = time.time()
        while not self.stop.is_set():
            if self.lifetime is not None and time.time() - t0 > self.lifetime:
                break
            m = self.c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() != ck.KafkaError._PARTITION_EOF:
                    fail(f"consumer {self.name}: {m.error()}")
                continue
            self.read += 1
            self.seen.record(m.partition(), m.offset(), m.value())
        self.c.close()


class Seen:
    def __init__(self):
        self.lock = threading.Lock()
        self.max_offset = [-1] * PARTITIONS
        self.last_seq = {}
        self.seqs = {}
        self.consumed = 0

    def record(self, partition, offset, value):
        who, seq = value.decode().split("-")
        seq = int(seq)
        with self.lock:
            if offset <= self.max_offset[partition]:
                return  # replayed after a rebalance
            self.max_offset[partition] = offset
            key = (partition, who)
            if self.last_seq.get(key, -1) >= seq:
                fail(f"partition {partition}: {who}-{seq} after {who}-{self.last_seq[key]}")
            self.last_seq[key] = seq
            self.seqs.setdefault(who, Seqs()).set(seq)
            self.consumed += 1


def churn_topic(admin, bootstrap, n):
    topic = f"soak-churn-{n}"
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 3})
    for i in range(100):
        p.produce(topic, value=b"%d" % i, partition=i % 2)
    if p.flush(30):
        fail(f"{topic}: undelivered")
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                     "auto.offset.reset": "earliest", "log_level": 3})
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(2)])
    got, t0 = set(), time.time()
    while len(got) < 100 and time.time() - t0 < 30:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.add(int(m.value()))
    c.close()
    if got != set(range(100)):
        fail(f"{topic}: read back {len(got)} of 100")
    admin.delete_topics([topic])[topic].result(30)


def proc(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--churn-s", type=float, default=20)
    ap.add_argument("--sample-s", type=float, default=30)
    ap.add_argument("--csv")
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap, "log_level": 3})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
    stop = threading.Event()
    seen = Seen()
    stop_producing = threading.Event()
    producers = [Producer(f"p{i}", a.bootstrap, a.rate, stop_producing) for i in range(2)]
    members = [Member(f"m{i}", a.bootstrap, stop, seen) for i in range(2)]
    for t in producers + members:
        t.start()

    def churn():
        n = 0
        while not stop.wait(a.churn_s):
            n += 1
            try:
                Member(f"churn{n}", a.bootstrap, stop, seen, lifetime=a.churn_s / 2).start()
                churn_topic(admin, a.bootstrap, n)
            except Exception as e:  # noqa: BLE001 - a failure to report, not to crash on
                fail(f"churn {n}: {e}")
        return n

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    csv = open(a.csv, "w") if a.csv else None
    if csv:
        csv.write("seconds,produced_per_s,acked_per_s,consumed_per_s,rss_kib,fds\n")
    samples = []
    t0 = last_t = time.time()
    last = (0, 0, 0)
    print("   t(s)  produced/s  acked/s  consumed/s   RSS(MiB)  fds", flush=True)
    while time.time() - t0 < a.seconds:
        time.sleep(min(a.sample_s, max(0.1, a.seconds - (time.time() - t0))))
        now = time.time()
        cur = (sum(p.sent for p in producers), sum(p.n_acked for p in producers), seen.consumed)
        dt = now - last_t
        rates = [(c - l) / dt for c, l in zip(cur, last)]
        rss = proc(a.pid, "VmRSS:")
        fds = len(os.listdir(f"/proc/{a.pid}/fd"))
        samples.append((now - t0, rss, fds))
        print(f"{now - t0:7.0f}  {rates[0]:10.0f}  {rates[1]:7.0f}  {rates[2]:10.0f}  "
              f"{rss / 1024:9.1f}  {fds:4d}", flush=True)
        if csv:
            csv.write(f"{now - t0:.0f},{rates[0]:.0f},{rates[1]:.0f},{rates[2]:.0f},{rss},{fds}\n")
            csv.flush()
        last, last_t = cur, now
    stop_producing.set()
    for p in producers:
        p.join(90)
    # The group reads what was acknowledged last.
    acked = sum(p.n_acked for p in producers)
    deadline = time.time() + 60
    while seen.consumed < acked and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    for m in members:
        m.join(30)
    churner.join(60)
    # Every acknowledged record was read by the group.
    missing = 0
    for p in producers:
        s = seen.seqs.get(p.who, Seqs())
        for i in range(p.sent):
            if p.acked.has(i) and not s.has(i):
                missing += 1
    if missing:
        fail(f"{missing} acknowledged records never read by the group")
    n = len(samples)
    q2 = samples[n // 4:n // 2] or samples
    q4 = samples[3 * n // 4:] or samples
    avg = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
    acked = sum(p.n_acked for p in producers)
    print(f"summary: {a.seconds:.0f} s, {acked} records acknowledged, {seen.consumed} read "
          f"by the group, RSS {avg(q2, 1) / 1024:.1f} MiB (2nd quarter) -> "
          f"{avg(q4, 1) / 1024:.1f} MiB (last quarter), descriptors {avg(q2, 2):.0f} -> "
          f"{avg(q4, 2):.0f}; verification failures: {len(failures)}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
