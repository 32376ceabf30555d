//! HTTP/1.1 wire format shared by sluice's server connections (`server::h1`) and its
//! upstream client (`upstream::h1`): the rules both sides must agree on live here and
//! only here. Content-Length (digits only, one value), keep-alive, which responses
//! have no body, header field writing, body framing and decoding, chunk encoding, limits.

pub(crate) mod body;
pub(crate) mod buffers;
#[cfg(test)]
mod corpus;
pub(crate) mod forward;
pub(crate) mod hop;
pub(crate) mod maps;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// A message head larger than this is rejected (431 for requests, 502 for responses).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A request line longer than this is a 414 (nginx's large_client_header_buffers is 8 KiB).
pub(crate) const MAX_REQUEST_LINE: usize = 16 * 1024;

/// How a message body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// A response without length: the body ends when the upstream closes the connection.
    UntilClose,
}

/// Why a head was rejected; each maps to a 4xx/5xx in `proxy::error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    TooLarge,
    #[error("HTTP version not supported")]
    Version,
    #[error("request target too long")]
    UriTooLong,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

/// The chunk-size line for a chunk of `len` bytes.
pub(crate) fn chunk_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// Trailer fields after the last chunk, then the end of the body.
pub(crate) fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        write_fields(out, trailers);
    }
    out.extend_from_slice(b"\r\n");
}

/// sluice's request id, set on every request and response (`proxy::headers`).
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1). `TE: trailers` is
/// put back by the caller. `Trailer` is not here although RFC 2616 listed it: RFC 9110
/// §6.6.2 makes it an end-to-end declaration, and hyper's HTTP/1 client sends only the
/// trailer fields a `Trailer` header declares, so removing it would drop every trailer.
/// `HTTP2-Settings` belongs to an h2c upgrade (RFC 7540 §3.2.1), which is never forwarded.
pub(crate) static HOP_BY_HOP: [&HeaderName; 7] = [
    &http::header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &http::header::TE,
    &TRANSFER_ENCODING,
    &http::header::UPGRADE,
    &HTTP2_SETTINGS,
];

/// The tokens of a comma-separated value (`Connection`, `TE`...): trimmed, empty ones skipped.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

/// Header (or trailer) fields as `name: value` lines; the names are lower case, as
/// `http` keeps them. Values were validated when they were made (no CR or LF).
pub(crate) fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a comma-separated header (`Connection`, `TE`, ...) lists `token`.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the last transfer coding is `chunked` (RFC 9112 §6.3); None without the header.
pub(crate) fn final_coding_is_chunked(headers: &HeaderMap) -> Option<bool> {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return None;
    }
    let last = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty());
    Some(last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")))
}

/// The Content-Length of a message, None without one. Every value, comma lists
/// included, must be the same number of digits only (RFC 9110 §8.6; RFC 9112 §6.3
/// makes anything else a framing error). The flag says whether it was repeated, so
/// that the caller forwards it once.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<(u64, bool)>, HeadError> {
    let mut length = None;
    let mut values = 0;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|prior| prior != n) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
            values += 1;
        }
    }
    Ok(length.map(|n| (n, values > 1)))
}

/// The one Content-Length, for a head whose framing was already checked (a single
/// value, digits only); None when absent or not digits.
pub(crate) fn checked_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH).and_then(|v| parse_decimal(v.as_bytes().trim_ascii()))
}

/// Whether the connection stays open after this message (RFC 9112 §9.3): HTTP/1.1
/// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`. The same
/// rule for requests and responses.
pub(crate) fn keep_alive(headers: &HeaderMap, version: http::Version) -> bool {
    if has_token(headers, &http::header::CONNECTION, "close") {
        return false;
    }
    version == http::Version::HTTP_11 || has_token(headers, &http::header::CONNECTION, "keep-alive")
}

/// `Expect: 100-continue`: the client waits for a go-ahead before sending its body.
pub(crate) fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The idle time a `Keep-Alive: timeout=N` field announces (RFC 2068 §19.7.1.1, still
/// sent by Apache, Node with `keepAliveTimeout` hints and others), in whole seconds.
pub(crate) fn keep_alive_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get(&KEEP_ALIVE)?.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (name, n) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let seconds = parse_decimal(n.trim().trim_matches('"').as_bytes())?;
        Some(std::time::Duration::from_secs(seconds.min(86_400)))
    })
}

/// Responses that never have a body whatever their headers say (RFC 9110 §6.4.1):
/// to HEAD, 1xx, 204 and 304.
pub(crate) fn response_has_no_body(status: http::StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

/// Decimal digits only (u64's FromStr would also take a sign), None on overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Header fields per message at most; more is a 431 (requests) or 502 (responses).
/// The bytes are what is bounded (`MAX_HEAD_BYTES`); the count only keeps the parse's
/// slots on the stack: a few hundred, as nginx and HAProxy (101 by default) allow about.
pub(crate) const MAX_HEADERS: usize = 256;
/// Empty lines' bytes (CR, LF) ignored before a request line: RFC 9112 §2.2 asks to
/// ignore at least one (clients once sent a CRLF after a POST body); more is a 400,
/// so that a flood of them is neither buffered nor rescanned.
pub(crate) const MAX_EMPTY_LINE_BYTES: usize = 8;

/// Where each header field of a parsed head lies in the head's bytes, so that the
/// values can share those bytes instead of being copied one allocation each.
/// (Held in a Vec of the fields' number: a fixed array of `MAX_HEADERS` would be 4 KiB
/// zeroed per message.)
pub(crate) struct FieldSpans {
    spans: Vec<(u32, u32, u32, u32)>,
}

impl FieldSpans {
    /// Records the fields httparse found in `base` (the buffer it parsed).
    pub(crate) fn of(base: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let start = base.as_ptr() as usize;
        let spans = fields
            .iter()
            .map(|field| {
                // httparse's slices point into `base`; wrapping keeps a broken promise a
                // range check failure below instead of a panic.
                let name = (field.name.as_ptr() as usize).wrapping_sub(start);
                let value = (field.value.as_ptr() as usize).wrapping_sub(start);
                (name as u32, field.name.len() as u32, value as u32, field.value.len() as u32)
            })
            .collect();
        FieldSpans { spans }
    }

    /// The header map, its values slices of `head` (which starts where `base` did).
    pub(crate) fn header_map(&self, head: &Bytes) -> Result<HeaderMap, HeadError> {
        // Room for what the proxy adds (forwarding headers, Via, ids, traceparent) without a rehash.
        let mut headers = maps::take(self.spans.len() + 8);
        for &(name_at, name_len, value_at, value_len) in &self.spans {
            let name = head.get(name_at as usize..name_at as usize + name_len as usize).unwrap_or_default();
            let name = HeaderName::from_bytes(name).map_err(|_| HeadError::Malformed("invalid header name"))?;
            let range = value_at as usize..value_at as usize + value_len as usize;
            if range.end > head.len() {
                return Err(HeadError::Malformed("invalid header value"));
            }
            let value = head.slice(range);
            let value =
                HeaderValue::from_maybe_shared(value).map_err(|_| HeadError::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod robustness {
    //! Malformed input never panics the parsers, and what they accept is never
    //! ambiguous (one Host, one Content-Length, never both framings): mutated corpus
    //! cases and random bytes through the request head parser, the response head
    //! parser and the body decoder used for request and response bodies alike. A
    //! bounded, deterministic stand-in for coverage-guided fuzzing, run every time.

    use bytes::BytesMut;

    use super::body::{BodyDecoder, Decoded};
    use super::Framing;

    const SEEDS: [&[u8]; 4] = [
        b"POST /a?b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];

    /// xorshift64*: deterministic, so a failure reproduces.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn mutate(seed: &[u8], state: &mut u64) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..(next(state) % 6 + 1) {
            let at = (next(state) as usize) % (bytes.len() + 1);
            match next(state) % 4 {
                0 if at < bytes.len() => bytes[at] = next(state) as u8,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, b"\r\n:; 0fF\x00\xff"[(next(state) % 10) as usize]),
                _ => bytes.truncate(at),
            }
        }
        bytes
    }

    /// Parses `input` every way; whatever is accepted must be unambiguous.
    fn exercise(input: &[u8]) {
        if let Ok(Some((framing, headers))) = crate::server::parse_request_head_for_tests(&mut BytesMut::from(input)) {
            use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
            let has_te = headers.contains_key(TRANSFER_ENCODING);
            assert!(headers.get_all(HOST).iter().count() <= 1, "{input:?}");
            assert!(!(has_te && headers.contains_key(CONTENT_LENGTH)), "{input:?}");
            assert!(headers.get_all(CONTENT_LENGTH).iter().count() <= 1, "{input:?}");
            assert_eq!(has_te, framing == Framing::Chunked, "{input:?}");
        }
        if let Ok(Some((parts, _, framing))) =
            crate::upstream::parse_response_head_for_tests(&mut BytesMut::from(input))
        {
            let length = parts.headers.get(http::header::CONTENT_LENGTH);
            assert!(length.is_none() || matches!(framing, Framing::Length(_) | Framing::Empty), "{input:?}");
        }
        for framing in [Framing::Chunked, Framing::Length(7), Framing::UntilClose] {
            let mut decoder = BodyDecoder::new(framing);
            let mut buf = BytesMut::from(input);
            for _ in 0..64 {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(_)) | Ok(Decoded::Trailers(_)) => continue,
                    _ => break,
                }
            }
        }
    }

    #[test]
    fn mutated_and_random_messages_never_panic_or_pass_ambiguous() {
        let mut seeds: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.to_vec()).collect();
        seeds.extend(super::corpus::cases().into_iter().map(|case| case.wire));
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for round in 0..50_000 {
            let seed = &seeds[round % seeds.len()];
            exercise(&mutate(seed, &mut state));
            let random: Vec<u8> = (0..(next(&mut state) % 96)).map(|_| next(&mut state) as u8).collect();
            exercise(&random);
        }
    }
}
