//! HTTP/2 client connections, served by hyper: streams multiplex, so the request path
//! runs once per stream. A watchdog closes a connection idle for keepalive_timeout.

use std::sync::atomic::AtomicU64;

use http_body::Body as _;
use std::sync::Arc;

use bytes::BytesMut;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::{ConnActivity, Expiry};
use super::conn::ListenerContext;
use super::h2_io::H2Io;
use crate::body::RequestBody;
use crate::http2::{PREFACE, PREFACE_ERROR};
use crate::proxy::{self, InflightGuard, RequestTracker};
use crate::runtime::ConnContext;
use crate::stats::Counters;

/// hyper's HTTP/2 server settings. The stream window is small (hyper's default is 1
/// MiB): a client uploads that much before sluice reads it, all of it wasted when the
/// upstream answers early (a 413 after ~1 MiB; nginx's after 64 KiB).
pub(crate) fn builder(stream_window: u32) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_concurrent_streams(256).initial_stream_window_size(stream_window);
    builder
}

/// Reads the client's first bytes until they are (or cannot be) the connection
/// preface; they stay in `read` for hyper. False for anything else, a close or a
/// timeout. hyper, given a wrong preface, answers SETTINGS and closes with the rest
/// unread (a TCP reset, no GOAWAY: h2spec 3.5/2).
async fn preface_is_valid<T: AsyncRead + Unpin>(
    stream: &mut T,
    read: &mut BytesMut,
    timeout: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let reading = async {
        while read.len() < PREFACE.len() {
            if !PREFACE.starts_with(&read[..]) {
                return false;
            }
            match stream.read_buf(read).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
        read.starts_with(PREFACE)
    };
    tokio::time::timeout(timeout, reading).await.unwrap_or(false)
}

/// RFC 9113 §3.4: SETTINGS and GOAWAY(PROTOCOL_ERROR), then a lingering close (what
/// the client sent is read and dropped for a moment, so the close does not become a
/// reset that destroys the GOAWAY on its way).
async fn refuse_preface<T: AsyncRead + AsyncWrite + Unpin>(mut stream: T) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(PREFACE_ERROR).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// What RFC 9113 §8.2.1 and §8.3.1 call malformed and the h2 crate lets through: a
/// field value with leading or trailing whitespace, a `:scheme` other than http(s).
fn malformed(request: &Request<Incoming>) -> Option<&'static str> {
    if !matches!(request.uri().scheme_str(), None | Some("http" | "https")) {
        return Some(":scheme is neither http nor https");
    }
    let padded = |v: &[u8]| matches!(v.first().zip(v.last()), Some((a, b)) if matches!(*a, b' ' | b'\t') || matches!(*b, b' ' | b'\t'));
    request.headers().values().any(|v| padded(v.as_bytes())).then_some("a field value starts or ends with whitespace")
}

/// Serves one HTTP/2 connection until it closes, idles out, or drains on shutdown.
/// `read` holds bytes already read from `stream` (the h2c preface), served first;
/// when it is empty (HTTP/2-only listeners, ALPN h2), the preface is checked here.
pub(crate) async fn serve<T>(mut stream: T, mut read: BytesMut, ctx: Arc<ConnContext>, listener: Arc<ListenerContext>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if read.is_empty() {
        let timeout = ctx.shared.snapshot().server.header_read_timeout;
        if !preface_is_valid(&mut stream, &mut read, timeout).await {
            tracing::debug!(peer = %ctx.peer, "invalid HTTP/2 connection preface; GOAWAY(PROTOCOL_ERROR)");
            return refuse_preface(stream).await;
        }
    }
    let counters = Arc::clone(&ctx.shared.counters);
    let _open = crate::stats::Open::count(&counters.open_http2);
    let activity = Arc::new(ConnActivity::new());
    let (io, flooded) = H2Io::new(read, stream);
    let io = TokioIo::new(io);
    let (service_ctx, service_activity) = (Arc::clone(&ctx), Arc::clone(&activity));
    // A stream whose client took no response bytes for send_timeout closes the connection.
    let stalled = Arc::new(tokio::sync::Notify::new());
    let service_stalled = Arc::clone(&stalled);
    let service = service_fn(move |request: Request<Incoming>| {
        let ctx = Arc::clone(&service_ctx);
        let inflight = InflightGuard::start(Arc::clone(&service_activity) as Arc<dyn RequestTracker>);
        let stalled_tx = Arc::clone(&service_stalled);
        async move {
            if let Some(why) = malformed(&request) {
                // RFC 9113 §8.1.1: a malformed request is a stream error; hyper resets
                // the stream with the reason of the h2 error the service returns.
                tracing::debug!(peer = %ctx.peer, why, "malformed HTTP/2 request: stream reset");
                return Err(h2::Error::from(h2::Reason::PROTOCOL_ERROR));
            }
            // Bytes of a request body are counted as it is read, for the outcome record.
            let received = (!request.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
            let counter = received.clone();
            let request = request.map(|body| RequestBody::Hyper { body, received: counter });
            // No interim responses: hyper's server cannot send a 1xx (crate::interim).
            let mut response = proxy::handle(Arc::clone(&ctx), request, None).await;
            if let Some(received) = received {
                response.body_mut().count_request_body(received);
            }
            proxy::read_ahead::for_http2(&mut response, &ctx.shared, &stalled_tx);
            response.body_mut().track(inflight);
            Ok::<_, h2::Error>(response)
        }
    });
    let conn = listener.http2.serve_connection(io, service);
    tokio::pin!(conn);

    let (header_timeout, idle_timeout) = {
        let snapshot = ctx.shared.snapshot();
        (snapshot.server.header_read_timeout, snapshot.server.keepalive_timeout)
    };
    let watchdog = tokio::time::sleep(idle_timeout);
    tokio::pin!(watchdog);
    loop {
        let deadline = match activity.expiry(header_timeout, idle_timeout) {
            Expiry::Busy => tokio::time::Instant::now() + idle_timeout,
            Expiry::FirstRequest(at) | Expiry::Idle(at) => at.into(),
        };
        watchdog.as_mut().reset(deadline);
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Err(_) if flooded.load(std::sync::atomic::Ordering::Relaxed) => {
                        let total = Counters::bump(&ctx.shared.counters.h2_control_floods);
                        tracing::warn!(peer = %ctx.peer, floods_total = total, "closed an HTTP/2 connection flooding PING/SETTINGS frames");
                    }
                    Err(e) => tracing::debug!(peer = %ctx.peer, error = %e, "HTTP/2 client connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            _ = &mut watchdog => {
                let now = std::time::Instant::now();
                match activity.expiry(header_timeout, idle_timeout) {
                    Expiry::FirstRequest(at) | Expiry::Idle(at) if at <= now => {
                        tracing::debug!(peer = %ctx.peer, "closing idle HTTP/2 connection");
                        return;
                    }
                    _ => continue,
                }
            }
            _ = stalled.notified() => {
                tracing::info!(peer = %ctx.peer, "HTTP/2 client took no response bytes for send_timeout; connection closed (client error)");
                return;
            }
            _ = ctx.shared.shutdown.wait() => {
                // GOAWAY: no new streams; those in flight finish (bounded by the drain timeout).
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
                return;
            }
        }
    }
}
