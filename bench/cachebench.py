#!/usr/bin/env python3
"""Cache benchmark: cache hits through sluice, nginx proxy_cache, Varnish and HAProxy's
cache, measured in the same run on the same machine, one worker each.

Each cache runs pinned to CPU 0; the origin (nginx) and wrk share CPU 1. The origin's
responses say `Cache-Control: max-age=3600`; every cache is warmed with one request,
then wrk sends hits only for DURATION seconds over 64 keep-alive connections. Reported:
each cache's CPU time per hit (from /proc, so it does not depend on how fast wrk is),
throughput, p99, and how many requests reached the origin during the run (must be 0).
Objects: 100 bytes and 64 KiB. Also sluice with its memory tier too small to hold the
objects and a Redis tier behind it: every hit comes from Redis (`sluice-redis`), over
1,000 keys chosen at random by wrk, pre-warmed. Medians of ROUNDS runs.

Usage: bench/cachebench.py [--rounds N] [--duration S] [--caches a,b] [--out FILE]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxybench as pb  # noqa: E402

CACHES = ["nginx", "varnish", "haproxy", "sluice", "sluice-redis"]
OBJECTS = {"100B": 100, "64KiB": 64 * 1024}
KEYS = 1000  # distinct URLs in the Redis-tier scenario


def start_origin(work):
    """nginx serving /obj/SIZE (any suffix) with a long max-age; counts its requests."""
    port = pb.free_port()
    for name, size in OBJECTS.items():
        with open(os.path.join(work, f"{name}.bin"), "wb") as f:
            f.write(b"o" * size)
    conf = pb.nginx_preamble(work, "origin", master=False) + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /obj/100B {{ default_type text/plain; add_header Cache-Control "max-age=3600"; alias {work}/100B.bin; }}
        location /obj/64KiB {{ default_type application/octet-stream; add_header Cache-Control "max-age=3600"; alias {work}/64KiB.bin; }}
        location = /status {{ stub_status; }}
    }}
}}
"""
    path = os.path.join(work, "origin.conf")
    open(path, "w").write(conf)
    proc = pb.Proc(["nginx", "-c", path, "-p", work], pb.LOAD_CPU, os.path.join(work, "origin.log"))
    pb.wait_port(port)
    return proc, port


def origin_requests(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read().decode()
    return int(text.split("\n")[2].split()[2])


def start_nginx(work, origin):
    port = pb.free_port()
    # nginx's workers run as an unprivileged user: the cache folder must be theirs to write.
    os.makedirs(os.path.join(work, "nginx-cache"), mode=0o777)
    os.chmod(os.path.join(work, "nginx-cache"), 0o777)
    conf = pb.nginx_preamble(work, "nginx", master=True) + f"""
    proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=hot:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_cache hot; proxy_cache_lock on;
        }}
    }}
}}
"""
    path = os.path.join(work, "nginx.conf")
    open(path, "w").write(conf)
    proc = pb.Proc(["nginx", "-c", path, "-p", work], pb.PROXY_CPU, os.path.join(work, "nginx.log"))
    pb.wait_port(port)
    return proc, port


def start_varnish(work, origin):
    port = pb.free_port()
    vcl = os.path.join(work, "default.vcl")
    open(vcl, "w").write(f'vcl 4.1;\nbackend origin {{ .host = "127.0.0.1"; .port = "{origin}"; }}\n')
    argv = ["varnishd", "-F", "-a", f"127.0.0.1:{port}", "-f", vcl, "-n", os.path.join(work, "varnish"),
            "-s", "malloc,256m", "-p", "thread_pools=1", "-p", "thread_pool_min=100"]
    proc = pb.Proc(argv, pb.PROXY_CPU, os.path.join(work, "varnish.log"))
    pb.wait_port(port, timeout=30)
    return proc, port


def start_haproxy(work, origin):
    port = pb.free_port()
    conf = f"""
global
    nbthread 1
    maxconn 10500
    ulimit-n 20000
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
cache hot
    total-max-size 256
    max-object-size 1048576
    max-age 3600
frontend f
    bind 127.0.0.1:{port} backlog 4096
    default_backend b
backend b
    http-request cache-use hot
    http-response cache-store hot
    server s 127.0.0.1:{origin} maxconn 1000
"""
    path = os.path.join(work, "haproxy.cfg")
    open(path, "w").write(conf)
    proc = pb.Proc(["haproxy", "-f", path], pb.PROXY_CPU, os.path.join(work, "haproxy.log"))
    pb.wait_port(port)
    return proc, port


def start_redis(work):
    port = pb.free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = pb.Proc(argv, pb.LOAD_CPU, os.path.join(work, "redis.log"))
    pb.wait_port(port)
    return proc, port


def start_sluice(work, origin, cache_extra):
    port = pb.free_port()
    conf = f"""
[server]
worker_threads = 1
keepalive_timeout = "300s"

[[listener]]
address = "127.0.0.1:{port}"
backlog = 4096

[[route]]
upstream = "origin"
cache = true

[upstream.origin]
endpoints = ["127.0.0.1:{origin}"]

[cache]
{cache_extra}
"""
    path = os.path.join(work, "sluice.toml")
    open(path, "w").write(conf)
    env = dict(os.environ, RUST_LOG="warn")
    proc = pb.Proc.__new__(pb.Proc)
    proc.log = open(os.path.join(work, "sluice.log"), "w")
    proc.popen = subprocess.Popen(["taskset", "-c", pb.PROXY_CPU, pb.SLUICE, "run", "--config", path],
                                  stdout=proc.log, stderr=subprocess.STDOUT, env=env)
    pb.wait_port(port)
    return proc, port


def random_paths_script(work, obj):
    """wrk Lua: each request for one of KEYS URLs, at random."""
    path = os.path.join(work, f"random-{obj}.lua")
    open(path, "w").write(f"""
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/obj/{obj}?k=" .. math.random(1, {KEYS}))
end
""")
    return path


def warm(port, paths):
    for path in paths:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()


def measure(name, proc, port, origin, obj, work, duration):
    if name == "sluice-redis":
        paths = [f"/obj/{obj}?k={k}" for k in range(1, KEYS + 1)]
        script = random_paths_script(work, obj)
    else:
        paths, script = [f"/obj/{obj}"], None
    warm(port, paths)
    warm(port, paths)  # Varnish and nginx may store on the first response only
    pids = proc.worker_pids()
    before_cpu = pb.cpu_seconds(pids)
    before_origin = origin_requests(origin)
    result = pb.run_wrk(port, paths[0], 64, duration, script)
    cpu = pb.cpu_seconds(pids) - before_cpu
    result["cpu_us_per_hit"] = cpu * 1e6 / max(result["requests"], 1)
    result["origin_requests"] = origin_requests(origin) - before_origin - 1  # the status request itself
    return result


def run_round(caches, duration, results):
    for cache in caches:
        for obj in OBJECTS:
            with tempfile.TemporaryDirectory(prefix="cachebench-") as work:
                os.chmod(work, 0o755)  # nginx's and Varnish's workers run as other users
                origin_proc, origin = start_origin(work)
                redis_proc = None
                try:
                    if cache == "nginx":
                        proc, port = start_nginx(work, origin)
                    elif cache == "varnish":
                        proc, port = start_varnish(work, origin)
                    elif cache == "haproxy":
                        proc, port = start_haproxy(work, origin)
                    elif cache == "sluice":
                        proc, port = start_sluice(work, origin, 'memory = "256MiB"')
                    else:
                        redis_proc, redis_port = start_redis(work)
                        # A memory tier that holds about one object: hits come from Redis.
                        size = "2KiB" if obj == "100B" else "66KiB"
                        tier = f'memory = "{size}"\nmax_object = "{size}"\n[cache.redis]\nurl = "redis://127.0.0.1:{redis_port}"\ntimeout = "100ms"'
                        proc, port = start_sluice(work, origin, tier)
                    try:
                        result = measure(cache, proc, port, origin, obj, work, duration)
                    finally:
                        proc.stop()
                finally:
                    if redis_proc:
                        redis_proc.stop()
                    origin_proc.stop()
            print(f"{cache:13} {obj:6} {json.dumps(result)}", flush=True)
            results.setdefault((cache, obj), []).append(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--caches", default=",".join(CACHES))
    parser.add_argument("--out")
    args = parser.parse_args()
    caches = args.caches.split(",")
    results = {}
    for r in range(args.rounds):
        print(f"round {r + 1}", flush=True)
        run_round(caches, args.duration, results)
    summary = {}
    for (cache, obj), runs in results.items():
        med = lambda k: statistics.median(run[k] for run in runs)  # noqa: E731
        summary[f"{cache} {obj}"] = {
            "cpu_us_per_hit": round(med("cpu_us_per_hit"), 2),
            "rps": round(med("rps")),
            "p99_ms": med("p99_ms"),
            "origin_requests": max(run["origin_requests"] for run in runs),
            "errors": max(run["errors"] for run in runs),
        }
    print(f"\n{'cache':22} {'CPU µs/hit':>10} {'hits/s':>9} {'p99 ms':>7} {'origin':>6}")
    for name, s in summary.items():
        print(f"{name:22} {s['cpu_us_per_hit']:10.2f} {s['rps']:9} {s['p99_ms']:7.2f} {s['origin_requests']:6}")
    if args.out:
        json.dump({"rounds": args.rounds, "duration": args.duration, "summary": summary}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
