//! Requests beyond a pool's capacity wait in line, first come first served, for at most
//! the group's queue_timeout; then 503 with Retry-After, named `queue` in the record and
//! the metrics. HTTP/1 and HTTP/2 clients, HTTP/1 and HTTP/2 upstreams.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::client::{self, send2};
use support::upstream::{full, TestBody, Upstream};
use support::{one_worker, with_access_log, Sluice};
use tokio::sync::Notify;

/// What the upstream saw, in order, and the gate `/hold` waits at.
#[derive(Default)]
struct Seen {
    paths: Mutex<Vec<String>>,
    gate: Notify,
}

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("lock").clone()
    }
}

async fn handle(seen: Arc<Seen>, request: Request<Incoming>) -> Response<TestBody> {
    let path = request.uri().path().to_string();
    seen.paths.lock().expect("lock").push(path.clone());
    if path == "/hold" {
        seen.gate.notified().await;
    }
    Response::new(full(path))
}

/// An HTTP/1.1 (or h2c) upstream that records each request's path as it arrives.
async fn recording_upstream() -> (Upstream, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    let upstream = Upstream::start(move |request| handle(Arc::clone(&shared), request)).await;
    (upstream, seen)
}

/// An HTTP/2-only upstream that takes one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS = 1).
async fn one_stream_h2_upstream() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&shared);
            let service = service_fn(move |request| {
                let seen = Arc::clone(&seen);
                async move { Ok::<_, Infallible>(handle(seen, request).await) }
            });
            tokio::spawn(async move {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.max_concurrent_streams(1);
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

fn config(endpoint: SocketAddr, extra: &str) -> String {
    with_access_log(&one_worker(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"up\"\n\n\
         [upstream.up]\nendpoints = [\"{endpoint}\"]\npool = {{ max_connections = 1 }}\n{extra}\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n"
    )))
}

/// The value of a metric line that starts with `series`.
async fn metric(sluice: &Sluice, series: &str) -> f64 {
    let page = support::metrics(sluice).await;
    let line = page.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in {page}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
}

/// Polls (bounded) until `series` reads `value`.
async fn wait_metric(sluice: &Sluice, series: &str, value: f64) {
    let deadline = Instant::now() + support::WAIT;
    while metric(sluice, series).await != value {
        assert!(Instant::now() < deadline, "{series} never reached {value}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls (bounded) until the upstream has seen `n` requests.
async fn wait_seen(seen: &Seen, n: usize) {
    let deadline = Instant::now() + support::WAIT;
    while seen.paths().len() < n {
        assert!(Instant::now() < deadline, "the upstream saw {:?}", seen.paths());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the test's clients reach sluice.
#[derive(Clone, Copy)]
enum Client {
    Http1,
    /// Each request on its own HTTP/2 connection.
    Http2,
}

async fn get(client: Client, addr: SocketAddr, path: &str) -> (http::response::Parts, bytes::Bytes) {
    match client {
        Client::Http1 => client::get_once(addr, path).await,
        Client::Http2 => send2(&mut client::h2(addr).await, client::get2(path)).await,
    }
}

/// One request holds the only connection (or stream slot); five more come one after
/// another, each waiting in line before the next arrives; released, they reach the
/// upstream in the order they came.
async fn served_in_arrival_order(client: Client, upstream: SocketAddr, seen: Arc<Seen>) {
    let sluice = Sluice::start(&config(upstream, ""));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { get(client, addr, "/hold").await.0.status });
    wait_seen(&seen, 1).await;
    let waiting = "sluice_upstream_queue_waiting{upstream=\"up\"";
    let mut line = Vec::new();
    for i in 0..5 {
        line.push(tokio::spawn(async move { get(client, addr, &format!("/q/{i}")).await }));
        wait_metric(&sluice, waiting, f64::from(i + 1)).await;
    }
    seen.gate.notify_one();
    assert_eq!(holder.await.expect("holder"), StatusCode::OK);
    for (i, request) in line.into_iter().enumerate() {
        let (parts, body) = request.await.expect("request");
        assert_eq!((parts.status, body), (StatusCode::OK, bytes::Bytes::from(format!("/q/{i}"))));
    }
    assert_eq!(seen.paths(), ["/hold", "/q/0", "/q/1", "/q/2", "/q/3", "/q/4"], "first come, first served");
    assert_eq!(metric(&sluice, "sluice_upstream_queued_total{upstream=\"up\"").await, 5.0);
    assert_eq!(metric(&sluice, "sluice_upstream_queue_timeouts_total{upstream=\"up\"").await, 0.0);
    assert_eq!(metric(&sluice, waiting).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_waiting_for_a_connection_are_served_in_the_order_they_came() {
    let (upstream, seen) = recording_upstream().await;
    served_in_arrival_order(Client::Http1, upstream.addr, seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_wait_in_the_same_line() {
    let (upstream, seen) = recording_upstream().await;
    served_in_arrival_order(Client::Http2, upstream.addr, seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_an_http2_upstreams_stream_slot_are_served_in_the_order_they_came() {
    let (upstream, seen) = one_stream_h2_upstream().await;
    let sluice = Sluice::start(&config(upstream, "protocol = \"http2\""));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { client::get_once(addr, "/hold").await.0.status });
    wait_seen(&seen, 1).await;
    let mut line = Vec::new();
    for i in 0..4 {
        line.push(tokio::spawn(async move { client::get_once(addr, &format!("/q/{i}")).await.0.status }));
        wait_metric(&sluice, "sluice_upstream_queue_waiting{upstream=\"up\"", f64::from(i + 1)).await;
    }
    seen.gate.notify_one();
    assert_eq!(holder.await.expect("holder"), StatusCode::OK);
    for request in line {
        assert_eq!(request.await.expect("request"), StatusCode::OK);
    }
    assert_eq!(seen.paths(), ["/hold", "/q/0", "/q/1", "/q/2", "/q/3"], "first come, first served");
}

/// A request that waited queue_timeout gets 503 with Retry-After at once, never
/// reaches the upstream, and its record and the metrics name the `queue` limit.
async fn refused_after_queue_timeout(client: Client) {
    let (upstream, seen) = recording_upstream().await;
    let sluice = Sluice::start(&config(upstream.addr, "queue_timeout = \"300ms\""));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { get(client, addr, "/hold").await.0.status });
    wait_seen(&seen, 1).await;
    let started = Instant::now();
    let (parts, body) = get(client, sluice.addr, "/late").await;
    let waited = started.elapsed();
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(parts.headers["retry-after"], "1");
    assert!(waited >= Duration::from_millis(300), "it waited its queue_timeout: {waited:?}");
    assert!(waited < Duration::from_secs(3), "and not much longer: {waited:?}");
    let id = parts.headers["x-request-id"].to_str().expect("id").to_string();
    let record = sluice.record(&id);
    assert_eq!((record["limit"].as_str(), record["error"].as_str()), (Some("queue"), Some("upstream_queue_timeout")));
    seen.gate.notify_one();
    assert_eq!(holder.await.expect("holder"), StatusCode::OK);
    assert_eq!(seen.paths(), ["/hold"], "the refused request never reached the upstream");
    assert_eq!(metric(&sluice, "sluice_requests_shed_total{limit=\"queue\"}").await, 1.0);
    assert_eq!(metric(&sluice, "sluice_upstream_queue_timeouts_total{upstream=\"up\"").await, 1.0);
    let waited_total = metric(&sluice, "sluice_upstream_queue_wait_seconds_total{upstream=\"up\"").await;
    assert!((0.3..3.0).contains(&waited_total), "{waited_total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_that_waited_queue_timeout_gets_503_with_retry_after() {
    refused_after_queue_timeout(Client::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_that_waited_queue_timeout_gets_503_with_retry_after() {
    refused_after_queue_timeout(Client::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_queue_timeout_a_request_beyond_capacity_is_refused_at_once() {
    let (upstream, seen) = recording_upstream().await;
    let sluice = Sluice::start(&config(upstream.addr, "queue_timeout = \"0ms\""));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { client::get_once(addr, "/hold").await.0.status });
    wait_seen(&seen, 1).await;
    let started = Instant::now();
    let (parts, _) = client::get_once(sluice.addr, "/late").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(250), "refused at once: {:?}", started.elapsed());
    seen.gate.notify_one();
    assert_eq!(holder.await.expect("holder"), StatusCode::OK);
}
