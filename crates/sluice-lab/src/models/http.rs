//! The one handler every model serves, and the HTTP/1.1 it needs: keep-alive GETs
//! answered with a small JSON document. The same parser (httparse) and the same bytes
//! for every model, so the models differ only in how they run connections.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A client that sends nothing for this long loses its thread (Tomcat's keep-alive
/// default is 20 s); the event loops apply it too, for equal terms.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// What the request heads in a buffer ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head of this many bytes; `close` when the client asked to close after it.
    Request { len: usize, close: bool },
    /// Not a whole head yet.
    Partial,
    /// Malformed, too long, or with a body (this handler takes GETs): 400, then close.
    Bad,
}

/// Parses the first request head in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let mut close = request.version == Some(0);
            for header in request.headers.iter() {
                let value = header.value;
                if header.name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case(b"close");
                } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                    || (header.name.eq_ignore_ascii_case("content-length") && value != b"0")
                {
                    return Parsed::Bad;
                }
            }
            Parsed::Request { len, close }
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Partial,
        _ => Parsed::Bad,
    }
}

/// The response every model sends, naming the model.
pub fn response(model: &str) -> Vec<u8> {
    let body = format!("{{\"message\":\"hello\",\"model\":\"{model}\",\"items\":[1,2,3]}}");
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    [head.into_bytes(), body.into_bytes()].concat()
}

pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
pub const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves one connection on the calling thread, blocking, until the client closes,
/// asks to close, goes quiet for `IDLE_TIMEOUT`, or sends a bad request.
pub fn serve_blocking(mut stream: TcpStream, response: &[u8]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        loop {
            match parse(&buf) {
                Parsed::Request { len, close } => {
                    buf.drain(..len);
                    stream.write_all(response)?;
                    if close {
                        return Ok(());
                    }
                }
                Parsed::Partial => break,
                Parsed::Bad => return stream.write_all(BAD_REQUEST),
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves one connection as a task on an event loop: the same steps, awaiting
/// readiness instead of blocking a thread. The read chunk lives only between awaits, so
/// a waiting connection holds its (usually empty) buffer and nothing else.
pub async fn serve_async(stream: tokio::net::TcpStream, response: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    stream.set_nodelay(true)?;
    let mut stream = stream;
    let mut buf = Vec::new();
    loop {
        loop {
            match parse(&buf) {
                Parsed::Request { len, close } => {
                    buf.drain(..len);
                    stream.write_all(response).await?;
                    if close {
                        return Ok(());
                    }
                }
                Parsed::Partial => break,
                Parsed::Bad => return stream.write_all(BAD_REQUEST).await,
            }
        }
        match tokio::time::timeout(IDLE_TIMEOUT, stream.readable()).await {
            Ok(ready) => ready?,
            Err(_) => return Ok(()),
        }
        let mut chunk = [0u8; 4096];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_for_keep_alive_and_close() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Request { len: 27, close: false });
        assert_eq!(parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), Parsed::Request { len: 37, close: true });
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n"), Parsed::Request { len: 18, close: true });
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial);
        assert_eq!(parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), Parsed::Bad);
        assert_eq!(parse(b"\x00\x01 nonsense\r\n\r\n"), Parsed::Bad);
    }
}
