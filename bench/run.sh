#!/usr/bin/env bash
# Builds sluice in release mode, installs the peers (nginx, HAProxy, wrk, h2load) when
# missing, and runs bench/proxybench.py with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
# nginx's echo module makes the slow backend of the c64-slow1of3 scenario.
[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need+=(libnginx-mod-http-echo)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release -p sluice
exec python3 bench/proxybench.py "$@"
