//! A gate in front of a store shared by instances (the cache's Redis or memcached
//! tier, a global rate limit's Redis): every operation is bounded by a timeout, and
//! after a failure the store is not asked for a second, so an outage costs one timeout
//! a second, not one per request. Failures are counted and logged at most every 10 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After a failure, the store is not asked for this long.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// At most one log line about failures this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bounds every operation of a tier and skips the tier for a while after a failure.
pub(crate) struct Gate {
    name: &'static str,
    timeout: Duration,
    consequence: &'static str,
    closed_until: Mutex<Option<Instant>>,
    last_log: Mutex<Option<Instant>>,
    errors: AtomicU64,
}

/// An operation's failure, as the gate counts it.
pub(crate) type TierResult<T> = Result<T, String>;

impl Gate {
    /// `consequence`: what a failure means for clients, for the log line.
    pub(crate) fn new(name: &'static str, timeout: Duration, consequence: &'static str) -> Self {
        Gate {
            name,
            timeout,
            consequence,
            closed_until: Mutex::new(None),
            last_log: Mutex::new(None),
            errors: AtomicU64::new(0),
        }
    }

    /// Each operation's bound.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Failures since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn open(&self) -> bool {
        let mut closed = self.closed_until.lock().unwrap_or_else(|p| p.into_inner());
        match *closed {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *closed = None;
                true
            }
            None => true,
        }
    }

    /// Runs `op` within the timeout; a failure closes the gate and is counted.
    pub(crate) async fn bounded<T>(&self, op: impl std::future::Future<Output = TierResult<T>>) -> Option<T> {
        self.within(self.timeout, op).await
    }

    /// Purges walk the store: ten timeouts.
    pub(crate) async fn bounded_long<T>(&self, op: impl std::future::Future<Output = TierResult<T>>) -> Option<T> {
        self.within(self.timeout * 10, op).await
    }

    pub(crate) async fn within<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = TierResult<T>>,
    ) -> Option<T> {
        let error = match tokio::time::timeout(limit, op).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(error)) => error,
            Err(_) => format!("no answer within {limit:?}"),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.closed_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + SKIP_AFTER_FAILURE);
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(store = self.name, %error, errors = self.errors.load(Ordering::Relaxed),
                "{} failed; {} (not asked again for 1 s)", self.name, self.consequence);
        }
        None
    }
}
