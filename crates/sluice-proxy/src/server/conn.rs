//! One client connection: optional TLS handshake, HTTP/1.1 or HTTP/2 by detection,
//! the idle/header watchdog, and graceful close on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;

use super::activity::{ConnActivity, Expiry};
use super::io::MeteredIo;
use crate::proxy;
use crate::runtime::Shared;

/// What the request path needs to know about the connection a request came on.
/// Shared by the connection task, its requests and any WebSocket tunnel it becomes.
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) activity: ConnActivity,
    /// The connection's place under `max_connections`, given back when the last user ends.
    _permit: OwnedSemaphorePermit,
}

/// Serves one accepted connection until it closes, times out, or drains on shutdown.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    http: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnContext {
        shared,
        peer,
        tls: tls.is_some(),
        activity: ConnActivity::new(),
        _permit: permit,
    });
    match tls {
        None => serve_io(stream, ctx, http, shutdown).await,
        Some(acceptor) => {
            let timeout = ctx.shared.snapshot().server.header_read_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_io(stream, ctx, http, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<T>(
    stream: T,
    ctx: Arc<ConnContext>,
    http: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(MeteredIo::new(stream, Arc::clone(&ctx)));
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |request: Request<Incoming>| {
        let ctx = Arc::clone(&service_ctx);
        async move { Ok::<_, Infallible>(proxy::handle(ctx, request).await) }
    });
    let conn = http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    let (header_timeout, idle_timeout) = {
        let snapshot = ctx.shared.snapshot();
        (
            snapshot.server.header_read_timeout,
            snapshot.server.keepalive_timeout,
        )
    };
    let watchdog = tokio::time::sleep(idle_timeout);
    tokio::pin!(watchdog);
    loop {
        let expiry = ctx.activity.expiry(header_timeout, idle_timeout);
        let deadline = match expiry {
            Expiry::Busy => tokio::time::Instant::now() + idle_timeout,
            Expiry::HeaderRead(at) | Expiry::Idle(at) => at.into(),
        };
        watchdog.as_mut().reset(deadline);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %ctx.peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = &mut watchdog => {
                match ctx.activity.expiry(header_timeout, idle_timeout) {
                    Expiry::HeaderRead(at) if at <= std::time::Instant::now() => {
                        tracing::debug!(peer = %ctx.peer, "closing: request head not received within header_read_timeout");
                        return;
                    }
                    Expiry::Idle(at) if at <= std::time::Instant::now() => {
                        tracing::debug!(peer = %ctx.peer, "closing: idle for keepalive_timeout");
                        return;
                    }
                    _ => continue,
                }
            }
            _ = super::stopped(&mut shutdown) => {
                // Stop taking requests; finish those in flight (bounded by the drain timeout).
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
                return;
            }
        }
    }
}
