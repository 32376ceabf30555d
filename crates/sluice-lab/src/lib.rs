//! `sluice lab`: the seed's concurrency models (a thread per connection, a thread pool,
//! an event loop, an event loop per core) serving the same small JSON handler, each
//! driven by `sluice bench` at 100, 1,000 and 10,000 connections, on the user's machine.
//!
//! - [`models`]: the servers, one process each (`sluice lab --serve MODEL`);
//! - [`drive`]: starts a model's process, loads it, samples its memory and threads;
//! - [`report`]: the table, the JSON and the SVG.
#![forbid(unsafe_code)]

pub mod drive;
pub mod models;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

pub use models::Model;

/// Measure the seed's concurrency models on this machine.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Example: sluice lab --connections 100,1000 --duration 2s --svg lab.svg")]
pub struct LabArgs {
    /// Connection counts to drive each model at (capped by the file descriptor limit).
    #[arg(short = 'c', long, value_delimiter = ',', default_values_t = [100, 1_000, 10_000])]
    pub connections: Vec<usize>,
    /// How long each model is loaded at each connection count.
    #[arg(short = 'd', long, value_parser = sluice_config::parse_duration, default_value = "3s")]
    pub duration: Duration,
    /// The models to measure (default: all four).
    #[arg(short = 'm', long, value_delimiter = ',', value_enum)]
    pub models: Vec<Model>,
    /// The thread pool's threads (Tomcat's default maxThreads).
    #[arg(long, default_value_t = 200)]
    pub pool_threads: usize,
    /// The thread pool's queue of accepted connections (Tomcat's default acceptCount).
    #[arg(long, default_value_t = 100)]
    pub pool_queue: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the results as an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub svg: Option<PathBuf>,
    /// Serve one model (what the lab runs in each child process).
    #[arg(long, value_enum, hide = true)]
    pub serve: Option<Model>,
}

/// Runs `sluice lab`: serves one model (a child), or measures them all and reports.
pub fn main(args: &LabArgs) -> anyhow::Result<()> {
    let pool = models::PoolSize { threads: args.pool_threads, queue: args.pool_queue };
    if let Some(model) = args.serve {
        return drive::child(model, pool);
    }
    let models = if args.models.is_empty() { Model::ALL.to_vec() } else { args.models.clone() };
    let results = drive::run_all(&models, &args.connections, args.duration, pool)?;
    if let Some(path) = &args.svg {
        std::fs::write(path, report::svg(&results))
            .map_err(|e| anyhow::anyhow!("cannot write the chart to {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", report::table(&results));
        if let Some(path) = &args.svg {
            println!("chart written to {}", path.display());
        }
    }
    Ok(())
}
