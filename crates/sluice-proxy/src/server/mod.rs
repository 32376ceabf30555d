//! The server side: listeners, the accept loop with its connection cap and FD-exhaustion
//! back-off, per-connection serving, and graceful drain.

mod activity;
mod conn;
mod h1;
mod h2;
mod h2_io;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{Config, ListenerConfig, ListenerProtocol};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use conn::ListenerContext;

use crate::runtime::{ConnContext, Shared};

/// How long the accept loop pauses when the FD table is full: long enough not to spin,
/// short enough that a freed descriptor is used promptly.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);
/// At most one "FD table full" log line per this period.
const FD_EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(1);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Start(#[from] crate::runtime::StartError),
}

/// A bound listener, ready to accept.
struct BoundListener {
    listener: TcpListener,
    context: Arc<ListenerContext>,
}

/// The listeners of a configuration, bound and not yet accepting.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
}

impl Server {
    /// Binds every listener and starts the upstream pools. Call inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        let shared = Arc::new(Shared::new(config)?);
        let listeners = config.listeners.iter().map(bind_listener).collect::<Result<_, _>>()?;
        Ok(Server { shared, listeners })
    }

    /// The bound addresses, in config order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.listener.local_addr().ok()).collect()
    }

    /// Accepts until `shutdown` completes, then drains: no new connections, in-flight
    /// requests get up to `drain_timeout`. Returns true when every connection finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let settings = self.shared.snapshot().server.clone();
        let max = settings.max_connections;
        let limit = Arc::new(Semaphore::new(max));
        let mut accept_tasks = Vec::new();
        for bound in self.listeners {
            let task = accept_loop(bound, Arc::clone(&self.shared), Arc::clone(&limit));
            accept_tasks.push(tokio::spawn(task));
        }
        shutdown.await;
        tracing::info!(drain_timeout = ?settings.drain_timeout, "shutting down: no new connections, draining");
        self.shared.shutdown.trigger();
        for task in accept_tasks {
            let _ = task.await; // each loop returns promptly on stop; the listener closes with it
        }
        let open = max - limit.available_permits();
        tracing::info!(open, "listeners closed; draining the open connections");
        let drained = tokio::time::timeout(settings.drain_timeout, limit.acquire_many(max as u32)).await.is_ok();
        if drained {
            tracing::info!("drained: every connection finished");
        } else {
            let open = max - limit.available_permits();
            tracing::warn!(open, "drain timeout passed; closing the remaining connections");
        }
        self.shared.log_summary();
        let outcomes = std::sync::Arc::clone(&self.shared.outcomes);
        // The writer thread may take a moment; not on a worker thread.
        let _ = tokio::task::spawn_blocking(move || outcomes.flush()).await;
        drained
    }
}

fn bind_listener(config: &ListenerConfig) -> Result<BoundListener, ServerError> {
    let address = config.address;
    let bind_error = |source| ServerError::Bind { address, source };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    if config.reuse_port {
        socket.set_reuse_port(true).map_err(bind_error)?;
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&address.into()).map_err(bind_error)?;
    socket.listen(config.backlog.min(i32::MAX as u32) as i32).map_err(bind_error)?;
    let listener = TcpListener::from_std(socket.into()).map_err(bind_error)?;
    let tls = config.tls.as_ref().map(|files| tls::acceptor(files, config.protocol)).transpose()?;
    let context = ListenerContext { protocol: config.protocol, tls, http2: h2::builder() };
    Ok(BoundListener { listener, context: Arc::new(context) })
}

/// Accepts while under the connection cap; at the cap, waits (clients queue in the
/// kernel backlog). A full FD table pauses accepting briefly instead of failing.
async fn accept_loop(bound: BoundListener, shared: Arc<Shared>, limit: Arc<Semaphore>) {
    let mut last_fd_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shared.shutdown.wait() => return,
        };
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = shared.shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ConnContext::new(Arc::clone(&shared), peer, bound.context.tls.is_some(), permit);
                let listener = Arc::clone(&bound.context);
                if listener.tls.is_none() && listener.protocol != ListenerProtocol::Http2 {
                    tokio::spawn(h1::serve(stream, ctx, listener));
                } else {
                    tokio::spawn(conn::serve(stream, ctx, listener));
                }
            }
            Err(e) if is_resource_exhaustion(&e) => {
                if last_fd_log.is_none_or(|at| at.elapsed() >= FD_EXHAUSTED_LOG_EVERY) {
                    tracing::warn!(error = %e, suppressed, "accept failed: out of file descriptors; pausing accepts, existing connections keep being served");
                    last_fd_log = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                drop(permit);
                tokio::time::sleep(FD_EXHAUSTED_PAUSE).await;
            }
            Err(e) => tracing::debug!(error = %e, "accept failed; continuing"),
        }
    }
}

/// The request head parser, for the corpus and robustness tests of `http1`: the
/// framing and headers of a complete head.
#[cfg(test)]
pub(crate) fn parse_request_head_for_tests(
    buf: &mut bytes::BytesMut,
) -> Result<Option<(crate::http1::Framing, http::HeaderMap)>, crate::http1::HeadError> {
    h1::parse_head_for_tests(buf)
}

/// EMFILE/ENFILE (FD table full) and kernel memory pressure: retrying at once would spin.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
