//! Peak-EWMA latency (linkerd's and Finagle's): a slower response raises the estimate at
//! once; faster ones pull it down exponentially, with a time constant `decay`, so a
//! backend that was slow is trusted again gradually.
//!
//! A failed response (an error, or a 429 or 5xx) moves the estimate a fixed
//! `FAILURE_STEP` of the way towards `FAILURE_PENALTY`, by count rather than by time:
//! one failure barely moves it (+4 ms from 30), a backend that fails fast and often
//! climbs towards the penalty as fast as it fails (200 failures: past 0.5 s), and loses
//! the two-choice comparisons that its "fast" answers would otherwise win.

use std::time::{Duration, Instant};

/// What a failed response counts as.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Latency assumed for an endpoint with no response yet (linkerd's default).
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(30);
/// How fast the estimate forgets: about 63% of the way in this long.
pub const DECAY: Duration = Duration::from_secs(10);
/// How far one failure moves the estimate towards the penalty.
const FAILURE_STEP: f64 = 1.0 / 256.0;

/// One endpoint's latency estimate, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    cost: f64,
    stamp: Instant,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        PeakEwma { cost: DEFAULT_LATENCY.as_secs_f64(), stamp: now }
    }

    /// The estimate at `now`, seconds.
    pub fn get(&self) -> f64 {
        self.cost
    }

    /// A successful response that took `latency`.
    pub fn observe(&mut self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64();
        if sample > self.cost {
            self.cost = sample;
        } else {
            let w = self.weight(now);
            self.cost = self.cost * w + sample * (1.0 - w);
        }
        self.stamp = now;
    }

    /// A failed response.
    pub fn observe_failure(&mut self, now: Instant) {
        self.cost += (FAILURE_PENALTY.as_secs_f64() - self.cost) * FAILURE_STEP;
        self.stamp = now;
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp);
        (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
    }
}
