//! Running a configuration: the tokio runtime, binding, signals (SIGTERM and Ctrl-C
//! drain; SIGHUP reloads), the admin listener, drain.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sluice_config::{ConcurrencyModel, Config};
use sluice_proxy::{Admin, Reloader, Server};

use crate::watch::FileWatch;

/// Serves `config` (read from `path`, which a reload reads again) until SIGTERM or
/// Ctrl-C, then drains and returns.
pub fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    runtime(&config)?.block_on(serve(config, Some(path), |_, _| {}))
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

/// Binds, announces the addresses (then calls `on_ready` with the listeners' and the
/// admin listener's), serves until a signal, drains.
pub async fn serve(
    config: Config,
    path: Option<PathBuf>,
    on_ready: impl FnOnce(&[std::net::SocketAddr], Option<std::net::SocketAddr>),
) -> anyhow::Result<()> {
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
    let (admin, admin_addr) = match &config.admin {
        Some(settings) => {
            let admin = server.admin(settings);
            let bound = admin
                .listen(settings.address)
                .await
                .with_context(|| format!("admin.address: cannot listen on {}", settings.address))?;
            println!("sluice: admin on {bound}");
            (Some(admin), Some(bound))
        }
        None => (None, None),
    };
    let model = match config.server.model {
        ConcurrencyModel::PerCore => "per-core",
        ConcurrencyModel::WorkStealing => "work-stealing",
    };
    tracing::info!(model, workers = config.server.worker_threads, "serving");
    // Every way to stop or reload exists before "ready": a SIGTERM or SIGHUP right
    // after it would otherwise meet the default action (exit at once), a POST /reload
    // would be answered "not available", /config would be empty, and a file change
    // would be taken as the watch's starting point.
    let stop = StopSignals::install();
    let triggers = ReloadTriggers::install(path.as_deref(), config.server.config_watch, admin.as_ref()).await;
    let reloader = server.reloader(&config);
    if let Some(admin) = &admin {
        admin.show_config(reloader.current());
    }
    for addr in &addrs {
        println!("sluice: listening on {addr}");
    }
    // After every listener line: a script (or a test) waiting for this line knows
    // them all, without waiting a while for more.
    println!("sluice: ready");
    on_ready(&addrs, admin_addr);
    let reloads = reload_loop(reloader, path, triggers);
    let drain_requested = async {
        match &admin {
            Some(admin) => admin.drain_requested().await,
            None => std::future::pending().await,
        }
    };
    server
        .run(async {
            tokio::select! {
                _ = stop.wait() => {}
                _ = drain_requested => {}
                _ = reloads => {}
            }
        })
        .await;
    Ok(())
}

/// SIGTERM or Ctrl-C (SIGINT).
/// SIGTERM and Ctrl-C (SIGINT), caught from the moment this is made.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops sluice"))
            .ok();
        StopSignals { term, interrupt: signal(SignalKind::interrupt()).ok() }
    }

    async fn wait(mut self) {
        let pending = || std::future::pending::<Option<()>>();
        tokio::select! {
            _ = async { match &mut self.term { Some(term) => term.recv().await, None => pending().await } } => {}
            _ = async { match &mut self.interrupt { Some(int) => int.recv().await, None => pending().await } } => {}
        }
    }
}

/// What starts a reload: SIGHUP, the config file's content changing (config_watch),
/// and the admin listener's POST /reload.
struct ReloadTriggers {
    hangup: Option<tokio::signal::unix::Signal>,
    watch: Option<FileWatch>,
    requests: Option<tokio::sync::mpsc::Receiver<sluice_proxy::ReloadRequest>>,
}

impl ReloadTriggers {
    async fn install(
        path: Option<&std::path::Path>,
        interval: Option<Duration>,
        admin: Option<&Admin>,
    ) -> ReloadTriggers {
        use tokio::signal::unix::{signal, SignalKind};
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGHUP; it would stop sluice"))
            .ok();
        let watch = match (interval, path) {
            (Some(interval), Some(path)) => Some(FileWatch::new(path.to_path_buf(), interval).await),
            _ => None,
        };
        ReloadTriggers { hangup, watch, requests: admin.map(Admin::reload_requests) }
    }
}

/// Reloads the config file on SIGHUP (what `systemctl reload` sends), on the admin
/// listener's `POST /reload`, and when `watch` is set, once the file changed; never
/// returns. A file that does not validate leaves the running configuration as it is,
/// and says why (log, and the admin's answer).
async fn reload_loop(reloader: Reloader, path: Option<PathBuf>, triggers: ReloadTriggers) {
    let ReloadTriggers { mut hangup, mut watch, mut requests } = triggers;
    loop {
        let reply = tokio::select! {
            () = async { match &mut watch { Some(w) => w.changed().await, None => std::future::pending().await } } => None,
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => None,
            Some(reply) = async { match &mut requests { Some(r) => r.recv().await, None => std::future::pending().await } } => Some(reply),
        };
        let result = reload(&reloader, path.as_deref()).await;
        match &result {
            Ok(applied) => tracing::info!("{applied}"),
            Err(problems) => tracing::error!("config not reloaded, still serving the previous one: {problems}"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

async fn reload(reloader: &Reloader, path: Option<&std::path::Path>) -> Result<String, String> {
    let Some(path) = path else { return Err("this configuration was not read from a file".into()) };
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || sluice_config::load(&owned))
        .await
        .map_err(|e| format!("reading the config failed: {e}"))?;
    let config = loaded.map_err(|e| e.to_string())?;
    let reloaded = reloader.reload(config).await?;
    let mut applied = format!("config reloaded from {}", path.display());
    for address in &reloaded.opened {
        applied.push_str(&format!("; listening on {address}"));
    }
    for address in &reloaded.closed {
        applied.push_str(&format!("; closed {address}"));
    }
    if !reloaded.needs_restart.is_empty() {
        applied.push_str(&format!("; changed but applied only at a restart: {}", reloaded.needs_restart.join(", ")));
    }
    Ok(applied)
}
