//! Opening one upstream connection: DNS, TCP with a deadline, the HTTP handshake,
//! and the spawned task that drives the connection.

use std::io;
use std::time::Duration;

use crate::proxy::RequestBody;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_config::{Endpoint, UpstreamProtocol};
use tokio::net::TcpStream;

use super::UpstreamError;

/// An open upstream connection.
pub(crate) enum Sender {
    /// One request at a time, written and read by sluice's own client (`upstream::h1`);
    /// while pooled it is just the socket.
    Http1(TcpStream),
    /// Shared by every request in flight on the connection (streams multiplex).
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// Known closed. An HTTP/1 socket is checked with `h1::is_open` when it matters.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(_) => false,
            Sender::Http2(s) => s.is_closed(),
        }
    }

    /// Closed, checking an idle HTTP/1 socket too (a system call only if it was marked
    /// readable): for the pool's background sweep, not the per-request path.
    pub(crate) fn is_closed_checked(&self) -> bool {
        match self {
            Sender::Http1(stream) => !super::h1::is_open(stream),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

/// Connects to `endpoint` (and for HTTP/2 performs the handshake), all within `timeout`.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    protocol: UpstreamProtocol,
    timeout: Duration,
) -> Result<Sender, UpstreamError> {
    let stream = tokio::time::timeout(timeout, tcp_connect(endpoint))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { endpoint: endpoint.to_string() })?
        .map_err(|source| UpstreamError::Connect { endpoint: endpoint.to_string(), source })?;
    // Requests are written in one go; Nagle would only delay the last segment.
    let _ = stream.set_nodelay(true);
    match protocol {
        UpstreamProtocol::Http1 => Ok(Sender::Http1(stream)),
        UpstreamProtocol::Http2 => {
            let handshake_failed = |source: hyper::Error| UpstreamError::Connect {
                endpoint: endpoint.to_string(),
                source: io::Error::new(io::ErrorKind::ConnectionAborted, source),
            };
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(TokioIo::new(stream))
                .await
                .map_err(handshake_failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream http2 connection ended");
                }
            });
            Ok(Sender::Http2(sender))
        }
    }
}

/// Resolves (for DNS names, on tokio's bounded blocking pool) and tries each address.
async fn tcp_connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for addr in tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}
