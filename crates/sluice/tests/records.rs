//! One outcome record per request, whatever way the request ends, as the access log
//! shows it: success, a 4xx, each 5xx sluice makes, a client gone mid-body, an upstream
//! that breaks off mid-body, an HTTP/2 stream reset. (The WebSocket tunnel's record is
//! in upgrade_tls.rs.)

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client::{self, send1};
use support::raw::{roundtrip, Answer, RawUpstream};
use support::upstream::{full, Upstream, ZeroBody};
use support::{read_until, Sluice};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// An upstream that answers by path: /nf 404, /slow never in time, /held until
/// released, /big 64 MiB, anything else 200 "hello".
async fn app(release: Arc<Notify>) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| {
        let release = Arc::clone(&release);
        async move {
            match req.uri().path() {
                "/nf" => Response::builder().status(404).body(full("nope")).expect("response"),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(30)).await; // far beyond the route's 300ms
                    Response::new(full("late"))
                }
                "/held" => {
                    release.notified().await;
                    Response::new(full("released"))
                }
                "/big" => Response::new(http_body_util::BodyExt::boxed(ZeroBody::new(64 << 20))),
                _ => Response::new(full("hello")),
            }
        }
    })
    .await
}

fn config(app: &Upstream, raw: &RawUpstream, dead: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "raw"
path_prefix = "/raw"
upstream = "raw"

[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "dead"

[[route]]
name = "slow"
path_prefix = "/slow"
upstream = "app"
timeout = "300ms"

[[route]]
name = "held"
path_prefix = "/held"
upstream = "one"

[[route]]
name = "main"
upstream = "app"

[upstream.app]
endpoints = ["{app}"]

[upstream.one]
endpoints = ["{app}"]
pool = {{ max_connections = 1 }}
queue_timeout = "200ms"

[upstream.raw]
endpoints = ["{raw}"]

[upstream.dead]
endpoints = ["{dead}"]

[access_log]
path = "access.log"
"#,
        app = app.addr,
        raw = raw.addr,
    )
}

async fn get_id(addr: std::net::SocketAddr, path: &str, id: &str) -> StatusCode {
    let mut conn = client::h1(addr).await;
    let request = Request::get(path).header("host", "records.test").header("x-request-id", id).body(full(""));
    send1(&mut conn, request.expect("request")).await.0.status
}

#[tokio::test(flavor = "multi_thread")]
async fn every_way_a_request_ends_leaves_exactly_one_record() {
    let release = Arc::new(Notify::new());
    let app = app(Arc::clone(&release)).await;
    let raw = RawUpstream::start(|request| {
        if request.starts_with("GET /raw/cut") {
            Answer::Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
        } else {
            Answer::Close(Vec::new()) // closes without a response
        }
    })
    .await;
    let dead = support::dead_port().await;
    let mut sluice = Sluice::start(&config(&app, &raw, dead));
    let addr = sluice.addr;

    assert_eq!(get_id(addr, "/ok", "r-ok").await, 200);
    assert_eq!(get_id(addr, "/nf", "r-404").await, 404);
    assert_eq!(get_id(addr, "/dead/x", "r-502-connect").await, 502);
    assert_eq!(get_id(addr, "/raw/reset", "r-502-exchange").await, 502);
    assert_eq!(get_id(addr, "/slow", "r-504").await, 504);
    // Counted before: with per-core workers, earlier requests may have opened an app
    // connection on each worker.
    let before = app.accepted();
    let holder = tokio::spawn(get_id(addr, "/held", "r-held"));
    app.wait_accepted(before + 1).await; // the held request has the group's only connection
    assert_eq!(get_id(addr, "/held", "r-503").await, 503);
    release.notify_one();
    assert_eq!(holder.await.expect("holder"), 200);
    // sluice's own 4xx: a path that climbs above the root... encoded as %2F (rejected).
    let bad = roundtrip(addr, b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\nx-request-id: r-400\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    // The upstream breaks off mid-body: the client sees the truncation.
    let cut = roundtrip(addr, b"GET /raw/cut HTTP/1.1\r\nHost: x\r\nx-request-id: r-cut\r\n\r\n").await;
    assert!(cut.ends_with("0123456789"), "{cut}");
    // The client leaves in the middle of a 64 MiB body.
    let mut gone = tokio::net::TcpStream::connect(addr).await.expect("connect");
    gone.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nx-request-id: r-gone\r\n\r\n").await.expect("write");
    read_until(&mut gone, "content-length: 67108864").await;
    drop(gone);
    // An HTTP/2 client resets its stream in the middle of the body.
    let mut h2 = client::h2(addr).await;
    let mut request = client::get2("/big");
    request.headers_mut().insert("x-request-id", "r-h2-reset".parse().expect("value"));
    let response = client::send_head2(&mut h2, request).await;
    assert_eq!(response.status(), 200);
    drop(response);

    let expect = [
        ("r-ok", 200, "complete", None, "main", Some("app")),
        ("r-404", 404, "complete", None, "main", Some("app")),
        ("r-502-connect", 502, "complete", Some("upstream_connect"), "dead", Some("dead")),
        ("r-502-exchange", 502, "complete", Some("upstream_exchange"), "raw", Some("raw")),
        ("r-504", 504, "complete", Some("upstream_timeout"), "slow", Some("app")),
        ("r-503", 503, "complete", Some("upstream_queue_timeout"), "held", Some("one")),
        ("r-held", 200, "complete", None, "held", Some("one")),
        ("r-cut", 200, "upstream_broke", Some("upstream_body"), "raw", Some("raw")),
        ("r-gone", 200, "client_gone", None, "main", Some("app")),
        ("r-h2-reset", 200, "client_gone", None, "main", Some("app")),
    ];
    for (id, status, end, error, route, upstream) in expect {
        let r = sluice.record(id);
        assert_eq!(r["status"], status, "{id}: {r}");
        assert_eq!(r["end"], end, "{id}: {r}");
        assert_eq!(r["error"].as_str(), error, "{id}: {r}");
        assert_eq!(r["route"], route, "{id}: {r}");
        assert_eq!(r["upstream"].as_str(), upstream, "{id}: {r}");
        assert_eq!(r["client"].as_str().map(|c| c.starts_with("127.0.0.1:")), Some(true), "{id}: {r}");
        assert!(r["total_ms"].as_f64().is_some_and(|t| t >= 0.0), "{id}: {r}");
        assert_eq!(r["method"], "GET", "{id}: {r}");
    }
    let ok = sluice.record("r-ok");
    assert_eq!(
        (ok["target"].as_str(), ok["bytes_out"].as_u64(), ok["attempts"].as_u64()),
        (Some("/ok"), Some(5), Some(1))
    );
    assert_eq!(ok["endpoint"], app.addr.to_string());
    assert!(ok["upstream_head_ms"].as_f64().is_some(), "{ok}");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(sluice.record("r-h2-reset")["protocol"], "HTTP/2.0");
    let connect = sluice.record("r-502-connect");
    assert_eq!((connect["endpoint"].as_str(), connect["attempts"].as_u64()), (Some(&*dead.to_string()), Some(1)));
    assert!(connect["upstream_head_ms"].is_null(), "no response head came: {connect}");
    let gone = sluice.record("r-gone");
    assert!(gone["bytes_out"].as_u64().is_some_and(|n| n < 64 << 20), "{gone}");
    assert_eq!(sluice.record("r-cut")["bytes_out"], 10);
    // The 400 came from the connection layer's path check: its id is sluice's own.
    let records = sluice.records(11);
    let bad_path = records.iter().find(|r| r["error"] == "client_bad_path").expect("the 400's record");
    assert_eq!((bad_path["status"].as_u64(), bad_path["route"].as_str()), (Some(400), None));

    // Exactly one each: after a drain (which flushes the log) there are 11 lines for 11 requests.
    sluice.terminate();
    assert!(sluice.wait_exit().success());
    let all = sluice.records(0);
    assert_eq!(all.len(), 11, "{all:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_combined_format_writes_one_apache_style_line() {
    let app = Upstream::hello().await;
    let config =
        support::simple_config(&[app.addr], "") + "\n[access_log]\npath = \"access.log\"\nformat = \"combined\"\n";
    let mut sluice = Sluice::start(&config);
    let mut conn = client::h1(sluice.addr).await;
    let request =
        Request::get("/x?y=1").header("host", "a").header("user-agent", "t\"ester").header("x-request-id", "c-1");
    assert_eq!(send1(&mut conn, request.body(full("")).expect("request")).await.0.status, 200);
    drop(conn);
    sluice.terminate();
    assert!(sluice.wait_exit().success());
    let text = std::fs::read_to_string(sluice.dir.path.join("access.log")).expect("log");
    let line = text.lines().next().expect("a line");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("\"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"t\\x22ester\" request_id=c-1 route=/ upstream=up"),
        "{line}"
    );
    assert!(line.contains(" end=complete error=-"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_access_log_queue_drops_lines_and_counts_them_without_blocking_requests() {
    let app = Upstream::hello().await;
    let config = support::simple_config(&[app.addr], "") + "\n[access_log]\npath = \"access.log\"\nqueue = 1\n";
    let mut sluice = Sluice::start(&config);
    // 64 requests at once: far more than a queue of one line takes between two wake-ups
    // of the writer thread (every 20 ms); every request is still answered.
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let addr = sluice.addr;
            tokio::spawn(async move { client::get_once(addr, "/burst").await.0.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request"), 200);
    }
    sluice.terminate();
    assert!(sluice.wait_exit().success());
    let written = sluice.records(0).len();
    let log = sluice.log();
    let dropped: usize = log
        .lines()
        .find_map(|l| l.split("access_log_dropped=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts dropped lines");
    assert!(dropped > 0, "{log}");
    assert_eq!(written + dropped, 64, "every record is either written or counted as dropped");
    assert!(log.contains("access log queue was full; lines were dropped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_plain_is_exactly_apaches_combined_format() {
    let app = Upstream::hello().await;
    let config = support::simple_config(&[app.addr], "")
        + "\n[access_log]\npath = \"access.log\"\nformat = \"combined-plain\"\n";
    let mut sluice = Sluice::start(&config);
    let mut conn = client::h1(sluice.addr).await;
    let request =
        Request::get("/x?y=1").header("host", "a").header("user-agent", "curl/8").header("referer", "http://r/");
    assert_eq!(send1(&mut conn, request.body(full("")).expect("request")).await.0.status, 200);
    drop(conn);
    sluice.terminate();
    assert!(sluice.wait_exit().success());
    let text = std::fs::read_to_string(sluice.dir.path.join("access.log")).expect("log");
    let line = text.lines().next().expect("a line");
    // %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i", and nothing after.
    let (head, rest) = line.split_once(" [").expect("the time");
    assert_eq!(head, "127.0.0.1 - -");
    let (time, request) = rest.split_once("] ").expect("the time's end");
    assert_eq!(time.len(), "03/Dec/2026:10:00:00 +0000".len(), "{time}");
    assert_eq!(request, "\"GET /x?y=1 HTTP/1.1\" 200 12 \"http://r/\" \"curl/8\"", "{line}");
}
