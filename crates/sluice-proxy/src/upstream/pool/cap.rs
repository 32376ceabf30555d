//! One endpoint's HTTP/1 connection cap, shared by the per-core workers' pools.
//!
//! Each worker keeps its own pool (no lock or wakeup crosses threads per request), but
//! `max_connections` is what the backend was promised, so it holds for the process,
//! as Envoy's circuit breakers do across its workers (nginx, whose pools are per worker,
//! multiplies the cap by the worker count). At the cap, a worker closes another
//! worker's least recently used idle connection, if it has been idle for
//! [`RECLAIM_IDLE`], to make room: connections one worker no longer needs never make
//! another wait or fail, and under load (every connection reused at once) workers do
//! not close and reopen each other's connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

/// An idle connection may be taken over by another worker after this long unused.
pub(crate) const RECLAIM_IDLE: Duration = Duration::from_millis(50);

/// A pool that can give up an idle connection for another worker.
pub(crate) trait CloseIdle: Send + Sync {
    /// Closes the least recently used idle connection; false when there is none.
    fn close_oldest_idle(&self) -> bool;
}

/// The permits for one endpoint's open connections, and the pools that draw on them.
pub(crate) struct ConnectionCap {
    pub(crate) permits: Arc<Semaphore>,
    /// The pools drawing on `permits`, by id.
    members: Mutex<Vec<(u64, Weak<dyn CloseIdle>)>>,
}

/// Pool ids, so that a pool can skip itself when reclaiming.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ConnectionCap {
    pub(crate) fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(ConnectionCap { permits: Arc::new(Semaphore::new(max_connections)), members: Mutex::default() })
    }

    /// A new id for a pool drawing on this cap.
    pub(crate) fn next_id() -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn join(&self, id: u64, pool: Weak<dyn CloseIdle>) {
        let mut members = self.lock();
        members.retain(|(_, pool)| pool.strong_count() > 0);
        members.push((id, pool));
    }

    /// Whether pools of other workers draw on this cap too.
    pub(crate) fn is_shared(&self) -> bool {
        self.lock().iter().filter(|(_, pool)| pool.strong_count() > 0).count() > 1
    }

    /// At the cap: closes another pool's least recently used idle connection, so its
    /// permit is free. True when one was closed.
    pub(crate) fn reclaim(&self, asking: u64) -> bool {
        let others: Vec<Arc<dyn CloseIdle>> =
            self.lock().iter().filter(|(id, _)| *id != asking).filter_map(|(_, pool)| pool.upgrade()).collect();
        others.iter().any(|pool| pool.close_oldest_idle())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Weak<dyn CloseIdle>)>> {
        self.members.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
