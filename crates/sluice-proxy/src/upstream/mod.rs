//! The upstream layer: groups of endpoints, their connection pools (kept in a registry
//! that outlives config snapshots), and sending one request with failover. Balancing,
//! health state and retry budgets hang here.

mod active;
mod balance;
mod connect;
mod dns;
mod h1;
mod h2_settings;
mod pool;
mod registry;
mod retry;
mod stream;
mod tls;

use std::io;
use std::sync::Arc;

use crate::body::RequestBody;
use crate::outcome::Outcome;
use bytes::BytesMut;
use http::StatusCode;
use hyper::body::Incoming;
use hyper::Request;
use sluice_config::{Balance, CircuitBreaker, HashKey, HedgeAfter, UpstreamConfig, UpstreamProtocol};
use sluice_policy::balance::Balancer;
use std::sync::atomic::{AtomicUsize, Ordering};

use balance::EndpointLoad;

use connect::{Dialer, H1Connector, H2Connector};
pub(crate) use h1::H1Body;
use h1::{EncodedRequest, ExchangeError};
use pool::exclusive::ExclusivePool;
use pool::shared::SharedPool;
use pool::EndpointPool;
pub(crate) use pool::Lease;
use registry::PoolKey;
pub(crate) use registry::{PoolRegistry, SharedCaps};
use tls::UpstreamTlsConfig;

/// How many times a request that a stale pooled connection refused to take is tried again.
const STALE_CONNECTION_RETRIES: usize = 3;

/// Why an upstream exchange failed. Mapped to a response in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {endpoint} failed: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("connect to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error("TLS with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("no connection to {endpoint} became free in time (pool at max_connections)")]
    PoolExhausted { endpoint: String },
    #[error("{endpoint} failed the exchange: {source}")]
    Exchange { endpoint: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("every pooled connection to {endpoint} was closed by the upstream before use")]
    StaleConnections { endpoint: String },
    #[error("upstream group has no endpoints")]
    NoEndpoint,
    #[error("{endpoint} sent no response head within per_try_timeout")]
    TryTimeout { endpoint: String },
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
    /// Requests of this worker waiting for a connection, and being retried, now.
    pending: AtomicUsize,
    retrying: AtomicUsize,
}

impl UpstreamGroup {
    /// Builds the group on the registry's pools: unchanged endpoints keep theirs, new
    /// ones start (warm connections open in the background). An error names what in
    /// the TLS settings could not be loaded.
    pub(crate) fn build(config: &UpstreamConfig, registry: &PoolRegistry, workers: usize) -> Result<Self, String> {
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
            balancer: Balancer::new(balance::algorithm(&config.balance), &config.weights, &names),
            loads: (0..pools.len()).map(|i| EndpointLoad::new(&health, i, config.balance == Balance::Ewma)).collect(),
            health,
            pools,
            hash_key,
            retry: retry::RetryState::new(&config.retry),
            breaker: share_of(config.circuit_breaker, workers),
            pending: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
        })
    }

    /// The pools of the group's endpoints, in config order.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<EndpointPool>> {
        self.pools.iter()
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

    /// Sends `request` to one endpoint. A connect failure sent nothing, so it moves any
    /// request on to the next endpoint; a request that a closed pooled connection did
    /// not take is sent again on another connection when that is safe. The record
    /// learns which endpoint answered, after how many tries.
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
        idempotent: bool,
        key: Option<u64>,
        outcome: &mut Outcome,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let in_flight: usize = self.loads.iter().map(|l| l.outstanding()).sum();
        if in_flight >= self.breaker.max_requests {
            return Err(self.overloaded("max_requests"));
        }
        let attempts = Attempts::new(self, idempotent, key, outcome);
        match self.protocol {
            UpstreamProtocol::Http1 => self.send_http1(request, idempotent, attempts).await,
            UpstreamProtocol::Http2 => self.send_http2(request, idempotent, attempts).await,
        }
    }

    async fn send_http1(
        &self,
        request: Request<RequestBody>,
        idempotent: bool,
        mut attempts: Attempts<'_>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let (parts, body) = request.into_parts();
        let mut encoded = EncodedRequest::new(&parts, body);
        drop(parts);
        while let Some(mut lease) = attempts.next_lease().await? {
            let hedge = self.hedge_delay(idempotent, &attempts);
            let exchanged = match hedge.and_then(|delay| encoded.copy_without_body().map(|copy| (delay, copy))) {
                Some((delay, copy)) => {
                    let (exchanged, winner) = self.hedged(lease, &mut encoded, copy, delay, &mut attempts).await;
                    lease = winner;
                    exchanged
                }
                None => {
                    let reused = lease.begin_request();
                    let Some(stream) = lease.h1_stream() else { return Err(UpstreamError::NoEndpoint) };
                    match self.retry.per_try_timeout() {
                        Some(limit) => {
                            match tokio::time::timeout(limit, h1::exchange(stream, &mut encoded, reused)).await {
                                Ok(exchanged) => exchanged,
                                Err(_) => {
                                    let why = "no response head within per_try_timeout";
                                    let endpoint = lease.endpoint();
                                    if encoded.can_resend() && attempts.retry(retry::Cause::Reset, endpoint, &why).await
                                    {
                                        continue; // the lease is dropped: that connection may still answer late
                                    }
                                    return Err(UpstreamError::TryTimeout { endpoint: endpoint.to_string() });
                                }
                            }
                        }
                        None => h1::exchange(stream, &mut encoded, reused).await,
                    }
                }
            };
            match exchanged {
                Ok(head)
                    if self.retry.retries_on(head.parts.status)
                        && encoded.can_resend()
                        && attempts.retry(retry::Cause::Status, lease.endpoint(), &head.parts.status).await =>
                {
                    // The response is dropped unread, and its connection with it.
                    drop(head);
                    drop(lease);
                }
                Ok(head) => {
                    let body = if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
                        UpstreamBody::Switched { lease, read: head.buf }
                    } else {
                        UpstreamBody::Http1(H1Body::new(lease, head.framing, head.reusable, head.buf))
                    };
                    return Ok(UpstreamResponse { parts: head.parts, body });
                }
                // Only an idempotent request may go again: the closed connection may
                // have been closed after the upstream acted on it (RFC 9110 §9.2.2).
                Err(ExchangeError::Stale(e)) if idempotent && encoded.can_resend() => {
                    attempts.stale(lease.endpoint(), &e);
                }
                Err(ExchangeError::ClientBody(cause)) => return Err(UpstreamError::ClientBody(cause)),
                Err(ExchangeError::Failed(source))
                    if encoded.can_resend() && attempts.retry(retry::Cause::Reset, lease.endpoint(), &source).await => {
                }
                Err(ExchangeError::Stale(source) | ExchangeError::Failed(source)) => {
                    return Err(UpstreamError::Exchange {
                        endpoint: lease.endpoint().to_string(),
                        source: source.into(),
                    });
                }
            }
        }
        Err(attempts.into_error())
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

    async fn send_http2(
        &self,
        mut request: Request<RequestBody>,
        idempotent: bool,
        mut attempts: Attempts<'_>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        // A bodiless idempotent request can be built again for a retry after it was sent.
        let again = (idempotent && matches!(request.body(), RequestBody::Empty)).then(|| {
            let mut copy = Request::new(());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.version_mut() = request.version();
            *copy.headers_mut() = request.headers().clone();
            copy
        });
        let rebuild = |copy: &Request<()>| {
            let mut request = Request::new(RequestBody::Empty);
            *request.method_mut() = copy.method().clone();
            *request.uri_mut() = copy.uri().clone();
            *request.version_mut() = copy.version();
            *request.headers_mut() = copy.headers().clone();
            request
        };
        while let Some(mut lease) = attempts.next_lease().await? {
            match lease.send_h2(request).await {
                Some(Ok(response)) => {
                    if let Some(copy) = &again {
                        let status = response.status();
                        if self.retry.retries_on(status)
                            && attempts.retry(retry::Cause::Status, lease.endpoint(), &status).await
                        {
                            request = rebuild(copy); // the response is dropped: its stream reset
                            continue;
                        }
                    }
                    let (parts, body) = response.into_parts();
                    return Ok(UpstreamResponse { parts, body: UpstreamBody::Http2 { body, lease } });
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) => {
                        attempts.stale(lease.endpoint(), &"HTTP/2 connection closed before the request");
                        request = unsent;
                    }
                    None => {
                        let error = e.into_error();
                        if let Some(cause) = crate::body::client_cause(&error) {
                            return Err(UpstreamError::ClientBody(cause));
                        }
                        if let Some(copy) = &again {
                            if attempts.retry(retry::Cause::Reset, lease.endpoint(), &error).await {
                                request = rebuild(copy);
                                continue;
                            }
                        }
                        let source = error.into();
                        return Err(UpstreamError::Exchange { endpoint: lease.endpoint().to_string(), source });
                    }
                },
                None => return Err(UpstreamError::NoEndpoint),
            }
        }
        Err(attempts.into_error())
    }
}

impl UpstreamGroup {
    /// Sends `encoded` on `first`; if no response head has come after `delay`, and the
    /// budget allows, sends `copy` to the next endpoint too. The first head wins; the
    /// other exchange is dropped (its connection closed) and its endpoint told the
    /// request was cancelled. Returns the result and the lease it came on.
    async fn hedged(
        &self,
        mut first: Lease,
        encoded: &mut EncodedRequest,
        mut copy: EncodedRequest,
        delay: std::time::Duration,
        attempts: &mut Attempts<'_>,
    ) -> (Result<h1::ResponseHead, ExchangeError>, Lease) {
        let reused = first.begin_request();
        let Some(stream) = first.h1_stream() else {
            return (Err(ExchangeError::Failed(io::Error::other("not an HTTP/1 connection"))), first);
        };
        let mut one = Box::pin(h1::exchange(stream, encoded, reused));
        let early = tokio::select! {
            result = &mut one => Some(result),
            _ = tokio::time::sleep(delay) => None,
        };
        if let Some(result) = early {
            drop(one);
            return (result, first);
        }
        let Some((mut second, hold)) = attempts.hedge_lease().await else {
            let result = one.await;
            return (result, first);
        };
        let reused = second.begin_request();
        let Some(stream) = second.h1_stream() else {
            let result = one.await;
            return (result, first);
        };
        let mut two = Box::pin(h1::exchange(stream, &mut copy, reused));
        enum Won<T> {
            One(T),
            Two(T),
        }
        let won = tokio::select! {
            result = &mut one => Won::One(result),
            result = &mut two => Won::Two(result),
        };
        match won {
            Won::One(Ok(head)) => {
                drop((one, two, hold));
                (Ok(head), first)
            }
            Won::Two(Ok(head)) => {
                drop((one, two));
                attempts.hedge_won(hold, &second);
                (Ok(head), second)
            }
            // The winner failed: the other may still answer.
            Won::One(Err(_)) => {
                let result = two.await;
                attempts.hedge_won(hold, &second);
                (result, second)
            }
            Won::Two(Err(_)) => {
                let result = one.await;
                drop((two, hold));
                (result, first)
            }
        }
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

/// A count held for as long as the guard lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one more unless `limit` is reached.
    fn enter(count: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let now = count.fetch_add(1, Ordering::Relaxed);
        if now >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Counted(count))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
}

/// The rest of an upstream response.
pub(crate) enum UpstreamBody {
    /// Read from the socket by whoever polls it; the connection returns to its pool at the end.
    Http1(H1Body),
    Http2 {
        body: Incoming,
        lease: Lease,
    },
    /// A 101: the connection itself is the rest, with any bytes already read past the head.
    Switched {
        lease: Lease,
        read: BytesMut,
    },
}

/// The connections one request may try: endpoints in balancer order, and on each a few
/// fresh tries after a closed pooled connection. Each try is counted in the record.
struct Attempts<'a> {
    group: &'a UpstreamGroup,
    order: Vec<usize>,
    next_endpoint: usize,
    current: Option<usize>,
    tries_here: usize,
    idempotent: bool,
    last_error: UpstreamError,
    outcome: &'a mut Outcome,
    /// Retries made (connect failover, resets, statuses), against `retry`'s limits.
    retries: u32,
    /// Held from the first retry: this request counts against `max_retries`.
    retrying: Option<Counted<'a>>,
}

impl<'a> Attempts<'a> {
    fn new(group: &'a UpstreamGroup, idempotent: bool, key: Option<u64>, outcome: &'a mut Outcome) -> Self {
        group.retry.deposit();
        let first = balance::pick(&group.balancer, &group.loads, key);
        let order = group.balancer.order(first).collect();
        Attempts {
            group,
            order,
            next_endpoint: 0,
            current: None,
            tries_here: 0,
            idempotent,
            last_error: UpstreamError::NoEndpoint,
            outcome,
            retries: 0,
            retrying: None,
        }
    }

    /// The next connection to try, or None when every allowed try is spent.
    async fn next_lease(&mut self) -> Result<Option<Lease>, UpstreamError> {
        loop {
            let index = match self.current {
                Some(index) if self.tries_here < STALE_CONNECTION_RETRIES => index,
                Some(_) if !self.idempotent => return Ok(None),
                _ => {
                    let Some(&index) = self.order.get(self.next_endpoint) else { return Ok(None) };
                    self.next_endpoint += 1;
                    self.current = Some(index);
                    self.tries_here = 0;
                    index
                }
            };
            self.tries_here += 1;
            let pool = &self.group.pools[index];
            self.outcome.upstream_trace.attempts += 1;
            self.outcome.upstream_trace.endpoint = Some(Arc::clone(pool.label()));
            self.group.loads[index].begin(self.outcome);
            let Some(waiting) = Counted::enter(&self.group.pending, self.group.breaker.max_pending) else {
                return Err(self.group.overloaded("max_pending"));
            };
            let checkout = pool.checkout(!self.idempotent).await;
            drop(waiting);
            match checkout {
                Ok(lease) => return Ok(Some(lease)),
                // Nothing was sent: any request, POST included, may go to the next endpoint.
                Err(e) if e.is_connect_failure() => {
                    let more = self.next_endpoint < self.order.len()
                        && self.count_as_retrying()
                        && self.group.retry.allow(retry::Cause::ConnectFailure, self.retries);
                    if more {
                        self.retries += 1;
                    }
                    tracing::warn!(
                        request_id = self.outcome.request_id(),
                        route = self.outcome.route.as_deref().unwrap_or("-"),
                        upstream = %self.group.name,
                        error = %e,
                        "{}", if more { "connect failed; trying the next endpoint" } else { "connect failed; no endpoint left" }
                    );
                    if !more {
                        return Err(e);
                    }
                    self.last_error = e;
                    self.tries_here = STALE_CONNECTION_RETRIES; // this endpoint is down: move on
                    if !self.idempotent {
                        self.current = None; // a non-idempotent request moves on too
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether to try again elsewhere after a reset or a retried status; if so, waits
    /// the backoff and moves to the next endpoint (round again from the first choice
    /// when every one was tried).
    async fn retry(&mut self, cause: retry::Cause, endpoint: &Arc<str>, why: &(dyn std::fmt::Display + Sync)) -> bool {
        if !self.idempotent || !self.count_as_retrying() || !self.group.retry.allow(cause, self.retries) {
            return false;
        }
        self.retries += 1;
        tracing::debug!(
            request_id = self.outcome.request_id(),
            upstream = %self.group.name,
            endpoint = %endpoint,
            %why,
            retry = self.retries,
            "retrying on another endpoint"
        );
        tokio::time::sleep(self.group.retry.backoff(self.retries)).await;
        self.current = None;
        if self.next_endpoint >= self.order.len() {
            self.next_endpoint = 0;
        }
        true
    }

    /// A connection to the next endpoint for a hedged copy, if the budget allows: the
    /// endpoint counts it as outstanding, but the record does not report to it unless
    /// it wins. None when there is no other endpoint, or no budget, or no connection.
    async fn hedge_lease(&mut self) -> Option<(Lease, balance::Hedge)> {
        let index = *self.order.get(self.next_endpoint)?;
        if !self.count_as_retrying() || !self.group.retry.allow(retry::Cause::Hedge, self.retries) {
            return None;
        }
        self.retries += 1;
        self.next_endpoint += 1;
        let hold = self.group.loads[index].begin_hedge();
        self.outcome.upstream_trace.attempts += 1;
        let lease = self.group.pools[index].checkout(false).await.ok()?;
        Some((lease, hold))
    }

    /// The hedged copy answered first: the record names its endpoint and reports to it.
    fn hedge_won(&mut self, hold: balance::Hedge, lease: &Lease) {
        self.outcome.upstream_trace.endpoint = Some(Arc::clone(lease.endpoint()));
        hold.won(self.outcome);
    }

    /// Whether this request may be among those retrying (`max_retries`); it stays
    /// counted until it is done.
    fn count_as_retrying(&mut self) -> bool {
        if self.retrying.is_none() {
            self.retrying = Counted::enter(&self.group.retrying, self.group.breaker.max_retries);
        }
        self.retrying.is_some()
    }

    /// The last lease's connection had been closed by the upstream.
    fn stale(&mut self, endpoint: &Arc<str>, error: &dyn std::fmt::Display) {
        tracing::debug!(
            request_id = self.outcome.request_id(),
            endpoint = %endpoint,
            %error,
            "pooled connection was closed before the request; resending"
        );
        self.last_error = UpstreamError::StaleConnections { endpoint: endpoint.to_string() };
    }

    fn into_error(self) -> UpstreamError {
        self.last_error
    }
}
