//! The upstream layer: groups of endpoints, their connection pools (kept in a registry
//! that outlives config snapshots), and sending one request with failover. Balancing,
//! health state and retry budgets hang here.

mod active;
pub(crate) mod adaptive;
mod attempts;
mod balance;
mod connect;
mod dns;
mod h1;
mod h2_settings;
mod hedge;
mod pacing;
mod pinned;
mod pool;
mod registry;
mod retry;
mod send_h1;
mod send_h2;
mod stream;
mod tls;

use std::io;
use std::sync::Arc;

use crate::body::RequestBody;
use crate::http1::forward::ForwardedFields;
use crate::interim::Interim;
use crate::outcome::Outcome;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::Request;
use sluice_config::{Balance, CircuitBreaker, HashKey, HedgeAfter, Priority, UpstreamConfig, UpstreamProtocol};
use sluice_policy::balance::Balancer;
use std::sync::atomic::AtomicUsize;

use attempts::Attempts;
use balance::EndpointLoad;

use connect::{Dialer, H1Connector, H2Connector};
pub(crate) use h1::H1Body;
use pool::exclusive::ExclusivePool;
use pool::shared::SharedPool;
pub(crate) use pool::Lease;
use pool::{EndpointPool, QueueWait};

use registry::PoolKey;
pub(crate) use registry::{PoolRegistry, SharedCaps};

use tls::UpstreamTlsConfig;

/// Why an upstream exchange failed. Mapped to a response in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {endpoint} failed: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("connect to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error("TLS with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    /// Waited in the pool's line for queue_timeout (pool at max_connections).
    #[error("no connection to {endpoint} came free within queue_timeout (pool at max_connections)")]
    QueueTimeout { endpoint: String },
    #[error("{endpoint} failed the exchange: {source}")]
    Exchange { endpoint: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("every pooled connection to {endpoint} was closed by the upstream before use")]
    StaleConnections { endpoint: String },
    #[error("upstream group has no endpoints")]
    NoEndpoint,
    #[error("{endpoint} sent no response head within per_try_timeout")]
    TryTimeout { endpoint: String },
    /// Every endpoint asked for a pause longer than the request may wait; nothing was sent.
    #[error("every endpoint of the group asked for a pause (429/503 with Retry-After); {retry_after:?} left")]
    Paced { retry_after: std::time::Duration },
    /// A circuit breaker limit of the group was reached; nothing was sent.
    #[error("upstream group {group} is at its {limit} limit")]
    Overloaded { group: String, limit: &'static str },
    /// The client's request body broke off while it was being sent (its fault, a 4xx).
    #[error("{0}")]
    ClientBody(crate::body::ClientBodyError),
}

impl UpstreamError {
    /// True when nothing was sent, so another endpoint may take the request.
    fn is_connect_failure(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } | UpstreamError::Tls { .. })
    }
}

/// A named group of interchangeable endpoints, each with its own pool.
pub struct UpstreamGroup {
    pub(crate) name: Arc<str>,
    protocol: UpstreamProtocol,
    /// Its endpoints are reached over TLS (HTTP/2 requests then say `:scheme https`).
    tls: bool,
    pools: Vec<Arc<EndpointPool>>,
    balancer: Balancer,
    /// Each endpoint's load as its requests' records report it (`pools[i]`'s is `loads[i]`).
    loads: Vec<Arc<EndpointLoad>>,
    hash_key: Option<HashKey>,
    retry: retry::RetryState,
    /// What the group's records taught: ejections, active checks, recent latencies.
    health: Arc<balance::GroupHealth>,
    /// This worker's share of the group's circuit-breaker limits.
    breaker: CircuitBreaker,
    /// `weights[i]` is `pools[i]`'s configured weight.
    weights: Vec<u32>,
    /// How long a request may wait in line (the adaptive limit's, then a pool's), over all its tries.
    queue_timeout: std::time::Duration,
    /// `[upstream.NAME.rate]`: the process's budget of requests sent to the group.
    rate: Option<(sluice_policy::rate::Gcra, Arc<crate::limit::local::Bank>)>,
    /// Endpoints that asked for a pause (429/503 with Retry-After), and until when.
    pacing: pacing::Pacing,
    /// The group's adaptive concurrency limit (the process's), when it has one.
    adaptive: Option<Arc<adaptive::AdaptiveLimit>>,
    /// Requests of this worker waiting for a connection, and being retried, now.
    pending: AtomicUsize,
    retrying: AtomicUsize,
}

impl UpstreamGroup {
    /// Builds the group on the registry's pools: unchanged endpoints keep theirs, new
    /// ones start (warm connections open in the background). An error names what in
    /// the TLS settings could not be loaded.
    pub(crate) fn build(
        config: &UpstreamConfig,
        registry: &PoolRegistry,
        workers: usize,
        adaptive: &adaptive::AdaptiveLimits,
        rate: Option<(sluice_policy::rate::Gcra, Arc<crate::limit::local::Bank>)>,
    ) -> Result<Self, String> {
        let tls = match &config.tls {
            Some(tls) => Some(
                UpstreamTlsConfig::new(tls, config.protocol)
                    .map_err(|e| format!("upstream.{}.tls: {e}", config.name))?,
            ),
            None => None,
        };
        let mut pools = Vec::with_capacity(config.endpoints.len());
        let mut dialers = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let key = PoolKey {
                endpoint: endpoint.clone(),
                protocol: config.protocol,
                settings: config.pool,
                tls: config.tls.clone(),
            };
            let label: Arc<str> = Arc::from(endpoint.to_string());
            let dialer = Dialer {
                dns: registry.dns(),
                endpoint: endpoint.clone(),
                label: Arc::clone(&label),
                timeout: config.pool.connect_timeout,
                tls: tls.clone(),
                next: Arc::default(),
                is_name: endpoint.host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_err(),
                down: Arc::default(),
            };
            dialers.push(dialer.clone());
            pools.push(registry.pool(key, |cap| {
                Ok(match config.protocol {
                    UpstreamProtocol::Http1 => {
                        EndpointPool::Http1(ExclusivePool::with_cap(H1Connector(dialer), label, config.pool, cap))
                    }
                    UpstreamProtocol::Http2 => {
                        EndpointPool::Http2(SharedPool::new(H2Connector(dialer), label, config.pool))
                    }
                })
            })?);
        }
        let labels: Vec<Arc<str>> = pools.iter().map(|p| Arc::clone(p.label())).collect();
        let active = config.health_check.clone().map(|check| {
            let http2 = config.protocol == UpstreamProtocol::Http2;
            active::start(Arc::from(config.name.as_str()), dialers, check, http2)
        });
        let group_name: Arc<str> = Arc::from(config.name.as_str());
        let p95_hedging = config.retry.hedge_after == Some(HedgeAfter::P95);
        let health =
            balance::GroupHealth::new(group_name, labels, &config.outlier, active, config.slow_start, p95_hedging);
        let names: Vec<String> = config.endpoints.iter().map(ToString::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let hash_key = match &config.balance {
            Balance::ConsistentHash(key) => Some(key.clone()),
            _ => None,
        };
        Ok(UpstreamGroup {
            name: Arc::from(config.name.as_str()),
            protocol: config.protocol,
            tls: config.tls.is_some(),
            balancer: Balancer::new(balance::algorithm(&config.balance), &config.weights, &names),
            loads: (0..pools.len()).map(|i| EndpointLoad::new(&health, i, config.balance == Balance::Ewma)).collect(),
            health,
            pools,
            hash_key,
            retry: retry::RetryState::new(&config.retry),
            breaker: share_of(config.circuit_breaker, workers),
            queue_timeout: config.queue_timeout,
            pacing: pacing::Pacing::new(config.endpoints.len()),
            rate,
            adaptive: config.adaptive.map(|a| adaptive.get(&config.name, adaptive_settings(a))),
            weights: config.weights.clone(),
            pending: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
        })
    }

    /// The pools of the group's endpoints, in config order.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<EndpointPool>> {
        self.pools.iter()
    }

    /// Each endpoint as this worker sees it now, in config order (the admin listener's view).
    pub(crate) fn endpoints(&self) -> Vec<EndpointView> {
        self.pools
            .iter()
            .zip(&self.loads)
            .zip(&self.weights)
            .map(|((pool, load), weight)| {
                let now = load.load();
                let stats = pool.stats();
                let (idle, open) = pool.counts();
                EndpointView {
                    endpoint: Arc::clone(pool.label()),
                    weight: *weight,
                    healthy: now.healthy,
                    outstanding: u64::from(now.outstanding),
                    ewma_seconds: now.latency,
                    latency_counts: load.latency_counts(),
                    idle,
                    open,
                    created: stats.created.load(std::sync::atomic::Ordering::Relaxed),
                    reused: stats.reused.load(std::sync::atomic::Ordering::Relaxed),
                    connect_failures: stats.connect_failures.load(std::sync::atomic::Ordering::Relaxed),
                    queue: QueueView::of(stats),
                    pool: Arc::as_ptr(pool) as usize,
                }
            })
            .collect()
    }

    /// The group's adaptive limit and the requests holding a place under it, if any.
    pub(crate) fn adaptive_state(&self) -> Option<(u32, u32)> {
        self.adaptive.as_ref().map(|limit| (limit.limit(), limit.in_flight()))
    }

    /// Retries made and retries the budget refused, since start (this worker's).
    pub(crate) fn retry_counts(&self) -> (u64, u64) {
        self.retry.counts()
    }

    fn overloaded(&self, limit: &'static str) -> UpstreamError {
        UpstreamError::Overloaded { group: self.name.to_string(), limit }
    }

    /// The hash of `request`'s balancing key, when the group hashes on one.
    pub(crate) fn request_key<B>(&self, request: &Request<B>, client: std::net::SocketAddr) -> Option<u64> {
        self.hash_key.as_ref().and_then(|key| balance::hash_key(key, request, client))
    }

    /// The protocol sluice speaks to this group's endpoints.
    pub(crate) fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The scheme of what this group's endpoints are sent (`:scheme` over HTTP/2).
    pub(crate) fn scheme(&self) -> http::uri::Scheme {
        if self.tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Sends `request` to one endpoint. A connect failure sent nothing, so it moves any
    /// request on to the next endpoint; a request that a closed pooled connection did
    /// not take is sent again on another connection when that is safe. The record
    /// learns which endpoint answered, after how many tries.
    #[allow(clippy::too_many_arguments)] // each is the request's own; a struct would only rename them
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
        idempotent: bool,
        key: Option<u64>,
        interim: Option<&Interim>,
        fields: ResponseFields,
        priority: Priority,
        outcome: &mut Outcome,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let in_flight: usize = self.loads.iter().map(|l| l.outstanding()).sum();
        if in_flight >= self.breaker.max_requests {
            return Err(self.overloaded("max_requests"));
        }
        let mut queue = QueueWait::new(self.queue_timeout);
        if let Some((gcra, bank)) = &self.rate {
            // Boxed: a timer inline would grow every request's future.
            Box::pin(wait_for_rate(gcra, bank, &mut queue)).await.map_err(|()| self.overloaded("upstream_rate"))?;
        }
        // Held until the response head (or the failure): what the limit counts. Boxed,
        // as is the wait for it: a group without the limit carries a pointer (every
        // byte of this future is copied per request; see docs/BENCHMARKS.md, issue 20).
        let _place = match &self.adaptive {
            Some(limit) => {
                let critical = priority == Priority::Critical;
                let place = Box::pin(limit.acquire(critical, &mut queue)).await;
                Some(Box::new(place.map_err(|adaptive::Shed| self.overloaded("adaptive"))?))
            }
            None => None,
        };
        let replayable = self.retry.replayable(idempotent, request.body().is_whole());
        let attempts = Attempts::new(self, replayable, key, outcome, queue);
        let response = match self.protocol {
            UpstreamProtocol::Http1 => self.send_http1(request, idempotent, attempts, interim, fields).await,
            UpstreamProtocol::Http2 => self.send_http2(request, idempotent, attempts).await,
        }?;
        if matches!(response.parts.status.as_u16(), 429 | 503) {
            self.learn_pause(&response.parts, outcome);
        }
        Ok(response)
    }

    /// A 429 or 503 that asks for a pause paces the endpoint that sent it.
    fn learn_pause(&self, parts: &http::response::Parts, outcome: &Outcome) {
        let Some(endpoint) = outcome.upstream_trace.endpoint.as_ref() else { return };
        let Some(index) = self.pools.iter().position(|pool| pool.label() == endpoint) else { return };
        if self.pacing.learn(index, parts.status, &parts.headers) {
            let pause_ms = self.pacing.remaining(index).map_or(0, |d| d.as_millis() as u64);
            tracing::info!(upstream = %self.name, %endpoint, status = parts.status.as_u16(), pause_ms,
                "the endpoint asked for a pause; it gets no requests until then");
        }
    }

    /// How long the first try of a request waits before a hedged copy goes out: only
    /// for idempotent requests to groups of several endpoints, when configured.
    fn hedge_delay(&self, idempotent: bool, attempts: &Attempts<'_>) -> Option<std::time::Duration> {
        if !idempotent || self.pools.len() < 2 || attempts.retries > 0 {
            return None;
        }
        match self.retry.hedge_after()? {
            HedgeAfter::Fixed(delay) => Some(delay),
            HedgeAfter::P95 => self.health.p95(),
        }
    }
}

/// An endpoint's state, for the admin listener.
#[derive(Debug, Clone)]
pub(crate) struct EndpointView {
    pub(crate) endpoint: Arc<str>,
    pub(crate) weight: u32,
    pub(crate) healthy: bool,
    pub(crate) outstanding: u64,
    /// The peak-EWMA latency estimate (`ewma` groups; 0 elsewhere).
    pub(crate) ewma_seconds: f64,
    /// Response head times since start, per bucket of the request series.
    pub(crate) latency_counts: [u64; crate::outcome::series::BUCKET_COUNT],
    pub(crate) idle: usize,
    pub(crate) open: usize,
    pub(crate) created: u64,
    pub(crate) reused: u64,
    pub(crate) connect_failures: u64,
    pub(crate) queue: QueueView,
    /// Which pool (pools shared by workers are counted once).
    pub(crate) pool: usize,
}

/// An endpoint's line of requests waiting for a connection, for the admin listener.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueView {
    /// Waiting now.
    pub(crate) waiting: u64,
    /// Requests that had to wait, since start.
    pub(crate) queued: u64,
    /// Their waits, summed.
    pub(crate) wait_seconds: f64,
    /// Requests that waited queue_timeout in vain.
    pub(crate) timeouts: u64,
}

impl QueueView {
    fn of(stats: &pool::PoolStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        QueueView {
            waiting: stats.waiting.load(Relaxed) as u64,
            queued: stats.queued.load(Relaxed),
            wait_seconds: stats.queue_wait_us.load(Relaxed) as f64 / 1e6,
            timeouts: stats.queue_timeouts.load(Relaxed),
        }
    }

    pub(crate) fn add(&mut self, other: &QueueView) {
        self.waiting += other.waiting;
        self.queued += other.queued;
        self.wait_seconds += other.wait_seconds;
        self.timeouts += other.timeouts;
    }
}

/// Waits until `[upstream.NAME.rate]` lets one more request go to the group, within the
/// request's time in line; Err when that would take longer.
async fn wait_for_rate(
    gcra: &sluice_policy::rate::Gcra,
    bank: &crate::limit::local::Bank,
    queue: &mut QueueWait,
) -> Result<(), ()> {
    use crate::limit::local::Taken;
    loop {
        let retry_after = match bank.take(gcra, 0, 1).1 {
            Taken::Admitted { .. } => return Ok(()),
            Taken::Refused { retry_after } => retry_after,
        };
        match queue.deadline() {
            Some(deadline) if tokio::time::Instant::now() + retry_after <= deadline => {
                tokio::time::sleep(retry_after).await;
            }
            _ => return Err(()),
        }
    }
}

fn adaptive_settings(config: sluice_config::AdaptiveConfig) -> sluice_policy::adaptive::AdaptiveSettings {
    sluice_policy::adaptive::AdaptiveSettings {
        initial_limit: config.initial_limit,
        min_limit: config.min_limit,
        max_limit: config.max_limit,
        tolerance: config.tolerance,
    }
}

/// One worker's share of circuit-breaker limits: each limit ÷ workers, rounded up.
fn share_of(limits: CircuitBreaker, workers: usize) -> CircuitBreaker {
    let share = |limit: usize| limit.div_ceil(workers.max(1));
    CircuitBreaker {
        max_requests: share(limits.max_requests),
        max_pending: share(limits.max_pending),
        max_retries: share(limits.max_retries),
    }
}

/// The response head parser, for the robustness tests of `http1`.
#[cfg(test)]
pub(crate) fn parse_response_head_for_tests(
    buf: &mut BytesMut,
) -> io::Result<Option<(http::response::Parts, bool, crate::http1::Framing)>> {
    h1::parse_response_for_tests(buf)
}

/// What came back from an upstream: the response head and how to read the rest.
pub(crate) struct UpstreamResponse {
    pub(crate) parts: http::response::Parts,
    pub(crate) body: UpstreamBody,
    /// An HTTP/1 response's fields left out of `parts.headers` (`ResponseFields::Forward`).
    pub(crate) forwarded: Option<ForwardedFields>,
}

/// What the caller needs of an HTTP/1 upstream response's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFields {
    /// Every field in the header map: the cache stores them, hyper writes HTTP/2 from it.
    Map,
    /// Only the fields sluice reads in the map; the rest forwarded as they came, for an
    /// HTTP/1 client (`http1::forward`).
    Forward,
}

/// The rest of an upstream response. Each kind is boxed (a pointer, where the lease
/// alone is 136 bytes): a response passes up several async layers, each moving it
/// (once ~450 bytes a move; see docs/BENCHMARKS.md, issue 19).
pub(crate) enum UpstreamBody {
    /// Read from the socket by whoever polls it; the connection returns to its pool at the end.
    Http1(Box<H1Body>),
    Http2(Box<H2Body>),
    /// A 101: the connection itself is the rest, with any bytes already read past the head.
    Switched(Box<(Lease, BytesMut)>),
}

/// An HTTP/2 upstream's response body, with the lease that keeps its stream counted
/// while the body is read (held, never read).
pub(crate) struct H2Body {
    pub(crate) body: Incoming,
    pub(crate) _lease: Lease,
}
