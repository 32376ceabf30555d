//! HTTP/2 client connections, served by hyper: streams multiplex, so the request path
//! runs once per stream. The watchdog closes a connection idle for keepalive_timeout.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::activity::Expiry;
use super::conn::ConnContext;
use super::io::MeteredIo;
use crate::proxy::{self, InflightGuard, RequestBody};

/// hyper's HTTP/2 server settings.
pub(crate) fn builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_concurrent_streams(256);
    builder
}

/// Serves one HTTP/2 connection until it closes, idles out, or drains on shutdown.
pub(crate) async fn serve<T>(
    stream: T,
    ctx: Arc<ConnContext>,
    http: &http2::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(MeteredIo::new(stream, Arc::clone(&ctx)));
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |request: Request<Incoming>| {
        let ctx = Arc::clone(&service_ctx);
        async move {
            let inflight = InflightGuard::start(&ctx, true);
            let mut response = proxy::handle(ctx, request.map(RequestBody::Hyper)).await;
            response.body_mut().track(inflight);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);

    let (header_timeout, idle_timeout) = {
        let snapshot = ctx.shared.snapshot();
        (snapshot.server.header_read_timeout, snapshot.server.keepalive_timeout)
    };
    let watchdog = tokio::time::sleep(idle_timeout);
    tokio::pin!(watchdog);
    loop {
        let deadline = match ctx.activity.expiry(header_timeout, idle_timeout) {
            Expiry::Busy => tokio::time::Instant::now() + idle_timeout,
            Expiry::HeaderRead(at) | Expiry::Idle(at) => at.into(),
        };
        watchdog.as_mut().reset(deadline);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %ctx.peer, error = %e, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            _ = &mut watchdog => {
                let now = std::time::Instant::now();
                match ctx.activity.expiry(header_timeout, idle_timeout) {
                    Expiry::HeaderRead(at) | Expiry::Idle(at) if at <= now => {
                        tracing::debug!(peer = %ctx.peer, "closing idle HTTP/2 connection");
                        return;
                    }
                    _ => continue,
                }
            }
            _ = super::stopped(&mut shutdown) => {
                // GOAWAY: no new streams; those in flight finish (bounded by the drain timeout).
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
                return;
            }
        }
    }
}
