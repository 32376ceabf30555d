//! Upstream connection pooling, observed from the upstream: accepted connections.

mod support;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client::{self, get, send1};
use support::upstream::{full, Upstream};
use support::{one_worker, simple_config, Sluice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_connections_are_reused() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = sluice.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = client::h1(addr).await;
            for _ in 0..50 {
                let (parts, body) = send1(&mut conn, get("/x")).await;
                assert_eq!(parts.status, StatusCode::OK);
                assert_eq!(body, "hello GET /x");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let accepted = upstream.accepted();
    assert!((1..=8).contains(&accepted), "400 requests over 8 client connections took {accepted} upstream connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn min_idle_connections_are_opened_before_any_request() {
    let upstream = Upstream::hello().await;
    // min_idle is per worker (each keeps its own warm connections).
    let _sluice = Sluice::start(&one_worker(&simple_config(&[upstream.addr], "pool = { min_idle = 3 }")));
    upstream.wait_accepted(3).await;
    assert_eq!(upstream.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_retire_after_max_requests() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "pool = { max_requests = 2 }"));
    let mut conn = client::h1(sluice.addr).await;
    for _ in 0..6 {
        let (parts, _) = send1(&mut conn, get("/")).await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    assert_eq!(upstream.accepted(), 3, "6 sequential requests, 2 per connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_upstream_connections_close_after_idle_timeout_and_reopen() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "pool = { idle_timeout = \"200ms\" }"));
    let mut conn = client::h1(sluice.addr).await;
    send1(&mut conn, get("/")).await;
    assert_eq!(upstream.accepted(), 1);
    let idle_from = std::time::Instant::now();
    upstream.wait_closed(1).await;
    assert!(idle_from.elapsed() >= std::time::Duration::from_millis(200), "closed before idle_timeout");
    let (parts, _) = send1(&mut conn, get("/")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(upstream.accepted(), 2, "a new connection replaced the expired one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_upstream_closed_is_not_used_for_a_post() {
    // A raw upstream that answers one request per connection, then closes it without
    // saying so (no `Connection: close`), and reports each close.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(Notify::new());
    let closed_tx = Arc::clone(&closed);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let closed = Arc::clone(&closed_tx);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&seen).to_string();
                let body = if head.starts_with("POST") { "posted" } else { "got" };
                let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
                drop(stream);
                closed.notify_one();
            });
        }
    });
    let sluice = Sluice::start(&simple_config(&[addr], ""));
    let mut conn = client::h1(sluice.addr).await;
    let (parts, body) = send1(&mut conn, get("/")).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"got"[..]));
    closed.notified().await;
    for _ in 0..3 {
        // A POST must not be sent on the closed connection: it is checked before use.
        let post = Request::post("/").header("host", "localhost").body(full("payload")).expect("request");
        let (parts, body) = send1(&mut conn, post).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"posted"[..]), "the stale connection was detected");
        closed.notified().await;
        // A GET may be sent and, when the closed connection fails it, resent on a fresh one.
        let (parts, body) = send1(&mut conn, get("/")).await;
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, &b"got"[..]),
            "resent after the stale connection failed"
        );
        closed.notified().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_endpoint_is_skipped_for_idempotent_requests() {
    let live = Upstream::hello().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr") // closed when `l` drops: connects are refused
    };
    let sluice = Sluice::start(&simple_config(&[dead, live.addr], ""));
    for _ in 0..6 {
        let (parts, body) = client::get_once(sluice.addr, "/ok").await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn at_max_connections_a_request_waits_then_gets_503() {
    let release = Arc::new(Notify::new());
    let held = Arc::clone(&release);
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let held = Arc::clone(&held);
        async move {
            if req.uri().path() == "/hold" {
                held.notified().await;
            }
            Response::new(full("done"))
        }
    })
    .await;
    let sluice =
        Sluice::start(&simple_config(&[upstream.addr], "pool = { max_connections = 1 }\nqueue_timeout = \"300ms\""));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { client::get_once(addr, "/hold").await });
    upstream.wait_accepted(1).await;
    let (parts, body) = client::get_once(sluice.addr, "/other").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["retry-after"], "1");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("busy"), "{text}");
    assert!(!text.contains(&upstream.addr.to_string()), "no internal address reaches the client: {text}");
    let id = parts.headers["x-request-id"].to_str().expect("id").to_string();
    let log = sluice.wait_for_log(&id);
    let line = log.lines().find(|l| l.contains(&id)).expect("line");
    assert!(
        line.contains("max_connections") && line.contains(&upstream.addr.to_string()),
        "the log has the detail: {line}"
    );
    release.notify_one();
    assert_eq!(holder.await.expect("holder").0.status, StatusCode::OK);
}
