//! sluice's own HTTP/1.1 server connection.
//!
//! Written by hand (with httparse for the head) for one reason hyper cannot meet: an
//! idle keep-alive connection here holds no buffer at all. Between requests the task
//! waits for readability with nothing allocated but the socket and this future; the
//! read buffer exists from a request's first byte to its response's last. hyper 1.x
//! keeps its read buffer (and the boxed service future) for the connection's life,
//! ~10-25 KiB per idle connection. It is also fewer allocations per request.
//!
//! One connection is one task, top to bottom: wait → read head → hand the request to
//! `proxy::handle` while pumping its body → write the response → again.

mod encode;
mod head;
mod pump;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::EXPECT;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{ConnContext, ListenerContext};
use super::h2;
use crate::http1::{self, buffers, HeadError};
use crate::proxy::{self, BodyError, ProxyBody, UpstreamUpgrade};
use encode::{ConnectionHeader, ResponseFraming};
use head::RequestHead;
use pump::BodyPump;
use sluice_config::ListenerProtocol;

/// Response bytes are gathered up to this size before a write; larger data frames go
/// to the socket directly, without a copy.
const WRITE_COALESCE: usize = 16 * 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4): an h2c client with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client stream this layer can serve.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether `poll_read_ready` tells when bytes arrive, so that an idle connection can
    /// wait holding no buffer.
    const WAITS_WITHOUT_BUFFER: bool;

    /// Ready when a read would not block; registers the waker otherwise.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientStream for TcpStream {
    const WAITS_WITHOUT_BUFFER: bool = true;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    /// rustls decrypts into its own buffers, so socket readiness says little: an idle
    /// TLS connection waits in `read`, with its buffer (rustls holds tens of KiB anyway).
    const WAITS_WITHOUT_BUFFER: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Serves HTTP/1.1 requests on `io` until the client leaves, a timeout passes, or
/// shutdown. On an `auto` listener, a connection that opens with the h2 preface goes to
/// hyper's HTTP/2 server. This is the whole task of an HTTP/1 connection, spawned as
/// is, so its future (what an idle connection costs) stays a few hundred bytes.
pub(crate) async fn serve<T: ClientStream>(mut io: T, ctx: Arc<ConnContext>, listener: Arc<ListenerContext>) {
    let detect_h2 = listener.protocol == ListenerProtocol::Auto;
    let mut pipelined: Option<BytesMut> = None;
    let mut first = true;
    loop {
        // Idle: nothing allocated. The first request gets the header timeout to begin.
        if pipelined.is_none() && T::WAITS_WITHOUT_BUFFER && !wait_for_request(&io, &ctx, first).await {
            return;
        }
        let buf = pipelined.take().unwrap_or_else(buffers::take);
        // Boxed: the request's state exists only while a request does, so the future an
        // idle connection keeps is small.
        let cycle = Box::pin(request_cycle(&mut io, buf, &ctx, first, detect_h2 && first)).await;
        first &= matches!(cycle, Cycle::NotYet(_));
        match cycle {
            Cycle::NotYet(buf) => buffers::give(buf),
            Cycle::Again(buf) if buf.is_empty() => buffers::give(buf),
            Cycle::Again(buf) => pipelined = Some(buf),
            Cycle::Close => return,
            Cycle::Http2(read) => return Box::pin(h2::serve(io, read, ctx, listener)).await,
            Cycle::Upgrade(buf, upgrade) => return Box::pin(tunnel(io, buf, upgrade, &ctx)).await,
        }
    }
}

/// Waits, holding no buffer, until the client sends bytes (true), or the idle timeout
/// passes or shutdown begins (false). Polls the socket's readiness directly rather
/// than through a `readable()` future, which would add ~150 bytes to every idle task.
async fn wait_for_request<T: ClientStream>(io: &T, ctx: &ConnContext, first: bool) -> bool {
    let timeout = idle_timeout(ctx, first);
    let shutdown = ctx.shared.shutdown.notified();
    let idle = tokio::time::sleep(timeout);
    tokio::pin!(shutdown, idle);
    shutdown.as_mut().enable();
    if ctx.shared.shutdown.is_triggered() {
        return false;
    }
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ready) = io.poll_read_ready(cx) {
            return Poll::Ready(ready.is_ok());
        }
        if idle.as_mut().poll(cx).is_ready() || shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// How long a connection may wait for a request to begin: the header timeout for its
/// first (nginx's client_header_timeout), the keep-alive timeout between requests.
fn idle_timeout(ctx: &ConnContext, first: bool) -> Duration {
    let server = &ctx.shared.snapshot().server;
    if first {
        server.header_read_timeout
    } else {
        server.keepalive_timeout
    }
}

/// A stream without readiness (TLS) waits for its next request in a read, with the
/// buffer, under the idle timeout and until shutdown. False: timed out, closed, or draining.
async fn read_first_bytes<T: ClientStream>(io: &mut T, buf: &mut BytesMut, ctx: &ConnContext, first: bool) -> bool {
    tokio::select! {
        read = tokio::time::timeout(idle_timeout(ctx, first), io.read_buf(buf)) => matches!(read, Ok(Ok(n)) if n > 0),
        _ = ctx.shared.shutdown.wait() => false,
    }
}

/// How one request cycle ended.
enum Cycle {
    /// The socket looked readable but had nothing yet: still idle.
    NotYet(BytesMut),
    /// Ready for the next request; the buffer holds any bytes already read of it.
    Again(BytesMut),
    Close,
    Http2(BytesMut),
    Upgrade(BytesMut, UpstreamUpgrade),
}

/// Reads one request head (within the header timeout) and carries out the exchange.
async fn request_cycle<T: ClientStream>(
    io: &mut T,
    mut buf: BytesMut,
    ctx: &Arc<ConnContext>,
    first: bool,
    detect_h2: bool,
) -> Cycle {
    if buf.is_empty() && !T::WAITS_WITHOUT_BUFFER && !read_first_bytes(io, &mut buf, ctx, first).await {
        return Cycle::Close;
    }
    if buf.is_empty() {
        // Readiness can outlive the bytes that caused it (a read that filled the buffer
        // exactly leaves it set). Nothing to read yet means the connection is still
        // idle: back to the buffer-free wait, under the keep-alive timeout.
        let mut first_read = std::pin::pin!(io.read_buf(&mut buf));
        match std::future::poll_fn(|cx| Poll::Ready(first_read.as_mut().poll(cx))).await {
            Poll::Pending => return Cycle::NotYet(buf),
            Poll::Ready(Ok(0) | Err(_)) => return Cycle::Close,
            Poll::Ready(Ok(_)) => {}
        }
    }
    let header_timeout = ctx.shared.snapshot().server.header_read_timeout;
    let head = match tokio::time::timeout(header_timeout, read_head(io, &mut buf, detect_h2)).await {
        Ok(HeadRead::Head(head)) => head,
        Ok(HeadRead::Http2) => return Cycle::Http2(buf),
        Ok(HeadRead::Closed) => return Cycle::Close,
        Ok(HeadRead::Invalid(error)) => {
            let _ = write_error(io, proxy::client_error_response(error.into())).await;
            return Cycle::Close;
        }
        Err(_) => {
            tracing::debug!(peer = %ctx.peer, "closing: request head not received within header_read_timeout");
            let _ = write_error(io, proxy::client_error_response(proxy::ClientError::HeadTimeout)).await;
            return Cycle::Close;
        }
    };
    match exchange(io, &mut buf, head, ctx).await {
        Ok(Some(upgrade)) => Cycle::Upgrade(buf, upgrade),
        Ok(None) => Cycle::Again(buf),
        Err(_) => Cycle::Close,
    }
}

#[cfg(test)]
pub(crate) fn parse_head_for_tests(buf: &mut BytesMut) -> bool {
    head::parse(buf).is_ok()
}

/// Result of reading a request head.
#[allow(clippy::large_enum_variant)] // returned once per request and consumed at once
enum HeadRead {
    Head(RequestHead),
    Http2,
    Closed,
    Invalid(HeadError),
}

async fn read_head<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, detect_h2: bool) -> HeadRead {
    loop {
        if !buf.is_empty() {
            if detect_h2 && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                if buf.len() >= H2_PREFACE.len() {
                    return HeadRead::Http2;
                }
            } else {
                match head::parse(buf) {
                    Ok(Some(head)) => return HeadRead::Head(head),
                    Ok(None) => {}
                    Err(e) => return HeadRead::Invalid(e),
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buffers::READ_BUFFER);
        }
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

/// One request and its response. Returns the upstream's upgrade for a 101; an error or
/// `Ok(None)` with an unfinished request body closes the connection.
async fn exchange<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    head: RequestHead,
    ctx: &Arc<ConnContext>,
) -> io::Result<Option<UpstreamUpgrade>> {
    let head_request = head.method == Method::HEAD;
    let client_version = head.version;
    let accepts_trailers = head.accepts_trailers;
    let keep_alive = head.keep_alive;
    let (mut pump, body) = BodyPump::new(head.framing, head.expect_continue);
    let request = into_request(head, body);

    // Pinned here, inside the request cycle that `serve` already boxed.
    let handling = proxy::handle(Arc::clone(ctx), request);
    tokio::pin!(handling);
    let response = loop {
        tokio::select! {
            biased;
            response = &mut handling => break response,
            _ = pump.step(io, buf), if pump.is_active() => {}
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (parts, mut body) = response.into_parts();
        if let Some(upgrade) = body.take_upgrade() {
            let mut out = Vec::with_capacity(256);
            encode::head(&mut out, parts.status, &parts.headers, ResponseFraming::NoBody, ConnectionHeader::Omit);
            io.write_all(&out).await?;
            return Ok(Some(upgrade));
        }
        return Err(io::Error::other("101 without an upgrade"));
    }
    let keep_alive = keep_alive && !ctx.shared.shutdown.is_triggered();
    let reusable = write_response(
        io,
        buf,
        &mut pump,
        response,
        ResponseContext { head_request, client_version, accepts_trailers, keep_alive },
    )
    .await?;
    if reusable && pump.is_complete() {
        Ok(None)
    } else {
        Err(io::Error::other("connection not reusable"))
    }
}

/// The request as the proxy sees it. `Expect` is answered here, so it is not forwarded.
fn into_request(head: RequestHead, body: proxy::RequestBody) -> Request<proxy::RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request.headers_mut().remove(EXPECT);
    request
}

/// What the response writer needs to know about the request.
struct ResponseContext {
    head_request: bool,
    client_version: Version,
    accepts_trailers: bool,
    keep_alive: bool,
}

/// Writes the response, pumping the request body whenever the response body waits.
/// Returns whether the connection may carry another request.
async fn write_response<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    pump: &mut BodyPump,
    response: Response<ProxyBody>,
    cx: ResponseContext,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let framing = encode::framing(parts.status, &parts.headers, &body.size_hint(), cx.head_request, cx.client_version);
    let keep_alive = cx.keep_alive && framing != ResponseFraming::UntilClose;
    let connection = match (keep_alive, cx.client_version) {
        (false, _) => ConnectionHeader::Close,
        (true, Version::HTTP_10) => ConnectionHeader::KeepAlive,
        (true, _) => ConnectionHeader::Omit,
    };
    let mut out = Vec::with_capacity(512);
    encode::head(&mut out, parts.status, &parts.headers, framing, connection);
    drop(parts);
    if framing == ResponseFraming::NoBody {
        io.write_all(&out).await?;
        return Ok(keep_alive);
    }
    let mut trailers = None;
    loop {
        let frame = match poll_now(&mut body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    out.clear();
                }
                loop {
                    tokio::select! {
                        biased;
                        frame = body.frame() => break frame,
                        _ = pump.step(io, buf), if pump.is_active() => {}
                    }
                }
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(io::Error::other(e)), // truncated: the client sees the close
        };
        match frame.into_data() {
            Ok(data) => emit_data(io, &mut out, data, framing).await?,
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    if framing == ResponseFraming::Chunked {
        http1::last_chunk(&mut out, trailers.as_ref().filter(|_| cx.accepts_trailers));
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    io.flush().await?;
    Ok(keep_alive)
}

/// Appends one data frame to `out`, or writes it straight through when it is large.
async fn emit_data<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    data: Bytes,
    framing: ResponseFraming,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let chunked = framing == ResponseFraming::Chunked;
    if chunked {
        http1::chunk_header(out, data.len());
    }
    if data.len() > WRITE_COALESCE {
        io.write_all(out).await?;
        out.clear();
        io.write_all(&data).await?;
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    if out.len() >= WRITE_COALESCE {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Polls the body once without waiting, to gather frames that are already there.
fn poll_now(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(body).poll_frame(&mut cx)
}

/// Writes a response sluice made itself (errors), then the connection closes.
async fn write_error<T: AsyncWrite + Unpin>(io: &mut T, response: Response<ProxyBody>) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut out = Vec::with_capacity(256 + bytes.len());
    encode::head(
        &mut out,
        parts.status,
        &parts.headers,
        ResponseFraming::Length(bytes.len() as u64),
        ConnectionHeader::Close,
    );
    out.extend_from_slice(&bytes);
    io.write_all(&out).await?;
    io.shutdown().await
}

/// After a 101: bytes flow both ways until either side closes. Bytes either side sent
/// after its head go first.
async fn tunnel<T: ClientStream>(mut io: T, buf: BytesMut, upgrade: UpstreamUpgrade, ctx: &ConnContext) {
    let UpstreamUpgrade { mut lease, read } = upgrade;
    let Some(upstream) = lease.h1_stream() else { return };
    if !buf.is_empty() && upstream.write_all(&buf).await.is_err() {
        return;
    }
    if !read.is_empty() && io.write_all(&read).await.is_err() {
        return;
    }
    drop((buf, read));
    let result = tokio::io::copy_bidirectional(&mut io, upstream).await;
    tracing::debug!(peer = %ctx.peer, ?result, "tunnel closed");
}
