//! sluice's HTTP/1.1 layer on the wire: chunked uploads with trailers, pipelining,
//! 100-continue, HTTP/1.0, and malformed or smuggling-shaped requests.

mod support;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::upstream::{full, Upstream};
use support::{simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echoes the request body, and its trailers as `trailer-NAME: value` lines.
async fn body_echo() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let method = req.method().clone();
        let collected = req.into_body().collect().await.expect("request body");
        let mut text = format!("{method} ");
        for (name, value) in collected.trailers().into_iter().flatten() {
            text.push_str(&format!("trailer-{name}: {} ", value.to_str().unwrap_or("?")));
        }
        text.push_str(&String::from_utf8_lossy(&collected.to_bytes()));
        Response::new(full(text))
    })
    .await
}

/// Sends raw bytes and reads until the connection closes or `responses` responses arrived.
async fn exchange(addr: std::net::SocketAddr, wire: &[u8], responses: usize) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(wire).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if text.matches("HTTP/1.1 ").count() >= responses && complete(&text, responses) {
            return text;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("response in time").unwrap_or(0);
        if n == 0 {
            return text;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// True once the last of `n` responses has its whole Content-Length body.
fn complete(text: &str, n: usize) -> bool {
    let Some(last) = text.match_indices("HTTP/1.1 ").nth(n - 1).map(|(i, _)| &text[i..]) else { return false };
    let Some((head, body)) = last.split_once("\r\n\r\n") else { return false };
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|len| body.len() >= len)
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_with_trailers_and_pipelined_requests() {
    let upstream = body_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let wire = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: 42\r\n\r\n\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let text = exchange(sluice.addr, wire, 2).await;
    let mut responses = text.split("HTTP/1.1 ").skip(1);
    let first = responses.next().expect("first response");
    assert!(first.starts_with("200 OK"), "{text}");
    assert!(first.ends_with("POST trailer-x-checksum: 42 hello, world"), "{first}");
    let second = responses.next().expect("pipelined response");
    assert!(second.starts_with("200 OK") && second.ends_with("GET "), "{second}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_gets_a_go_ahead() {
    let upstream = body_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    stream
        .write_all(b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("go-ahead").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n\r\n"));
    stream.write_all(b"data").await.expect("write body");
    let mut rest = Vec::new();
    while !String::from_utf8_lossy(&rest).ends_with("PUT data") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("response").expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_get_a_closed_connection_unless_they_ask_for_keep_alive() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let closed = exchange(sluice.addr, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n", 99).await;
    assert!(closed.starts_with("HTTP/1.1 200 OK") && closed.contains("connection: close"), "{closed}");
    assert!(closed.ends_with("hello GET /old"), "{closed}");
    let kept =
        exchange(sluice.addr, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n", 99).await;
    assert_eq!(kept.matches("HTTP/1.1 200 OK").count(), 2, "{kept}");
    assert!(kept.contains("connection: keep-alive"), "{kept}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_ambiguous_requests_get_4xx_and_a_closed_connection() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let cases: [(&[u8], &str); 5] = [
        (b"GARBAGE\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n", "400"),
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", "505"),
    ];
    for (wire, status) in cases {
        let text = exchange(sluice.addr, wire, 99).await; // reads until sluice closes
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{:?} → {text}", String::from_utf8_lossy(wire));
        assert!(text.contains("connection: close"), "{text}");
        assert!(text.contains("x-request-id: "), "{text}");
    }
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert!(exchange(sluice.addr, huge.as_bytes(), 99).await.starts_with("HTTP/1.1 431 "));
    assert_eq!(upstream.accepted(), 0, "nothing malformed reached the upstream");
    // The process is unharmed.
    let ok = exchange(sluice.addr, b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 99).await;
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
}
