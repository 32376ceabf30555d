//! Every default value of the config file, defined once. `validate` fills them in,
//! `model`'s doc comments and `examples/sluice.toml` repeat them for readers, and a
//! test checks that the example file states these same values.

use std::time::Duration;

use crate::model::{ConcurrencyModel, PoolSharing};

/// Chosen by measurement: docs/BENCHMARKS.md, "Concurrency model".
pub const MODEL: ConcurrencyModel = ConcurrencyModel::PerCore;
pub const UPSTREAM_POOLS: PoolSharing = PoolSharing::PerWorker;
pub const MAX_CONNECTIONS: usize = 10_000;
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
pub const UNDERSCORES_IN_HEADERS: bool = false;
pub const BACKLOG: u32 = 4096;
/// How long a resolved endpoint name is used before it is looked up again (in the
/// background; a failed lookup keeps the last answer). nginx's `resolver valid=`.
pub const DNS_TTL: Duration = Duration::from_secs(30);

pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's proxy_read_timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for a quiet WebSocket with pings every minute or so; short enough that a
/// dead peer does not hold two sockets for hours.
pub const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Request and response bytes buffered per request: 64 KiB.
pub const BODY_BUFFER: u64 = 64 * 1024;
/// Request bodies larger than this are refused: 1 GiB.
pub const MAX_REQUEST_BODY: u64 = 1 << 30;
/// A response spooled for a slow client, at most (nginx's proxy_max_temp_file_size).
pub const MAX_RESPONSE_SPOOL: u64 = 1 << 30;
/// All responses spooled at once, at most; beyond, responses stream (never fail).
pub const SPOOL_MAX_TOTAL: u64 = 2 << 30;
/// 64 KiB: nginx's http2_body_preread_size and HAProxy's initial window.
pub const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;

/// Envoy's consecutive_5xx default.
pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
/// Envoy's base_ejection_time.
pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(30);
/// At most half of a group is ejected (Envoy's 10% ejects nothing in groups under 10).
pub const OUTLIER_MAX_EJECTED_PERCENT: u32 = 50;

pub const RETRIES: u32 = 2;
/// Retries add at most this share of requests (Finagle's and Envoy's 20%).
pub const RETRY_BUDGET_PERCENT: u32 = 20;
pub const MIN_RETRIES_PER_SECOND: u32 = 3;
pub const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Circuit breaking: generous, so that they stop runaways, not normal peaks (Envoy's
/// 1,024 is a common surprise).
pub const MAX_REQUESTS: usize = 10_000;
pub const MAX_PENDING: usize = 1_024;
pub const MAX_RETRIES: usize = 64;

pub const POOL_MAX_CONNECTIONS: usize = 256;
pub const POOL_MIN_IDLE: usize = 0;
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const POOL_MAX_LIFETIME: Duration = Duration::from_secs(600);
pub const POOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// Access log lines queued for the writer thread at most (~64 K × ~300 B of record).
pub const ACCESS_LOG_QUEUE: usize = 65_536;

/// `[cache]`.
pub const CACHE_MEMORY: u64 = 256 << 20;
pub const CACHE_MAX_OBJECT: u64 = 8 << 20;
pub const CACHE_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);
pub const CACHE_COALESCE_WAIT: Duration = Duration::from_secs(5);
pub const CACHE_TAG_HEADER: &str = "surrogate-key";
pub const CACHE_SHARED_TIMEOUT: Duration = Duration::from_millis(50);
pub const CACHE_SHARED_PREFIX: &str = "sluice";

/// `[tracing]`: the OpenTelemetry Collector's default OTLP/HTTP endpoint on this host.
pub const OTLP_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";
/// The OpenTelemetry SDKs' batch size and a queue that holds a few batches.
pub const TRACING_BATCH: usize = 512;
pub const TRACING_QUEUE: usize = 8192;
pub const TRACING_FLUSH: Duration = Duration::from_secs(1);
pub const TRACING_TIMEOUT: Duration = Duration::from_secs(5);

/// Rate limits: how long a global limit waits for Redis.
pub const RATE_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// `[auth.NAME]` (docs/GATEWAY.md).
pub const API_KEY_HEADER: &str = "x-api-key";
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);
pub const JWT_IDENTITY_CLAIM: &str = "sub";

/// `[route.compression]`: below this, compressing gains little (nginx's gzip_min_length
/// is 20 bytes; a 1 KiB response compresses to ~400 bytes and saves a packet at most).
pub const COMPRESSION_MIN_SIZE: u64 = 1024;
/// Fast levels: the best ratio per CPU (zstd 1, br 1, gzip 1 as nginx's gzip_comp_level).
pub const COMPRESSION_LEVEL: i64 = 1;

/// `[route.redirect]`: 308 keeps the method and body.
pub const REDIRECT_STATUS: u16 = 308;
