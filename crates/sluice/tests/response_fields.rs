//! An upstream response's header fields as each kind of client sees them: HTTP/1.1
//! and HTTP/1.0 clients get the fields sluice does not own as the upstream wrote them
//! (without a header map, `http1::forward`), HTTP/2 clients and cached routes from the
//! map; in every case the hop-by-hop fields, the fields `Connection` names, and the
//! upstream's `x-request-id` stop at sluice, and there is exactly one Date.

mod support;

use support::client::{self, get2, send2};
use support::raw::{roundtrip, Answer, RawUpstream};
use support::{simple_config, Sluice};

const UPSTREAM_DATE: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// An upstream answering with `fields` (CRLF-terminated lines) and the body `ok`.
async fn answering(fields: &'static str) -> RawUpstream {
    RawUpstream::start(move |_| {
        Answer::Keep(format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok").into_bytes())
    })
    .await
}

const MANY: &str = "Server: Origin/1\r\nSet-Cookie: a=1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
X-Request-Id: upstream-id\r\nSet-Cookie: b=2\r\nProxy-Connection: keep-alive\r\n\
Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Mixed-Case: Value With Spaces\r\nTrailer: x-t\r\n\
HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n";

/// The response head's lines, and the body.
fn head_lines(raw: &str) -> (Vec<String>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    (head.lines().skip(1).map(str::to_string).collect(), body.to_string())
}

fn values<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn assert_owned_fields_replaced(lines: &[String]) {
    for gone in ["keep-alive", "proxy-connection", "http2-settings"] {
        assert!(values(lines, gone).is_empty(), "{gone} stops at sluice: {lines:?}");
    }
    // End to end (RFC 9110 §6.6.2): declares the trailers of a chunked body.
    assert_eq!(values(lines, "trailer"), ["x-t"], "{lines:?}");
    let ids = values(lines, "x-request-id");
    assert_eq!(ids.len(), 1, "one request id: {lines:?}");
    assert_ne!(ids[0], "upstream-id", "sluice's id, not the upstream's");
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_clients_get_the_upstreams_fields_as_written_minus_what_sluice_owns() {
    let upstream = answering(MANY).await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let request = format!("GET /a {version}\r\nHost: x\r\nConnection: close\r\n\r\n");
        let raw = roundtrip(sluice.addr, request.as_bytes()).await;
        let (lines, body) = head_lines(&raw);
        assert_eq!(body, "ok", "{raw}");
        assert!(lines.contains(&"Server: Origin/1".to_string()), "names and values as written: {lines:?}");
        assert!(lines.contains(&"X-Mixed-Case: Value With Spaces".to_string()), "{lines:?}");
        assert_eq!(values(&lines, "set-cookie"), ["a=1", "b=2"], "repeated fields kept, in order");
        assert_eq!(values(&lines, "date"), [UPSTREAM_DATE], "the upstream's Date, once");
        assert_eq!(values(&lines, "content-length"), ["2"]);
        assert_eq!(values(&lines, "connection"), ["close"], "sluice's own Connection only");
        assert_owned_fields_replaced(&lines);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_named_by_connection_are_removed_and_a_missing_date_is_added() {
    let upstream = answering("Connection: close, X-Secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n").await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let raw = roundtrip(sluice.addr, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let (lines, body) = head_lines(&raw);
    assert_eq!(body, "ok");
    assert!(values(&lines, "x-secret").is_empty(), "named by Connection: hop-by-hop: {lines:?}");
    assert_eq!(values(&lines, "x-kept"), ["2"]);
    assert_eq!(values(&lines, "date").len(), 1, "a Date is added when the upstream sent none: {lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_get_the_same_fields_from_the_map() {
    let upstream = answering(MANY).await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut conn = client::h2(sluice.addr).await;
    let (parts, body) = send2(&mut conn, get2("/a")).await;
    assert_eq!(&body[..], b"ok");
    let get = |name: &str| parts.headers.get_all(name).iter().map(|v| v.to_str().expect("text")).collect::<Vec<_>>();
    assert_eq!(get("server"), ["Origin/1"]);
    assert_eq!(get("x-mixed-case"), ["Value With Spaces"]);
    assert_eq!(get("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(get("date"), [UPSTREAM_DATE]);
    for gone in ["connection", "keep-alive", "proxy-connection", "http2-settings"] {
        assert!(get(gone).is_empty(), "{gone}: {:?}", parts.headers);
    }
    assert_eq!(get("trailer"), ["x-t"]);
    assert_ne!(get("x-request-id"), ["upstream-id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_route_stores_and_serves_every_field() {
    let upstream = answering(
        "Cache-Control: max-age=60\r\nServer: Origin/1\r\nSet-Cookie2: a\r\nX-Mixed-Case: Value\r\nKeep-Alive: timeout=5\r\n",
    )
    .await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"up\"\ncache = true\n\n\
         [upstream.up]\nendpoints = [\"{}\"]\n[cache]\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    for round in ["miss", "hit"] {
        let raw = roundtrip(sluice.addr, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let (lines, body) = head_lines(&raw);
        assert_eq!(body, "ok", "{round}: {raw}");
        assert_eq!(values(&lines, "server"), ["Origin/1"], "{round}: {lines:?}");
        assert_eq!(values(&lines, "x-mixed-case"), ["Value"], "{round}");
        assert!(values(&lines, "keep-alive").is_empty(), "{round}");
        assert_eq!(values(&lines, "date").len(), 1, "{round}: {lines:?}");
    }
    assert_eq!(upstream.requests().len(), 1, "the second was a hit");
}
