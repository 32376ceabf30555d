//! One endpoint's connection pool. HTTP/1 connections are lent out one request at a
//! time ([`exclusive`]); HTTP/2 connections carry many streams each ([`shared`]).
//! Both are generic over a [`Connector`], the seam through which the pool opens
//! connections: the real one dials TCP (and TLS), tests give fake connections and run
//! the pool on paused time, without sockets.

pub(crate) mod cap;
pub(crate) mod exclusive;
pub(crate) mod queue;
pub(crate) mod shared;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use sluice_config::PoolSettings;
use sluice_policy::retire::RetireRules;

use super::connect::{H1Connector, H2Connector, H2Sender};
use super::stream::UpstreamStream;
use super::UpstreamError;
use crate::body::RequestBody;
use cap::CloseIdle;
use exclusive::{ExclusivePool, Pooled};
use shared::{SharedPool, Stream};

/// How often the background task evicts expired idle connections and tops up `min_idle`.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// A future a connector returns (boxed: one allocation per connection opened).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens connections to one endpoint, and says what the pool needs to know about them.
pub(crate) trait Connector: Send + Sync + 'static {
    type Conn: Send + Sync + 'static;

    fn connect(&self) -> BoxFuture<'_, Result<Self::Conn, UpstreamError>>;

    /// Known closed (cheaply: checked before every lending).
    fn is_closed(conn: &Self::Conn) -> bool;

    /// Whether the connection is still to an address the endpoint resolves to.
    fn is_current(&self, _conn: &Self::Conn) -> bool {
        true
    }

    /// Requests the connection may carry at once (the peer's HTTP/2 stream limit).
    fn stream_limit(_conn: &Self::Conn) -> usize {
        1
    }
}

/// What a pool has done since it started (read by metrics, #12).
#[derive(Default)]
pub(crate) struct PoolStats {
    pub(crate) created: AtomicU64,
    pub(crate) reused: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    /// Requests in line now.
    pub(crate) waiting: AtomicUsize,
    /// Requests that had to wait in line, their waits summed (µs), and those that
    /// waited queue_timeout in vain.
    pub(crate) queued: AtomicU64,
    pub(crate) queue_wait_us: AtomicU64,
    pub(crate) queue_timeouts: AtomicU64,
}

/// A request's place in a pool's line, counted in its stats while it lasts.
pub(crate) struct InLine<'a> {
    stats: &'a PoolStats,
    since: tokio::time::Instant,
}

impl<'a> InLine<'a> {
    pub(crate) fn enter(stats: &'a PoolStats) -> Self {
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        stats.queued.fetch_add(1, Ordering::Relaxed);
        InLine { stats, since: tokio::time::Instant::now() }
    }

    /// The wait ended without a connection.
    pub(crate) fn timed_out(&self) {
        self.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let waited = self.since.elapsed().as_micros() as u64;
        self.stats.queue_wait_us.fetch_add(waited, Ordering::Relaxed);
    }
}

/// How long a request may wait in line for a connection, over all its tries: the
/// group's `queue_timeout`, counted from the first moment it had to wait.
pub(crate) struct QueueWait {
    timeout: Duration,
    deadline: Option<tokio::time::Instant>,
}

impl QueueWait {
    pub(crate) fn new(timeout: Duration) -> Self {
        QueueWait { timeout, deadline: None }
    }

    /// No waiting at all (a hedged copy goes out only if a connection is free now).
    pub(crate) fn none() -> Self {
        QueueWait::new(Duration::ZERO)
    }

    /// When waiting must end; None when the request may not wait. The clock is read
    /// only when a request has to wait.
    pub(crate) fn deadline(&mut self) -> Option<tokio::time::Instant> {
        if self.timeout.is_zero() {
            return None;
        }
        Some(*self.deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.timeout))
    }
}

/// The pool's clock: tokio's, so that tests on paused time age connections too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn retire_rules(settings: &PoolSettings) -> RetireRules {
    RetireRules {
        idle_timeout: settings.idle_timeout,
        max_lifetime: settings.max_lifetime,
        max_requests: settings.max_requests,
    }
}

/// The pool of one endpoint, for the protocol its group speaks.
pub(crate) enum EndpointPool {
    Http1(ExclusivePool<H1Connector>),
    Http2(SharedPool<H2Connector>),
}

impl EndpointPool {
    /// Starts the pool's maintenance task, which ends when the pool is dropped.
    pub(crate) fn spawn(pool: EndpointPool) -> Arc<Self> {
        let pool = Arc::new(pool);
        if let EndpointPool::Http1(http1) = &*pool {
            let member: std::sync::Weak<dyn CloseIdle> = Arc::downgrade(&pool) as _;
            http1.cap().join(http1.id(), member);
        }
        tokio::spawn(maintain(Arc::downgrade(&pool)));
        pool
    }

    /// The endpoint, as logs and the outcome record name it.
    pub(crate) fn label(&self) -> &Arc<str> {
        match self {
            EndpointPool::Http1(pool) => &pool.label,
            EndpointPool::Http2(pool) => &pool.label,
        }
    }

    /// A connection (HTTP/1) or a stream (HTTP/2) for one request, waiting in line
    /// at the cap as long as `wait` allows.
    pub(crate) async fn checkout(self: &Arc<Self>, wait: &mut QueueWait) -> Result<Lease, UpstreamError> {
        let kind = match &**self {
            EndpointPool::Http1(pool) => LeaseKind::Http1(pool.checkout(wait).await?),
            EndpointPool::Http2(pool) => LeaseKind::Http2(pool.checkout(wait).await?),
        };
        Ok(Lease { pool: Arc::clone(self), kind })
    }

    async fn maintain_once(&self) {
        match self {
            EndpointPool::Http1(pool) => pool.maintain_once().await,
            EndpointPool::Http2(pool) => pool.maintain_once().await,
        }
    }

    /// (idle, open) connections now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        match self {
            EndpointPool::Http1(pool) => pool.counts(),
            EndpointPool::Http2(pool) => pool.counts(),
        }
    }

    pub(crate) fn stats(&self) -> &PoolStats {
        match self {
            EndpointPool::Http1(pool) => &pool.stats,
            EndpointPool::Http2(pool) => &pool.stats,
        }
    }
}

impl CloseIdle for EndpointPool {
    fn close_oldest_idle(&self) -> bool {
        match self {
            EndpointPool::Http1(pool) => pool.close_oldest_idle(),
            // Multiplexed connections are few (often one per worker); not reclaimed.
            EndpointPool::Http2(_) => false,
        }
    }
}

async fn maintain(pool: Weak<EndpointPool>) {
    let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.maintain_once().await;
    }
}

/// A connection (or a stream on one) lent to one request.
pub(crate) struct Lease {
    pool: Arc<EndpointPool>,
    kind: LeaseKind,
}

enum LeaseKind {
    Http1(Pooled<UpstreamStream>),
    Http2(Stream<H2Sender>),
}

impl Lease {
    /// The socket of an HTTP/1 connection.
    pub(crate) fn h1_stream(&mut self) -> Option<&mut UpstreamStream> {
        match &mut self.kind {
            LeaseKind::Http1(pooled) => Some(&mut pooled.conn),
            LeaseKind::Http2(_) => None,
        }
    }

    /// The upstream said how long it keeps this connection idle (`Keep-Alive: timeout`).
    pub(crate) fn upstream_keeps_idle(&mut self, announced: Duration) {
        if let LeaseKind::Http1(pooled) = &mut self.kind {
            pooled.age.announced_idle = Some(announced);
        }
    }

    /// Counts a request on this connection; true when it carried requests before
    /// (so a failure before any response byte means the upstream had closed it).
    pub(crate) fn begin_request(&mut self) -> bool {
        match &mut self.kind {
            LeaseKind::Http1(pooled) => {
                pooled.age.requests += 1;
                pooled.age.requests > 1
            }
            LeaseKind::Http2(stream) => stream.reused(),
        }
    }

    /// Sends on an HTTP/2 connection; a request that was never written comes back in the error.
    pub(crate) async fn send_h2(
        &mut self,
        request: Request<RequestBody>,
    ) -> Option<Result<Response<Incoming>, TrySendError<Request<RequestBody>>>> {
        match &self.kind {
            LeaseKind::Http2(stream) => {
                let mut sender = stream.conn.conn.sender.clone();
                Some(sender.try_send_request(request).await)
            }
            LeaseKind::Http1(_) => None,
        }
    }

    /// Returns an HTTP/1 connection for reuse; call only once the response body has
    /// ended. (An HTTP/2 stream ends when the lease is dropped.)
    pub(crate) fn release(self) {
        if let (EndpointPool::Http1(pool), LeaseKind::Http1(pooled)) = (&*self.pool, self.kind) {
            pool.release(pooled);
        }
    }

    pub(crate) fn endpoint(&self) -> &Arc<str> {
        self.pool.label()
    }
}
