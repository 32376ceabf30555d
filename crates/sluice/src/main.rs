//! The `sluice` binary: command line, logging, process lifecycle.
#![forbid(unsafe_code)]

mod demo;
mod doctor;
mod fdlimit;
mod serve;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sluice: an API gateway and reverse proxy for floods of parallel API calls.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file; SIGTERM or Ctrl-C drains in-flight requests, then exits 0.
    Run {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file: lists every problem (file:line: key: what to change) and exits 1 if any.
    Check {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start three demo API servers on loopback and sluice in front of them, with nothing else installed.
    Demo {
        /// Where sluice listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// What limits parallel calls on this machine: FD, socket, port and memory limits,
    /// how many connections a config can hold, the binding constraint, and the commands
    /// that raise each limit. Exits 1 when the config's max_connections cannot be met.
    Doctor {
        /// The TOML config file (default: every setting at its default).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load-test any HTTP API: many parallel calls, latency percentiles, throughput.
    Bench(Box<sluice_bench::BenchArgs>),
    /// Measure the concurrency models (thread per connection, thread pool, event loop,
    /// event loop per core) on this machine: a table, JSON, an SVG.
    Lab(Box<sluice_lab::LabArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        // The load generator reports on stdout/stderr itself; it has no log.
        return match sluice_bench::main(args) {
            Ok(Some(report)) => match report.missed(args.max_error_rate, args.max_p99) {
                Some(why) => {
                    eprintln!("sluice bench: failed: {why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            },
            Ok(None) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Lab(args) = &cli.command {
        return match sluice_lab::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice lab: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config: path } => {
            sluice_config::load(&path).map_err(anyhow::Error::from).and_then(|config| serve::run(config, path))
        }
        Command::Demo { listen } => demo::run(listen),
        Command::Doctor { config } => {
            return match doctor::run(config.as_deref()) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sluice doctor: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench(_) | Command::Lab(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem (exit 1) or `ok`, with warnings about settings that are valid
/// but probably not meant.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = sluice_config::load(path)?;
    for warning in &config.warnings {
        println!("{}:{}: warning: {}: {}", path.display(), warning.line, warning.key, warning.message);
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// Logs to stderr; `RUST_LOG` overrides the default `info`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
