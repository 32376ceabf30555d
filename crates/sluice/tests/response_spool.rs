//! Big responses to clients that do not read them: past `response_buffer` the body is
//! spilled to a file, so the upstream connection goes back to the pool as soon as the
//! upstream has sent it all, and other clients of the route keep being served. The
//! issue's reproduction (200 clients × 16 MiB, a pool of 32) scaled down to keep the
//! suite fast: 48 clients × 4 MiB against a pool of 8, over HTTP/1 and HTTP/2.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use support::client::{self, get, send1};
use support::upstream::{full, Upstream};
use support::{simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIG: u64 = 4 * 1024 * 1024;
const STALLED: usize = 48;
const POOL: usize = 8;

/// `len` bytes of a pattern (byte i is i % 251), in 64 KiB frames, with or without a
/// length (without: the response is chunked).
struct PatternBody {
    sent: u64,
    len: u64,
    sized: bool,
}

fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent == self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.sent).min(64 * 1024);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.len - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// `/big` (Content-Length), `/chunked` (no length), anything else a short "ok".
async fn upstream() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let sized = match req.uri().path() {
            "/big" => true,
            "/chunked" => false,
            _ => return Response::new(full("ok")),
        };
        let body = http_body_util::BodyExt::boxed(PatternBody { sent: 0, len: BIG, sized });
        Response::new(body)
    })
    .await
}

/// One worker: connections accepted = the pool's peak. (With several, a worker at the
/// shared cap may close another's idle connection to open its own, so more are
/// accepted over time than are ever open at once; the pool unit tests cover that.)
fn config(upstream: &Upstream, extra_server: &str) -> String {
    let pool = format!("pool = {{ max_connections = {POOL} }}\nqueue_timeout = \"2s\"");
    format!(
        "[server]\nworker_threads = 1\nsend_timeout = \"60s\"\n{extra_server}\n{}",
        simple_config(&[upstream.addr], &pool).replace("[[route]]\n", "[[route]]\nresponse_buffer = \"64KiB\"\n")
    )
}

/// A connection with a small receive buffer that asks for `path` and reads nothing.
async fn stalled_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("request");
    stream
}

/// 20 ordinary requests to the same route, one after another: how many got 200.
async fn others_served(sluice: &Sluice) -> usize {
    let mut conn = client::h1(sluice.addr).await;
    let mut ok = 0;
    for _ in 0..20 {
        let (parts, _) = send1(&mut conn, get("/other")).await;
        ok += usize::from(parts.status == StatusCode::OK);
    }
    ok
}

/// Reads one whole HTTP/1.1 response off `stream` and checks its body is the pattern.
async fn read_pattern_response(stream: &mut TcpStream, chunked: bool) {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let body = loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("bytes in time").expect("read");
        assert!(n > 0, "closed early after {} bytes", raw.len());
        raw.extend_from_slice(&buf[..n]);
        let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else { continue };
        let body = &raw[head_end..];
        let done = if chunked { body.ends_with(b"\r\n0\r\n\r\n") } else { body.len() as u64 >= BIG };
        if done {
            break body.to_vec();
        }
    };
    let data = if chunked { dechunk(&body) } else { body };
    assert_eq!(data.len() as u64, BIG);
    assert!(data.iter().enumerate().all(|(i, b)| *b == pattern_byte(i as u64)), "the body came back intact, in order");
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").expect("chunk line");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).expect("hex"), 16).expect("size");
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_http1_readers_of_big_responses_do_not_pin_the_pool() {
    let upstream = upstream().await;
    let sluice = Sluice::start(&config(&upstream, ""));
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let path = if i % 2 == 0 { "/big" } else { "/chunked" };
        stalled.push(stalled_reader(sluice.addr, path).await);
    }
    assert_eq!(others_served(&sluice).await, 20, "20 of 20 other requests served");
    assert!(upstream.accepted() <= POOL, "the upstream saw {} connections", upstream.accepted());
    // Each stalled response is whole when its client finally reads (memory, then the
    // file), with its framing: Content-Length and chunked.
    let mut chunked = stalled.remove(1);
    read_pattern_response(&mut chunked, true).await;
    let mut sized = stalled.remove(0);
    read_pattern_response(&mut sized, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_http2_streams_with_a_zero_window_do_not_pin_the_pool() {
    let upstream = upstream().await;
    let sluice = Sluice::start(&config(&upstream, ""));
    // One connection, a window of 0 for every stream: not a byte of DATA can be sent.
    let tcp = TcpStream::connect(sluice.addr).await.expect("connect");
    let (mut h2, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.expect("h2 handshake");
    // The connection is driven here until the test opens the window.
    let (open_tx, open_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut connection = connection;
        tokio::select! {
            _ = &mut connection => return,
            _ = open_rx => {}
        }
        let _ = connection.set_initial_window_size(1 << 20);
        let _ = connection.await;
    });
    let mut responses = Vec::new();
    for _ in 0..STALLED {
        h2 = h2.ready().await.expect("ready");
        let request = Request::get("http://x/big").body(()).expect("request");
        let (response, _) = h2.send_request(request, true).expect("send");
        responses.push(response);
    }
    let mut heads = Vec::new();
    for response in responses {
        heads.push(tokio::time::timeout(WAIT, response).await.expect("a head in time").expect("response"));
    }
    assert_eq!(others_served(&sluice).await, 20, "20 of 20 other requests served");
    assert!(upstream.accepted() <= POOL, "the upstream saw {} connections", upstream.accepted());
    // Opening the window now gets one stream's whole body, from memory and the file
    // (the others are reset first, so that they take none of the connection's window).
    let mut body = heads.remove(0).into_body();
    drop(heads);
    open_tx.send(()).expect("the connection task");
    let mut received = 0u64;
    let mut intact = true;
    while let Some(data) = tokio::time::timeout(WAIT, body.data()).await.expect("data in time") {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
        intact &= data.iter().enumerate().all(|(i, b)| *b == pattern_byte(received + i as u64));
        received += data.len() as u64;
    }
    assert_eq!(received, BIG);
    assert!(intact, "the body came back intact, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_responses_stream_holds_the_connection_as_before() {
    let upstream = upstream().await;
    let stream = config(&upstream, "").replace("[[route]]\n", "[[route]]\nlarge_responses = \"stream\"\n");
    let sluice = Sluice::start(&stream.replace("queue_timeout = \"2s\"", "queue_timeout = \"200ms\""));
    let mut stalled = Vec::new();
    for _ in 0..POOL * 2 {
        stalled.push(stalled_reader(sluice.addr, "/big").await);
    }
    // The stalled requests hold the whole pool before the others come (under a loaded
    // suite they could otherwise still be on their way).
    upstream.wait_accepted(POOL).await;
    // Every pooled connection is held by a reader that takes nothing: the others wait
    // out queue_timeout (the trade-off `stream` makes for using no disk).
    let served = others_served(&sluice).await;
    assert!(served < 20, "{served} of 20 served while the pool was pinned");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_spool_bound_refuses_new_spooling_and_fails_no_request() {
    let upstream = upstream().await;
    let small = config(&upstream, "spool_max_total = \"8MiB\"\n[admin]\naddress = \"127.0.0.1:0\"\n");
    let sluice = Sluice::start(&small);
    // As many stalled readers as pooled connections: those the bound refuses to spool
    // stream (each holding its connection), none fails.
    let mut stalled = Vec::new();
    for _ in 0..POOL {
        stalled.push(stalled_reader(sluice.addr, "/big").await);
    }
    const BOUND: u64 = 8 * 1024 * 1024;
    let reached = wait_spool_bytes(&sluice, |n| n >= BOUND).await;
    assert!(reached <= BOUND + POOL as u64 * 256 * 1024, "{reached} bytes spooled, bound 8 MiB");
    for mut stream in stalled {
        read_pattern_response(&mut stream, false).await;
    }
    wait_spool_bytes(&sluice, |n| n == 0).await; // spill files go with their responses
}

/// Polls /metrics until `sluice_response_spool_bytes` meets `done`; returns it.
async fn wait_spool_bytes(sluice: &Sluice, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = spool_bytes(sluice).await;
        if done(now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "spool bytes stayed at {now}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // polling a gauge
    }
}

/// `sluice_response_spool_bytes` from the admin listener's /metrics.
async fn spool_bytes(sluice: &Sluice) -> u64 {
    let admin = sluice.admin.expect("admin listener");
    let mut conn = client::h1(admin).await;
    let (_, body) = send1(&mut conn, get("/metrics")).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_response_spool_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("sluice_response_spool_bytes in /metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_never_opens_its_window_is_cut_at_send_timeout() {
    let upstream = upstream().await;
    let sluice = Sluice::start(&config(&upstream, "").replace("send_timeout = \"60s\"", "send_timeout = \"1s\""));
    let tcp = TcpStream::connect(sluice.addr).await.expect("connect");
    let (h2, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let (response, _) = h2.send_request(Request::get("http://x/big").body(()).expect("request"), true).expect("send");
    let _head = tokio::time::timeout(WAIT, response).await.expect("a head in time").expect("response");
    // Not a byte of DATA can go: the stream is stuck in hyper, so sluice closes the
    // connection (before, it stayed open, holding the stream's buffers, for good).
    let ended = tokio::time::timeout(WAIT, connection).await;
    assert!(ended.is_ok(), "the connection was closed by sluice");
    sluice.wait_for_log("took no response bytes for send_timeout");
}
