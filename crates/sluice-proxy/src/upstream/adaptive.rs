//! A group's adaptive concurrency limit (`[upstream.NAME.adaptive]`): at most `limit`
//! requests of the group in flight to its endpoints (until their response heads), the
//! limit following measured latency (`sluice_policy::adaptive::Gradient`). One limiter
//! per group for the whole process: the upstream's queueing is what all workers'
//! requests cause together, and a worker that measured alone would learn its baseline
//! under the others' load (per-worker limiters were tried: each settled on a baseline
//! twice the true one, and goodput fell to 72% of the capacity in tests/adaptive.rs).
//! What this shares per request is the in-flight count (an atomic) and, per response,
//! the limiter's lock, only on groups that configure it.
//! Beyond it, a critical request waits in a first-come first-served line (the group's
//! queue_timeout, shared with the pool's line) and a sheddable one is refused at once:
//! under pressure sheddable requests go first. A slot whose request ended goes to the
//! oldest waiter when the limit allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_policy::adaptive::{AdaptiveSettings, Gradient};

use super::pool::queue::WaitQueue;
use super::pool::QueueWait;

/// The process's limiters, by group name and settings: a reload that keeps both keeps
/// the limit learned.
#[derive(Default)]
pub(crate) struct AdaptiveLimits {
    limits: Mutex<HashMap<String, (AdaptiveSettings, Arc<AdaptiveLimit>)>>,
}

impl AdaptiveLimits {
    pub(crate) fn get(&self, group: &str, settings: AdaptiveSettings) -> Arc<AdaptiveLimit> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        match limits.get(group) {
            Some((kept, limit)) if *kept == settings => Arc::clone(limit),
            _ => {
                let limit = AdaptiveLimit::new(settings);
                limits.insert(group.to_string(), (settings, Arc::clone(&limit)));
                limit
            }
        }
    }
}

/// One group's limiter.
pub(crate) struct AdaptiveLimit {
    gradient: Mutex<Gradient>,
    /// The gradient's limit, read without its lock at every admission.
    limit: AtomicU32,
    in_flight: AtomicU32,
    waiters: WaitQueue<AdaptivePermit>,
}

/// A request's place under the limit, held until its response head came or it failed
/// (or was cancelled: a route timeout is latency too); its end (drop) gives the limiter
/// the request's latency and frees the place.
pub(crate) struct AdaptivePermit {
    limiter: Arc<AdaptiveLimit>,
    started: Instant,
    /// False only for a permit built to be handed on that nobody took.
    counted: bool,
}

/// Why a request was not admitted.
pub(crate) struct Shed;

impl AdaptiveLimit {
    pub(crate) fn new(settings: AdaptiveSettings) -> Arc<Self> {
        let gradient = Gradient::new(settings);
        Arc::new(AdaptiveLimit {
            limit: AtomicU32::new(gradient.limit()),
            gradient: Mutex::new(gradient),
            in_flight: AtomicU32::new(0),
            waiters: WaitQueue::default(),
        })
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests holding a place now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place now, or (critical requests only) one in turn within `wait`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        critical: bool,
        wait: &mut QueueWait,
    ) -> Result<AdaptivePermit, Shed> {
        loop {
            if !self.waiters.is_waiting() && self.try_take() {
                return Ok(self.permit());
            }
            if !critical {
                return Err(Shed);
            }
            let Some(deadline) = wait.deadline() else { return Err(Shed) };
            let mut ticket = self.waiters.join();
            // A place freed between the first look and joining the line.
            if self.try_take() {
                drop(ticket.leave()); // one handed meanwhile goes on to the next
                return Ok(self.permit());
            }
            let handed = tokio::select! {
                handed = ticket.receiver() => handed.ok(),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match handed {
                Some(Some(permit)) => return Ok(permit.restarted()),
                Some(None) => continue,
                None => match ticket.leave() {
                    Some(permit) => return Ok(permit.restarted()),
                    None if tokio::time::Instant::now() >= deadline => return Err(Shed),
                    None => continue,
                },
            }
        }
    }

    fn try_take(&self) -> bool {
        let limit = self.limit();
        self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    fn permit(self: &Arc<Self>) -> AdaptivePermit {
        AdaptivePermit { limiter: Arc::clone(self), started: Instant::now(), counted: true }
    }

    /// A place freed: to the oldest waiter while the limit allows, else given up.
    fn release(self: &Arc<Self>) {
        if self.waiters.is_waiting() && self.in_flight() <= self.limit() {
            let handed = AdaptivePermit { limiter: Arc::clone(self), started: Instant::now(), counted: true };
            match self.waiters.hand(handed) {
                Ok(()) => return,
                Err(mut back) => back.counted = false,
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdaptivePermit {
    fn restarted(mut self) -> Self {
        self.started = Instant::now();
        self
    }

    /// The request's latency teaches the limit.
    fn sample(&self) {
        let limiter = &self.limiter;
        let mut gradient = limiter.gradient.lock().unwrap_or_else(|p| p.into_inner());
        if gradient.sample(self.started.elapsed(), limiter.in_flight()) {
            let limit = gradient.limit();
            if limit != limiter.limit.swap(limit, Ordering::Relaxed) {
                let baseline_ms = gradient.baseline().map_or(0.0, |b| b.as_secs_f64() * 1000.0);
                tracing::debug!(limit, baseline_ms, "adaptive concurrency limit moved");
            }
        }
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        if self.counted {
            self.sample();
            self.limiter.release();
        }
    }
}
