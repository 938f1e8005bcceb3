#!/usr/bin/env python3
"""The performance baseline: a fixed suite of runnel-bench scenarios against a release
broker on this machine, each reported as an absolute figure and as a ratio to the machine's
own limit measured in the same run, written to docs/benchmarks.md (between the BASELINE
markers). Run through benches/baseline.sh, which builds the binaries first.

Environment: BASELINE_GIB (data per throughput scenario, default 1), BASELINE_QUICK=1 (a
smaller suite for a smoke run, not written to the docs unless BASELINE_WRITE=1).
"""
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER = os.path.join(ROOT, "target", "release", "runnel")
BENCH = os.path.join(ROOT, "target", "release", "runnel-bench")
QUICK = os.environ.get("BASELINE_QUICK") == "1"
GIB = float(os.environ.get("BASELINE_GIB", "0.25" if QUICK else "1"))
BYTES = int(GIB * (1 << 30))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, data, *flags):
        self.data = data
        self.flags = list(flags)
        self.start()

    def start(self):
        self.addr = f"127.0.0.1:{free_port()}"
        t0 = time.time()
        self.proc = subprocess.Popen(
            [BROKER, "--listen", self.addr, "--data-dir", self.data, "--log-level", "warn"]
            + self.flags,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                port = int(self.addr.rsplit(":", 1)[1])
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the broker exited at start")
                if time.time() - t0 > 300:
                    raise RuntimeError("the broker did not start")
                time.sleep(0.02)
        self.startup_s = time.time() - t0

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=300)

    def restart(self):
        self.stop()
        self.start()


def bench(broker, *args):
    cmd = [BENCH, "--brokers", broker.addr, "--json", "--quiet", "--broker-pid",
           str(broker.proc.pid)] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def limits(data):
    out = subprocess.run([BENCH, "--json", "--quiet", "limits", "--streams", "4",
                          "--seconds", "2" if QUICK else "4", "--dir", data,
                          "--file-mib", "256" if QUICK else "1024"],
                         capture_output=True, text=True, timeout=600, check=True)
    j = json.loads(out.stdout.strip())
    out16 = subprocess.run([BENCH, "--json", "--quiet", "limits", "--streams", "16",
                            "--seconds", "2", "--dir", data, "--file-mib", "64"],
                           capture_output=True, text=True, timeout=600, check=True)
    j16 = json.loads(out16.stdout.strip())
    return {
        "tcp1": j["loopback_tcp_1_stream"]["value"] * 1000,
        "tcp4": j["loopback_tcp_4_streams"]["value"] * 1000,
        "tcp16": j16["loopback_tcp_16_streams"]["value"] * 1000,
        "disk": j["sequential_buffered_write"]["value"] * 1000,
        "disk_sync": j["sequential_write_fdatasync_per_mib"]["value"] * 1000,
    }


def main():
    rows = []  # (group, scenario, figure, ratio text)
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="runnel-baseline-")
    try:
        lim = limits(work)
        rows.append(("limits", "loopback TCP, 1 / 4 / 16 streams",
                     f"{lim['tcp1']:.0f} / {lim['tcp4']:.0f} / {lim['tcp16']:.0f} MB/s", ""))
        rows.append(("limits", "sequential buffered write; with fdatasync per MiB",
                     f"{lim['disk']:.0f} MB/s; {lim['disk_sync']:.0f} MB/s", ""))

        b = Broker(os.path.join(work, "data"))
        idle_rss = b.rss_kib()
        produce_max_rps = 0
        scenarios = [
            ("1 producer, 1 KiB records, 64 KiB batches, acks=1, 1 partition", "p1", 1, 1, 1024, False),
            ("1 producer, 1 KiB records, 64 KiB batches, acks=1, 8 partitions", "p8", 8, 1, 1024, False),
            ("8 producers, 8 partitions", "p8x8", 8, 8, 1024, False),
            ("100-byte records, 1 partition", "small", 1, 1, 100, False),
            ("keyed 1 KiB records, 8 partitions", "keyed", 8, 1, 1024, True),
        ]
        for name, topic, parts, producers, size, keyed in scenarios:
            r = bench(b, "produce", "--create", "--topic", topic, "--partitions", parts,
                      "--producers", producers, "--record-size", size, "--batch-size", 65536,
                      "--acks", 1, "--total-bytes", BYTES, *(["--keyed"] if keyed else []))
            if size == 1024:
                produce_max_rps = max(produce_max_rps, r["records_per_s"])
            rows.append(("produce", name, f"{r['mb_per_s']:.0f} MB/s, {r['records_per_s']:.0f} rec/s",
                         f"{r['mb_per_s'] / lim['tcp1']:.2f} of loopback 1-stream (target 0.6)"))

        r = bench(b, "produce", "--create", "--topic", "durable", "--acks", -1,
                  "--record-size", 1024, "--batch-size", 512 << 10, "--total-bytes", BYTES // 2)
        rows.append(("durable produce", "acks=-1, fdatasync before each answer, 512 KiB batches",
                     f"{r['mb_per_s']:.0f} MB/s",
                     f"{r['mb_per_s'] / lim['disk_sync']:.2f} of fdatasync-per-MiB writes (target 0.8)"))

        # Consume: cold start of the 1-partition topic (restart; page cache dropped if allowed).
        b.restart()
        dropped = False
        try:
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            dropped = True
        except OSError:
            pass
        r = bench(b, "consume", "--topic", "p1")
        rows.append(("consume", "1 consumer, from earliest after a restart" +
                     (" with the page cache dropped" if dropped else " (page cache warm: not root)"),
                     f"{r['mb_per_s']:.0f} MB/s",
                     f"{r['mb_per_s'] / lim['tcp1']:.2f} of loopback 1-stream"))
        for zc in ["on", "off"]:
            b.flags = ["--zero-copy", zc]
            b.restart()
            bench(b, "consume", "--topic", "p1")  # hot
            for n in [1, 4, 16]:
                r = bench(b, "fanout", "--topic", "p1", "--consumers", n)
                limit = lim["tcp1"] if n == 1 else lim["tcp4"] if n == 4 else lim["tcp16"]
                cpu = r.get("broker_cpu_s")
                cpu_txt = f", broker CPU {cpu / (r['bytes'] / 1e9):.2f} s/GB" if cpu else ""
                rows.append(("fan-out", f"{n} consumers of hot data, zero copy {zc}",
                             f"{r['mb_per_s']:.0f} MB/s{cpu_txt}",
                             f"{r['mb_per_s'] / limit:.2f} of loopback {n}-stream" +
                             (" (target 0.8)" if n >= 4 else "")))
        b.flags = []
        b.restart()

        for pct in [10, 50, 90]:
            rate = max(1000, int(produce_max_rps * pct / 100))
            r = bench(b, "e2e", "--create", "--topic", f"e2e-{pct}", "--rate", rate,
                      "--duration", 3 if QUICK else 5, "--record-size", 1024)
            lat = r["latency"]
            rows.append(("e2e latency", f"{pct}% of produce max ({rate} rec/s)",
                         f"p50 {lat['p50_us'] / 1e3:.2f} ms, p99 {lat['p99_us'] / 1e3:.2f} ms, "
                         f"p99.9 {lat['p999_us'] / 1e3:.2f} ms",
                         "target p99 <= 1 ms, p99.9 <= 5 ms at 50%" if pct == 50 else ""))
        b.stop()

        for n in [1000] if QUICK else [1000, 10000]:
            data = os.path.join(work, f"many-{n}")
            b = Broker(data)
            base = b.rss_kib()
            try:
                r = bench(b, "produce", "--create", "--topic", f"many-{n}", "--partitions", n, "--producers", 2,
                      "--batch-size", 16384, "--total-bytes", 256 << 20)
            except RuntimeError as e:
                b.stop()
                rows.append(("many partitions", f"{n} partitions on one broker",
                             f"not run: {str(e).split('failed: ')[-1]}", ""))
                continue
            loaded = b.rss_kib()
            b.stop()
            b.start()
            startup = b.startup_s
            rss_idle = b.rss_kib()
            b.stop()
            rows.append(("many partitions", f"{n} partitions on one broker",
                         f"{r['mb_per_s']:.0f} MB/s produce; RSS {(rss_idle - idle_rss) / n:.1f} KiB "
                         f"per idle partition after a restart ({(loaded - base) / n:.1f} KiB while "
                         f"producing); restart ready in {startup:.1f} s",
                         "target <= 64 KiB per idle partition"))
        rows.append(("broker", "idle broker RSS", f"{idle_rss / 1024:.1f} MiB", "target <= 50 MiB"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.time() - t_start
    write(rows, elapsed)


def write(rows, elapsed):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    lines = [
        "<!-- BASELINE START (written by benches/baseline.sh; do not edit by hand) -->",
        "## Baseline (`benches/baseline.sh`)",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}. "
        f"Date: {time.strftime('%Y-%m-%d')}. Suite time: {elapsed / 60:.1f} min"
        f"{' (quick)' if QUICK else ''}. Every figure is from one run of "
        "`benches/baseline.sh`; ratios are to limits measured in the same run "
        "(runnel-bench limits: a loopback TCP blaster, sequential file writes).",
        "",
        "| group | scenario | figure | ratio / target |",
        "|---|---|---|---|",
    ]
    for g, s, f, r in rows:
        lines.append(f"| {g} | {s} | {f} | {r} |")
    lines.append("<!-- BASELINE END -->")
    text = "\n".join(lines) + "\n"
    print(text)
    if QUICK and os.environ.get("BASELINE_WRITE") != "1":
        return
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    doc = open(path).read()
    if "<!-- BASELINE START" in doc:
        doc = re.sub(r"<!-- BASELINE START.*?<!-- BASELINE END -->\n", text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    open(path, "w").write(doc)


if __name__ == "__main__":
    main()
