#!/usr/bin/env python3
"""Broker-side recompression cost (compression.type): produce throughput and broker CPU per
GB of records to a topic that keeps the producer's codec (compression.type=producer) against topics
whose codec differs from the producer's, so the broker inflates and deflates every batch.
Interleaved rounds on one broker (one core: --cores 1, pinned to CPU 0; the load generator
on CPU 1), so the figures are ratios measured in the same run.

Usage: benches/recompress.py [--rounds 3] [--seconds 8] [--bin target/release/runnel]
                             [--bench target/release/runnel-bench]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic

# (label, topic config compression.type, producer codec)
CASES = [
    ("lz4 kept (producer)", "producer", "lz4"),
    ("lz4 -> zstd", "zstd", "lz4"),
    ("none -> lz4", "lz4", "none"),
    ("none -> zstd", "zstd", "none"),
    ("lz4 -> gzip", "gzip", "lz4"),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--bench", default="target/release/runnel-bench")
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="recompress-")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    broker = subprocess.Popen(
        ["taskset", "-c", "0", a.bin, "--cores", "1", "--listen", addr,
         "--data-dir", os.path.join(data, "d")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": addr})
        topics = [NewTopic(f"rc-{i}", 4, 1, config={"compression.type": c})
                  for i, (_, c, _) in enumerate(CASES)]
        for f in admin.create_topics(topics).values():
            f.result(30)
        results = {label: [] for label, _, _ in CASES}
        for r in range(a.rounds):
            for i, (label, _, codec) in enumerate(CASES):
                out = subprocess.run(
                    ["taskset", "-c", "1", a.bench, "--brokers", addr, "--json", "--quiet",
                     "--broker-pid", str(broker.pid), "produce", "--topic", f"rc-{i}",
                     "--duration", str(a.seconds), "--compression", codec,
                     "--producers", "2"],
                    check=True, capture_output=True, text=True).stdout
                j = json.loads(out)
                results[label].append(j)
                print(f"round {r} {label}: {j['records_per_s']:.0f} records/s, "
                      f"broker {j['broker_cpu_s']:.2f} CPU-s", flush=True)
        print()
        # CPU per GB of record data (1 KiB values, before compression).
        print("| case | producer codec | topic compression.type | records/s (median) | vs kept | "
              "broker CPU-s per GB of records |")
        print("|---|---|---|---|---|---|")
        base = None
        for label, conf, codec in CASES:
            rps = statistics.median(x["records_per_s"] for x in results[label])
            cpu = statistics.median(x["broker_cpu_s"] / (x["records"] * 1024 / 1e9)
                                    for x in results[label])
            if base is None:
                base = rps
            print(f"| {label} | {codec} | {conf} | {rps:.0f} | {rps / base:.2f} | {cpu:.2f} |")
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
