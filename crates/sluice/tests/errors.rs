//! The error responses sluice answers itself: status, cause, request id in the log.

mod support;

use std::future::pending;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client;
use support::upstream::{full, Upstream};
use support::{simple_config, Sluice};

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404() {
    let upstream = Upstream::hello().await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nhost = \"*.example.com\"\npath_prefix = \"/api\"\nmethods = [\"GET\"]\nupstream = \"up\"\n[upstream.up]\nendpoints = [\"{}\"]\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let mut conn = client::h1(sluice.addr).await;
    let cases = [
        ("www.example.com", "GET", "/api/x", StatusCode::OK),
        ("example.com", "GET", "/api/x", StatusCode::NOT_FOUND),
        ("www.example.com", "POST", "/api/x", StatusCode::NOT_FOUND),
        ("www.example.com", "GET", "/apix", StatusCode::NOT_FOUND),
    ];
    for (host, method, path, expected) in cases {
        let request = Request::builder().method(method).uri(path).header("host", host).body(full("")).expect("request");
        let (parts, body) = client::send1(&mut conn, request).await;
        assert_eq!(parts.status, expected, "{method} {host}{path}: {body:?}");
        if expected == StatusCode::NOT_FOUND {
            assert!(String::from_utf8_lossy(&body).contains("no route"), "{body:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_502_with_a_logged_request_id() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let sluice = Sluice::start(&support::with_access_log(&simple_config(&[dead], "")));
    let (parts, body) = client::get_once(sluice.addr, "/").await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("connect to"), "{body:?}");
    let id = parts.headers["x-request-id"].to_str().expect("id").to_string();
    // The request's own log line names it and says why; its record says 502.
    let log = sluice.wait_for_log(&id);
    let line = log.lines().find(|l| l.contains(&id)).expect("the request's own line");
    assert!(line.contains("connect failed"), "{line}");
    assert_eq!(sluice.record(&id)["status"], 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_reset_mid_exchange_is_502() {
    // Accepts, reads a little, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            drop(stream);
        }
    });
    let sluice = Sluice::start(&simple_config(&[addr], ""));
    let (parts, _) = client::get_once(sluice.addr, "/").await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504_after_the_route_timeout() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        pending::<()>().await;
        Response::new(full("never"))
    })
    .await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\ntimeout = \"300ms\"\n[upstream.up]\nendpoints = [\"{}\"]\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let started = std::time::Instant::now();
    let (parts, body) = client::get_once(sluice.addr, "/").await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert!(String::from_utf8_lossy(&body).contains("timeout"), "{body:?}");
}
