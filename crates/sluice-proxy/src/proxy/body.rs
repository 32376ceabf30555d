//! The response body sluice sends to clients: an upstream body streamed through, or a
//! short local one (errors). An HTTP/1 upstream body goes back to its pool at its end
//! (see `upstream::h1::H1Body`); on HTTP/2 client connections the body also marks the
//! end of the request for the connection's idle watchdog.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::read_ahead::Detached;
use crate::server::ConnActivity;
use crate::upstream::{H1Body, Lease, UpstreamBody};

/// Boxed error for response bodies; hyper only needs `Into<Box<dyn Error>>`.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

enum Kind {
    Http1(H1Body),
    /// The lease is held so that the stream's connection stays counted while in use.
    Http2 {
        body: Incoming,
        _lease: Lease,
    },
    Local(Full<Bytes>),
    /// Read ahead of an HTTP/2 client (`read_ahead::for_http2`).
    Detached(Box<Detached>),
}

/// A response body. Every kind is `Unpin`, so no pin projection is needed.
pub struct ProxyBody {
    kind: Kind,
    /// Keeps an HTTP/2 request counted as in flight on its connection until the body ends.
    inflight: Option<InflightGuard>,
    /// For a 101: the upstream connection that becomes the tunnel's other end.
    upgrade: Option<UpstreamUpgrade>,
    /// Bytes the HTTP/1 connection may read ahead of a slow client (the route's
    /// response_buffer), so that a small response frees its upstream connection at once.
    read_ahead: u64,
    /// The client sent something sluice refused: close its HTTP/1 connection after this
    /// response rather than trust the rest of its byte stream.
    close_connection: bool,
}

/// The upstream side of a protocol switch: the connection (still counted in its pool
/// through the lease) and any bytes the upstream sent after its 101.
pub struct UpstreamUpgrade {
    pub(crate) lease: Lease,
    pub(crate) read: BytesMut,
}

/// A request in flight on an HTTP/2 client connection; dropping it marks the request
/// ended, also when hyper drops the request's future (client gone, stream reset).
pub(crate) struct InflightGuard(Arc<ConnActivity>);

impl InflightGuard {
    pub(crate) fn start(activity: &Arc<ConnActivity>) -> Self {
        activity.request_started();
        InflightGuard(Arc::clone(activity))
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl ProxyBody {
    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        let kind = match body {
            UpstreamBody::Http1(body) => Kind::Http1(body),
            UpstreamBody::Http2 { body, lease } => Kind::Http2 { body, _lease: lease },
            UpstreamBody::Switched { lease, read } => {
                return ProxyBody::switching(UpstreamUpgrade { lease, read });
            }
        };
        ProxyBody::with(kind, None)
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::with(Kind::Local(Full::new(text.into())), None)
    }

    /// An empty body carrying the upstream half of a 101.
    pub(crate) fn switching(upgrade: UpstreamUpgrade) -> Self {
        ProxyBody::with(Kind::Local(Full::new(Bytes::new())), Some(upgrade))
    }

    fn with(kind: Kind, upgrade: Option<UpstreamUpgrade>) -> Self {
        ProxyBody { kind, inflight: None, upgrade, read_ahead: 0, close_connection: false }
    }

    /// The upstream half of a 101, for the connection layer to build the tunnel.
    pub(crate) fn take_upgrade(&mut self) -> Option<UpstreamUpgrade> {
        self.upgrade.take()
    }

    pub(crate) fn set_read_ahead(&mut self, bytes: u64) {
        self.read_ahead = bytes;
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
        ProxyBody::with(kind, None)
    }

    /// Serves frames read ahead of the client from now on.
    pub(crate) fn set_detached(&mut self, detached: Detached) {
        self.kind = Kind::Detached(Box::new(detached));
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

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Http1(body) => Pin::new(body).poll_frame(cx),
            Kind::Http2 { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            Kind::Detached(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Http1(body) => body.is_end_stream(),
            Kind::Http2 { body, .. } => body.is_end_stream(),
            Kind::Local(body) => body.is_end_stream(),
            Kind::Detached(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Http1(body) => body.size_hint(),
            Kind::Http2 { body, .. } => body.size_hint(),
            Kind::Local(body) => body.size_hint(),
            Kind::Detached(body) => body.size_hint(),
        }
    }
}
