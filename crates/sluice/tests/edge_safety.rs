//! What sluice rejects, normalises and forwards at the edge (docs/SECURITY.md), each
//! shown against the real binary with a recording upstream that keeps the exact bytes
//! sluice sent. The desync, smuggling and bypass cases are named after what they prevent.

mod support;

use support::raw::{roundtrip, Answer, RawUpstream};
use support::{simple_config, with_access_log, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_of(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_transfer_encoding_with_content_length_cannot_desync_the_client() {
    let upstream = RawUpstream::start(|request| {
        if request.starts_with("GET /smuggle ") {
            Answer::Keep(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Answer::Keep(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond".to_vec())
        }
    })
    .await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let text = roundtrip(
        sluice.addr,
        b"GET /smuggle HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (first, second) = text.split_at(text.find("HTTP/1.1 200 OK\r\ncontent-length: 6").expect("second response"));
    assert!(!first.to_ascii_lowercase().contains("content-length: 3"), "the stale length is gone: {first}");
    assert!(first.contains("transfer-encoding: chunked\r\n") && first.ends_with("5\r\nhello\r\n0\r\n\r\n"), "{first}");
    assert!(second.ends_with("\r\n\r\nsecond"), "the next response is intact: {second}");
    assert_eq!(upstream.accepted(), 2, "the ambiguous response's upstream connection was not reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_upstream_body_is_logged_counted_and_shown_as_a_close() {
    let upstream = RawUpstream::start(|_| {
        Answer::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec())
    })
    .await;
    let sluice = Sluice::start(&with_access_log(&simple_config(&[upstream.addr], "")));
    let text = roundtrip(sluice.addr, b"GET /cut HTTP/1.1\r\nHost: x\r\nx-request-id: cut-1\r\n\r\n").await;
    assert!(text.ends_with("5\r\nhello\r\n"), "what arrived is sent, with no terminating chunk: {text:?}");
    let log = sluice.wait_for_log("upstream response body broke off");
    let line = log.lines().find(|l| l.contains("broke off")).expect("log line");
    assert!(line.contains("cut-1") && line.contains("route=\"/\"") && line.contains("upstream=\"up\""), "{line}");
    let record = sluice.record("cut-1");
    assert_eq!((record["end"].as_str(), record["error"].as_str()), (Some("upstream_broke"), Some("upstream_body")));
    assert_eq!(record["bytes_out"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_headers_must_be_one_valid_authority() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    for wire in [
        "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test/admin\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil@a.test\r\n\r\n",
    ] {
        let text = roundtrip(sluice.addr, wire.as_bytes()).await;
        assert_eq!(status_of(&text), "400", "{wire:?} → {text}");
    }
    assert_eq!(upstream.requests().len(), 0, "nothing ambiguous reached the upstream");
    let ok = roundtrip(sluice.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&ok), "200", "HTTP/1.0 needs no Host: {ok}");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_targets_route_and_forward_the_same_authority() {
    let (a, b) = (RawUpstream::ok().await, RawUpstream::ok().await);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nhost = \"a.test\"\nupstream = \"a\"\n[[route]]\nhost = \"b.test\"\nupstream = \"b\"\n[upstream.a]\nendpoints = [\"{}\"]\n[upstream.b]\nendpoints = [\"{}\"]\n",
        a.addr, b.addr
    );
    let sluice = Sluice::start(&config);
    let text =
        roundtrip(sluice.addr, b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&text), "200", "{text}");
    let forwarded = a.requests().pop().expect("a got it");
    assert!(forwarded.starts_with("GET /x HTTP/1.1\r\n"), "origin form upstream: {forwarded}");
    assert!(forwarded.contains("host: a.test\r\n") && !forwarded.contains("b.test"), "{forwarded}");
    assert!(b.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn request_framing_that_could_smuggle_is_refused_before_the_upstream() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let cases: [(&str, &str); 7] = [
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", "400"),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", "400"),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc", "413"),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\nabc", "400"),
    ];
    for (wire, status) in cases {
        let text = roundtrip(sluice.addr, wire.as_bytes()).await;
        assert_eq!(status_of(&text), status, "{wire:?} → {text}");
    }
    assert_eq!(upstream.accepted(), 0, "none of these contacted the upstream");
    let log = sluice.log();
    assert!(!log.contains("WARN"), "client mistakes are not upstream failures:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_equal_content_lengths_are_forwarded_as_one() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let text = roundtrip(
        sluice.addr,
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status_of(&text), "200", "{text}");
    let forwarded = upstream.requests().pop().expect("forwarded");
    assert_eq!(forwarded.to_ascii_lowercase().matches("content-length: 5\r\n").count(), 1, "{forwarded}");
    assert!(forwarded.ends_with("\r\n\r\nhello"), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_turns_bad_mid_stream_is_a_client_error_and_aborts_the_upstream() {
    let upstream = RawUpstream::ok().await;
    // A 1 KiB buffer and streaming: the body below streams, so the upstream has its head
    // first. (Spooled, the default, the upstream would never be contacted at all.)
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "").replace(
        "upstream = \"up\"",
        "upstream = \"up\"\nrequest_buffer = \"1KiB\"\nlarge_request_bodies = \"stream\"",
    ));
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    let good = format!("800\r\n{}\r\n", "a".repeat(0x800));
    stream
        .write_all(format!("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{good}").as_bytes())
        .await
        .expect("write");
    // Wait until the upstream connection is open, so the bad chunk arrives mid-stream.
    let deadline = std::time::Instant::now() + WAIT;
    while upstream.accepted() == 0 {
        assert!(std::time::Instant::now() < deadline, "the streamed body never reached the upstream");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await; // polling a counter, not synchronising
    }
    stream.write_all(b"zz\r\n").await.expect("write bad chunk");
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text)).await.expect("answer").expect("read");
    assert_eq!(status_of(&text), "400", "{text}");
    assert!(text.contains("malformed request body"), "{text}");
    assert!(upstream.requests().is_empty(), "the upstream never got a complete request");
    let log = sluice.log();
    assert!(!log.contains("WARN"), "a client error, not an upstream one:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_lines_are_answered_by_rfc_9112() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20 * 1024));
    assert_eq!(status_of(&roundtrip(sluice.addr, long.as_bytes()).await), "414");
    assert_eq!(status_of(&roundtrip(sluice.addr, b"GET / http/1.1\r\nHost: x\r\n\r\n").await), "400");
    let newer = roundtrip(sluice.addr, b"GET /v HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(newer.starts_with("HTTP/1.1 200 "), "{newer}");
    assert!(upstream.requests().pop().expect("forwarded").starts_with("GET /v HTTP/1.1\r\n"));
    let preface = roundtrip(sluice.addr, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert!(!preface.contains("505"), "not an HTTP/1 answer: {preface:?}");
    assert_eq!(&preface.as_bytes()[9..12], b"\x00\x00\x08", "GOAWAY after SETTINGS: {preface:?}");
    assert_eq!(preface.as_bytes()[12], 0x07, "{preface:?}");
    assert_eq!(&preface.as_bytes()[preface.len() - 4..], b"\x00\x00\x00\x01", "PROTOCOL_ERROR: {preface:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_and_options_star_get_deliberate_answers() {
    let upstream = RawUpstream::ok().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let connect = roundtrip(sluice.addr, b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n").await;
    assert_eq!(status_of(&connect), "405", "{connect}");
    assert!(connect.contains("allow: GET, HEAD, POST"), "{connect}");
    let options = roundtrip(sluice.addr, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&options), "200", "{options}");
    assert!(options.contains("allow: GET, HEAD, POST") && options.contains("content-length: 0"), "{options}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_upgrade_is_not_tunnelled_so_requests_cannot_be_smuggled() {
    let upstream = RawUpstream::start(|_| {
        Answer::Keep(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec())
    })
    .await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let text = roundtrip(
        sluice.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), "502", "a 101 nobody asked for is refused: {text}");
    let forwarded = upstream.requests().pop().expect("forwarded").to_ascii_lowercase();
    for header in ["upgrade:", "http2-settings:", "connection:"] {
        assert!(!forwarded.contains(header), "{header} was stripped: {forwarded}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_cannot_bypass_route_based_access_control() {
    let (public, admin) = (RawUpstream::ok().await, RawUpstream::ok().await);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\npath_prefix = \"/public\"\nupstream = \"public\"\n[[route]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n[upstream.public]\nendpoints = [\"{}\"]\n[upstream.admin]\nendpoints = [\"{}\"]\n",
        public.addr, admin.addr
    );
    let sluice = Sluice::start(&config);
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public/.%2E/admin", "/public/./../admin"] {
        let wire = format!("GET {path}?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(&roundtrip(sluice.addr, wire.as_bytes()).await), "200", "{path}");
    }
    assert!(public.requests().is_empty(), "no traversal reached the /public upstream");
    let forwarded = admin.requests();
    assert_eq!(forwarded.len(), 4);
    assert!(forwarded.iter().all(|r| r.starts_with("GET /admin?q=1 HTTP/1.1\r\n")), "{forwarded:?}");
    let encoded_slash = roundtrip(sluice.addr, b"GET /public/..%2Fadmin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&encoded_slash), "400", "escaped slashes are rejected by default: {encoded_slash}");
}
