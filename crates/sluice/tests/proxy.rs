//! Proxying as a client sees it: protocols both ways, headers, pooling, errors.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use support::client::{self, get, get2, send1, send2};
use support::upstream::{full, Upstream};
use support::{one_worker, simple_config, Sluice};

/// An upstream that answers with the request's headers as `name: value` lines.
async fn header_echo() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (name, value) in req.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        let mut response = Response::new(full(text));
        response.headers_mut().insert("connection", "x-upstream-private".parse().expect("value"));
        response.headers_mut().insert("x-upstream-private", "secret".parse().expect("value"));
        response.headers_mut().insert("keep-alive", "timeout=5".parse().expect("value"));
        response
    })
    .await
}

fn header_lines(body: &Bytes) -> String {
    String::from_utf8_lossy(body).to_lowercase()
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_to_http1_forwards_and_rewrites_headers() {
    let upstream = header_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut conn = client::h1(sluice.addr).await;
    let request = Request::get("/items?page=2")
        .header("host", "api.example.com")
        .header("connection", "keep-alive, x-client-private")
        .header("x-client-private", "drop me")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "client-chosen-id")
        .body(full(""))
        .expect("request");
    let (parts, body) = send1(&mut conn, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = header_lines(&body);
    assert!(seen.starts_with("get /items?page=2 http/1.1"), "{seen}");
    assert!(seen.contains("host: api.example.com\n"), "Host kept: {seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "an untrusted client's value is replaced: {seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: api.example.com\n"), "{seen}");
    assert!(seen.contains("via: 1.1 sluice\n"), "{seen}");
    assert!(seen.contains("x-request-id: client-chosen-id\n"), "{seen}");
    for hop in ["x-client-private", "proxy-connection", "keep-alive"] {
        assert!(!seen.contains(&format!("{hop}:")), "{hop} must not reach the upstream: {seen}");
    }
    // Hop-by-hop response headers stop at sluice too.
    assert!(parts.headers.get("x-upstream-private").is_none(), "{:?}", parts.headers);
    assert!(parts.headers.get("keep-alive").is_none(), "{:?}", parts.headers);
    assert_eq!(parts.headers["x-request-id"], "client-chosen-id");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_generated_and_returned() {
    let upstream = header_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut conn = client::h1(sluice.addr).await;
    let (a, body_a) = send1(&mut conn, get("/")).await;
    let (b, _) = send1(&mut conn, get("/")).await;
    let id = a.headers["x-request-id"].to_str().expect("id");
    assert!(id.len() >= 16, "{id}");
    assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"]);
    assert!(header_lines(&body_a).contains(&format!("x-request-id: {id}")), "the upstream sees the same id");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_clients_reach_http1_upstreams() {
    let upstream = header_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut conn = client::h2(sluice.addr).await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let mut conn = conn.clone();
        handles.push(tokio::spawn(async move { send2(&mut conn, get2(&format!("/stream/{i}"))).await }));
    }
    for (i, handle) in handles.into_iter().enumerate() {
        let (parts, body) = handle.await.expect("task");
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, http::Version::HTTP_2);
        let seen = header_lines(&body);
        assert!(seen.starts_with(&format!("get /stream/{i} http/1.1")), "{seen}");
        assert!(seen.contains("host: localhost\n"), ":authority becomes Host: {seen}");
        assert!(seen.contains("via: 2 sluice\n"), "{seen}");
    }
    let (parts, _) = send2(&mut conn, get2("/again")).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_clients_reach_http2_upstreams_over_few_connections() {
    let upstream = header_echo().await;
    let sluice = Sluice::start(&one_worker(&simple_config(&[upstream.addr], "protocol = \"http2\"")));
    let mut handles = Vec::new();
    for i in 0..32 {
        let addr = sluice.addr;
        handles.push(tokio::spawn(async move {
            let mut conn = client::h1(addr).await;
            let mut last = Bytes::new();
            for j in 0..5 {
                let (parts, body) = send1(&mut conn, get(&format!("/c{i}/r{j}"))).await;
                assert_eq!(parts.status, StatusCode::OK);
                last = body;
            }
            last
        }));
    }
    for handle in handles {
        let seen = header_lines(&handle.await.expect("task"));
        assert!(seen.contains(" http/2.0"), "upstream saw HTTP/2: {seen}");
    }
    assert_eq!(upstream.accepted(), 1, "160 requests from 32 clients share one multiplexed connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_style_trailers_pass_end_to_end_over_http2() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.expect("request body").to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        trailers.insert("grpc-message", "ok".parse().expect("value"));
        let body = TrailerBody { data: Some(body), trailers: Some(trailers) }.boxed();
        Response::builder().header("content-type", "application/grpc").body(body).expect("response")
    })
    .await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "protocol = \"http2\""));
    let mut conn = client::h2(sluice.addr).await;
    let request = Request::post("http://localhost/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")).boxed())
        .expect("request");
    let response = conn.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
}

/// One data frame, then trailers: what a unary gRPC response looks like.
struct TrailerBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for TrailerBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_has_its_forwarded_for_extended_and_trace_context_flows_on() {
    let upstream = header_echo().await;
    let config = simple_config(&[upstream.addr], "")
        .replace("[[listener]]", "[server]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n\n[[listener]]");
    let sluice = Sluice::start(&config);
    let mut conn = client::h1(sluice.addr).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get("/t")
        .header("host", "api.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("traceparent", parent)
        .body(full(""))
        .expect("request");
    let (_, body) = send1(&mut conn, request).await;
    let seen = header_lines(&body);
    assert!(seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"), "{seen}");
    let sent = seen.lines().find_map(|l| l.strip_prefix("traceparent: ")).expect("traceparent forwarded");
    assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
    assert_ne!(sent, parent, "sluice's own span is the parent now");

    // Without one, sluice starts a trace; request ids are random, not a counter.
    let (parts, body) = send1(&mut conn, Request::get("/t").header("host", "a").body(full("")).expect("request")).await;
    let fresh = header_lines(&body);
    let started = fresh.lines().find_map(|l| l.strip_prefix("traceparent: ")).expect("a new traceparent");
    assert_eq!(started.len(), 55, "{started}");
    let (next, _) = send1(&mut conn, Request::get("/t").header("host", "a").body(full("")).expect("request")).await;
    let (a, b) = (parts.headers["x-request-id"].as_bytes(), next.headers["x-request-id"].as_bytes());
    assert_eq!((a.len(), b.len()), (32, 32));
    let common_prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    assert!(common_prefix < 8, "consecutive ids share no prefix: {a:?} {b:?}");
}
