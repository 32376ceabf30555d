//! Decoding a message body from a connection's read buffer: Content-Length, chunked
//! (RFC 9112 §7.1) with trailers, or until the connection closes. Pure: bytes in, frames out.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::{Framing, HeadError, MAX_HEAD_BYTES};

/// A chunk-size line longer than this is malformed (extensions included).
const MAX_CHUNK_LINE: usize = 4096;

/// What the decoder produced from the buffered bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended.
    Done,
    /// Read more bytes, then call again.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    UntilClose,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Done,
}

/// A body decoder for one request.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The connection reached end of file: the end of an `UntilClose` body, and an
    /// error (a truncated body) for every other unfinished framing.
    pub(crate) fn at_eof(&mut self) -> Result<Decoded, HeadError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(Decoded::Done)
            }
            _ => Err(HeadError::Malformed("connection closed in the middle of a body")),
        }
    }

    /// Bytes still expected for a Content-Length body (the size hint).
    pub(crate) fn remaining_length(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next frame from `buf`. Data is split off without copying.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, HeadError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split_to(buf.len()).freeze()));
                }
                State::Length(remaining) => {
                    let Some((data, left)) = take_data(buf, remaining) else { return Ok(Decoded::NeedMore) };
                    self.state = if left == 0 { State::Done } else { State::Length(left) };
                    return Ok(Decoded::Data(data));
                }
                State::ChunkSize => {
                    let Some(line_end) = find_crlf(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(malformed("chunk size line too long"))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    let size = parse_chunk_size(&buf[..line_end])?;
                    let _ = buf.split_to(line_end + 2);
                    self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                }
                State::ChunkData(remaining) => {
                    let Some((data, left)) = take_data(buf, remaining) else { return Ok(Decoded::NeedMore) };
                    self.state = if left == 0 { State::ChunkDataEnd } else { State::ChunkData(left) };
                    return Ok(Decoded::Data(data));
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => return self.decode_trailers(buf),
            }
        }
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, HeadError> {
        if buf.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if &buf[..2] == b"\r\n" {
            let _ = buf.split_to(2);
            self.state = State::Done;
            return Ok(Decoded::Done);
        }
        let mut slots = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields {
                    if let (Ok(name), Ok(value)) = (
                        http::header::HeaderName::from_bytes(field.name.as_bytes()),
                        http::header::HeaderValue::from_bytes(field.value),
                    ) {
                        trailers.append(name, value);
                    }
                }
                let _ = buf.split_to(len);
                self.state = State::Done;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err(malformed("invalid trailer section")),
        }
    }
}

/// Up to `remaining` buffered body bytes, split off without copying, and how many
/// remain after them; None when nothing is buffered.
fn take_data(buf: &mut BytesMut, remaining: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let take = remaining.min(buf.len() as u64);
    Some((buf.split_to(take as usize).freeze(), remaining - take))
}

fn malformed(why: &'static str) -> HeadError {
    HeadError::Malformed(why)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// `1a;ext=1` → 26. At most 15 hex digits, so the size fits in u64 with room to spare.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HeadError> {
    let digits_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    if digits_end == 0 || digits_end > 15 {
        return Err(malformed("invalid chunk size"));
    }
    let rest = &line[digits_end..];
    // A bare LF (or any control byte but HTAB) in an extension is refused like every
    // other bare LF: a parser that ends the line there would frame the body otherwise.
    let rest_ok = (rest.is_empty() || matches!(rest.iter().find(|b| **b != b' ' && **b != b'\t'), Some(b';')))
        && !rest.iter().any(|b| b.is_ascii_control() && *b != b'\t');
    if !rest_ok {
        return Err(malformed("invalid chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits_end]).map_err(|_| malformed("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut BodyDecoder, buf: &mut BytesMut) -> (Vec<u8>, Option<HeaderMap>, bool) {
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            match decoder.decode(buf).expect("valid") {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::Done => return (data, trailers, true),
                Decoded::NeedMore => return (data, trailers, false),
            }
        }
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let mut d = BodyDecoder::new(Framing::Length(5));
        let mut buf = BytesMut::from("helloGET /next");
        assert_eq!(drain(&mut d, &mut buf), (b"hello".to_vec(), None, true));
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from("5;name=v\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\nNEXT");
        let (data, trailers, done) = drain(&mut d, &mut buf);
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        assert!(done);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunked_bodies_arriving_byte_by_byte() {
        let wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut d = BodyDecoder::new(Framing::Chunked);
        let (mut buf, mut data, mut done) = (BytesMut::new(), Vec::new(), false);
        for byte in wire {
            buf.extend_from_slice(&[*byte]);
            let (chunk, _, finished) = drain(&mut d, &mut buf);
            data.extend(chunk);
            done |= finished;
        }
        assert_eq!(data, b"abc0123456789abcdef");
        assert!(done);
    }

    #[test]
    fn until_close_bodies_end_at_eof_and_others_are_truncated_there() {
        let mut d = BodyDecoder::new(Framing::UntilClose);
        let mut buf = BytesMut::from("all of it");
        assert_eq!(drain(&mut d, &mut buf), (b"all of it".to_vec(), None, false));
        assert_eq!(d.at_eof(), Ok(Decoded::Done));
        let mut short = BodyDecoder::new(Framing::Length(10));
        assert!(short.at_eof().is_err());
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for bad in ["zz\r\n", "5\r\nhelloXX", "ffffffffffffffffff\r\n", "5 x\r\n"] {
            let mut d = BodyDecoder::new(Framing::Chunked);
            let mut buf = BytesMut::from(bad);
            let mut result = Ok(Decoded::NeedMore);
            for _ in 0..4 {
                result = d.decode(&mut buf);
                if !matches!(result, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{bad}: {result:?}");
        }
    }
}
