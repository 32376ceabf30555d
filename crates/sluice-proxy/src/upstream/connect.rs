//! Opening upstream connections: DNS, TCP with a deadline, TLS when the group asks for
//! it, and for HTTP/2 the handshake and the task that drives the connection. These are
//! the real [`Connector`]s of the pools.

use std::io;
use std::net::SocketAddr;
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
    /// Where the next connection starts in the name's addresses: connections are spread
    /// over every address a name resolves to, not all made to the first.
    pub(crate) next: Arc<std::sync::atomic::AtomicUsize>,
    /// The endpoint's host is a DNS name (not an IP address), whose answer may change.
    pub(crate) is_name: bool,
    /// Addresses of the name that recently refused or ignored a connect.
    pub(crate) down: Arc<DownAddresses>,
}

/// How long an address that failed a connect is tried after the name's others.
const ADDRESS_HOLD_DOWN: Duration = Duration::from_secs(10);

/// The addresses of one endpoint's name that failed a connect lately: tried last, so
/// one dead address among a name's several costs no connection attempt while the
/// others answer. (The name stays one balancer member: its addresses share its weight
/// and its outlier state.)
#[derive(Default)]
pub(crate) struct DownAddresses(std::sync::Mutex<Vec<(SocketAddr, tokio::time::Instant)>>);

impl DownAddresses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, tokio::time::Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the addresses that failed within the hold-down to the end, in order.
    fn put_last(&self, addrs: &mut [SocketAddr]) {
        let mut down = self.lock();
        down.retain(|(_, at)| at.elapsed() < ADDRESS_HOLD_DOWN);
        if !down.is_empty() {
            addrs.sort_by_key(|addr| down.iter().any(|(d, _)| d == addr));
        }
    }

    fn failed(&self, addr: SocketAddr) {
        let mut down = self.lock();
        down.retain(|(d, _)| *d != addr);
        down.push((addr, tokio::time::Instant::now()));
    }

    fn answered(&self, addr: SocketAddr) {
        let mut down = self.lock();
        if !down.is_empty() {
            down.retain(|(d, _)| *d != addr);
        }
    }
}

impl Dialer {
    pub(crate) async fn dial(&self) -> Result<UpstreamStream, UpstreamError> {
        let endpoint = || self.label.to_string();
        tokio::time::timeout(self.timeout, async {
            let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let deadline = tokio::time::Instant::now() + self.timeout;
            let tcp = tcp_connect(&self.dns, &self.endpoint, start, &self.down, deadline)
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
/// each address, from the `start`th (modulo their number) round, the ones that failed
/// lately last. Each address gets an even share of the time left before `deadline`,
/// so one that swallows SYNs does not use up the others' time.
async fn tcp_connect(
    dns: &Arc<DnsCache>,
    endpoint: &Endpoint,
    start: usize,
    down: &DownAddresses,
    deadline: tokio::time::Instant,
) -> io::Result<TcpStream> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    let mut addrs = dns.lookup(&endpoint.host, endpoint.port).await?;
    let len = addrs.len();
    if len > 1 {
        addrs.rotate_left(start % len);
        down.put_last(&mut addrs);
    }
    for (tried, addr) in addrs.into_iter().enumerate() {
        let share = deadline.saturating_duration_since(tokio::time::Instant::now()) / (len - tried) as u32;
        let error = match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                if len > 1 {
                    down.answered(addr);
                }
                return Ok(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")),
        };
        if len > 1 {
            tracing::debug!(endpoint = %endpoint, %addr, %error, "address failed; trying the name's next");
            down.failed(addr);
        }
        last_error = error;
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

    /// An idle HTTP/1 socket the upstream closed (or wrote to unasked) is readable: its
    /// readiness says so without a system call (the reactor saw the FIN), as nginx's and
    /// HAProxy's read events on idle connections do. Checked before every lending, for
    /// every method: an upstream closing idle connections is the normal case.
    fn is_closed(conn: &UpstreamStream) -> bool {
        !conn.is_open()
    }

    /// Made to an address the endpoint's name still resolves to (a connection to a
    /// gone address drains: it is closed instead of reused).
    fn is_current(&self, conn: &UpstreamStream) -> bool {
        let endpoint = &self.0.endpoint;
        if !self.0.is_name {
            return true; // an IP address does not move
        }
        conn.peer_addr().and_then(|peer| self.0.dns.still_resolves(&endpoint.host, endpoint.port, peer)).unwrap_or(true)
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use super::super::dns::Resolve;
    use super::*;

    /// Resolves every name to the given addresses.
    struct Fixed(Vec<SocketAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _: &str, _: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
            let addrs = self.0.clone();
            Box::pin(async move { Ok(addrs) })
        }
    }

    #[tokio::test]
    async fn connections_are_spread_over_every_address_a_name_resolves_to() {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addrs = vec![a.local_addr().expect("a"), b.local_addr().expect("b")];
        let dialer = Dialer {
            dns: DnsCache::new(Arc::new(Fixed(addrs)), Duration::from_secs(30)),
            endpoint: Endpoint { host: "api.internal".into(), port: 80 },
            label: Arc::from("api.internal:80"),
            timeout: Duration::from_secs(5),
            tls: None,
            next: Arc::new(AtomicUsize::new(0)),
            is_name: true,
            down: Arc::default(),
        };
        let mut peers = Vec::new();
        for _ in 0..4 {
            let stream = dialer.dial().await.expect("connect");
            peers.push(stream.peer_addr().expect("peer"));
        }
        let to_a = peers.iter().filter(|p| **p == a.local_addr().expect("a")).count();
        assert_eq!(to_a, 2, "two of four connections to each address: {peers:?}");
    }

    /// A listener whose accept queue is full: further SYNs are dropped, so a connect
    /// to it hangs, as to a host that went away without a word.
    fn blackhole() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        socket.listen(0).expect("listen");
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().expect("addr");
        // The queue holds backlog + 1; the connects that filled it are kept open.
        let fill = (0..2).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok());
        (listener, fill.collect())
    }

    #[tokio::test]
    async fn an_address_that_hangs_costs_its_share_of_the_timeout_then_is_tried_last() {
        let (hole, _queued) = blackhole();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_addr = live.local_addr().expect("live");
        let dialer = Dialer {
            dns: DnsCache::new(
                Arc::new(Fixed(vec![hole.local_addr().expect("hole"), live_addr])),
                Duration::from_secs(30),
            ),
            endpoint: Endpoint { host: "api.internal".into(), port: 80 },
            label: Arc::from("api.internal:80"),
            timeout: Duration::from_secs(2),
            tls: None,
            next: Arc::new(AtomicUsize::new(0)),
            is_name: true,
            down: Arc::default(),
        };
        // The first dial starts at the hanging address: it gets half the time, then
        // the live one answers, well within the connect timeout.
        let stream = dialer.dial().await.expect("the live address answers");
        assert_eq!(stream.peer_addr().expect("peer"), live_addr);
        // Every later dial, including those whose turn starts at the hanging address,
        // goes to the live one first.
        for _ in 0..4 {
            let started = tokio::time::Instant::now();
            let stream = dialer.dial().await.expect("connect");
            assert_eq!(stream.peer_addr().expect("peer"), live_addr);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "waited {:?} on the down address",
                started.elapsed()
            );
        }
    }
}
