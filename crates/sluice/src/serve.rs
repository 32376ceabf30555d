//! Running a configuration: the tokio runtime, binding, signals, drain.

use anyhow::Context;
use sluice_config::{ConcurrencyModel, Config};
use sluice_proxy::Server;

/// Serves `config` until SIGTERM or Ctrl-C, then drains and returns.
pub fn run(config: Config) -> anyhow::Result<()> {
    runtime(&config)?.block_on(serve(config, |_| {}))
}

/// The main thread's runtime. per-core: a small one for signals and the drain (the
/// workers run their own, on threads of their own); work-stealing: the multi-threaded
/// runtime the connections run on, with the configured worker count.
fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    match config.server.model {
        ConcurrencyModel::PerCore => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        ConcurrencyModel::WorkStealing => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.server.worker_threads)
            .max_blocking_threads(sluice_proxy::BLOCKING_THREADS)
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")
}

/// Binds, announces the addresses (then calls `on_ready`), serves until a signal, drains.
pub async fn serve(config: Config, on_ready: impl FnOnce(&[std::net::SocketAddr])) -> anyhow::Result<()> {
    let fds = crate::fdlimit::raise_and_report();
    let needed = config.server.max_connections as u64 * 2;
    if fds < needed {
        tracing::warn!(
            "max_connections = {} may need up to {needed} descriptors (client + upstream); {fds} are available",
            config.server.max_connections
        );
    }
    for warning in &config.warnings {
        tracing::warn!("config line {}: {}: {}", warning.line, warning.key, warning.message);
    }
    let server = Server::bind(&config)?;
    let addrs = server.local_addrs();
    let admin = match &config.admin {
        Some(settings) => {
            let admin = server.admin(settings);
            let bound = admin
                .listen(settings.address)
                .await
                .with_context(|| format!("admin.address: cannot listen on {}", settings.address))?;
            println!("sluice: admin on {bound}");
            Some(admin)
        }
        None => None,
    };
    let model = match config.server.model {
        ConcurrencyModel::PerCore => "per-core",
        ConcurrencyModel::WorkStealing => "work-stealing",
    };
    tracing::info!(model, workers = config.server.worker_threads, "serving");
    for addr in &addrs {
        println!("sluice: listening on {addr}");
    }
    on_ready(&addrs);
    let drain_requested = async {
        match &admin {
            Some(admin) => admin.drain_requested().await,
            None => std::future::pending().await,
        }
    };
    server
        .run(async {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = drain_requested => {}
            }
        })
        .await;
    Ok(())
}

/// SIGTERM or Ctrl-C (SIGINT). SIGHUP (what `systemctl reload` sends) is caught so
/// that it does not kill the process; until hot reload exists (#12) it is logged and
/// ignored.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut hangup = signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGHUP; it would stop sluice"))
        .ok();
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => Some(term),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops sluice");
            None
        }
    };
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return,
            Some(()) = async { match &mut term { Some(t) => t.recv().await, None => std::future::pending().await } } => return,
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::warn!("SIGHUP received: reloading the config is not supported yet (it comes with the admin API); ignored, still serving the current config");
            }
        }
    }
}
