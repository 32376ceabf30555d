//! Clients for tests: HTTP/1.1 and HTTP/2 (h2c or TLS) connections from hyper.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::upstream::{full, TestBody};
use super::WAIT;

/// An HTTP/1.1 keep-alive connection.
pub async fn h1(addr: SocketAddr) -> http1::SendRequest<TestBody> {
    h1_over(TcpStream::connect(addr).await.expect("connect")).await
}

pub async fn h1_over<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> http1::SendRequest<TestBody> {
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await.expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection with prior knowledge (h2c).
pub async fn h2(addr: SocketAddr) -> http2::SendRequest<TestBody> {
    h2_over(TcpStream::connect(addr).await.expect("connect")).await
}

pub async fn h2_over<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> http2::SendRequest<TestBody> {
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// A GET for `path` with Host `localhost`.
pub fn get(path: &str) -> Request<TestBody> {
    Request::get(path).header("host", "localhost").body(full("")).expect("request")
}

/// An HTTP/2 GET needs an absolute URI for :authority.
pub fn get2(path: &str) -> Request<TestBody> {
    Request::get(format!("http://localhost{path}")).body(full("")).expect("request")
}

/// A GET of `target` with Host `host` and more `fields`, on a new HTTP/1.1 connection:
/// the response head and its body as text.
pub async fn get_text(
    addr: std::net::SocketAddr,
    host: &str,
    target: &str,
    fields: &[(&str, &str)],
) -> (http::response::Parts, String) {
    let mut conn = h1(addr).await;
    let mut request = Request::get(target).header("host", host);
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let (parts, body) = send1(&mut conn, request.body(full("")).expect("request")).await;
    (parts, String::from_utf8_lossy(&body).into_owned())
}

/// A response field as text ("" when absent).
pub fn field<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts.headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

/// Sends on an HTTP/1.1 connection and reads the whole response (fails after `WAIT`).
pub async fn send1(
    sender: &mut http1::SendRequest<TestBody>,
    request: Request<TestBody>,
) -> (http::response::Parts, Bytes) {
    let exchange = async {
        sender.ready().await.expect("ready");
        read(sender.send_request(request).await.expect("response")).await
    };
    tokio::time::timeout(WAIT, exchange).await.expect("a response within WAIT")
}

/// Sends on an HTTP/2 connection and reads the whole response (fails after `WAIT`).
pub async fn send2(
    sender: &mut http2::SendRequest<TestBody>,
    request: Request<TestBody>,
) -> (http::response::Parts, Bytes) {
    let exchange = async { read(sender.send_request(request).await.expect("response")).await };
    tokio::time::timeout(WAIT, exchange).await.expect("a response within WAIT")
}

/// Sends on an HTTP/2 connection and returns once the response head arrives.
pub async fn send_head2(sender: &mut http2::SendRequest<TestBody>, request: Request<TestBody>) -> Response<Incoming> {
    tokio::time::timeout(WAIT, sender.send_request(request)).await.expect("a head within WAIT").expect("response")
}

pub async fn read(response: Response<Incoming>) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts, bytes)
}

/// One GET on a fresh HTTP/1.1 connection.
pub async fn get_once(addr: SocketAddr, path: &str) -> (http::response::Parts, Bytes) {
    let mut sender = h1(addr).await;
    send1(&mut sender, get(path)).await
}
