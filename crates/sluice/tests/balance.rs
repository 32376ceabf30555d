//! Balancing across real backends: weights, least request, EWMA against a backend
//! that fails fast, and consistent hashing, as counted by the backends themselves.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::{one_worker, Sluice};

/// A backend that counts its requests, answers `status` after `delay`.
async fn backend(status: u16, delay: Duration) -> (Upstream, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let upstream = Upstream::start(move |_: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            let mut response = Response::new(full("x"));
            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
            response
        }
    })
    .await;
    (upstream, served)
}

fn config(endpoints: &str, balance: &str) -> String {
    one_worker(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n[upstream.up]\nendpoints = [{endpoints}]\n{balance}\n"
    ))
}

/// `n` GETs over `connections` keep-alive connections, each connection sequential.
async fn load(sluice: &Sluice, connections: usize, n: usize, header: Option<(&'static str, String)>) {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let addr = sluice.addr;
            let header = header.clone();
            tokio::spawn(async move {
                let mut conn = client::h1(addr).await;
                for i in 0..n / connections {
                    let mut request = client::get(&format!("/{c}/{i}"));
                    if let Some((name, value)) = &header {
                        request.headers_mut().insert(*name, value.parse().expect("value"));
                    }
                    send1(&mut conn, request).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_gives_each_backend_its_share() {
    let (a, a_served) = backend(200, Duration::ZERO).await;
    let (b, b_served) = backend(200, Duration::ZERO).await;
    let (c, c_served) = backend(200, Duration::ZERO).await;
    let endpoints = format!(
        "\"{}\", {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 3 }}",
        a.addr, b.addr, c.addr
    );
    let sluice = Sluice::start(&config(&endpoints, "balance = \"round_robin\""));
    load(&sluice, 4, 600, None).await;
    let counts = [a_served.load(Ordering::SeqCst), b_served.load(Ordering::SeqCst), c_served.load(Ordering::SeqCst)];
    assert_eq!(counts, [100, 200, 300], "weights 1:2:3 over 600 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_keeps_a_slow_backends_share_low() {
    let (fast, fast_served) = backend(200, Duration::from_millis(1)).await;
    let (slow, slow_served) = backend(200, Duration::from_millis(100)).await;
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", fast.addr, slow.addr), ""));
    load(&sluice, 16, 800, None).await;
    let (fast, slow) = (fast_served.load(Ordering::SeqCst), slow_served.load(Ordering::SeqCst));
    let share = slow as f64 / (fast + slow) as f64;
    // Round robin would give it half (and make every client wait on it).
    assert!(share < 0.15, "the slow backend served {slow} of {}", fast + slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ewma_a_backend_failing_fast_gets_little_traffic() {
    let (good, good_served) = backend(200, Duration::from_millis(2)).await;
    let (bad, bad_served) = backend(503, Duration::ZERO).await;
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", good.addr, bad.addr), "balance = \"ewma\""));
    load(&sluice, 8, 2_000, None).await;
    let (good, bad) = (good_served.load(Ordering::SeqCst), bad_served.load(Ordering::SeqCst));
    let share = bad as f64 / (good + bad) as f64;
    // Its instant 503s would win every latency comparison if failures were not penalised.
    assert!(share < 0.2, "the failing backend served {bad} of {}", good + bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_one_backend_and_spreads_keys() {
    let (a, a_served) = backend(200, Duration::ZERO).await;
    let (b, b_served) = backend(200, Duration::ZERO).await;
    let (c, c_served) = backend(200, Duration::ZERO).await;
    let endpoints = format!("\"{}\", \"{}\", \"{}\"", a.addr, b.addr, c.addr);
    let sluice = Sluice::start(&config(&endpoints, "balance = \"consistent_hash\"\nhash_key = \"header:x-user\""));
    let counts = || [a_served.load(Ordering::SeqCst), b_served.load(Ordering::SeqCst), c_served.load(Ordering::SeqCst)];
    let mut backends_used = std::collections::HashSet::new();
    for user in 0..30 {
        let before = counts();
        load(&sluice, 2, 10, Some(("x-user", format!("user-{user}")))).await;
        let after = counts();
        let hit: Vec<usize> = (0..3).filter(|i| after[*i] != before[*i]).collect();
        assert_eq!(hit.len(), 1, "user-{user}'s 10 requests all went to one backend: {before:?} → {after:?}");
        backends_used.insert(hit[0]);
    }
    assert_eq!(backends_used.len(), 3, "30 users spread over all three backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_ejected_after_failures_in_a_row_and_clients_see_no_error() {
    let (a, a_served) = backend(200, Duration::ZERO).await;
    let (b, b_served) = backend(200, Duration::ZERO).await;
    let dead = support::dead_port().await;
    let endpoints = format!("\"{}\", \"{dead}\", \"{}\"", a.addr, b.addr);
    let outlier = "balance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 3";
    let sluice = Sluice::start(&support::with_access_log(&config(&endpoints, outlier)));
    load(&sluice, 1, 60, None).await;
    assert_eq!(a_served.load(Ordering::SeqCst) + b_served.load(Ordering::SeqCst), 60, "every request answered");
    let records = sluice.records(60);
    assert!(records.iter().all(|r| r["status"] == 200), "no client saw an error");
    let failed_over = records.iter().filter(|r| r["attempts"] == 2).count();
    // Round robin offers it every third request: three connect failures (each moved on
    // to a live endpoint), then it is out of rotation.
    assert_eq!(failed_over, 3, "only the requests before the ejection tried the dead endpoint");
    let log = sluice.wait_for_log("endpoint ejected");
    assert!(log.contains(&dead.to_string()), "the log names the endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_ejected_requests_are_still_attempted() {
    let (dead_a, dead_b) = (support::dead_port().await, support::dead_port().await);
    let endpoints = format!("\"{dead_a}\", \"{dead_b}\"");
    let outlier = "[upstream.up.outlier]\nconsecutive_failures = 1\nmax_ejected_percent = 100";
    let sluice = Sluice::start(&support::with_access_log(&config(&endpoints, outlier)));
    for i in 0..3 {
        let (parts, _) = client::get_once(sluice.addr, &format!("/{i}")).await;
        assert_eq!(parts.status, 502);
    }
    let records = sluice.records(3);
    assert!(records.iter().all(|r| r["attempts"] == 2), "both endpoints tried every time: {records:?}");
    sluice.wait_for_log("panic mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_response_is_retried_on_another_endpoint() {
    use support::raw::{Answer, RawUpstream};
    let (good, good_served) = backend(200, Duration::ZERO).await;
    // Reads the request, then closes without a response.
    let resetting = RawUpstream::start(|_| Answer::Close(Vec::new())).await;
    let endpoints = format!("\"{}\", \"{}\"", resetting.addr, good.addr);
    // No ejection: every request that starts at the resetting endpoint must be retried.
    let settings = "balance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 0";
    let sluice = Sluice::start(&support::with_access_log(&config(&endpoints, settings)));
    load(&sluice, 1, 20, None).await;
    assert_eq!(good_served.load(Ordering::SeqCst), 20);
    let records = sluice.records(20);
    assert!(records.iter().all(|r| r["status"] == 200), "no client saw the resets");
    assert_eq!(records.iter().filter(|r| r["attempts"] == 2).count(), 10, "half started at the resetting endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_amplification_when_every_backend_fails() {
    let (a, a_served) = backend(503, Duration::ZERO).await;
    let (b, b_served) = backend(503, Duration::ZERO).await;
    let endpoints = format!("\"{}\", \"{}\"", a.addr, b.addr);
    let settings =
        "[upstream.up.outlier]\nconsecutive_failures = 0\n[upstream.up.retry]\nretries = 3\non = [\"503\"]\n\
                    budget_percent = 20\nmin_retries_per_second = 1\nbackoff = \"1ms\"";
    let sluice = Sluice::start(&config(&endpoints, settings));
    let requests = 300;
    load(&sluice, 4, requests, None).await;
    let attempts = a_served.load(Ordering::SeqCst) + b_served.load(Ordering::SeqCst);
    // Without a budget: 4 tries each, 1,200. With it: 20% more, plus 1 a second over
    // the 10 s window.
    let ceiling = requests * 120 / 100 + 10;
    assert!(attempts <= ceiling, "{attempts} upstream attempts for {requests} requests (at most {ceiling})");
    assert!(attempts > requests, "some requests were retried: {attempts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_requests_a_request_gets_503_at_once() {
    let (slow, served) = backend(200, Duration::from_millis(500)).await;
    let settings = "[upstream.up.circuit_breaker]\nmax_requests = 2";
    let observed = "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let sluice =
        Sluice::start(&support::with_access_log(&(config(&format!("\"{}\"", slow.addr), settings) + observed)));
    let held: Vec<_> = (0..2)
        .map(|i| {
            let addr = sluice.addr;
            tokio::spawn(async move { client::get_once(addr, &format!("/held/{i}")).await.0.status })
        })
        .collect();
    // Both held requests are in flight once the backend has them (polled, bounded).
    let deadline = std::time::Instant::now() + support::WAIT;
    while served.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "the held requests never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let (parts, body) = client::get_once(sluice.addr, "/third").await;
    assert_eq!(parts.status, 503, "{body:?}");
    assert!(started.elapsed() < Duration::from_millis(250), "refused at once, not after a wait");
    assert_eq!(parts.headers["retry-after"], "1");
    for request in held {
        assert_eq!(request.await.expect("held"), 200);
    }
    assert_eq!(served.load(Ordering::SeqCst), 2, "the refused request never reached the backend");
    // The refusal is counted as shed, and its record says which limit.
    let records = sluice.records(3);
    let refused: Vec<_> = records.iter().filter(|r| r["status"] == 503).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["limit"], "max_requests");
    let mut admin = client::h1(sluice.admin.expect("admin")).await;
    let request =
        http::Request::get("/metrics").header("host", "a").body(support::upstream::full("")).expect("request");
    let page = String::from_utf8_lossy(&client::send1(&mut admin, request).await.1).into_owned();
    assert!(page.contains("sluice_requests_shed_total{limit=\"max_requests\"} 1\n"), "{page}");
    assert!(page.contains("sluice_requests_shed_total{limit=\"max_pending\"} 0\n"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_costs_one_per_try_timeout_then_is_ejected() {
    hanging_backend_round("http1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_http2_backend_costs_one_per_try_timeout_then_is_ejected() {
    hanging_backend_round("http2").await;
}

async fn hanging_backend_round(protocol: &str) {
    // Takes requests and never answers.
    let (hanging, _) = backend(200, Duration::from_secs(3600)).await;
    let (good, good_served) = backend(200, Duration::ZERO).await;
    let settings = format!(
        "protocol = \"{protocol}\"\nbalance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 1\n\
         [upstream.up.retry]\nper_try_timeout = \"300ms\""
    );
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", hanging.addr, good.addr), &settings));
    let mut conn = client::h1(sluice.addr).await;
    let mut slow = 0;
    for i in 0..20 {
        let started = std::time::Instant::now();
        let (parts, _) = send1(&mut conn, client::get(&format!("/{i}"))).await;
        assert_eq!(parts.status, 200, "request {i}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_000), "request {i} took {took:?}");
        if took >= Duration::from_millis(300) {
            slow += 1;
        }
    }
    assert_eq!(slow, 1, "one request paid the per-try timeout; then the backend was out");
    assert_eq!(good_served.load(Ordering::SeqCst), 20);
    sluice.wait_for_log("endpoint ejected");
}

/// A backend whose `/healthz` answers 200 while `healthy` is set, 503 otherwise; it
/// counts the other requests.
async fn checked_backend(healthy: Arc<std::sync::atomic::AtomicBool>) -> (Upstream, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let (counter, healthy) = (Arc::clone(&counter), Arc::clone(&healthy));
        async move {
            let mut response = Response::new(full("x"));
            if req.uri().path() == "/healthz" {
                if !healthy.load(Ordering::SeqCst) {
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                }
            } else {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            response
        }
    })
    .await;
    (upstream, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    health_checks_round_trip("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_speak_http2_to_http2_groups() {
    health_checks_round_trip("protocol = \"http2\"\n").await;
}

/// An endpoint failing its checks gets no requests, and gets its share back once it passes.
async fn health_checks_round_trip(protocol: &str) {
    use std::sync::atomic::AtomicBool;
    let a_health = Arc::new(AtomicBool::new(true));
    let b_health = Arc::new(AtomicBool::new(true));
    let (a, a_served) = checked_backend(Arc::clone(&a_health)).await;
    let (b, b_served) = checked_backend(Arc::clone(&b_health)).await;
    let settings = format!(
        "{protocol}balance = \"round_robin\"\n[upstream.up.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\n\
         healthy_threshold = 2\nunhealthy_threshold = 2"
    );
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", a.addr, b.addr), &settings));
    b_health.store(false, Ordering::SeqCst);
    sluice.wait_for_log("health check: endpoint unhealthy");
    let before = b_served.load(Ordering::SeqCst);
    load(&sluice, 1, 20, None).await;
    assert_eq!(b_served.load(Ordering::SeqCst), before, "no request reached the unhealthy endpoint");
    assert!(a_served.load(Ordering::SeqCst) >= 20);
    b_health.store(true, Ordering::SeqCst);
    sluice.wait_for_log("health check: endpoint healthy again");
    let before = b_served.load(Ordering::SeqCst);
    load(&sluice, 1, 20, None).await;
    assert_eq!(b_served.load(Ordering::SeqCst) - before, 10, "back in rotation: half of round robin");
    drop(a_health);
    // Each worker checks on its own; the process says each transition once.
    let log = sluice.log();
    for said in ["endpoint unhealthy", "endpoint healthy again"] {
        assert_eq!(log.matches(said).count(), 1, "{said} once:\n{log}");
    }
}

/// A backend that can be killed (listener and every connection dropped at once) and
/// started again on the same port.
struct Killable {
    addr: std::net::SocketAddr,
    served: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Killable {
    async fn start(addr: std::net::SocketAddr, served: Arc<AtomicUsize>) -> Killable {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut tasks = tokio::task::JoinSet::new();
        let counter = Arc::clone(&served);
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        if req.uri().path() != "/healthz" {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        async { Ok::<_, std::convert::Infallible>(Response::new(full("x"))) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Killable { addr, served, tasks }
    }

    /// Drops the listener and every connection (aborting the connections' tasks).
    async fn kill(mut self) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        (self.addr, self.served)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_under_load_costs_clients_nothing_and_it_returns() {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(Killable::start(any, Arc::new(AtomicUsize::new(0))).await);
    }
    let endpoints = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect::<Vec<_>>().join(", ");
    let settings = "[upstream.up.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\n\
                    healthy_threshold = 2\nunhealthy_threshold = 2";
    let sluice = Sluice::start(&config(&endpoints, settings));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (addr, stop, ok, failed) = (sluice.addr, Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut conn = client::h1(addr).await;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (parts, _) = send1(&mut conn, client::get(&format!("/{c}/{i}"))).await;
                    let counter = if parts.status == 200 { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();
    let wait_served = |served: &Arc<AtomicUsize>, more: usize| {
        let (served, target) = (Arc::clone(served), served.load(Ordering::SeqCst) + more);
        async move {
            let deadline = std::time::Instant::now() + support::WAIT;
            while served.load(Ordering::SeqCst) < target {
                assert!(std::time::Instant::now() < deadline, "the backend never got {more} more requests");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let victim = backends.pop().expect("three");
    wait_served(&victim.served, 50).await; // load is flowing to all three
    let (addr, served) = victim.kill().await;
    sluice.wait_for_log("health check: endpoint unhealthy");
    let revived = Killable::start(addr, served).await;
    sluice.wait_for_log("health check: endpoint healthy again");
    wait_served(&revived.served, 50).await; // back in rotation
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {} requests, none failed", ok.load(Ordering::SeqCst));
    drop((revived, backends));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_back_in_rotation_ramps_up_over_slow_start() {
    use std::sync::atomic::AtomicBool;
    let a_health = Arc::new(AtomicBool::new(true));
    let b_health = Arc::new(AtomicBool::new(false));
    let (a, a_served) = checked_backend(Arc::clone(&a_health)).await;
    let (b, b_served) = checked_backend(Arc::clone(&b_health)).await;
    let settings = "balance = \"round_robin\"\nslow_start = \"60s\"\n[upstream.up.health_check]\npath = \"/healthz\"\n\
                    interval = \"50ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1";
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", a.addr, b.addr), settings));
    sluice.wait_for_log("health check: endpoint unhealthy");
    b_health.store(true, Ordering::SeqCst);
    sluice.wait_for_log("health check: endpoint healthy again");
    let (a_before, b_before) = (a_served.load(Ordering::SeqCst), b_served.load(Ordering::SeqCst));
    load(&sluice, 1, 110, None).await;
    let (a_got, b_got) = (a_served.load(Ordering::SeqCst) - a_before, b_served.load(Ordering::SeqCst) - b_before);
    // Seconds into a 60 s ramp, it has about 10% of its weight: ~10 of 110, not 55.
    assert!((5..=20).contains(&b_got), "the returning endpoint got {b_got} of {}", a_got + b_got);
    drop(a_health);
}

/// 200 requests to a group where one endpoint stalls every 10th request for 200 ms,
/// hedged after `hedge_after`: the p99, and the requests the upstreams saw.
async fn hedged_run(protocol: &str, hedge_after: &str) -> (Duration, usize) {
    let stalling_seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&stalling_seen);
    let stalling = Upstream::start(move |_: Request<Incoming>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Response::new(full("x"))
        }
    })
    .await;
    let (fast, fast_served) = backend(200, Duration::ZERO).await;
    let settings = format!(
        "protocol = \"{protocol}\"\nbalance = \"round_robin\"\n[upstream.up.retry]\nhedge_after = \"{hedge_after}\""
    );
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", stalling.addr, fast.addr), &settings));
    let mut latencies = Vec::new();
    let mut conn = client::h1(sluice.addr).await;
    for i in 0..200 {
        let started = std::time::Instant::now();
        let (parts, _) = send1(&mut conn, client::get(&format!("/{i}"))).await;
        assert_eq!(parts.status, 200);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let sent = stalling_seen.load(Ordering::SeqCst) + fast_served.load(Ordering::SeqCst);
    (latencies[latencies.len() * 99 / 100], sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_the_tail_of_an_endpoint_that_stalls_sometimes() {
    let (p99, sent) = hedged_run("http1", "30ms").await;
    // Unhedged, the 10 stalls (5% of requests) would put the p99 at 200 ms.
    assert!(p99 < Duration::from_millis(150), "p99 {p99:?}");
    assert!(sent > 200 && sent <= 240, "{sent} upstream requests for 200: the stalls were hedged, within budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_the_tail_of_an_http2_group_too() {
    let (p99, sent) = hedged_run("http2", "30ms").await;
    assert!(p99 < Duration::from_millis(150), "p99 {p99:?}");
    assert!(sent > 200 && sent <= 240, "{sent} upstream requests for 200: the stalls were hedged, within budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_after_the_groups_p95_needs_no_tuning() {
    let (p99, sent) = hedged_run("http1", "p95").await;
    assert!(p99 < Duration::from_millis(150), "p99 {p99:?}");
    // The p95 is a fast response, so more requests are hedged, as the budget allows
    // (20% of 200 plus 3 a second over the 10 s window).
    assert!(sent > 200 && sent <= 200 + 40 + 30, "{sent} upstream requests for 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_groups_retry_listed_statuses_on_another_endpoint() {
    let (failing, failing_served) = backend(503, Duration::ZERO).await;
    let (good, good_served) = backend(200, Duration::ZERO).await;
    let settings = "protocol = \"http2\"\nbalance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 0\n\
                    [upstream.up.retry]\non = [\"503\"]";
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", failing.addr, good.addr), settings));
    let mut conn = client::h1(sluice.addr).await;
    for i in 0..20 {
        let (parts, _) = send1(&mut conn, client::get(&format!("/{i}"))).await;
        assert_eq!(parts.status, 200, "request {i} was retried past the 503");
    }
    assert_eq!(good_served.load(Ordering::SeqCst), 20);
    assert_eq!(failing_served.load(Ordering::SeqCst), 10, "round robin started half of them there");
}

/// A backend that records each request's method and body, answering `status`.
async fn recording_backend(status: u16) -> (Upstream, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use http_body_util::BodyExt;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let upstream = Upstream::start(move |request: Request<Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let method = request.method().to_string();
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            log.lock().expect("log").push((method, String::from_utf8_lossy(&body).into_owned()));
            let mut response = Response::new(full("x"));
            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
            response
        }
    })
    .await;
    (upstream, seen)
}

/// POSTs with small bodies (read whole by sluice) to a group whose first endpoint
/// answers 503: the status the client sees for each, with the other endpoint's log.
async fn posts_past_a_503(protocol: &str, extra: &str) -> (Vec<u16>, Vec<(String, String)>) {
    let (failing, _) = recording_backend(503).await;
    let (good, seen) = recording_backend(200).await;
    let settings = format!(
        "protocol = \"{protocol}\"\nbalance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 0\n\
         [upstream.up.retry]\non = [\"503\"]\n{extra}"
    );
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", failing.addr, good.addr), &settings));
    let mut conn = client::h1(sluice.addr).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let request = Request::post("/orders").header("host", "localhost").body(full(format!("order {i}")));
        let (parts, _) = send1(&mut conn, request.expect("request")).await;
        statuses.push(parts.status.as_u16());
    }
    let seen = seen.lock().expect("log").clone();
    (statuses, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_a_whole_body_is_retried_with_that_body() {
    for protocol in ["http1", "http2"] {
        let (statuses, seen) = posts_past_a_503(protocol, "").await;
        assert_eq!(statuses, [200; 10], "{protocol}: every POST was retried past the 503");
        let bodies: Vec<_> = seen.iter().map(|(method, body)| format!("{method} {body}")).collect();
        let expected: Vec<_> = (0..10).map(|i| format!("POST order {i}")).collect();
        assert_eq!(bodies, expected, "{protocol}: the retried POSTs arrived with their bodies, once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_only_keeps_posts_from_being_retried() {
    let (statuses, seen) = posts_past_a_503("http1", "idempotent_only = true").await;
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5, "half started at the 503 endpoint: {statuses:?}");
    assert_eq!(seen.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reset_before_its_response_is_sent_again_with_its_body() {
    use support::raw::{Answer, RawUpstream};
    let resetting = RawUpstream::start(|_| Answer::Close(Vec::new())).await;
    let (good, seen) = recording_backend(200).await;
    let settings = "balance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 0";
    let sluice = Sluice::start(&config(&format!("\"{}\", \"{}\"", resetting.addr, good.addr), settings));
    let mut conn = client::h1(sluice.addr).await;
    for i in 0..6 {
        let request = Request::put(format!("/items/{i}")).header("host", "localhost").body(full(format!("item {i}")));
        let (parts, _) = send1(&mut conn, request.expect("request")).await;
        assert_eq!(parts.status, 200, "request {i}");
    }
    let bodies: Vec<_> = seen.lock().expect("log").iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(bodies, (0..6).map(|i| format!("item {i}")).collect::<Vec<_>>());
}
