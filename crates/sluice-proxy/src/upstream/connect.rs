//! Opening upstream connections: DNS, TCP with a deadline, TLS when the group asks for
//! it, and for HTTP/2 the handshake and the task that drives the connection. These are
//! the real [`Connector`]s of the pools.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_config::Endpoint;
use tokio::net::TcpStream;

use super::dns::DnsCache;
use super::h2_settings::{PeerSettings, StreamLimit, WatchSettings};
use super::pool::{BoxFuture, Connector};
use super::stream::UpstreamStream;
use super::tls::UpstreamTlsConfig;
use super::UpstreamError;
use crate::body::RequestBody;

/// Dials one endpoint: TCP, then TLS if configured, all within the connect timeout.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) dns: Arc<DnsCache>,
    pub(crate) endpoint: Endpoint,
    pub(crate) label: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<UpstreamTlsConfig>,
}

impl Dialer {
    pub(crate) async fn dial(&self) -> Result<UpstreamStream, UpstreamError> {
        let endpoint = || self.label.to_string();
        tokio::time::timeout(self.timeout, async {
            let tcp = tcp_connect(&self.dns, &self.endpoint)
                .await
                .map_err(|source| UpstreamError::Connect { endpoint: endpoint(), source })?;
            // Requests are written in one go; Nagle would only delay the last segment.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamStream::Tcp(tcp)),
                Some(tls) => match tls.handshake(&self.endpoint, tcp).await {
                    Ok(stream) => Ok(UpstreamStream::Tls(Box::new(stream))),
                    Err(reason) => {
                        tracing::warn!(endpoint = %self.label, %reason, "TLS handshake with the upstream failed");
                        Err(UpstreamError::Tls { endpoint: endpoint(), reason })
                    }
                },
            }
        })
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { endpoint: endpoint() })?
    }
}

/// Resolves (through the cache; lookups on tokio's bounded blocking pool) and tries
/// each address.
async fn tcp_connect(dns: &Arc<DnsCache>, endpoint: &Endpoint) -> io::Result<TcpStream> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for addr in dns.lookup(&endpoint.host, endpoint.port).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// HTTP/1 connections: the bare stream, written and read by `upstream::h1`.
pub(crate) struct H1Connector(pub(crate) Dialer);

impl Connector for H1Connector {
    type Conn = UpstreamStream;

    fn connect(&self) -> BoxFuture<'_, Result<UpstreamStream, UpstreamError>> {
        Box::pin(self.0.dial())
    }

    /// An idle HTTP/1 socket is only known closed by looking (`is_closed_checked`).
    fn is_closed(_: &UpstreamStream) -> bool {
        false
    }

    fn is_closed_checked(conn: &UpstreamStream) -> bool {
        !conn.is_open()
    }
}

/// An HTTP/2 connection: hyper's sender, shared by its streams, and the peer's limit.
pub(crate) struct H2Sender {
    pub(crate) sender: http2::SendRequest<RequestBody>,
    limit: StreamLimit,
}

/// HTTP/2 connections (h2c prior knowledge, or h2 by ALPN over TLS).
pub(crate) struct H2Connector(pub(crate) Dialer);

impl Connector for H2Connector {
    type Conn = H2Sender;

    fn connect(&self) -> BoxFuture<'_, Result<H2Sender, UpstreamError>> {
        Box::pin(async move {
            let stream = self.0.dial().await?;
            let limit = PeerSettings::new();
            let io = TokioIo::new(WatchSettings::new(stream, Arc::clone(&limit)));
            let handshake = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io);
            let (sender, conn) = tokio::time::timeout(self.0.timeout, handshake)
                .await
                .map_err(|_| UpstreamError::ConnectTimeout { endpoint: self.0.label.to_string() })?
                .map_err(|source| UpstreamError::Connect {
                    endpoint: self.0.label.to_string(),
                    source: io::Error::new(io::ErrorKind::ConnectionAborted, source),
                })?;
            let label = Arc::clone(&self.0.label);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(endpoint = %label, error = %e, "upstream HTTP/2 connection ended");
                }
            });
            // Its stream limit decides when the pool opens another connection.
            limit.known(self.0.timeout).await;
            Ok(H2Sender { sender, limit })
        })
    }

    fn is_closed(conn: &H2Sender) -> bool {
        conn.sender.is_closed()
    }

    fn stream_limit(conn: &H2Sender) -> usize {
        conn.limit.stream_limit.load(Ordering::Relaxed) as usize
    }
}
