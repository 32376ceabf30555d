//! The admin listener: auth, health and readiness, metrics that follow the traffic (and
//! agree with the access log), the upstreams' state, drain, and cache purges.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::Sluice;

const TOKEN: &str = "0123456789abcdef0123";

fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"api\"\nupstream = \"up\"\n\
         [upstream.up]\nendpoints = [\"{upstream}\"]\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{extra}"
    )
}

/// One request to the admin listener; `token` as the bearer, if any.
async fn admin(sluice: &Sluice, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let addr = sluice.admin.expect("an admin listener");
    let mut conn = client::h1(addr).await;
    let mut request = Request::builder().method(method).uri(path).header("host", "admin");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (parts, body) = send1(&mut conn, request.body(full("")).expect("request")).await;
    (parts.status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(sluice: &Sluice, path: &str) -> (StatusCode, Bytes) {
    let (parts, body) = client::get_once(sluice.addr, path).await;
    (parts.status, body)
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_every_endpoint_is_401() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config(upstream.addr, ""));
    for path in ["/healthz", "/readyz", "/metrics", "/upstreams", "/nothing"] {
        assert_eq!(admin(&sluice, "GET", path, None).await.0, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(admin(&sluice, "GET", path, Some("wrong-token-wrong-token")).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(admin(&sluice, "POST", "/drain", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin(&sluice, "GET", "/readyz", Some(TOKEN)).await,
        (StatusCode::OK, "ready\n".into()),
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config(upstream.addr, ""));
    assert_eq!(admin(&sluice, "GET", "/healthz", Some(TOKEN)).await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(admin(&sluice, "GET", "/readyz", Some(TOKEN)).await, (StatusCode::OK, "ready\n".into()));
    assert_eq!(admin(&sluice, "GET", "/nope", Some(TOKEN)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin(&sluice, "DELETE", "/metrics", Some(TOKEN)).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic_and_agree_with_the_access_log() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&support::with_access_log(&config(upstream.addr, "")));
    let (_, before) = admin(&sluice, "GET", "/metrics", Some(TOKEN)).await;
    let ok = "sluice_requests_total{route=\"api\",upstream=\"up\",class=\"2xx\"}";
    assert_eq!(metric(&before, ok), 0.0);
    for i in 0..25 {
        assert_eq!(get(&sluice, &format!("/item/{i}")).await.0, StatusCode::OK);
    }
    let records = sluice.records(25);
    let (_, page) = admin(&sluice, "GET", "/metrics", Some(TOKEN)).await;
    let counted = metric(&page, ok);
    let logged = records.iter().filter(|r| r["route"] == "api" && r["status"] == 200).count();
    assert_eq!(counted, logged as f64, "the metrics and the access log count the same requests");
    assert_eq!(counted, 25.0);
    let total = metric(&page, "sluice_request_duration_seconds_count{route=\"api\",upstream=\"up\"}");
    assert_eq!(total, 25.0, "every request is in the latency histogram");
    let inf = metric(&page, "sluice_request_duration_seconds_bucket{route=\"api\",upstream=\"up\",le=\"+Inf\"}");
    assert_eq!(inf, 25.0);
    assert_eq!(metric(&page, "sluice_upstream_duration_seconds_count{route=\"api\",upstream=\"up\"}"), 25.0);
    let endpoint = format!("{{upstream=\"up\",endpoint=\"{}\"}}", upstream.addr);
    assert_eq!(metric(&page, &format!("sluice_upstream_healthy{endpoint}")), 1.0);
    assert!(metric(&page, &format!("sluice_upstream_pool_created_total{endpoint}")) >= 1.0);
    assert!(metric(&page, &format!("sluice_upstream_pool_reused_total{endpoint}")) >= 1.0);
    assert!(metric(&page, "sluice_fds_limit") > 0.0 && metric(&page, "sluice_fds_open") > 0.0);
    assert!(page.contains("# TYPE sluice_request_duration_seconds histogram"));
    // An HTTP/2 client connection is counted as one while it is open.
    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://t/h2").body(full("")).expect("request");
    assert_eq!(client::send2(&mut h2, request).await.0.status, StatusCode::OK);
    let (_, page) = admin(&sluice, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(metric(&page, "sluice_connections_open{protocol=\"http2\"}"), 1.0, "{page}");
    assert_eq!(metric(&page, "sluice_accept_errors_total{kind=\"fd_exhausted\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_show_each_endpoints_health_weight_and_pool() {
    let upstream = Upstream::hello().await;
    let dead = support::dead_port().await;
    let endpoints = format!("\"{}\", {{ address = \"{dead}\", weight = 3 }}", upstream.addr);
    let text = format!(
        "[server]\nworker_threads = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n\
         [upstream.up]\nendpoints = [{endpoints}]\nbalance = \"round_robin\"\n[upstream.up.outlier]\nconsecutive_failures = 1\n\
         [admin]\naddress = \"127.0.0.1:0\"\n"
    );
    let sluice = Sluice::start(&text);
    for i in 0..8 {
        assert_eq!(get(&sluice, &format!("/{i}")).await.0, StatusCode::OK, "connect failures move on");
    }
    let (status, body) = admin(&sluice, "GET", "/upstreams", None).await;
    assert_eq!(status, StatusCode::OK, "no token configured: open");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let endpoints = &json["upstreams"][0]["endpoints"];
    assert_eq!(json["upstreams"][0]["name"], "up");
    assert_eq!(endpoints[0]["endpoint"], upstream.addr.to_string());
    assert_eq!((endpoints[0]["healthy"].as_bool(), endpoints[0]["weight"].as_u64()), (Some(true), Some(1)));
    assert_eq!((endpoints[1]["healthy"].as_bool(), endpoints[1]["weight"].as_u64()), (Some(false), Some(3)), "{body}");
    assert!(endpoints[1]["pool"]["connect_failures"].as_u64() >= Some(1));
    assert!(endpoints[0]["pool"]["idle"].as_u64() >= Some(1), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_accepting_becomes_not_ready_and_exits() {
    // `/slow` is answered when the test says so: a request in flight keeps the drain
    // (and so the process) going while the test watches readiness.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = std::sync::Arc::clone(&release);
    let upstream = Upstream::start(move |req: http::Request<hyper::body::Incoming>| {
        let (gate, arrived_tx) = (std::sync::Arc::clone(&gate), arrived_tx.clone());
        async move {
            if req.uri().path() == "/slow" {
                let _ = arrived_tx.send(());
                gate.notified().await;
            }
            http::Response::new(full("done"))
        }
    })
    .await;
    let mut sluice = Sluice::start(&config(upstream.addr, "[server]\ndrain_timeout = \"5s\"\n"));
    assert_eq!(get(&sluice, "/").await.0, StatusCode::OK);
    // A keep-alive admin connection opened before the drain sees the readiness change.
    let addr = sluice.admin.expect("admin");
    let mut watcher = client::h1(addr).await;
    let ready = || Request::get("/readyz").header("authorization", format!("Bearer {TOKEN}")).body(full(""));
    assert_eq!(send1(&mut watcher, ready().expect("request")).await.0.status, StatusCode::OK);
    let in_flight = tokio::spawn(client::get_once(sluice.addr, "/slow"));
    arrived.recv().await.expect("the slow request reaches the upstream");
    assert_eq!(admin(&sluice, "POST", "/drain", Some(TOKEN)).await.0, StatusCode::ACCEPTED);
    sluice.wait_for_log("listeners closed");
    assert_eq!(send1(&mut watcher, ready().expect("request")).await.0.status, StatusCode::SERVICE_UNAVAILABLE);
    let refused = tokio::net::TcpStream::connect(sluice.addr).await;
    assert!(refused.is_err(), "the listener is closed while draining");
    release.notify_one();
    let (parts, body) = in_flight.await.expect("the in-flight request");
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"done"[..]), "finished during the drain");
    assert!(sluice.wait_exit().success(), "drained and exited 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_purged_through_the_admin_listener() {
    let origin = Upstream::start(|_| async {
        let mut response = http::Response::new(full("cached"));
        response.headers_mut().insert("cache-control", "max-age=60".parse().expect("value"));
        response
    })
    .await;
    let text = config(origin.addr, "[cache]\n").replace("upstream = \"up\"\n", "upstream = \"up\"\ncache = true\n");
    let sluice = Sluice::start(&text);
    let fetch = || async {
        let mut conn = client::h1(sluice.addr).await;
        let request = Request::get("/doc").header("host", "cache.test").body(full("")).expect("request");
        let (parts, _) = send1(&mut conn, request).await;
        parts.headers.get("cache-status").map(|v| v.to_str().expect("text").to_string()).unwrap_or_default()
    };
    fetch().await;
    assert!(fetch().await.contains("hit"));
    let (status, body) = admin(&sluice, "POST", "/purge?host=cache.test&url=/doc", Some(TOKEN)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"purged\":1,\"mode\":\"url\"}\n"));
    assert!(fetch().await.contains("fwd=miss"), "purged");
    let (_, page) = admin(&sluice, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!((metric(&page, "sluice_cache_hits_total"), metric(&page, "sluice_cache_misses_total")), (1.0, 2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_effective_config_is_shown_without_its_secrets() {
    let upstream = Upstream::hello().await;
    let redis = "[cache]\n[cache.redis]\nurl = \"redis://app:hunter2hunter2@127.0.0.1:1\"\n";
    let sluice = Sluice::start(&config(upstream.addr, redis));
    let (status, shown) = admin(&sluice, "GET", "/config", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.contains(&upstream.addr.port().to_string()), "the upstream's endpoint: {shown}");
    assert!(shown.contains("keepalive_timeout: 60s"), "defaults filled in: {shown}");
    assert!(!shown.contains(TOKEN) && !shown.contains("hunter2"), "no secret shown: {shown}");
    assert!(shown.contains("redis://<redacted>@127.0.0.1:1"));
}
