//! Rate limits as clients see them: 429 with Retry-After and the RateLimit fields, how
//! many are admitted over 10 s of load well above the limit (one instance counting
//! locally, two sharing one limit through a real redis-server), Redis killed and
//! restarted mid-run, a missing key, HTTP/2 clients, a reload.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use support::client::{self, send1, send2};
use support::stores::Store;
use support::upstream::{full, Upstream};
use support::{with_access_log, Sluice};

const RATE: u64 = 100;
const BURST: u64 = 20;

/// The short tests' limit: nothing comes back within a test (one a minute).
const SLOW: &str = "rate = \"1/m\"\nburst = 5";

fn config(upstream: SocketAddr, limit: &str) -> String {
    config_with(upstream, &format!("rate = \"{RATE}/s\"\nburst = {BURST}\n{limit}"))
}

fn config_with(upstream: SocketAddr, limit: &str) -> String {
    with_access_log(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [rate_limit.per_key]\n{limit}\n\n\
         [[route]]\npath_prefix = \"/api\"\nupstream = \"up\"\nrate_limits = [\"per_key\"]\n\n\
         [[route]]\nupstream = \"up\"\n\n[upstream.up]\nendpoints = [\"{upstream}\"]\n"
    ))
}

/// Admitted (200) and refused (429) responses, and anything else.
#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// `clients` keep-alive clients spread over `targets`, each sending a GET every 10 ms
/// (100/s each) until `until`, with `key` as x-api-key.
async fn load(targets: &[SocketAddr], clients: usize, until: Instant, key: &str, tally: &Arc<Tally>) {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (target, tally, key) = (targets[i % targets.len()], Arc::clone(tally), key.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = client::h1(target).await;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < until {
                tick.tick().await;
                let request = Request::get("/api/x").header("host", "t").header("x-api-key", key.as_str());
                let (parts, _) = send1(&mut conn, request.body(full("")).expect("request")).await;
                let counter = match parts.status {
                    StatusCode::OK => &tally.admitted,
                    StatusCode::TOO_MANY_REQUESTS => &tally.refused,
                    _ => &tally.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
}

/// Runs `load` for `seconds` and checks the admitted count against rate × time + burst.
async fn admitted_within_5_percent(targets: &[SocketAddr], key: &str, seconds: u64) {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    // 5 clients at 100/s each: 5× the limit.
    load(targets, 5, started + Duration::from_secs(seconds), key, &tally).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = tally.admitted.load(Ordering::Relaxed) as f64;
    let expected = RATE as f64 * elapsed + BURST as f64;
    assert_eq!(tally.other.load(Ordering::Relaxed), 0, "only 200 and 429");
    assert!(tally.refused.load(Ordering::Relaxed) > 0, "the load was above the limit");
    let ratio = admitted / expected;
    assert!(
        (0.95..=1.05).contains(&ratio),
        "{admitted} admitted in {elapsed:.2} s, {expected:.0} expected ({ratio:.3})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_admits_rate_times_time_plus_burst_counting_locally() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config(upstream.addr, "key = [\"header:x-api-key\"]"));
    admitted_within_5_percent(&[sluice.addr], "k1", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_limit_through_redis() {
    let redis = Store::redis();
    let upstream = Upstream::hello().await;
    let global = format!("key = [\"header:x-api-key\"]\nscope = \"global\"\nredis = \"{}\"", redis.url());
    let a = Sluice::start(&config(upstream.addr, &global));
    let b = Sluice::start(&config(upstream.addr, &global));
    admitted_within_5_percent(&[a.addr, b.addr], "shared-key", 10).await;
    let keys = redis.command("KEYS sluice:rl:*");
    assert!(keys.contains("sluice:rl:per_key:"), "one key in Redis: {keys}");
}

/// Two instances, Redis killed after 3 s and started again on its port 3 s later:
/// no request fails, each instance falls back to the limit on its own
/// (`on_store_error = "local"`), and the shared limit holds again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_killed_the_local_fallback_holds_and_the_shared_limit_returns() {
    let mut redis = Store::redis();
    let upstream = Upstream::hello().await;
    let global = format!(
        "key = [\"header:x-api-key\"]\nscope = \"global\"\nredis = \"{}\"\non_store_error = \"local\"",
        redis.url()
    );
    let a = Sluice::start(&config(upstream.addr, &global));
    let b = Sluice::start(&config(upstream.addr, &global));
    let targets = [a.addr, b.addr];
    let phase = |seconds: u64| {
        let tally = Arc::new(Tally::default());
        let until = Instant::now() + Duration::from_secs(seconds);
        (tally, until)
    };
    // Redis up: one limit for both.
    let (shared, until) = phase(3);
    load(&targets, 6, until, "k", &shared).await;
    redis.kill();
    // Redis down: each instance its own limit (their first requests wait at most the
    // 50 ms timeout; the gate then skips Redis).
    let (alone, until) = phase(3);
    let started = Instant::now();
    load(&targets, 6, until, "k", &alone).await;
    let down = started.elapsed().as_secs_f64();
    redis.restart_redis();
    // Back: once neither instance falls back any more (one may reconnect a second or
    // two after the other: its gate skips Redis for a second after each failure), one
    // limit again.
    let deadline = Instant::now() + support::WAIT;
    let warmup = Arc::new(Tally::default());
    loop {
        let before = (fallbacks(&a).await, fallbacks(&b).await);
        load(&targets, 2, Instant::now() + Duration::from_millis(300), "probe", &warmup).await;
        if (fallbacks(&a).await, fallbacks(&b).await) == before {
            break;
        }
        assert!(Instant::now() < deadline, "the instances never went back to Redis");
    }
    let (back, until) = phase(3);
    let started = Instant::now();
    load(&targets, 6, until, "k", &back).await;
    let up = started.elapsed().as_secs_f64();
    for tally in [&shared, &alone, &warmup, &back] {
        assert_eq!(tally.other.load(Ordering::Relaxed), 0, "no request failed");
    }
    let alone = alone.admitted.load(Ordering::Relaxed) as f64;
    // Each instance: rate × time + burst, twice.
    let two_limits = 2.0 * (RATE as f64 * down + BURST as f64);
    assert!(
        (0.85 * two_limits..=1.05 * two_limits).contains(&alone),
        "Redis down: {alone} admitted, {two_limits:.0} for two local limits"
    );
    let back = back.admitted.load(Ordering::Relaxed) as f64;
    let one_limit = RATE as f64 * up + BURST as f64;
    assert!(
        (0.85 * RATE as f64 * up..=1.05 * one_limit).contains(&back),
        "Redis back: {back} admitted, {one_limit:.0} for the one shared limit"
    );
    for sluice in [&a, &b] {
        assert!(sluice.log().contains("a global rate limit's Redis failed"), "the outage is logged");
    }
}

/// Decisions an instance made by `on_store_error` because Redis did not answer.
async fn fallbacks(sluice: &Sluice) -> u64 {
    let page = support::metrics(sluice).await;
    let line = page.lines().find(|l| l.starts_with("sluice_rate_limit_store_fallbacks_total{")).unwrap_or("x 0");
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_gets_429_with_retry_after_and_the_ratelimit_fields() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config_with(upstream.addr, &format!("{SLOW}\nkey = [\"client_ip\", \"route\"]")));
    let mut conn = client::h1(sluice.addr).await;
    let mut h2 = client::h2(sluice.addr).await;
    // The burst, over HTTP/1.1 and HTTP/2 in turn (one client address).
    for i in 0..5 {
        let (parts, _) = match i % 2 {
            0 => send1(&mut conn, client::get("/api/a")).await,
            _ => send2(&mut h2, client::get2("/api/a")).await,
        };
        assert_eq!(parts.status, StatusCode::OK, "request {i} of the burst");
        assert_eq!(parts.headers["ratelimit-policy"], "\"per_key\";q=1;w=60");
        let state = parts.headers["ratelimit"].to_str().expect("ascii");
        let reset = (i + 1) * 60; // the bucket is full again once every admission has come back
        assert_eq!(state, format!("\"per_key\";r={};t={reset}", 4 - i));
    }
    for refused in [send1(&mut conn, client::get("/api/a")).await, send2(&mut h2, client::get2("/api/a")).await] {
        let (parts, body) = refused;
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS, "{body:?}");
        assert_eq!(parts.headers["retry-after"], "60", "one interval after the burst");
        assert_eq!(parts.headers["ratelimit-policy"], "\"per_key\";q=1;w=60");
        assert_eq!(parts.headers["ratelimit"], "\"per_key\";r=0;t=60");
        let id = parts.headers["x-request-id"].to_str().expect("id").to_string();
        let record = sluice.record(&id);
        assert_eq!((record["limit"].as_str(), record["error"].as_str()), (Some("rate"), Some("rate_limited")));
    }
    // Another route is not limited, and its responses carry no fields.
    let (parts, _) = send1(&mut conn, client::get("/other")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get("ratelimit").is_none());
    let page = support::metrics(&sluice).await;
    assert!(page.contains("sluice_requests_shed_total{limit=\"rate\"} 2\n"), "{page}");
    assert!(page.contains("sluice_rate_limit_decisions_total{policy=\"per_key\",result=\"refused\"} 2\n"), "{page}");
    assert!(page.contains("sluice_rate_limit_decisions_total{policy=\"per_key\",result=\"admitted\"} 5\n"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_refused_or_counted_under_one_shared_key_as_configured() {
    let upstream = Upstream::hello().await;
    let refuse = Sluice::start(&config_with(
        upstream.addr,
        &format!("{SLOW}\nkey = [\"header:x-api-key\"]\nmissing_key = \"refuse\""),
    ));
    let (parts, body) = client::get_once(refuse.addr, "/api/a").await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("x-api-key"), "the client is told what is missing: {body:?}");
    let shared = Sluice::start(&config_with(upstream.addr, &format!("{SLOW}\nkey = [\"header:x-api-key\"]")));
    let mut conn = client::h1(shared.addr).await;
    for _ in 0..5 {
        assert_eq!(send1(&mut conn, client::get("/api/a")).await.0.status, StatusCode::OK);
    }
    // Every request without the header shares one bucket, now empty; a key of its own is not.
    let mut other = client::h1(shared.addr).await;
    assert_eq!(send1(&mut other, client::get("/api/a")).await.0.status, StatusCode::TOO_MANY_REQUESTS);
    let keyed = Request::get("/api/a").header("host", "t").header("x-api-key", "mine").body(full(""));
    assert_eq!(send1(&mut other, keyed.expect("request")).await.0.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_keeps_the_limit_keeps_its_counts() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config_with(upstream.addr, &format!("{SLOW}\nkey = [\"client_ip\"]")));
    let mut conn = client::h1(sluice.addr).await;
    for _ in 0..5 {
        assert_eq!(send1(&mut conn, client::get("/api/a")).await.0.status, StatusCode::OK);
    }
    assert_eq!(send1(&mut conn, client::get("/api/a")).await.0.status, StatusCode::TOO_MANY_REQUESTS);
    // A reload that changes something else (a route's timeout).
    let path = sluice.dir.path.join("sluice.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let changed = text.replace("[[route]]\nupstream = \"up\"", "[[route]]\nupstream = \"up\"\ntimeout = \"9s\"");
    assert_ne!(changed, text);
    std::fs::write(&path, changed).expect("write config");
    let mut admin = client::h1(sluice.admin.expect("admin")).await;
    let request = Request::post("/reload").header("host", "a").body(full("")).expect("request");
    let (parts, body) = send1(&mut admin, request).await;
    assert_eq!(parts.status, StatusCode::OK, "{body:?}");
    assert_eq!(
        send1(&mut conn, client::get("/api/a")).await.0.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the client's bucket is still empty after the reload"
    );
}

#[test]
fn a_bad_rate_limit_is_named_with_its_line_and_fix() {
    let dir = support::TempDir::new();
    let path = dir.path.join("bad.toml");
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n[rate_limit.x]\nrate = \"10/d\"\nkey = [\"cookie:a\"]\nscope = \"global\"\n\
                [[route]]\nupstream = \"up\"\nrate_limits = [\"y\"]\n[upstream.up]\nendpoints = [\"127.0.0.1:1\"]\n";
    std::fs::write(&path, text).expect("write");
    let output = support::sluice_command(None).args(["check", "--config"]).arg(&path).output().expect("run check");
    let printed = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    for expected in [
        "bad.toml:4: rate_limit.x.rate: \"10/d\" has unknown unit \"d\"",
        "bad.toml:5: rate_limit.x.key: \"cookie:a\" is not a key part",
        "bad.toml:6: rate_limit.x.redis: is missing",
        "bad.toml:9: route[0].rate_limits: no rate limit named \"y\" (defined: x)",
    ] {
        assert!(printed.contains(expected), "{expected:?} in:\n{printed}");
    }
}

/// `sluice bench` above the limit: it counts the 429s and reports the admitted
/// requests' latency apart from the refusals' (which are fast, and would hide it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_bench_above_the_limit_reports_admitted_latency_apart_from_refusals() {
    let upstream = Upstream::start(|_: http::Request<hyper::body::Incoming>| async {
        tokio::time::sleep(Duration::from_millis(20)).await; // the upstream's work
        http::Response::new(full("ok"))
    })
    .await;
    let sluice = Sluice::start(&config_with(upstream.addr, "rate = \"50/s\"\nburst = 5\nkey = [\"route\"]"));
    let url = format!("http://{}/api/x", sluice.addr);
    let output = tokio::task::spawn_blocking(move || {
        let args = ["bench", "--rate", "200", "-d", "2s", "-c", "8", "-t", "1", "--json", url.as_str()];
        support::sluice_command(None).args(args).output().expect("run sluice bench")
    })
    .await
    .expect("join");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let codes = &report["status_codes"];
    let (admitted, refused) = (codes["200"].as_u64().unwrap_or(0), codes["429"].as_u64().unwrap_or(0));
    assert!(admitted > 0 && refused > admitted, "{codes}");
    let admitted_p99 = report["admitted_latency_ms"]["p99"].as_f64().expect("admitted latency");
    let refused_p99 = report["refused_latency_ms"]["p99"].as_f64().expect("refused latency");
    assert!(admitted_p99 >= 20.0, "the admitted went to the upstream (20 ms): {admitted_p99}");
    assert!(refused_p99 < admitted_p99, "refusals are answered at once: {refused_p99} against {admitted_p99}");
}
