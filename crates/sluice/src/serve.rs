//! Running a configuration: the tokio runtime, binding, signals, drain.

use anyhow::Context;
use sluice_config::Config;
use sluice_proxy::Server;

/// Serves `config` until SIGTERM or Ctrl-C, then drains and returns.
pub fn run(config: Config) -> anyhow::Result<()> {
    runtime(&config)?.block_on(serve(config, |_| {}))
}

/// A multi-threaded runtime with the configured worker count.
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_threads)
        .enable_all()
        .build()
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
    let server = Server::bind(&config)?;
    let addrs = server.local_addrs();
    for addr in &addrs {
        println!("sluice: listening on {addr}");
    }
    on_ready(&addrs);
    server.run(shutdown_signal()).await;
    Ok(())
}

/// SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops sluice");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
