//! `sluice bench`: a load generator for HTTP APIs, any API, not only sluice.
//!
//! The layout follows the path of a run:
//! - [`args`]: the command line; [`plan`]: it, turned into origins and pre-encoded requests;
//! - [`schedule`]: which request goes when (closed loop, or an open-loop timetable), pure;
//! - [`engine`]: one single-threaded runtime per thread, the connections on it ([`h1`], [`http2`],
//!   [`connect`]; [`failure`] sorts what goes wrong), each thread recording into its own
//!   [`record::Recorder`];
//! - [`progress`] while it runs, then [`report`]: table, JSON, SVG plot, comparison.
#![forbid(unsafe_code)]

pub mod args;
pub mod connect;
pub mod engine;
pub mod failure;
pub mod h1;
pub mod http2;
pub mod plan;
pub mod progress;
pub mod record;
pub mod report;
pub mod schedule;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use args::BenchArgs;
pub use report::Report;

/// Runs the command as `sluice bench` would: a load run, or `--compare`.
/// Returns the report of a load run so that callers (and tests) can read it.
pub fn main(args: &BenchArgs) -> anyhow::Result<Option<Report>> {
    if let Some(files) = &args.compare {
        let [a, b] = files.as_slice() else {
            anyhow::bail!("--compare takes two JSON files");
        };
        emit(&report::compare::compare_files(a, b)?)?;
        return Ok(None);
    }
    let stop = Arc::new(AtomicBool::new(false));
    engine::watch_interrupts(Arc::clone(&stop));
    let report = run_until(args, &stop)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg::render(&report))
            .map_err(|e| anyhow::anyhow!("cannot write the plot to {}: {e}", path.display()))?;
    }
    let mut text =
        if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { report::table::render(&report) };
    if let (Some(path), false) = (&args.plot, args.json) {
        text.push_str(&format!("plot written to {}\n", path.display()));
    }
    emit(&text)?;
    Ok(Some(report))
}

/// Writes to stdout; a closed pipe (`sluice bench ... | head`) ends quietly.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
        _ => Ok(()),
    }
}

/// Runs the load described by `args` and returns its report; prints progress to stderr
/// unless `--no-progress`.
pub fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    run_until(args, &Arc::new(AtomicBool::new(false)))
}

/// As [`run`]; setting `stop` ends the run early, with a report of the part that ran.
pub fn run_until(args: &BenchArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<Report> {
    let plan = Arc::new(plan::Plan::from_args(args)?);
    let fd_limit = raise_fd_limit();
    if plan.connections as u64 + FD_RESERVE > fd_limit {
        eprintln!(
            "sluice bench: warning: {} connections asked for, but the file descriptor limit is {fd_limit}; \
             expect EMFILE errors beyond about {}",
            plan.connections,
            fd_limit.saturating_sub(FD_RESERVE)
        );
    }
    let mut progress = progress::Progress::new(&plan, args.no_progress);
    let started = std::time::SystemTime::now();
    let outcome = engine::run(&plan, stop, |tick| progress.tick(tick))?;
    progress.finish();
    let mut report = Report::build(&plan, outcome, fd_limit);
    report.started_unix_s = started.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    report.latency_per_second = std::mem::take(&mut progress.seconds);
    report.latency_per_second.sort_by_key(|s| s.second);
    Ok(report)
}

/// Descriptors kept for other uses (stdio, the runtimes' epoll and eventfds, files).
const FD_RESERVE: u64 = 32;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit in force.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0),
    }
}
