//! 1xx interim responses (RFC 9110 §15.2): an upstream's 103 Early Hints and 102
//! Processing reach an HTTP/1.1 client as they come, before the final response, in
//! order, without hop-by-hop fields; never an HTTP/1.0 client; never stored by the
//! cache (cache-tests `interim-not-cached`). HTTP/2 clients get them as HEADERS frames
//! before the final response's.

mod support;

use std::sync::Arc;

use bytes::Bytes;

use http::StatusCode;
use support::client::{self, get2, send2};
use support::{read_until, simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const HINTS: &str = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\
                     Connection: x-hop\r\nX-Hop: secret\r\n\r\n";
const FINAL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\nok";

/// An upstream that answers `/hints` with a 103, then the final 200 only once the test
/// releases it; `/processing` with two 102s, a 103 and the 200 at once; `/flood` with
/// 1,000 102s, then the 200.
async fn interim_upstream(release: Arc<Notify>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                loop {
                    let head = String::from_utf8_lossy(&read_until_or_close(&mut stream).await?).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer = match path.as_str() {
                        "/hints" => {
                            stream.write_all(HINTS.as_bytes()).await.ok()?;
                            release.notified().await;
                            FINAL.to_string()
                        }
                        "/processing" => {
                            format!("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n{HINTS}{FINAL}")
                        }
                        "/flood" => format!("{}{FINAL}", "HTTP/1.1 102 Processing\r\n\r\n".repeat(1000)),
                        _ => FINAL.to_string(),
                    };
                    stream.write_all(answer.as_bytes()).await.ok()?;
                }
                #[allow(unreachable_code)]
                Some(())
            });
        }
    });
    addr
}

/// Reads one request head (these requests have no body); None when the peer closed.
async fn read_until_or_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Some(seen)
}

async fn start(cache: bool) -> (Sluice, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let upstream = interim_upstream(Arc::clone(&release)).await;
    let mut config = simple_config(&[upstream], "");
    if cache {
        config = config.replace("upstream = \"up\"\n", "upstream = \"up\"\ncache = true\n") + "[cache]\n";
    }
    (Sluice::start(&config), release)
}

async fn send(sluice: &Sluice, wire: &str) -> TcpStream {
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    stream.write_all(wire.as_bytes()).await.expect("write");
    stream
}

/// Sends `wire` on a new connection and reads through the final response's body ("ok").
async fn answered(sluice: &Sluice, wire: &str) -> String {
    let mut stream = send(sluice, wire).await;
    String::from_utf8_lossy(&read_until(&mut stream, "\r\n\r\nok").await).into_owned()
}

/// The status codes of the response heads in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ").filter_map(|(at, _)| text[at + 9..at + 12].parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_an_http11_client_before_the_final_response() {
    let (sluice, release) = start(false).await;
    let mut client = send(&sluice, "GET /hints HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // The upstream holds its 200 until the client has the 103: a 103 held back with
    // the final response would never arrive here.
    let hints = String::from_utf8_lossy(&read_until(&mut client, "\r\n\r\n").await).into_owned();
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    assert!(hints.to_ascii_lowercase().contains("link: </style.css>; rel=preload\r\n"), "{hints}");
    assert!(!hints.to_ascii_lowercase().contains("x-hop"), "hop-by-hop fields stay behind: {hints}");
    release.notify_one();
    let rest = String::from_utf8_lossy(&read_until(&mut client, "\r\n\r\nok").await).into_owned();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(!rest.to_ascii_lowercase().contains("link:"), "the hints are not the final response's: {rest}");
    // The connection is still good for the next request.
    client.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let next = String::from_utf8_lossy(&read_until(&mut client, "\r\n\r\nok").await).into_owned();
    assert_eq!(statuses(&next), [200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interim_response_is_relayed_in_order_but_never_to_http10() {
    let (sluice, _release) = start(false).await;
    let text = answered(&sluice, "GET /processing HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(statuses(&text), [102, 102, 103, 200], "{text}");

    // RFC 9110 §15.2: a server must not send a 1xx to an HTTP/1.0 client.
    let text = answered(&sluice, "GET /processing HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "only the final response: {text}");
    // (Not `!text.contains(" 10")`: a random x-request-id may begin with 10.)
    assert_eq!(statuses(&text), [200], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_interim_responses_still_ends_in_the_final_one() {
    let (sluice, _release) = start(false).await;
    let text = answered(&sluice, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let seen = statuses(&text);
    assert_eq!(seen.last(), Some(&200), "the final response last");
    assert!(seen[..seen.len() - 1].iter().all(|s| *s == 102), "{:?}", &seen[..8.min(seen.len())]);
    assert!(seen.len() > 1, "some of the 102s are relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_relayed_but_never_cached() {
    let (sluice, _release) = start(true).await;
    let text = answered(&sluice, "GET /processing HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(statuses(&text), [102, 102, 103, 200], "a miss relays them: {text}");
    let text = answered(&sluice, "GET /processing HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(statuses(&text), [200], "a hit is the stored final response alone: {text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("cache-status: sluice; hit"), "{text}");
    assert!(!lower.contains("link:"), "nothing of the 103 was stored: {text}");
}

/// An h2c request for `path`: the interim responses' statuses and Link fields as they
/// come, then the final response; `between` runs once the first interim one is in.
async fn h2_request(sluice: &Sluice, path: &str, between: impl FnOnce()) -> (Vec<(u16, String)>, u16, Bytes) {
    let io = TcpStream::connect(sluice.addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://x{path}")).body(()).expect("request");
    let (mut response, _) = h2.send_request(request, true).expect("send");
    let mut interim = Vec::new();
    let mut between = Some(between);
    while let Some(head) = tokio::time::timeout(WAIT, std::future::poll_fn(|cx| response.poll_informational(cx)))
        .await
        .expect("interim or final in time")
    {
        let head = head.expect("an interim head");
        let link = head.headers().get("link").map(|v| v.to_str().unwrap_or("?").to_string()).unwrap_or_default();
        assert!(!head.headers().contains_key("x-hop"), "hop-by-hop fields stay behind");
        interim.push((head.status().as_u16(), link));
        if let Some(between) = between.take() {
            between();
        }
    }
    let response = tokio::time::timeout(WAIT, response).await.expect("in time").expect("final response");
    let status = response.status().as_u16();
    assert!(!response.headers().contains_key("link"), "the 103's fields are not the final response's");
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
        bytes.extend_from_slice(&data);
    }
    (interim, status, Bytes::from(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_an_http2_client_before_the_final_response() {
    let (sluice, release) = start(false).await;
    // The upstream holds its 200 until the client has the 103 (as over HTTP/1.1).
    let (interim, status, body) = h2_request(&sluice, "/hints", || release.notify_one()).await;
    assert_eq!(interim, [(103, "</style.css>; rel=preload".to_string())]);
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));

    let (interim, status, body) = h2_request(&sluice, "/processing", || {}).await;
    let statuses: Vec<u16> = interim.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [102, 102, 103]);
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_still_gets_the_final_response_whole_through_hyper() {
    // hyper's client drops 1xx: what it sees is the final response, intact.
    let (sluice, _release) = start(false).await;
    let mut h2 = client::h2(sluice.addr).await;
    let (parts, body) = tokio::time::timeout(WAIT, send2(&mut h2, get2("/processing"))).await.expect("in time");
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert!(!parts.headers.contains_key("link"), "the 103's fields are not the final response's");
}
