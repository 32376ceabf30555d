//! WebSocket through sluice, and TLS with ALPN on the client side.

mod support;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::client::{self, get, get2, send1, send2};
use support::upstream::{full, Upstream};
use support::{simple_config, Sluice};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

/// An upstream that upgrades to WebSocket and echoes every message back.
async fn websocket_echo() -> Upstream {
    Upstream::start(|mut req: Request<Incoming>| async move {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Response::new(full("not a websocket request"));
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(full(""))
            .expect("response")
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_sluice() {
    let upstream = websocket_echo().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let stream = tokio::net::TcpStream::connect(sluice.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{}/chat", sluice.addr), stream)
        .await
        .expect("websocket handshake through sluice");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through", "the tunnel"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("message").expect("ok");
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.expect("send binary");
    assert_eq!(ws.next().await.expect("message").expect("ok"), Message::binary(vec![7u8; 100_000]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_has_one_record_and_closes_when_idle() {
    let upstream = websocket_echo().await;
    let config = simple_config(&[upstream.addr], "")
        .replace("upstream = \"up\"\n", "upstream = \"up\"\ntunnel_idle_timeout = \"400ms\"\n");
    let sluice = Sluice::start(&support::with_access_log(&config));
    let stream = tokio::net::TcpStream::connect(sluice.addr).await.expect("connect");
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/chat",
        sluice.addr
    ))
    .expect("ws request");
    request.headers_mut().insert("x-request-id", "ws-1".parse().expect("value"));
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("handshake");
    ws.send(Message::text("ping")).await.expect("send");
    assert_eq!(ws.next().await.expect("message").expect("ok"), Message::text("ping"));
    // Then nothing either way: sluice closes the tunnel after tunnel_idle_timeout.
    let closed = tokio::time::timeout(support::WAIT, ws.next()).await.expect("closed in time");
    assert!(!matches!(closed, Some(Ok(Message::Text(_)))), "{closed:?}");
    let record = sluice.record("ws-1");
    assert_eq!((record["status"].as_u64(), record["end"].as_str()), (Some(101), Some("tunnel_closed")));
    assert_eq!(record["error"], "tunnel_idle_timeout");
    assert!(
        record["bytes_in"].as_u64().is_some_and(|n| n > 4) && record["bytes_out"].as_u64().is_some_and(|n| n > 4),
        "{record}"
    );
}

/// A self-signed certificate for localhost, written as PEM files.
fn certificate(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).expect("write key");
    cert.cert.der().clone()
}

/// sluice with a TLS listener using the certificate in `dir`; `server` goes first.
fn start_tls(dir: &support::TempDir, upstream: std::net::SocketAddr, server: &str) -> Sluice {
    let config = format!(
        "{server}[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificate = \"cert.pem\", key = \"key.pem\" }}\n[[route]]\nupstream = \"up\"\n[upstream.up]\nendpoints = [\"{upstream}\"]\n"
    );
    let path = dir.path.join("sluice.toml");
    std::fs::write(&path, config).expect("write");
    Sluice::start_file(support::TempDir::new(), &path, None)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    root: rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_negotiates_h2_and_http1_by_alpn() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Response::new(full(format!("proto={proto}")))
    })
    .await;
    let dir = support::TempDir::new();
    let root = certificate(&dir.path);
    let sluice = start_tls(&dir, upstream.addr, "");

    let tls = tls_connect(sluice.addr, root.clone(), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = client::h2_over(tls).await;
    let (parts, body) = send2(&mut h2, get2("/secure")).await;
    assert_eq!((parts.status, parts.version), (StatusCode::OK, http::Version::HTTP_2));
    assert_eq!(body, "proto=https");

    let tls = tls_connect(sluice.addr, root, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = client::h1_over(tls).await;
    let (parts, body) = send1(&mut h1, get("/secure")).await;
    assert_eq!((parts.status, parts.version), (StatusCode::OK, http::Version::HTTP_11));
    assert_eq!(body, "proto=https");
    drop(dir);
}

/// An idle TLS keep-alive connection is closed by the keep-alive timeout (not the
/// header timeout, and without a 408), and waiting costs no CPU.
#[tokio::test(flavor = "multi_thread")]
async fn idle_tls_keepalive_connections_wait_quietly_for_the_keepalive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::hello().await;
    let dir = support::TempDir::new();
    let root = certificate(&dir.path);
    let sluice =
        start_tls(&dir, upstream.addr, "[server]\nheader_read_timeout = \"300ms\"\nkeepalive_timeout = \"1500ms\"\n");
    let mut tls = tls_connect(sluice.addr, root, &[b"http/1.1"]).await;
    tls.write_all(b"GET /quiet HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    support::read_until(&mut tls, "hello GET /quiet").await;
    let cpu_before = sluice.cpu_time();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(support::WAIT, tls.read_to_end(&mut rest)).await.expect("closed in time");
    let waited = started.elapsed();
    assert!(!String::from_utf8_lossy(&rest).contains("408"), "{}", String::from_utf8_lossy(&rest));
    assert!(waited >= std::time::Duration::from_millis(1200), "closed after {waited:?}, before keepalive_timeout");
    let cpu = sluice.cpu_time() - cpu_before;
    assert!(cpu < waited / 4, "an idle connection must not spin: {cpu:?} CPU in {waited:?}");
    drop(dir);
}
