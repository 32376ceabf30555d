//! HTTP/1.1 wire format shared by sluice's server connections (`server::h1`) and its
//! upstream client (`upstream::h1`): body framing and decoding, chunk encoding, limits.

pub(crate) mod body;

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
