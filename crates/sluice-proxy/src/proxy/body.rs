//! The response body sluice sends to clients: an upstream body streamed through, or a
//! short local one (errors). It also marks the end of the request for the connection's
//! watchdog and hands an HTTP/1 upstream connection back to its pool once the body has
//! been read to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::server::ConnActivity;
use crate::upstream::Lease;

/// Boxed error for response bodies; hyper only needs `Into<Box<dyn Error>>`.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

enum Kind {
    Upstream(Incoming),
    Local(Full<Bytes>),
}

/// A response body. Both kinds are `Unpin`, so no pin projection is needed.
pub struct ProxyBody {
    kind: Kind,
    /// The HTTP/1 upstream connection this body is read from; back to the pool at its end.
    lease: Option<Lease>,
    /// Keeps the request counted as in flight on its connection until the body ends.
    inflight: Option<InflightGuard>,
    /// For a 101: the upstream connection that becomes the tunnel's other end.
    upgrade: Option<UpstreamUpgrade>,
}

/// The upstream side of a protocol switch: hyper hands over the connection once the
/// 101 is read, and the lease keeps it counted in its pool until the tunnel ends.
pub struct UpstreamUpgrade {
    pub(crate) on_upgrade: OnUpgrade,
    pub(crate) lease: Lease,
}

/// A request in flight on an HTTP/2 client connection; dropping it marks the request
/// ended, also when hyper drops the request's future (client gone, stream reset).
pub(crate) struct InflightGuard(Arc<ConnActivity>);

impl InflightGuard {
    pub(crate) fn start(activity: &Arc<ConnActivity>) -> Self {
        activity.request_started(true);
        InflightGuard(Arc::clone(activity))
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming, lease: Lease) -> Self {
        ProxyBody { kind: Kind::Upstream(body), lease: Some(lease), inflight: None, upgrade: None }
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody { kind: Kind::Local(Full::new(text.into())), lease: None, inflight: None, upgrade: None }
    }

    /// An empty body carrying the upstream half of a 101.
    pub(crate) fn switching(upgrade: UpstreamUpgrade) -> Self {
        ProxyBody { kind: Kind::Local(Full::new(Bytes::new())), lease: None, inflight: None, upgrade: Some(upgrade) }
    }

    /// The upstream half of a 101, for the connection layer to build the tunnel.
    pub(crate) fn take_upgrade(&mut self) -> Option<UpstreamUpgrade> {
        self.upgrade.take()
    }

    /// Keeps the request in flight until this body ends or is dropped.
    pub(crate) fn track(&mut self, inflight: InflightGuard) {
        self.inflight = Some(inflight);
    }

    fn release_lease(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.release_lease();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    this.lease = None; // a broken exchange: the connection is not reused
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Pending => Poll::Pending,
            },
            Kind::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Local(body) => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops bodies it never polls (HEAD, 204, 304, Content-Length: 0): such a
        // body is complete, so its connection is reusable. A body dropped half-read is not.
        if self.lease.is_some() && self.is_end_stream() {
            self.release_lease();
        }
    }
}
