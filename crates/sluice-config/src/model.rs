//! The validated runtime configuration: plain typed values, every default filled in.
//!
//! Nothing here can be invalid by construction of `validate`; the proxy builds its
//! runtime state from these types and never sees the TOML file.

use std::net::{IpAddr, SocketAddr};
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
    /// `[rate_limit.NAME]`, sorted by name; routes attach them by index.
    pub rate_limits: Vec<RateLimitConfig>,
    /// None: no access log (the `[access_log]` table is absent).
    pub access_log: Option<AccessLogConfig>,
    /// None: no response cache (the `[cache]` table is absent).
    pub cache: Option<CacheConfig>,
    /// None: no admin listener (the `[admin]` table is absent).
    pub admin: Option<AdminConfig>,
    /// None: no span export (the `[tracing]` table is absent).
    pub tracing: Option<TracingConfig>,
    /// `[auth.NAME]`, sorted by name; routes attach them by index.
    pub auths: Vec<crate::AuthConfig>,
    /// Things that are valid but probably not meant (an unreachable route, an unused
    /// upstream): `sluice check` prints them, `sluice run` logs them.
    pub warnings: Vec<crate::Problem>,
}

/// `[rate_limit.NAME]`: GCRA per key (docs/OVERLOAD.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    /// What one count is kept for: the parts, joined. Default: the client's address.
    pub key: Vec<RateKeyPart>,
    /// `count` requests per `per`.
    pub count: u32,
    pub per: Duration,
    /// Requests admitted at once (the bucket's size). Default: `count`.
    pub burst: u32,
    pub scope: RateScope,
    /// Global scope: what to do when Redis does not answer within `timeout`.
    pub on_store_error: StoreErrorPolicy,
    /// Global scope: Redis's answer is awaited this long at most. Default 50ms.
    pub timeout: Duration,
    /// A request without a key part (a missing header): refused, or counted under one
    /// key shared by all such requests. Default shared.
    pub missing_key: MissingKey,
}

/// One part of a rate limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKeyPart {
    /// `"client_ip"`: the client's address (after `server.trusted_proxies`).
    ClientIp,
    /// `"header:NAME"`: a request header's value (lower-case name).
    Header(String),
    /// `"route"`: the route's name.
    Route,
    /// `"identity"`: who the route's `auth` says is calling (issue 23).
    Identity,
}

/// Where a rate limit's counts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateScope {
    /// In this process (every worker's requests count together).
    Local,
    /// In Redis, shared by every instance.
    Global(RedisLink),
}

/// `on_store_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorPolicy {
    /// The same limit, counted in this process alone.
    Local,
    /// Admit.
    Open,
    /// Refuse (503).
    Closed,
}

/// `missing_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKey {
    Shared,
    Refuse,
}

/// `[access_log]`: one line per request, from its outcome record.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub destination: LogDestination,
    pub format: LogFormat,
    /// Lines waiting for the writer thread at most; beyond, lines are dropped and counted.
    pub queue: usize,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum LogDestination {
    Stderr,
    /// Appended to; relative paths are from the config file's folder.
    File(PathBuf),
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Apache/nginx combined format, with sluice's fields appended as key=value.
    Combined,
    /// Exactly Apache's combined format, nothing appended (strict parsers, goaccess).
    CombinedPlain,
}

/// An IP network in CIDR form (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` is in this network. An IPv4 address seen as IPv4-mapped IPv6 matches
    /// its IPv4 network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if net[..full] != ip[..full] {
        return false;
    }
    let rest = prefix % 8;
    rest == 0 || (net[full] ^ ip[full]) & (0xffu8 << (8 - rest)) == 0
}

/// Process-wide settings from `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Tokio worker threads. Default: the number of cores.
    pub worker_threads: usize,
    /// How the workers run. Default per-core (docs/BENCHMARKS.md has the figures).
    pub model: ConcurrencyModel,
    /// Whether per-core workers keep their own upstream pools. Default per-worker.
    pub upstream_pools: PoolSharing,
    /// Open client connections served at most; at the cap each worker holds one accepted
    /// connection unread until a place frees, the rest wait in the backlog. Default 10,000.
    pub max_connections: usize,
    /// Open connections from one client address at most (IPv6: per /64); beyond, a new
    /// connection is closed at once and counted. The TCP peer's address: behind an L4
    /// balancer without PROXY protocol every client is the balancer. Default: off.
    pub max_connections_per_ip: Option<u32>,
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
    /// Forward request header names with `_` (`X_Forwarded_For`), which WSGI and CGI
    /// servers read as the dashed header they fold to. Default false: dropped, as
    /// nginx's `underscores_in_headers off` does.
    pub underscores_in_headers: bool,
    /// Where request bodies of `large_request_bodies = "spool"` routes are written
    /// (files are unlinked as soon as they are opened). Default: the system temp dir.
    pub spool_dir: PathBuf,
    /// Bytes of responses spooled at once in all, at most; past it, new spooling is
    /// refused (the responses stream instead). Default 2 GiB.
    pub spool_max_total: u64,
    /// An HTTP/2 client's stream window (SETTINGS_INITIAL_WINDOW_SIZE): how much of a
    /// request body a client may send before sluice reads it. Small, so that an
    /// upstream's early answer (413, 401) costs the client little upload; it also caps
    /// one stream's upload at a window per round trip. Default 64 KiB (nginx's
    /// http2_body_preread_size, HAProxy's initial window); the connection's is 1 MiB.
    pub http2_stream_window: u32,
    /// Clients whose X-Forwarded-For is extended; anyone else's is replaced by their
    /// address. Default: none (every client's value is replaced).
    pub trusted_proxies: Vec<IpNetwork>,
    /// Endpoint names are looked up again after this (in the background; a failed
    /// lookup keeps the last answer). Default 30s.
    pub dns_ttl: Duration,
    /// When set, the config file is looked at this often and reloaded when it changed
    /// (as on SIGHUP). Default: not watched.
    pub config_watch: Option<Duration>,
}

/// How requests are spread over threads (`server.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyModel {
    /// One OS thread per worker, each a single-threaded event loop with its own
    /// listening sockets (SO_REUSEPORT), timers, buffers and (by default) upstream pools:
    /// nginx's and HAProxy's shape. A connection lives and dies on one thread.
    PerCore,
    /// One tokio multi-threaded runtime: tasks migrate between workers by work stealing.
    WorkStealing,
}

/// Where per-core workers take upstream connections from (`server.upstream_pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSharing {
    /// Each worker its own pools (nginx): no lock or wakeup crosses threads, but up to
    /// workers × max_connections upstream connections per endpoint.
    PerWorker,
    /// One set of pools for all workers (HAProxy): fewer upstream connections, but a
    /// connection made by one worker is driven by that worker for all of them.
    Shared,
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

/// PEM files for a TLS listener, resolved relative to the config file. With several,
/// the client's SNI name picks the one whose certificate names it; the first is used
/// for clients that send no name or one no certificate has.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub certificates: Vec<CertificateFiles>,
}

/// A PEM certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Names the route in logs and metrics. Default: its host and path prefix.
    pub name: String,
    /// Exact host (`api.example.com`) or one-label wildcard (`*.example.com`); None matches any.
    pub host: Option<String>,
    /// Default "/": every path.
    pub path_prefix: String,
    /// Upper-case method names; empty matches any method.
    pub methods: Vec<String>,
    /// Index into `Config::upstreams`; None only for a route that redirects every
    /// request it takes (`[route.redirect]`).
    pub upstream: Option<usize>,
    /// From the moment the request is handed to the upstream group (waiting for a pool
    /// connection, connecting and sending the request included) to the response head;
    /// 504 after. Default 30s.
    pub timeout: Duration,
    /// After the response head, the longest the upstream may send nothing while the
    /// body is read; the client connection is closed after (a visible truncation). Default 60s.
    pub read_timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed. Default 10m.
    pub tunnel_idle_timeout: Duration,
    /// Request bodies up to this size are read whole before an upstream connection is
    /// taken, so a slow uploader holds none; larger ones stream. Default 64 KiB.
    pub request_buffer: u64,
    /// Response bytes read ahead of a slow client, so a small response frees its
    /// upstream connection at once. Default 64 KiB.
    pub response_buffer: u64,
    /// A request body larger than this gets 413 (before the upstream is contacted when
    /// Content-Length says so). Default 1 GiB.
    pub max_request_body: u64,
    /// What happens to a request body larger than `request_buffer`. Default spool.
    pub large_request_bodies: LargeBodies,
    /// What happens to a response body its client takes slower than the upstream sends
    /// it, past `response_buffer`. Default spool.
    pub large_responses: LargeResponses,
    /// A response spooled for a slow client, at most; past it, the rest streams (the
    /// upstream connection is held). Default 1 GiB.
    pub max_response_spool: u64,
    /// Upgrade protocols tunnelled after a 101 (lower case); any other `Upgrade` is
    /// removed. Default `["websocket"]`.
    pub upgrades: Vec<String>,
    /// Responses on this route go through the `[cache]`. Default false.
    pub cache: bool,
    /// A lifetime for storable responses that give none (no max-age, s-maxage or
    /// Expires), as nginx's `proxy_cache_valid`; never for no-store, private or
    /// no-cache. Default none (only heuristics, when configured).
    pub cache_default_lifetime: Option<Duration>,
    /// Browser cross-origin calls (`[route.cors]`): preflights answered by sluice,
    /// responses given the CORS fields. None: no CORS handling (fields pass as sent).
    pub cors: Option<CorsConfig>,
    /// `auth`: an index into `Config::auths`; requests without valid credentials get 401.
    pub auth: Option<usize>,
    /// Path, Host and header changes (`[route.rewrite]`, `[route.request_headers]`,
    /// `[route.response_headers]`). None: nothing is changed.
    pub rewrite: Option<crate::RewriteConfig>,
    /// `[route.redirect]`: sluice answers with a redirect.
    pub redirect: Option<crate::RedirectConfig>,
    /// `[route.compression]`: responses compressed for clients that accept it.
    pub compression: Option<crate::CompressionConfig>,
    /// `rate_limits`: indexes into `Config::rate_limits`, each applied in turn.
    pub rate_limits: Vec<usize>,
    /// Under an adaptive limit: critical requests wait in line, sheddable ones are
    /// refused at once. Default critical.
    pub priority: Priority,
    /// A request header (lower case) whose value `critical` or `sheddable` overrides
    /// `priority` (set by a trusted caller; sluice does not check who sent it).
    pub priority_header: Option<String>,
}

/// `[admin]`: a separate listener for operators.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Default 127.0.0.1:9901 (loopback: reachable from this machine only).
    pub address: std::net::SocketAddr,
    /// When set, every request must carry `Authorization: Bearer TOKEN` (else 401).
    pub token: Option<String>,
}

/// The token is a secret: never printed.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[tracing]`: each sampled request becomes a span (with a child span per upstream
/// try), sent in batches to an OpenTelemetry collector over OTLP/HTTP (JSON).
#[derive(Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's host (a name or an address) and port, as written.
    pub authority: String,
    /// The path spans are POSTed to. Default `/v1/traces`.
    pub path: String,
    /// The share of traces sluice starts that are sampled, 0.0 to 1.0 (default 1.0). A
    /// client's `traceparent` decides for its own trace (its sampled flag).
    pub sample_ratio: f64,
    /// The resource's `service.name`. Default "sluice".
    pub service_name: String,
    /// Spans sent per request to the collector, at most. Default 512.
    pub batch_size: usize,
    /// Spans waiting to be sent, at most; more are dropped and counted. Default 8192.
    pub queue: usize,
    /// A batch is sent at least this often when spans are waiting. Default 1s.
    pub flush_interval: Duration,
    /// One export's limit (connect, send, answer). Default 5s.
    pub timeout: Duration,
    /// Sent with every export (e.g. a vendor's API key); values are secrets.
    pub headers: Vec<(String, String)>,
}

/// Header values may be API keys: never printed.
impl std::fmt::Debug for TracingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("TracingConfig")
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .field("batch_size", &self.batch_size)
            .field("queue", &self.queue)
            .field("flush_interval", &self.flush_interval)
            .field("timeout", &self.timeout)
            .field("headers (values redacted)", &names)
            .finish()
    }
}

/// `[cache]`: an RFC 9111 shared cache in memory, optionally backed by a shared tier.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// The memory tier holds at most this many bytes (keys, headers and bodies). Default 256 MiB.
    pub memory: u64,
    /// Larger responses are passed through uncached. Default 8 MiB.
    pub max_object: u64,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with Last-Modified and no
    /// explicit lifetime: this share of their age, at most `heuristic_max`. 0 = off (default).
    pub heuristic_percent: u64,
    pub heuristic_max: Duration,
    /// Responses with Set-Cookie are stored without it (true) or not at all (false, default).
    pub store_set_cookie: bool,
    /// Concurrent misses for one key send one upstream request. Default true.
    pub coalesce: bool,
    /// How long an instance waits for another instance's fetch of the same key (the
    /// cross-instance lock's hold and poll). Within one instance, a coalesced request
    /// waits for the first one's response as long as that fetch takes. Default 5s.
    pub coalesce_wait: Duration,
    /// Clients that may send PURGE. Default: loopback only.
    pub purge_from: Vec<IpNetwork>,
    /// The response header listing an entry's tags, for purging by tag. Default `surrogate-key`.
    pub tag_header: String,
    /// A targeted cache-control field (RFC 9213) meant for this cache alone, e.g.
    /// `sluice-cache-control` (lower case): it wins over `CDN-Cache-Control`, which wins
    /// over `Cache-Control`, for what sluice stores. Default: none (CDN-Cache-Control only).
    pub targeted_field: Option<String>,
    /// Request headers (lower case) and cookies added to the cache key.
    pub key_headers: Vec<String>,
    pub key_cookies: Vec<String>,
    /// The query string is left out of the key entirely.
    pub key_ignore_query: bool,
    /// These query parameters are left out of the key.
    pub key_ignore_params: Vec<String>,
    /// What names the site in the key (`KeyAuthority`). Default the request's Host.
    pub key_authority: KeyAuthority,
    /// A second tier shared by sluice instances.
    pub shared: Option<SharedTierConfig>,
}

/// The key's authority: how instances reached under different names or ports share
/// (or do not share) entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAuthority {
    /// The request's Host as sent, port included ("host"; the default).
    Host,
    /// The Host without its port ("hostname"): instances reached on their own ports
    /// share one key.
    Hostname,
    /// The route's upstream group name ("upstream"; nginx's `$proxy_host`): every Host
    /// routed to one group shares one key.
    Upstream,
}

/// `[route.cors]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`, with a port if not the
    /// scheme's), a one-label wildcard (`https://*.example.com`), or `*` (any, without
    /// credentials).
    pub origins: Vec<CorsOrigin>,
    /// Methods a preflight may ask for. Default GET, HEAD, POST.
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for (lower case). Default none beyond the
    /// CORS-safelisted ones.
    pub headers: Vec<String>,
    /// Response headers the page may read (lower case).
    pub expose_headers: Vec<String>,
    /// Cookies and Authorization may be sent (Access-Control-Allow-Credentials).
    pub credentials: bool,
    /// How long a browser may keep a preflight's answer. Default 10 minutes.
    pub max_age: Duration,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    Any,
    /// `scheme://host[:port]`, lower case.
    Exact(String),
    /// `scheme://*.` and the domain it ends with (`scheme`, `.example.com`).
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl CorsOrigin {
    /// Whether a request's `Origin` (as sent) is this one.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            CorsOrigin::Any => true,
            CorsOrigin::Exact(exact) => origin == *exact,
            CorsOrigin::Subdomains { scheme, suffix } => {
                origin.strip_prefix(scheme.as_str()).and_then(|rest| rest.strip_prefix("://")).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host[..host.len() - suffix.len()].contains(['.', '/', ':'])
                })
            }
        }
    }
}

/// A Redis to reach (the cache's shared tier, a global rate limit's counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisLink {
    /// As written (`/config` shows it with its credentials redacted).
    pub url: String,
    pub topology: RedisTopology,
    /// A file whose first line is the password (Redis AUTH / ACL), read at start.
    pub password_file: Option<PathBuf>,
    /// PEM certificates to trust for TLS (`rediss`), instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// A Redis deployment, read from its URL (`parse_redis_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: the URL as the redis crate reads it.
    Server(String),
    /// A Cluster's seed nodes, each a `redis://` or `rediss://` URL.
    Cluster(Vec<String>),
    /// Sentinels (URLs without credentials), the primary's service name, and a URL
    /// carrying the primary's credentials, TLS and db (its host is a placeholder).
    Sentinel { sentinels: Vec<String>, service: String, primary: String },
}

/// `[cache.redis]` or `[cache.memcached]`.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedTierConfig {
    Redis {
        /// Where: one server, a Cluster or Sentinel.
        link: RedisLink,
        /// Each Redis operation waits this long at most; then the tier is skipped. Default 50ms.
        timeout: Duration,
        /// Keys start with this. Default "sluice".
        prefix: String,
        /// Coalesce misses across instances with a short Redis lock. Default false.
        coalesce_lock: bool,
    },
    Memcached {
        /// `host:port`.
        address: String,
        timeout: Duration,
        prefix: String,
    },
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

/// Response bodies a client takes slower than its upstream sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargeResponses {
    /// Past `response_buffer`, written to a temp file (at most `max_response_spool`, and
    /// `server.spool_max_total` for all), so the upstream connection is free as soon as
    /// the upstream has sent the body, however slowly the client reads (nginx's
    /// proxy_buffering with its temp file).
    Spool,
    /// Read only as fast as the client takes it: the upstream connection is held while
    /// a slow client reads (no disk used).
    Stream,
}

/// The protocol sluice speaks to an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// `weights[i]` is `endpoints[i]`'s share (default 1 each).
    pub weights: Vec<u32>,
    /// How requests are spread over the endpoints. Default least_request.
    pub balance: Balance,
    /// An endpoint back in rotation ramps from 10% to its full weight over this long.
    /// Default 0 (off).
    pub slow_start: Duration,
    pub protocol: UpstreamProtocol,
    pub pool: PoolSettings,
    /// Passive health: when an endpoint is ejected for failing.
    pub outlier: OutlierSettings,
    /// When a request is tried again, and how much retrying may add.
    pub retry: RetrySettings,
    /// Beyond these, requests get 503 at once instead of queueing.
    pub circuit_breaker: CircuitBreaker,
    /// How long a request waits in line for a connection (or HTTP/2 stream) at the
    /// pool's cap, over all its tries, before 503 with Retry-After (HAProxy's `timeout
    /// queue`); zero: no waiting. Default 1s.
    pub queue_timeout: Duration,
    /// Active checks: None when not configured.
    pub health_check: Option<HealthCheck>,
    /// An adaptive concurrency limit: None when not configured.
    pub adaptive: Option<AdaptiveConfig>,
    /// `[upstream.NAME.rate]`: requests sent to the group at most `count` per `per`, up
    /// to `burst` at once, for the process; beyond, a request waits (within
    /// queue_timeout) until it may go, or gets 503. None when not configured.
    pub rate: Option<UpstreamRate>,
    /// Some: connect to the endpoints over TLS.
    pub tls: Option<UpstreamTls>,
}

/// `[upstream.NAME.adaptive]`: the group's requests in flight (until their response
/// heads) at most a limit that follows measured latency (docs/OVERLOAD.md); one
/// limiter per group for the whole process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Default 20.
    pub initial_limit: u32,
    /// Default 1.
    pub min_limit: u32,
    /// Default 1,000.
    pub max_limit: u32,
    /// How much slower than its baseline the upstream may answer before the limit
    /// shrinks (1.3: 30% slower). Default 1.3 (docs/OVERLOAD.md says why).
    pub tolerance: f64,
}

/// `[upstream.NAME.rate]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamRate {
    pub count: u32,
    pub per: Duration,
    /// Default 1: requests evenly spaced.
    pub burst: u32,
}

/// A route's requests under pressure (`priority`): sheddable ones are refused first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Critical,
    Sheddable,
}

/// `balance`: how a group spreads requests (docs/BALANCING.md says how to choose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Ewma,
    ConsistentHash(HashKey),
    Random,
}

/// `[upstream.NAME.outlier]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failed requests in a row (connect failures, timeouts, 5xx) that eject an
    /// endpoint; 0 turns ejection off. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long, the nth n times as long (at most 5 minutes). Default 30s.
    pub base_ejection: Duration,
    /// At most this share of a group's endpoints is ejected at once (at least one may
    /// be). Default 50.
    pub max_ejected_percent: u32,
}

/// `[upstream.NAME.retry]`. Retries go to another endpoint where there is one. A request
/// is tried again after it was sent when it is idempotent or its body was read whole
/// (empty, or under the route's buffer size), unless `idempotent_only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Tries after the first, at most. Default 2.
    pub retries: u32,
    /// Retry when connecting fails (nothing was sent; any request may go). Default on.
    pub on_connect_failure: bool,
    /// Retry when the connection fails before a response head. Default on.
    pub on_reset: bool,
    /// Retry on these response statuses (e.g. 502, 503, 504). Default none.
    pub on_status: Vec<u16>,
    /// Retries add at most this percentage of requests (over 10 s). Default 20.
    pub budget_percent: u32,
    /// Retries allowed per second whatever the budget says. Default 3.
    pub min_retries_per_second: u32,
    /// Backoff base: retry n waits up to base × 2^(n-1), at most 10 × base. Default 25ms.
    pub backoff: Duration,
    /// One try waits this long at most for its response head (then counts as a reset).
    /// Default: none (the route's timeout bounds all tries together).
    pub per_try_timeout: Option<Duration>,
    /// Hedging: an idempotent request (body read whole) that has no response head after
    /// this long is also sent to another endpoint; the first head wins, the other is
    /// cancelled. Counted against the budget. Default: off.
    pub hedge_after: Option<HedgeAfter>,
    /// Only idempotent methods are tried again after they were sent (a POST whose
    /// upstream may have acted on it before the reset is not). Default false.
    pub idempotent_only: bool,
}

/// `retry.hedge_after`: a fixed delay, or the group's recent p95 head latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    Fixed(Duration),
    /// `"p95"`: the 95th percentile of the group's last 256 response heads (on this worker).
    P95,
}

/// `[upstream.NAME.health_check]`: each worker GETs `path` from every endpoint every
/// `interval`; an endpoint that fails `unhealthy_threshold` checks in a row gets no
/// requests until it passes `healthy_threshold` in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// Default 5s.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Default 2.
    pub healthy_threshold: usize,
    /// Default 3.
    pub unhealthy_threshold: usize,
    /// Default: any 2xx or 3xx.
    pub expected_statuses: Vec<u16>,
}

/// `[upstream.NAME.circuit_breaker]`: per group, each per-core worker enforcing its
/// share (the limit ÷ workers, rounded up), so that no count is shared between workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Requests in flight to the group at most. Default 10,000.
    pub max_requests: usize,
    /// Requests waiting for a connection at most. Default 1,024.
    pub max_pending: usize,
    /// Requests being retried at once at most (beyond, a failure is returned, not retried). Default 64.
    pub max_retries: usize,
}

/// `hash_key`: what a request is hashed on for `consistent_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `"header:NAME"`: a request header's value (lower-case name).
    Header(String),
    /// `"cookie:NAME"`: a cookie's value.
    Cookie(String),
    /// `"client_ip"`: the client's address.
    ClientIp,
    /// `"path"`: the normalised path.
    Path,
}

/// TLS to an upstream group's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the certificate. Default: the endpoint's host.
    pub server_name: Option<String>,
    /// PEM CA certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of the exact certificates accepted (development upstreams
    /// with a self-signed certificate): when set, only these are, whatever their
    /// issuer, name or dates; the handshake's signature is still checked.
    pub pin_sha256: Vec<[u8; 32]>,
    /// A client certificate for mutual TLS.
    pub client_certificate: Option<CertificateFiles>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolSettings {
    /// Open connections (idle + busy) at most. Default 256.
    pub max_connections: usize,
    /// Idle connections kept at most when a response ends. Default: max_connections, so
    /// that steady load never closes and reopens connections; idle ones are trimmed by
    /// age (idle_timeout) instead.
    pub max_idle: usize,
    /// Connections kept open (HTTP/2: connections, not streams): opened at start and
    /// refilled. Default 0.
    pub min_idle: usize,
    /// An idle connection is closed after this. Default 60s.
    pub idle_timeout: Duration,
    /// A connection is retired after this age, idle or not (once its request ends). Default 10m.
    pub max_lifetime: Duration,
    /// A connection is retired after this many requests; 0 means no limit. Default 0.
    pub max_requests: u64,
    /// TCP connect (including DNS) must finish within this. Default 2s.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        use crate::defaults::*;
        PoolSettings {
            max_connections: POOL_MAX_CONNECTIONS,
            max_idle: POOL_MAX_CONNECTIONS,
            min_idle: POOL_MIN_IDLE,
            idle_timeout: POOL_IDLE_TIMEOUT,
            max_lifetime: POOL_MAX_LIFETIME,
            max_requests: 0,
            connect_timeout: POOL_CONNECT_TIMEOUT,
        }
    }
}
