//! The request body on its way upstream, in every form it takes (empty, an HTTP/2
//! stream, frames from sluice's HTTP/1 connection, read whole, streamed under limits,
//! read back from a spool file), and every way it can break ([`ClientBodyError`]).
//! Shared by the request path (which admits bodies) and the upstream clients (which
//! send them), so it sits below both.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use sluice_config::LargeBodies;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;

use super::spooled::SpooledBody;
use super::BodyError;

/// One request body frame, or why the body broke off.
pub(crate) type BodyFrame = Result<Frame<Bytes>, BodyError>;

/// Why a request body broke off: always the client's doing, so a 4xx and a client
/// error in the log, never a 502 blamed on the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("request body larger than max_request_body")]
    TooLarge,
    #[error("request body paused for longer than client_body_timeout")]
    Timeout,
    #[error("malformed request body: {0}")]
    Malformed(&'static str),
    #[error("client closed the connection in the middle of the request body")]
    Closed,
}

/// The client-body error somewhere in `error`'s source chain (hyper wraps it).
pub(crate) fn client_cause(error: &(dyn std::error::Error + 'static)) -> Option<ClientBodyError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(*found);
        }
        current = e.source();
    }
    None
}

/// A request body on its way upstream.
pub enum RequestBody {
    Empty,
    /// An HTTP/2 client's body; `received` counts its bytes for the outcome record.
    Hyper {
        body: Incoming,
        received: Option<Arc<AtomicU64>>,
    },
    /// Frames from the HTTP/1 connection; `remaining` is the Content-Length still to come.
    Channel {
        frames: mpsc::Receiver<BodyFrame>,
        remaining: Option<u64>,
        /// Fired at the first poll: the client's `Expect: 100-continue` may be answered.
        go_ahead: Option<oneshot::Sender<()>>,
    },
    /// Read whole before the upstream was contacted. Boxed, as the other large kinds
    /// are: a request is moved through several futures, and most have no body.
    Buffered(Box<Buffered>),
    /// Too large to buffer: streamed, under the size limit and the body timeout.
    Streaming(Box<Streaming>),
    /// Too large to buffer: written to a temp file first (`large_request_bodies = "spool"`).
    Spooled(Box<SpooledBody>),
}

/// A body read whole.
#[derive(Clone)]
pub struct Buffered {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) remaining: u64,
}

/// Limits on one request body, from the route and the server settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub(crate) buffer: u64,
    pub(crate) max: u64,
    pub(crate) timeout: Duration,
    pub(crate) large: LargeBodies,
}

/// A body streamed upstream: what was buffered first, then the rest, guarded.
pub struct Streaming {
    pub(crate) prefix: VecDeque<Bytes>,
    pub(crate) inner: RequestBody,
    pub(crate) limits: BodyLimits,
    pub(crate) received: u64,
    /// Armed while the consumer waits for the client, so time the upstream takes to
    /// read does not count against the client.
    pub(crate) waiting: Option<Pin<Box<Sleep>>>,
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(data) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = None;
                this.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                if this.received > this.limits.max {
                    return Poll::Ready(Some(Err(ClientBodyError::TooLarge.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // hyper's errors on an HTTP/2 client's body are stream resets and
                // protocol errors: the client's doing too.
                let cause = client_cause(&*e).unwrap_or(ClientBodyError::Closed);
                Poll::Ready(Some(Err(cause.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.limits.timeout;
                let waiting = this.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::Timeout.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let inner = self.inner.size_hint();
        match inner.exact() {
            Some(n) => SizeHint::with_exact(prefix + n),
            None => SizeHint::new(),
        }
    }
}

impl RequestBody {
    /// A second copy of a body that was read whole (empty, or buffered), to send again
    /// after a failed try; None for a body that is still arriving or on disk.
    pub(crate) fn replica(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Buffered(body) => Some(RequestBody::Buffered(body.clone())),
            _ => None,
        }
    }

    /// The body was read whole before the upstream was contacted (or there is none).
    pub(crate) fn is_whole(&self) -> bool {
        matches!(self, RequestBody::Empty | RequestBody::Buffered(_))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper { body, received } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if let (Some(Ok(frame)), Some(received)) = (&frame, received) {
                    received.fetch_add(frame.data_ref().map_or(0, |d| d.len() as u64), Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            RequestBody::Channel { frames, remaining, go_ahead } => {
                if let Some(go_ahead) = go_ahead.take() {
                    let _ = go_ahead.send(());
                }
                let frame = std::task::ready!(frames.poll_recv(cx));
                if let (Some(Ok(frame)), Some(left)) = (&frame, remaining.as_mut()) {
                    *left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.len() as u64));
                }
                Poll::Ready(frame)
            }
            RequestBody::Buffered(body) => {
                if let Some(data) = body.chunks.pop_front() {
                    body.remaining -= data.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(body.trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            RequestBody::Streaming(streaming) => Pin::new(streaming.as_mut()).poll_frame(cx),
            RequestBody::Spooled(spooled) => Pin::new(spooled.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper { body, .. } => body.is_end_stream(),
            RequestBody::Channel { .. } => false,
            RequestBody::Buffered(body) => body.chunks.is_empty() && body.trailers.is_none(),
            RequestBody::Streaming(streaming) => streaming.is_end_stream(),
            RequestBody::Spooled(spooled) => spooled.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper { body, .. } => body.size_hint(),
            RequestBody::Channel { remaining: Some(n), .. } => SizeHint::with_exact(*n),
            RequestBody::Channel { remaining: None, .. } => SizeHint::new(),
            // With trailers the body must go chunked, so its length is not offered.
            RequestBody::Buffered(body) if body.trailers.is_none() => SizeHint::with_exact(body.remaining),
            RequestBody::Buffered(_) => SizeHint::new(),
            RequestBody::Streaming(streaming) => streaming.size_hint(),
            RequestBody::Spooled(spooled) => spooled.size_hint(),
        }
    }
}
