//! One endpoint's connection pool: bounded, LIFO reuse, lazy and background retirement,
//! warm minimum, and a bounded wait for a free connection.
//!
//! HTTP/1 connections are lent out one request at a time and come back when the
//! response body has been read to its end; while pooled they are bare sockets. HTTP/2 connections stay in the pool while
//! in use: each request takes a clone of the connection's sender and opens a stream.
//!
//! Invariant: every open connection holds one permit of `permits`, so open connections
//! (idle + lent + being opened) never exceed `max_connections`.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::proxy::RequestBody;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use sluice_config::{Endpoint, PoolSettings, UpstreamProtocol};
use sluice_policy::retire::{ConnAge, RetireRules};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::connect::{connect, Sender};
use super::UpstreamError;

/// How often the background task evicts expired idle connections and tops up `min_idle`.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// An open upstream connection and what the pool knows about it.
struct Conn {
    sender: Sender,
    age: ConnAge,
    /// None for the per-request clone of a shared HTTP/2 sender.
    _permit: Option<OwnedSemaphorePermit>,
}

/// The pool of one endpoint of an upstream group.
pub(crate) struct EndpointPool {
    pub(crate) endpoint: Endpoint,
    protocol: UpstreamProtocol,
    settings: PoolSettings,
    rules: RetireRules,
    /// HTTP/1: idle connections, most recently used last. HTTP/2: every open connection.
    idle: Mutex<Vec<Conn>>,
    /// One permit per open connection.
    permits: Arc<Semaphore>,
    /// Signalled when an HTTP/1 connection returns to `idle`.
    released: Notify,
    /// Serialises HTTP/2 connects, so a burst of first requests opens one connection, not one each.
    h2_connecting: tokio::sync::Mutex<()>,
}

/// A connection lent to one request.
pub(crate) struct Lease {
    pool: Arc<EndpointPool>,
    conn: Conn,
}

// === impl EndpointPool ===

impl EndpointPool {
    /// Creates the pool and its maintenance task, which ends when the pool is dropped.
    pub(crate) fn spawn(endpoint: Endpoint, protocol: UpstreamProtocol, settings: PoolSettings) -> Arc<Self> {
        let pool = Arc::new(EndpointPool {
            endpoint,
            protocol,
            rules: RetireRules {
                idle_timeout: settings.idle_timeout,
                max_lifetime: settings.max_lifetime,
                max_requests: settings.max_requests,
            },
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            released: Notify::new(),
            h2_connecting: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(maintain(Arc::downgrade(&pool)));
        pool
    }

    /// A connection for one request, waiting up to `wait_timeout` when the pool is at its cap.
    /// With `verify`, an idle HTTP/1 connection is checked to be open before it is lent
    /// (for requests that must not be sent twice).
    pub(crate) async fn checkout(self: &Arc<Self>, verify: bool) -> Result<Lease, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.settings.wait_timeout;
        let conn = match self.protocol {
            UpstreamProtocol::Http1 => self.checkout_http1(deadline, verify).await?,
            UpstreamProtocol::Http2 => self.checkout_http2(deadline).await?,
        };
        Ok(Lease { pool: Arc::clone(self), conn })
    }

    async fn checkout_http1(&self, deadline: tokio::time::Instant, verify: bool) -> Result<Conn, UpstreamError> {
        loop {
            if let Some(conn) = self.take_idle() {
                match &conn.sender {
                    Sender::Http1(stream) if verify && !super::h1::is_open(stream) => continue,
                    _ => return Ok(conn),
                }
            }
            tokio::select! {
                biased;
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    let permit = permit.map_err(|_| self.exhausted())?;
                    return self.open(permit).await;
                }
                _ = self.released.notified() => continue,
                _ = tokio::time::sleep_until(deadline) => return Err(self.exhausted()),
            }
        }
    }

    async fn checkout_http2(&self, deadline: tokio::time::Instant) -> Result<Conn, UpstreamError> {
        loop {
            if let Some(conn) = self.share_http2() {
                return Ok(conn);
            }
            let _connecting =
                tokio::time::timeout_at(deadline, self.h2_connecting.lock()).await.map_err(|_| self.exhausted())?;
            if let Some(conn) = self.share_http2() {
                return Ok(conn);
            }
            let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| self.exhausted())?
                .map_err(|_| self.exhausted())?;
            let conn = self.open(permit).await?;
            self.lock_idle().push(conn);
        }
    }

    /// Pops the most recently used idle HTTP/1 connection that is still usable.
    fn take_idle(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.lock_idle();
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && self.rules.check_idle(&conn.age, now).is_none() {
                return Some(conn);
            }
        }
        None
    }

    /// A stream on an open HTTP/2 connection, retiring connections that are closed or spent.
    fn share_http2(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut conns = self.lock_idle();
        conns.retain(|c| !c.sender.is_closed() && self.rules.check_reuse(&c.age, now).is_none());
        let conn = conns.first_mut()?;
        let Sender::Http2(sender) = &conn.sender else {
            return None;
        };
        conn.age.requests += 1;
        conn.age.idle_since = now;
        Some(Conn { sender: Sender::Http2(sender.clone()), age: conn.age, _permit: None })
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<Conn, UpstreamError> {
        let sender = connect(&self.endpoint, self.protocol, self.settings.connect_timeout).await?;
        let now = Instant::now();
        Ok(Conn { sender, age: ConnAge { opened: now, idle_since: now, requests: 0 }, _permit: Some(permit) })
    }

    /// Takes back an HTTP/1 connection whose response has ended.
    fn release(&self, mut conn: Conn) {
        let now = Instant::now();
        conn.age.idle_since = now;
        if conn.sender.is_closed() || self.rules.check_reuse(&conn.age, now).is_some() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < self.settings.max_idle {
            idle.push(conn);
            drop(idle);
            self.released.notify_one();
        }
    }

    /// Closes expired idle connections and opens new ones up to `min_idle`.
    async fn maintain_once(&self) {
        let now = Instant::now();
        let usable = {
            let mut idle = self.lock_idle();
            // Sockets the upstream closed while idle go now, not at the next checkout.
            idle.retain(|c| !c.sender.is_closed_checked() && self.rules.check_idle(&c.age, now).is_none());
            idle.len()
        };
        for _ in usable..self.settings.min_idle {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                return;
            };
            match self.open(permit).await {
                Ok(conn) => self.lock_idle().push(conn),
                Err(e) => {
                    tracing::debug!(endpoint = %self.endpoint, error = %e, "could not warm a pool connection");
                    return;
                }
            }
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // A panic while holding this lock leaves the Vec intact, so poisoning is harmless.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exhausted(&self) -> UpstreamError {
        UpstreamError::PoolExhausted { endpoint: self.endpoint.to_string() }
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

// === impl Lease ===

impl Lease {
    /// The socket of an HTTP/1 connection.
    pub(crate) fn h1_stream(&mut self) -> Option<&mut TcpStream> {
        match &mut self.conn.sender {
            Sender::Http1(stream) => Some(stream),
            Sender::Http2(_) => None,
        }
    }

    /// Counts a request on this connection; true when it carried requests before
    /// (so a failure before any response byte means the upstream had closed it).
    pub(crate) fn begin_request(&mut self) -> bool {
        self.conn.age.requests += 1;
        self.conn.age.requests > 1
    }

    /// Sends on an HTTP/2 connection; a request that was never written comes back in the error.
    pub(crate) async fn send_h2(
        &mut self,
        request: Request<RequestBody>,
    ) -> Option<Result<Response<Incoming>, TrySendError<Request<RequestBody>>>> {
        self.conn.age.requests += 1;
        match &mut self.conn.sender {
            Sender::Http2(s) => Some(s.try_send_request(request).await),
            Sender::Http1(_) => None,
        }
    }

    /// Returns the connection for reuse; call only once the response body has ended.
    pub(crate) fn release(self) {
        if matches!(self.conn.sender, Sender::Http1(_)) {
            self.pool.release(self.conn);
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.pool.endpoint
    }
}
