#!/usr/bin/env python3
"""Replication cost: produce throughput to an RF=3 topic with acks=all against an RF=1 topic
(acks=all and acks=1) on the same 3-broker cluster, in interleaved rounds; and the brokers'
CPU per GB with the leaders serving their followers by splice (zero copy) or by read+write
(--zero-copy=false), and RF=3 acks=all without the leader's fdatasync
(--sync-on-acks-all false), each in a cluster of its own.

Three brokers (one core each: --cores 1) and the load generator share this machine, so
the figures are ratios measured in the same run, not absolute capacity.

Usage: benches/replication.py [--rounds 3] [--seconds 10] [--bin target/release/runnel]
                              [--bench target/release/runnel-bench]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n):
    import socket
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    def __init__(self, binary, data, zero_copy, sync=True):
        ports = free_ports(9)
        self.addrs = [f"127.0.0.1:{ports[i]}" for i in range(3)]
        self.metrics = [f"127.0.0.1:{ports[3 + i]}" for i in range(3)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[6 + i]}" for i in range(3))
        self.procs = []
        for i in range(3):
            d = os.path.join(data, f"node{i + 1}")
            log = open(os.path.join(data, f"node{i + 1}.log"), "ab")
            self.procs.append(subprocess.Popen(
                [binary, "--node-id", str(i + 1), "--controller-quorum-voters", voters,
                 "--listen", self.addrs[i], "--data-dir", d, "--cores", "1",
                 "--metrics-listen", self.metrics[i], "--zero-copy", str(zero_copy).lower(),
                 "--sync-on-acks-all", str(sync).lower(),
                 "--leader-imbalance-check-interval-ms", "0"],
                stdout=subprocess.DEVNULL, stderr=log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                md = AdminClient({"bootstrap.servers": self.addrs[0], "log_level": 0}).list_topics(timeout=2)
                if len(md.brokers) == 3:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        sys.exit("the cluster did not form")

    def bootstrap(self):
        return ",".join(self.addrs)

    def cpu_seconds(self):
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self.procs:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def metric(self, name):
        total = 0
        for m in self.metrics:
            text = urllib.request.urlopen(f"http://{m}/metrics", timeout=5).read().decode()
            for line in text.splitlines():
                if line.startswith(f"runnel_{name}{{"):
                    total += int(line.rsplit(" ", 1)[1])
        return total

    def create(self, topic, rf):
        # Three partitions, one led by each broker.
        assignment = [[(p + i) % 3 + 1 for i in range(rf)] for p in range(3)]
        admin = AdminClient({"bootstrap.servers": self.addrs[0], "log_level": 0})
        fs = admin.create_topics(
            [NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment)])
        for f in fs.values():
            f.result()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = AdminClient({"bootstrap.servers": self.addrs[0], "log_level": 0}).list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t and not t.error and len(t.partitions) == 3 and all(
                    len(p.isrs) == rf and p.leader > 0 for p in t.partitions.values()):
                return
            time.sleep(0.2)
        sys.exit(f"{topic} did not get its replicas")

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(timeout=60)


def produce(bench, cluster, topic, acks, seconds):
    cmd = [bench, "--brokers", cluster.addrs[0], "--json", "--quiet", "produce",
           "--topic", topic, "--acks", str(acks), "--duration", str(seconds),
           "--producers", "3", "--record-size", "1024", "--batch-size", "65536"]
    cpu0 = cluster.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd}: {out.stderr}")
    cpu = cluster.cpu_seconds() - cpu0
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["mb_per_s"], cpu / (j["bytes"] / 1e9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "runnel"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "runnel-bench"))
    a = ap.parse_args()
    results = {}
    for zero_copy, sync in ((True, True), (False, True), (True, False)):
        data = tempfile.mkdtemp(prefix="runnel-repl-")
        c = Cluster(a.bin, data, zero_copy, sync)
        try:
            c.create("rf1", 1)
            c.create("rf3", 3)
            cases = [("rf1", 1), ("rf1", -1), ("rf3", -1)] if zero_copy and sync else [("rf3", -1)]
            for r in range(a.rounds):
                for topic, acks in cases:
                    mb, cpu_gb = produce(a.bench, c, topic, acks, a.seconds)
                    key = (topic, acks, zero_copy) if sync else (topic, acks, "nosync")
                    results.setdefault(key, []).append((mb, cpu_gb))
                    print(f"round {r}: {topic} acks={acks} zero_copy={zero_copy} sync={sync}: "
                          f"{mb:.1f} MB/s, brokers {cpu_gb:.2f} CPU-s/GB", flush=True)
            spliced = c.metric("replica_fetch_bytes_spliced")
            copied = c.metric("replica_fetch_bytes_copied")
            print(f"zero_copy={zero_copy}: replica fetch bytes spliced {spliced}, copied {copied}")
        finally:
            c.stop()
            shutil.rmtree(data, ignore_errors=True)

    def med(key, i):
        return statistics.median(x[i] for x in results[key])

    rf1 = med(("rf1", 1, True), 0)
    rf1_all = med(("rf1", -1, True), 0)
    rf3 = med(("rf3", -1, True), 0)
    print()
    print("| case | MB/s (median) | brokers CPU-s/GB |")
    print("|---|---|---|")
    for key, name in [(("rf1", 1, True), "RF=1 acks=1"), (("rf1", -1, True), "RF=1 acks=all"),
                      (("rf3", -1, True), "RF=3 acks=all, followers served by splice"),
                      (("rf3", -1, False), "RF=3 acks=all, followers served by read+write"),
                      (("rf3", -1, "nosync"), "RF=3 acks=all, --sync-on-acks-all false")]:
        print(f"| {name} | {med(key, 0):.1f} | {med(key, 1):.2f} |")
    print()
    print(f"RF=3 acks=all / RF=1 acks=all: {rf3 / rf1_all:.2f}; / RF=1 acks=1: {rf3 / rf1:.2f}")
    print(f"RF=3 acks=all without / with the leader's fdatasync: "
          f"{med(('rf3', -1, 'nosync'), 0) / rf3:.2f}")
    print(f"CPU-s/GB RF=3 with splice / with read+write: "
          f"{med(('rf3', -1, True), 1) / med(('rf3', -1, False), 1):.2f}")


if __name__ == "__main__":
    main()
