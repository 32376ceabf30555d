//! A pool of connections that carry one request at a time (HTTP/1): bounded, LIFO
//! reuse, trimmed by age, with a warm minimum and, at the cap, a first-come first-served
//! line for the next free connection (`queue`), bounded by the group's queue_timeout.
//!
//! Policy (HikariCP's and HAProxy's lessons): a connection whose response ended goes
//! back to the pool unless it is closed or retired (max_lifetime, max_requests), so
//! steady load never closes and reopens connections; `max_idle` defaults to
//! `max_connections`. Idle connections are trimmed by age instead: the stack is LIFO,
//! so the ones load no longer needs sink to the bottom and pass `idle_timeout` there.
//!
//! Invariant: every open connection holds one permit of `permits`, so open connections
//! (idle + lent + being opened) never exceed `max_connections`. A connection whose
//! response ended goes to the oldest waiter, and to the idle stack only when nobody
//! waits; a connection closed instead frees its permit, which tokio's semaphore gives
//! to its oldest acquirer (every waiter also waits there): either way a request that
//! came later never gets ahead of one that waits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_config::PoolSettings;
use std::time::{Duration, Instant};

use sluice_policy::retire::{ConnAge, IdleLearner, RetireRules};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::cap::{self, CloseIdle, ConnectionCap};
use super::queue::WaitQueue;
use super::{Connector, InLine, PoolStats, QueueWait};
use crate::upstream::UpstreamError;

/// A connection out of the pool, with what the pool knows about it.
pub(crate) struct Pooled<T> {
    pub(crate) conn: T,
    pub(crate) age: ConnAge,
    /// When the pool's sweep last found it open while idle (what a close teaches).
    seen_open: Instant,
    _place: Place,
}

/// A connection's place: a permit of the (maybe shared) cap, and a count in this pool's
/// own open connections, both given back when the connection is dropped.
struct Place {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pool of one endpoint whose connections are used one request at a time.
pub(crate) struct ExclusivePool<C: Connector> {
    connector: C,
    pub(crate) label: Arc<str>,
    settings: PoolSettings,
    rules: RetireRules,
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<Pooled<C::Conn>>>,
    /// Open connections at most: this pool's own, or shared with the other workers'.
    cap: Arc<ConnectionCap>,
    /// This pool among those sharing `cap`.
    id: u64,
    /// Connections of this pool open now (idle and lent; `cap` counts all workers').
    open: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
    /// Requests waiting for a connection, oldest first.
    waiters: WaitQueue<Pooled<C::Conn>>,
    /// How long the upstream keeps idle connections, from the closes the sweep found.
    learner: Mutex<IdleLearner>,
    /// The learner's limit, in ms (0: none yet), read without its lock at every checkout.
    learned_ms: AtomicU64,
    pub(crate) stats: PoolStats,
}

impl<C: Connector> ExclusivePool<C> {
    #[cfg(test)]
    pub(crate) fn new(connector: C, label: Arc<str>, settings: PoolSettings) -> Self {
        Self::with_cap(connector, label, settings, ConnectionCap::new(settings.max_connections))
    }

    /// A pool drawing on `cap`, shared with other workers' pools of the endpoint.
    pub(crate) fn with_cap(connector: C, label: Arc<str>, settings: PoolSettings, cap: Arc<ConnectionCap>) -> Self {
        ExclusivePool {
            connector,
            label,
            rules: super::retire_rules(&settings),
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Arc::clone(&cap.permits),
            cap,
            id: ConnectionCap::next_id(),
            open: Arc::default(),
            waiters: WaitQueue::default(),
            learner: Mutex::default(),
            learned_ms: AtomicU64::new(0),
            stats: PoolStats::default(),
        }
    }

    /// A connection for one request: an idle one, a new one below the cap, or, at the
    /// cap, the next one freed, in turn, until `wait` runs out. An idle connection is
    /// lent only if it is still open (see `take_idle`).
    pub(crate) async fn checkout(&self, wait: &mut QueueWait) -> Result<Pooled<C::Conn>, UpstreamError> {
        let mut in_line = None;
        loop {
            if let Some(pooled) = self.take_idle() {
                return Ok(self.reused(pooled));
            }
            // Below the cap; at it, tokio's semaphore gives freed permits to its waiters
            // first, so this never takes one an older waiter is owed.
            if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                return self.open(permit).await;
            }
            // At the cap, shared with other workers: a connection another worker has
            // not needed for a while makes room for this one; looked for again while
            // waiting, as the other worker's connections age.
            let shared_cap = self.cap.is_shared();
            if shared_cap {
                self.cap.reclaim(self.id);
            }
            let Some(deadline) = wait.deadline() else { return Err(self.queue_timeout()) };
            in_line.get_or_insert_with(|| InLine::enter(&self.stats));
            let mut ticket = self.waiters.join();
            // Released between the first look and joining the line (nobody was waiting).
            if let Some(pooled) = self.take_idle() {
                if let Some(handed) = ticket.leave() {
                    self.release(handed);
                }
                return Ok(self.reused(pooled));
            }
            let woke = tokio::select! {
                biased;
                handed = ticket.receiver() => Woke::Handed(handed.ok().flatten()),
                permit = Arc::clone(&self.permits).acquire_owned() => Woke::Permit(permit.ok()),
                _ = tokio::time::sleep(cap::RECLAIM_IDLE), if shared_cap => Woke::Reclaim,
                _ = tokio::time::sleep_until(deadline) => Woke::Deadline,
            };
            match woke {
                Woke::Handed(Some(pooled)) => return Ok(self.reused(pooled)),
                Woke::Handed(None) => continue,
                // What was handed at the same moment wins: the permit goes back.
                Woke::Permit(permit) => match (ticket.leave(), permit) {
                    (Some(pooled), _) => return Ok(self.reused(pooled)),
                    (None, Some(permit)) => return self.open(permit).await,
                    (None, None) => return Err(self.queue_timeout()), // the semaphore closed: never
                },
                Woke::Reclaim => match ticket.leave() {
                    Some(pooled) => return Ok(self.reused(pooled)),
                    None => continue,
                },
                Woke::Deadline => match ticket.leave() {
                    Some(pooled) => return Ok(self.reused(pooled)),
                    None => {
                        in_line.inspect(InLine::timed_out);
                        return Err(self.queue_timeout());
                    }
                },
            }
        }
    }

    fn reused(&self, pooled: Pooled<C::Conn>) -> Pooled<C::Conn> {
        self.stats.reused.fetch_add(1, Ordering::Relaxed);
        pooled
    }

    /// Pops the most recently used idle connection that is still usable: open (the
    /// upstream closes idle connections as a matter of course, and a request on one it
    /// closed would fail), to an address still current, and not idle longer than this
    /// pool or the upstream keeps connections.
    fn take_idle(&self) -> Option<Pooled<C::Conn>> {
        let now = super::now();
        let learned = self.learned();
        let mut idle = self.lock_idle();
        while let Some(pooled) = idle.pop() {
            let usable = !C::is_closed(&pooled.conn) && self.connector.is_current(&pooled.conn);
            if usable && self.rules.check_idle(&pooled.age, now, learned).is_none() {
                return Some(pooled);
            }
        }
        None
    }

    fn learned(&self) -> Option<Duration> {
        match self.learned_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The sweep found `pooled` closed by the upstream: how long it had been seen open
    /// idle is a lower bound of the upstream's idle limit.
    fn learn_from_close(&self, pooled: &Pooled<C::Conn>) {
        let seen_open_idle = pooled.seen_open.saturating_duration_since(pooled.age.idle_since);
        let mut learner = self.learner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if learner.closed(seen_open_idle) {
            if let Some(limit) = learner.limit() {
                self.learned_ms.store((limit.as_millis() as u64).max(1), Ordering::Relaxed);
                tracing::info!(
                    endpoint = %self.label,
                    idle_limit_ms = limit.as_millis() as u64,
                    "the upstream closes idle connections; they are retired before it does"
                );
            }
        }
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<Pooled<C::Conn>, UpstreamError> {
        let conn = self.connector.connect().await.inspect_err(|_| {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        })?;
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        let now = super::now();
        self.open.fetch_add(1, Ordering::Relaxed);
        let place = Place { _permit: permit, open: Arc::clone(&self.open) };
        Ok(Pooled { conn, age: ConnAge::new(now), seen_open: now, _place: place })
    }

    /// Takes back a connection whose response has ended.
    pub(crate) fn release(&self, mut pooled: Pooled<C::Conn>) {
        let now = super::now();
        pooled.age.idle_since = now;
        pooled.seen_open = now;
        if C::is_closed(&pooled.conn)
            || !self.connector.is_current(&pooled.conn)
            || self.rules.check_reuse(&pooled.age, now).is_some()
        {
            return;
        }
        self.give(pooled);
    }

    /// A usable connection to the oldest waiter, or to the idle stack if nobody waits.
    fn give(&self, pooled: Pooled<C::Conn>) {
        let Err(pooled) = self.waiters.hand(pooled) else { return };
        let mut idle = self.lock_idle();
        if idle.len() < self.settings.max_idle {
            idle.push(pooled);
        }
    }

    /// Closes expired idle connections and opens new ones up to `min_idle`.
    pub(crate) async fn maintain_once(&self) {
        let now = super::now();
        let learned = self.learned();
        let (usable, closed) = {
            let mut idle = self.lock_idle();
            // Sockets the upstream closed while idle go now, not at the next checkout,
            // and teach how long it keeps them.
            let mut closed = Vec::new();
            let mut kept = Vec::with_capacity(idle.len());
            for mut p in idle.drain(..) {
                if C::is_closed(&p.conn) {
                    closed.push(p);
                } else if self.connector.is_current(&p.conn) && self.rules.check_idle(&p.age, now, learned).is_none() {
                    p.seen_open = now;
                    kept.push(p);
                }
            }
            *idle = kept;
            (idle.len(), closed)
        };
        // One lesson per sweep: an upstream restart closes many connections at once.
        if let Some(longest) = closed.iter().max_by_key(|p| p.seen_open.saturating_duration_since(p.age.idle_since)) {
            self.learn_from_close(longest);
        }
        drop(closed);
        for _ in usable..self.settings.min_idle {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { return };
            match self.open(permit).await {
                Ok(pooled) => self.give(pooled),
                Err(e) => {
                    tracing::debug!(endpoint = %self.label, error = %e, "could not warm a pool connection");
                    return;
                }
            }
        }
    }

    /// This pool's id among those sharing its cap.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn cap(&self) -> &Arc<ConnectionCap> {
        &self.cap
    }

    /// (idle, open) connections now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = self.lock_idle().len();
        (idle, self.open.load(Ordering::Relaxed))
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Pooled<C::Conn>>> {
        // A panic while holding this lock leaves the Vec intact, so poisoning is harmless.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn queue_timeout(&self) -> UpstreamError {
        UpstreamError::QueueTimeout { endpoint: self.label.to_string() }
    }
}

/// Why a waiting request woke.
enum Woke<T> {
    Handed(Option<T>),
    Permit(Option<OwnedSemaphorePermit>),
    Reclaim,
    Deadline,
}

impl<C: Connector> CloseIdle for ExclusivePool<C> {
    /// For another worker at the cap: only a connection idle for `RECLAIM_IDLE`, so that
    /// under load, when every connection is reused at once, workers do not churn
    /// connections by closing each other's.
    fn close_oldest_idle(&self) -> bool {
        let mut idle = self.lock_idle();
        let spare = idle.first().is_some_and(|p| super::now().duration_since(p.age.idle_since) >= cap::RECLAIM_IDLE);
        if !spare {
            return false;
        }
        let oldest = idle.remove(0);
        drop(idle);
        drop(oldest); // its permit is free once the socket is dropped
        true
    }
}
