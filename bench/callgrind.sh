#!/bin/bash
# Instructions per request (callgrind): origin nginx (and a stand-in OTLP collector),
# sluice under callgrind, wrk for 4 s. Env: CACHE=none|true (a proxied request or a cache
# hit), TRACE=<sample_ratio> ([tracing] on), ADMIN=1 ([admin] on), H2=1 (h2c clients: h2load,
# 4 connections × 32 streams, instead of wrk). Args: [binary] [100B|64KiB].
BIN=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/release/sluice}; SIZE=${2:-100B}
W=$(mktemp -d); chmod 755 $W
O=$((20000 + RANDOM % 20000)); P=$((O+1)); C=$((O+2))
head -c 100 /dev/zero | tr '\0' 'o' > $W/100B; head -c 65536 /dev/zero | tr "\0" "o" > $W/64KiB
cat > $W/origin.conf <<EOC
worker_processes 1; daemon off; master_process off; pid $W/o.pid; error_log $W/oe.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
 server { listen 127.0.0.1:$O; location /obj/ { add_header Cache-Control "max-age=3600"; alias $W/; } }
 server { listen 127.0.0.1:$C; client_max_body_size 64m; location = /v1/traces { return 200 "{}"; } } }
EOC
nginx -c $W/origin.conf -p $W & NG=$!
cat > $W/s.toml <<EOC
[server]
worker_threads = 1
keepalive_timeout = "300s"
[[listener]]
address = "127.0.0.1:$P"
[[route]]
upstream = "o"
CACHELINE
[upstream.o]
endpoints = ["127.0.0.1:$O"]
CACHETABLE
EOC
cd $W
if [ -n "$TRACE" ]; then printf "[tracing]\notlp_endpoint = \"http://127.0.0.1:$C/v1/traces\"\nsample_ratio = $TRACE\n" >> $W/s.toml; fi
if [ -n "$ADMIN" ]; then printf '[admin]\naddress = "127.0.0.1:0"\n' >> $W/s.toml; fi
if [ "$CACHE" = none ]; then sed -i 's/^CACHELINE$//; s/^CACHETABLE$//' $W/s.toml; else sed -i "s/^CACHELINE$/cache = ${CACHE:-true}/; s/^CACHETABLE$/[cache]/" $W/s.toml; fi
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=$W/cg.out ${BIN} run --config $W/s.toml > $W/sl.log 2>&1 & SL=$!
for i in $(seq 1 100); do curl -s http://127.0.0.1:$P/obj/$SIZE >/dev/null 2>&1 && break; sleep 0.2; done
for i in 1 2 3; do curl -s http://127.0.0.1:$P/obj/$SIZE >/dev/null; done
callgrind_control -z $SL >/dev/null
if [ -n "$H2" ]; then
  h2load -c4 -m32 -D4 http://127.0.0.1:$P/obj/$SIZE > $W/h2load.txt
  callgrind_control -d $SL >/dev/null
  REQ=$(grep -o "requests: [0-9]* total, [0-9]* started, [0-9]* done, [0-9]* succeeded" $W/h2load.txt | awk '{print $8}')
else
  wrk -t1 -c16 -d4s http://127.0.0.1:$P/obj/$SIZE > $W/wrk.txt
  callgrind_control -d $SL >/dev/null
  REQ=$(grep -o "[0-9]* requests in" $W/wrk.txt | cut -d' ' -f1)
fi
sleep 0.5
F=$(ls -t $W/cg.out* | head -1)
TOT=$(callgrind_annotate $F 2>/dev/null | grep "PROGRAM TOTALS" | tr -d ',' | awk '{print $1}')
echo "requests=$REQ instructions=$TOT per_request=$((TOT / REQ))"
cp $F ${CG_OUT:-/tmp/sluice-callgrind.out}
kill $SL $NG; wait 2>/dev/null
rm -rf $W
