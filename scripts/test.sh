#!/usr/bin/env bash
# Runs sluice's whole test suite, and sluice's end-to-end tests once more in the
# work-stealing model. Installs what the tests need when it is missing:
# prlimit (util-linux) for the FD-exhaustion tests, kill (procps) for the SIGTERM test,
# script (bsdutils) to run `sluice bench` on a pseudo-terminal, the system's CA
# certificates (ca-certificates) for the HTTPS-upstream tests that use the system roots,
# redis-server and memcached for the cache's shared-tier tests (started by the tests
# themselves on free ports; the packages' own services are not used), Chromium for the
# admin status page's browser test (headless), valgrind, nginx and h2load (nghttp2-client)
# for the cost guard (scripts/cost-guard.sh: instructions per proxied request), HAProxy
# (the L4 balancer in front of three instances in tests/scale_out.rs), redis-cli (it
# makes the Redis Cluster of tests/redis_deployments.rs), and for the Kubernetes
# manifests' test: kubectl (kustomize, offline), PyYAML, and the `kubernetes` Python
# client's wheel from PyPI, whose generated models are the API's field names; for the
# gateway's tests (issue 23): openssl, curl, and Python's zstandard and brotli.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prlimit >/dev/null || missing+=(util-linux)
command -v kill >/dev/null || missing+=(procps)
command -v script >/dev/null || missing+=(bsdutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v memcached >/dev/null || missing+=(memcached)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || missing+=(nginx)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v python3 >/dev/null || missing+=(python3)
# The compression tests decode with curl's decoders, and with Python's (below).
command -v curl >/dev/null || missing+=(curl)
# The auth tests make their RSA, P-256 and Ed25519 keys with openssl.
command -v openssl >/dev/null || missing+=(openssl)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v kubectl >/dev/null || missing+=(kubectl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing test dependencies: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi

python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml \
    || python3 -m pip install -q --break-system-packages pyyaml
# The compression tests decode zstd and brotli with Python's zstandard and brotli
# (from PyPI: the python3 on PATH may not be Debian's).
python3 -c 'import zstandard, brotli' 2>/dev/null || python3 -m pip install -q zstandard brotli \
    || python3 -m pip install -q --break-system-packages zstandard brotli
schema=target/k8s-schema/kubernetes-31.0.0-py2.py3-none-any.whl
[ -s "$schema" ] || python3 -m pip download -q --no-deps --only-binary=:all: -d target/k8s-schema kubernetes==31.0.0

cargo test --workspace "$@"
# The binary's tests again in the other concurrency model (the default is per-core).
SLUICE_TEST_MODEL=work-stealing cargo test -p sluice --tests "$@"
# Instructions per proxied request against bench/cost-budget.txt (a release build, then
# ~20 s under callgrind).
scripts/cost-guard.sh
