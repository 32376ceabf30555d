#!/usr/bin/env python3
"""Compression's CPU cost: sluice's [route.compression] beside nginx's `gzip on` and
HAProxy's `compression algo gzip`, each at its default (fast) level, one worker pinned
to CPU 0, in the same run. The origin (nginx) serves a JSON document of 4 KiB and of
64 KiB; wrk (CPU 1) asks for each with and without `Accept-Encoding`. Reported per
proxy, size and coding: CPU per request (from /proc), the extra CPU per KiB of input
that compressing costs (against the same proxy sending it as it is), the compressed
size, throughput and p99; medians of --rounds. Only 127.0.0.1; every run is bounded.

Usage: bench/compressbench.py [--rounds N] [--duration S]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxybench as pb  # noqa: E402


def document(size):
    items, i = [], 0
    while len(json.dumps(items)) < size:
        items.append({"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": f"{i * 7 % 1000}.{i % 100}"})
        i += 1
    return json.dumps(items)[:size - 2] + "]"


def start_origin(work):
    port = pb.free_port()
    for name, size in (("doc4.json", 4096), ("doc64.json", 65536)):
        with open(os.path.join(work, name), "w") as f:
            f.write(document(size))
    conf = pb.nginx_preamble(work, "origin", master=False) + f"""
    types {{ application/json json; }}
    server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ root {work}; }} }}
}}
"""
    path = os.path.join(work, "origin.conf")
    open(path, "w").write(conf)
    proc = pb.Proc(["nginx", "-c", path, "-p", work], pb.LOAD_CPU, os.path.join(work, "origin.log"))
    pb.wait_port(port)
    return proc, port


def start_nginx(work, origin):
    port = pb.free_port()
    conf = pb.nginx_preamble(work, "nginx", master=True) + f"""
    upstream backend {{ server 127.0.0.1:{origin}; keepalive 1024; keepalive_requests 100000000; }}
    gzip on;
    gzip_types application/json;
    gzip_min_length 1024;
    gzip_proxied any;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""
    path = os.path.join(work, "nginx.conf")
    open(path, "w").write(conf)
    proc = pb.Proc(["nginx", "-c", path, "-p", work], pb.PROXY_CPU, os.path.join(work, "nginx.log"))
    pb.wait_port(port)
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
    http-reuse always
frontend f
    bind 127.0.0.1:{port} backlog 4096
    default_backend b
backend b
    compression algo gzip
    compression type application/json
    server s0 127.0.0.1:{origin} maxconn 10000
"""
    path = os.path.join(work, "haproxy.cfg")
    open(path, "w").write(conf)
    proc = pb.Proc(["haproxy", "-f", path], pb.PROXY_CPU, os.path.join(work, "haproxy.log"))
    pb.wait_port(port)
    return proc, port


def start_sluice(work, origin, algorithms):
    port = pb.free_port()
    conf = f"""
[server]
worker_threads = 1
[[listener]]
address = "127.0.0.1:{port}"
backlog = 4096
[[route]]
upstream = "origin"
[route.compression]
algorithms = {json.dumps(algorithms)}
[upstream.origin]
endpoints = ["127.0.0.1:{origin}"]
"""
    path = os.path.join(work, "sluice.toml")
    open(path, "w").write(conf)
    proc = pb.Proc([pb.SLUICE, "run", "--config", path], pb.PROXY_CPU, os.path.join(work, "sluice.log"))
    pb.wait_port(port)
    return proc, port


def load(port, path, coding, duration):
    argv = ["taskset", "-c", pb.LOAD_CPU, "wrk", "-t1", "-c16", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if coding:
        argv += ["-H", f"Accept-Encoding: {coding}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"non-2xx responses: {out}")
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p99_ms": pb.parse_latency(re.search(r"99%\s+([\d.]+\w+)", out).group(1))}


def encoded_size(port, path, coding):
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{content_type}", "-H", f"Accept-Encoding: {coding}",
            f"http://127.0.0.1:{port}{path}"]
    size, _ = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.split(" ", 1)
    return int(size)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    cases = [("nginx", "gzip"), ("haproxy", "gzip"), ("sluice", "gzip"), ("sluice", "zstd"), ("sluice", "br")]
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        origin, origin_port = start_origin(work)
        try:
            for _ in range(args.rounds):
                for proxy, coding in cases:
                    starter = {"nginx": start_nginx, "haproxy": start_haproxy}.get(proxy)
                    proc, port = starter(work, origin_port) if starter else start_sluice(work, origin_port, [coding])
                    try:
                        for path, kib in (("/doc4.json", 4), ("/doc64.json", 64)):
                            for asked in (None, coding):
                                pids = proc.worker_pids()
                                before = pb.cpu_seconds(pids)
                                run = load(port, path, asked, args.duration)
                                cpu_us = (pb.cpu_seconds(pids) - before) * 1e6 / run["requests"]
                                key = (proxy, coding, kib, asked or "identity")
                                rows.setdefault(key, []).append({"cpu_us": cpu_us, **run})
                            rows.setdefault((proxy, coding, kib, "size"), []).append(encoded_size(port, path, coding))
                    finally:
                        proc.stop()
        finally:
            origin.stop()
    print(f"{'proxy':8} {'coding':6} {'KiB':>4} {'CPU µs/req':>11} {'plain µs':>9} {'extra µs/KiB':>13} "
          f"{'size':>7} {'req/s':>8} {'p99 ms':>7}")
    for proxy, coding in cases:
        for kib in (4, 64):
            on = rows[(proxy, coding, kib, coding)]
            off = rows[(proxy, coding, kib, "identity")]
            cpu = statistics.median(r["cpu_us"] for r in on)
            plain = statistics.median(r["cpu_us"] for r in off)
            size = statistics.median(rows[(proxy, coding, kib, "size")])
            print(f"{proxy:8} {coding:6} {kib:>4} {cpu:>11.1f} {plain:>9.1f} {(cpu - plain) / kib:>13.2f} "
                  f"{size:>7} {statistics.median(r['rps'] for r in on):>8.0f} {statistics.median(r['p99_ms'] for r in on):>7.2f}")


if __name__ == "__main__":
    main()
