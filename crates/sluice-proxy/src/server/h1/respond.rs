//! Writing a response to an HTTP/1.1 client.
//!
//! The response body is read from the upstream ahead of the client, into at most the
//! route's `response_buffer`, so a small response frees its upstream connection as
//! soon as the upstream has sent it, however slowly the client reads; past that, a
//! large one is spilled to a file (`proxy::spill`, `large_responses = "spool"`), so
//! it frees the connection too; a client that takes no bytes for `send_timeout` is cut. A body that breaks off upstream is logged
//! with the request id, counted, and shown to the client as a truncation: what arrived
//! is sent, then the connection closes without a terminating chunk.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::encode::{self, ConnectionHeader, ResponseFraming};
use super::pump::BodyPump;
use super::ClientStream;
use crate::body::BodyError;
use crate::http1;
use crate::outcome::{End, Record};
use crate::proxy::spill::{Spill, SpillLimit, READ_BACK};
use crate::proxy::{ProxyBody, X_REQUEST_ID};
use crate::runtime::ConnContext;

/// Response bytes are gathered up to this size before a write; larger data frames are
/// queued as they are, without a copy.
const WRITE_COALESCE: usize = 16 * 1024;

/// What the response writer needs to know about the request.
pub(super) struct ResponseContext {
    pub(super) head_request: bool,
    pub(super) client_version: Version,
    pub(super) accepts_trailers: bool,
    pub(super) keep_alive: bool,
}

/// Why writing a response stopped early.
enum WriteError {
    /// The client went away or stopped reading.
    Client(io::Error),
    /// The upstream body broke off.
    Upstream(BodyError),
}

impl From<io::Error> for WriteError {
    fn from(error: io::Error) -> Self {
        WriteError::Client(error)
    }
}

/// Writes the response. Returns whether the connection may carry another request.
pub(super) async fn write_response<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    pump: &mut BodyPump,
    response: Response<ProxyBody>,
    cx: ResponseContext,
    conn: &ConnContext,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    // This layer finishes the record: it knows when the client took the last byte.
    let mut record = body.take_record();
    let framing = encode::framing(parts.status, &parts.headers, &body.size_hint(), cx.head_request, cx.client_version);
    let keep_alive = cx.keep_alive && framing != ResponseFraming::UntilClose && !body.closes_connection();
    let connection = match (keep_alive, cx.client_version) {
        (false, _) => ConnectionHeader::Close,
        (true, Version::HTTP_10) => ConnectionHeader::KeepAlive,
        (true, _) => ConnectionHeader::Omit,
    };
    let mut head = Vec::with_capacity(512);
    let wire_fields = body.take_wire_fields();
    encode::head(&mut head, parts.status, &parts.headers, wire_fields.as_ref(), framing, connection);
    drop(wire_fields);
    let request_id = parts.headers.get(&X_REQUEST_ID).cloned();
    let status = parts.status;
    crate::http1::maps::give(parts.headers);
    let snapshot = conn.shared.snapshot();
    let server = &snapshot.server;
    let body_cx = BodyContext {
        framing,
        accepts_trailers: cx.accepts_trailers,
        send_timeout: server.send_timeout,
        spill: body.spill_limit(server.spool_max_total),
        spool_dir: &server.spool_dir,
    };
    let send_timeout = server.send_timeout;
    let written = if framing == ResponseFraming::NoBody {
        write_timed(io, &head, send_timeout).await.map_err(WriteError::Client)
    } else if pump.is_active() {
        // The request body is still coming in (an early answer, a bidirectional
        // stream): keep reading it while the response is written.
        Box::pin(write_with_pump(io, buf, pump, &mut body, head, &body_cx)).await
    } else {
        write_read_ahead(io, &mut body, head, &body_cx).await
    };
    let id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
    if let Some(record) = &mut record {
        let outcome = record.outcome();
        outcome.bytes_in = pump.received();
        outcome.bytes_out = body.yielded();
    }
    let finish = |record: Option<Record>, end: End, error: Option<&'static str>| {
        if let Some(mut record) = record {
            if error.is_some() {
                record.outcome().error = error;
            }
            record.finish(end);
        }
    };
    match written {
        Ok(()) => {
            finish(record, End::Complete, None);
            Ok(keep_alive)
        }
        Err(WriteError::Upstream(e)) => {
            let (route, upstream) = record.as_mut().map_or(("-".into(), "-".into()), |r| {
                let o = r.outcome();
                (o.route.as_deref().unwrap_or("-").to_string(), o.upstream.as_deref().unwrap_or("-").to_string())
            });
            tracing::warn!(request_id = id, route, upstream, %status, error = %e, "upstream response body broke off; closing the client connection so the truncation shows");
            finish(record, End::UpstreamBroke, Some("upstream_body"));
            Err(io::Error::other(e))
        }
        Err(WriteError::Client(e)) if e.kind() == io::ErrorKind::TimedOut => {
            tracing::info!(request_id = id, peer = %conn.peer, "client took no response bytes for send_timeout; closed (client error)");
            finish(record, End::SendTimeout, None);
            Err(e)
        }
        Err(WriteError::Client(e)) => {
            tracing::debug!(request_id = id, peer = %conn.peer, error = %e, "client went away during the response");
            finish(record, End::ClientGone, None);
            Err(e)
        }
    }
}

/// How the body goes on the wire.
struct BodyContext<'a> {
    framing: ResponseFraming,
    accepts_trailers: bool,
    send_timeout: Duration,
    /// What may be spilled past the read-ahead buffer, and where.
    spill: SpillLimit,
    spool_dir: &'a std::path::Path,
}

/// Response bytes waiting for the client: small pieces coalesced, large frames as they are.
struct Outbox {
    queue: VecDeque<Bytes>,
    staging: Vec<u8>,
    /// Bytes in `queue` and `staging`.
    len: usize,
}

impl Outbox {
    fn new(head: Vec<u8>) -> Self {
        Outbox { queue: VecDeque::new(), len: head.len(), staging: head }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push_data(&mut self, data: Bytes, framing: ResponseFraming) {
        if data.is_empty() {
            return;
        }
        let chunked = framing == ResponseFraming::Chunked;
        let mut added = data.len();
        if chunked {
            let before = self.staging.len();
            http1::chunk_header(&mut self.staging, data.len());
            added += self.staging.len() - before + 2;
        }
        if data.len() > WRITE_COALESCE {
            self.seal();
            self.queue.push_back(data);
        } else {
            self.staging.extend_from_slice(&data);
        }
        if chunked {
            self.staging.extend_from_slice(b"\r\n");
        }
        self.len += added;
        if self.staging.len() >= WRITE_COALESCE {
            self.seal();
        }
    }

    /// The end of the body: the last chunk (with trailers the client accepts).
    fn push_end(&mut self, framing: ResponseFraming, trailers: Option<&http::HeaderMap>) {
        if framing == ResponseFraming::Chunked {
            let before = self.staging.len();
            http1::last_chunk(&mut self.staging, trailers);
            self.len += self.staging.len() - before;
        }
    }

    /// Moves the coalesced bytes into the queue, so they can be written.
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.queue.push_back(Bytes::from(std::mem::take(&mut self.staging)));
        }
    }

    fn front(&self) -> &[u8] {
        self.queue.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, n: usize) {
        if let Some(front) = self.queue.front_mut() {
            front.advance(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        self.len -= n;
    }
}

/// The body read ahead of the client into at most the route's response buffer, and
/// past it into a spill file when the route allows, while the client is written to as
/// fast as it reads. Bytes go out in order: memory, then the spill, then memory again.
async fn write_read_ahead<T: ClientStream>(
    io: &mut T,
    body: &mut ProxyBody,
    head: Vec<u8>,
    cx: &BodyContext<'_>,
) -> Result<(), WriteError> {
    let limit = (body.read_ahead() as usize).max(WRITE_COALESCE);
    let mut outbox = Outbox::new(head);
    let mut spill = Spilling::new(cx.spill.max > 0);
    let mut ended = false;
    let mut last_progress = Instant::now();
    loop {
        // Take what the body already has, without waiting.
        while !ended && outbox.len < limit && spill.unread() == 0 {
            match poll_now(body) {
                Poll::Ready(frame) => ended = take_frame(&mut outbox, frame, cx, io).await?,
                Poll::Pending => break,
            }
        }
        if ended && spill.unread() == 0 {
            // The usual case for small responses: everything is here, one write.
            drain(io, &mut outbox, cx.send_timeout).await?;
            break;
        }
        if outbox.is_empty() {
            spill.refill(&mut outbox).await?;
        }
        outbox.seal();
        let in_memory = outbox.len < limit && spill.unread() == 0;
        tokio::select! {
            biased;
            written = io.write(outbox.front()), if !outbox.is_empty() => {
                match written? {
                    0 => return Err(WriteError::Client(io::ErrorKind::WriteZero.into())),
                    n => outbox.advance(n),
                }
                last_progress = Instant::now();
            }
            frame = body.frame(), if !ended && (in_memory || spill.has_room()) => {
                ended = if in_memory {
                    take_frame(&mut outbox, frame, cx, io).await?
                } else {
                    spill.take_frame(&mut outbox, frame, cx, io).await?
                };
            }
            _ = tokio::time::sleep_until(last_progress + cx.send_timeout), if !outbox.is_empty() => {
                return Err(WriteError::Client(io::ErrorKind::TimedOut.into()));
            }
        }
    }
    io.flush().await?;
    Ok(())
}

/// The spill of one HTTP/1 response: opened at the first frame that finds the memory
/// buffer full, holding encoded bytes (chunk framing included).
struct Spilling {
    file: Option<Spill>,
    /// The route allows it, and opening the file has not failed.
    allowed: bool,
}

impl Spilling {
    fn new(allowed: bool) -> Self {
        Spilling { file: None, allowed }
    }

    fn unread(&self) -> u64 {
        self.file.as_ref().map_or(0, Spill::unread)
    }

    /// Whether the next frame may go to the spill.
    fn has_room(&self) -> bool {
        match &self.file {
            Some(file) => file.has_room(),
            None => self.allowed,
        }
    }

    /// Moves the next spilled bytes into the (empty) outbox.
    async fn refill(&mut self, outbox: &mut Outbox) -> Result<(), WriteError> {
        if let Some(file) = self.file.as_mut().filter(|f| f.unread() > 0) {
            let bytes = file.read(READ_BACK).await.map_err(|e| WriteError::Upstream(Box::new(e)))?;
            outbox.len += bytes.len();
            outbox.queue.push_back(bytes); // already encoded
        }
        Ok(())
    }

    /// Spills one frame (encoded); true at the end of the body. If no file can be
    /// opened, the frame goes to memory and the response streams from then on. On an
    /// upstream error, everything before it is sent first, as `take_frame` does.
    async fn take_frame<T: ClientStream>(
        &mut self,
        outbox: &mut Outbox,
        frame: Option<Result<Frame<Bytes>, BodyError>>,
        cx: &BodyContext<'_>,
        io: &mut T,
    ) -> Result<bool, WriteError> {
        if self.file.is_none() {
            self.file = Spill::open(cx.spool_dir, cx.spill).await;
            self.allowed = self.file.is_some();
        }
        if let Some(Err(e)) = frame {
            loop {
                let _ = drain(io, outbox, cx.send_timeout).await;
                if self.unread() == 0 || self.refill(outbox).await.is_err() {
                    break;
                }
            }
            return Err(WriteError::Upstream(e));
        }
        let Some(file) = self.file.as_mut() else { return take_frame(outbox, frame, cx, io).await };
        let mut encoded = Outbox::new(Vec::new());
        let ended = take_frame(&mut encoded, frame, cx, io).await?;
        encoded.seal();
        let pieces: Vec<Bytes> = encoded.queue.into_iter().collect();
        file.append(pieces).await.map_err(|e| WriteError::Upstream(Box::new(e)))?;
        Ok(ended)
    }
}

/// Adds one body frame to the outbox; true at the end of the body. On an upstream
/// error, what is already queued is sent first (bounded by the send timeout), so the
/// client sees a truncation, not a missing body.
async fn take_frame<T: ClientStream>(
    outbox: &mut Outbox,
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    cx: &BodyContext<'_>,
    io: &mut T,
) -> Result<bool, WriteError> {
    match frame {
        None => {
            outbox.push_end(cx.framing, None);
            Ok(true)
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => {
                outbox.push_data(data, cx.framing);
                Ok(false)
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok().filter(|_| cx.accepts_trailers);
                outbox.push_end(cx.framing, trailers.as_ref());
                Ok(true)
            }
        },
        Some(Err(e)) => {
            let _ = drain(io, outbox, cx.send_timeout).await;
            Err(WriteError::Upstream(e))
        }
    }
}

/// The response written while the request body is still pumped from the same socket.
async fn write_with_pump<T: ClientStream>(
    io: &mut T,
    buf: &mut BytesMut,
    pump: &mut BodyPump,
    body: &mut ProxyBody,
    head: Vec<u8>,
    cx: &BodyContext<'_>,
) -> Result<(), WriteError> {
    let mut outbox = Outbox::new(head);
    let mut ended = false;
    while !ended {
        let frame = match poll_now(body) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                drain(io, &mut outbox, cx.send_timeout).await?;
                loop {
                    tokio::select! {
                        biased;
                        frame = body.frame() => break frame,
                        _ = pump.step(io, buf), if pump.is_active() => {}
                    }
                }
            }
        };
        ended = take_frame(&mut outbox, frame, cx, io).await?;
    }
    drain(io, &mut outbox, cx.send_timeout).await?;
    io.flush().await?;
    Ok(())
}

/// Writes everything in the outbox, each write under the send timeout.
async fn drain<T: AsyncWrite + Unpin>(io: &mut T, outbox: &mut Outbox, timeout: Duration) -> io::Result<()> {
    while let Some(front) = outbox.queue.pop_front() {
        outbox.len -= front.len();
        write_timed(io, &front, timeout).await?;
    }
    if !outbox.staging.is_empty() {
        outbox.len -= outbox.staging.len();
        write_timed(io, &outbox.staging, timeout).await?;
        outbox.staging.clear();
    }
    Ok(())
}

/// `write_all` under the send timeout. Most writes are taken by the socket at once, so
/// a timer is only set for what has to wait.
async fn write_timed<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    let written = write_now(io, bytes)?;
    if written == bytes.len() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, io.write_all(&bytes[written..])).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes what the socket takes without waiting; how much that was.
fn write_now<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut written = 0;
    while written < bytes.len() {
        match Pin::new(&mut *io).poll_write(&mut cx, &bytes[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(written)
}

/// Polls the body once without waiting, to gather frames that are already there.
fn poll_now(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(body).poll_frame(&mut cx)
}

/// Writes a response sluice made itself (errors), then the connection closes.
pub(super) async fn write_error<T: AsyncWrite + Unpin>(io: &mut T, response: Response<ProxyBody>) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut out = Vec::with_capacity(256 + bytes.len());
    encode::head(
        &mut out,
        parts.status,
        &parts.headers,
        None,
        ResponseFraming::Length(bytes.len() as u64),
        ConnectionHeader::Close,
    );
    out.extend_from_slice(&bytes);
    io.write_all(&out).await?;
    io.shutdown().await
}
