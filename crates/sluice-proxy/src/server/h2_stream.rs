//! One HTTP/2 stream, in a task of its own: the request checked (RFC 9113 §8.2.1,
//! §8.3.1), the request path run while the upstream's 1xx responses are relayed, then
//! the response head and its body, sent as the client's window allows.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::sync::Notify;

use super::activity::ConnActivity;
use super::h1::date_value;
use crate::body::RequestBody;
use crate::interim::{Interim, InterimHead};
use crate::proxy::{self, InflightGuard, ProxyBody, RequestTracker};
use crate::runtime::ConnContext;

/// A stream accepted on a connection, with what it shares with the connection.
pub(super) struct Stream {
    ctx: Arc<ConnContext>,
    /// Counts the stream as in flight (the connection is not idle) until its response ends.
    inflight: InflightGuard,
    /// Told when the client took no response bytes for send_timeout.
    stalled: Arc<Notify>,
}

impl Stream {
    pub(super) fn new(ctx: Arc<ConnContext>, activity: &Arc<ConnActivity>, stalled: Arc<Notify>) -> Stream {
        let inflight = InflightGuard::start(Arc::clone(activity) as Arc<dyn RequestTracker>);
        Stream { ctx, inflight, stalled }
    }

    /// Serves the stream to its end.
    pub(super) async fn serve(self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let Stream { ctx, inflight, stalled } = self;
        if let Some(why) = malformed(&request) {
            // RFC 9113 §8.1.1: a malformed request is a stream error.
            tracing::debug!(peer = %ctx.peer, why, "malformed HTTP/2 request: stream reset");
            return respond.send_reset(Reason::PROTOCOL_ERROR);
        }
        let head_request = request.method() == Method::HEAD;
        let (mut parts, body) = request.into_parts();
        // Into a map with room for the forwarding fields the path adds (h2's fits only
        // the client's and would grow, ~1,200 instructions), one of the worker's kept
        // maps, which goes back when the request is sent upstream.
        let mut headers = crate::http1::maps::take(parts.headers.len() + 8);
        headers.extend(std::mem::take(&mut parts.headers));
        parts.headers = headers;
        // Bytes of a request body are counted as it is read, for the outcome record.
        let received = (!body.is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        let remaining = crate::http1::checked_length(&parts.headers);
        let body = RequestBody::Http2 { body, received: received.clone(), remaining, data_done: false };
        let interim = Interim::default();
        let request = Request::from_parts(parts, body);
        let Some(mut response) = handle_relaying_interim(&ctx, request, &interim, &mut respond).await else {
            return tracing::debug!(peer = %ctx.peer, "HTTP/2 stream reset by the client before its response");
        };
        if let Some(received) = received {
            response.body_mut().count_request_body(received);
        }
        proxy::read_ahead::for_http2(&mut response, &ctx.shared, &stalled);
        response.body_mut().track(inflight);
        send_response(respond, response, head_request).await;
    }
}

/// What RFC 9113 §8.2.1 and §8.3.1 call malformed and the h2 crate lets through: a
/// field value with leading or trailing whitespace, a `:scheme` other than http(s).
fn malformed<B>(request: &Request<B>) -> Option<&'static str> {
    if !matches!(request.uri().scheme_str(), None | Some("http" | "https")) {
        return Some(":scheme is neither http nor https");
    }
    let padded = |v: &[u8]| matches!(v.first().zip(v.last()), Some((a, b)) if matches!(*a, b' ' | b'\t') || matches!(*b, b' ' | b'\t'));
    request.headers().values().any(|v| padded(v.as_bytes())).then_some("a field value starts or ends with whitespace")
}

/// Runs the request path, sending the upstream's 1xx responses as they arrive. None
/// when the client reset the stream first (the request path is dropped with it).
async fn handle_relaying_interim(
    ctx: &Arc<ConnContext>,
    request: Request<RequestBody>,
    interim: &Interim,
    respond: &mut SendResponse<Bytes>,
) -> Option<Response<ProxyBody>> {
    // Inline: the stream's whole future is boxed once as it is spawned (h2.rs).
    let mut handling = pin!(proxy::handle(Arc::clone(ctx), request, Some(interim)));
    let response = loop {
        tokio::select! {
            biased;
            response = &mut handling => break response,
            head = poll_fn(|cx| interim.poll_next(cx)) => send_interim(respond, head),
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return None,
        }
    };
    // Interim heads queued in the poll that also brought the final one go first.
    while let Some(head) = interim.take() {
        send_interim(respond, head);
    }
    Some(response)
}

fn send_interim(respond: &mut SendResponse<Bytes>, head: InterimHead) {
    let mut interim = Response::new(());
    *interim.status_mut() = head.status;
    *interim.headers_mut() = head.headers;
    if let Err(e) = respond.send_informational(interim) {
        tracing::debug!(error = %e, "interim response not sent to the HTTP/2 client");
    }
}

/// Sends the head (with Date, and Content-Length when the size is known), then the body.
async fn send_response(mut respond: SendResponse<Bytes>, response: Response<ProxyBody>, head_request: bool) {
    let (mut parts, body) = response.into_parts();
    // Connection-specific fields are not HTTP/2's (RFC 9113 §8.2.2); h2 refuses them.
    proxy::remove_hop_by_hop(&mut parts.headers);
    parts.headers.entry(DATE).or_insert_with(date_value);
    // Never indexed in HPACK: each id is unique, so indexing it only pushed out of the
    // client's table the fields that do repeat (2.4k instructions per h2c request).
    if let Some(id) = parts.headers.get_mut(&proxy::X_REQUEST_ID) {
        id.set_sensitive(true);
    }
    if let (false, Some(n)) = (head_request, body.size_hint().exact()) {
        parts.headers.entry(CONTENT_LENGTH).or_insert_with(|| n.into());
    }
    let end = body.is_end_stream();
    match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(stream) if !end => send_body(stream, body).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "response head not sent to the HTTP/2 client"),
    }
}

/// Moves the body to the client, a frame at a time and only once the client's window
/// has room (so a client that reads nothing is not sent more than h2's send buffer,
/// and the body, read ahead by `read_ahead`, notices the stall). A broken body resets
/// the stream, so the client sees a truncation, not a complete short body.
async fn send_body(mut stream: SendStream<Bytes>, body: ProxyBody) {
    let mut body = pin!(body);
    loop {
        stream.reserve_capacity(1);
        while stream.capacity() == 0 {
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                _ => return, // reset by the client, or the connection is gone
            }
        }
        let frame = poll_fn(|cx| match stream.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => body.as_mut().poll_frame(cx).map(Some),
        })
        .await;
        let Some(frame) = frame else { return };
        match frame {
            None => {
                stream.reserve_capacity(0);
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if data.is_empty() && !end {
                        continue;
                    }
                    if stream.send_data(data, end).is_err() || end {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        stream.reserve_capacity(0);
                        let _ = stream.send_trailers(trailers);
                    }
                    return;
                }
            },
            Some(Err(_)) => return stream.send_reset(Reason::INTERNAL_ERROR),
        }
    }
}
