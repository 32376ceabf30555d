//! The validated runtime configuration: plain typed values, every default filled in.
//!
//! Nothing here can be invalid by construction of `validate`; the proxy builds its
//! runtime state from these types and never sees the TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<ListenerConfig>,
    /// In file order: the first route that matches a request wins.
    pub routes: Vec<RouteConfig>,
    /// Sorted by name; every route names one of these.
    pub upstreams: Vec<UpstreamConfig>,
}

/// Process-wide settings from `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Tokio worker threads. Default: the number of cores.
    pub worker_threads: usize,
    /// Open client connections at most; at the cap sluice stops accepting. Default 10,000.
    pub max_connections: usize,
    /// A client must send a whole request head within this. Default 10s.
    pub header_read_timeout: Duration,
    /// An idle client connection (no request in flight) is closed after this. Default 60s.
    pub keepalive_timeout: Duration,
    /// On SIGTERM, in-flight requests get this long to finish. Default 30s.
    pub drain_timeout: Duration,
    /// The longest pause between two reads of a request body; 408 after. Default 30s.
    pub client_body_timeout: Duration,
    /// The longest a client may take to accept more response bytes; it is cut after. Default 30s.
    pub send_timeout: Duration,
    /// How request paths are normalised before routing.
    pub paths: PathRules,
    /// Where request bodies of `large_request_bodies = "spool"` routes are written
    /// (files are unlinked as soon as they are opened). Default: the system temp dir.
    pub spool_dir: PathBuf,
}

/// Request path normalisation, applied before routing and forwarded as normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// `//a///b` → `/a/b`. Default false (some APIs give empty segments meaning).
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` (encoded `/` and `\`) in a path. Default reject.
    pub escaped_slashes: EscapedSlashes,
}

/// Envoy's `path_with_escaped_slashes_action`, without its redirect option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Forward as sent. Safe only when every upstream treats `%2F` as data, never as `/`.
    Keep,
    /// Decode to `/` (and `\` to `/`) before dot-segment removal, routing and forwarding.
    Decode,
    /// 400: the default, because a router and an upstream that disagree on `%2F` are a
    /// route-based access control bypass.
    Reject,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules { merge_slashes: false, escaped_slashes: EscapedSlashes::Reject }
    }
}

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 or HTTP/2 (prior knowledge on cleartext, ALPN on TLS), detected per connection.
    Auto,
    Http1,
    Http2,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
    /// SO_REUSEPORT, so that several sluice processes can share the address.
    pub reuse_port: bool,
    /// listen(2) backlog: where clients wait when sluice is at its connection cap. Default 4096.
    pub backlog: u32,
    pub tls: Option<TlsFiles>,
}

/// PEM files for a TLS listener, resolved relative to the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Exact host (`api.example.com`) or one-label wildcard (`*.example.com`); None matches any.
    pub host: Option<String>,
    /// Default "/": every path.
    pub path_prefix: String,
    /// Upper-case method names; empty matches any method.
    pub methods: Vec<String>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Time from sending upstream to receiving the response head. Default 30s.
    pub timeout: Duration,
    /// Request bodies up to this size are read whole before an upstream connection is
    /// taken, so a slow uploader holds none; larger ones stream. Default 64 KiB.
    pub request_buffer: u64,
    /// Response bytes read ahead of a slow client, so a small response frees its
    /// upstream connection at once. Default 64 KiB.
    pub response_buffer: u64,
    /// A request body larger than this gets 413 (before the upstream is contacted when
    /// Content-Length says so). Default 1 GiB.
    pub max_request_body: u64,
    /// What happens to a request body larger than `request_buffer`. Default stream.
    pub large_request_bodies: LargeBodies,
    /// Upgrade protocols tunnelled after a 101 (lower case); any other `Upgrade` is
    /// removed. Default `["websocket"]`.
    pub upgrades: Vec<String>,
}

/// Request bodies larger than a route's `request_buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargeBodies {
    /// Sent upstream as they arrive: the upstream connection is held while the client
    /// uploads (the only choice that keeps memory and disk flat for huge uploads).
    Stream,
    /// Written to a temp file (at most `max_request_body`) first, so a slow uploader
    /// holds no upstream connection whatever the body's size (nginx's default).
    Spool,
}

/// The protocol sluice speaks to an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// Prior-knowledge HTTP/2 (h2c): many requests multiplexed over one connection.
    Http2,
}

/// One `[upstream.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub protocol: UpstreamProtocol,
    pub pool: PoolSettings,
}

/// host:port of one upstream server; the host may be a DNS name, resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Connection pool settings, applied to each endpoint of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSettings {
    /// Open connections (idle + busy) at most. Default 256.
    pub max_connections: usize,
    /// Idle connections kept at most. Default 64.
    pub max_idle: usize,
    /// Idle connections kept warm: opened at start and refilled. Default 0.
    pub min_idle: usize,
    /// An idle connection is closed after this. Default 60s.
    pub idle_timeout: Duration,
    /// A connection is retired after this age, idle or not (once its request ends). Default 10m.
    pub max_lifetime: Duration,
    /// A connection is retired after this many requests; 0 means no limit. Default 0.
    pub max_requests: u64,
    /// TCP connect (including DNS) must finish within this. Default 2s.
    pub connect_timeout: Duration,
    /// How long a request waits for a free connection at `max_connections` before 503. Default 1s.
    pub wait_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 256,
            max_idle: 64,
            min_idle: 0,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(600),
            max_requests: 0,
            connect_timeout: Duration::from_secs(2),
            wait_timeout: Duration::from_secs(1),
        }
    }
}
