#!/usr/bin/env bash
# Zero copy against the copy path between two network namespaces joined by a veth pair,
# which behaves more like a real NIC than loopback does (the sender no longer pays for the
# receiver's TCP processing in its own softirq; the packets cross a device). The broker
# (`--cores 1`, pinned to CPU 0) runs in one namespace, runnel-bench's fan-out consumers
# (pinned to CPU 1) in the other; 1 GiB is produced once, then each round restarts the
# broker on the same data (page-cached) with --zero-copy on and off in turn. iperf3 over the
# same pair gives the limit. Needs root; creates and removes its namespaces.
# Usage: benches/veth.sh [consumers] [rounds]      (defaults: 4, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
CONSUMERS=${1:-4}
ROUNDS=${2:-3}
cargo build --release --bin runnel --bin runnel-bench >/dev/null 2>&1
BIN=$PWD/target/release/runnel
BENCH=$PWD/target/release/runnel-bench
ID=$$
NB=rv-b-$ID NC=rv-c-$ID
D=$(mktemp -d "$PWD/target/veth.XXXX")
P=
cleanup() {
    [ -n "$P" ] && kill "$P" 2>/dev/null && wait "$P" 2>/dev/null || true
    ip netns pids "$NB" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$NB" 2>/dev/null || true
    ip netns del "$NC" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
ip netns add "$NB"
ip netns add "$NC"
ip link add "vb$ID" type veth peer name "vc$ID"
ip link set "vb$ID" netns "$NB"
ip link set "vc$ID" netns "$NC"
ip -n "$NB" addr add 10.77.0.1/24 dev "vb$ID"
ip -n "$NC" addr add 10.77.0.2/24 dev "vc$ID"
for ns in "$NB" "$NC"; do ip -n "$ns" link set lo up; done
ip -n "$NB" link set "vb$ID" up
ip -n "$NC" link set "vc$ID" up

start() { # start MODE: the broker in its namespace, on the data dir, zero copy MODE
    : > "$D.log"
    ip netns exec "$NB" taskset -c 0 "$BIN" --cores 1 --listen 10.77.0.1:9092 \
        --data-dir "$D" --zero-copy "$1" > "$D.log" 2>&1 &
    P=$!
    for _ in $(seq 100); do grep -q "runnel is ready" "$D.log" && return; sleep 0.1; done
    echo "the broker did not start:" >&2; cat "$D.log" >&2; exit 1
}
stop() { kill "$P"; wait "$P" 2>/dev/null || true; P=; }

if command -v iperf3 >/dev/null; then
    ip netns exec "$NB" iperf3 -s -D -1 >/dev/null
    sleep 0.5
    gbps=$(ip netns exec "$NC" iperf3 -c 10.77.0.1 -t 3 -P "$CONSUMERS" -J |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e9))')
    echo "veth limit (iperf3, $CONSUMERS streams): $gbps GB/s"
fi
start on
ip netns exec "$NC" taskset -c 1 "$BENCH" --brokers 10.77.0.1:9092 --quiet produce --create \
    --partitions 1 --total-bytes $((1 << 30)) > /dev/null
stop
echo "| round | zero copy | GB/s | broker CPU s/GB |"
echo "|---|---|---|---|"
for round in $(seq 0 $((ROUNDS - 1))); do
    for mode in on off; do
        start "$mode"
        out=$(ip netns exec "$NC" taskset -c 1 "$BENCH" --brokers 10.77.0.1:9092 --quiet \
            --broker-pid "$P" fanout --consumers "$CONSUMERS")
        stop
        mbps=$(echo "$out" | sed -n 's/^fanout: .* = \([0-9.]*\) MB\/s.*/\1/p')
        cpu=$(echo "$out" | sed -n 's/^broker CPU: .*(\([0-9.]*\) s per GB)/\1/p')
        echo "| $round | $mode | $(python3 -c "print('%.2f' % ($mbps / 1000))") | $cpu |"
    done
done
