//! sluice's HTTP/1.1 upstream client, driven inside the request's own task.
//!
//! hyper's client runs each connection as a separate task and hands requests and
//! responses across channels: two task wake-ups per request, and a read buffer per
//! pooled connection. Here the request path writes the request and reads the response
//! head itself, and the response body is read by whoever polls it (the client
//! connection's task). A pooled connection is a bare stream (TCP or TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::stream::UpstreamStream;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_LENGTH};
use http::{request, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::Lease;
use super::ResponseFields;
use crate::body::{client_cause as client_body_cause, BodyError, ClientBodyError, RequestBody};
use crate::http1::body::{BodyDecoder, Decoded};
use crate::http1::forward::ForwardedFields;
use crate::http1::{self, buffers, FieldSpans, Framing, MAX_HEADERS, MAX_HEAD_BYTES};
use crate::interim::Interim;

/// Request body frames up to this size are copied next to their chunk framing and sent
/// in one write; larger ones are written as they are.
const WRITE_COALESCE: usize = 16 * 1024;

/// A request encoded for the wire, kept until a response arrives so that it can be
/// sent again on another connection when a pooled one turns out to be closed.
pub(crate) struct EncodedRequest {
    head: Vec<u8>,
    framing: Framing,
    body: RequestBody,
    /// Whether the response to this request has no body whatever its headers say.
    head_request: bool,
    /// Whether any body frame has been taken: then the request cannot be sent again.
    body_started: bool,
    /// The client's `Expect: 100-continue`, forwarded with a streamed body: the body
    /// waits for the upstream's 100 (or `EXPECT_WAIT`), so a refusal (413, 401) can come first.
    expect_continue: bool,
    /// The request asks to switch protocols (WebSocket).
    upgrade: bool,
    /// What the caller needs of the response's fields.
    pub(crate) response_fields: ResponseFields,
}

/// How long a body held for the upstream's 100 Continue waits before it is sent anyway
/// (curl waits 1 s; an HTTP/1.0 upstream never sends 100).
const EXPECT_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for an answer from an upstream that stopped reading the body.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(1);

impl EncodedRequest {
    /// Encodes the head (`parts.uri` in origin form, Host already set by the caller).
    pub(crate) fn new(parts: &request::Parts, body: RequestBody) -> Self {
        let framing = request_framing(&parts.headers, &body);
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        http1::write_fields(&mut head, &parts.headers);
        match framing {
            Framing::Length(n) if !parts.headers.contains_key(CONTENT_LENGTH) => {
                head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
            }
            Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            _ => {}
        }
        head.extend_from_slice(b"\r\n");
        let expect_continue = framing != Framing::Empty && http1::expects_continue(&parts.headers);
        EncodedRequest {
            head,
            framing,
            body,
            head_request: parts.method == Method::HEAD,
            body_started: false,
            expect_continue,
            upgrade: parts.headers.contains_key(http::header::UPGRADE),
            response_fields: ResponseFields::Map,
        }
    }

    /// A second copy of the request, to send to another endpoint at the same time
    /// (hedging) or after this try failed (a retry): only while its body is at hand
    /// whole (none, or buffered) and not started, and never for an upgrade (a tunnel is
    /// opened once, never raced).
    pub(crate) fn replica(&self) -> Option<EncodedRequest> {
        if self.upgrade || self.body_started {
            return None;
        }
        Some(EncodedRequest {
            upgrade: false,
            head: self.head.clone(),
            framing: self.framing,
            body: self.body.replica()?,
            head_request: self.head_request,
            body_started: false,
            expect_continue: self.expect_continue,
            response_fields: self.response_fields,
        })
    }

    /// Whether the body will be consumed by sending (so a retry needs a replica kept).
    pub(crate) fn has_body(&self) -> bool {
        self.framing != Framing::Empty
    }

    /// Nothing of the body was consumed, so the request can go to another connection.
    pub(crate) fn can_resend(&self) -> bool {
        !self.body_started
    }
}

/// Content-Length when the body's size is known, chunked otherwise.
fn request_framing(headers: &HeaderMap, body: &RequestBody) -> Framing {
    if body.is_end_stream() {
        return Framing::Empty;
    }
    if let Some(n) = http1::checked_length(headers) {
        return if n == 0 { Framing::Empty } else { Framing::Length(n) };
    }
    match body.size_hint().exact() {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

/// How an exchange failed.
pub(crate) enum ExchangeError {
    /// Writing the request failed on a reused connection: the upstream had closed it
    /// before the request reached it. Any request may go on another connection.
    Unsent(io::Error),
    /// The connection was closed or reset before any byte of a response: a reused
    /// connection the upstream had already given up on, though it may have read the
    /// request. Resendable if the request may go twice and its body is untouched.
    Stale(io::Error),
    /// Anything else: a 502.
    Failed(io::Error),
    /// The client's request body broke off: its fault, a 4xx. The connection is dropped.
    ClientBody(ClientBodyError),
}

/// A response head and what follows it on the connection.
pub(crate) struct ResponseHead {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    /// The connection may carry another request after this response.
    pub(crate) reusable: bool,
    /// Bytes read past the head: the start of the body.
    pub(crate) buf: BytesMut,
    /// The fields not in `parts.headers`, to be written as they came (`ResponseFields::Forward`).
    pub(crate) forwarded: Option<ForwardedFields>,
}

/// Writes the request and reads the response head, sending the request body meanwhile
/// (an upstream may answer before it has read the whole body). 1xx responses before
/// the final one go to `interim`, if the client can take them.
pub(crate) async fn exchange(
    stream: &mut UpstreamStream,
    request: &mut EncodedRequest,
    reused: bool,
    interim: Option<&Interim>,
) -> Result<ResponseHead, ExchangeError> {
    let failed = |e: io::Error| if reused { ExchangeError::Stale(e) } else { ExchangeError::Failed(e) };
    if let Err(e) = stream.write_all(&request.head).await {
        return Err(if reused { ExchangeError::Unsent(e) } else { ExchangeError::Failed(e) });
    }
    let mut sending = request.framing != Framing::Empty;
    let mut hold = (sending && request.expect_continue).then(|| Box::pin(tokio::time::sleep(EXPECT_WAIT)));
    let mut buf = buffers::take();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            read = stream.read_buf(&mut buf) => {
                match read {
                    Ok(0) if buf.is_empty() => return Err(failed(io::ErrorKind::UnexpectedEof.into())),
                    Ok(0) => return Err(ExchangeError::Failed(io::Error::other("upstream closed the connection in the middle of the response head"))),
                    Ok(_) => {}
                    Err(e) if buf.is_empty() => return Err(failed(e)),
                    Err(e) => return Err(ExchangeError::Failed(e)),
                }
                let mut continued = false;
                let parsed = parse_response(&mut buf, request.head_request, &mut continued, interim, request.response_fields);
                if let Some(head) = parsed.map_err(ExchangeError::Failed)? {
                    let ParsedHead { parts, keep_alive, framing, forwarded } = head;
                    return Ok(ResponseHead { parts, framing, reusable: keep_alive && !sending, buf, forwarded });
                }
                if continued {
                    hold = None; // the upstream asked for the body
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(buffers::READ_BUFFER);
                }
            }
            _ = async { if let Some(wait) = hold.as_mut() { wait.await } }, if hold.is_some() => hold = None,
            frame = request.body.frame(), if sending && hold.is_none() => {
                request.body_started = true;
                match send_frame(stream, &mut out, frame, request.framing).await {
                    Ok(more) => sending = more,
                    Err(SendError::Body(cause)) => return Err(ExchangeError::ClientBody(cause)),
                    // Boxed: rare, and it would grow every request's future.
                    Err(SendError::Io(e)) => return Box::pin(answer_after_failed_send(stream, buf, request.head_request, e, interim)).await,
                }
            }
        }
    }
}

/// An upstream that refuses a body (413, 401) may answer and close while the body is
/// still being written, so the write fails: its answer, if it sent one, is what the
/// client should get, not a 502. The connection is not reused.
async fn answer_after_failed_send(
    stream: &mut UpstreamStream,
    mut buf: BytesMut,
    head_request: bool,
    error: io::Error,
    interim: Option<&Interim>,
) -> Result<ResponseHead, ExchangeError> {
    let read_answer = async {
        loop {
            let mut continued = false;
            if let Ok(Some(head)) = parse_response(&mut buf, head_request, &mut continued, interim, ResponseFields::Map)
            {
                return Some(head);
            }
            match stream.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    };
    match tokio::time::timeout(EARLY_ANSWER_WAIT, read_answer).await {
        Ok(Some(head)) => {
            Ok(ResponseHead { parts: head.parts, framing: head.framing, reusable: false, buf, forwarded: None })
        }
        _ => Err(ExchangeError::Failed(error)),
    }
}

/// Why a request body frame could not be sent.
enum SendError {
    Body(ClientBodyError),
    Io(io::Error),
}

impl From<io::Error> for SendError {
    fn from(error: io::Error) -> Self {
        SendError::Io(error)
    }
}

/// Writes one request body frame (None: the end of the body) with its framing.
/// Returns whether more of the body is to come.
async fn send_frame(
    stream: &mut UpstreamStream,
    out: &mut Vec<u8>,
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    framing: Framing,
) -> Result<bool, SendError> {
    out.clear();
    let frame = match frame {
        Some(Ok(frame)) => frame,
        // A client's body error is the client's; anything else (the spool file) is ours.
        Some(Err(e)) => {
            return Err(match client_body_cause(&*e) {
                Some(cause) => SendError::Body(cause),
                None => SendError::Io(io::Error::other(e)),
            })
        }
        None => {
            if framing == Framing::Chunked {
                http1::last_chunk(out, None);
                stream.write_all(out).await?;
            }
            return Ok(false);
        }
    };
    match frame.into_data() {
        Ok(data) => {
            let direct = encode_data(out, &data, framing);
            stream.write_all(out).await?;
            if let Some(data) = direct {
                stream.write_all(&data).await?;
                stream.write_all(b"\r\n").await?;
            }
            Ok(true)
        }
        Err(frame) => match (frame.into_trailers(), framing) {
            (Ok(trailers), Framing::Chunked) => {
                http1::last_chunk(out, Some(&trailers));
                stream.write_all(out).await?;
                Ok(false)
            }
            _ => Ok(true), // trailers cannot travel in a Content-Length body
        },
    }
}

/// Puts one data frame in `out` with its chunk framing; a large frame is returned to be
/// written as it is after `out` (whose chunk line then precedes it).
fn encode_data(out: &mut Vec<u8>, data: &Bytes, framing: Framing) -> Option<Bytes> {
    if data.is_empty() {
        return None;
    }
    let chunked = framing == Framing::Chunked;
    if chunked {
        http1::chunk_header(out, data.len());
    }
    if data.len() > WRITE_COALESCE && chunked {
        return Some(data.clone());
    }
    out.extend_from_slice(data);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    None
}

/// Parses a final response head past any 1xx interim responses other than 101
/// (`continued` is set when one was a 100 Continue; others go to `interim`). Returns the
/// head, whether the connection stays open, and the body framing.
fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    continued: &mut bool,
    interim: Option<&Interim>,
    fields: ResponseFields,
) -> io::Result<Option<ParsedHead>> {
    loop {
        // Uninitialised: the slots are 8 KiB, and httparse writes only those it fills.
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(invalid("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("malformed response head: {e}"))),
        };
        let status = StatusCode::from_u16(response.code.unwrap_or(0)).map_err(|_| invalid("invalid status code"))?;
        let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let spans = FieldSpans::of(buf, response.headers);
        // Header values become slices of the head's bytes rather than copies.
        let head = buf.split_to(len).freeze();
        let interim_or_switch = status.is_informational();
        let split = match fields {
            ResponseFields::Forward if !interim_or_switch => spans.split(&head),
            _ => Err(spans),
        };
        let (mut headers, forwarded) = match split {
            Ok((headers, forwarded)) => (headers, Some(forwarded)),
            Err(spans) => (spans.header_map(&head).map_err(malformed_response)?, None),
        };
        if interim_or_switch && status != StatusCode::SWITCHING_PROTOCOLS {
            *continued |= status == StatusCode::CONTINUE;
            if let Some(interim) = interim.filter(|_| Interim::relays(status)) {
                interim.push(status, headers);
            }
            continue; // the final response follows
        }
        let (framing, ambiguous) = response_framing(status, &mut headers, head_request)?;
        let keep_alive = !ambiguous
            && http1::keep_alive(&headers, version)
            && framing != Framing::UntilClose
            && status != StatusCode::SWITCHING_PROTOCOLS;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(ParsedHead { parts, keep_alive, framing, forwarded }));
    }
}

/// A final response head as parsed.
struct ParsedHead {
    parts: http::response::Parts,
    keep_alive: bool,
    framing: Framing,
    /// The fields left out of `parts.headers`, with `ResponseFields::Forward`.
    forwarded: Option<ForwardedFields>,
}

#[cfg(test)]
pub(crate) fn parse_response_for_tests(
    buf: &mut BytesMut,
) -> io::Result<Option<(http::response::Parts, bool, Framing)>> {
    let parsed = parse_response(buf, false, &mut false, None, ResponseFields::Map)?;
    Ok(parsed.map(|p| (p.parts, p.keep_alive, p.framing)))
}

/// RFC 9112 §6.3, for responses. Transfer-Encoding wins over Content-Length, and the
/// Content-Length is removed: forwarded beside a re-framed body it would tell an
/// HTTP/1.1 client a different length than it gets (response desync). Such a response
/// is `ambiguous`: its connection is not reused, since the upstream may mean the other.
/// A repeated equal Content-Length is forwarded once.
fn response_framing(status: StatusCode, headers: &mut HeaderMap, head_request: bool) -> io::Result<(Framing, bool)> {
    let no_body = http1::response_has_no_body(status, head_request);
    if let Some(chunked) = http1::final_coding_is_chunked(headers) {
        let ambiguous = headers.remove(CONTENT_LENGTH).is_some();
        let framing = match (no_body, chunked) {
            (true, _) => Framing::Empty,
            (false, true) => Framing::Chunked,
            (false, false) => Framing::UntilClose,
        };
        return Ok((framing, ambiguous));
    }
    let length = http1::content_length(headers).map_err(malformed_response)?;
    if let Some((n, true)) = length {
        headers.insert(CONTENT_LENGTH, n.into());
    }
    let framing = match length {
        _ if no_body => Framing::Empty,
        Some((0, _)) => Framing::Empty,
        Some((n, _)) => Framing::Length(n),
        None => Framing::UntilClose,
    };
    Ok((framing, false))
}

/// A framing or field error of the shared HTTP/1 rules, said of a response (their
/// messages are written for requests, which the server side gets far more of).
fn malformed_response(error: http1::HeadError) -> io::Error {
    match error {
        http1::HeadError::Malformed(why) | http1::HeadError::NotImplemented(why) => {
            invalid(&format!("malformed response from the upstream: {why}"))
        }
        http1::HeadError::TooLarge => invalid("response head or trailers from the upstream too large"),
        other => invalid(&format!("malformed response from the upstream: {other}")),
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// A response body read straight from the upstream connection by whoever polls it.
/// At its end the connection goes back to its pool, if the response allowed that.
pub(crate) struct H1Body {
    lease: Option<Lease>,
    decoder: BodyDecoder,
    buf: BytesMut,
    reusable: bool,
}

impl H1Body {
    pub(crate) fn new(lease: Lease, framing: Framing, reusable: bool, buf: BytesMut) -> Self {
        H1Body { lease: Some(lease), decoder: BodyDecoder::new(framing), buf, reusable }
    }

    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            // Bytes after the body mean the upstream broke framing: do not reuse.
            if self.reusable && self.buf.is_empty() {
                lease.release();
            }
        }
        buffers::give(std::mem::take(&mut self.buf));
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let decoded = match this.decoder.decode(&mut this.buf) {
                Ok(decoded) => decoded,
                Err(e) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(malformed_response(e).into())));
                }
            };
            match decoded {
                Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Decoded::Trailers(trailers) => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Decoded::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {}
            }
            let Some(stream) = this.lease.as_mut().and_then(Lease::h1_stream) else {
                return Poll::Ready(Some(Err("upstream connection gone".into())));
            };
            match std::task::ready!(stream.poll_read_buf(cx, &mut this.buf)) {
                Ok(0) => match this.decoder.at_eof() {
                    Ok(_) => {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Err(e) => {
                        this.lease = None;
                        return Poll::Ready(Some(Err(malformed_response(e).into())));
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining_length() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::new(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body with nothing left (HEAD, 204, 304, Content-Length: 0) that was never
        // polled still leaves a reusable connection; a half-read one does not.
        if self.lease.is_some() && self.decoder.is_done() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    /// Both ways of keeping the fields frame and reuse alike.
    const BOTH: [ResponseFields; 2] = [ResponseFields::Map, ResponseFields::Forward];

    fn parse(
        buf: &mut BytesMut,
        head_request: bool,
        continued: &mut bool,
        interim: Option<&Interim>,
        fields: ResponseFields,
    ) -> io::Result<Option<(http::response::Parts, bool, Framing)>> {
        let parsed = parse_response(buf, head_request, continued, interim, fields)?;
        Ok(parsed.map(|p| (p.parts, p.keep_alive, p.framing)))
    }

    #[test]
    fn response_heads_and_their_framing() {
        for fields in BOTH {
            response_heads_and_their_framing_with(fields);
        }
    }

    fn response_heads_and_their_framing_with(fields: ResponseFields) {
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let (parts, keep_alive, framing) =
            parse(&mut buf, false, &mut false, None, fields).expect("valid").expect("complete");
        assert_eq!(parts.status, StatusCode::OK);
        assert!(keep_alive);
        assert_eq!(framing, Framing::Length(5));
        assert_eq!(&buf[..], b"hello");

        let mut closing = BytesMut::from("HTTP/1.0 200 OK\r\n\r\nuntil close");
        let (_, keep_alive, framing) =
            parse(&mut closing, false, &mut false, None, fields).expect("valid").expect("complete");
        assert!(!keep_alive);
        assert_eq!(framing, Framing::UntilClose);

        let mut head = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
        assert_eq!(
            parse(&mut head, true, &mut false, None, fields).expect("valid").expect("complete").2,
            Framing::Empty
        );

        let mut chunked = BytesMut::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        let (_, keep_alive, framing) =
            parse(&mut chunked, false, &mut false, None, fields).expect("valid").expect("complete");
        assert_eq!((keep_alive, framing), (false, Framing::Chunked));
    }

    #[test]
    fn bad_response_heads_are_errors() {
        for fields in BOTH {
            bad_response_heads_are_errors_with(fields);
        }
    }

    fn bad_response_heads_are_errors_with(fields: ResponseFields) {
        // Control characters in a value (a response split, a NUL, DEL) never reach a
        // client: also not with the fields forwarded unread.
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX A: b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
        ] {
            assert!(parse(&mut BytesMut::from(bad), false, &mut false, None, fields).is_err(), "{bad}");
        }
        assert!(parse(&mut BytesMut::from("HTTP/1.1 200 OK\r\n"), false, &mut false, None, fields)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn transfer_encoding_with_content_length_is_rechunked_and_not_reused() {
        for fields in BOTH {
            rechunked_with(fields);
        }
    }

    fn rechunked_with(fields: ResponseFields) {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        let (parts, keep_alive, framing) =
            parse(&mut buf, false, &mut false, None, fields).expect("valid").expect("complete");
        assert_eq!(framing, Framing::Chunked);
        assert!(!keep_alive, "an ambiguous response's connection is not reused");
        assert!(!parts.headers.contains_key(CONTENT_LENGTH), "the length that does not describe the body is gone");
        let mut repeated = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello");
        let (parts, keep_alive, framing) =
            parse(&mut repeated, false, &mut false, None, fields).expect("valid").expect("complete");
        assert_eq!((framing, keep_alive), (Framing::Length(5), true));
        assert_eq!(parts.headers.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
    }

    #[test]
    fn a_100_continue_is_noticed_and_skipped() {
        let fields = ResponseFields::Forward;
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\n");
        let mut continued = false;
        assert!(parse(&mut buf, false, &mut continued, None, fields).expect("valid").is_none());
        assert!(continued);
    }

    #[test]
    fn only_requests_with_a_whole_body_that_open_no_tunnel_are_copied() {
        let get = http::Request::get("/x").body(()).expect("request").into_parts().0;
        assert!(EncodedRequest::new(&get, RequestBody::Empty).replica().is_some());
        let upgrade = http::Request::get("/ws").header("upgrade", "websocket").body(()).expect("request");
        assert!(EncodedRequest::new(&upgrade.into_parts().0, RequestBody::Empty).replica().is_none());
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let body = RequestBody::Channel { frames: rx, remaining: Some(3), go_ahead: None };
        assert!(EncodedRequest::new(&get, body).replica().is_none(), "a body still arriving");
        let chunks = [bytes::Bytes::from_static(b"abc")].into_iter().collect();
        let whole = crate::body::Buffered { chunks, trailers: None, remaining: 3 };
        let mut post = http::Request::post("/x").body(()).expect("request").into_parts().0;
        post.headers.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let mut encoded = EncodedRequest::new(&post, RequestBody::Buffered(Box::new(whole)));
        let copy = encoded.replica().expect("a buffered body is copied");
        assert_eq!((copy.framing, copy.head.clone()), (Framing::Length(3), encoded.head.clone()));
        encoded.body_started = true;
        assert!(encoded.replica().is_none(), "not once sending took some of it");
    }

    #[test]
    fn request_framing_follows_the_body() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_framing(&headers, &RequestBody::Empty), Framing::Empty);
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let body = RequestBody::Channel { frames: rx, remaining: None, go_ahead: None };
        assert_eq!(request_framing(&headers, &body), Framing::Chunked);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        assert_eq!(
            request_framing(&headers, &RequestBody::Channel { frames: rx, remaining: Some(7), go_ahead: None }),
            Framing::Length(7)
        );
    }
}
