#!/usr/bin/env python3
"""Proxy benchmark: sluice against nginx and HAProxy, measured in the same run.

Each proxy runs with one worker pinned to CPU 0; the backend (nginx) and the load
generators (wrk, h2load) share CPU 1. The figures are each proxy's CPU time per request
(from /proc, so they do not depend on how fast the load generator is), throughput, p99,
and resident memory per idle keep-alive connection. Every scenario is run ROUNDS times
and the median is reported. Only 127.0.0.1 is used; every load run is bounded in time.

Usage: bench/run.sh [--rounds N] [--duration S] [--only SCENARIO,...] [--out FILE]
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
# Another sluice build to compare with (e.g. the previous main), run as proxy "sluice-prev".
SLUICE_PREV = os.environ.get("SLUICE_PREV")
PROXY_CPU = "0"
LOAD_CPU = "1"
# Workers per proxy (--workers); with more than one, proxies may use every CPU.
WORKERS = 1
SMALL_BODY = "x" * 99 + "\n"  # 100 bytes
HZ = os.sysconf("SC_CLK_TCK")
# The backend nginx's port that takes OTLP exports (sluice-trace, sluice-trace0).
COLLECTOR_PORT = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pids, which=(11, 12)):
    """User (field 14 of stat) plus system (15) time of the processes, in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(fields[i]) for i in which)
    return total / HZ


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


class Proc:
    """A process we started; stopped by its PID only."""

    def __init__(self, argv, cpu, log):
        self.log = open(log, "w")
        self.popen = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=self.log, stderr=subprocess.STDOUT)

    def worker_pids(self):
        kids = children(self.popen.pid)
        return kids or [self.popen.pid]

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


def nginx_preamble(work, name, master, access_log=False):
    """One worker, long keep-alive, no access log unless asked: the part both nginx configs share."""
    return f"""
worker_processes {WORKERS if master else 1};
daemon off;
master_process {"on" if master else "off"};
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{
    {"" if access_log else "access_log off;"}
    keepalive_requests 100000000;
    keepalive_timeout 300s;
"""


ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"


def start_backend(work):
    """One nginx on three ports (the 3-backend scenarios balance over them), and a fourth
    whose /small answers 50 ms late (nginx's echo module: the slow-backend scenario);
    returns the process and the ports. A fifth port answers OTLP exports (POST
    /v1/traces) with 200, as a collector would, reading and discarding the body."""
    global COLLECTOR_PORT
    port, port2, port3, slow = free_port(), free_port(), free_port(), free_port()
    COLLECTOR_PORT = free_port()
    with open(os.path.join(work, "big.bin"), "wb") as f:
        f.write(b"b" * 16384)
    conf = nginx_preamble(work, "backend", master=False) + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{port2} backlog=4096;
        listen 127.0.0.1:{port3} backlog=4096;
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY}"; }}
        location = /big {{ default_type application/octet-stream; alias {work}/big.bin; }}
        location = /status {{ stub_status; }}
    }}
    server {{
        listen 127.0.0.1:{slow} backlog=4096;
        location = /small {{ default_type text/plain; echo_sleep 0.05; echo -n "{SMALL_BODY}"; }}
    }}
    server {{
        listen 127.0.0.1:{COLLECTOR_PORT} backlog=4096;
        client_max_body_size 64m;
        location = /v1/traces {{ default_type application/json; return 200 "{{}}"; }}
    }}
}}
"""
    conf = f"load_module {ECHO_MODULE};\n" + conf
    path = os.path.join(work, "backend.conf")
    open(path, "w").write(conf)
    proc = Proc(["nginx", "-c", path, "-p", work], LOAD_CPU, os.path.join(work, "backend.log"))
    wait_port(port)
    return proc, [port, port2, port3, slow]


NGINX_JSON_LOG = """
    log_format json escape=json '{"time":"$time_iso8601","request_id":"$request_id","client":"$remote_addr:$remote_port","method":"$request_method","target":"$request_uri","protocol":"$server_protocol","host":"$host","upstream":"$upstream_addr","status":$status,"bytes_in":$request_length,"bytes_out":$body_bytes_sent,"upstream_head_ms":"$upstream_header_time","total_ms":"$request_time","user_agent":"$http_user_agent","referer":"$http_referer"}';
"""


def start_nginx(work, backends, access_log=False, least=False, defaults=False):
    """nginx; with `access_log`, JSON lines much like sluice's, buffered (64 KiB, 1 s flush);
    `least`: least_conn balancing; `defaults`: nginx's default upstream settings (no
    kept-alive upstream connections)."""
    h1, h2 = free_port(), free_port()
    servers = ("least_conn; " if least else "") + " ".join(f"server 127.0.0.1:{b};" for b in backends)
    log = NGINX_JSON_LOG + f"    access_log {work}/nginx-access.log json buffer=64k flush=1s;\n" if access_log else ""
    keepalive = "" if defaults else "keepalive 1024; keepalive_requests 100000000;"
    location = "proxy_pass http://backend;" if defaults else 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
    conf = nginx_preamble(work, "nginx", master=True, access_log=access_log) + log + f"""
    upstream backend {{ {servers} {keepalive} }}
    server {{
        listen 127.0.0.1:{h1} backlog=4096;
        listen 127.0.0.1:{h2} http2 backlog=4096;
        location / {{ {location} }}
    }}
}}
"""
    path = os.path.join(work, "nginx.conf")
    open(path, "w").write(conf)
    proc = Proc(["nginx", "-c", path, "-p", work], PROXY_CPU, os.path.join(work, "nginx.log"))
    wait_port(h1)
    return proc, h1, h2


def start_haproxy(work, backends, least=False, defaults=False):
    """HAProxy; `defaults`: its default upstream settings (`http-reuse safe`, no server maxconn)."""
    h1, h2 = free_port(), free_port()
    conf = f"""
global
    nbthread {WORKERS}
    maxconn 10500
    ulimit-n 20000
    no strict-limits
defaults
    mode http
    maxconn 10500
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    {"" if defaults else "http-reuse always"}
    option http-keep-alive
frontend f
    bind 127.0.0.1:{h1} backlog 4096
    bind 127.0.0.1:{h2} proto h2 backlog 4096
    default_backend b
backend b
""" + ("    balance leastconn\n" if least else "") + "".join(f"    server s{i} 127.0.0.1:{b}{'' if defaults else ' maxconn 10000'}\n" for i, b in enumerate(backends))
    path = os.path.join(work, "haproxy.cfg")
    open(path, "w").write(conf)
    proc = Proc(["haproxy", "-f", path], PROXY_CPU, os.path.join(work, "haproxy.log"))
    wait_port(h1)
    return proc, h1, h2


def start_sluice(work, backends, binary=None, access_log=False, server="", workers=None, metrics=False,
                 sample_ratio=None, defaults=False):
    """sluice with its pool defaults (max_connections raised to 1,024 as nginx's keepalive
    and HAProxy's maxconn allow, unless `defaults`); with `access_log`, JSON lines to a
    file; `server`: more [server] settings (the model)."""
    port = free_port()
    conf = f"""
[server]
worker_threads = {workers or WORKERS}
{server}
max_connections = 12000
keepalive_timeout = "300s"

[[listener]]
address = "127.0.0.1:{port}"
backlog = 4096

[[route]]
upstream = "backend"

[upstream.backend]
endpoints = [{", ".join(f'"127.0.0.1:{b}"' for b in backends)}]
"""
    if not defaults:
        conf += "pool = { max_connections = 1024 }\n"
    if access_log:
        conf += f'\n[access_log]\npath = "{work}/access.log"\n'
    if sample_ratio is not None:
        # Spans exported to the backend nginx's collector port; with 0.0 only the
        # sampling decision runs (wrk sends no traceparent).
        conf += f'\n[tracing]\notlp_endpoint = "http://127.0.0.1:{COLLECTOR_PORT}/v1/traces"\nsample_ratio = {sample_ratio}\n'
    if metrics:
        # An admin listener turns on the per-route series the metrics read.
        conf += '\n[admin]\naddress = "127.0.0.1:0"\n'
    path = os.path.join(work, "sluice.toml")
    open(path, "w").write(conf)
    env = dict(os.environ, RUST_LOG="warn")
    log = open(os.path.join(work, "sluice.log"), "w")
    proc = Proc.__new__(Proc)
    proc.log = log
    binary = binary or SLUICE
    proc.popen = subprocess.Popen(["taskset", "-c", PROXY_CPU, binary, "run", "--config", path], stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_port(port)
    return proc, port, port  # one listener detects HTTP/1.1 and h2c


def run_wrk(port, path, conns, duration, script=None):
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", script]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    p99 = parse_latency(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    return {"requests": requests, "rps": rps, "p99_ms": p99, "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def parse_latency(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_h2load(port, path, duration):
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-c16", "-m32", "-t1", f"-D{duration}", "--warm-up-time=1",
            f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    # h2load reports per-request time; "max" column of "time for request" and mean; p99 is not printed.
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {"requests": int(done.group(1)), "rps": rps, "errors": int(done.group(3)),
            "mean_ms": parse_latency(mean.group(1)) if mean else None}


def paced_script(work, rate, conns):
    """wrk Lua pacing: each connection waits conns/rate between requests (an offered rate)."""
    path = os.path.join(work, f"paced-{rate}-{conns}.lua")
    delay_ms = 1000.0 * conns / rate
    open(path, "w").write(f"function delay()\n  return {delay_ms:.3f}\nend\n")
    return path


async def hold_idle(port, count, ready, release):
    request = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
    conns = []

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = b""
        while SMALL_BODY.encode() not in data:
            chunk = await reader.read(4096)
            if not chunk:
                raise RuntimeError("closed before the response")
            data += chunk
        conns.append(writer)

    batch = int(os.environ.get("IDLE_BATCH", "50"))
    for start in range(0, count, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    ready()
    await release()
    for w in conns:
        w.close()


def measure_idle(port, pids, count):
    # Warm up the proxy so per-process buffers are already counted.
    run_wrk(port, "/small", 16, 1)
    time.sleep(1)
    before = rss_kib(pids)
    result = {}

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def ready():
            time.sleep(1)  # let the proxy settle its allocator after the burst
            result["after"] = rss_kib(pids)
            done.set_result(True)

        async def release():
            await done

        await hold_idle(port, count, ready, release)

    asyncio.run(main())
    per_conn = (result["after"] - before) / count
    return {"rss_before_kib": before, "rss_after_kib": result["after"], "kib_per_conn": per_conn}


SCENARIOS = ["c64-small", "c1024-small", "c1024-defaults", "c64-16k", "c64-3backends", "c1024-3backends", "c64-slow1of3",
             "h2c-16x32", "rate5000", "idle10k"]
# Which backends a scenario balances over (default: the first port alone).
BACKENDS = {
    "c64-3backends": lambda ports: ports[:3],
    "c1024-3backends": lambda ports: ports[:3],
    "c64-slow1of3": lambda ports: [ports[0], ports[1], ports[3]],  # the third adds 50 ms
}
# Scenarios where nginx and HAProxy balance by least connections (sluice by its default,
# least_request), as issue 10's benchmark asks; elsewhere they round-robin.
LEAST_CONN = ("c1024-3backends", "c64-slow1of3")
# Scenarios where every proxy runs with its own default upstream settings (issue 20:
# sluice's pool holds 256 connections, so 768 of 1,024 clients queue for one).
DEFAULT_UPSTREAMS = ("c1024-defaults",)


def backend_accepts(backend_port):
    """Connections the backend has accepted so far (nginx stub_status)."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{backend_port}/status", timeout=5) as r:
        return int(r.read().decode().split("\n")[2].split()[0])


def run_scenario(name, port, h2port, pids, args, work, backend_port):
    accepts_before = backend_accepts(backend_port)
    before = cpu_seconds(pids)
    user_before = cpu_seconds(pids, (11,))
    if name == "c64-small":
        r = run_wrk(port, "/small", 64, args.duration)
    elif name in ("c1024-small", "c1024-defaults"):
        r = run_wrk(port, "/small", 1024, args.duration)
    elif name == "c64-3backends":
        r = run_wrk(port, "/small", 64, args.duration)
    elif name == "c1024-3backends":
        r = run_wrk(port, "/small", 1024, args.duration)
    elif name == "c64-slow1of3":
        r = run_wrk(port, "/small", 64, args.duration)
    elif name == "c64-16k":
        r = run_wrk(port, "/big", 64, args.duration)
    elif name == "h2c-16x32":
        r = run_h2load(h2port, "/small", args.duration)
    elif name == "rate5000":
        r = run_wrk(port, "/small", 50, args.duration, paced_script(work, 5000, 50))
    elif name == "idle10k":
        return measure_idle(port, pids, args.idle)
    cpu = cpu_seconds(pids) - before
    user = cpu_seconds(pids, (11,)) - user_before
    r["cpu_us_per_req"] = cpu * 1e6 / max(r["requests"], 1)
    r["user_us_per_req"] = user * 1e6 / max(r["requests"], 1)
    # Upstream connections opened during the run (one stub_status request included).
    r["upstream_conns_opened"] = backend_accepts(backend_port) - accepts_before - 1
    return r


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--proxies", default="direct,nginx,haproxy,sluice")
    # Raw results go under bench/results/, named by date and what they measure; the
    # latest figures are kept in docs/BENCHMARKS.md.
    default_out = os.path.join(ROOT, "bench", "results", time.strftime("%Y-%m-%d") + "-proxy.json")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers per proxy; above 1, proxies are not pinned to one CPU")
    args = parser.parse_args()
    global WORKERS, PROXY_CPU
    WORKERS = args.workers
    if WORKERS > 1:
        PROXY_CPU = ",".join(str(c) for c in range(os.cpu_count() or 2))
    scenarios = args.only.split(",")
    proxies = args.proxies.split(",")
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    results = {}
    backend, backend_ports = start_backend(work)
    backend_port = backend_ports[0]
    try:
        for round_no in range(args.rounds):
            for name in scenarios:
                for proxy in proxies:
                    if proxy == "direct" and (name in ("h2c-16x32", "idle10k") or name in BACKENDS):
                        continue
                    # A fresh proxy process per scenario, so one scenario's memory and
                    # connections do not carry into the next.
                    if proxy == "direct":
                        proc, port, h2port, pids = None, backend_port, None, backend.worker_pids()
                    else:
                        starter = {
                            "nginx": start_nginx,
                            "nginx-log": lambda w, b: start_nginx(w, b, access_log=True),
                            "haproxy": start_haproxy,
                            "sluice": start_sluice,
                            "sluice-log": lambda w, b: start_sluice(w, b, access_log=True),
                            "sluice-prev": lambda w, b: start_sluice(w, b, binary=SLUICE_PREV),
                            "sluice-ws": lambda w, b: start_sluice(w, b, server='model = "work-stealing"'),
                            "sluice-shared": lambda w, b: start_sluice(w, b, server='upstream_pools = "shared"'),
                            "sluice-1w": lambda w, b: start_sluice(w, b, workers=1),
                            "sluice-metrics": lambda w, b: start_sluice(w, b, metrics=True),
                            "sluice-trace0": lambda w, b: start_sluice(w, b, sample_ratio=0.0),
                            "sluice-trace": lambda w, b: start_sluice(w, b, sample_ratio=1.0),
                        }[proxy]
                        backends = BACKENDS.get(name, lambda ports: ports[:1])(backend_ports)
                        if proxy in ("nginx", "haproxy") and name in LEAST_CONN:
                            starter = {"nginx": start_nginx, "haproxy": start_haproxy}[proxy]
                            proc, port, h2port = starter(work, backends, least=True)
                        elif name in DEFAULT_UPSTREAMS:
                            starter = {"nginx": start_nginx, "haproxy": start_haproxy, "sluice": start_sluice,
                                       "sluice-prev": lambda w, b, defaults: start_sluice(w, b, binary=SLUICE_PREV,
                                                                                       defaults=defaults)}[proxy]
                            proc, port, h2port = starter(work, backends, defaults=True)
                        else:
                            proc, port, h2port = starter(work, backends)
                        time.sleep(0.3)
                        pids = proc.worker_pids()
                    try:
                        r = run_scenario(name, port, h2port, pids, args, work, backend_port)
                        results.setdefault(name, {}).setdefault(proxy, []).append(r)
                        print(f"round {round_no + 1} {proxy:8} {name:12} {json.dumps(r)}", flush=True)
                    finally:
                        if proc:
                            proc.stop()
    finally:
        backend.stop()
    summary = summarize(results)
    with open(args.out, "w") as f:
        json.dump({"raw": results, "median": summary}, f, indent=1)
    print_table(summary)
    shutil.rmtree(work, ignore_errors=True)


def summarize(results):
    summary = {}
    for name, by_proxy in results.items():
        for proxy, runs in by_proxy.items():
            keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and v is not None]
            summary.setdefault(name, {})[proxy] = {k: statistics.median(r[k] for r in runs) for k in keys}
    return summary


def print_table(summary):
    print("\nmedians")
    for name, by_proxy in summary.items():
        print(f"\n{name}")
        for proxy, m in by_proxy.items():
            cells = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
            print(f"  {proxy:8} {cells}")


if __name__ == "__main__":
    sys.exit(main())
