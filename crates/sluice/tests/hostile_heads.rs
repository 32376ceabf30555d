//! Request heads as attackers and odd real clients send them (docs/SECURITY.md): floods
//! of empty lines, many small fields, header names with `_`, raw `\` and `..;` in paths,
//! unencoded `"<>` in queries, bare LFs in chunk extensions, malformed HTTP/2 fields.

mod support;

use http::{Request, StatusCode};
use support::client;
use support::raw::{roundtrip, RawUpstream};
use support::upstream::full;
use support::{simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_of(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

/// A config whose header_read_timeout is far beyond any wait of the test, so that an
/// answer within WAIT is sluice's decision, not the timeout's 408.
fn patient(upstream: std::net::SocketAddr) -> String {
    format!("[server]\nheader_read_timeout = \"120s\"\n\n{}", simple_config(&[upstream], ""))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_few_empty_lines_before_a_request_are_ignored_and_more_are_refused() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&patient(upstream.addr));
    let ok = roundtrip(sluice.addr, b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&ok), "200", "RFC 9112 §2.2: {ok}");
    for flood in [&b"\r\n"[..], b"\n", b"\r"] {
        let mut wire = flood.repeat(16);
        wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let refused = roundtrip(sluice.addr, &wire).await;
        assert_eq!(status_of(&refused), "400", "{flood:?} × 16: {refused}");
    }
    assert_eq!(upstream.requests().len(), 1);
}

/// Writes `flood` repeatedly up to `total` bytes or until sluice stops taking them.
async fn flood_until_refused(stream: &mut TcpStream, flood: &[u8], total: usize) -> usize {
    let chunk = flood.repeat(16 * 1024 / flood.len());
    let mut sent = 0;
    while sent < total {
        match tokio::time::timeout(WAIT, stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => break, // refused and closed
            Err(_) => panic!("sluice neither read nor closed within WAIT"),
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_of_empty_lines_are_not_buffered() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&patient(upstream.addr));
    // Warm up the workers and their buffers, then measure.
    for _ in 0..4 {
        let ok = roundtrip(sluice.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status_of(&ok), "200");
    }
    let (before, _) = sluice.memory_kib();
    // 200 connections × 256 KiB of CR/LF (a quarter after a keep-alive request), held
    // open: before, each was buffered whole until the 408, 50 MiB in all.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        if i % 4 == 0 {
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.expect("the first response");
            assert_eq!(&head[9..12], b"200");
        }
        let flood: &[u8] = [&b"\r\n"[..], b"\n", b"\r"][i % 3];
        flood_until_refused(&mut stream, flood, 256 * 1024).await;
        held.push(stream);
    }
    let (after, _) = sluice.memory_kib();
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(grown_mib < 16, "RSS grew by {grown_mib} MiB for 50 MiB of empty lines");
    // Each was answered 400 (or reset after it), never left waiting for a timeout.
    for mut stream in held {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut seen)).await.expect("closed by sluice");
        let text = String::from_utf8_lossy(&seen);
        assert!(read.is_err() || text.is_empty() || text.contains("HTTP/1.1 400"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_small_fields_are_forwarded() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let fields: String = (0..200).map(|i| format!("x-f{i}: v{i}\r\n")).collect();
    let wire = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n");
    let response = roundtrip(sluice.addr, wire.as_bytes()).await;
    assert_eq!(status_of(&response), "200", "{response}");
    let forwarded = &upstream.requests()[0];
    assert!(forwarded.contains("x-f0: v0\r\n") && forwarded.contains("x-f199: v199\r\n"));
    let too_many: String = (0..300).map(|i| format!("x-f{i}: v\r\n")).collect();
    let wire = format!("GET / HTTP/1.1\r\nHost: x\r\n{too_many}\r\n");
    assert_eq!(status_of(&roundtrip(sluice.addr, wire.as_bytes()).await), "431");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let upstream = RawUpstream::ok().await;
    let wire = b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX_Request_Id: forged\r\n\
        Transfer_Encoding: chunked\r\nX-Kept: yes\r\nConnection: close\r\n\r\n";
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    assert_eq!(status_of(&roundtrip(sluice.addr, wire).await), "200");
    let forwarded = upstream.requests()[0].to_ascii_lowercase();
    assert!(!forwarded.contains('_'), "no underscored name reached the upstream: {forwarded}");
    assert!(forwarded.contains("x-kept: yes"));
    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://x/").header("x_forwarded_for", "6.6.6.6").body(full("")).expect("request");
    assert_eq!(client::send2(&mut h2, request).await.0.status, StatusCode::OK);
    assert!(!upstream.requests()[1].to_ascii_lowercase().contains('_'), "HTTP/2 too");
    drop(sluice);

    let allowed = format!("[server]\nunderscores_in_headers = true\n\n{}", simple_config(&[upstream.addr], ""));
    let sluice = Sluice::start(&allowed);
    assert_eq!(status_of(&roundtrip(sluice.addr, wire).await), "200");
    assert!(upstream.requests()[2].to_ascii_lowercase().contains("x_forwarded_for: 6.6.6.6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backslashes_and_dot_segments_with_parameters_cannot_reach_another_route() {
    let (public, admin) = (RawUpstream::ok().await, RawUpstream::ok().await);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\npath_prefix = \"/public\"\nupstream = \"public\"\n[[route]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n[upstream.public]\nendpoints = [\"{}\"]\n[upstream.admin]\nendpoints = [\"{}\"]\n",
        public.addr, admin.addr
    );
    let sluice = Sluice::start(&config);
    let backslash = roundtrip(sluice.addr, b"GET /public/..\\admin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&backslash), "400", "a raw \\ follows escaped_slashes (reject): {backslash}");
    for path in ["/public/..;/admin", "/public/..;jsessionid=1/admin"] {
        let wire = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(&roundtrip(sluice.addr, wire.as_bytes()).await), "200", "{path}");
    }
    assert!(public.requests().is_empty(), "`..;` did not reach /public's upstream as a path it would resolve");
    assert!(admin.requests().iter().all(|r| r.starts_with("GET /admin HTTP/1.1\r\n")), "{:?}", admin.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn quotes_and_angle_brackets_in_a_query_are_forwarded_encoded() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let wire = b"GET /search?q={\"a\":\"<b>\"}&t=`x` HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let response = roundtrip(sluice.addr, wire).await;
    assert_eq!(status_of(&response), "200", "{response}");
    let forwarded = &upstream.requests()[0];
    assert!(forwarded.starts_with("GET /search?q={%22a%22:%22%3Cb%3E%22}&t=%60x%60 HTTP/1.1\r\n"), "{forwarded}");
    for bad in [&b"GET /s?q=a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"GET /s?q=a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n"] {
        assert_eq!(status_of(&roundtrip(sluice.addr, bad).await), "400", "control bytes stay refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_lf_in_a_chunk_extension_is_refused() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let wire = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;a\nb\r\nabcd\r\n0\r\n\r\n";
    assert_eq!(status_of(&roundtrip(sluice.addr, wire).await), "400");
    let fine = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4;a=b\r\nabcd\r\n0\r\n\r\n";
    assert_eq!(status_of(&roundtrip(sluice.addr, fine).await), "200");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http2_fields_and_schemes_reset_the_stream() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut h2 = client::h2(sluice.addr).await;
    let malformed = [
        Request::get("http://x/").header("x-a", " foo").body(full("")),
        Request::get("http://x/").header("x-a", "foo\t").body(full("")),
        Request::get("gopher://x/").body(full("")),
    ];
    for request in malformed {
        let request = request.expect("request");
        let what = format!("{:?} {:?}", request.uri(), request.headers());
        let sent = tokio::time::timeout(WAIT, h2.send_request(request)).await.expect("an answer within WAIT");
        let error = sent.expect_err(&format!("a stream reset for {what}"));
        let reason =
            std::error::Error::source(&error).and_then(|e| e.downcast_ref::<h2::Error>()).and_then(h2::Error::reason);
        assert_eq!(reason, Some(h2::Reason::PROTOCOL_ERROR), "{what}: {error:?}");
    }
    // The connection is fine, and nothing malformed reached the upstream.
    assert_eq!(client::send2(&mut h2, client::get2("/")).await.0.status, StatusCode::OK);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstreams_broken_framing_is_logged_as_the_upstreams() {
    use support::raw::Answer;
    let upstream = RawUpstream::start(|_| {
        Answer::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec())
    })
    .await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let _ = roundtrip(sluice.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let log = sluice.wait_for_log("upstream response body broke off");
    let line = log.lines().find(|l| l.contains("upstream response body broke off")).expect("the line");
    assert!(line.contains("malformed response from the upstream: invalid chunk size"), "{line}");
    assert!(!log.contains("malformed request"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_heads_are_logged_as_read_never_as_a_made_up_get() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&support::with_access_log(&simple_config(&[upstream.addr], "")));
    let garbage = roundtrip(sluice.addr, b"GARBAGE\r\n\r\n").await;
    assert_eq!(status_of(&garbage), "400");
    let smuggle =
        b"DELETE /x?y=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(status_of(&roundtrip(sluice.addr, smuggle).await), "400");
    let records = sluice.records(2);
    let by_status = |method: &serde_json::Value| records.iter().find(|r| &r["method"] == method).cloned();
    let garbage = by_status(&serde_json::Value::Null).expect("a record with no method");
    assert_eq!(garbage["target"], serde_json::Value::Null, "{garbage}");
    assert_eq!(garbage["status"], 400);
    let smuggle = by_status(&serde_json::json!("DELETE")).expect("the DELETE's record");
    assert_eq!(smuggle["target"], "/x?y=1", "{smuggle}");
    assert_eq!(smuggle["status"], 400);
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn at_max_connections_half_sent_heads_and_idle_connections_make_room() {
    let upstream = RawUpstream::ok().await;
    let config = format!(
        "[server]\nmax_connections = 40\nheader_read_timeout = \"120s\"\nkeepalive_timeout = \"120s\"\n\n{}",
        simple_config(&[upstream.addr], "")
    );
    let sluice = Sluice::start(&config);
    let mut held = Vec::new();
    // 30 heads that never end, 10 idle keep-alive connections: the cap is full.
    for _ in 0..30 {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("half a head");
        held.push(stream);
    }
    for _ in 0..10 {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.expect("a response");
        held.push(stream);
    }
    // New clients get in (before: they waited for a header or keep-alive timeout).
    for i in 0..20 {
        let wire = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = tokio::time::timeout(WAIT, roundtrip(sluice.addr, wire)).await.expect("served in time");
        assert_eq!(status_of(&answer), "200", "new client {i}: {answer}");
    }
    sluice.wait_for_log("at max_connections, to let a new client in");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_head_holds_less_memory_than_nginx_does() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&patient(upstream.addr).replace("[server]\n", "[server]\nworker_threads = 1\n"));
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(status_of(&roundtrip(sluice.addr, request).await), "200", "warm");
    }
    let (before, _) = sluice.memory_kib();
    const HEADS: u64 = 3000;
    let mut held = Vec::new();
    for _ in 0..HEADS {
        let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("half a head");
        held.push(stream);
    }
    // One worker serves connections in the order they came: once a later client is
    // answered, every half head before it has been read.
    assert_eq!(status_of(&roundtrip(sluice.addr, request).await), "200");
    let (after, _) = sluice.memory_kib();
    let per_head = after.saturating_sub(before) as f64 / HEADS as f64;
    // nginx 1.22 holds 4.2 KiB per half-sent head (its 1 KiB header buffer and
    // connection state); sluice held 6.4 with its 4 KiB read buffer.
    assert!(per_head < 4.2, "{per_head:.2} KiB per half-sent head");
    drop(held);
}
