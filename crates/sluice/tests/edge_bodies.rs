//! Request bodies at the edge: an upstream's early answer (413, 401) reaches the client
//! with `Expect: 100-continue` and without it; HTTP/2 cookies reach an HTTP/1.1
//! upstream as one field; a client that pauses its body gets 408, not a 504.

mod support;

use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use support::client;
use support::raw::RawUpstream;
use support::upstream::{full, Upstream};
use support::{read_until, simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that refuses uploads at once, without reading them: 413.
async fn refusing_upstream() -> Upstream {
    Upstream::start(|_req: Request<Incoming>| async move {
        let mut response = http::Response::new(full("too large\n"));
        *response.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
        response
    })
    .await
}

/// An upstream that reads the whole body and answers `got N` (its length).
async fn counting_upstream() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let n = support::upstream::count_body(req.into_body()).await;
        http::Response::new(full(format!("got {n}")))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_lets_the_upstream_refuse_before_the_body() {
    let upstream = refusing_upstream().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    // A length over request_buffer, and a chunked body of unknown size (which sluice
    // answered with its own 100 before): the client sends nothing until it hears.
    for framing in ["Content-Length: 104857600", "Transfer-Encoding: chunked"] {
        for _ in 0..3 {
            let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
            let head = format!("PUT /big HTTP/1.1\r\nHost: x\r\n{framing}\r\nExpect: 100-continue\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("write head");
            let text = String::from_utf8_lossy(&read_until(&mut stream, "too large\n").await).into_owned();
            assert!(text.starts_with("HTTP/1.1 413 "), "{framing}: the upstream's answer, with no 100 first: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_relayed_when_the_upstream_takes_a_large_body() {
    let upstream = counting_upstream().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let size = 256 * 1024;
    // A length over request_buffer, and a chunked body (size unknown, so it streams).
    let cases = [
        (format!("Content-Length: {size}"), vec![b'x'; size], size),
        ("Transfer-Encoding: chunked".to_string(), b"5\r\nhello\r\n0\r\n\r\n".to_vec(), 5),
    ];
    for (framing, body, length) in cases {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        let head = format!("PUT /big HTTP/1.1\r\nHost: x\r\n{framing}\r\nExpect: 100-continue\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        let go = String::from_utf8_lossy(&read_until(&mut stream, "\r\n\r\n").await).into_owned();
        assert!(go.starts_with("HTTP/1.1 100 Continue\r\n"), "{framing}: {go}");
        stream.write_all(&body).await.expect("body");
        let text = String::from_utf8_lossy(&read_until(&mut stream, &format!("got {length}")).await).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 "), "{framing}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_answers_mid_upload_is_heard_not_turned_into_a_502() {
    let upstream = refusing_upstream().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    for _ in 0..6 {
        let stream = TcpStream::connect(sluice.addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let size: usize = 100 << 20;
        let upload = tokio::spawn(async move {
            let head = format!("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
            writer.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..size / chunk.len() {
                writer.write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("too large\n") {
            match tokio::time::timeout(WAIT, reader.read(&mut buf)).await.expect("an answer in time") {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                other => panic!("connection ended before the answer ({other:?}): {}", String::from_utf8_lossy(&seen)),
            }
        }
        assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 413 "), "{}", String::from_utf8_lossy(&seen));
        upload.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_split_cookies_reach_an_http1_upstream_as_one_field() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut sender = client::h2(sluice.addr).await;
    let request = Request::get("http://localhost/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(full(""))
        .expect("request");
    let (parts, _) = client::send2(&mut sender, request).await;
    assert_eq!(parts.status, 200);
    let forwarded = upstream.requests().pop().expect("forwarded");
    assert_eq!(forwarded.matches("cookie: ").count(), 1, "{forwarded}");
    assert!(forwarded.contains("cookie: a=1; b=2; c=3\r\n"), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pauses_its_body_gets_408_and_holds_no_upstream_connection() {
    let upstream = RawUpstream::ok().await;
    let config = simple_config(&[upstream.addr], "")
        .replace("[[listener]]", "[server]\nclient_body_timeout = \"300ms\"\n\n[[listener]]");
    let sluice = Sluice::start(&config);
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    stream.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").await.expect("write");
    let started = std::time::Instant::now();
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text)).await.expect("answer").expect("read");
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250), "after the body timeout, not before");
    assert_eq!(upstream.accepted(), 0, "the buffered body never took an upstream connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spooled_upload_holds_no_upstream_connection_and_leaves_no_file() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let length = req.headers().get("content-length").map(|v| v.to_str().unwrap_or("?").to_string());
        let n = support::upstream::count_body(req.into_body()).await;
        http::Response::new(full(format!("got {n} (content-length {length:?})")))
    })
    .await;
    let spool = support::TempDir::new();
    let config = simple_config(&[upstream.addr], "")
        .replace("[[listener]]", &format!("[server]\nspool_dir = \"{}\"\n\n[[listener]]", spool.path.display()))
        .replace(
            "upstream = \"up\"",
            "upstream = \"up\"\nrequest_buffer = \"1KiB\"\nmax_request_body = \"1MiB\"\nlarge_request_bodies = \"spool\"",
        );
    let sluice = Sluice::start(&config);
    let size = 256 * 1024;
    let mut upload = TcpStream::connect(sluice.addr).await.expect("connect");
    upload
        .write_all(format!("PUT /file HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .await
        .expect("head");
    upload.write_all(&vec![b'u'; size - 1024]).await.expect("most of the body");
    // Another request goes through meanwhile; the unfinished upload has no upstream connection.
    let (parts, _) = client::get_once(sluice.addr, "/other").await;
    assert_eq!(parts.status, 200);
    assert_eq!(upstream.accepted(), 1, "only the other request reached the upstream");
    // The file is created and unlinked on the blocking pool, which a loaded machine may
    // run a moment later: wait for the folder to be empty while the upload is unfinished.
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_dir(&spool.path).expect("spool dir").count() > 0 {
        assert!(std::time::Instant::now() < deadline, "the spool file is unlinked while in use");
        tokio::time::sleep(Duration::from_millis(10)).await; // polling the folder, not synchronising
    }
    upload.write_all(&vec![b'u'; 1024]).await.expect("the rest");
    let text = String::from_utf8_lossy(&read_until(&mut upload, "\"))").await).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains(&format!("got {size} (content-length Some(\"{size}\"))")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_max_request_body_gets_413_also_when_spooled() {
    let upstream = RawUpstream::ok().await;
    let config = simple_config(&[upstream.addr], "").replace(
        "upstream = \"up\"",
        "upstream = \"up\"\nrequest_buffer = \"1KiB\"\nmax_request_body = \"4KiB\"\nlarge_request_bodies = \"spool\"",
    );
    let sluice = Sluice::start(&config);
    let chunk = format!("800\r\n{}\r\n", "c".repeat(0x800));
    let wire = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk.repeat(4));
    let text = support::raw::roundtrip(sluice.addr, wire.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert_eq!(upstream.accepted(), 0);
}

/// An h2c connection whose streams open with a 16 KiB window, so that a response the
/// test does not read stalls at once.
async fn narrow_h2(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<support::upstream::TestBody> {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .handshake(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// 1 MiB at /big, "ok" elsewhere.
async fn big_upstream() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        if req.uri().path() == "/big" {
            return http::Response::new(full(vec![b'b'; 1 << 20]));
        }
        http::Response::new(full("ok"))
    })
    .await
}

fn one_connection_pool(upstream: &Upstream, server: &str, route: &str) -> String {
    simple_config(&[upstream.addr], "pool = { max_connections = 1 }\nqueue_timeout = \"2s\"")
        .replace("[[listener]]", &format!("[server]\n{server}\n\n[[listener]]"))
        .replace("upstream = \"up\"", &format!("upstream = \"up\"\n{route}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_does_not_read_holds_no_upstream_connection() {
    let upstream = big_upstream().await;
    let sluice = Sluice::start(&one_connection_pool(&upstream, "", "response_buffer = \"2MiB\""));
    let mut sender = narrow_h2(sluice.addr).await;
    let stalled = client::send_head2(&mut sender, client::get2("/big")).await;
    assert_eq!(stalled.status(), 200);
    // The only pooled connection is free again: the 1 MiB was read ahead of the client.
    let (parts, body) = client::send2(&mut sender, client::get2("/small")).await;
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok"[..]));
    let (_, big) = client::read(stalled).await;
    assert_eq!(big.len(), 1 << 20, "and the stalled response is whole when read");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_stops_reading_is_cut_after_send_timeout() {
    let upstream = big_upstream().await;
    let config = one_connection_pool(&upstream, "send_timeout = \"300ms\"", "response_buffer = \"64KiB\"");
    let sluice = Sluice::start(&config);
    let mut sender = narrow_h2(sluice.addr).await;
    let stalled = client::send_head2(&mut sender, client::get2("/big")).await;
    assert_eq!(stalled.status(), 200);
    sluice.wait_for_log("HTTP/2 client took no response bytes for send_timeout");
    let (parts, _) = client::send2(&mut sender, client::get2("/small")).await;
    assert_eq!(parts.status, 200, "the pooled connection was given up");
    let rest = http_body_util::BodyExt::collect(stalled.into_body()).await;
    assert!(rest.is_err(), "the stalled stream was reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_past_request_buffer_hold_no_upstream_connection_by_default() {
    let upstream = counting_upstream().await;
    // The 40 uploaders against the default pool, scaled to 16 against 8.
    let config = simple_config(&[upstream.addr], "pool = { max_connections = 8 }\nqueue_timeout = \"1s\"")
        .replace("[[listener]]", "[server]\nworker_threads = 1\nclient_body_timeout = \"60s\"\n\n[[listener]]");
    let sluice = Sluice::start(&config);
    let mut uploaders = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        stream.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n").await.expect("head");
        stream.write_all(&vec![b'u'; 70_000]).await.expect("70 KB, then nothing for a while");
        uploaders.push(stream);
    }
    let mut conn = client::h1(sluice.addr).await;
    let mut ok = 0;
    for _ in 0..20 {
        let (parts, _) = client::send1(&mut conn, client::get("/other")).await;
        ok += usize::from(parts.status == 200);
    }
    assert_eq!(ok, 20, "20 of 20 others served while 16 uploads trickle");
    assert!(upstream.accepted() <= 8, "the upstream saw {} connections", upstream.accepted());
    // An uploader that finishes gets its answer: the spooled body reaches the upstream whole.
    let mut first = uploaders.remove(0);
    first.write_all(&vec![b'u'; 1_000_000 - 70_000]).await.expect("the rest");
    let text = String::from_utf8_lossy(&read_until(&mut first, "got 1000000").await).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
}

/// Sends a 20 MiB PUT over h2c, data as the stream's window allows, until the response
/// comes; returns its status and how many body bytes the client was let send first.
async fn h2_upload_until_answered(addr: std::net::SocketAddr) -> (u16, usize) {
    let io = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(connection);
    let size = 20usize << 20;
    let request = Request::put("http://x/upload").header("content-length", size).body(()).expect("request");
    let (response, mut stream) = h2.send_request(request, false).expect("send");
    tokio::pin!(response);
    let chunk = bytes::Bytes::from(vec![b'u'; 16 * 1024]);
    let mut sent = 0usize;
    loop {
        stream.reserve_capacity(chunk.len());
        tokio::select! {
            answered = &mut response => {
                let response = answered.expect("a response, not a stream error");
                return (response.status().as_u16(), sent);
            }
            capacity = std::future::poll_fn(|cx| stream.poll_capacity(cx)) => {
                match capacity {
                    Some(Ok(n)) if sent < size => {
                        let n = n.min(size - sent);
                        if stream.send_data(chunk.slice(..n), sent + n == size).is_err() {
                            continue; // reset by the server: its answer follows
                        }
                        sent += n;
                    }
                    _ => {
                        // No more window (the stream is done or reset): wait for the answer.
                        let response = tokio::time::timeout(WAIT, &mut response).await.expect("in time");
                        return (response.expect("a response").status().as_u16(), sent);
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstreams_early_answer_to_an_http2_upload_costs_the_client_a_small_window() {
    let upstream = refusing_upstream().await;
    let config = simple_config(&[upstream.addr], "")
        .replace("upstream = \"up\"", "upstream = \"up\"\nlarge_request_bodies = \"stream\"");
    let sluice = Sluice::start(&config);
    for _ in 0..5 {
        let (status, sent) = tokio::time::timeout(WAIT, h2_upload_until_answered(sluice.addr)).await.expect("in time");
        assert_eq!(status, 413, "the upstream's answer, not a stream error");
        // request_buffer (64 KiB, read to decide how to send) and one stream window
        // (64 KiB): hyper's default window let ~1 MiB through before the answer.
        assert!(sent <= 256 * 1024, "the client sent {sent} bytes before the answer");
    }
}
