#!/usr/bin/env bash
# Builds sluice in release mode, installs the peers (nginx, wrk, h2load; oha from crates.io)
# when missing, and runs bench/loadgenbench.py with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in nginx:nginx wrk:wrk h2load:nghttp2-client taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if ! command -v oha >/dev/null && [ ! -x /opt/oha/bin/oha ]; then
    cargo install oha --locked --root /opt/oha
fi
cargo build --release -p sluice
exec python3 bench/loadgenbench.py "$@"
