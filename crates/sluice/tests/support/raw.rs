//! A recording upstream on 127.0.0.1:0 that speaks raw bytes: it keeps every request
//! exactly as sluice forwarded it (head and body) and answers with bytes the test
//! chooses, however broken. For tests of what crosses the wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the upstream does after reading a request.
pub enum Answer {
    /// Write these bytes and keep the connection for the next request.
    Keep(Vec<u8>),
    /// Write these bytes and close.
    Close(Vec<u8>),
}

type Responder = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// A running recording upstream.
pub struct RawUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    accepted: watch::Receiver<usize>,
    received: watch::Receiver<usize>,
}

impl RawUpstream {
    /// Answers each request with `respond(raw request text)`.
    pub async fn start(respond: impl Fn(&str) -> Answer + Send + Sync + 'static) -> RawUpstream {
        let respond: Responder = Arc::new(respond);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (accepted_tx, accepted) = watch::channel(0usize);
        let (received_tx, received) = watch::channel(0usize);
        let received_tx = Arc::new(received_tx);
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted_tx.send_modify(|n| *n += 1);
                let (respond, log, received_tx) = (Arc::clone(&respond), Arc::clone(&log), Arc::clone(&received_tx));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut stream, &mut buf).await else { return };
                        log.lock().expect("log").push(request.clone());
                        received_tx.send_modify(|n| *n += 1);
                        match respond(&request) {
                            Answer::Keep(bytes) => {
                                if stream.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Answer::Close(bytes) => {
                                let _ = stream.write_all(&bytes).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        RawUpstream { addr, requests, accepted, received }
    }

    /// Answers every request `200 OK` with body `ok`, keeping the connection.
    pub async fn ok() -> RawUpstream {
        RawUpstream::start(|_| Answer::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())).await
    }

    /// Every request received so far, as sent.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }

    pub fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits until `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.received.clone();
        tokio::time::timeout(super::WAIT, rx.wait_for(|&r| r >= n)).await.expect("requests arrive").expect("watch");
    }
}

/// Reads one request (head, then a Content-Length or chunked body) off `stream`.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header =
        |name: &str| head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()));
    let total = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // The last chunk ("0" at a line start), then trailers up to an empty line.
        loop {
            let body = &buf[head_end..];
            let last = if body.starts_with(b"0\r\n") { Some(0) } else { find(body, b"\r\n0\r\n").map(|at| at + 2) };
            if let Some(end) = last.and_then(|at| find(&body[at..], b"\r\n\r\n").map(|e| at + e + 4)) {
                break head_end + end;
            }
            read_more(stream, buf).await?;
        }
    } else {
        head_end + header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
    };
    while buf.len() < total {
        read_more(stream, buf).await?;
    }
    let request: Vec<u8> = buf.drain(..total).collect();
    Some(String::from_utf8_lossy(&request).into_owned())
}

async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes to `addr` and reads until the peer closes (or `WAIT` passes).
pub async fn roundtrip(addr: SocketAddr, wire: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(wire).await.expect("write");
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(super::WAIT, stream.read_to_end(&mut seen)).await.expect("closed in time");
    String::from_utf8_lossy(&seen).into_owned()
}
