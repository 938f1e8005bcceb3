#!/usr/bin/env bash
# Fan-out benchmark: builds the release broker, then runs benches/fanout.rs (4 consumers of
# the same 1 GiB of hot data, zero copy on vs off, against iperf3's loopback limit).
# Usage: benches/fanout.sh            FANOUT_MIB=256 benches/fanout.sh   (smaller)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v iperf3 >/dev/null || { echo "iperf3 is needed for the loopback limit (apt-get install iperf3)" >&2; exit 1; }
cargo build --release --bin runnel
cargo bench -p runnel-benches --bench fanout
