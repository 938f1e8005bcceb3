#!/usr/bin/env bash
# The performance baseline: builds the release broker and runnel-bench, runs the fixed suite
# of benches/baseline.py on this machine (about 10 minutes on 2 cores), and writes the table
# to docs/benchmarks.md. BASELINE_QUICK=1 for a short smoke run (printed, not written).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin runnel --bin runnel-bench
# 10,000 partitions need their files open.
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
exec python3 benches/baseline.py
