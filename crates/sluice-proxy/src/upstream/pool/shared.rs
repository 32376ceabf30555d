//! A pool of multiplexed connections (HTTP/2): each connection carries up to its
//! peer's concurrent-stream limit; a request takes a stream on the oldest connection
//! with room (packing load onto few connections lets the rest go idle and age out), and
//! a new connection opens only when every open one is full, up to `max_connections`.
//! Beyond that, a request waits up to `wait_timeout` for a stream to end.
//!
//! Invariant: every open connection holds exactly one permit of `permits`, for as long
//! as it is open. The permit lives in the connection's shared state, which each stream
//! on it also holds: a connection retired from the list (closed, max_lifetime,
//! max_requests, idle_timeout) keeps its permit until its last stream ends.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_config::PoolSettings;
use sluice_policy::retire::{ConnAge, RetireRules};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Connector, PoolStats};
use crate::upstream::UpstreamError;

/// One open multiplexed connection.
pub(crate) struct SharedConn<T> {
    pub(crate) conn: T,
    opened: Instant,
    /// Streams open on it now.
    streams: AtomicUsize,
    /// Streams it has carried.
    requests: AtomicU64,
    /// When its last stream ended, in ms since `opened`.
    idle_since_ms: AtomicU64,
    /// Woken when a stream ends (a waiter may take its place).
    freed: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
}

impl<T> SharedConn<T> {
    fn age(&self) -> ConnAge {
        ConnAge {
            opened: self.opened,
            idle_since: self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)),
            requests: self.requests.load(Ordering::Relaxed),
            announced_idle: None,
        }
    }
}

/// A stream on a shared connection; dropping it ends the stream's claim.
pub(crate) struct Stream<T> {
    pub(crate) conn: Arc<SharedConn<T>>,
}

impl<T> Stream<T> {
    /// True when the connection carried requests before this one.
    pub(crate) fn reused(&self) -> bool {
        self.conn.requests.load(Ordering::Relaxed) > 1
    }
}

impl<T> Drop for Stream<T> {
    fn drop(&mut self) {
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            let idle_ms = super::now().saturating_duration_since(self.conn.opened).as_millis() as u64;
            self.conn.idle_since_ms.store(idle_ms, Ordering::Relaxed);
        }
        self.conn.freed.notify_one();
    }
}

/// The pool of one endpoint whose connections multiplex requests.
pub(crate) struct SharedPool<C: Connector> {
    connector: C,
    pub(crate) label: Arc<str>,
    settings: PoolSettings,
    rules: RetireRules,
    /// Open connections taking new streams, oldest first.
    conns: Mutex<Vec<Arc<SharedConn<C::Conn>>>>,
    permits: Arc<Semaphore>,
    freed: Arc<Notify>,
    /// Held while a connection is being opened, so a burst opens one, not one each.
    connecting: tokio::sync::Mutex<()>,
    pub(crate) stats: PoolStats,
}

impl<C: Connector> SharedPool<C> {
    pub(crate) fn new(connector: C, label: Arc<str>, settings: PoolSettings) -> Self {
        SharedPool {
            connector,
            label,
            rules: super::retire_rules(&settings),
            settings,
            conns: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            freed: Arc::new(Notify::new()),
            connecting: tokio::sync::Mutex::new(()),
            stats: PoolStats::default(),
        }
    }

    /// A stream for one request (see the module comment for the order of choices).
    pub(crate) async fn checkout(&self) -> Result<Stream<C::Conn>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.settings.wait_timeout;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(stream) = self.take_stream() {
                return Ok(stream);
            }
            // Every open connection is full (or none is open): open one if allowed and
            // nobody else is already doing so.
            if let Ok(_connecting) = self.connecting.try_lock() {
                if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                    let opened = self.open(permit).await;
                    let result = opened.map(|conn| self.lock_conns().push(Arc::new(conn)));
                    // Whoever waited on this connect may now use it, or try themselves.
                    self.freed.notify_waiters();
                    result?;
                    continue;
                }
            }
            tokio::select! {
                _ = freed => continue,
                _ = tokio::time::sleep_until(deadline) => return Err(self.exhausted()),
            }
        }
    }

    /// A stream on the oldest usable connection with room; retires closed and spent ones.
    fn take_stream(&self) -> Option<Stream<C::Conn>> {
        let now = super::now();
        let mut conns = self.lock_conns();
        conns.retain(|c| !C::is_closed(&c.conn) && self.rules.check_reuse(&c.age(), now).is_none());
        for conn in conns.iter() {
            let limit = C::stream_limit(&conn.conn);
            let open = conn.streams.load(Ordering::Acquire);
            // Only this function adds streams, under the lock: no race past the limit.
            if open < limit {
                conn.streams.store(open + 1, Ordering::Release);
                let requests = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
                if requests > 1 {
                    self.stats.reused.fetch_add(1, Ordering::Relaxed);
                }
                return Some(Stream { conn: Arc::clone(conn) });
            }
        }
        None
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<SharedConn<C::Conn>, UpstreamError> {
        let conn = self.connector.connect().await.inspect_err(|_| {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        })?;
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        Ok(SharedConn {
            conn,
            opened: super::now(),
            streams: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            freed: Arc::clone(&self.freed),
            _permit: permit,
        })
    }

    /// Retires closed, spent and long-idle connections (keeping `min_idle` of them) and
    /// opens connections up to `min_idle`.
    pub(crate) async fn maintain_once(&self) {
        let now = super::now();
        let open = {
            let mut conns = self.lock_conns();
            conns.retain(|c| !C::is_closed(&c.conn) && self.rules.check_reuse(&c.age(), now).is_none());
            let mut keep = conns.len();
            conns.retain(|c| {
                let idle = c.streams.load(Ordering::Acquire) == 0;
                let expired = idle && self.rules.check_idle(&c.age(), now, None).is_some();
                if expired && keep > self.settings.min_idle {
                    keep -= 1;
                    return false;
                }
                true
            });
            conns.len()
        };
        for _ in open..self.settings.min_idle {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { return };
            match self.open(permit).await {
                Ok(conn) => {
                    self.lock_conns().push(Arc::new(conn));
                    self.freed.notify_waiters();
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.label, error = %e, "could not warm a pool connection");
                    return;
                }
            }
        }
    }

    /// (connections with no open stream, open connections) now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = self.lock_conns().iter().filter(|c| c.streams.load(Ordering::Relaxed) == 0).count();
        (idle, self.settings.max_connections - self.permits.available_permits())
    }

    fn lock_conns(&self) -> MutexGuard<'_, Vec<Arc<SharedConn<C::Conn>>>> {
        self.conns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exhausted(&self) -> UpstreamError {
        UpstreamError::PoolExhausted { endpoint: self.label.to_string() }
    }
}
