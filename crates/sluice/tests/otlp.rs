//! Span export (`[tracing]`): a real HTTP collector started by the test receives
//! OTLP/HTTP JSON; each sampled request is a server span with a client span per
//! upstream try; sampling follows the client's traceparent, else the ratio; a collector
//! that is down or stuck costs no request and is counted in the metrics.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::Value;
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::Sluice;
use tokio::sync::watch;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: keeps every span it is sent, with what each export carried.
struct Collector {
    upstream: Upstream,
    spans: watch::Receiver<Vec<Value>>,
    exports: Arc<Mutex<Vec<(String, http::HeaderMap, Value)>>>,
}

impl Collector {
    async fn start() -> Collector {
        let (tx, spans) = watch::channel(Vec::new());
        let tx = Arc::new(tx);
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&exports);
        let upstream = Upstream::start(move |req: Request<hyper::body::Incoming>| {
            let (tx, kept) = (Arc::clone(&tx), Arc::clone(&kept));
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.expect("export body").to_bytes();
                let export: Value = serde_json::from_slice(&bytes).expect("an export is JSON");
                let mut spans = Vec::new();
                for resource in export["resourceSpans"].as_array().expect("resourceSpans") {
                    for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
                        spans.extend(scope["spans"].as_array().expect("spans").iter().cloned());
                    }
                }
                kept.lock().expect("lock").push((parts.uri.path().to_string(), parts.headers, export));
                tx.send_modify(|all| all.extend(spans));
                Response::new(full("{}"))
            }
        })
        .await;
        Collector { upstream, spans, exports }
    }

    /// Every span received once there are at least `n`.
    async fn wait_spans(&self, n: usize) -> Vec<Value> {
        let mut rx = self.spans.clone();
        let seen = tokio::time::timeout(support::WAIT, rx.wait_for(|s| s.len() >= n)).await;
        seen.expect("the collector got the spans").map(|spans| spans.clone()).expect("watch")
    }
}

fn tracing_table(collector: SocketAddr, extra: &str) -> String {
    format!("[tracing]\notlp_endpoint = \"http://{collector}/v1/traces\"\nflush_interval = \"20ms\"\n{extra}")
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attrs = span["attributes"].as_array()?;
    let found = attrs.iter().find(|a| a["key"] == key)?;
    found["value"].as_object()?.values().next()
}

fn nanos(span: &Value, field: &str) -> u64 {
    span[field].as_str().and_then(|s| s.parse().ok()).expect("a time in nanoseconds")
}

async fn get_with(addr: SocketAddr, path: &str, traceparent: Option<&str>) -> (StatusCode, String) {
    let mut conn = client::h1(addr).await;
    let mut request = Request::get(path).header("host", "api.test");
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    let (parts, body) = send1(&mut conn, request.body(full("")).expect("request")).await;
    (parts.status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_with_a_child_span_per_upstream_try() {
    let collector = Collector::start().await;
    // The first request gets a 503 (retried), the next ones a 200 naming the traceparent.
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let upstream = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let traceparent = req.headers().get("traceparent").map(|v| v.to_str().unwrap_or("").to_string());
        async move {
            let mut response = Response::new(full(traceparent.unwrap_or_default()));
            if n == 0 {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .await;
    let retry = "[upstream.up.retry]\nretries = 2\non = [\"503\"]\nbackoff = \"1ms\"\n";
    let headers = "[tracing.headers]\nx-api-key = \"secret-key\"\n";
    let config = support::simple_config(&[upstream.addr], retry)
        + &tracing_table(collector.upstream.addr, &format!("service_name = \"edge-test\"\n{headers}"));
    // With the access log on too: each reader gets the record.
    let sluice = Sluice::start(&support::with_access_log(&config));
    let (status, sent_upstream) =
        get_with(sluice.addr, "/items/7?full=1", Some(&format!("00-{TRACE}-{PARENT}-01"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one retry after the 503");

    let spans = collector.wait_spans(3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans.iter().find(|s| s["kind"] == 2).expect("a server span");
    let tries: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    assert_eq!(tries.len(), 2, "a client span per upstream try");
    assert!(spans.iter().all(|s| s["traceId"] == TRACE), "the client's trace is continued");
    assert_eq!(server["parentSpanId"], PARENT, "the client's span is the parent");
    let server_id = server["spanId"].as_str().expect("span id");
    assert_eq!(server_id.len(), 16);
    assert_eq!(sent_upstream, format!("00-{TRACE}-{server_id}-01"), "the upstream's parent is sluice's span");
    assert_eq!(attr(server, "http.request.method").expect("method"), "GET");
    assert_eq!(attr(server, "url.path").expect("path"), "/items/7");
    assert_eq!(attr(server, "url.query").expect("query"), "full=1");
    assert_eq!(attr(server, "server.address").expect("host"), "api.test");
    assert_eq!(attr(server, "http.response.status_code").expect("status"), "200");
    assert!(server.get("status").is_none(), "a 200 is not an error");

    let (first, second) = if nanos(tries[0], "startTimeUnixNano") <= nanos(tries[1], "startTimeUnixNano") {
        (tries[0], tries[1])
    } else {
        (tries[1], tries[0])
    };
    for child in [first, second] {
        assert_eq!(child["parentSpanId"], server_id);
        assert_ne!(child["spanId"], server_id);
        assert_eq!(attr(child, "server.port").expect("port"), &upstream.addr.port().to_string());
        assert!(nanos(child, "startTimeUnixNano") >= nanos(server, "startTimeUnixNano"));
        assert!(nanos(child, "endTimeUnixNano") <= nanos(server, "endTimeUnixNano"));
        assert!(nanos(child, "startTimeUnixNano") <= nanos(child, "endTimeUnixNano"));
    }
    assert_ne!(first["spanId"], second["spanId"]);
    assert_eq!(attr(first, "error.type").expect("why the first try failed"), "retried_status");
    assert_eq!(first["status"]["code"], 2, "a retried 503 is an error");
    assert!(nanos(first, "endTimeUnixNano") <= nanos(second, "startTimeUnixNano"), "the retry follows the first try");
    assert_eq!(attr(second, "http.response.status_code").expect("status"), "200");
    assert_eq!(attr(second, "http.request.resend_count").expect("resend"), "1");

    let logged = sluice.records(1);
    assert_eq!(attr(server, "sluice.request_id").expect("request id"), &logged[0]["request_id"]);
    assert_eq!(logged[0]["trace_id"], TRACE);
    assert_eq!(logged[0]["attempts"], 2);

    let exports = collector.exports.lock().expect("lock").clone();
    let (path, headers, export) = &exports[0];
    assert_eq!(path, "/v1/traces");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-api-key"], "secret-key");
    let resource = &export["resourceSpans"][0]["resource"];
    assert_eq!(attr(resource, "service.name").expect("service name"), "edge-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_clients_flag_and_else_the_ratio() {
    let collector = Collector::start().await;
    let upstream = Upstream::hello().await;
    let config =
        support::simple_config(&[upstream.addr], "") + &tracing_table(collector.upstream.addr, "sample_ratio = 0.0\n");
    let sluice = Sluice::start(&config);
    // Not sampled: no traceparent at ratio 0, and a parent that did not sample.
    for _ in 0..5 {
        assert_eq!(get_with(sluice.addr, "/none", None).await.0, StatusCode::OK);
        let unsampled = format!("00-{TRACE}-{PARENT}-00");
        assert_eq!(get_with(sluice.addr, "/parent-says-no", Some(&unsampled)).await.0, StatusCode::OK);
    }
    // Sampled by its parent, whatever the ratio.
    let sampled = format!("00-{TRACE}-{PARENT}-01");
    assert_eq!(get_with(sluice.addr, "/parent-says-yes", Some(&sampled)).await.0, StatusCode::OK);
    let spans = collector.wait_spans(2).await;
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    assert_eq!(servers.len(), 1, "only the sampled request is exported: {spans:#?}");
    assert_eq!(attr(servers[0], "url.path").expect("path"), "/parent-says-yes");
}

async fn metrics(sluice: &Sluice) -> String {
    let mut conn = client::h1(sluice.admin.expect("admin")).await;
    let request = Request::get("/metrics").header("host", "admin").body(full("")).expect("request");
    String::from_utf8_lossy(&send1(&mut conn, request).await.1).into_owned()
}

fn spans_metric(page: &str, result: &str) -> u64 {
    let series = format!("sluice_trace_spans_total{{result=\"{result}\"}} ");
    page.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Polls the admin listener until `done` holds for the metrics page (bounded by WAIT).
async fn wait_metrics(sluice: &Sluice, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let page = metrics(sluice).await;
        if done(&page) || tokio::time::Instant::now() > deadline {
            return page;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_stuck_costs_no_request() {
    let upstream = Upstream::hello().await;
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\n";
    // Down: nothing listens at the collector's address.
    let down = support::dead_port().await;
    let sluice = Sluice::start(&(support::simple_config(&[upstream.addr], "") + &tracing_table(down, "") + admin));
    for i in 0..20 {
        assert_eq!(get_with(sluice.addr, &format!("/{i}"), None).await.0, StatusCode::OK);
    }
    // Each request is two spans: its own and its one upstream try's.
    let page = wait_metrics(&sluice, |page| spans_metric(page, "failed") >= 40).await;
    assert_eq!(spans_metric(&page, "failed"), 40, "20 requests' spans lost: {page}");
    assert_eq!(spans_metric(&page, "exported"), 0);
    sluice.wait_for_log("span export failed");

    // Stuck: the collector accepts and never answers; the queue holds one span, so the
    // rest are dropped at once instead of piling up, and requests go on.
    let stuck = Upstream::start(|_req| std::future::pending::<Response<support::upstream::TestBody>>()).await;
    let extra = "batch_size = 1\nqueue = 1\ntimeout = \"30s\"\n";
    let sluice =
        Sluice::start(&(support::simple_config(&[upstream.addr], "") + &tracing_table(stuck.addr, extra) + admin));
    for i in 0..40 {
        assert_eq!(get_with(sluice.addr, &format!("/{i}"), None).await.0, StatusCode::OK);
    }
    stuck.wait_accepted(1).await;
    let page = wait_metrics(&sluice, |page| spans_metric(page, "dropped") >= 60).await;
    assert!(spans_metric(&page, "dropped") >= 60, "a stuck collector's spans are dropped, not queued: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_copy_is_a_span_and_the_losing_try_says_so() {
    let collector = Collector::start().await;
    // `slow` answers after 2 s; `fast` at once. Round robin starts one of every two
    // requests at `slow`, which is then hedged to `fast` after 20 ms.
    let slow = Upstream::start(|_req| async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        Response::new(full("slow"))
    })
    .await;
    let fast = Upstream::hello().await;
    let hedging = "balance = \"round_robin\"\n[upstream.up.retry]\nhedge_after = \"20ms\"\n";
    let config = support::one_worker(&support::simple_config(&[slow.addr, fast.addr], hedging))
        + &tracing_table(collector.upstream.addr, "");
    let sluice = Sluice::start(&config);
    for i in 0..2 {
        let (status, body) = get_with(sluice.addr, &format!("/{i}"), None).await;
        assert_eq!((status, body.starts_with("hello")), (StatusCode::OK, true), "{body}");
    }
    // Two requests: one with one try, the hedged one with two.
    let spans = collector.wait_spans(5).await;
    let hedged = spans.iter().find(|s| attr(s, "sluice.hedge").is_some()).expect("a hedged try's span");
    assert_eq!(attr(hedged, "server.port").expect("port"), &fast.addr.port().to_string());
    assert_eq!(attr(hedged, "http.response.status_code").expect("the hedge answered"), "200");
    let loser = spans
        .iter()
        .find(|s| s["parentSpanId"] == hedged["parentSpanId"] && s["spanId"] != hedged["spanId"])
        .expect("the first try's span");
    assert_eq!(attr(loser, "server.port").expect("port"), &slow.addr.port().to_string());
    assert_eq!(attr(loser, "error.type").expect("why it ended"), "hedge_lost");
    assert!(loser.get("status").is_none(), "losing a race is not an error");
    let waited = nanos(loser, "endTimeUnixNano") - nanos(loser, "startTimeUnixNano");
    assert!(waited < 1_000_000_000, "the loser ends when the race is decided, not when it would have answered");
}
