//! The TOML file as written by users: serde types only, no validation.
//!
//! Every table denies unknown keys so that a typo is an error, not a silently
//! ignored setting. Values that need checks beyond their type are wrapped in
//! [`Spanned`] so that `validate` can point at their line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::ConfigDuration;
use crate::size::ConfigSize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<FileListener>,
    #[serde(default, rename = "route")]
    pub routes: Vec<FileRoute>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, FileUpstream>,
    #[serde(default, rename = "rate_limit")]
    pub rate_limits: BTreeMap<String, FileRateLimit>,
    pub access_log: Option<FileAccessLog>,
    pub cache: Option<FileCache>,
    pub admin: Option<FileAdmin>,
    pub tracing: Option<FileTracing>,
    #[serde(default)]
    pub auth: BTreeMap<String, FileAuth>,
}

/// `[auth.NAME]`: who may call the routes that name it (`kind` says how).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub kind: Spanned<String>,
    pub identity_header: Option<Spanned<String>>,
    pub hide_credentials: Option<bool>,
    // api_key
    pub keys_file: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
    // jwt
    pub jwks_file: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<ConfigDuration>>,
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub hs256_secret_file: Option<Spanned<String>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Vec<Spanned<String>>>,
    pub leeway: Option<Spanned<ConfigDuration>>,
    pub identity_claim: Option<Spanned<String>>,
    pub claim_headers: Option<BTreeMap<String, Spanned<String>>>,
}

/// `[tracing]`: request spans exported to an OpenTelemetry collector (OTLP/HTTP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTracing {
    pub otlp_endpoint: Option<Spanned<String>>,
    pub sample_ratio: Option<Spanned<f64>>,
    pub service_name: Option<Spanned<String>>,
    pub batch_size: Option<Spanned<usize>>,
    pub queue: Option<Spanned<usize>>,
    pub flush_interval: Option<Spanned<ConfigDuration>>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
}

/// `[admin]`: the admin listener (health, metrics, upstreams, drain, purge).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

/// `[cache]`: the response cache that routes with `cache = true` use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub memory: Option<Spanned<ConfigSize>>,
    pub max_object: Option<Spanned<ConfigSize>>,
    pub heuristic_percent: Option<Spanned<u64>>,
    pub heuristic_max: Option<Spanned<ConfigDuration>>,
    pub store_set_cookie: Option<bool>,
    pub coalesce: Option<bool>,
    pub coalesce_wait: Option<Spanned<ConfigDuration>>,
    pub purge_from: Option<Vec<Spanned<String>>>,
    pub tag_header: Option<Spanned<String>>,
    pub targeted_field: Option<Spanned<String>>,
    pub key_headers: Option<Vec<Spanned<String>>>,
    pub key_cookies: Option<Vec<Spanned<String>>>,
    pub key_ignore_query: Option<bool>,
    pub key_ignore_params: Option<Vec<Spanned<String>>>,
    pub key_authority: Option<Spanned<String>>,
    pub redis: Option<FileRedisTier>,
    pub memcached: Option<FileMemcachedTier>,
}

/// `[cache.redis]`: a second tier shared by every sluice instance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedisTier {
    pub url: Spanned<String>,
    pub password_file: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub prefix: Option<Spanned<String>>,
    pub coalesce_lock: Option<bool>,
}

/// `[cache.memcached]`: the same tier on memcached.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMemcachedTier {
    pub address: Spanned<String>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub prefix: Option<Spanned<String>>,
}

/// `[rate_limit.NAME]`: a rate limit that routes attach by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub key: Option<Spanned<Vec<Spanned<String>>>>,
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u32>>,
    pub scope: Option<Spanned<String>>,
    pub redis: Option<Spanned<String>>,
    pub redis_password_file: Option<Spanned<String>>,
    pub redis_ca_file: Option<Spanned<String>>,
    pub on_store_error: Option<Spanned<String>>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub missing_key: Option<Spanned<String>>,
}

/// `[access_log]`: one line per request, written off the request path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    pub path: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub queue: Option<Spanned<usize>>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub worker_threads: Option<Spanned<usize>>,
    pub model: Option<Spanned<String>>,
    pub upstream_pools: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_ip: Option<Spanned<usize>>,
    pub header_read_timeout: Option<Spanned<ConfigDuration>>,
    pub keepalive_timeout: Option<Spanned<ConfigDuration>>,
    pub drain_timeout: Option<Spanned<ConfigDuration>>,
    pub client_body_timeout: Option<Spanned<ConfigDuration>>,
    pub send_timeout: Option<Spanned<ConfigDuration>>,
    pub merge_slashes: Option<bool>,
    pub underscores_in_headers: Option<bool>,
    pub escaped_slashes: Option<Spanned<String>>,
    pub spool_dir: Option<Spanned<String>>,
    pub spool_max_total: Option<ConfigSize>,
    pub http2_stream_window: Option<Spanned<ConfigSize>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub dns_ttl: Option<Spanned<ConfigDuration>>,
    pub config_watch: Option<Spanned<ConfigDuration>>,
}

/// `[[listener]]`: one address sluice accepts on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: Spanned<String>,
    pub protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub reuse_port: bool,
    pub backlog: Option<Spanned<u32>>,
    pub tls: Option<FileTls>,
}

/// `[listener.tls]`: certificate chain and private key, PEM files; or several, chosen
/// by the name the client asks for (SNI).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub certificate: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub certificates: Option<Spanned<Vec<FileCertificate>>>,
}

/// One certificate chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    pub certificate: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[[route]]`: what requests go to which upstream group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub upstream: Option<Spanned<String>>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub read_timeout: Option<Spanned<ConfigDuration>>,
    pub tunnel_idle_timeout: Option<Spanned<ConfigDuration>>,
    pub request_buffer: Option<ConfigSize>,
    pub response_buffer: Option<ConfigSize>,
    pub max_request_body: Option<Spanned<ConfigSize>>,
    pub large_request_bodies: Option<Spanned<String>>,
    pub large_responses: Option<Spanned<String>>,
    pub max_response_spool: Option<ConfigSize>,
    pub upgrades: Option<Vec<Spanned<String>>>,
    pub cache: Option<Spanned<bool>>,
    pub cache_default_lifetime: Option<Spanned<ConfigDuration>>,
    pub rate_limits: Option<Vec<Spanned<String>>>,
    pub priority: Option<Spanned<String>>,
    pub priority_header: Option<Spanned<String>>,
    pub cors: Option<FileCors>,
    pub auth: Option<Spanned<String>>,
    pub rewrite: Option<FileRewrite>,
    pub request_headers: Option<FileHeaderEdits>,
    pub response_headers: Option<FileHeaderEdits>,
    pub redirect: Option<FileRedirect>,
    pub compression: Option<FileCompression>,
}

/// `[route.rewrite]`: the path and Host the upstream is sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRewrite {
    pub strip_prefix: Option<Spanned<String>>,
    pub add_prefix: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub to: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
}

/// `[route.request_headers]` / `[route.response_headers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderEdits {
    pub add: Option<BTreeMap<String, Spanned<String>>>,
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `[route.redirect]`: sluice answers with a redirect instead of forwarding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<u16>>,
    pub only_scheme: Option<Spanned<String>>,
}

/// `[route.compression]`: responses compressed for clients that accept it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCompression {
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub types: Option<Vec<Spanned<String>>>,
    pub min_size: Option<Spanned<ConfigSize>>,
    pub levels: Option<BTreeMap<String, Spanned<i64>>>,
}

/// `[route.cors]`: which browser origins may call the route, and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCors {
    pub origins: Spanned<Vec<Spanned<String>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub expose_headers: Option<Vec<Spanned<String>>>,
    pub credentials: Option<bool>,
    pub max_age: Option<Spanned<ConfigDuration>>,
}

/// `[upstream.NAME]`: a group of interchangeable endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub endpoints: Spanned<Vec<Spanned<FileEndpoint>>>,
    pub protocol: Option<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub slow_start: Option<Spanned<ConfigDuration>>,
    pub queue_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub pool: FilePool,
    pub tls: Option<FileUpstreamTls>,
    #[serde(default)]
    pub outlier: FileOutlier,
    #[serde(default)]
    pub retry: FileRetry,
    #[serde(default)]
    pub circuit_breaker: FileCircuitBreaker,
    pub health_check: Option<FileHealthCheck>,
    pub adaptive: Option<FileAdaptive>,
    pub rate: Option<FileUpstreamRate>,
}

/// `[upstream.NAME.rate]`: requests per second sent to the group at most.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamRate {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u32>>,
}

/// `[upstream.NAME.adaptive]`: a concurrency limit that follows measured latency.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdaptive {
    pub initial_limit: Option<Spanned<u32>>,
    pub min_limit: Option<Spanned<u32>>,
    pub max_limit: Option<Spanned<u32>>,
    pub tolerance: Option<Spanned<f64>>,
}

/// `[upstream.NAME.health_check]`: active checks, by HTTP GET.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<ConfigDuration>>,
    pub timeout: Option<Spanned<ConfigDuration>>,
    pub healthy_threshold: Option<Spanned<usize>>,
    pub unhealthy_threshold: Option<Spanned<usize>>,
    pub expected_statuses: Option<Vec<u16>>,
}

/// `[upstream.NAME.circuit_breaker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCircuitBreaker {
    pub max_requests: Option<Spanned<usize>>,
    pub max_pending: Option<Spanned<usize>>,
    pub max_retries: Option<usize>,
}

/// `[upstream.NAME.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    pub retries: Option<u32>,
    pub on: Option<Vec<Spanned<String>>>,
    pub budget_percent: Option<u32>,
    pub min_retries_per_second: Option<u32>,
    pub backoff: Option<Spanned<ConfigDuration>>,
    pub per_try_timeout: Option<Spanned<ConfigDuration>>,
    pub hedge_after: Option<Spanned<String>>,
    pub idempotent_only: Option<bool>,
}

/// `[upstream.NAME.outlier]`: passive health from the requests' own outcomes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<Spanned<ConfigDuration>>,
    pub max_ejected_percent: Option<Spanned<u32>>,
}

/// One endpoint: `"host:port"`, or `{ address = "host:port", weight = 3 }`.
#[derive(Debug)]
pub struct FileEndpoint {
    pub address: String,
    pub weight: Option<u32>,
}

impl<'de> Deserialize<'de> for FileEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host:port\" or { address = \"host:port\", weight = 2 }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileEndpoint, E> {
                Ok(FileEndpoint { address: v.to_string(), weight: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileEndpoint, A::Error> {
                let (mut address, mut weight) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value::<String>()?),
                        "weight" => weight = Some(map.next_value::<u32>()?),
                        other => return Err(serde::de::Error::unknown_field(other, &["address", "weight"])),
                    }
                }
                let address = address.ok_or_else(|| serde::de::Error::missing_field("address"))?;
                Ok(FileEndpoint { address, weight })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[upstream.NAME.tls]`: sluice connects to the endpoints over TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    pub server_name: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub pin_sha256: Option<Vec<Spanned<String>>>,
    pub certificate: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `[upstream.NAME.pool]`: connection pool settings, per endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub max_connections: Option<Spanned<usize>>,
    pub max_idle: Option<Spanned<usize>>,
    pub min_idle: Option<Spanned<usize>>,
    pub idle_timeout: Option<Spanned<ConfigDuration>>,
    pub max_lifetime: Option<Spanned<ConfigDuration>>,
    pub max_requests: Option<u64>,
    pub connect_timeout: Option<Spanned<ConfigDuration>>,
    /// Renamed `upstream.NAME.queue_timeout`; kept only to say so.
    pub wait_timeout: Option<Spanned<ConfigDuration>>,
}
