//! Upstreams that close idle keep-alive connections without saying so, as Node (5 s),
//! gunicorn, uvicorn and most others do: a request never fails because of it, whatever
//! its method, with retries on or off; an announced `Keep-Alive: timeout` is honoured;
//! and an upstream that keeps closing idle connections is learned.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use support::client::{self, get, get2, send1, send2};
use support::upstream::full;
use support::{simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An HTTP/1.1 upstream that closes a connection idle for `idle` (between requests)
/// without a word, answers 200 with the method and body length, and counts.
struct IdleCloser {
    addr: SocketAddr,
    requests: watch::Receiver<usize>,
    in_flight: watch::Receiver<usize>,
    /// Connections it closed itself after `idle`, and those sluice closed first
    /// (retired before the upstream's limit, told or learned).
    closed: watch::Receiver<(usize, usize)>,
    accepted: Arc<AtomicUsize>,
}

/// Requests to this path are answered only once `hold` of them are in flight, so that
/// the pool opens that many connections.
const WARM: &str = "/warm";

impl IdleCloser {
    async fn start(idle: Duration, hold: usize, announce: Option<u64>) -> IdleCloser {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (requests_tx, requests) = watch::channel(0usize);
        let (in_flight_tx, in_flight) = watch::channel(0usize);
        let (closed_tx, closed) = watch::channel((0usize, 0usize));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let shared = Arc::new((requests_tx, in_flight_tx, closed_tx, in_flight.clone()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (requests_tx, in_flight_tx, closed_tx, in_flight) = &*shared;
                    serve(stream, idle, hold, announce, requests_tx, in_flight_tx, closed_tx, in_flight.clone()).await
                });
            }
        });
        IdleCloser { addr, requests, in_flight, closed, accepted }
    }

    async fn wait_closed_idle(&self, n: usize) {
        let mut rx = self.closed.clone();
        tokio::time::timeout(WAIT, rx.wait_for(|c| c.0 >= n)).await.expect("idle closes in time").expect("watch");
    }

    /// Waits until every connection accepted so far was closed: by the upstream when
    /// idle, or first by sluice once it has learned the upstream's limit.
    async fn wait_all_closed(&self) {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let mut rx = self.closed.clone();
        let all = rx.wait_for(|c| c.0 + c.1 >= accepted);
        tokio::time::timeout(WAIT, all).await.expect("closes in time").expect("watch");
    }

    /// Connections sluice closed before the upstream did.
    fn closed_by_peer(&self) -> usize {
        self.closed.borrow().1
    }

    fn requests(&self) -> usize {
        *self.requests.borrow()
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    mut stream: TcpStream,
    idle: Duration,
    hold: usize,
    announce: Option<u64>,
    requests: &watch::Sender<usize>,
    in_flight_tx: &watch::Sender<usize>,
    closed: &watch::Sender<(usize, usize)>,
    mut in_flight: watch::Receiver<usize>,
) {
    let mut buf = Vec::new();
    loop {
        let request = match tokio::time::timeout(idle, read_request(&mut stream, &mut buf)).await {
            Err(_) => {
                closed.send_modify(|c| c.0 += 1);
                return; // dropped: closed without a word
            }
            Ok(None) => {
                closed.send_modify(|c| c.1 += 1);
                return;
            }
            Ok(Some(request)) => request,
        };
        requests.send_modify(|n| *n += 1);
        if request.0.contains(WARM) {
            in_flight_tx.send_modify(|n| *n += 1);
            let _ = tokio::time::timeout(WAIT, in_flight.wait_for(|&n| n >= hold)).await;
        }
        let method = request.0.split(' ').next().unwrap_or("?").to_string();
        let body = format!("{method} {}", request.1);
        let keep_alive = announce.map(|n| format!("keep-alive: timeout={n}\r\n")).unwrap_or_default();
        let response = format!("HTTP/1.1 200 OK\r\n{keep_alive}content-length: {}\r\n\r\n{body}", body.len());
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request: its head as text and its body's length (Content-Length bodies only).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some((head, length))
}

/// `n` concurrent GETs of WARM, each on its own client connection: `n` upstream connections.
async fn warm(sluice: &Sluice, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let addr = sluice.addr;
            tokio::spawn(async move {
                let mut conn = client::h1(addr).await;
                send1(&mut conn, get(WARM)).await.0.status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
}

/// After every pooled connection was closed by the upstream: 6 GETs and 6 PUTs (the
/// issue's reproduction), 2 POSTs with bodies too large to be kept for a resend, half of
/// them over HTTP/2. Each gets 200, and each reaches the upstream exactly once.
async fn requests_after_idle_closes(upstream: &IdleCloser, sluice: &Sluice) {
    let before = upstream.requests();
    let mut tasks = Vec::new();
    for i in 0..14 {
        let addr = sluice.addr;
        tasks.push(tokio::spawn(async move {
            let (method, size) = match i % 7 {
                0..=2 => ("GET", 0),
                3..=5 => ("PUT", 100),
                _ => ("POST", 200 * 1024), // over request_buffer: streamed, cannot go twice
            };
            let body = full(vec![b'x'; size]);
            if i % 2 == 0 {
                let request = Request::builder().method(method).uri("/r").header("host", "localhost").body(body);
                let mut conn = client::h1(addr).await;
                send1(&mut conn, request.expect("request")).await
            } else {
                let request = Request::builder().method(method).uri("http://localhost/r").body(body);
                let mut conn = client::h2(addr).await;
                send2(&mut conn, request.expect("request")).await
            }
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let (parts, body) = task.await.expect("task");
        assert_eq!(parts.status, StatusCode::OK, "body: {}", String::from_utf8_lossy(&body));
        ok += 1;
    }
    assert_eq!(ok, 14);
    assert_eq!(upstream.requests() - before, 14, "each request reached the upstream once");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_succeeds_after_the_upstream_closed_its_idle_connections() {
    let upstream = IdleCloser::start(Duration::from_secs(1), 16, None).await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    warm(&sluice, 16).await;
    assert_eq!(*upstream.in_flight.borrow(), 16);
    upstream.wait_closed_idle(16).await;
    requests_after_idle_closes(&upstream, &sluice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_retries_off_closed_idle_connections_still_fail_no_request() {
    let upstream = IdleCloser::start(Duration::from_secs(1), 16, None).await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "[upstream.up.retry]\nretries = 0\n"));
    warm(&sluice, 16).await;
    upstream.wait_closed_idle(16).await;
    requests_after_idle_closes(&upstream, &sluice).await;
    // And once more: the new connections were closed in turn (by the upstream, or by
    // sluice first once it has learned the upstream's limit).
    upstream.wait_all_closed().await;
    requests_after_idle_closes(&upstream, &sluice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_announced_keep_alive_timeout_retires_connections_before_it() {
    // Announces 2 s and never closes; sluice stops reusing a connection after 1.5 s idle.
    let announcing = IdleCloser::start(Duration::from_secs(60), 0, Some(2)).await;
    let silent = IdleCloser::start(Duration::from_secs(60), 0, None).await;
    let config = format!(
        "[server]\nworker_threads = 1\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [[route]]\npath_prefix = \"/a\"\nupstream = \"a\"\n\n[[route]]\npath_prefix = \"/s\"\nupstream = \"s\"\n\n\
         [upstream.a]\nendpoints = [\"{}\"]\n\n[upstream.s]\nendpoints = [\"{}\"]\n",
        announcing.addr, silent.addr
    );
    let sluice = Sluice::start(&config);
    let mut conn = client::h2(sluice.addr).await;
    for path in ["/a", "/s"] {
        assert_eq!(send2(&mut conn, get2(path)).await.0.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1_700)).await; // time passing is what is tested
    for path in ["/a", "/s"] {
        assert_eq!(send2(&mut conn, get2(path)).await.0.status, StatusCode::OK);
    }
    assert_eq!(announcing.closed_by_peer(), 1, "retired after 1.5 s of an announced 2 s");
    assert_eq!(silent.closed_by_peer(), 0, "no announcement: the connection was reused");
    assert_eq!(silent.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_keeps_closing_idle_connections_is_learned() {
    // min_idle keeps a connection open, which the upstream closes after 1.5 s idle; the
    // pool's sweep finds the closes, learns, and then retires idle ones first.
    let upstream = IdleCloser::start(Duration::from_millis(1_500), 0, None).await;
    let config = support::one_worker(&simple_config(&[upstream.addr], "[upstream.up.pool]\nmin_idle = 1\n"));
    let sluice = Sluice::start(&config);
    let log = sluice.wait_for_log("they are retired before it does");
    let line = log.lines().find(|l| l.contains("they are retired before it does")).expect("the line");
    let limit: u64 = line
        .split("idle_limit_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("idle_limit_ms in the line");
    assert!((100..1_500).contains(&limit), "learned {limit} ms, before the upstream's 1,500");
    // From now on sluice closes its idle connections before the upstream does.
    let mut closed = upstream.closed_by_peer();
    let deadline = std::time::Instant::now() + WAIT;
    while closed == 0 {
        assert!(std::time::Instant::now() < deadline, "sluice never retired an idle connection first");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a counter
        closed = upstream.closed_by_peer();
    }
    let mut conn = client::h1(sluice.addr).await;
    assert_eq!(send1(&mut conn, get("/")).await.0.status, StatusCode::OK);
}
