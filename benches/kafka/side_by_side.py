#!/usr/bin/env python3
"""Runnel and Apache Kafka side by side on this machine, the same workloads in one run.

Both brokers run at once, each pinned to the same CPU (--broker-cpus, default 0) with
runnel-bench pinned to the others (--bench-cpus, default 1), so each figure is what one
core of broker gets done, and the rounds interleave the brokers (alternating which goes
first) so drifts of a shared machine hit both, after a 5-second unmeasured produce to
each (Kafka's JIT warms up). Runnel runs with --cores 1 and its
defaults; Kafka as benches/kafka/kafka starts it (production defaults, 1 GiB heap).

Workloads (runnel-bench, 1 KiB records, 64 KiB batches, 8 partitions): produce acks=1,
produce acks=all, consume (one consumer from the earliest offset), fan-out (four
consumers), end-to-end latency at a fixed rate; and Kafka's own ProducerPerformance and
ConsumerPerformance (the Java client) producing, then consuming (a new group each time),
400,000 1 KiB records on each; transactions: an idempotent acks=all producer, transactions
of 1, 10 and 100 batches (runnel-bench --transaction-batches), and reading that topic
read_committed and read_uncommitted. Reported: medians over the rounds,
Runnel/Kafka ratios, broker CPU-s per GB moved, and each broker's RSS after the run.

A second Runnel without fdatasync on acks=all (Kafka's durability) runs the acks=all
workloads too (transactions included), reported in rows of their own.

Usage: benches/kafka/side_by_side.py [--rounds 3] [--seconds 8] [--e2e-rate 20000]
                                     [--runnel-arg=--flag=value ...] [--only WORKLOAD ...]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA = os.path.join(ROOT, "benches", "kafka", "kafka")


def free_port(n=1):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid):
    """utime + stime of a process, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port, deadline_s=60):
    deadline = time.time() + deadline_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--e2e-rate", type=int, default=20000)
    ap.add_argument("--broker-cpus", default="0")
    ap.add_argument("--bench-cpus", default="1")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "runnel"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "runnel-bench"))
    ap.add_argument("--runnel-arg", action="append", default=[],
                    help="an extra Runnel flag (repeatable), e.g. --runnel-arg=--sync-on-acks-all=false")
    ap.add_argument("--only", action="append", default=[],
                    help="run only the workloads whose name starts with this (repeatable)")
    a = ap.parse_args()

    work = os.path.join(ROOT, "target", "side-by-side")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rport, nport, kport, cport = free_port(4)

    def start_runnel(name, port, *extra):
        return subprocess.Popen(
            ["taskset", "-c", a.broker_cpus, a.bin, "--cores", "1", "--listen", f"127.0.0.1:{port}",
             "--data-dir", os.path.join(work, name), *a.runnel_arg, *extra],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, name + ".log"), "w"))

    runnel = start_runnel("runnel", rport)
    # A second Runnel with Kafka's durability for acks=all (the page cache, no fdatasync),
    # used only by that workload: idle otherwise.
    nosync = start_runnel("runnel-nosync", nport, "--sync-on-acks-all=false")
    kdir = os.path.join(work, "kafka")
    # Both brokers go at the end whatever fails, Kafka's start included.
    try:
        out = subprocess.run([KAFKA, "start", "--port", str(kport), "--controller-port", str(cport),
                              "--dir", kdir, "--cpus", a.broker_cpus],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        kpid = int(out.split("pid=")[1].split()[0])
        brokers = {"runnel": (f"127.0.0.1:{rport}", runnel.pid), "kafka": (f"127.0.0.1:{kport}", kpid),
                   "runnel-nosync": (f"127.0.0.1:{nport}", nosync.pid)}
        wait_port(rport)
        wait_port(nport)
        # Workloads that also run on the Runnel without fdatasync.
        also_nosync = {"produce acks=all", "produce idempotent acks=all", "transactions of 1 batch",
                       "transactions of 10 batches", "transactions of 100 batches"}
        # The topic each workload writes (the Runnel without fdatasync deletes it after).
        topic_of = {"produce idempotent acks=all": "sbs-idem", "transactions of 1 batch": "sbs-txn",
                    "transactions of 10 batches": "sbs-txn", "transactions of 100 batches": "sbs-txn"}

        def bench(name, *args):
            addr, pid = brokers[name]
            r = subprocess.run(["taskset", "-c", a.bench_cpus, a.bench, "--brokers", addr, "--json",
                                "--quiet", "--broker-pid", str(pid), *args],
                               check=True, stdout=subprocess.PIPE, text=True)
            return json.loads(r.stdout)

        def producer_performance(name, records):
            """Kafka's own ProducerPerformance (the Java client, acks=1, linger 5 ms, 64 KiB
            batches), reported in runnel-bench's JSON shape."""
            addr, pid = brokers[name]
            lib = os.path.join(ROOT, "target", "kafka", "lib", "*")
            before = cpu_s(pid)
            r = subprocess.run(
                ["taskset", "-c", a.bench_cpus, "java", "-Xmx512M", "-cp", lib,
                 "org.apache.kafka.tools.ProducerPerformance", "--topic", "sbs-pp", "--num-records",
                 str(records), "--record-size", "1024", "--throughput", "-1", "--producer-props",
                 f"bootstrap.servers={addr}", "acks=1", "linger.ms=5", "batch.size=65536"],
                check=True, capture_output=True, text=True)
            cpu = cpu_s(pid) - before
            last = [l for l in r.stdout.splitlines() if "records sent" in l][-1]
            mbs = float(last.split("(")[1].split(" MB/sec")[0])
            return {"mb_per_s": mbs, "broker_cpu_s": cpu, "bytes": records * 1024}

        def consumer_performance(name, records):
            """Kafka's own ConsumerPerformance (the Java consumer in a new group, from the
            earliest offset of ProducerPerformance's topic), in runnel-bench's JSON shape:
            its fetch MB/s, which leaves out the group join."""
            addr, pid = brokers[name]
            lib = os.path.join(ROOT, "target", "kafka", "lib", "*")
            before = cpu_s(pid)
            r = subprocess.run(
                ["taskset", "-c", a.bench_cpus, "java", "-Xmx512M", "-cp", lib,
                 "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", addr,
                 "--topic", "sbs-pp", "--num-records", str(records), "--timeout", "60000",
                 "--group", f"sbs-cp-{time.monotonic_ns()}"],
                check=True, capture_output=True, text=True)
            cpu = cpu_s(pid) - before
            lines = [l for l in r.stdout.splitlines() if l and l[0].isdigit()]
            cols = [c.strip() for c in lines[-1].split(",")]
            # start, end, MB, MB/s, records, records/s, rebalance ms, fetch ms, fetch MB/s, ...
            return {"mb_per_s": float(cols[8]), "broker_cpu_s": cpu,
                    "bytes": int(float(cols[4])) * 1024}

        s = str(a.seconds)
        def delete_topic(name, broker):
            """(The Runnel without fdatasync only produces: its topic goes after each run, or
            three brokers writing at full speed for three rounds fill the disk.)"""
            from confluent_kafka.admin import AdminClient
            admin = AdminClient({"bootstrap.servers": brokers[broker][0]})
            for f in admin.delete_topics([name]).values():
                f.result(30)

        workloads = [
            ("produce acks=1", lambda n: bench(n, "produce", "--topic", "sbs", "--create", "--partitions", "8",
                                               "--producers", "2", "--duration", s)),
            ("produce acks=all", lambda n: bench(n, "produce", "--topic", "sbs", "--create", "--partitions", "8",
                                                 "--producers", "2", "--acks", "-1", "--duration", s)),
            ("consume", lambda n: bench(n, "consume", "--topic", "sbs", "--duration", s)),
            ("fan-out x4", lambda n: bench(n, "fanout", "--topic", "sbs", "--consumers", "4", "--duration", s)),
            ("ProducerPerformance (Java client)", lambda n: producer_performance(n, 400_000)),
            ("ConsumerPerformance (Java client)", lambda n: consumer_performance(n, 400_000)),
            (f"e2e {a.e2e_rate}/s", lambda n: bench(n, "e2e", "--topic", "sbs-e2e", "--create", "--partitions", "8",
                                                   "--rate", str(a.e2e_rate), "--duration", s)),
            # Transactions: an idempotent acks=all producer as the baseline, then
            # transactions of 1, 10 and 100 batches (AddPartitionsToTxn per new partition,
            # the batches, EndTxn commit), then reading the transactional topic committed
            # and uncommitted.
            ("produce idempotent acks=all", lambda n: bench(
                n, "produce", "--topic", "sbs-idem", "--create", "--partitions", "8", "--producers", "2",
                "--acks", "-1", "--idempotent", "--duration", s)),
            *[(f"transactions of {k} batch{'es' if k > 1 else ''}", lambda n, k=k: bench(
                n, "produce", "--topic", "sbs-txn", "--create", "--partitions", "8", "--producers", "2",
                "--acks", "-1", "--transaction-batches", str(k), "--duration", s)) for k in (1, 10, 100)],
            ("consume read_committed (transactional topic)", lambda n: bench(
                n, "consume", "--topic", "sbs-txn", "--isolation-level", "read_committed", "--duration", s)),
            ("consume read_uncommitted (transactional topic)", lambda n: bench(
                n, "consume", "--topic", "sbs-txn", "--duration", s)),
        ]
        if a.only:
            workloads = [w for w in workloads if any(w[0].startswith(o) for o in a.only)]
        for n in brokers:
            # ProducerPerformance's topic, with 8 partitions like the others.
            bench(n, "produce", "--topic", "sbs-pp", "--create", "--partitions", "8", "--total-bytes", "65536")
            # Warm-up (Kafka's JIT), not measured.
            bench(n, "produce", "--topic", "sbs-warm", "--create", "--partitions", "8", "--producers", "2",
                  "--duration", "5")
        results = {(w, n): [] for w, _ in workloads for n in brokers}
        for r in range(a.rounds):
            order = ["runnel", "kafka"] if r % 2 == 0 else ["kafka", "runnel"]
            for w, run in workloads:
                for n in order + (["runnel-nosync"] if w in also_nosync else []):
                    j = run(n)
                    results[(w, n)].append(j)
                    if n == "runnel-nosync":
                        delete_topic(topic_of.get(w, "sbs"), n)
                    print(f"round {r} {w} {n}: {j.get('mb_per_s')} MB/s, cpu {j.get('broker_cpu_s')} s, "
                          f"p99 {j.get('latency', {}).get('p99_us')} us", file=sys.stderr, flush=True)
        rss = {n: rss_mb(pid) for n, (_, pid) in brokers.items()}

        def med(w, n, f):
            return statistics.median(f(j) for j in results[(w, n)])

        print("| workload | Runnel | Kafka | Runnel/Kafka | Runnel CPU-s/GB | Kafka CPU-s/GB |")
        print("|---|---|---|---|---|---|")
        for w, _ in workloads:
            cpu = {n: med(w, n, lambda j: j["broker_cpu_s"] / max(j["bytes"], 1) * 1e9)
                   for n in brokers if results[(w, n)]}
            if w.startswith("e2e"):
                p = {n: med(w, n, lambda j: j["latency"]["p99_us"] / 1000) for n in ("runnel", "kafka")}
                p999 = {n: med(w, n, lambda j: j["latency"]["p999_us"] / 1000) for n in ("runnel", "kafka")}
                print(f"| {w} p99 (p99.9) | {p['runnel']:.2f} ms ({p999['runnel']:.2f}) | "
                      f"{p['kafka']:.2f} ms ({p999['kafka']:.2f}) | {p['runnel'] / p['kafka']:.2f} | "
                      f"{cpu['runnel']:.2f} | {cpu['kafka']:.2f} |")
            else:
                m = {n: med(w, n, lambda j: j["mb_per_s"]) for n in brokers if results[(w, n)]}
                print(f"| {w} | {m['runnel']:.0f} MB/s | {m['kafka']:.0f} MB/s | {m['runnel'] / m['kafka']:.2f} | "
                      f"{cpu['runnel']:.2f} | {cpu['kafka']:.2f} |")
                if "runnel-nosync" in m:
                    print(f"| {w}, Runnel without fdatasync (Kafka's durability) | {m['runnel-nosync']:.0f} MB/s | "
                          f"{m['kafka']:.0f} MB/s | {m['runnel-nosync'] / m['kafka']:.2f} | "
                          f"{cpu['runnel-nosync']:.2f} | {cpu['kafka']:.2f} |")
        print(f"| RSS after the run | {rss['runnel']:.0f} MiB | {rss['kafka']:.0f} MiB | "
              f"{rss['runnel'] / rss['kafka']:.2f} | | |")
    finally:
        for p in (runnel, nosync):
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        subprocess.run([KAFKA, "stop", "--dir", kdir])


if __name__ == "__main__":
    main()
