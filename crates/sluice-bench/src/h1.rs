//! The HTTP/1.1 client connection: writes a pre-encoded request, reads the response head
//! (httparse) and skips its body by its framing, counting the body's bytes.
//!
//! Written by hand rather than with hyper's client because the client here is the thing
//! being measured against wrk: one write and (usually) one read per request, in the task
//! that asked, with no channel to a connection task and no per-request allocation.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect::Stream;
use crate::failure::Failure;
use crate::plan::RequestSpec;

/// Per connection, as wrk (pages are touched only as far as responses fill them).
const READ_BUFFER: usize = 8 * 1024;
/// A response head larger than this is refused as a protocol error.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// What a request got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_bytes: u64,
    /// The connection may carry another request.
    pub reusable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

pub struct H1Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl H1Conn {
    pub fn new(stream: Stream) -> H1Conn {
        H1Conn { stream, buf: vec![0; READ_BUFFER], start: 0, end: 0 }
    }

    /// Sends one request and reads its whole response.
    pub async fn exchange(&mut self, request: &RequestSpec) -> Result<Answer, Failure> {
        self.stream.write_all(&request.http1).await.map_err(|e| Failure::from_io(&e))?;
        if matches!(self.stream, Stream::Tls(_)) {
            self.stream.flush().await.map_err(|e| Failure::from_io(&e))?;
        }
        loop {
            let (status, framing, reusable) = self.read_head(request.is_head).await?;
            if (100..200).contains(&status) && status != 101 {
                continue; // 100 Continue and other interim responses precede the real one
            }
            let body_bytes = match framing {
                Framing::Empty => 0,
                Framing::Length(n) => {
                    self.skip(n).await?;
                    n
                }
                Framing::Chunked => self.skip_chunked().await?,
                Framing::UntilClose => self.skip_until_close().await?,
            };
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
            let reusable = reusable && framing != Framing::UntilClose && status != 101;
            return Ok(Answer { status, body_bytes, reusable });
        }
    }

    async fn read_head(&mut self, is_head: bool) -> Result<(u16, Framing, bool), Failure> {
        loop {
            match parse_head(&self.buf[self.start..self.end], is_head)? {
                Some((length, status, framing, reusable)) => {
                    self.start += length;
                    return Ok((status, framing, reusable));
                }
                None => self.read_more(MAX_HEAD).await?,
            }
        }
    }

    /// Reads more bytes after those buffered; `limit` caps how much one item may buffer.
    async fn read_more(&mut self, limit: usize) -> Result<(), Failure> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.buf.len() < limit {
                self.buf.resize((self.buf.len() * 2).min(limit), 0);
            } else {
                return Err(Failure::Protocol);
            }
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(Failure::Closed),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(Failure::from_io(&e)),
        }
    }

    /// Skips `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let available = (self.end - self.start) as u64;
            let taken = available.min(n);
            self.start += taken as usize;
            n -= taken;
            if n == 0 {
                return Ok(());
            }
            (self.start, self.end) = (0, 0);
            self.read_more(READ_BUFFER).await?;
        }
    }

    async fn skip_chunked(&mut self) -> Result<u64, Failure> {
        let mut total = 0u64;
        loop {
            match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    self.start += used;
                    self.skip_trailers().await?;
                    return Ok(total);
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    self.start += used;
                    self.skip(size).await?;
                    self.expect_crlf().await?;
                    total += size;
                }
                Ok(httparse::Status::Partial) => self.read_more(READ_BUFFER).await?,
                Err(_) => return Err(Failure::Protocol),
            }
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), Failure> {
        while self.end - self.start < 2 {
            self.read_more(READ_BUFFER).await?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(Failure::Protocol);
        }
        self.start += 2;
        Ok(())
    }

    /// Skips trailer fields up to and including the empty line that ends the message.
    async fn skip_trailers(&mut self) -> Result<(), Failure> {
        loop {
            let window = &self.buf[self.start..self.end];
            match window.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(line) => self.start += line + 2,
                None => self.read_more(MAX_HEAD).await?,
            }
        }
    }

    async fn skip_until_close(&mut self) -> Result<u64, Failure> {
        let mut total = (self.end - self.start) as u64;
        (self.start, self.end) = (0, 0);
        loop {
            match self.stream.read(&mut self.buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(Failure::from_io(&e)),
            }
        }
    }
}

/// Parses a response head: (head length, status, framing, reusable), or None if incomplete.
/// A plain function so that the header slots never live across an await: inside the
/// async reader they made its future 2 KiB larger, copied on every request.
fn parse_head(buf: &[u8], is_head: bool) -> Result<Option<(usize, u16, Framing, bool)>, Failure> {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut headers) {
        Ok(httparse::Status::Complete(length)) => {
            let status = response.code.unwrap_or(0);
            let http10 = response.version == Some(0);
            let (framing, reusable) = framing(status, is_head, http10, response.headers)?;
            Ok(Some((length, status, framing, reusable)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Failure::Protocol),
    }
}

/// The body's framing (RFC 9112 §6.3) and whether the connection stays open.
fn framing(status: u16, is_head: bool, http10: bool, headers: &[httparse::Header]) -> Result<(Framing, bool), Failure> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match (value, length) {
                (None, _) => return Err(Failure::Protocol),
                (Some(v), Some(seen)) if v != seen => return Err(Failure::Protocol),
                (v, _) => length = v,
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = last_token(header.value).eq_ignore_ascii_case(b"chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let reusable = !close && (!http10 || keep_alive);
    let framing = if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((framing, reusable))
}

fn last_token(value: &[u8]) -> &[u8] {
    value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header { name, value: value.as_bytes() }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let length = [header("Content-Length", "5")];
        assert_eq!(framing(200, false, false, &length), Ok((Framing::Length(5), true)));
        assert_eq!(framing(200, true, false, &length), Ok((Framing::Empty, true)), "HEAD");
        assert_eq!(framing(304, false, false, &length), Ok((Framing::Empty, true)));
        let chunked = [header("transfer-encoding", "gzip, chunked"), header("Content-Length", "5")];
        assert_eq!(framing(200, false, false, &chunked), Ok((Framing::Chunked, true)));
        assert_eq!(framing(200, false, false, &[header("connection", "close")]), Ok((Framing::UntilClose, false)));
        assert_eq!(framing(200, false, true, &length), Ok((Framing::Length(5), false)), "HTTP/1.0");
        assert_eq!(
            framing(200, false, true, &[length[0], header("Connection", "Keep-Alive")]),
            Ok((Framing::Length(5), true))
        );
        let conflicting = [header("content-length", "5"), header("content-length", "6")];
        assert_eq!(framing(200, false, false, &conflicting), Err(Failure::Protocol));
        assert_eq!(framing(200, false, false, &[header("content-length", "-1")]), Err(Failure::Protocol));
    }
}
