//! Writing an HTTP/1.1 response head and choosing how its body is framed.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, CONTENT_LENGTH, DATE};
use http::{StatusCode, Version};
use http_body::SizeHint;

use crate::proxy::WireFields;

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// No body may be sent (HEAD, 1xx, 204, 304); length headers pass unchanged.
    NoBody,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and unknown length: the body ends when the connection closes.
    UntilClose,
}

/// Picks the framing: a Content-Length from the upstream is kept (hyper has enforced
/// it on the upstream body), an exact size hint becomes one, else chunked.
pub(crate) fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    hint: &SizeHint,
    head_request: bool,
    client: Version,
) -> ResponseFraming {
    if crate::http1::response_has_no_body(status, head_request) {
        return ResponseFraming::NoBody;
    }
    if let Some(n) = crate::http1::checked_length(headers) {
        return ResponseFraming::Length(n);
    }
    match hint.exact() {
        Some(n) => ResponseFraming::Length(n),
        None if client == Version::HTTP_11 => ResponseFraming::Chunked,
        None => ResponseFraming::UntilClose,
    }
}

/// What the `Connection` header of the response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionHeader {
    /// HTTP/1.1 keep-alive: nothing to say.
    Omit,
    Close,
    /// An HTTP/1.0 client that asked for keep-alive.
    KeepAlive,
}

/// Appends the status line and headers, adding framing, Connection and Date headers.
pub(crate) fn head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    wire_fields: Option<&WireFields>,
    framing: ResponseFraming,
    connection: ConnectionHeader,
) {
    status_line(out, status);
    if let Some(fields) = wire_fields {
        fields.write(out);
    }
    crate::http1::write_fields(out, headers);
    match framing {
        ResponseFraming::Length(n) if !headers.contains_key(CONTENT_LENGTH) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    match connection {
        ConnectionHeader::Omit => {}
        ConnectionHeader::Close => out.extend_from_slice(b"connection: close\r\n"),
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
    }
    // A stored response's fields always include its Date.
    if !wire_fields.is_some_and(WireFields::has_date) && !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date.as_bytes()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an interim (1xx) response head: status line and fields, nothing added.
pub(crate) fn interim(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    status_line(out, status);
    crate::http1::write_fields(out, headers);
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without a temporary allocation.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The current IMF-fixdate as a header value (HTTP/2 responses; a clone is a reference
/// count).
pub(crate) fn date_value() -> http::HeaderValue {
    with_date(http::HeaderValue::clone)
}

/// Calls `f` with the current IMF-fixdate, formatted at most once a second per worker
/// thread.
fn with_date<R>(f: impl FnOnce(&http::HeaderValue) -> R) -> R {
    thread_local! {
        static CACHE: RefCell<(u64, http::HeaderValue)> =
            const { RefCell::new((u64::MAX, http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            if let Ok(date) = http::HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
                *cache = (secs, date);
            }
        }
        f(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_choices() {
        let none = HeaderMap::new();
        let mut with_length = HeaderMap::new();
        with_length.insert(CONTENT_LENGTH, "12".parse().expect("value"));
        let exact = SizeHint::with_exact(3);
        let unknown = SizeHint::new();
        assert_eq!(
            framing(StatusCode::OK, &with_length, &unknown, false, Version::HTTP_11),
            ResponseFraming::Length(12)
        );
        assert_eq!(framing(StatusCode::OK, &none, &exact, false, Version::HTTP_11), ResponseFraming::Length(3));
        assert_eq!(framing(StatusCode::OK, &none, &unknown, false, Version::HTTP_11), ResponseFraming::Chunked);
        assert_eq!(framing(StatusCode::OK, &none, &unknown, false, Version::HTTP_10), ResponseFraming::UntilClose);
        assert_eq!(framing(StatusCode::OK, &with_length, &unknown, true, Version::HTTP_11), ResponseFraming::NoBody);
        assert_eq!(
            framing(StatusCode::NOT_MODIFIED, &none, &unknown, false, Version::HTTP_11),
            ResponseFraming::NoBody
        );
    }

    #[test]
    fn decimal_lengths() {
        for n in [0, 7, 10, 16384, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn head_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().expect("value"));
        headers.insert(DATE, "Sat, 28 Nov 2026 00:00:00 GMT".parse().expect("value"));
        let mut out = Vec::new();
        head(&mut out, StatusCode::NOT_FOUND, &headers, None, ResponseFraming::Length(5), ConnectionHeader::Close);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "HTTP/1.1 404 Not Found\r\nx-a: 1\r\ndate: Sat, 28 Nov 2026 00:00:00 GMT\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }
}
