//! HTTP/2 client connections, served with the h2 crate: streams multiplex, so each
//! runs the request path in a task of its own (`h2_stream`). A watchdog closes a
//! connection idle for keepalive_timeout.
//!
//! The h2 crate rather than hyper's server for what hyper does not offer: relaying an
//! upstream's 1xx (103 Early Hints) to the client. hyper's layer did nothing else for
//! sluice that `h2_stream` does not do in a few lines (date, framing fields, the body
//! moved as the client's window allows).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::{ConnActivity, Expiry};
use super::conn::ListenerContext;
use super::h2_io::H2Io;
use super::h2_stream;
use crate::http2::{PREFACE, PREFACE_ERROR};
use crate::runtime::ConnContext;
use crate::stats::Counters;

/// The connection window: what all of a client's streams may send before sluice reads.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream beyond what the client's window lets out.
const SEND_BUFFER: usize = 400 * 1024;
/// Request header section at most (SETTINGS_MAX_HEADER_LIST_SIZE), as hyper had it.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams the connection itself resets for errors before it gives up on the client.
const MAX_ERROR_RESETS: usize = 1024;

/// The HTTP/2 server settings. The stream window is small (hyper's default was 1 MiB):
/// a client uploads that much before sluice reads it, all of it wasted when the
/// upstream answers early (a 413 after ~1 MiB; nginx's after 64 KiB).
pub(crate) fn builder(stream_window: u32) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(stream_window)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(256)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_send_buffer_size(SEND_BUFFER);
    builder
}

/// Reads the client's first bytes until they are (or cannot be) the connection
/// preface; they stay in `read` for h2. False for anything else, a close or a
/// timeout. h2 (as hyper did), given a wrong preface, answers SETTINGS and closes with the rest
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

/// Serves one HTTP/2 connection until it closes, idles out, or drains on shutdown.
/// `read` holds bytes already read from `stream` (the h2c preface), served first;
/// when it is empty (HTTP/2-only listeners, ALPN h2), the preface is checked here.
pub(crate) async fn serve<T>(mut stream: T, mut read: BytesMut, ctx: Arc<ConnContext>, listener: Arc<ListenerContext>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (header_timeout, idle_timeout) = {
        let snapshot = ctx.shared.snapshot();
        (snapshot.server.header_read_timeout, snapshot.server.keepalive_timeout)
    };
    if read.is_empty() && !preface_is_valid(&mut stream, &mut read, header_timeout).await {
        tracing::debug!(peer = %ctx.peer, "invalid HTTP/2 connection preface; GOAWAY(PROTOCOL_ERROR)");
        return refuse_preface(stream).await;
    }
    let counters = Arc::clone(&ctx.shared.counters);
    let _open = crate::stats::Open::count(&counters.open_http2);
    let (io, flooded) = H2Io::new(read, stream);
    let handshake = listener.http2.handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(header_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::debug!(peer = %ctx.peer, error = %e, "HTTP/2 handshake failed"),
        Err(_) => return tracing::debug!(peer = %ctx.peer, "HTTP/2 handshake timed out"),
    };
    let activity = Arc::new(ConnActivity::new());
    // A stream whose client took no response bytes for send_timeout closes the connection.
    let stalled = Arc::new(tokio::sync::Notify::new());
    let spawn_stream = |(request, respond)| {
        let stream = h2_stream::Stream::new(Arc::clone(&ctx), &activity, Arc::clone(&stalled));
        // Boxed once here: tokio moves an unboxed future of this size (~8 KiB) into the
        // task and its stage several times (68.6k → 65.9k instructions per h2c request
        // with the box; cost guard).
        tokio::spawn(Box::pin(stream.serve(request, respond)));
    };
    // Made once, not per stream: each accepted stream passes through this loop.
    let mut stop = std::pin::pin!(until_stop(&ctx, &activity, &stalled, header_timeout, idle_timeout));
    let stop = loop {
        let accepted = tokio::select! {
            accepted = conn.accept() => accepted,
            stop = &mut stop => break stop,
        };
        match accepted {
            Some(Ok(accepted)) => spawn_stream(accepted),
            Some(Err(e)) => return connection_error(&ctx, &flooded, &e),
            None => return, // closed by the client
        }
    };
    match stop {
        Stop::Idle => tracing::debug!(peer = %ctx.peer, "closing idle HTTP/2 connection"),
        Stop::Stalled => {
            tracing::info!(peer = %ctx.peer, "HTTP/2 client took no response bytes for send_timeout; connection closed (client error)")
        }
        Stop::Shutdown => {
            // GOAWAY: no new streams; those in flight finish (bounded by the drain
            // timeout), then accept() ends.
            conn.graceful_shutdown();
            while let Some(accepted) = conn.accept().await {
                match accepted {
                    // Sent before the client saw the GOAWAY: served like the others.
                    Ok(accepted) => spawn_stream(accepted),
                    Err(e) => return connection_error(&ctx, &flooded, &e),
                }
            }
        }
    }
}

/// Why a connection is closed by sluice.
enum Stop {
    Idle,
    Stalled,
    Shutdown,
}

/// Completes when the connection should close: idle past its timeout, a stream's client
/// stalled, or shutdown.
async fn until_stop(
    ctx: &ConnContext,
    activity: &ConnActivity,
    stalled: &tokio::sync::Notify,
    header_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
) -> Stop {
    let idle = async {
        loop {
            let deadline = match activity.expiry(header_timeout, idle_timeout) {
                Expiry::Busy => tokio::time::Instant::now() + idle_timeout,
                Expiry::FirstRequest(at) | Expiry::Idle(at) => at.into(),
            };
            tokio::time::sleep_until(deadline).await;
            let now = std::time::Instant::now();
            if let Expiry::FirstRequest(at) | Expiry::Idle(at) = activity.expiry(header_timeout, idle_timeout) {
                if at <= now {
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = idle => Stop::Idle,
        () = stalled.notified() => Stop::Stalled,
        () = ctx.shared.shutdown.wait() => Stop::Shutdown,
    }
}

fn connection_error(ctx: &ConnContext, flooded: &std::sync::atomic::AtomicBool, error: &::h2::Error) {
    if flooded.load(std::sync::atomic::Ordering::Relaxed) {
        let total = Counters::bump(&ctx.shared.counters.h2_control_floods);
        tracing::warn!(peer = %ctx.peer, floods_total = total, "closed an HTTP/2 connection flooding PING/SETTINGS frames");
    } else {
        tracing::debug!(peer = %ctx.peer, %error, "HTTP/2 client connection ended with an error");
    }
}
