//! The response body sluice sends to clients: an upstream body streamed through, or a
//! short local one (errors). An HTTP/1 upstream body goes back to its pool at its end
//! (see `upstream::h1::H1Body`); on HTTP/2 client connections the body also marks the
//! end of the request for the connection's idle watchdog.
//!
//! The body carries the request's outcome record: it counts the bytes it yields and
//! finishes the record at its end, at an upstream error, or when dropped unfinished
//! (the client went away). An upstream that sends nothing for the route's
//! read_timeout breaks the body off, like an upstream error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::read_ahead::Detached;
use crate::body::BodyError;
use crate::cache::CacheFill;
use crate::http1::forward::ForwardedFields;
use crate::outcome::{End, Record};
use crate::upstream::{H1Body, H2Body, Lease, UpstreamBody};

/// Boxed as they came from the upstream (see `UpstreamBody`): a body is moved with
/// every response.
enum Kind {
    Http1(Box<H1Body>),
    /// The lease is held so that the stream's connection stays counted while in use.
    Http2(Box<H2Body>),
    Local(Full<Bytes>),
    /// Read ahead of an HTTP/2 client (`read_ahead::for_http2`).
    Detached(Box<Detached>),
    /// Another body read through a compressor (`compress`).
    Compressed(Box<super::compress::Compressed>),
}

/// A response body. Every kind is `Unpin`, so no pin projection is needed.
pub struct ProxyBody {
    kind: Kind,
    /// Keeps an HTTP/2 request counted as in flight on its connection until the body ends.
    inflight: Option<InflightGuard>,
    /// For a 101: the upstream connection that becomes the tunnel's other end.
    /// Boxed: rare, and large beside the rest of a body that every response moves.
    upgrade: Option<Box<UpstreamUpgrade>>,
    /// Bytes the HTTP/1 connection may read ahead of a slow client (the route's
    /// response_buffer), so that a small response frees its upstream connection at once.
    read_ahead: u64,
    /// Bytes past `read_ahead` that may be spilled to a file for a slow client (the
    /// route's `max_response_spool`; 0: `large_responses = "stream"`), see `spill`.
    max_spill: u64,
    /// The client sent something sluice refused: close its HTTP/1 connection after this
    /// response rather than trust the rest of its byte stream.
    close_connection: bool,
    /// The request's outcome record, finished when this body ends (or is dropped).
    record: Option<Record>,
    /// Body bytes yielded so far.
    yielded: u64,
    /// The upstream may send nothing for this long (None for local bodies).
    read_timeout: Option<Duration>,
    /// Armed while the upstream has nothing for us; boxed and reused, so a body that
    /// never waits costs no timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The cache keeps the frames as they go by, to store the response at its end.
    fill: Option<Box<CacheFill>>,
    /// Header fields already in HTTP/1 form, written before the response map's.
    wire_fields: Option<WireFields>,
}

/// Header fields already in HTTP/1 form, for the HTTP/1 writer to copy before the
/// response map's. Per-response state that rides with the body, like the record.
pub(crate) enum WireFields {
    /// A stored response's (Date included; Content-Length, Age and Cache-Status not).
    Stored(Bytes),
    /// An upstream response's fields that sluice does not read (`http1::forward`).
    Forwarded(ForwardedFields),
}

impl WireFields {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            WireFields::Stored(fields) => out.extend_from_slice(fields),
            WireFields::Forwarded(fields) => fields.write(out),
        }
    }

    /// Whether they include the response's Date (a forwarded one is in the map).
    pub(crate) fn has_date(&self) -> bool {
        matches!(self, WireFields::Stored(_))
    }
}

/// An HTTP/2 client took no response bytes for send_timeout (`read_ahead`).
#[derive(Debug, thiserror::Error)]
#[error("client took no response bytes for send_timeout")]
pub(crate) struct SendTimedOut;

/// The upstream sent no body bytes for the route's read_timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for read_timeout ({0:?}) in the middle of the response body")]
pub(crate) struct ReadTimeout(Duration);

/// The upstream side of a protocol switch: the connection (still counted in its pool
/// through the lease) and any bytes the upstream sent after its 101.
pub struct UpstreamUpgrade {
    pub(crate) lease: Lease,
    pub(crate) read: BytesMut,
    /// The tunnel closes after this long with no bytes either way (route tunnel_idle_timeout).
    pub(crate) idle_timeout: Duration,
}

/// Whoever counts a connection's requests in flight (the HTTP/2 connection's idle
/// watchdog); a trait so that this layer does not reach up into the connection layer.
pub(crate) trait RequestTracker: Send + Sync {
    fn request_started(&self);
    fn request_ended(&self);
}

/// A request in flight on an HTTP/2 client connection; dropping it marks the request
/// ended, also when the stream task drops the request's future (client gone, stream reset).
pub(crate) struct InflightGuard(Arc<dyn RequestTracker>);

impl InflightGuard {
    pub(crate) fn start(tracker: Arc<dyn RequestTracker>) -> Self {
        tracker.request_started();
        InflightGuard(tracker)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl ProxyBody {
    /// An upstream's response body; `read_timeout` bounds each wait for more of it.
    pub(crate) fn upstream(body: UpstreamBody, read_timeout: Duration) -> Self {
        let kind = match body {
            UpstreamBody::Http1(body) => Kind::Http1(body),
            UpstreamBody::Http2(body) => Kind::Http2(body),
            UpstreamBody::Switched(switched) => {
                let (lease, read) = *switched;
                return ProxyBody::switching(UpstreamUpgrade { lease, read, idle_timeout: read_timeout });
            }
        };
        let mut body = ProxyBody::with(kind, None);
        body.read_timeout = Some(read_timeout);
        body
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::with(Kind::Local(Full::new(text.into())), None)
    }

    /// No body at all (a gRPC Trailers-Only error, for one).
    pub(crate) fn empty() -> Self {
        ProxyBody::with(Kind::Local(Full::new(Bytes::new())), None)
    }

    /// An empty body carrying the upstream half of a 101.
    pub(crate) fn switching(upgrade: UpstreamUpgrade) -> Self {
        ProxyBody::with(Kind::Local(Full::new(Bytes::new())), Some(Box::new(upgrade)))
    }

    fn with(kind: Kind, upgrade: Option<Box<UpstreamUpgrade>>) -> Self {
        ProxyBody {
            kind,
            inflight: None,
            upgrade,
            read_ahead: 0,
            max_spill: 0,
            close_connection: false,
            record: None,
            yielded: 0,
            read_timeout: None,
            stall: None,
            fill: None,
            wire_fields: None,
        }
    }

    /// A stored response's body, with its header fields in HTTP/1 form (the cache's
    /// hit path: the HTTP/1 writer copies the fields instead of a header map).
    pub(crate) fn stored(fields: Bytes, body: Bytes) -> Self {
        let mut stored = ProxyBody::local(body);
        stored.wire_fields = Some(WireFields::Stored(fields));
        stored
    }

    /// An upstream response's fields that the HTTP/1 writer copies as they came.
    pub(crate) fn forward_fields(&mut self, fields: ForwardedFields) {
        self.wire_fields = Some(WireFields::Forwarded(fields));
    }

    /// The fields in HTTP/1 form, for the HTTP/1 writer. Taken, so that they are let
    /// go once written: forwarded ones hold the upstream's read buffer, which the body
    /// reads on into and gives back at its end (held, every response cost a new buffer;
    /// 16 KiB responses +11% CPU, measured).
    pub(crate) fn take_wire_fields(&mut self) -> Option<WireFields> {
        self.wire_fields.take()
    }

    /// Stores the body in the cache as it streams (`cache::CacheFill`).
    pub(crate) fn fill_cache(&mut self, fill: CacheFill) {
        self.fill = Some(Box::new(fill));
    }

    /// Gives the body the request's outcome record, to finish at the body's end.
    pub(crate) fn attach(&mut self, record: Record) {
        self.record = Some(record);
    }

    /// Takes the record back, for a connection layer that sees more of the end (HTTP/1
    /// knows when the client took the last byte; a tunnel outlives this body).
    pub(crate) fn take_record(&mut self) -> Option<Record> {
        self.record.take()
    }

    /// The request body's byte count, read when the record finishes.
    pub(crate) fn count_request_body(&mut self, received: Arc<std::sync::atomic::AtomicU64>) {
        if let Some(record) = &mut self.record {
            record.set_meter(received);
        }
    }

    /// Body bytes yielded so far.
    pub(crate) fn yielded(&self) -> u64 {
        self.yielded
    }

    /// The upstream half of a 101, for the connection layer to build the tunnel.
    pub(crate) fn take_upgrade(&mut self) -> Option<UpstreamUpgrade> {
        self.upgrade.take().map(|upgrade| *upgrade)
    }

    pub(crate) fn set_read_ahead(&mut self, bytes: u64, max_spill: u64) {
        self.read_ahead = bytes;
        self.max_spill = max_spill;
    }

    /// What of this body may be spilled to a file, within the process's `total`.
    pub(crate) fn spill_limit(&self, total: u64) -> super::spill::SpillLimit {
        super::spill::SpillLimit { max: self.max_spill, total }
    }

    pub(crate) fn mark_close(&mut self) {
        self.close_connection = true;
    }

    pub(crate) fn closes_connection(&self) -> bool {
        self.close_connection
    }

    /// Moves the body's stream into a body of its own (for a task to read), leaving an
    /// empty one here.
    pub(crate) fn take_stream(&mut self) -> ProxyBody {
        let kind = std::mem::replace(&mut self.kind, Kind::Local(Full::new(Bytes::new())));
        let mut stream = ProxyBody::with(kind, None);
        stream.read_timeout = self.read_timeout.take();
        stream.fill = self.fill.take();
        self.stall = None;
        stream
    }

    /// Compresses the body from here on: its stream (with its cache fill, which keeps
    /// the uncompressed bytes, and its read timeout) is read through `encoder`.
    pub(crate) fn compress(&mut self, encoder: super::compress::Encoder) {
        let inner = self.take_stream();
        self.kind = Kind::Compressed(Box::new(super::compress::Compressed::new(inner, encoder)));
    }

    /// Serves frames read ahead of the client from now on; bytes count from here.
    pub(crate) fn set_detached(&mut self, detached: Detached) {
        self.kind = Kind::Detached(Box::new(detached));
        self.yielded = 0;
    }

    /// How many response bytes may be held while the client is slow to take them.
    pub(crate) fn read_ahead(&self) -> u64 {
        self.read_ahead
    }

    /// Keeps the request in flight until this body ends or is dropped.
    pub(crate) fn track(&mut self, inflight: InflightGuard) {
        self.inflight = Some(inflight);
    }
}

impl ProxyBody {
    /// Waiting on the upstream: the read timeout runs (armed on the first wait, then
    /// reset at each frame).
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(timeout) = self.read_timeout else { return Poll::Pending };
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // The stream is dropped now: its upstream connection is not reused.
                self.kind = Kind::Local(Full::new(Bytes::new()));
                Poll::Ready(Some(Err(Box::new(ReadTimeout(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn finish_record(&mut self, end: End, error: Option<&'static str>) {
        if let Some(mut record) = self.record.take() {
            let outcome = record.outcome();
            outcome.bytes_out = self.yielded;
            if error.is_some() {
                outcome.error = error;
            }
            record.finish(end);
        }
    }
}

impl ProxyBody {
    /// Feeds a frame to the cache fill; the fill is done at the body's end, dropped
    /// (not stored) when the body grows too large, carries trailers or breaks off.
    fn feed_fill(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        let Some(fill) = &mut self.fill else { return };
        match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    if !fill.data(data) {
                        self.fill = None;
                    } else if self.is_end_stream() {
                        self.finish_fill();
                    }
                }
                None => self.fill = None, // trailers: not stored
            },
            Poll::Ready(None) => self.finish_fill(),
            Poll::Ready(Some(Err(_))) => self.fill = None,
            Poll::Pending => {}
        }
    }

    fn finish_fill(&mut self) {
        if let Some(fill) = self.fill.take() {
            fill.finish();
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that said it ended need not have been polled to its None.
        if self.fill.is_some() && self.is_end_stream() {
            self.finish_fill();
        }
        if let Some(mut record) = self.record.take() {
            record.outcome().bytes_out = self.yielded;
            // A sender need not poll a body that says it has ended; otherwise unfinished
            // means the client went away (the record's own drop says so).
            if self.is_end_stream() {
                record.finish(End::Complete);
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut polled = match &mut this.kind {
            Kind::Http1(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Kind::Http2(h2) => Pin::new(&mut h2.body).poll_frame(cx).map_err(Into::into),
            Kind::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            Kind::Detached(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Kind::Compressed(body) => body.poll_frame(cx),
        };
        match &polled {
            Poll::Pending => polled = this.poll_stall(cx),
            Poll::Ready(Some(Ok(frame))) => {
                this.yielded += frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(stall) = &mut this.stall {
                    if let Some(timeout) = this.read_timeout {
                        stall.as_mut().reset(tokio::time::Instant::now() + timeout);
                    }
                }
            }
            Poll::Ready(_) => {}
        }
        if this.fill.is_some() {
            this.feed_fill(&polled);
        }
        match &polled {
            Poll::Ready(None) => this.finish_record(End::Complete, None),
            Poll::Ready(Some(Err(e))) if e.is::<SendTimedOut>() => this.finish_record(End::SendTimeout, None),
            Poll::Ready(Some(Err(e))) => {
                if let Some(record) = &mut this.record {
                    let o = record.outcome();
                    let id = o.request_id();
                    let (route, upstream) = (o.route.as_deref().unwrap_or("-"), o.upstream.as_deref().unwrap_or("-"));
                    tracing::warn!(request_id = id, route, upstream, error = %e, "upstream response body broke off; the client sees a truncation");
                }
                this.finish_record(End::UpstreamBroke, Some("upstream_body"));
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Http1(body) => body.is_end_stream(),
            Kind::Http2(h2) => h2.body.is_end_stream(),
            Kind::Local(body) => body.is_end_stream(),
            Kind::Detached(body) => body.is_end_stream(),
            Kind::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Http1(body) => body.size_hint(),
            Kind::Http2(h2) => h2.body.size_hint(),
            Kind::Local(body) => body.size_hint(),
            Kind::Detached(body) => body.size_hint(),
            Kind::Compressed(_) => SizeHint::default(),
        }
    }
}
