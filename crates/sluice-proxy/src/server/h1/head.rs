//! Parsing an HTTP/1.x request head (httparse) into `http` types, and deciding how
//! the body is framed. Strict where lenience enables request smuggling.

use bytes::BytesMut;

use crate::http1::{self, has_token, FieldSpans, Framing, HeadError, MAX_HEADERS, MAX_HEAD_BYTES};
use http::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, EXPECT, TE};
use http::{Method, Uri, Version};

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// The client allows another request on this connection.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before the body.
    pub(crate) expect_continue: bool,
    /// `TE: trailers`: the client accepts trailers on a chunked response.
    pub(crate) accepts_trailers: bool,
}

/// Parses the head at the start of `buf`, consuming it. `Ok(None)`: need more bytes.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed("invalid request line or header")),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Version),
    };
    let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let path = request.path.unwrap_or("");
    let path_at = (path.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let path_range = path_at..path_at.wrapping_add(path.len());
    let spans = FieldSpans::of(buf, request.headers);
    // The head's bytes become shared: header values and the URI are slices of them.
    let head = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(head.slice(path_range)).map_err(|_| HeadError::Malformed("invalid request target"))?;
    let headers = spans.header_map(&head)?;
    let framing = framing(&headers, version)?;
    let keep_alive = keep_alive(&headers, version);
    let expect_continue = headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let accepts_trailers = has_token(&headers, &TE, "trailers");
    Ok(Some(RequestHead { method, uri, version, headers, framing, keep_alive, expect_continue, accepts_trailers }))
}

/// Transfer-Encoding wins only when chunked is its final coding; a request carrying
/// both Transfer-Encoding and Content-Length, or disagreeing lengths, is rejected
/// (RFC 9112 §6.3), because proxies that guess differently get smuggled requests.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    if let Some(chunked) = http1::final_coding_is_chunked(headers) {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        return if chunked {
            Ok(Framing::Chunked)
        } else {
            Err(HeadError::Malformed("Transfer-Encoding without final chunked"))
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().map_err(|_| HeadError::Malformed("invalid Content-Length"))?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            let n: u64 = part.parse().map_err(|_| HeadError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|prior| prior != n) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    if has_token(headers, &CONNECTION, "close") {
        return false;
    }
    version == Version::HTTP_11 || has_token(headers, &CONNECTION, "keep-alive")
}

impl From<HeadError> for crate::proxy::ClientError {
    fn from(error: HeadError) -> Self {
        use crate::proxy::ClientError;
        match error {
            HeadError::Malformed(why) => ClientError::Malformed(why),
            HeadError::TooLarge => ClientError::HeadTooLarge,
            HeadError::Version => ClientError::Version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse(&mut BytesMut::from(text))
    }

    #[test]
    fn parses_a_keep_alive_get_and_leaves_the_rest() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\nGET /next");
        let head = parse(&mut buf).expect("valid").expect("complete");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.headers["host"], "x");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive && head.accepts_trailers && !head.expect_continue);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse_str("GET / HTTP/1.1\r\nHost: x\r\n").expect("valid").is_none());
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let chunked =
            parse_str("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").expect("ok").expect("head");
        assert_eq!(chunked.framing, Framing::Chunked);
        let length =
            parse_str("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").expect("ok").expect("head");
        assert_eq!(length.framing, Framing::Length(5));
        for bad in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(parse_str(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn connection_semantics_by_version() {
        let old = parse_str("GET / HTTP/1.0\r\n\r\n").expect("ok").expect("head");
        assert!(!old.keep_alive);
        let old_ka = parse_str("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("ok").expect("head");
        assert!(old_ka.keep_alive);
        let close = parse_str("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("ok").expect("head");
        assert!(!close.keep_alive);
    }

    #[test]
    fn garbage_and_oversize_are_rejected() {
        assert!(matches!(parse_str("\x16\x03\x01garbage\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert_eq!(parse_str("GET / HTTP/2.0\r\n\r\n").err(), Some(HeadError::Version));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(parse_str(&huge).err(), Some(HeadError::TooLarge));
    }
}
