#!/usr/bin/env python3
"""Issue 20's performance targets in one run: Runnel before, Runnel after and Apache Kafka,
with the machine's own limits measured in the same rounds.

Three brokers run at once, each pinned to CPU 0 (--broker-cpus; the Runnels also in a
cpuset of that CPU, so their io-wq workers stay there too), runnel-bench pinned to CPU 1
(--bench-cpus): Runnel built from an earlier tree (--before-bin), Runnel from this
tree (--bin), both --cores 1 with their defaults (which fdatasync acks=all requests), and
Kafka as benches/kafka/kafka starts it (production defaults, 1 GiB heap). Rounds interleave
the brokers, rotating which goes first, after a 5-second unmeasured produce to each.
runnel-bench is the client for all three: 1 KiB records, 64 KiB batches (one batch per
produce request).

Before each measured run the script syncs (the earlier runs' dirty pages are written out, not
left to a later run's account) and waits until every broker is idle and the disk too (its block
device busy under 2 % of a second), then stops the other
brokers (SIGSTOP) until the run ends. It empties the page cache before every run that does not
read an earlier run's data, and runs each broker's produce, consume and fan-out one after the
other, so that one broker's data at most is cached at a time (on this VM, memory past about
11 GiB in use costs 4-5x the CPU to touch).

Workloads, per round:
  produce acks=1       8 partitions, 2 producer connections, for --seconds;
  durable produce      acks=all: Runnel fdatasyncs each acks=all request before answering
                       (its default); Kafka on a topic with flush.messages=1 (an fsync after
                       every append, Kafka's own way to be durable on one node);
  consume, fan-out x4  one consumer, then four, reading the whole topic produce acks=1 wrote;
  8 partitions         1 producer connection, keyed records, round robin over the
                       partitions (a 64 KiB batch per partition in turn);
  limits (the kernel's part alone, pinned to the broker's CPU): write(2) of 64 KiB chunks
                       from a 256 MiB buffer into a file on the data disk (CPU-s/GB and
                       MB/s), the same with an
                       fdatasync after each 64 KiB and after each MiB (MB/s), and a loopback
                       TCP receive into a 1 MiB buffer with the sender on the bench CPU
                       (receiver CPU-s/GB).
Then, with the produce maxima known (median records/s of produce acks=1, per broker):
  e2e maximum          runnel-bench e2e --rate 0: its one producer connection as fast as the
                       broker takes it, the consumer tailing, 8 partitions, acks=1;
  e2e latency          runnel-bench e2e at 50 % and 90 % of that broker's own produce
                       maximum, and again of its own e2e maximum (the produce maximum has
                       two connections and no consumer: its 90 % can be more than the e2e
                       workload can carry at all);
  scaling              produce acks=1 to 8 partitions with each broker given both CPUs:
                       Runnel --cores 2 (a new process per build, unpinned) and Kafka
                       re-pinned to CPUs 0-1 (taskset -a); runnel-bench unpinned. Only two
                       CPUs here, so the load generator shares them: its CPU is reported.
Last, in a phase of its own (a broker carrying 10,000 partitions does background work for
each, which would weigh on the other workloads):
  10,000 partitions    the 8-partition workload above on a 10,000-partition topic.
The load generator's CPU is recorded for every run (the e2e table shows it: on one CPU the
client producing and consuming can be the limit rather than the broker), and so is the
host's steal time (a virtual machine's CPUs stopped by the hypervisor), summed at the end.

Usage: benches/kafka/targets.py --before-bin PATH [--bin PATH] [--rounds 3] [--seconds 6]
Prints markdown tables (and every run on stderr).
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from side_by_side import KAFKA, ROOT, cpu_s, free_port, rss_mb, wait_port  # noqa: E402

CHUNK = 64 << 10


def drop_caches():
    """Empties the page cache of clean pages (after a sync): root only, skipped otherwise."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
    except OSError:
        pass


def write_limit(path, total, sync_every=None):
    """write(2) of 64 KiB chunks into `path`, optionally an fdatasync after every `sync_every`
    bytes: (MB/s, CPU-s per GB of this process). The chunks come in turn from a 256 MiB
    buffer, larger than the caches, as a broker's request buffers do: copying one hot 64 KiB
    buffer again and again would cost about half as much per GB."""
    src = memoryview(bytearray(b"\x5a") * (256 << 20))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    done = since = 0
    while done < total:
        at = done % len(src)
        done += os.write(fd, src[at:at + CHUNK])
        since += CHUNK
        if sync_every and since >= sync_every:
            os.fdatasync(fd)
            since = 0
    elapsed = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    os.unlink(path)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return done / elapsed / 1e6, cpu / (done / 1e9)


def recv_limit(cpu_recv, cpu_send, total=2 << 30):
    """Loopback TCP: a receiver on `cpu_recv` reading into a 1 MiB buffer, a sender on
    `cpu_send`: the receiver's CPU-s per GB (its thread's rusage)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    sender = subprocess.Popen(
        ["taskset", "-c", cpu_send, sys.executable, "-c",
         "import socket,sys; s=socket.create_connection(('127.0.0.1',int(sys.argv[1]))); "
         "b=b'x'*(1<<20); n=int(sys.argv[2])\nwhile n>0: s.sendall(b); n-=len(b)\ns.close()",
         str(port), str(total)])
    out = {}

    def receive():
        os.sched_setaffinity(0, {int(c) for c in cpu_recv.split(",")})
        c, _ = srv.accept()
        buf = bytearray(1 << 20)
        got = 0
        r0 = resource.getrusage(resource.RUSAGE_THREAD)
        t0 = time.monotonic()
        while True:
            n = c.recv_into(buf)
            if n == 0:
                break
            got += n
        r1 = resource.getrusage(resource.RUSAGE_THREAD)
        out["cpu_per_gb"] = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / (got / 1e9)
        out["mb_per_s"] = got / (time.monotonic() - t0) / 1e6

    t = threading.Thread(target=receive)
    t.start()
    t.join()
    sender.wait()
    srv.close()
    return out["mb_per_s"], out["cpu_per_gb"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--broker-cpus", default="0")
    ap.add_argument("--bench-cpus", default="1")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "runnel"))
    ap.add_argument("--before-bin", required=True)
    ap.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "runnel-bench"))
    ap.add_argument("--skip", action="append", default=[],
                    help="leave out workloads whose name starts with this (repeatable)")
    a = ap.parse_args()

    def skipped(name):
        return any(name.startswith(k) for k in a.skip)

    work = os.path.join(ROOT, "target", "targets")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    procs = []

    # One CPU of broker means a cpuset, not only taskset: io-wq workers (where ext4 takes
    # io_uring's buffered writes) follow the process's cpuset, not its affinity, and would
    # otherwise run on the load generator's CPU. (cgroup v1 here; without it, taskset only.)
    cpuset = "/sys/fs/cgroup/cpuset/runnel-targets"
    try:
        os.makedirs(cpuset, exist_ok=True)
        with open(os.path.join(cpuset, "cpuset.cpus"), "w") as f:
            f.write(a.broker_cpus)
        with open(os.path.join(os.path.dirname(cpuset), "cpuset.mems")) as src, \
                open(os.path.join(cpuset, "cpuset.mems"), "w") as f:
            f.write(src.read().strip())
    except OSError as e:
        print(f"no cpuset ({e}): io-wq workers may use other CPUs", file=sys.stderr)
        cpuset = None

    def start_runnel(name, binary, cores=1, pin=True):
        port = free_port()[0]
        cmd = [binary, "--cores", str(cores), "--listen", f"127.0.0.1:{port}",
               "--data-dir", os.path.join(work, name)]
        if pin:
            cmd = ["taskset", "-c", a.broker_cpus, *cmd]
            if cpuset:
                # Into the cpuset before the broker starts: an io_uring's workers take the
                # cpuset of when the ring is created.
                cmd = ["sh", "-c", f'echo $$ > {cpuset}/cgroup.procs && exec "$@"', "sh", *cmd]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(work, name + ".log"), "w"))
        procs.append(p)
        wait_port(port)
        return f"127.0.0.1:{port}", p.pid

    kport, cport = free_port(2)
    kdir = os.path.join(work, "kafka")
    try:
        brokers = {"before": start_runnel("before", a.before_bin), "after": start_runnel("after", a.bin)}
        out = subprocess.run([KAFKA, "start", "--port", str(kport), "--controller-port", str(cport),
                              "--dir", kdir, "--cpus", a.broker_cpus,
                              # Stopped while another broker is measured: a session longer
                              # than a run keeps its controller from fencing it meanwhile.
                              "--set", "broker.session.timeout.ms=120000"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        kpid = int(out.split("pid=")[1].split()[0])
        brokers["kafka"] = (f"127.0.0.1:{kport}", kpid)
        names = list(brokers)

        def quiet(cached):
            """Before each measured run: the earlier runs' dirty pages written out (their
            writeback would land on whichever broker runs next) and every broker idle (Kafka
            works on for a while after a large topic is created, on the shared CPU). Unless
            the run reads what an earlier one wrote (`cached`), the page cache is emptied
            too: on this VM, memory past about 11 GiB in use costs 4-5x the CPU to touch
            (the host backs it lazily), so a run that found the cache full of earlier runs'
            data paid several times the CPU per GB for the pages it wrote."""
            if cached:
                os.sync()
            else:
                drop_caches()  # (syncs first)
            pids = [p for _, p in brokers.values()] + [p.pid for p in procs]
            deadline = time.time() + 20
            while time.time() < deadline:
                before = sum(cpu_s(p) for p in set(pids))
                time.sleep(1)
                if sum(cpu_s(p) for p in set(pids)) - before < 0.15:
                    break
            # And the disk idle: deleting the last round's topics can leave it busy for
            # seconds (this ext4 is mounted with `discard`: freed blocks are discarded as the
            # journal commits). (Not the kernel's I/O pressure: on this VM it stays near 90 %
            # with the disk idle.)
            deadline = time.time() + 60
            while time.time() < deadline and io_stalled() > 2.0:
                pass

        def disk_busy_ms():
            """Milliseconds the work dir's block device has been busy so far (io_ticks)."""
            try:
                dev = os.stat(work).st_dev
                with open(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat") as f:
                    return int(f.read().split()[9])
            except (OSError, IndexError, ValueError):
                return 0

        def io_stalled():
            """The share of the next second the disk is busy, in %."""
            t0 = disk_busy_ms()
            time.sleep(1)
            return (disk_busy_ms() - t0) / 10

        steal = []

        def bench(name, *args, cpus=None, addr=None, pid=None, cached=False, check=True):
            addr = addr or brokers[name][0]
            pid = pid or brokers[name][1]
            pin = ["taskset", "-c", cpus or a.bench_cpus] if cpus != "any" else []
            quiet(cached)
            # The other brokers are stopped (SIGSTOP) while one is measured: idle, they still
            # wake on the shared CPU (Kafka's JVM and its schedulers above all), which shows in
            # the measured broker's tail latency.
            others = {p for _, p in brokers.values()} | {p.pid for p in procs}
            others.discard(pid)
            for p in others:
                os.kill(p, signal.SIGSTOP)
            try:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run([*pin, a.bench, "--brokers", addr, "--json", "--quiet",
                                    "--broker-pid", str(pid), *map(str, args)],
                                   check=check, stdout=subprocess.PIPE, text=True)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            finally:
                for p in others:
                    os.kill(p, signal.SIGCONT)
            j = json.loads(r.stdout)
            # The load generator's own CPU: on one CPU it can be the limit, not the broker.
            j["bench_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            # What the hypervisor took from both CPUs during the run (runnel-bench reads it).
            steal.append(j.get("steal_s", 0.0))
            return j

        def admin(name, addr=None):
            from confluent_kafka.admin import AdminClient
            return AdminClient({"bootstrap.servers": addr or brokers[name][0]})

        def create(name, topic, partitions, configs=None):
            """A topic; on Kafka with its files removed a second after a delete (not a minute:
            three brokers producing at full speed fill the disk otherwise)."""
            from confluent_kafka.admin import NewPartitions, NewTopic
            configs = dict(configs or {})
            if name == "kafka":
                configs["file.delete.delay.ms"] = "1000"
            ad = admin(name)  # (kept alive until the futures resolve)
            # Kafka's controller refuses an operation of more than 10,000 records ("excessively
            # large batch operation"): a large topic is created 5,000 partitions at a time.
            first = min(partitions, 5000)
            for f in ad.create_topics([NewTopic(topic, first, 1, config=configs)],
                                      operation_timeout=120).values():
                f.result(180)
            while first < partitions:
                first = min(partitions, first + 5000)
                for f in ad.create_partitions([NewPartitions(topic, first)], operation_timeout=120).values():
                    f.result(180)
            # Created is not yet served: wait until Metadata shows every partition's leader.
            deadline = time.time() + 120
            while True:
                t = ad.list_topics(topic, timeout=30).topics.get(topic)
                if t and t.error is None and len(t.partitions) == partitions and all(
                        p.leader >= 0 for p in t.partitions.values()):
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"{name}: topic {topic} has no leaders after 120 s")
                time.sleep(0.2)

        def delete(name, topic, addr=None):
            ad = admin(name, addr)
            for f in ad.delete_topics([topic], operation_timeout=60).values():
                f.result(90)

        s = a.seconds
        for n in names:
            # Warm-up (Kafka's JIT), not measured.
            create(n, "warm", 8)
            bench(n, "produce", "--topic", "warm", "--producers", "2", "--duration", "5")
            delete(n, "warm")

        # (name, topic prefix to create one per round, or None to use the last one created;
        # partitions; topic configs per broker; run; delete the topic after)
        workloads = [
            ("produce acks=1", "sbs", 8, {}, lambda n, t: bench(n, "produce", "--topic", t, "--producers", 2,
                                                               "--duration", s), False),
            # The whole topic the produce above wrote (timed from start to its end: a run for a
            # fixed time would reach the end and wait).
            ("consume", None, 0, {}, lambda n, t: bench(n, "consume", "--topic", t, cached=True), False),
            ("fan-out x4", None, 0, {}, lambda n, t: bench(n, "fanout", "--topic", t, "--consumers", 4,
                                                          cached=True), True),
            ("durable produce acks=all", "durable", 8, {"kafka": {"flush.messages": "1"}},
             lambda n, t: bench(n, "produce", "--topic", t, "--producers", 2, "--acks", -1, "--duration", s), True),
            ("8 partitions, 1 producer, keyed", "p8-", 8, {},
             lambda n, t: bench(n, "produce", "--topic", t, "--producers", 1, "--keyed", "--duration", s), True),
        ]
        workloads = [w for w in workloads if not skipped(w[0])]
        res = {}
        limits = []
        disk = os.path.join(work, "limit.bin")
        # A workload without a topic prefix reads the one before it wrote: they run as a
        # chain, one broker's whole chain before the next broker's, so that only one
        # broker's data is in the page cache at a time (see quiet()).
        chains = []
        for wl in workloads:
            if wl[1] or not chains:
                chains.append([])
            chains[-1].append(wl)
        for r in range(a.rounds):
            order = names[r % 3:] + names[:r % 3]
            for chain in chains:
                for n in order:
                    topic = None
                    for w, prefix, parts, configs, run, drop in chain:
                        if prefix:
                            topic = f"{prefix}{r}"
                            create(n, topic, parts, configs.get(n))
                        j = run(n, topic)
                        res.setdefault((w, n), []).append(j)
                        print(f"round {r} {w} {n}: {j['mb_per_s']:.1f} MB/s, "
                              f"{j['broker_cpu_s'] / (j['bytes'] / 1e9):.3f} CPU-s/GB", file=sys.stderr, flush=True)
                        if drop and topic:
                            delete(n, topic)
            os.sched_setaffinity(0, {int(c) for c in a.broker_cpus.split(",")})
            lim = {"write": write_limit(disk, 2 << 30),
                   "sync64k": write_limit(disk, 256 << 20, CHUNK),
                   "sync1m": write_limit(disk, 512 << 20, 1 << 20),
                   "recv": recv_limit(a.broker_cpus, a.bench_cpus)}
            os.sched_setaffinity(0, set(range(os.cpu_count())))
            limits.append(lim)
            print(f"round {r} limits: {lim}", file=sys.stderr, flush=True)

        def med(w, n, f):
            return statistics.median(f(j) for j in res[(w, n)])

        def mbs(w, n):
            return med(w, n, lambda j: j["mb_per_s"])

        def cpu(w, n):
            return med(w, n, lambda j: j["broker_cpu_s"] / (j["bytes"] / 1e9))

        # Latency at 50 % and 90 % of each broker's own maximum: its e2e maximum, and its produce
        # maximum when the produce workload ran.
        lat = {}
        emax = {}
        if not skipped("e2e"):
            # (Each run starts with the page cache emptied of the earlier workloads' gigabytes:
            # see quiet().)
            # The e2e workload's own maximum: its one producer connection as fast as the broker
            # takes it (64 KiB batches, 5 in flight), with the consumer tailing on the same
            # broker. (A run whose consumer ends more than 2 s behind reports a failure; it is
            # kept, and said.)
            for r in range(a.rounds):
                for n in names[r % 3:] + names[:r % 3]:
                    t = f"e2emax-{r}"
                    create(n, t, 8)
                    j = bench(n, "e2e", "--topic", t, "--rate", 0, "--duration", s, check=False)
                    delete(n, t)
                    emax.setdefault(n, []).append(j)
                    print(f"round {r} e2e max {n}: {j['records_per_s']:.0f}/s, p99 {j['latency']['p99_us']} us"
                          + (f" ({j['failure']})" if j.get("failure") else ""), file=sys.stderr, flush=True)
            # Two readings of "the measured maximum": the 2-connection produce maximum (above),
            # and the e2e workload's own.
            tops = {"e2e": lambda n: statistics.median(j["records_per_s"] for j in emax[n])}
            if ("produce acks=1", names[0]) in res:
                tops["produce"] = lambda n: med("produce acks=1", n, lambda j: j["records_per_s"])
            for r in range(a.rounds):
                for basis, top in tops.items():
                    for pct in (50, 90):
                        for n in names[r % 3:] + names[:r % 3]:
                            rate = int(top(n) * pct / 100)
                            t = f"e2e{pct}-{r}"
                            create(n, t, 8)
                            j = bench(n, "e2e", "--topic", t, "--rate", rate, "--duration", s)
                            delete(n, t)
                            lat.setdefault((basis, pct, n), []).append(j)
                            print(f"round {r} e2e {pct}% of the {basis} maximum {n} at {rate}/s: p99 "
                                  f"{j['latency']['p99_us']} us p99.9 {j['latency']['p999_us']} us",
                                  file=sys.stderr, flush=True)

        # Scaling: each broker on both CPUs (the load generator shares them).
        scale = {}
        if not skipped("scaling"):
            two = {"before": start_runnel("before-2", a.before_bin, 2, pin=False),
                   "after": start_runnel("after-2", a.bin, 2, pin=False)}
            for r in range(a.rounds):
                for n in names[r % 3:] + names[:r % 3]:
                    if n == "kafka":
                        subprocess.run(["taskset", "-a", "-c", "-p", "0-1", str(kpid)], check=True,
                                       stdout=subprocess.DEVNULL)
                        addr, pid = brokers["kafka"]
                    else:
                        addr, pid = two[n]
                    # (a 2-CPU Runnel is a broker of its own: created by runnel-bench there)
                    t = f"scale{r}"
                    if n == "kafka":
                        create(n, t, 8)
                    j = bench(n, "produce", "--topic", t, "--create", "--partitions", 8,
                              "--producers", 2, "--duration", s, cpus="any", addr=addr, pid=pid)
                    if n == "kafka":
                        subprocess.run(["taskset", "-a", "-c", "-p", a.broker_cpus, str(kpid)], check=True,
                                       stdout=subprocess.DEVNULL)
                    delete(n, t, addr)
                    scale.setdefault(n, []).append(j)
                    print(f"round {r} scaling {n}: {j['mb_per_s']:.1f} MB/s, broker {j['broker_cpu_s']:.2f} "
                          f"CPU-s, bench {j['bench_cpu_s']:.2f} CPU-s", file=sys.stderr, flush=True)

        # 10,000 partitions last, in a phase of its own: a broker carrying them does
        # background work for each (Kafka's checkpoints and log tasks), which would weigh on
        # every other workload.
        w10k = "10,000 partitions, 1 producer, keyed"
        if not skipped(w10k):
            for n in names:
                create(n, "p10000", 10000)
                bench(n, "produce", "--topic", "p10000", "--producers", 1, "--total-bytes", 64 << 20)
            for r in range(a.rounds):
                for n in names[r % 3:] + names[:r % 3]:
                    j = bench(n, "produce", "--topic", "p10000", "--producers", 1, "--keyed", "--duration", s)
                    res.setdefault((w10k, n), []).append(j)
                    print(f"round {r} {w10k} {n}: {j['mb_per_s']:.1f} MB/s, "
                          f"{j['broker_cpu_s'] / (j['bytes'] / 1e9):.3f} CPU-s/GB", file=sys.stderr, flush=True)
            workloads.append((w10k,))

        rss = {n: rss_mb(pid) for n, (_, pid) in brokers.items()}
        lm = {k: statistics.median(l[k][0] for l in limits) for k in limits[0]}
        lc = {k: statistics.median(l[k][1] for l in limits) for k in limits[0]}

        print(f"\nMedians of {a.rounds} rounds.\n")
        print("| workload | before | after | Kafka | after/Kafka | before/Kafka | CPU-s/GB before | after | Kafka |")
        print("|---|---|---|---|---|---|---|---|---|")
        for w, *_ in workloads:
            m = {n: mbs(w, n) for n in names}
            c = {n: cpu(w, n) for n in names}
            print(f"| {w} | {m['before']:.0f} MB/s | {m['after']:.0f} MB/s | {m['kafka']:.0f} MB/s | "
                  f"{m['after'] / m['kafka']:.2f} | {m['before'] / m['kafka']:.2f} | {c['before']:.2f} | "
                  f"{c['after']:.2f} | {c['kafka']:.2f} |")
        print(f"| RSS after the run | {rss['before']:.0f} MiB | {rss['after']:.0f} MiB | {rss['kafka']:.0f} MiB "
              f"| | | | | |")

        print("\nThe machine's limits, same rounds (pinned to the broker's CPU):\n")
        print(f"- write(2) of 64 KiB chunks into a file: {lm['write']:.0f} MB/s, {lc['write']:.2f} CPU-s/GB")
        print(f"- the same with an fdatasync after each 64 KiB: {lm['sync64k']:.0f} MB/s; after each MiB: "
              f"{lm['sync1m']:.0f} MB/s")
        print(f"- loopback TCP receive into a 1 MiB buffer: {lm['recv']:.0f} MB/s, {lc['recv']:.2f} CPU-s/GB "
              f"(receiver)")
        print(f"- so the kernel's part of a produce (receive + page-cache write) is about "
              f"{lc['write'] + lc['recv']:.2f} CPU-s/GB")
        if steal:
            print(f"- host steal during the {len(steal)} measured runs (both CPUs): {sum(steal):.2f} s in "
                  f"all, at most {max(steal):.2f} s in one run")
        w = "durable produce acks=all"
        if (w, "after") in res:
            print("\nDurable produce against the fdatasync limits:\n")
            print("| | before | after | Kafka (flush.messages=1) |")
            print("|---|---|---|---|")
            for k, label in (("sync64k", "per 64 KiB (the request size)"), ("sync1m", "per MiB")):
                print(f"| of write+fdatasync {label} | " + " | ".join(
                    f"{mbs(w, n) / lm[k]:.2f}" for n in names) + " |")
        w8 = "8 partitions, 1 producer, keyed"
        if (w10k, "after") in res:
            print("\n10,000 partitions over 8 (same producer):\n")
            print("| before | after | Kafka |\n|---|---|---|")
            print("| " + " | ".join(f"{mbs(w10k, n) / mbs(w8, n):.2f}" for n in names) + " |")
        if emax:
            print("\nThe e2e workload's own maximum (one producer connection flat out, the consumer "
                  "tailing):\n")
            print("| | before | after | Kafka |\n|---|---|---|---|")
            print("| records/s | " + " | ".join(
                f"{statistics.median(j['records_per_s'] for j in emax[n]) / 1000:.0f}k" for n in names) + " |")
            print("| p99 (p99.9) | " + " | ".join(
                f"{statistics.median(j['latency']['p99_us'] for j in emax[n]) / 1000:.2f} ms "
                f"({statistics.median(j['latency']['p999_us'] for j in emax[n]) / 1000:.2f})" for n in names) + " |")
        for basis, what in (("produce", "produce maximum (2 connections, no consumer)"),
                            ("e2e", "e2e maximum (the table above)")):
            if not any(k[0] == basis for k in lat):
                continue
            print(f"\nEnd-to-end latency at 50 % and 90 % of each broker's own {what}:\n")
            print("| load | before p99 (p99.9) | after p99 (p99.9) | Kafka p99 (p99.9) |")
            print("|---|---|---|---|")
            for pct in (50, 90):
                cells = []
                for n in names:
                    runs = lat[(basis, pct, n)]
                    p99 = statistics.median(j["latency"]["p99_us"] for j in runs) / 1000
                    p999 = statistics.median(j["latency"]["p999_us"] for j in runs) / 1000
                    rate = statistics.median(j["records_per_s"] for j in runs)
                    busy = statistics.median(j["bench_cpu_s"] / j["seconds"] for j in runs)
                    cells.append(f"{p99:.2f} ms ({p999:.2f}) at {rate / 1000:.0f}k/s, client CPU {busy:.2f}")
                print(f"| {pct} % | " + " | ".join(cells) + " |")
        if scale:
            print("\nScaling, produce acks=1 to 8 partitions: both CPUs over one (the load generator "
                  "shares both CPUs in the two-CPU runs):\n")
            print("| | before | after | Kafka |\n|---|---|---|---|")
            two_m = {n: statistics.median(j["mb_per_s"] for j in scale[n]) for n in names}
            one_m = {n: mbs("produce acks=1", n) for n in names}
            print("| MB/s, 1 CPU / 2 CPUs | " + " | ".join(f"{one_m[n]:.0f} / {two_m[n]:.0f}" for n in names) + " |")
            print("| 2 CPUs / 1 CPU | " + " | ".join(f"{two_m[n] / one_m[n]:.2f}" for n in names) + " |")
            print("| load generator CPU-s/GB on the 2 CPUs | " + " | ".join(
                f"{statistics.median(j['bench_cpu_s'] / (j['bytes'] / 1e9) for j in scale[n]):.2f}"
                for n in names) + " |")
            print("| broker CPU-s/GB on 2 CPUs | " + " | ".join(
                f"{statistics.median(j['broker_cpu_s'] / (j['bytes'] / 1e9) for j in scale[n]):.2f}"
                for n in names) + " |")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([KAFKA, "stop", "--dir", kdir])
        if cpuset:
            try:
                os.rmdir(cpuset)
            except OSError:
                pass
        # Three brokers' data: tens of GB.
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
