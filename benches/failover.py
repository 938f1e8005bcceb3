#!/usr/bin/env python3
"""Leader failover time: a 3-broker cluster on loopback, a producer (confluent-kafka, acks=all)
writing to partition 0 of an RF=3 topic; each round kills -9 the partition's leader and
measures the time from the kill to the first record produced after it that is acknowledged
(by the new leader), then restarts the killed broker and waits for it to rejoin.

With --victim controller, each round kills -9 the active controller instead and measures the
time to the first topic creation that succeeds through another broker.

Usage: benches/failover.py [--rounds 10] [--session-ms 9000] [--victim leader|controller]
                           [--bin target/release/runnel]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, node_id, voters, port, data, session_ms, binary):
        self.args = [
            binary, "--node-id", str(node_id), "--controller-quorum-voters", voters,
            "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--cores", "1",
            "--broker-session-timeout-ms", str(session_ms), "--default-partitions", "1",
            "--leader-imbalance-check-interval-ms", "0", "--auto-create-topics", "false",
        ]
        self.addr = f"127.0.0.1:{port}"
        self.log = open(os.path.join(os.path.dirname(data), f"node{node_id}.log"), "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def leader_of(addr, topic):
    md = AdminClient({"bootstrap.servers": addr}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or 0 not in t.partitions:
        return None, set(md.brokers)
    return t.partitions[0].leader, set(md.brokers)


def wait(what, cond, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cond()
        if r:
            return r
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def active_controller(nodes):
    """The metadata log's Raft leader, from the newest line the brokers logged about it
    (Metadata names the answering broker as controller, as KRaft brokers do)."""
    newest = (None, -1)
    for n in nodes:
        with open(n.log.name, errors="replace") as f:
            for line in f:
                if "the active controller is node " in line:
                    stamp = line.split(" ", 1)[0]
                    node = int(line.split("the active controller is node ")[1].split()[0])
                    newest = max(newest, (stamp, node), key=lambda x: x[0] or "")
    return newest[1] if newest[1] > 0 else None


def controller_round(r, nodes, bootstrap):
    controller = wait("a controller", lambda: active_controller(nodes))
    victim = nodes[controller - 1]
    others = ",".join(n.addr for n in nodes if n is not victim)
    admin = AdminClient({"bootstrap.servers": others})
    killed = time.monotonic()
    victim.kill()
    while True:
        f = admin.create_topics([NewTopic(f"after-{r}", 1, 2)], request_timeout=5)
        try:
            f[f"after-{r}"].result(10)
            break
        except Exception as e:
            # An attempt that timed out on the client may still have applied.
            if "TOPIC_ALREADY_EXISTS" in str(e):
                break
            time.sleep(0.02)
    took = time.monotonic() - killed
    print(f"round {r + 1}: controller {controller} killed, topic created after "
          f"{took * 1000:.0f} ms", flush=True)
    victim.start()
    wait("the killed broker to rejoin", lambda: controller in leader_of(others, "failover")[1])
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--session-ms", type=int, default=9000)
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--victim", choices=["leader", "controller"], default="leader")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="runnel-failover-")
    ports = [(free_port(), free_port()) for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    nodes = [Node(i + 1, voters, p, os.path.join(tmp, f"data{i + 1}"), a.session_ms, a.bin)
             for i, (p, _) in enumerate(ports)]
    for n in nodes:
        n.start()
    bootstrap = ",".join(n.addr for n in nodes)
    try:
        wait("three brokers", lambda: len(leader_of(bootstrap, "none")[1]) == 3)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic("failover", 1, 3)]).values():
            f.result()
        wait("the topic", lambda: leader_of(bootstrap, "failover")[0] not in (None, -1))
        times = []
        for r in range(a.rounds):
            if a.victim == "controller":
                times.append(controller_round(r, nodes, bootstrap))
                continue
            leader = wait("a leader", lambda: (lambda l: l if l and l > 0 else None)(
                leader_of(bootstrap, "failover")[0]))
            victim = nodes[leader - 1]
            others = ",".join(n.addr for n in nodes if n is not victim)
            p = Producer({"bootstrap.servers": others, "acks": "all", "linger.ms": 0,
                          "message.timeout.ms": 60000, "retry.backoff.ms": 20,
                          "retry.backoff.max.ms": 100, "topic.metadata.refresh.interval.ms": 100})
            p.produce("failover", b"warm", partition=0)
            p.flush(30)
            acked = []
            killed = time.monotonic()
            victim.kill()
            # One record at a time, each sent after the kill; the first acknowledged ends it.
            while not acked:
                p.produce("failover", b"x", partition=0,
                          on_delivery=lambda err, msg: acked.append(time.monotonic())
                          if err is None else None)
                p.flush(0.2)
            p.flush(60)
            took = acked[0] - killed
            new_leader, _ = leader_of(others, "failover")
            times.append(took)
            print(f"round {r + 1}: leader {leader} killed, node {new_leader} acknowledged "
                  f"after {took * 1000:.0f} ms", flush=True)
            victim.start()
            wait("the killed broker to rejoin",
                 lambda: leader - 1 >= 0 and leader in leader_of(others, "failover")[1])
        print(f"{a.victim} killed, session timeout {a.session_ms} ms, {a.rounds} rounds: median "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    finally:
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in nodes:
            if n.proc:
                try:
                    n.proc.wait(30)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
        print(f"logs in {tmp}")


if __name__ == "__main__":
    main()
