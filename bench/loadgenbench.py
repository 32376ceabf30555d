#!/usr/bin/env python3
"""Load generator benchmark: `sluice bench` against wrk, oha and h2load, same run, same backend.

The backend is nginx, one worker pinned to CPU 0, serving a 100-byte body over HTTP/1.1
and HTTP/2 (h2c). Each load generator runs pinned to CPU 1 with one thread, the same
connections (and streams) as the others. Reported per tool: requests per second, and the
generator's own CPU time per request (user + system, from the kernel's rusage of the child),
and how busy the backend was (near 1.0: nginx was the bottleneck). Every scenario runs
ROUNDS times (default 7 × 4 s), the tools' order rotating; medians are reported, ratios as
the median of per-round ratios. Only 127.0.0.1 is used; every run is bounded in time.

Usage: bench/loadgen.sh [--rounds N] [--duration S] [--only SCENARIO,...] [--out FILE]
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxybench import (  # noqa: E402
    ROOT, SLUICE, SMALL_BODY, Proc, cpu_seconds, free_port, nginx_preamble, parse_latency, wait_port)

BACKEND_CPU = "0"
LOAD_CPU = "1"
OHA = shutil.which("oha") or "/opt/oha/bin/oha"

SCENARIOS = {
    # name: (protocol, connections, streams per connection)
    "h1-c64": ("h1", 64, 1),
    "h1-c1024": ("h1", 1024, 1),
    "h2-c16x32": ("h2", 16, 32),
}
TOOLS = {"h1": ["sluice", "wrk", "oha"], "h2": ["sluice", "h2load", "oha"]}


def start_backend(work):
    h1, h2 = free_port(), free_port()
    conf = nginx_preamble(work, "backend", master=False) + f"""
    http2_max_concurrent_streams 1024;
    server {{
        listen 127.0.0.1:{h1} backlog=4096;
        listen 127.0.0.1:{h2} http2 backlog=4096;
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY}"; }}
    }}
}}
"""
    path = os.path.join(work, "backend.conf")
    open(path, "w").write(conf)
    proc = Proc(["nginx", "-c", path, "-p", work], BACKEND_CPU, os.path.join(work, "backend.log"))
    wait_port(h1)
    wait_port(h2)
    return proc, h1, h2


def timed(argv, timeout):
    """Runs a load generator pinned to LOAD_CPU; returns (stdout, CPU seconds it used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["taskset", "-c", LOAD_CPU] + argv, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {out.stderr[-500:]}")
    return out.stdout, cpu


def run_tool(tool, proto, conns, streams, url, duration):
    limit = duration + 60
    if tool == "sluice":
        # The harness reports errors itself; they must not turn into an exit status here.
        argv = [SLUICE, "bench", "-q", "--json", "--max-error-rate", "100%", "-t", "1", "-c", str(conns), "-d", f"{duration}s", url]
        if proto == "h2":
            argv[2:2] = ["--http2", "--streams", str(streams)]
        out, cpu = timed(argv, limit)
        r = json.loads(out)
        return {"requests": r["responses"], "rps": r["rate"], "errors": r["errors"], "p99_ms": r["latency_ms"]["p99"], "cpu_s": cpu}
    if tool == "wrk":
        out, cpu = timed(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s", url], limit)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                "errors": int(errors.group(1)) if errors else 0,
                "p99_ms": parse_latency(re.search(r"99%\s+([\d.]+\w+)", out).group(1)), "cpu_s": cpu}
    if tool == "h2load":
        out, cpu = timed(["h2load", f"-c{conns}", f"-m{streams}", "-t1", f"-D{duration}", url], limit)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
        return {"requests": int(done.group(2)), "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
                "errors": int(done.group(3)), "cpu_s": cpu}
    if tool == "oha":
        argv = [OHA, "--no-tui", "--output-format", "json", "--worker-threads", "1", "-c", str(conns), "-z", f"{duration}s", url]
        if proto == "h2":
            argv[1:1] = ["--http2", "-p", str(streams)]
        out, cpu = timed(argv, limit)
        r = json.loads(out)
        ok = sum(r.get("statusCodeDistribution", {}).values())
        return {"requests": ok, "rps": r["summary"]["requestsPerSec"], "errors": sum(r.get("errorDistribution", {}).values()),
                "p99_ms": (r.get("latencyPercentiles", {}).get("p99") or 0) * 1000.0, "cpu_s": cpu}
    raise ValueError(tool)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "loadgen-results.json"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-loadgen-")
    backend, h1, h2 = start_backend(work)
    results = {}
    try:
        for round_no in range(args.rounds):
            for name in args.only.split(","):
                proto, conns, streams = SCENARIOS[name]
                url = f"http://127.0.0.1:{h1 if proto == 'h1' else h2}/small"
                tools = TOOLS[proto]
                # Rotate the order every round so no tool always runs first (or last).
                for tool in tools[round_no % len(tools):] + tools[:round_no % len(tools)]:
                    backend_before = cpu_seconds(backend.worker_pids())
                    r = run_tool(tool, proto, conns, streams, url, args.duration)
                    r["cpu_us_per_req"] = 1e6 * r["cpu_s"] / max(r["requests"], 1)
                    # The backend's CPU share of the run: near 1.0 means nginx was the bottleneck.
                    r["backend_busy"] = (cpu_seconds(backend.worker_pids()) - backend_before) / args.duration
                    results.setdefault(name, {}).setdefault(tool, []).append(r)
                    print(f"round {round_no + 1} {name:10} {tool:7} {json.dumps(r)}", flush=True)
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for name, by_tool in results.items():
        for tool, runs in by_tool.items():
            m = {k: statistics.median(run[k] for run in runs) for k in ("rps", "cpu_us_per_req", "errors", "backend_busy")}
            if tool != "sluice":
                # Paired by round (the two ran seconds apart): the machine's drift cancels out.
                pairs = list(zip(by_tool["sluice"], runs))
                m["sluice_rps_ratio"] = statistics.median(a["rps"] / b["rps"] for a, b in pairs)
                m["sluice_cpu_ratio"] = statistics.median(a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in pairs)
            summary.setdefault(name, {})[tool] = m
    with open(args.out, "w") as f:
        json.dump({"raw": results, "median": summary}, f, indent=1)
    print("\nmedians; ratios are medians of per-round sluice ÷ other (req/s: higher is better; CPU per request: lower)")
    for name, by_tool in summary.items():
        for tool, m in by_tool.items():
            ratio = "" if tool == "sluice" else f"   sluice ÷ {tool}: req/s {m['sluice_rps_ratio']:.2f}, CPU {m['sluice_cpu_ratio']:.2f}"
            print(f"  {name:10} {tool:7} {m['rps']:>10.0f} req/s  {m['cpu_us_per_req']:6.2f} µs CPU/req  "
                  f"errors {m['errors']:.0f}  backend busy {m['backend_busy']:.2f}{ratio}")

if __name__ == "__main__":
    sys.exit(main())
