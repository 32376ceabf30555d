//! A pool of connections that carry one request at a time (HTTP/1): bounded, LIFO
//! reuse, trimmed by age, with a warm minimum and a bounded wait for a free connection.
//!
//! Policy (HikariCP's and HAProxy's lessons): a connection whose response ended goes
//! back to the pool unless it is closed or retired (max_lifetime, max_requests), so
//! steady load never closes and reopens connections; `max_idle` defaults to
//! `max_connections`. Idle connections are trimmed by age instead: the stack is LIFO,
//! so the ones load no longer needs sink to the bottom and pass `idle_timeout` there.
//!
//! Invariant: every open connection holds one permit of `permits`, so open connections
//! (idle + lent + being opened) never exceed `max_connections`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_config::PoolSettings;
use sluice_policy::retire::{ConnAge, RetireRules};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Connector, PoolStats};
use crate::upstream::UpstreamError;

/// A connection out of the pool, with what the pool knows about it.
pub(crate) struct Pooled<T> {
    pub(crate) conn: T,
    pub(crate) age: ConnAge,
    _permit: OwnedSemaphorePermit,
}

/// The pool of one endpoint whose connections are used one request at a time.
pub(crate) struct ExclusivePool<C: Connector> {
    connector: C,
    pub(crate) label: Arc<str>,
    settings: PoolSettings,
    rules: RetireRules,
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<Pooled<C::Conn>>>,
    permits: Arc<Semaphore>,
    /// Signalled when a connection returns to `idle`.
    released: Notify,
    pub(crate) stats: PoolStats,
}

impl<C: Connector> ExclusivePool<C> {
    pub(crate) fn new(connector: C, label: Arc<str>, settings: PoolSettings) -> Self {
        ExclusivePool {
            connector,
            label,
            rules: super::retire_rules(&settings),
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            released: Notify::new(),
            stats: PoolStats::default(),
        }
    }

    /// A connection for one request, waiting up to `wait_timeout` when the pool is at
    /// its cap. With `verify`, an idle connection is checked to be open before it is
    /// lent (for requests that must not be sent twice).
    pub(crate) async fn checkout(&self, verify: bool) -> Result<Pooled<C::Conn>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.settings.wait_timeout;
        loop {
            if let Some(pooled) = self.take_idle() {
                if verify && C::is_closed_checked(&pooled.conn) {
                    continue;
                }
                self.stats.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(pooled);
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

    /// Pops the most recently used idle connection that is still usable.
    fn take_idle(&self) -> Option<Pooled<C::Conn>> {
        let now = super::now();
        let mut idle = self.lock_idle();
        while let Some(pooled) = idle.pop() {
            if !C::is_closed(&pooled.conn) && self.rules.check_idle(&pooled.age, now).is_none() {
                return Some(pooled);
            }
        }
        None
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<Pooled<C::Conn>, UpstreamError> {
        let conn = self.connector.connect().await.inspect_err(|_| {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        })?;
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        let now = super::now();
        Ok(Pooled { conn, age: ConnAge { opened: now, idle_since: now, requests: 0 }, _permit: permit })
    }

    /// Takes back a connection whose response has ended.
    pub(crate) fn release(&self, mut pooled: Pooled<C::Conn>) {
        let now = super::now();
        pooled.age.idle_since = now;
        if C::is_closed(&pooled.conn) || self.rules.check_reuse(&pooled.age, now).is_some() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < self.settings.max_idle {
            idle.push(pooled);
            drop(idle);
            self.released.notify_one();
        }
    }

    /// Closes expired idle connections and opens new ones up to `min_idle`.
    pub(crate) async fn maintain_once(&self) {
        let now = super::now();
        let usable = {
            let mut idle = self.lock_idle();
            // Sockets the upstream closed while idle go now, not at the next checkout.
            idle.retain(|p| !C::is_closed_checked(&p.conn) && self.rules.check_idle(&p.age, now).is_none());
            idle.len()
        };
        for _ in usable..self.settings.min_idle {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { return };
            match self.open(permit).await {
                Ok(pooled) => {
                    self.lock_idle().push(pooled);
                    self.released.notify_one();
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.label, error = %e, "could not warm a pool connection");
                    return;
                }
            }
        }
    }

    /// (idle, open) connections now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = self.lock_idle().len();
        (idle, self.settings.max_connections - self.permits.available_permits())
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Pooled<C::Conn>>> {
        // A panic while holding this lock leaves the Vec intact, so poisoning is harmless.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exhausted(&self) -> UpstreamError {
        UpstreamError::PoolExhausted { endpoint: self.label.to_string() }
    }
}
