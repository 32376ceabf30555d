//! A pool of multiplexed connections (HTTP/2): each connection carries up to its
//! peer's concurrent-stream limit; a request takes a stream on the oldest connection
//! with room (packing load onto few connections lets the rest go idle and age out), and
//! a new connection opens only when every open one is full, up to `max_connections`.
//! Beyond that, a request waits in line (`queue`) up to the group's queue_timeout: a
//! stream that ends passes its slot to the oldest waiter when its connection can still
//! take one, so a request that came later never gets ahead of one that waits.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::queue::WaitQueue;
use super::{Connector, InLine, PoolStats, QueueWait};
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
    /// The pool's line of waiters, which a stream's end serves first.
    line: Arc<Line<T>>,
    _permit: OwnedSemaphorePermit,
}

/// What a stream's end needs of its pool to pass its slot on.
struct Line<T> {
    waiters: WaitQueue<Stream<T>>,
    rules: RetireRules,
    is_closed: fn(&T) -> bool,
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
    /// Holds one of the connection's stream slots (false only for a stream built to be
    /// handed on that nobody took).
    counted: bool,
}

impl<T> Stream<T> {
    /// True when the connection carried requests before this one.
    pub(crate) fn reused(&self) -> bool {
        self.conn.requests.load(Ordering::Relaxed) > 1
    }

    /// Passes this stream's slot to the oldest waiter; false when nobody waits or the
    /// connection can take no more streams (then the oldest waiter is told to look
    /// again: its turn to open a connection).
    fn pass_on(&self) -> bool {
        let conn = &self.conn;
        let line = &conn.line;
        if !line.waiters.is_waiting() {
            return false;
        }
        if (line.is_closed)(&conn.conn) || line.rules.check_reuse(&conn.age(), super::now()).is_some() {
            line.waiters.wake_first();
            return false;
        }
        conn.requests.fetch_add(1, Ordering::Relaxed);
        match line.waiters.hand(Stream { conn: Arc::clone(conn), counted: true }) {
            Ok(()) => true,
            Err(mut back) => {
                back.counted = false;
                conn.requests.fetch_sub(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl<T> Drop for Stream<T> {
    fn drop(&mut self) {
        if !self.counted || self.pass_on() {
            return;
        }
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            let idle_ms = super::now().saturating_duration_since(self.conn.opened).as_millis() as u64;
            self.conn.idle_since_ms.store(idle_ms, Ordering::Relaxed);
        }
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
    line: Arc<Line<C::Conn>>,
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
            line: Arc::new(Line {
                waiters: WaitQueue::default(),
                rules: super::retire_rules(&settings),
                is_closed: C::is_closed,
            }),
            settings,
            conns: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            connecting: tokio::sync::Mutex::new(()),
            stats: PoolStats::default(),
        }
    }

    /// A stream for one request (see the module comment for the order of choices).
    pub(crate) async fn checkout(&self, wait: &mut QueueWait) -> Result<Stream<C::Conn>, UpstreamError> {
        let mut in_line = None;
        loop {
            if let Some(stream) = self.take_stream() {
                return Ok(stream);
            }
            // Every open connection is full (or none is open): open one if allowed and
            // nobody else is already doing so.
            if let Ok(_connecting) = self.connecting.try_lock() {
                if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                    match self.open(permit).await {
                        Ok(conn) => {
                            self.lock_conns().push(Arc::new(conn));
                            // Room for many: whoever waits looks again, in turn.
                            self.line.waiters.wake_all();
                            continue;
                        }
                        Err(e) => {
                            self.line.waiters.wake_first();
                            return Err(e);
                        }
                    }
                }
            }
            let Some(deadline) = wait.deadline() else { return Err(self.queue_timeout()) };
            in_line.get_or_insert_with(|| InLine::enter(&self.stats));
            let mut ticket = self.line.waiters.join();
            // A slot freed between the first look and joining the line.
            if let Some(stream) = self.take_stream() {
                drop(ticket.leave()); // a stream handed meanwhile goes on to the next
                return Ok(stream);
            }
            let handed = tokio::select! {
                handed = ticket.receiver() => handed.ok(),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match handed {
                Some(Some(stream)) => return Ok(stream),
                Some(None) => continue,
                None => match ticket.leave() {
                    Some(stream) => return Ok(stream),
                    None if tokio::time::Instant::now() >= deadline => {
                        in_line.inspect(InLine::timed_out);
                        return Err(self.queue_timeout());
                    }
                    None => continue,
                },
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
                return Some(Stream { conn: Arc::clone(conn), counted: true });
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
            line: Arc::clone(&self.line),
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
                    self.line.waiters.wake_all();
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

    fn queue_timeout(&self) -> UpstreamError {
        UpstreamError::QueueTimeout { endpoint: self.label.to_string() }
    }
}
