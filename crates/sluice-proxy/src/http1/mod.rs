//! HTTP/1.1 wire format shared by sluice's server connections (`server::h1`) and its
//! upstream client (`upstream::h1`): body framing and decoding, chunk encoding, limits.

pub(crate) mod body;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// A message head larger than this is rejected (431 for requests, 502 for responses).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

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
}

/// The chunk-size line for a chunk of `len` bytes.
pub(crate) fn chunk_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// Trailer fields after the last chunk, then the end of the body.
pub(crate) fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Header fields per message at most; more is a 431 (requests) or 502 (responses).
pub(crate) const MAX_HEADERS: usize = 128;

/// Where each header field of a parsed head lies in the head's bytes, so that the
/// values can share those bytes instead of being copied one allocation each.
pub(crate) struct FieldSpans {
    spans: [(u32, u32, u32, u32); MAX_HEADERS],
    len: usize,
}

impl FieldSpans {
    /// Records the fields httparse found in `base` (the buffer it parsed).
    pub(crate) fn of(base: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let mut spans = [(0, 0, 0, 0); MAX_HEADERS];
        let start = base.as_ptr() as usize;
        for (span, field) in spans.iter_mut().zip(fields) {
            let name = field.name.as_ptr() as usize - start;
            let value = field.value.as_ptr() as usize - start;
            *span = (name as u32, field.name.len() as u32, value as u32, field.value.len() as u32);
        }
        FieldSpans { spans, len: fields.len().min(MAX_HEADERS) }
    }

    /// The header map, its values slices of `head` (which starts where `base` did).
    pub(crate) fn header_map(&self, head: &Bytes) -> Result<HeaderMap, HeadError> {
        let mut headers = HeaderMap::with_capacity(self.len + 6);
        for &(name_at, name_len, value_at, value_len) in &self.spans[..self.len] {
            let name = head.get(name_at as usize..(name_at + name_len) as usize).unwrap_or_default();
            let name = HeaderName::from_bytes(name).map_err(|_| HeadError::Malformed("invalid header name"))?;
            let value = head.slice(value_at as usize..(value_at + value_len) as usize);
            let value =
                HeaderValue::from_maybe_shared(value).map_err(|_| HeadError::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}
