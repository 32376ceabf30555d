//! Response bodies for HTTP/2 clients, read ahead of the client.
//!
//! hyper pulls a response body only as fast as the client's flow-control window opens,
//! so a client that stops reading would keep the upstream connection (or stream) busy
//! for as long as it liked. Here the body is taken off the upstream into at most the
//! route's `response_buffer`: a body that is already all there (the usual small
//! response) is simply held; a longer one is moved by a task of its own under a byte
//! budget, and when the client takes nothing for `send_timeout` the stream is reset and
//! the upstream body dropped. (HTTP/1 clients get the same from `server::h1::respond`.)

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Semaphore};

use super::body::{ProxyBody, SendTimedOut};
use super::headers::X_REQUEST_ID;
use crate::body::BodyError;
use crate::runtime::Shared;

/// A response body detached from its upstream, as the HTTP/2 connection sees it.
pub(crate) struct Detached {
    /// Frames taken before detaching (all of them for a complete body).
    ready: VecDeque<Result<Frame<Bytes>, BodyError>>,
    /// The rest, from the task reading the upstream; None once the body is complete.
    rest: Option<mpsc::UnboundedReceiver<Result<Frame<Bytes>, BodyError>>>,
    /// Bytes the task may hold before the client takes some: given back as it does.
    budget: Arc<Semaphore>,
    limit: usize,
    hint: SizeHint,
}

/// Reads `response`'s body ahead of an HTTP/2 client (see the module comment).
pub(crate) fn for_http2(response: &mut Response<ProxyBody>, shared: &Arc<Shared>) {
    let limit = response.body().read_ahead() as usize;
    if limit == 0 || response.body().is_end_stream() {
        return; // sluice's own short bodies, and empty ones
    }
    let request_id = response.headers().get(&X_REQUEST_ID).cloned(); // shares its bytes
    let body = response.body_mut();
    // The record ends when the client has the body, not when it is read ahead.
    let record = body.take_record();
    let hint = body.size_hint();
    let mut ready = VecDeque::new();
    let mut taken = 0;
    let mut complete = false;
    while taken <= limit {
        match poll_now(body) {
            Poll::Ready(Some(frame)) => {
                taken += frame.as_ref().ok().and_then(Frame::data_ref).map_or(0, Bytes::len);
                ready.push_back(frame);
            }
            Poll::Ready(None) => {
                complete = true;
                break;
            }
            Poll::Pending => break,
        }
    }
    let budget = Arc::new(Semaphore::new(limit.saturating_sub(taken)));
    let rest = (!complete).then(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        let upstream = body.take_stream();
        let send_timeout = shared.snapshot().server.send_timeout;
        let pump = Pump { tx, budget: Arc::clone(&budget), limit, send_timeout, request_id };
        tokio::spawn(pump.run(upstream));
        rx
    });
    body.set_detached(Detached { ready, rest, budget, limit, hint });
    if let Some(record) = record {
        body.attach(record);
    }
}

/// Moves the upstream body into the channel, within the byte budget.
struct Pump {
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, BodyError>>,
    budget: Arc<Semaphore>,
    limit: usize,
    send_timeout: Duration,
    request_id: Option<HeaderValue>,
}

impl Pump {
    async fn run(self, mut upstream: ProxyBody) {
        loop {
            let frame = tokio::select! {
                frame = upstream.frame() => frame,
                _ = self.tx.closed() => return, // the client reset the stream
            };
            let Some(frame) = frame else { return };
            let size = frame.as_ref().ok().and_then(Frame::data_ref).map_or(0, Bytes::len).min(self.limit);
            let room = tokio::select! {
                room = tokio::time::timeout(self.send_timeout, self.budget.acquire_many(size as u32)) => room,
                _ = self.tx.closed() => return,
            };
            match room {
                Ok(Ok(permit)) => permit.forget(),
                _ => {
                    let id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info!(
                        request_id = id,
                        "HTTP/2 client took no response bytes for send_timeout; stream reset (client error)"
                    );
                    let _ = self.tx.send(Err(Box::new(SendTimedOut)));
                    return; // dropping the upstream body frees its connection
                }
            }
            if self.tx.send(frame).is_err() {
                return;
            }
        }
    }
}

fn poll_now(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(body).poll_frame(&mut cx)
}

impl Body for Detached {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = match this.ready.pop_front() {
            Some(frame) => Some(frame),
            None => match &mut this.rest {
                Some(rest) => std::task::ready!(rest.poll_recv(cx)),
                None => None,
            },
        };
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref) {
            this.budget.add_permits(data.len().min(this.limit));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
