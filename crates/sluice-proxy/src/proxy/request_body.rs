//! The request body sent upstream, and the admission of a body before any upstream is
//! contacted: over `max_request_body` is a 413; a body that fits `request_buffer` is
//! read whole first (so a slow uploader holds no upstream connection and a malformed
//! body is a 400 that never reaches the upstream); a larger one streams, watched for
//! the same limits, or is spooled to disk first (`spool`). Every way a body can break
//! is a [`ClientBodyError`].

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::EXPECT;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_config::LargeBodies;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;

use super::body::BodyError;
use super::error::{ClientError, ProxyError};
use super::spool::{self, SpoolError, SpooledBody};

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
pub struct Buffered {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    remaining: u64,
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
    prefix: VecDeque<Bytes>,
    inner: RequestBody,
    limits: BodyLimits,
    received: u64,
    /// Armed while the consumer waits for the client, so time the upstream takes to
    /// read does not count against the client.
    waiting: Option<Pin<Box<Sleep>>>,
}

/// Applies the body limits before the request goes anywhere (see the module comment);
/// the caller skips it for a request without a body.
/// The client's `Expect: 100-continue` is kept only for a body that streams as it
/// arrives, so the upstream decides; a body sluice reads first, it asked for itself.
pub(crate) async fn admit(
    request: Request<RequestBody>,
    limits: BodyLimits,
    spool_dir: &Path,
) -> Result<Request<RequestBody>, ProxyError> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let declared = request.body().size_hint().exact();
    if declared.is_some_and(|n| n > limits.max) {
        return Err(ClientError::Body(ClientBodyError::TooLarge).into());
    }
    let (mut parts, body) = request.into_parts();
    let mut streaming = Streaming { prefix: VecDeque::new(), inner: body, limits, received: 0, waiting: None };
    if declared.is_some_and(|n| n > limits.buffer) {
        return large(parts, streaming, spool_dir).await;
    }
    let mut chunks = VecDeque::new();
    let mut buffered = 0u64;
    let mut trailers = None;
    while let Some(frame) = streaming.frame().await {
        let frame = frame.map_err(|e| ClientError::Body(client_cause(&*e).unwrap_or(ClientBodyError::Closed)))?;
        match frame.into_data() {
            Ok(data) => {
                buffered += data.len() as u64;
                chunks.push_back(data);
                if buffered > limits.buffer {
                    parts.headers.remove(EXPECT);
                    streaming.prefix = chunks;
                    return large(parts, streaming, spool_dir).await;
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    parts.headers.remove(EXPECT);
    Ok(Request::from_parts(parts, RequestBody::Buffered(Box::new(Buffered { chunks, trailers, remaining: buffered }))))
}

/// A body over `request_buffer`: streamed as it arrives, or spooled to disk first.
async fn large(
    mut parts: http::request::Parts,
    streaming: Streaming,
    spool_dir: &Path,
) -> Result<Request<RequestBody>, ProxyError> {
    let body = match streaming.limits.large {
        LargeBodies::Stream => RequestBody::Streaming(Box::new(streaming)),
        LargeBodies::Spool => {
            parts.headers.remove(EXPECT);
            match spool::write(streaming, spool_dir).await {
                Ok(spooled) => RequestBody::Spooled(Box::new(spooled)),
                Err(SpoolError::Client(cause)) => return Err(ClientError::Body(cause).into()),
                Err(e) => return Err(ProxyError::Spool(e)),
            }
        }
    };
    Ok(Request::from_parts(parts, body))
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
