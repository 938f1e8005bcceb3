#!/usr/bin/env bash
# Profiles the broker producing and serving: the broker with --cores 1 pinned to CPU 0,
# runnel-bench on CPU 1 (1 KiB records, 64 KiB batches, 8 partitions), `perf record -g` of
# the broker for 6 s while runnel-bench produces (acks=1), then while 4 consumers read the
# same data (fanout). Writes target/profile/{produce,serve}.data and prints each run's
# throughput and broker CPU per GB; read them with `perf report -i <file>`. Call graphs are
# unwound with DWARF (a release build has no frame pointers), at 999 samples/s.
# With FLAMEGRAPH=<dir holding Brendan Gregg's stackcollapse-perf.pl and flamegraph.pl>,
# also writes docs/flamegraphs/<name>-{produce,serve}.svg (NAME=<name>, default "runnel").
# Usage: benches/profile.sh [broker binary]     (default: target/release/runnel, built here)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --bin runnel --bin runnel-bench
BIN=${1:-target/release/runnel}
B=target/release/runnel-bench
OUT=target/profile
mkdir -p "$OUT"
# An empty page cache to start from (root only): on a VM that backs memory lazily, pages
# past what the host keeps resident cost several times the CPU to touch.
sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
D=$(mktemp -d "$OUT/data.XXXX")
PORT=$((20000 + RANDOM % 20000))
taskset -c 0 "$BIN" --cores 1 --listen 127.0.0.1:$PORT --data-dir "$D" > "$D.log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q "runnel is ready" "$D.log" && break; sleep 0.1; done
taskset -c 1 $B --brokers 127.0.0.1:$PORT --quiet produce --create --partitions 8 --duration 2 >/dev/null
perf record -F 999 --call-graph dwarf,16384 -p $P -o "$OUT/produce.data" -- sleep 6 2>/dev/null &
R=$!
taskset -c 1 $B --brokers 127.0.0.1:$PORT --quiet --broker-pid $P produce --partitions 8 --duration 6
wait $R
perf record -F 999 --call-graph dwarf,16384 -p $P -o "$OUT/serve.data" -- sleep 6 2>/dev/null &
R=$!
taskset -c 1 $B --brokers 127.0.0.1:$PORT --quiet --broker-pid $P fanout --consumers 4 --duration 6
wait $R
if [ -n "${FLAMEGRAPH:-}" ]; then
    mkdir -p docs/flamegraphs
    for w in produce serve; do
        perf script -i "$OUT/$w.data" 2>/dev/null | "$FLAMEGRAPH/stackcollapse-perf.pl" \
            | "$FLAMEGRAPH/flamegraph.pl" --title "${NAME:-runnel}: $w (benches/profile.sh)" --width 1600 --minwidth 1.5 \
            > "docs/flamegraphs/${NAME:-runnel}-$w.svg"
        echo "docs/flamegraphs/${NAME:-runnel}-$w.svg"
    done
fi
