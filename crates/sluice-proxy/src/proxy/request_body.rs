//! The request body sent upstream: nothing, hyper's body (HTTP/2 clients), or frames
//! from sluice's own HTTP/1 connection layer, which decodes the client's body and
//! hands it over through a bounded channel (so memory stays bounded while streaming).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::body::BodyError;

/// One request body frame, or why the body broke off.
pub(crate) type BodyFrame = Result<Frame<Bytes>, BodyError>;

/// A request body on its way upstream.
pub enum RequestBody {
    Empty,
    Hyper(Incoming),
    /// Frames from the HTTP/1 connection; `remaining` is the Content-Length still to come.
    Channel {
        frames: mpsc::Receiver<BodyFrame>,
        remaining: Option<u64>,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Channel { frames, remaining } => {
                let frame = std::task::ready!(frames.poll_recv(cx));
                if let (Some(Ok(frame)), Some(left)) = (&frame, remaining.as_mut()) {
                    *left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.len() as u64));
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Channel { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Channel { remaining: Some(n), .. } => SizeHint::with_exact(*n),
            RequestBody::Channel { remaining: None, .. } => SizeHint::new(),
        }
    }
}
