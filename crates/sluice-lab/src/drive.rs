//! Runs each model in a child process, loads it with `sluice bench` (in this process),
//! and samples the child's resident memory and thread count from /proc while it runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::models::{self, Model, PoolSize};
use crate::report::{Results, Row};

/// Descriptors kept back from the connection count for everything else.
const FD_RESERVE: u64 = 64;
/// How often the child's memory and threads are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The child: serves `model`, prints its address, and exits when its stdin closes (so it
/// never outlives the lab).
pub fn child(model: Model, pool: PoolSize) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    models::serve(model, pool, |addr| println!("listening on {addr}"))?;
    Ok(())
}

/// Every model at every connection count, one after another.
pub fn run_all(models: &[Model], connections: &[usize], duration: Duration, pool: PoolSize) -> anyhow::Result<Results> {
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let cap = fd_limit.saturating_sub(FD_RESERVE) as usize;
    let mut rows = Vec::new();
    for &model in models {
        for &asked in connections {
            let conns = asked.min(cap).max(1);
            if conns < asked {
                eprintln!(
                    "sluice lab: {asked} connections need {asked} descriptors in each process; the limit is \
                     {fd_limit}: measuring {conns}"
                );
            }
            eprintln!("sluice lab: {} at {conns} connections...", model.name());
            rows.push(measure(model, asked, conns, duration, pool)?);
        }
    }
    Ok(Results { fd_limit, duration_s: duration.as_secs_f64(), pool, rows })
}

/// A started model, stopped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(model: Model, pool: PoolSize) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("cannot find the sluice binary to start the model")?;
        let mut child = Command::new(exe)
            .args(["lab", "--serve", model.name()])
            .args(["--pool-threads", &pool.threads.to_string(), "--pool-queue", &pool.queue.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the model's process")?;
        let stdout = child.stdout.take().context("the model's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{} did not start: {line:?}", model.name()))?;
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the child exits on EOF
        for _ in 0..40 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory (KiB) and threads of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    threads: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage { rss_kib: field("VmRSS:"), threads: field("Threads:") }
}

/// Samples `pid` until `stop`; returns the peaks.
fn sample_peaks(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Usage> {
    std::thread::spawn(move || {
        let mut peak = Usage::default();
        while !stop.load(Ordering::Relaxed) {
            let now = usage(pid);
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.threads = peak.threads.max(now.threads);
            std::thread::sleep(SAMPLE_EVERY);
        }
        peak
    })
}

/// `sluice bench` arguments, as on its command line.
#[derive(Parser)]
struct Bench {
    #[command(flatten)]
    args: sluice_bench::BenchArgs,
}

fn bench(argv: &[String]) -> anyhow::Result<sluice_bench::Report> {
    let parsed = Bench::try_parse_from(std::iter::once("bench".to_string()).chain(argv.iter().cloned()))?;
    sluice_bench::run(&parsed.args)
}

fn measure(model: Model, asked: usize, conns: usize, duration: Duration, pool: PoolSize) -> anyhow::Result<Row> {
    let server = Server::start(model, pool)?;
    let url = format!("http://{}/", server.addr);
    let pid = server.child.id();
    // Warm: the model's runtime and allocator are counted in the baseline, not per connection.
    bench(&["-c".into(), "1".into(), "-n".into(), "20".into(), "-q".into(), url.clone()])?;
    let baseline = usage(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peaks(pid, Arc::clone(&stop));
    let argv = [
        "-c".to_string(),
        conns.to_string(),
        "-d".into(),
        format!("{}ms", duration.as_millis()),
        "--timeout".into(),
        "5s".into(),
        "-q".into(),
        url,
    ];
    let report = bench(&argv);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or_default();
    let report = report?;
    let mut failures = report.failures.clone();
    for (code, n) in &report.status_codes {
        if !code.starts_with('2') {
            *failures.entry(format!("status {code}")).or_default() += n;
        }
    }
    // Refusals (503s) are fast: counted as failures, not as throughput.
    let ok: u64 = report.status_codes.iter().filter(|(code, _)| code.starts_with('2')).map(|(_, n)| n).sum();
    let ok_share = if report.responses == 0 { 0.0 } else { ok as f64 / report.responses as f64 };
    Ok(Row {
        model,
        connections: conns,
        asked,
        rate: report.rate * ok_share,
        p50_ms: report.latency_ms.p50,
        p99_ms: report.latency_ms.p99,
        p99_all_ms: crate::report::p99_over_all(
            report.requests,
            report.requests.saturating_sub(ok),
            report.latency_ms.p99,
        ),
        requests: report.requests,
        kib_per_connection: peak.rss_kib.saturating_sub(baseline.rss_kib) as f64 / conns as f64,
        rss_kib: peak.rss_kib,
        threads: peak.threads,
        responses: report.responses,
        failed_requests: report.failed_requests,
        failures,
    })
}
