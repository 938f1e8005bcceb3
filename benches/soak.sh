#!/usr/bin/env bash
# Soak test: one broker (1 MiB segments, 60 s retention checked every 5 s) under the mixed,
# verified workload of benches/soak.py for a given time; prints throughput, RSS and open
# descriptors over time and a summary (exit 1 on any verification failure).
# Usage: benches/soak.sh [SECONDS=3600] [extra soak.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
shift || true
bin=${RUNNEL:-target/release/runnel}
[ -x "$bin" ] || cargo build --release --bin runnel
dir=$(mktemp -d /tmp/runnel-soak.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --data-dir "$dir/data" --listen "127.0.0.1:$port" --segment-bytes 1048576 \
    --retention-ms 60000 --retention-check-interval-ms 5000 \
    --log-segment-delete-delay-ms 1000 >"$dir/broker.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q "runnel is ready" "$dir/broker.log" && break; sleep 0.1; done
python3 benches/soak.py --bootstrap "127.0.0.1:$port" --pid "$pid" --seconds "$seconds" \
    --csv "$dir/soak.csv" "$@"
status=$?
echo "broker log and samples: $dir"
exit $status
