//! Parsing an HTTP/1.x request head (httparse) into `http` types, and deciding how
//! the body is framed. Strict where lenience enables request smuggling.

use bytes::BytesMut;

use crate::http1::{
    self, has_token, FieldSpans, Framing, HeadError, MAX_EMPTY_LINE_BYTES, MAX_HEADERS, MAX_HEAD_BYTES,
    MAX_REQUEST_LINE,
};
use crate::proxy::target;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING};
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
    if !check_request_line(buf)? {
        return Ok(None);
    }
    // Uninitialised: the slots are 8 KiB, and httparse writes only those it fills.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
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
    match build(&head, path_range, &spans, method, version) {
        Ok(parsed) => Ok(Some(parsed)),
        Err(e) => {
            // Refused: the bytes go back, so that the record can say what was read.
            let mut restored = BytesMut::from(&head[..]);
            restored.unsplit(std::mem::take(buf));
            *buf = restored;
            Err(e)
        }
    }
}

/// The request head from its parsed parts, checked for one authority and its framing.
fn build(
    head: &bytes::Bytes,
    path_range: std::ops::Range<usize>,
    spans: &FieldSpans,
    method: Method,
    version: Version,
) -> Result<RequestHead, HeadError> {
    let target = head.get(path_range).map(|t| head.slice_ref(t)).unwrap_or_default();
    let uri = match Uri::from_maybe_shared(target.clone()) {
        Ok(uri) => uri,
        Err(_) => tolerant_target(&target).ok_or(HeadError::Malformed("invalid request target"))?,
    };
    let mut headers = spans.header_map(head)?;
    resolve_host(&mut headers, &uri, version)?;
    let framing = framing(&mut headers, version)?;
    let keep_alive = crate::http1::keep_alive(&headers, version);
    let expect_continue = http1::expects_continue(&headers);
    let accepts_trailers = has_token(&headers, &TE, "trailers");
    Ok(RequestHead { method, uri, version, headers, framing, keep_alive, expect_continue, accepts_trailers })
}

/// A target with `"`, `<`, `>` or `` ` `` sent unencoded, as real clients send JSON and
/// markup in query strings (nginx and HAProxy forward them): those bytes are
/// percent-encoded, which means the same to any URI parser, since the `http` crate's
/// URI takes none of them raw. Never a control byte, space or DEL: None.
fn tolerant_target(target: &[u8]) -> Option<Uri> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = Vec::with_capacity(target.len() + 16);
    for &b in target {
        match b {
            b'"' | b'<' | b'>' | b'`' => {
                encoded.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
            }
            0..=0x20 | 0x7f => return None,
            _ => encoded.push(b),
        }
    }
    Uri::from_maybe_shared(bytes::Bytes::from(encoded)).ok()
}

/// Checks the request line before httparse sees it: 414 for an over-long one, 400 for
/// a version that is not `HTTP/d.d` (`http/1.1` included), 505 for a major version
/// other than 1. A higher HTTP/1 minor version (`HTTP/1.2`) is rewritten to `HTTP/1.1`
/// in place: RFC 9112 §2.3 says to answer it as the highest 1.x we speak.
/// Returns false while the line is incomplete.
fn check_request_line(buf: &mut BytesMut) -> Result<bool, HeadError> {
    // RFC 9112 §2.2: empty lines before the request line are ignored (httparse does
    // too), a few of them: a flood is refused before it is buffered.
    let start = buf.iter().take(MAX_EMPTY_LINE_BYTES + 1).position(|b| *b != b'\r' && *b != b'\n');
    let start = match start {
        Some(start) => start,
        None if buf.len() > MAX_EMPTY_LINE_BYTES => {
            return Err(HeadError::Malformed("empty lines before the request line"))
        }
        None => return Ok(false),
    };
    let window = &buf[start..buf.len().min(start + MAX_REQUEST_LINE + 2)];
    let Some(line_len) = window.iter().position(|b| *b == b'\n') else {
        return if buf.len() - start > MAX_REQUEST_LINE { Err(HeadError::UriTooLong) } else { Ok(false) };
    };
    let line = &buf[start..start + line_len];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_REQUEST_LINE {
        return Err(HeadError::UriTooLong);
    }
    let version_at = line.iter().rposition(|b| *b == b' ').map_or(0, |i| i + 1);
    match line[version_at..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            if minor > b'1' {
                buf[start + version_at + 7] = b'1';
            }
            Ok(true)
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Err(HeadError::Version)
        }
        _ => Err(HeadError::Malformed("invalid HTTP version in the request line")),
    }
}

/// One authority per request, the same for routing and forwarding. RFC 9112 §3.2:
/// exactly one Host in HTTP/1.1; §3.2.2: an absolute-form target's authority replaces
/// Host. Host values must be authorities (RFC 3986 §3.2), with no userinfo.
fn resolve_host(headers: &mut HeaderMap, uri: &Uri, version: Version) -> Result<(), HeadError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    // Authority-form (CONNECT's) leaves Host alone; the proxy refuses CONNECT.
    if let (Some(authority), Some(_)) = (uri.authority(), uri.scheme()) {
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(HeadError::Malformed("absolute-form target with a scheme other than http or https"));
        }
        if !target::is_valid_authority(authority.as_str().as_bytes()) {
            return Err(HeadError::Malformed("invalid authority in the request target"));
        }
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| HeadError::Malformed("invalid authority in the request target"))?;
        headers.insert(HOST, value);
        return Ok(());
    }
    match host {
        None if version == Version::HTTP_11 => Err(HeadError::Malformed("HTTP/1.1 request without a Host header")),
        Some(host) if !target::is_valid_authority(host.as_bytes()) => {
            Err(HeadError::Malformed("Host is not a valid authority"))
        }
        _ => Ok(()),
    }
}

/// RFC 9112 §6.3 for requests, strict where lenience enables smuggling:
/// Transfer-Encoding must be exactly `chunked` (chunked twice, or not last: 400; any
/// other coding, which sluice would have to decode: 501), never with Content-Length or
/// in HTTP/1.0; Content-Length values must agree and are forwarded as one.
fn framing(headers: &mut HeaderMap, version: Version) -> Result<Framing, HeadError> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        return transfer_coding(headers);
    }
    let length = http1::content_length(headers)?;
    if let Some((n, true)) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(match length {
        None | Some((0, _)) => Framing::Empty,
        Some((n, _)) => Framing::Length(n),
    })
}

fn transfer_coding(headers: &HeaderMap) -> Result<Framing, HeadError> {
    let mut codings = Vec::new();
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| HeadError::Malformed("invalid Transfer-Encoding"))?;
        codings.extend(text.split(',').map(str::trim).filter(|t| !t.is_empty()));
    }
    let chunked = |t: &str| t.eq_ignore_ascii_case("chunked");
    match codings.as_slice() {
        [only] if chunked(only) => Ok(Framing::Chunked),
        [.., last] if !chunked(last) => Err(HeadError::Malformed("Transfer-Encoding without final chunked")),
        [] => Err(HeadError::Malformed("empty Transfer-Encoding")),
        list if list.iter().filter(|t| chunked(t)).count() > 1 => {
            Err(HeadError::Malformed("chunked applied more than once"))
        }
        _ => Err(HeadError::NotImplemented("transfer codings other than chunked")),
    }
}

impl From<HeadError> for crate::proxy::ClientError {
    fn from(error: HeadError) -> Self {
        use crate::proxy::ClientError;
        match error {
            HeadError::Malformed(why) => ClientError::Malformed(why),
            HeadError::TooLarge => ClientError::HeadTooLarge,
            HeadError::Version => ClientError::Version,
            HeadError::UriTooLong => ClientError::UriTooLong,
            HeadError::NotImplemented(what) => ClientError::NotImplemented(what),
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
            parse_str("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").expect("ok").expect("head");
        assert_eq!(chunked.framing, Framing::Chunked);
        let length = parse_str("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n")
            .expect("ok")
            .expect("head");
        assert_eq!(length.framing, Framing::Length(5));
        assert_eq!(length.headers.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"], "forwarded as one");
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(parse_str(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
        let gzip = parse_str("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(gzip, Err(HeadError::NotImplemented(_))), "{gzip:?}");
    }

    #[test]
    fn connection_semantics_by_version() {
        let old = parse_str("GET / HTTP/1.0\r\n\r\n").expect("ok").expect("head");
        assert!(!old.keep_alive);
        let old_ka = parse_str("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("ok").expect("head");
        assert!(old_ka.keep_alive);
        let close = parse_str("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("ok").expect("head");
        assert!(!close.keep_alive);
    }

    #[test]
    fn garbage_and_oversize_are_rejected() {
        assert!(matches!(parse_str("\x16\x03\x01garbage\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert_eq!(parse_str("GET / HTTP/2.0\r\n\r\n").err(), Some(HeadError::Version));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(parse_str(&huge).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn request_line_rules() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(parse_str(&long).err(), Some(HeadError::UriTooLong));
        let long_partial = format!("GET /{}", "a".repeat(MAX_REQUEST_LINE + 10));
        assert_eq!(parse_str(&long_partial).err(), Some(HeadError::UriTooLong));
        let newer = parse_str("GET / HTTP/1.2\r\nHost: x\r\n\r\n").expect("ok").expect("head");
        assert_eq!(newer.version, Version::HTTP_11);
        assert!(matches!(parse_str("GET / http/1.1\r\nHost: x\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert!(matches!(parse_str("GET / HTTP/1.1 x\r\nHost: x\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert_eq!(parse_str("GET / HTTP/2.0\r\nHost: x\r\n\r\n").err(), Some(HeadError::Version));
        assert!(parse_str("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("ok").is_some());
    }

    #[test]
    fn one_host_per_request_and_the_absolute_form_wins() {
        for bad in [
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "GET http://u@a.test/x HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET ftp://a.test/x HTTP/1.1\r\nHost: b\r\n\r\n",
        ] {
            assert!(matches!(parse_str(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
        let old = parse_str("GET / HTTP/1.0\r\n\r\n").expect("ok").expect("HTTP/1.0 needs no Host");
        assert!(old.headers.get(HOST).is_none());
        let absolute =
            parse_str("GET http://a.test:8080/x HTTP/1.1\r\nHost: b.test\r\n\r\n").expect("ok").expect("head");
        assert_eq!(absolute.headers[HOST], "a.test:8080");
        let v6 = parse_str("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").expect("ok").expect("head");
        assert_eq!(v6.headers[HOST], "[::1]:80");
    }
}
