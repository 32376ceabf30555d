//! An upstream that answers 429 (or 503) with Retry-After, or a RateLimit field with
//! nothing remaining, is paced: sluice sends it nothing until then, sending to other
//! endpoints, waiting within queue_timeout when every one is paced, or answering 503
//! with the time left. HTTP/1 and HTTP/2 upstreams.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::{one_worker, with_access_log, Sluice};

/// An upstream with a quota: it answers 429 with `pause` (the header and its value)
/// to every request within `window` of the first one in a window, else 200.
async fn quota_upstream(window: Duration, pause: (&'static str, &'static str)) -> (Upstream, Arc<Mutex<Vec<Instant>>>) {
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let log = Arc::clone(&seen);
    let upstream = Upstream::start(move |_: Request<Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let now = Instant::now();
            let mut seen = log.lock().expect("lock");
            let within = seen.first().is_some_and(|first| now.duration_since(*first) < window);
            seen.push(now);
            let mut response = Response::new(full(if within { "slow down" } else { "ok" }));
            if within {
                *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                response.headers_mut().insert(pause.0, pause.1.parse().expect("value"));
            }
            response
        }
    })
    .await;
    (upstream, seen)
}

/// An upstream that always answers 200, counting.
async fn plain_upstream() -> (Upstream, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let upstream = Upstream::start(move |_: Request<Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        async { Response::new(full("ok")) }
    })
    .await;
    (upstream, served)
}

fn config(endpoints: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    with_access_log(&one_worker(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n\
         [upstream.up]\nendpoints = [{}]\nbalance = \"round_robin\"\n{extra}\n",
        list.join(", ")
    )))
}

async fn get(addr: SocketAddr) -> (http::response::Parts, bytes::Bytes) {
    client::get_once(addr, "/x").await
}

/// A: the quota upstream (a second request within 10 s gets 429 Retry-After: 10);
/// B: always 200. Round robin: after A's 429, everything goes to B.
async fn a_paced_endpoint_gets_nothing_and_the_others_take_its_share(protocol: &str) {
    let (a, a_seen) = quota_upstream(Duration::from_secs(10), ("retry-after", "10")).await;
    let (b, b_served) = plain_upstream().await;
    let sluice = Sluice::start(&config(&[a.addr, b.addr], &format!("protocol = \"{protocol}\"")));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(sluice.addr).await.0.status);
    }
    let too_many = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(too_many, 1, "the client saw the one 429 that taught sluice: {statuses:?}");
    assert_eq!(a_seen.lock().expect("lock").len(), 2, "A: its first request, then the 429, then nothing");
    assert_eq!(b_served.load(Ordering::SeqCst), 18);
    sluice.wait_for_log("the endpoint asked for a pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_http1_endpoint_gets_nothing_and_the_others_take_its_share() {
    a_paced_endpoint_gets_nothing_and_the_others_take_its_share("http1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_http2_endpoint_gets_nothing_and_the_others_take_its_share() {
    a_paced_endpoint_gets_nothing_and_the_others_take_its_share("http2").await;
}

/// One endpoint, whose quota allows one request per second and says so with the draft's
/// RateLimit field: the request after a 429 waits out the pause in line (queue_timeout
/// 3 s) and is served, the upstream seeing nothing in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_paced_a_request_waits_within_queue_timeout() {
    let (a, a_seen) = quota_upstream(Duration::from_secs(1), ("ratelimit", "\"q\";r=0;t=1")).await;
    let sluice = Sluice::start(&config(&[a.addr], "queue_timeout = \"3s\""));
    assert_eq!(get(sluice.addr).await.0.status, StatusCode::OK);
    assert_eq!(get(sluice.addr).await.0.status, StatusCode::TOO_MANY_REQUESTS);
    let started = Instant::now();
    let (parts, body) = get(sluice.addr).await;
    assert_eq!(parts.status, StatusCode::OK, "{body:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited the pause: {:?}", started.elapsed());
    let seen = a_seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    assert!(seen[2].duration_since(seen[1]) >= Duration::from_millis(900), "nothing reached it during the pause");
}

/// The same with no time to wait: 503 at once with the time left, never reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_pause_outlasts_queue_timeout_the_request_gets_503_with_the_time_left() {
    let (a, a_seen) = quota_upstream(Duration::from_secs(30), ("retry-after", "30")).await;
    let sluice = Sluice::start(&config(&[a.addr], "queue_timeout = \"1s\""));
    assert_eq!(get(sluice.addr).await.0.status, StatusCode::OK);
    assert_eq!(get(sluice.addr).await.0.status, StatusCode::TOO_MANY_REQUESTS);
    let started = Instant::now();
    let (parts, _) = get(sluice.addr).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(500), "at once");
    let after: u64 = parts.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((28..=30).contains(&after), "the time left of the upstream's 30 s: {after}");
    let id = parts.headers["x-request-id"].to_str().expect("id").to_string();
    let record = sluice.record(&id);
    assert_eq!((record["limit"].as_str(), record["error"].as_str()), (Some("upstream_paced"), Some("upstream_paced")));
    assert_eq!(a_seen.lock().expect("lock").len(), 2, "the refused request never reached it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_a_pause_is_relayed_and_paces_nothing() {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hits);
    let upstream = Upstream::start(move |_: Request<Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        async {
            let mut response = Response::new(full("busy"));
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
        }
    })
    .await;
    let sluice = Sluice::start(&config(&[upstream.addr], ""));
    for _ in 0..3 {
        let (parts, _) = send1(&mut client::h1(sluice.addr).await, client::get("/x")).await;
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "no Retry-After: nothing to wait for");
}

/// An upstream that allows 10 requests a second (in any second) and answers 429 beyond.
async fn ten_per_second_upstream() -> (Upstream, Arc<Mutex<Vec<Instant>>>, Arc<AtomicUsize>) {
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let (log, over) = (Arc::clone(&seen), Arc::clone(&refused));
    let upstream = Upstream::start(move |_: Request<Incoming>| {
        let (log, over) = (Arc::clone(&log), Arc::clone(&over));
        async move {
            let now = Instant::now();
            let mut seen = log.lock().expect("lock");
            let last_second = seen.iter().filter(|t| now.duration_since(**t) < Duration::from_secs(1)).count();
            let mut response = Response::new(full("ok"));
            if last_second >= 10 {
                over.fetch_add(1, Ordering::SeqCst);
                *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            } else {
                seen.push(now);
            }
            response
        }
    })
    .await;
    (upstream, seen, refused)
}

async fn burst_of(addr: SocketAddr, n: usize) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(async move { get(addr).await.0.status })).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request"));
    }
    statuses
}

/// `[upstream.NAME.rate]` keeps a caller under its provider's quota: 25 requests at
/// once, 10/s allowed, all served within queue_timeout and none refused upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_cap_towards_the_upstream_keeps_under_its_quota() {
    let (upstream, seen, refused) = ten_per_second_upstream().await;
    // Default workers: the cap is the process's.
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n[upstream.up]\nendpoints = [\"{}\"]\n\
         queue_timeout = \"5s\"\n[upstream.up.rate]\nrate = \"10/s\"\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let started = Instant::now();
    let statuses = burst_of(sluice.addr, 25).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(refused.load(Ordering::SeqCst), 0, "the upstream never had to refuse");
    assert_eq!(seen.lock().expect("lock").len(), 25);
    assert!(started.elapsed() >= Duration::from_millis(2300), "paced at 10/s: {:?}", started.elapsed());
}

/// Beyond what queue_timeout allows to wait, 503 with `limit = "upstream_rate"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_what_can_wait_the_rate_cap_answers_503() {
    let (upstream, seen, refused) = ten_per_second_upstream().await;
    let config = with_access_log(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n[upstream.up]\nendpoints = [\"{}\"]\n\
         queue_timeout = \"500ms\"\n[upstream.up.rate]\nrate = \"10/s\"\n",
        upstream.addr
    ));
    let sluice = Sluice::start(&config);
    let statuses = burst_of(sluice.addr, 25).await;
    let served = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let shed = statuses.iter().filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE).count();
    assert_eq!(served + shed, 25, "{statuses:?}");
    assert!((5..=8).contains(&served), "one at once and 10/s over 0.5 s: {served}");
    assert_eq!(refused.load(Ordering::SeqCst), 0);
    assert_eq!(seen.lock().expect("lock").len(), served);
    let records = sluice.records(25);
    let limits = records.iter().filter(|r| r["limit"] == "upstream_rate").count();
    assert_eq!(limits, shed);
}
