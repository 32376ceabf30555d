//! Cache edge cases met with real traffic (issue 18 §3): HEADs for bodies that will not
//! be stored, an `Age` list, and what the origin sees.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::Sluice;

/// One cached route to `upstream`, with `cache` added to the `[cache]` table.
fn cached(upstream: &Upstream, cache: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"up\"\ncache = true\n\n\
         [upstream.up]\nendpoints = [\"{}\"]\n\n[cache]\n{cache}\n",
        upstream.addr
    )
}

/// A body that never ends: 16 KiB every 5 ms, counting what it sent.
struct Trickle {
    sent: Arc<AtomicU64>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
        }
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(5))));
        self.sent.fetch_add(16 * 1024, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))))
    }
}

/// `/nostore`: a `no-store` response whose body never ends; `/aged`: `max-age=3600`
/// with `Age: 7200, 0` (already stale); anything else: "ok". Counts `/aged` fetches.
async fn origin(sent: Arc<AtomicU64>) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| {
        let sent = Arc::clone(&sent);
        async move {
            if req.uri().path() == "/aged" {
                sent.fetch_add(1, Ordering::Relaxed);
                return Response::builder()
                    .header("cache-control", "max-age=3600")
                    .header("age", "7200, 0")
                    .body(full("aged"))
                    .expect("response");
            }
            if req.uri().path() == "/nostore" {
                let body = http_body_util::BodyExt::boxed(Trickle { sent, pause: None });
                return Response::builder().header("cache-control", "no-store").body(body).expect("response");
            }
            Response::new(full("ok"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_for_a_body_that_will_not_be_stored_frees_its_upstream_connection() {
    let sent = Arc::new(AtomicU64::new(0));
    let upstream = origin(Arc::clone(&sent)).await;
    let config = format!(
        "[server]\nworker_threads = 1\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [[route]]\npath_prefix = \"/nostore\"\nupstream = \"up\"\ncache = true\n\n\
         [[route]]\nupstream = \"up\"\n\n\
         [upstream.up]\nendpoints = [\"{}\"]\npool = {{ max_connections = 2 }}\nqueue_timeout = \"300ms\"\n\n[cache]\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let mut conn = client::h1(sluice.addr).await;
    for i in 0..10 {
        let head = Request::head("/nostore").header("host", "x").body(full("")).expect("request");
        let (parts, body) = send1(&mut conn, head).await;
        assert_eq!(parts.status, StatusCode::OK, "HEAD {i}");
        assert!(body.is_empty());
        assert!(parts.headers["cache-status"].to_str().unwrap_or("").contains("detail=no-store"));
        // Another route on the same pool of 2 still gets a connection.
        let (parts, _) = send1(&mut conn, client::get("/other")).await;
        assert_eq!(parts.status, StatusCode::OK, "GET after HEAD {i}: the pool was not held by a drain");
    }
    // The bodies were not read on: a few frames each, not a drain without end.
    let before = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await; // time passing is what is tested
    let after = sent.load(Ordering::Relaxed);
    assert!(after - before < 1024 * 1024, "the origin kept sending {} bytes after the HEADs", after - before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_age_list_counts_by_its_first_member() {
    let fetched = Arc::new(AtomicU64::new(0));
    let upstream = origin(Arc::clone(&fetched)).await;
    let sluice = Sluice::start(&cached(&upstream, ""));
    let mut conn = client::h1(sluice.addr).await;
    for _ in 0..2 {
        let (parts, _) = send1(&mut conn, client::get("/aged")).await;
        assert_eq!(parts.status, StatusCode::OK);
        let status = parts.headers["cache-status"].to_str().unwrap_or("").to_string();
        assert!(!status.contains("hit"), "Age 7200 with max-age=3600 is stale, never a hit: {status}");
    }
    assert_eq!(fetched.load(Ordering::Relaxed), 2, "RFC 9111 §5.1 (cache-tests age-parse-suffix)");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_slower_than_coalesce_wait_is_still_asked_once() {
    let fetched = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&fetched);
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1_200)).await; // slower than coalesce_wait
            Response::builder().header("cache-control", "max-age=60").body(full("slow")).expect("response")
        }
    })
    .await;
    let sluice = Sluice::start(&cached(&upstream, "coalesce_wait = \"200ms\""));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = sluice.addr;
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (parts, body) = if i % 2 == 0 {
                let mut conn = client::h1(addr).await;
                send1(&mut conn, client::get("/slow")).await
            } else {
                let mut conn = client::h2(addr).await;
                client::send2(&mut conn, client::get2("/slow")).await
            };
            (parts.status, body, started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (status, body, took) = task.await.expect("task");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
        slowest = slowest.max(took);
    }
    assert_eq!(fetched.load(Ordering::Relaxed), 1, "one origin request for 50 concurrent misses");
    println!(
        "slowest of 50 clients: {slowest:?} (the origin takes 1.2 s; before: wait 0.2 s, then its own 1.2 s fetch)"
    );
}

/// An origin answering each path with the cache fields its name lists, counting fetches.
async fn targeted_origin(fetched: Arc<AtomicU64>) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| {
        let fetched = Arc::clone(&fetched);
        async move {
            fetched.fetch_add(1, Ordering::Relaxed);
            let mut response = Response::builder();
            let fields: &[(&str, &str)] = match req.uri().path() {
                "/cdn-stores" => &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")],
                "/cdn-refuses" => &[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")],
                "/own-wins" => &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "no-store"),
                    ("sluice-cache-control", "max-age=60"),
                ],
                _ => &[],
            };
            for (name, value) in fields {
                response = response.header(*name, *value);
            }
            response.body(full("targeted")).expect("response")
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn targeted_cache_control_fields_decide_and_are_not_sent_on() {
    let fetched = Arc::new(AtomicU64::new(0));
    let upstream = targeted_origin(Arc::clone(&fetched)).await;
    let sluice = Sluice::start(&cached(&upstream, "targeted_field = \"Sluice-Cache-Control\""));
    let mut h1 = client::h1(sluice.addr).await;
    let mut h2 = client::h2(sluice.addr).await;
    for (path, stored) in [("/cdn-stores", true), ("/cdn-refuses", false), ("/own-wins", true)] {
        let before = fetched.load(Ordering::Relaxed);
        for round in 0..2 {
            let (parts, body) = if round == 0 {
                send1(&mut h1, client::get(path)).await
            } else {
                client::send2(&mut h2, client::get2(path)).await
            };
            assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"targeted"[..]));
            for field in ["cdn-cache-control", "sluice-cache-control", "sluice-targeted-cache-control"] {
                assert!(!parts.headers.contains_key(field), "{path}: {field} was sent on: {:?}", parts.headers);
            }
            assert!(parts.headers.contains_key("cache-control"), "{path}: Cache-Control is the client's");
        }
        let fetches = fetched.load(Ordering::Relaxed) - before;
        assert_eq!(fetches, if stored { 1 } else { 2 }, "{path}: stored = {stored}");
    }
}
