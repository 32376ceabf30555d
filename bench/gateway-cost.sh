#!/usr/bin/env bash
# What each API-gateway setting (issue 23) costs a request that uses it: instructions per
# request under callgrind (scripts/cost-guard.sh --measure), HTTP/1.1 at 64 connections
# and h2c at 4 × 32, one worker, on a route with one setting each. Keys, a JWKS and a
# token are made here with openssl. Prints one line per case: name http1 h2c.
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT

KEY=bench-0123456789abcdef0123456789
printf 'bench %s\n' "$KEY" > "$D/bench.keys"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/rsa.pem" 2> /dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/ec.pem" 2> /dev/null
# RS256 is PKCS#1 v1.5 over SHA-256, what `openssl dgst -sign` makes with an RSA key.
TOKEN=$(python3 - "$D" <<'PY'
import base64, json, subprocess, sys, time
d = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
modulus = subprocess.check_output(["openssl", "rsa", "-in", f"{d}/rsa.pem", "-noout", "-modulus"]).decode().strip().split("=")[1]
json.dump({"keys": [{"kty": "RSA", "kid": "k1", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]}, open(f"{d}/jwks.json", "w"))
head = b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{d}/rsa.pem"], input=f"{head}.{body}".encode(), capture_output=True, check=True).stdout
print(f"{head}.{body}.{b64(sig)}")
PY
)

measure() {
    local name=$1
    local counts
    counts=$(COST_GUARD_DIR="$D" scripts/cost-guard.sh --measure | awk '{print $2}' | paste -sd' ')
    echo "$name $counts"
}

measure "plain" 
COST_GUARD_ROUTE='auth = "k"' COST_GUARD_TABLES=$'[auth.k]\nkind = "api_key"\nkeys_file = "bench.keys"' \
    COST_GUARD_H2LOAD="-H 'x-api-key: $KEY'" measure "api_key"
COST_GUARD_ROUTE='auth = "j"' COST_GUARD_TABLES=$'[auth.j]\nkind = "jwt"\njwks_file = "jwks.json"' \
    COST_GUARD_H2LOAD="-H 'authorization: Bearer $TOKEN'" measure "jwt_rs256"
COST_GUARD_ROUTE=$'path_prefix = "/obj/"\n[route.rewrite]\nstrip_prefix = "/obj"\nadd_prefix = "/obj"' measure "rewrite_prefix"
COST_GUARD_ROUTE=$'[route.rewrite]\nregex = "^/obj/(.+)$"\nto = "/obj/{1}"\n[route.request_headers]\nset = { x-client = "{client_addr}", x-route = "{route}" }\n[route.response_headers]\nremove = ["server"]' \
    measure "rewrite_regex_headers"
COST_GUARD_ROUTE=$'[route.compression]\nalgorithms = ["gzip"]' COST_GUARD_OBJECT=4KiB.json \
    COST_GUARD_H2LOAD="-H 'accept-encoding: gzip'" measure "gzip_4KiB"
COST_GUARD_ROUTE=$'[route.compression]' COST_GUARD_OBJECT=4KiB.json \
    COST_GUARD_H2LOAD="-H 'accept-encoding: zstd'" measure "zstd_4KiB"
COST_GUARD_ROUTE=$'[route.compression]' COST_GUARD_OBJECT=4KiB.json measure "compression_not_asked_4KiB"
COST_GUARD_OBJECT=4KiB.json measure "plain_4KiB"
