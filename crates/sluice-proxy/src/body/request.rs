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
    /// An HTTP/2 client's stream; `received` counts its bytes for the outcome record,
    /// `remaining` is what its content-length says is still to come.
    Http2 {
        body: h2::RecvStream,
        received: Option<Arc<AtomicU64>>,
        remaining: Option<u64>,
        /// DATA has ended; trailers (if any) are next.
        data_done: bool,
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
            RequestBody::Http2 { body, received, remaining, data_done } => {
                poll_http2(body, received.as_deref(), remaining, data_done, cx)
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
            RequestBody::Http2 { body, .. } => body.is_end_stream(),
            RequestBody::Channel { .. } => false,
            RequestBody::Buffered(body) => body.chunks.is_empty() && body.trailers.is_none(),
            RequestBody::Streaming(streaming) => streaming.is_end_stream(),
            RequestBody::Spooled(spooled) => spooled.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Http2 { body, .. } if body.is_end_stream() => SizeHint::with_exact(0),
            RequestBody::Http2 { remaining: Some(n), .. } => SizeHint::with_exact(*n),
            RequestBody::Http2 { .. } => SizeHint::new(),
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

/// The next frame of an HTTP/2 client's stream: its DATA (the window it used given back
/// as each chunk is taken, so the client sends on as fast as the upstream takes it),
/// then its trailers. Any reset, even CANCEL, is a broken body: a body cut short must
/// not reach the upstream as if it were whole.
fn poll_http2(
    body: &mut h2::RecvStream,
    received: Option<&AtomicU64>,
    remaining: &mut Option<u64>,
    data_done: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    if !*data_done {
        match std::task::ready!(body.poll_data(cx)) {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                let n = data.len() as u64;
                if let Some(received) = received {
                    received.fetch_add(n, Ordering::Relaxed);
                }
                if let Some(left) = remaining.as_mut() {
                    *left = left.saturating_sub(n);
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Some(Err(e)) => return Poll::Ready(Some(Err(http2_body_error(e)))),
            None => *data_done = true,
        }
    }
    match std::task::ready!(body.poll_trailers(cx)) {
        Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
        Err(e) => Poll::Ready(Some(Err(http2_body_error(e)))),
    }
}

/// A stream error on a client's body (its reset, a content-length its DATA did not
/// match, the connection gone) is the client's doing: a 4xx, never blamed upstream.
fn http2_body_error(error: h2::Error) -> BodyError {
    tracing::debug!(%error, "HTTP/2 request body broke off");
    ClientBodyError::Closed.into()
}
