//! An upstream response's header fields forwarded to an HTTP/1 client as they came,
//! without a header map (what HAProxy's HTX and Pingora do with a parsed head).
//!
//! Only the fields sluice reads or rewrites go into the response's `HeaderMap`: the
//! framing fields, the hop-by-hop ones, `Date` and `x-request-id`. Every other field
//! stays where it lies in the head's bytes, as a span, and the HTTP/1 writer copies it
//! out. Building the map cost ~4,800 instructions per response (a name lookup, a hash
//! and an insert per field; issue 19), this ~20 a field.
//!
//! Safe to forward unread: httparse has already refused every name that is not a
//! token and every value with a control character (CR and LF included), the same
//! rules `HeaderName` and `HeaderValue` apply, and trimmed each value; a line is copied
//! from its name to its value's end (the colon and spaces as written) and ended with
//! CRLF by sluice, so a bare-LF line ending never reaches the client.
//! Not used when a `Connection` field names other fields (they must go, and
//! `proxy::headers::remove_hop_by_hop` works on the map), nor for 1xx, nor where the
//! fields are needed whole (a cached route, an HTTP/2 client).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

#[cfg(test)]
use super::HOP_BY_HOP;
use super::{maps, tokens, FieldSpans, HTTP2_SETTINGS, KEEP_ALIVE, PROXY_CONNECTION, X_REQUEST_ID};

/// The fields of a response head that go to the client unread.
pub(crate) struct ForwardedFields {
    head: Bytes,
    /// (name at, name length, value at, value length) in `head`, in the order received.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl ForwardedFields {
    /// Appends the fields as the upstream wrote them (`name:` and the value with the
    /// spaces between), each ended by CRLF.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for &(name_at, name_len, value_at, value_len) in &self.spans {
            // `split` checked that the line runs from the name, through its colon, to
            // the value's end within `head`.
            let line = self.head.get(name_at as usize..(value_at + value_len).max(name_at + name_len + 1) as usize);
            out.extend_from_slice(line.unwrap_or_default());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Whether a field of this name is among them (tests).
    #[cfg(test)]
    pub(crate) fn contains(&self, wanted: &str) -> bool {
        self.spans.iter().any(|&(at, len, _, _)| {
            self.head.get(at as usize..(at + len) as usize).is_some_and(|n| n.eq_ignore_ascii_case(wanted.as_bytes()))
        })
    }
}

/// The name of a response field that sluice reads or rewrites on its way to an HTTP/1
/// client, None for the rest: framing, hop-by-hop (`HOP_BY_HOP`, matched here by length
/// first, as a field is classified on every response;
/// `Keep-Alive`'s timeout is also read by the pool), `Date` (added when missing),
/// `x-request-id` (replaced), and `Retry-After` and `RateLimit` (read to pace an
/// endpoint that asks for a pause, `upstream::pacing`; sent on from the map unchanged).
/// `Trailer` is end-to-end (RFC 9110 §6.6.2): forwarded.
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn read_by_sluice(name: &[u8]) -> Option<&'static HeaderName> {
    let is = |wanted: &[u8]| name.eq_ignore_ascii_case(wanted);
    let found = match name.len() {
        2 if is(b"te") => &header::TE,
        4 if is(b"date") => &header::DATE,
        7 if is(b"upgrade") => &header::UPGRADE,
        9 if is(b"ratelimit") => &RATELIMIT,
        10 if is(b"connection") => &header::CONNECTION,
        10 if is(b"keep-alive") => &KEEP_ALIVE,
        11 if is(b"retry-after") => &header::RETRY_AFTER,
        12 if is(b"x-request-id") => &X_REQUEST_ID,
        14 if is(b"content-length") => &header::CONTENT_LENGTH,
        14 if is(b"http2-settings") => &HTTP2_SETTINGS,
        16 if is(b"proxy-connection") => &PROXY_CONNECTION,
        17 if is(b"transfer-encoding") => &header::TRANSFER_ENCODING,
        _ => return None,
    };
    Some(found)
}

/// Whether a `Connection` value names only what `read_by_sluice` already covers;
/// otherwise the fields it names must be removed, which the map path does.
fn names_no_other_field(value: &[u8]) -> bool {
    tokens(value).all(|token| {
        token.eq_ignore_ascii_case(b"close")
            || token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"upgrade")
    })
}

/// Fields read by sluice in one head, at most, for `split` (more go the map's way).
const MAX_READ: usize = 16;

impl FieldSpans {
    /// Splits a response head's fields (`head` starts where the parsed buffer did): the
    /// ones sluice reads into a map, the rest kept as spans to write as they came.
    /// Gives the spans back when it cannot: a `Connection` field names other fields,
    /// a line is not `name:value` within `head`, or there are more than 64 fields or
    /// `MAX_READ` read ones; the map path then does it all (and names any error).
    pub(crate) fn split(self, head: &Bytes) -> Result<(HeaderMap, ForwardedFields), FieldSpans> {
        if self.spans.len() > 64 {
            return Err(self);
        }
        let mut read = [(0u8, &header::DATE); MAX_READ];
        let mut count = 0;
        for (i, &(name_at, name_len, value_at, value_len)) in self.spans.iter().enumerate() {
            let name_end = name_at as usize + name_len as usize;
            let (Some(name), Some(value), Some(b':')) = (
                head.get(name_at as usize..name_end),
                head.get(value_at as usize..value_at as usize + value_len as usize),
                head.get(name_end),
            ) else {
                return Err(self);
            };
            if value_len > 0 && (value_at as usize) <= name_end {
                return Err(self);
            }
            let Some(known) = read_by_sluice(name) else { continue };
            if count == MAX_READ || (known == header::CONNECTION && !names_no_other_field(value)) {
                return Err(self);
            }
            read[count] = (i as u8, known);
            count += 1;
        }
        let mut headers = maps::take(count + 8);
        let mut mask = 0u64;
        for &(i, name) in &read[..count] {
            let (_, _, value_at, value_len) = self.spans[i as usize];
            let value = head.slice(value_at as usize..value_at as usize + value_len as usize);
            // httparse allowed exactly what HeaderValue does; the map path names a failure.
            let Ok(value) = HeaderValue::from_maybe_shared(value) else {
                maps::give(headers);
                return Err(self);
            };
            headers.append(name.clone(), value);
            mask |= 1 << i;
        }
        let mut spans = self.spans;
        let mut i = 0;
        spans.retain(|_| {
            let keep = mask & (1 << i) == 0;
            i += 1;
            keep
        });
        Ok((headers, ForwardedFields { head: head.clone(), spans }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(head: &'static [u8]) -> Option<(HeaderMap, ForwardedFields)> {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        let len = match response.parse(head) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("not a complete head: {other:?}"),
        };
        let spans = FieldSpans::of(head, response.headers);
        spans.split(&Bytes::from_static(&head[..len])).ok()
    }

    #[test]
    fn read_fields_go_to_the_map_and_the_rest_are_written_as_they_came() {
        let (map, forwarded) = split(
            b"HTTP/1.1 200 OK\r\nServer: origin\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nDATE: Mon\r\n\
              Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nSet-Cookie: b=2\r\n\
              Transfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\
              HTTP2-Settings: AAA\r\n\r\n",
        )
        .expect("forwardable");
        let mut out = Vec::new();
        forwarded.write(&mut out);
        assert_eq!(out, b"Server: origin\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTrailer: x\r\n");
        for name in [
            "content-length",
            "date",
            "connection",
            "keep-alive",
            "x-request-id",
            "transfer-encoding",
            "te",
            "upgrade",
            "proxy-connection",
            "http2-settings",
        ] {
            assert!(map.contains_key(name), "{name} is read by sluice, so it is in the map");
            assert!(!forwarded.contains(name), "{name} is not forwarded unread");
        }
        assert_eq!(map.len(), 10);
    }

    #[test]
    fn every_hop_by_hop_field_is_read_by_sluice() {
        for name in HOP_BY_HOP {
            assert_eq!(read_by_sluice(name.as_str().as_bytes()), Some(name), "{name} would be forwarded unread");
            assert_eq!(read_by_sluice(name.as_str().to_uppercase().as_bytes()), Some(name), "{name}, any case");
        }
    }

    #[test]
    fn a_connection_field_naming_other_fields_needs_the_whole_map() {
        assert!(split(b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n").is_none());
        assert!(split(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive , close,\r\n\r\n").is_some());
    }
}
