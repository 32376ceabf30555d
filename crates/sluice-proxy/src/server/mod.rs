//! The server side: workers and their listeners, the accept loop with its connection
//! cap and FD-exhaustion back-off, per-connection serving, and graceful drain.

mod activity;
mod conn;
mod h1;
mod h2;
mod h2_io;
mod h2_stream;
mod reload;
mod tls;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{ConcurrencyModel, Config, ListenerConfig, ListenerProtocol, ServerSettings};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use conn::ListenerContext;
pub use reload::{Reloaded, Reloader};
use worker::Worker;
pub use worker::BLOCKING_THREADS;

use crate::runtime::{ConnContext, Process, Shared};
use crate::stats::Counters;

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
    #[error("cannot start worker {worker}: {source}")]
    Worker { worker: usize, source: std::io::Error },
}

/// A bound listener, ready to accept.
struct BoundListener {
    listener: TcpListener,
    context: Arc<ListenerContext>,
}

/// The listeners of a configuration, bound and accepting on their workers.
pub struct Server {
    process: Arc<Process>,
    workers: Vec<Worker>,
    addrs: Vec<SocketAddr>,
    settings: ServerSettings,
    /// One permit per open client connection, for the whole process.
    limit: Arc<Semaphore>,
}

impl Server {
    /// Binds every listener and starts the workers: per-core, a thread each with its own
    /// event loop; work-stealing, tasks on the current runtime (tokio's multi-threaded
    /// one). Call inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        let process = Arc::new(Process::new(config)?);
        let limit = Arc::new(Semaphore::new(config.server.max_connections));
        let (workers, addrs) = match config.server.model {
            ConcurrencyModel::PerCore => worker::start_per_core(config, &process, &limit)?,
            ConcurrencyModel::WorkStealing => {
                let worker = worker::start_here(config, &process, &limit)?;
                let addrs = worker.addrs.clone();
                (vec![worker], addrs)
            }
        };
        Ok(Server { process, workers, addrs, settings: config.server.clone(), limit })
    }

    /// What reloads this server's configuration (`current` is the one it runs).
    pub fn reloader(&self, current: &Config) -> Reloader {
        let workers = self
            .workers
            .iter()
            .map(|w| reload::WorkerHandle {
                runtime: w.runtime.clone(),
                shared: Arc::clone(&w.shared),
                listeners: Arc::clone(&w.listeners),
            })
            .collect();
        Reloader::new(workers, Arc::clone(&self.limit), current.clone())
    }

    /// The admin listener's state for this server (bind it with `Admin::listen`).
    pub fn admin(&self, config: &sluice_config::AdminConfig) -> crate::Admin {
        let workers = self.workers.iter().map(|w| Arc::clone(&w.shared)).collect();
        crate::Admin::new(
            config,
            Arc::clone(&self.process),
            workers,
            Arc::clone(&self.limit),
            self.settings.max_connections,
        )
    }

    /// The bound addresses, in config order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Serves until `shutdown` completes, then drains: no new connections, in-flight
    /// requests get up to `drain_timeout`. Returns true when every connection finished.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> bool {
        let max = self.settings.max_connections;
        shutdown.await;
        self.process.shutdown.trigger();
        tracing::info!(drain_timeout = ?self.settings.drain_timeout, "shutting down: no new connections, draining");
        for worker in &mut self.workers {
            worker.stopped_accepting().await;
        }
        let open = max - self.limit.available_permits();
        tracing::info!(open, "listeners closed; draining the open connections");
        let all = self.limit.acquire_many(max as u32);
        let started = tokio::time::Instant::now();
        let mut drained = tokio::time::timeout(self.settings.drain_timeout, all).await.is_ok();
        if let Some(cache) = self.process.cache.as_ref().filter(|c| c.background_running() > 0) {
            // Bodies read into the cache and refreshes no client waits for: within the
            // same drain timeout.
            tracing::info!(running = cache.background_running(), "draining the cache's background fetches");
            let left = self.settings.drain_timeout.saturating_sub(started.elapsed());
            drained &= tokio::time::timeout(left, cache.drained()).await.is_ok();
        }
        if drained {
            tracing::info!("drained: every connection finished");
        } else {
            let open = max - self.limit.available_permits();
            tracing::warn!(open, "drain timeout passed; closing the remaining connections");
        }
        let shared: Vec<_> = self.workers.iter().map(|w| Arc::clone(&w.shared)).collect();
        crate::runtime::log_summary(&self.process, &shared);
        drop(shared);
        let process = Arc::clone(&self.process);
        let workers = std::mem::take(&mut self.workers);
        // Joining threads and the access log's writer may take a moment: not on a worker.
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                worker.stop();
            }
            process.flush_access_log();
        })
        .await;
        drained
    }
}

/// How a listener's socket shares its address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// One socket (one worker), unless the listener says `reuse_port`.
    Alone,
    /// The first of this process's sockets for the address (SO_REUSEPORT): it fails,
    /// as a lone socket would, if a socket of any other process is there already.
    FirstOfProcess,
    /// Another worker's socket joining the first (SO_REUSEPORT).
    JoinProcess,
}

/// Binds `config` at `address` (a port-0 listener's actual address, for the workers
/// after the first). `stream_window`: `server.http2_stream_window`.
///
/// The kernel lets any socket of the same user join an SO_REUSEPORT group, so a second
/// `sluice run` on the same address used to start and take part of the traffic. The
/// first socket of this process is therefore preceded by a probe bound without
/// SO_REUSEPORT: it fails with "address in use" while any listener is there. Only a
/// listener with `reuse_port = true` shares its address with other processes.
fn bind_listener(
    config: &ListenerConfig,
    address: SocketAddr,
    sharing: Sharing,
    stream_window: u32,
) -> Result<BoundListener, ServerError> {
    let bind_error = |source| ServerError::Bind { address, source };
    if sharing == Sharing::FirstOfProcess && !config.reuse_port && address.port() != 0 {
        let probe = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
        probe.set_reuse_address(true).map_err(bind_error)?;
        probe.bind(&address.into()).map_err(bind_error)?;
    }
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    if config.reuse_port || sharing != Sharing::Alone {
        socket.set_reuse_port(true).map_err(bind_error)?;
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&address.into()).map_err(bind_error)?;
    socket.listen(config.backlog.min(i32::MAX as u32) as i32).map_err(bind_error)?;
    let listener = TcpListener::from_std(socket.into()).map_err(bind_error)?;
    let tls = config.tls.as_ref().map(|files| tls::acceptor(files, config.protocol)).transpose()?;
    let context = ListenerContext { protocol: config.protocol, tls, http2: h2::builder(stream_window) };
    Ok(BoundListener { listener, context: Arc::new(context) })
}

/// Accepts, then takes the connection's place under the connection cap; at the cap,
/// the one accepted connection waits unread until a place frees, and the next clients
/// queue in the kernel backlog. (The place is taken after accepting, not before: with
/// a listener per worker, a place taken before would be held by a worker whose
/// listener has no client while another worker's client waits.) A full FD table pauses
/// accepting briefly instead of failing.
async fn accept_loop(bound: BoundListener, shared: Arc<Shared>, limit: Arc<Semaphore>) {
    let mut last_fd_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = shared.shutdown.wait() => return take_queued(bound, &shared, &limit),
        };
        match accepted {
            Ok((stream, peer)) => {
                let limit_per_ip = shared.snapshot().server.max_connections_per_ip;
                let per_ip = match limit_per_ip.map(|limit| shared.per_ip.enter(peer.ip(), limit)) {
                    None => None,
                    Some(Some(slot)) => Some(Box::new(slot)),
                    Some(None) => {
                        refuse_per_ip(&shared, peer, stream);
                        continue;
                    }
                };
                let permit = match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // At the cap: one of this worker's connections that waits for a
                        // request (idle, or its head still coming) makes room.
                        if shared.idle.reclaim_one() {
                            Counters::bump(&shared.counters.reclaimed_at_cap);
                        } else {
                            tracing::debug!(%peer, "at max_connections with none to close: the new connection waits for a place");
                        }
                        tokio::select! {
                            permit = Arc::clone(&limit).acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
                            _ = shared.shutdown.wait() => return,
                        }
                    }
                };
                serve_accepted(stream, peer, &bound.context, &shared, permit, per_ip);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                Counters::bump(&shared.counters.accept_exhausted);
                if last_fd_log.is_none_or(|at| at.elapsed() >= FD_EXHAUSTED_LOG_EVERY) {
                    tracing::warn!(error = %e, suppressed, "accept failed: out of file descriptors; pausing accepts, existing connections keep being served");
                    last_fd_log = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                tokio::time::sleep(FD_EXHAUSTED_PAUSE).await;
            }
            Err(e) => {
                Counters::bump(&shared.counters.accept_other);
                tracing::debug!(error = %e, "accept failed; continuing");
            }
        }
    }
}

/// Starts serving an accepted connection on this worker.
fn serve_accepted(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    listener: &Arc<ListenerContext>,
    shared: &Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
    per_ip: Option<Box<crate::runtime::per_ip::IpSlot>>,
) {
    let _ = stream.set_nodelay(true);
    let ctx = ConnContext::new(Arc::clone(shared), peer, listener.tls.is_some(), permit, per_ip);
    let listener = Arc::clone(listener);
    if listener.tls.is_none() && listener.protocol != ListenerProtocol::Http2 {
        tokio::spawn(h1::serve(stream, ctx, listener));
    } else {
        tokio::spawn(conn::serve(stream, ctx, listener));
    }
}

/// A drain's last accepts: the connections the kernel already completed and queued on
/// the listener are taken and served (their one request answered with
/// `Connection: close`, or GOAWAY over HTTP/2) before the listener closes. Closing it
/// over them reset each one, failing a request its client had already sent: behind an
/// L4 balancer, a few clients per drain.
fn take_queued(bound: BoundListener, shared: &Arc<Shared>, limit: &Arc<Semaphore>) {
    let context = Arc::clone(&bound.context);
    let Ok(listener) = bound.listener.into_std() else { return };
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    // WouldBlock: the queue is empty; any other error ends the drain's accepts too.
    while let Ok((stream, peer)) = listener.accept() {
        let Ok(permit) = Arc::clone(limit).try_acquire_owned() else { continue };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
        let per_ip = match shared.snapshot().server.max_connections_per_ip.map(|n| shared.per_ip.enter(peer.ip(), n)) {
            None => None,
            Some(Some(slot)) => Some(Box::new(slot)),
            Some(None) => {
                refuse_per_ip(shared, peer, stream);
                continue;
            }
        };
        serve_accepted(stream, peer, &context, shared, permit, per_ip);
    }
}

/// Closes a connection whose client has max_connections_per_ip open: at once, with a
/// reset (no FIN handshake, no TIME_WAIT kept here for a client that is over its share),
/// counted, and logged at most once a second.
fn refuse_per_ip(shared: &Shared, peer: std::net::SocketAddr, stream: tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
    let total = Counters::bump(&shared.counters.refused_per_ip);
    if shared.counters.log_now(&shared.counters.refused_per_ip_logged) {
        tracing::warn!(%peer, refused_total = total, "a client over max_connections_per_ip: its new connections are closed");
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
