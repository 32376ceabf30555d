//! Response bodies for HTTP/2 clients, read ahead of the client.
//!
//! An HTTP/2 stream pulls a response body only as fast as the client's flow-control
//! window opens (`server::h2_stream`), so a client that stops reading would keep the upstream connection (or stream) busy
//! for as long as it liked. Here the body is taken off the upstream into at most the
//! route's `response_buffer`: a body that is already all there (the usual small
//! response) is simply held; a longer one is moved by a task of its own under a byte
//! budget, past which it is spilled to a file (`spill`, `large_responses = "spool"`)
//! so that the upstream connection is free once the upstream has sent it all; when the
//! client takes nothing for `send_timeout` the stream is reset and the upstream body
//! dropped. (HTTP/1 clients get the same from `server::h1::respond`.)

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
use tokio::sync::{mpsc, Notify, Semaphore};

use super::body::{ProxyBody, SendTimedOut};
use super::headers::X_REQUEST_ID;
use super::spill::{Spill, SpillLimit, READ_BACK};
use crate::body::BodyError;
use crate::runtime::Shared;

/// A response body detached from its upstream, as the HTTP/2 connection sees it.
pub(crate) struct Detached {
    /// Frames taken before detaching (all of them for a complete body).
    ready: VecDeque<Result<Frame<Bytes>, BodyError>>,
    /// The rest, from the task reading the upstream; None once the body is complete.
    rest: Option<mpsc::UnboundedReceiver<Result<Frame<Bytes>, BodyError>>>,
    /// Bytes the task may hold before the client takes some: given back as it does.
    /// None for a body that was complete when detached (no task, nothing to give back).
    budget: Option<Arc<Semaphore>>,
    limit: usize,
    hint: SizeHint,
}

/// Reads `response`'s body ahead of an HTTP/2 client (see the module comment).
/// `stalled` is the connection's: told when a stream's client took nothing for
/// send_timeout and the stream could not even be reset for another send_timeout (a
/// zero window: the stream waits for window and never asks the body again, so
/// only closing the connection frees what the stream holds, as nginx's send_timeout
/// does).
pub(crate) fn for_http2(response: &mut Response<ProxyBody>, shared: &Arc<Shared>, stalled: &Arc<Notify>) {
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
    // Only a body still coming needs a budget, and a task to move it.
    let budget = (!complete).then(|| Arc::new(Semaphore::new(limit.saturating_sub(taken))));
    let rest = budget.as_ref().map(|budget| {
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = shared.snapshot();
        let server = &snapshot.server;
        let spill = body.spill_limit(server.spool_max_total);
        let upstream = body.take_stream();
        let send_timeout = server.send_timeout;
        let pump = Pump {
            tx,
            budget: Arc::clone(budget),
            limit,
            send_timeout,
            request_id,
            spill,
            spool_dir: server.spool_dir.clone(),
            stalled: Arc::clone(stalled),
        };
        tokio::spawn(pump.run(upstream));
        rx
    });
    body.set_detached(Detached { ready, rest, budget, limit, hint });
    if let Some(record) = record {
        body.attach(record);
    }
}

/// Moves the upstream body into the channel, within the byte budget; past it, into a
/// spill file while the route allows, fed to the channel as the client takes bytes.
struct Pump {
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, BodyError>>,
    budget: Arc<Semaphore>,
    limit: usize,
    send_timeout: Duration,
    request_id: Option<HeaderValue>,
    spill: SpillLimit,
    spool_dir: std::path::PathBuf,
    /// The client connection's: told when this stream stalled past send_timeout.
    stalled: Arc<Notify>,
}

impl Pump {
    async fn run(self, mut upstream: ProxyBody) {
        let mut spill: Option<Spill> = None;
        let mut may_spill = self.spill.max > 0;
        // A frame that waits for the spill to empty (trailers, or data past its bounds).
        let mut held: Option<Result<Frame<Bytes>, BodyError>> = None;
        let mut upstream_done = false;
        // When the client last took bytes: send_timeout counts from there.
        let mut progress = tokio::time::Instant::now();
        let chunk = READ_BACK.min(self.limit).max(1);
        loop {
            let unread = spill.as_ref().map_or(0, Spill::unread);
            if unread > 0 {
                let room_to_spill = held.is_none() && !upstream_done && spill.as_ref().is_some_and(Spill::has_room);
                let outcome = tokio::select! {
                    frame = upstream.frame(), if room_to_spill => Step::Frame(frame),
                    room = self.room(unread.min(chunk as u64) as usize, &mut progress) => Step::Room(room),
                };
                match outcome {
                    Step::Frame(None) => upstream_done = true,
                    Step::Frame(Some(Ok(frame))) if frame.is_data() => {
                        let data = frame.into_data().unwrap_or_default();
                        if let Some(file) = spill.as_mut() {
                            if file.append(vec![data]).await.is_err() {
                                return self.broken("spill file write failed");
                            }
                        }
                    }
                    Step::Frame(Some(frame)) => held = Some(frame),
                    Step::Room(false) => return,
                    Step::Room(true) => {
                        let Some(file) = spill.as_mut() else { return };
                        let Ok(bytes) = file.read(chunk).await else { return self.broken("spill file read failed") };
                        if self.tx.send(Ok(Frame::data(bytes))).is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            // Memory again: what waited, then the upstream.
            let frame = match held.take() {
                Some(frame) => frame,
                None if upstream_done => return,
                None => {
                    let frame = tokio::select! {
                        frame = upstream.frame() => frame,
                        _ = self.tx.closed() => return, // the client reset the stream
                    };
                    let Some(frame) = frame else { return };
                    frame
                }
            };
            let size = frame.as_ref().ok().and_then(Frame::data_ref).map_or(0, Bytes::len).min(self.limit);
            if let Ok(permit) = self.budget.try_acquire_many(size as u32) {
                permit.forget();
                progress = tokio::time::Instant::now();
            } else if may_spill && frame.as_ref().is_ok_and(Frame::is_data) {
                if spill.is_none() {
                    spill = Spill::open(&self.spool_dir, self.spill).await;
                }
                match spill.as_mut() {
                    Some(file) if file.has_room() => {
                        let data = frame.ok().and_then(|f| f.into_data().ok()).unwrap_or_default();
                        if file.append(vec![data]).await.is_err() {
                            return self.broken("spill file write failed");
                        }
                        continue;
                    }
                    _ => may_spill = false,
                }
                if !self.room(size, &mut progress).await {
                    return;
                }
            } else if !self.room(size, &mut progress).await {
                return;
            }
            if self.tx.send(frame).is_err() {
                return;
            }
        }
    }

    /// Waits until the client took enough for `size` more bytes in the channel: true.
    /// False when the client reset the stream, or took nothing for send_timeout since
    /// it last took any (the stream is then reset: the error reaches the stream's sender).
    async fn room(&self, size: usize, progress: &mut tokio::time::Instant) -> bool {
        let deadline = *progress + self.send_timeout;
        let room = tokio::select! {
            room = tokio::time::timeout_at(deadline, self.budget.acquire_many(size as u32)) => room,
            _ = self.tx.closed() => return false,
        };
        match room {
            Ok(Ok(permit)) => {
                permit.forget();
                *progress = tokio::time::Instant::now();
                true
            }
            _ => {
                tracing::info!(
                    request_id = self.request_id(),
                    "HTTP/2 client took no response bytes for send_timeout (client error)"
                );
                let _ = self.tx.send(Err(Box::new(SendTimedOut)));
                // The sender resets the stream when it next polls the body; a client whose
                // window keeps it from ever polling again has its connection
                // closed after another send_timeout.
                let (tx, stalled, grace) = (self.tx.clone(), Arc::clone(&self.stalled), self.send_timeout);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tx.closed() => {}
                        _ = tokio::time::sleep(grace) => stalled.notify_one(),
                    }
                });
                false // dropping the upstream body frees its connection
            }
        }
    }

    /// The spill file failed: the client sees a truncated body.
    fn broken(&self, why: &'static str) {
        tracing::warn!(request_id = self.request_id(), why, "response spill failed; the body is cut short");
        let _ = self.tx.send(Err(why.into()));
    }

    fn request_id(&self) -> &str {
        self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
    }
}

/// What the pump waited for while spilled bytes were pending: an upstream frame, or
/// room in the channel (false: the stream is over).
enum Step {
    Frame(Option<Result<Frame<Bytes>, BodyError>>),
    Room(bool),
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
        if let (Some(data), Some(budget)) =
            (frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref), &this.budget)
        {
            budget.add_permits(data.len().min(this.limit));
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
