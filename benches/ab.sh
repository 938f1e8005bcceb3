#!/usr/bin/env bash
# Two broker binaries alternated on the same workload, each round on a fresh data dir: the
# broker with --cores 1 pinned to CPU 0, runnel-bench on CPU 1, so the figures are one core
# of broker. Prints each run's MB/s, broker CPU-s per GB and broker minor page faults, then
# the medians; for an e2e workload also its p99 and p99.9 produce-to-consume latency.
# Usage: benches/ab.sh A_BIN B_BIN [rounds] [runnel-bench subcommand and flags...]
#   default workload: produce --create --partitions 8 --duration 6 (1 KiB records, 64 KiB batches, acks=1)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-3}
shift 3 2>/dev/null || shift $#
WORK=(${@:-produce --create --partitions 8 --duration 6})
BENCH=${RUNNEL_BENCH:-target/release/runnel-bench}
OUT=$(mktemp -d target/ab.XXXX)
CPUSET=/sys/fs/cgroup/cpuset/runnel-ab
if mkdir -p $CPUSET 2>/dev/null && echo 0 > $CPUSET/cpuset.cpus \
        && cat /sys/fs/cgroup/cpuset/cpuset.mems > $CPUSET/cpuset.mems; then :; else CPUSET=; fi
trap 'pkill -f "data-dir $OUT/" 2>/dev/null || true; sleep 0.5; rm -rf "$OUT"; [ -z "$CPUSET" ] || rmdir $CPUSET 2>/dev/null' EXIT
disk_busy_ms() { # io_ticks of the block device under target/
    local d; d=$(stat -c '%d' target)
    awk '{ print $10 }' "/sys/dev/block/$((d >> 8)):$((d & 255))/stat" 2>/dev/null || echo 0
}
settle() { # until the disk is idle (busy under 2 % of a second), at most 60 s
    sync
    for _ in $(seq 60); do
        local t0; t0=$(disk_busy_ms); sleep 1
        [ $(( $(disk_busy_ms) - t0 )) -lt 20 ] && return
    done
}
run() { # bin label
    settle
    local D="$OUT/$2.$r" PORT=$((20000 + RANDOM % 20000))
    # In a cpuset of CPU 0 when there is one (root, cgroup v1): io-wq workers follow the
    # cpuset, not the affinity taskset sets.
    if [ -n "$CPUSET" ]; then
        sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CPUSET" taskset -c 0 "$1" --cores 1 \
            --listen 127.0.0.1:$PORT --data-dir "$D" > "$D.log" 2>&1 &
    else
        taskset -c 0 "$1" --cores 1 --listen 127.0.0.1:$PORT --data-dir "$D" > "$D.log" 2>&1 &
    fi
    local P=$!
    for _ in $(seq 300); do grep -q "runnel is ready" "$D.log" && break; sleep 0.1; done
    grep -q "runnel is ready" "$D.log" || { echo "$1 did not start:" >&2; cat "$D.log" >&2; exit 1; }
    taskset -c 1 "$BENCH" --brokers 127.0.0.1:$PORT --quiet produce --create --topic warm --partitions 8 --duration 1 > /dev/null
    # Minor page faults of the broker over the measured run (field 10 of /proc/PID/stat).
    local F0; F0=$(awk '{print $10}' /proc/$P/stat)
    taskset -c 1 "$BENCH" --brokers 127.0.0.1:$PORT --json --quiet --broker-pid $P "${WORK[@]}" \
        | python3 -c 'import json,sys; j=json.load(sys.stdin); l=j.get("latency") if sys.argv[1] == "e2e" else None; print("%.1f %.3f" % (j["mb_per_s"], j["broker_cpu_s"] / (j["bytes"] / 1e9)) + (" %.2f %.2f" % (l["p99_us"] / 1e3, l["p999_us"] / 1e3) if l else ""), end=" ")' "${WORK[0]}" \
        > "$OUT/row"
    echo $(( $(awk '{print $10}' /proc/$P/stat) - F0 )) >> "$OUT/row"
    # (e2e rows: MB/s, CPU-s/GB, p99 ms, p99.9 ms, page faults)
    tee -a "$OUT/$2.txt" < "$OUT/row" | sed "s/^/$2 round $r: MB\/s, CPU-s\/GB, [e2e: p99 ms, p99.9 ms,] page faults: /"
    kill $P; wait $P 2>/dev/null || true
    rm -rf "$D"
}
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run "$A" A; run "$B" B; else run "$B" B; run "$A" A; fi
done
for l in A B; do
    python3 - "$OUT/$l.txt" "$l" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
lat = f"p99 {med(2):.2f} ms, p99.9 {med(3):.2f} ms, " if len(rows[0]) == 5 else ""
print(f"{sys.argv[2]} median: {med(0):.1f} MB/s, {med(1):.3f} CPU-s/GB, {lat}"
      f"{med(len(rows[0]) - 1):.0f} page faults over {len(rows)} rounds")
PY
done
