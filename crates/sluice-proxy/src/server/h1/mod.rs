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
mod respond;
mod tunnel;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::EXPECT;
use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::ListenerContext;
use super::h2;
use crate::body::RequestBody;
use crate::http1::{buffers, Framing, HeadError};
use crate::interim::{Interim, InterimHead};
use crate::outcome::{End, Record};
use crate::proxy::{self, UpstreamUpgrade};
use crate::runtime::{ConnContext, IdleTicket};
pub(super) use encode::date_value;
use encode::{ConnectionHeader, ResponseFraming};
use head::RequestHead;
use pump::BodyPump;
use respond::{write_error, ResponseContext};
use sluice_config::ListenerProtocol;

/// The HTTP/2 connection preface (RFC 9113 §3.4): an h2c client with prior knowledge.
const H2_PREFACE: &[u8] = crate::http2::PREFACE;
/// The preface's first line: a connection that starts with it and then differs is a
/// broken HTTP/2 client, not an HTTP/1 request.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// SETTINGS and GOAWAY(PROTOCOL_ERROR) for an invalid preface.
const H2_PREFACE_ERROR: &[u8] = crate::http2::PREFACE_ERROR;
/// After a response whose request body was left unread, the client's remaining bytes
/// are read and dropped for up to this long before closing (nginx's lingering_close),
/// so that the close does not turn into a reset that destroys the response in flight.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Lingering ends sooner when the client sends nothing for this long.
const LINGER_IDLE: Duration = Duration::from_secs(1);

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
pub(crate) fn serve<T: ClientStream>(
    io: T,
    ctx: Arc<ConnContext>,
    listener: Arc<ListenerContext>,
) -> impl Future<Output = ()> {
    // One argument: rustc keeps an async fn's arguments and the locals they move into
    // in separate slots, which made every idle connection's future 48 bytes larger.
    serve_connection(Connection { io, ctx, listener })
}

struct Connection<T> {
    io: T,
    ctx: Arc<ConnContext>,
    listener: Arc<ListenerContext>,
}

async fn serve_connection<T: ClientStream>(mut c: Connection<T>) {
    let detect_h2 = c.listener.protocol == ListenerProtocol::Auto;
    // Boxed: pipelined requests are rare, and an idle connection keeps this slot.
    let mut pipelined: Option<Box<BytesMut>> = None;
    let mut first = true;
    loop {
        // Idle: nothing allocated. The first request gets the header timeout to begin.
        if pipelined.is_none() && T::WAITS_WITHOUT_BUFFER {
            let ticket = c.ctx.shared.idle.register(idle_timeout(&c.ctx, first));
            if !wait_for_request(&c.io, &ticket).await {
                return;
            }
        }
        let buf = pipelined.take().map_or_else(buffers::take, |buf| *buf);
        // Boxed: the request's state exists only while a request does, so the future an
        // idle connection keeps is small.
        let cycle = Box::pin(request_cycle(&mut c.io, buf, &c.ctx, first, detect_h2 && first)).await;
        first &= matches!(cycle, Cycle::NotYet(_));
        match cycle {
            Cycle::NotYet(buf) => buffers::give(buf),
            Cycle::Again(buf) if buf.is_empty() => buffers::give(buf),
            Cycle::Again(buf) => pipelined = Some(Box::new(buf)),
            Cycle::Close => return,
            // The connection's last phase, boxed (it is rare, and its state is large).
            last => return Box::pin(last_phase(c, last)).await,
        }
    }
}

/// Lingering, HTTP/2 after the preface, or an upgraded tunnel.
async fn last_phase<T: ClientStream>(c: Connection<T>, last: Cycle) {
    let Connection { io, ctx, listener } = c;
    match last {
        Cycle::Linger(buf) => linger(io, buf).await,
        Cycle::Http2(read) => h2::serve(io, read, ctx, listener).await,
        Cycle::Upgrade(buf, upgrade) => tunnel(io, buf, upgrade, &ctx).await,
        Cycle::NotYet(_) | Cycle::Again(_) | Cycle::Close => {}
    }
}

/// Waits, holding no buffer, until the client sends bytes (true), or the idle timeout
/// passes or shutdown begins (false). Polls the socket's readiness directly rather
/// than through a `readable()` future, which would add ~150 bytes to every idle task;
/// the deadline is a 16-byte ticket in the worker's idle queues (`runtime::idle`), not
/// a timer and a shutdown registration in the task.
fn wait_for_request<'a, T: ClientStream>(io: &'a T, ticket: &'a IdleTicket<'_>) -> impl Future<Output = bool> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(ready) = io.poll_read_ready(cx) {
            return Poll::Ready(ready.is_ok());
        }
        if ticket.poll_expired(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
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
/// buffer, under the idle timeout, and during a drain for its grace at most. False:
/// timed out, closed, or drained.
async fn read_first_bytes<T: ClientStream>(io: &mut T, buf: &mut BytesMut, ctx: &ConnContext, first: bool) -> bool {
    let drained = async {
        ctx.shared.shutdown.wait().await;
        tokio::time::sleep(crate::runtime::DRAIN_IDLE_GRACE).await;
    };
    tokio::select! {
        read = tokio::time::timeout(idle_timeout(ctx, first), io.read_buf(buf)) => matches!(read, Ok(Ok(n)) if n > 0),
        () = drained => false,
    }
}

/// How one request cycle ended.
enum Cycle {
    /// The socket looked readable but had nothing yet: still idle.
    NotYet(BytesMut),
    /// Ready for the next request; the buffer holds any bytes already read of it.
    Again(BytesMut),
    Close,
    /// Close after reading and dropping what the client still sends of its body.
    Linger(BytesMut),
    Http2(BytesMut),
    Upgrade(BytesMut, Box<Tunnel>),
}

/// An upgraded connection's upstream half and the request's record, finished when the
/// tunnel closes.
struct Tunnel {
    upstream: UpstreamUpgrade,
    record: Option<Record>,
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
    // The head's deadline sits in the worker's table (no timer in this future), where
    // the accept loop can also end it early to make room at max_connections.
    let deadline = ctx.shared.idle.register_head(header_timeout);
    let started = std::time::Instant::now();
    let read = tokio::select! {
        biased;
        read = read_head(io, &mut buf, detect_h2) => Ok(read),
        () = std::future::poll_fn(|cx| deadline.poll_expired(cx)) => Err(()),
    };
    drop(deadline);
    let head = match read {
        Ok(HeadRead::Head(head)) => head,
        Ok(HeadRead::Http2) => return Cycle::Http2(buf),
        Ok(HeadRead::Closed) => return Cycle::Close,
        Ok(HeadRead::BrokenPreface) => {
            tracing::debug!(peer = %ctx.peer, "invalid HTTP/2 connection preface; GOAWAY(PROTOCOL_ERROR)");
            let _ = io.write_all(H2_PREFACE_ERROR).await;
            let _ = io.shutdown().await;
            return Cycle::Close;
        }
        Ok(HeadRead::Invalid(error)) => {
            let _ = write_error(io, proxy::client_error_response(ctx, error.into(), &buf)).await;
            return Cycle::Close;
        }
        Err(()) => {
            if started.elapsed() < header_timeout {
                tracing::debug!(peer = %ctx.peer, "closing a connection whose head is incomplete: at max_connections, to let a new client in");
            } else {
                tracing::debug!(peer = %ctx.peer, "closing: request head not received within header_read_timeout");
            }
            let _ = write_error(io, proxy::client_error_response(ctx, proxy::ClientError::HeadTimeout, &buf)).await;
            return Cycle::Close;
        }
    };
    // Boxed apart: the exchange's state is most of a request's (~8 KiB), and a
    // connection still reading its head (a slow or hostile client) should not hold it
    // (a half-sent head held 12.8 KiB with it), for one allocation per request.
    match Box::pin(exchange(io, &mut buf, head, ctx)).await {
        Ok(Next::Upgrade(tunnel)) => Cycle::Upgrade(buf, tunnel),
        Ok(Next::Again) => Cycle::Again(buf),
        Ok(Next::Linger) => Cycle::Linger(buf),
        Ok(Next::Close) | Err(_) => Cycle::Close,
    }
}

#[cfg(test)]
pub(crate) fn parse_head_for_tests(buf: &mut BytesMut) -> Result<Option<(Framing, http::HeaderMap)>, HeadError> {
    head::parse(buf).map(|head| head.map(|h| (h.framing, h.headers)))
}

/// Result of reading a request head.
#[allow(clippy::large_enum_variant)] // returned once per request and consumed at once
enum HeadRead {
    Head(RequestHead),
    Http2,
    /// Started as the HTTP/2 preface, then differed from it.
    BrokenPreface,
    Closed,
    Invalid(HeadError),
}

async fn read_head<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, detect_h2: bool) -> HeadRead {
    let mut parked = false;
    loop {
        if !buf.is_empty() {
            if detect_h2 && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                if buf.len() >= H2_PREFACE.len() {
                    return HeadRead::Http2;
                }
            } else if detect_h2 && buf.starts_with(H2_PREFACE_LINE) {
                return HeadRead::BrokenPreface;
            } else {
                match head::parse(buf) {
                    Ok(Some(head)) => return HeadRead::Head(head),
                    Ok(None) => {}
                    Err(e) => return HeadRead::Invalid(e),
                }
            }
        }
        if !parked && buf.len() < buf.capacity() && !buf.is_empty() {
            // The client paused inside its head (the read did not fill the buffer):
            // a slow or hostile client's wait should not hold a whole read buffer.
            park_partial_head(buf);
            parked = true;
        }
        // A parked head grows in small steps; the read buffer keeps 1 KiB free per read.
        let (least_room, grow) = if parked { (PARKED_ROOM, PARKED_ROOM) } else { (1024, buffers::READ_BUFFER) };
        if buf.capacity() - buf.len() < least_room {
            buf.reserve(grow);
        }
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

/// Room a parked head keeps for what the client sends next; it grows from there.
const PARKED_ROOM: usize = 512;

/// Moves the part of a head read so far out of the worker's 4 KiB read buffer (given
/// back) into one sized to it: a half-sent head holds 2.95 KiB, was 6.4 (nginx 1.22,
/// measured the same way, 9.6). Done once per head, and only when the client
/// paused mid-head, which a client sending its head whole never does.
fn park_partial_head(buf: &mut BytesMut) {
    let mut parked = BytesMut::with_capacity(buf.len() + PARKED_ROOM);
    parked.extend_from_slice(buf);
    buffers::give(std::mem::replace(buf, parked));
}

/// What the connection does after an exchange.
enum Next {
    Again,
    Upgrade(Box<Tunnel>),
    /// The response went out but the request body was not all read.
    Linger,
    Close,
}

/// One request and its response.
async fn exchange<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    head: RequestHead,
    ctx: &Arc<ConnContext>,
) -> io::Result<Next> {
    let head_request = head.method == Method::HEAD;
    let client_version = head.version;
    let accepts_trailers = head.accepts_trailers;
    let keep_alive = head.keep_alive;
    // RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored.
    let expect_continue = head.expect_continue && head.version == Version::HTTP_11;
    let (mut pump, body) = BodyPump::new(head.framing, expect_continue);
    let request = into_request(head, body, expect_continue);
    // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
    let interim = (client_version == Version::HTTP_11).then(Interim::default);

    // The request path's future lives across this one await only, so that its storage
    // is reused by the response writer's (the future every request moves into its box
    // is then the larger of the two, not their sum). Held across two (the select and
    // an interim write), rustc kept it apart: 10.2 KiB, copied per request.
    let response = {
        let handling = proxy::handle(Arc::clone(ctx), request, interim.as_ref());
        tokio::pin!(handling);
        handle_pumping(io, buf, &mut pump, handling, interim.as_ref()).await?
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (parts, mut body) = response.into_parts();
        if let Some(upstream) = body.take_upgrade() {
            let record = body.take_record();
            let mut out = Vec::with_capacity(256);
            encode::head(&mut out, parts.status, &parts.headers, None, ResponseFraming::NoBody, ConnectionHeader::Omit);
            io.write_all(&out).await?;
            return Ok(Next::Upgrade(Box::new(Tunnel { upstream, record })));
        }
        return Err(io::Error::other("101 without an upgrade"));
    }
    let keep_alive = keep_alive && !ctx.shared.shutdown.is_triggered();
    let cx = ResponseContext { head_request, client_version, accepts_trailers, keep_alive };
    let reusable = respond::write_response(io, buf, &mut pump, response, cx, ctx).await?;
    Ok(match (reusable, pump.is_complete()) {
        (true, true) => Next::Again,
        (_, false) => Next::Linger,
        (false, true) => Next::Close,
    })
}

/// Runs the request path while the request body is pumped to it and the upstream's
/// interim responses are written to the client.
async fn handle_pumping<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    pump: &mut BodyPump,
    mut handling: std::pin::Pin<&mut impl Future<Output = http::Response<proxy::ProxyBody>>>,
    interim: Option<&Interim>,
) -> io::Result<http::Response<proxy::ProxyBody>> {
    let response = loop {
        tokio::select! {
            biased;
            response = &mut handling => break response,
            // Boxed, here and below: rare, and inline its state grows every request's.
            head = next_interim(interim) => Box::pin(write_interim(io, head)).await?,
            _ = pump.step(io, buf), if pump.is_active() => {}
        }
    };
    // Interim heads queued in the poll that also brought the final one go first (the
    // response moves into the box: held across an await here, it cost ~1 KiB more).
    match interim.filter(|i| i.is_pending()) {
        Some(interim) => Box::pin(write_queued_interim(io, interim, response)).await,
        None => Ok(response),
    }
}

async fn write_queued_interim<T: AsyncWrite + Unpin>(
    io: &mut T,
    interim: &Interim,
    response: http::Response<proxy::ProxyBody>,
) -> io::Result<http::Response<proxy::ProxyBody>> {
    while let Some(head) = interim.take() {
        write_interim(io, head).await?;
    }
    Ok(response)
}

/// The next interim response the upstream sent; never, without a queue.
async fn next_interim(interim: Option<&Interim>) -> InterimHead {
    match interim {
        Some(interim) => std::future::poll_fn(|cx| interim.poll_next(cx)).await,
        None => std::future::pending().await,
    }
}

async fn write_interim<T: AsyncWrite + Unpin>(io: &mut T, head: InterimHead) -> io::Result<()> {
    let mut out = Vec::with_capacity(128);
    encode::interim(&mut out, head.status, &head.headers);
    io.write_all(&out).await
}

/// The request as the proxy sees it. `Expect` stays only where a go-ahead is pending
/// (the proxy decides whether it is answered here or by the upstream).
fn into_request(head: RequestHead, body: RequestBody, expect_continue: bool) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    if !expect_continue || head.framing == Framing::Empty {
        request.headers_mut().remove(EXPECT);
    }
    request
}

/// Reads and drops what the client still sends, within `LINGER_TIME`, after telling it
/// that the response is complete; then the connection closes.
async fn linger<T: ClientStream>(mut io: T, mut buf: BytesMut) {
    if io.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    loop {
        buf.clear();
        buf.reserve(buffers::READ_BUFFER);
        let wait = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(wait, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

/// After a 101: bytes flow both ways until either side closes or neither sends for the
/// route's tunnel_idle_timeout. Bytes either side sent after its head go first. The
/// record ends with the tunnel, counting bytes each way.
async fn tunnel<T: ClientStream>(mut io: T, buf: BytesMut, tunnel: Box<Tunnel>, ctx: &ConnContext) {
    let Tunnel { upstream: UpstreamUpgrade { mut lease, read, idle_timeout }, mut record } = *tunnel;
    let Some(upstream) = lease.h1_stream() else { return };
    let mut counts = tunnel::Counts { up: buf.len() as u64, down: read.len() as u64 };
    let flushed = (buf.is_empty() || upstream.write_all(&buf).await.is_ok())
        && (read.is_empty() || io.write_all(&read).await.is_ok());
    drop((buf, read));
    let end =
        if flushed { tunnel::copy(&mut io, upstream, idle_timeout, &mut counts).await } else { tunnel::Closed::Error };
    tracing::debug!(peer = %ctx.peer, ?end, up = counts.up, down = counts.down, "tunnel closed");
    if let Some(mut record) = record.take() {
        let outcome = record.outcome();
        outcome.bytes_in = counts.up;
        outcome.bytes_out = counts.down;
        if end == tunnel::Closed::Idle {
            outcome.error = Some("tunnel_idle_timeout");
        }
        record.finish(End::TunnelClosed);
    }
}

#[cfg(test)]
mod tests {
    /// What an idle keep-alive connection's task holds is this future (plus tokio's
    /// task header, rounded up to 128 bytes): the request's state is boxed only while a
    /// request lives, the idle deadline is a ticket. A regression here is a regression
    /// in memory per idle connection, which bench/proxybench.py's idle10k measures.
    #[test]
    fn an_idle_connections_future_stays_small() {
        fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(super::serve::<tokio::net::TcpStream>);
        assert!(size <= 160, "the HTTP/1 connection future is {size} bytes");
    }
}
