#!/usr/bin/env bash
# Ingest throughput benchmark: builds the release binaries, raises the open-file limit for
# 10 000 connections, and runs bench/ingest (both modes + the Mosquitto ceiling).
# Extra arguments go to the benchmark, e.g. `bench/ingest.sh --broker-connections 4`.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p fleetpulse -p fleetpulse-bench
ulimit -n "$(ulimit -Hn)"
exec "$target/release/ingest" "$@"
