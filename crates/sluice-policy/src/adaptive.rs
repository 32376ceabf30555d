//! Adaptive concurrency: a group's limit on requests in flight that follows measured
//! latency, after Netflix's Gradient2 (concurrency-limits). Two measures of the
//! response-head latency: the last window's mean, and a baseline ("no queueing") that
//! follows the mean down at once and is otherwise learned again only by a probe: every
//! `PROBE_EVERY` windows, one window runs at half the limit, and its mean becomes the
//! baseline. Without the probe, a limit held at the edge of queueing under sustained
//! load teaches an averaged baseline that queueing is normal (Gradient2's plain average
//! does, and the limit creeps up without end), and a limit that started above the
//! upstream's capacity never learns the true baseline at all. When a window's mean rises above the baseline times `tolerance`, requests
//! are queueing in the upstream and the limit shrinks in proportion at once (by half at
//! most); while they agree, it grows by a fifth of √limit a window, until the latency
//! rises again.
//!
//! Chosen over Envoy's gradient controller, which finds its baseline by dropping the
//! limit to a minimum every few seconds and measuring: that costs throughput on a
//! schedule, and at 3× overload the probes themselves shed requests. Gradient2 needs
//! no probe: the long average drifts down with the latency when the upstream recovers.
//!
//! Pure arithmetic: the caller feeds samples and asks for the limit.

use std::time::Duration;

/// Samples per window: the limit moves once per window (small, so that a limit set
/// far too high comes down within a second or two of overload).
const WINDOW_SAMPLES: u32 = 20;
/// One window in this many runs at half the limit to learn the baseline again; the
/// first probes come sooner (`EARLY_PROBES`): a limiter that starts above the
/// upstream's capacity learns its first baseline under queueing, and each probe halves
/// the error. Each probe costs up to half of one window's throughput: 0.5% at this rate.
const PROBE_EVERY: u32 = 100;
const EARLY_PROBES: [u32; 3] = [2, 10, 30];
/// How fast the limit moves toward each new estimate.
const SMOOTHING: f64 = 0.2;

/// `[upstream.NAME.adaptive]` as the limiter needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSettings {
    pub initial_limit: u32,
    pub min_limit: u32,
    pub max_limit: u32,
    /// How much slower than the baseline a window may be before the limit shrinks (1.5: half again).
    pub tolerance: f64,
}

/// One group's limiter (one per worker).
#[derive(Debug, Clone)]
pub struct Gradient {
    settings: AdaptiveSettings,
    limit: f64,
    long_rtt: Option<f64>,
    window_sum: f64,
    window_count: u32,
    /// Most requests in flight seen this window: the limit grows only when it was used.
    window_peak: u32,
    windows: u32,
    /// The limit to return to after the probe window now running.
    probing: Option<f64>,
    /// Samples still to drop at the start of a probe: requests admitted under the old
    /// limit, whose latency is the old limit's queueing, not the probe's.
    draining: u32,
}

impl Gradient {
    pub fn new(settings: AdaptiveSettings) -> Self {
        let limit = f64::from(settings.initial_limit.clamp(settings.min_limit, settings.max_limit));
        Gradient {
            settings,
            limit,
            long_rtt: None,
            window_sum: 0.0,
            window_count: 0,
            window_peak: 0,
            windows: 0,
            probing: None,
            draining: 0,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// The baseline latency now (None before the first window).
    pub fn baseline(&self) -> Option<Duration> {
        self.long_rtt.map(Duration::from_secs_f64)
    }

    /// One request's head latency, with `in_flight` requests at the moment it ended.
    /// Returns true when the limit moved.
    pub fn sample(&mut self, rtt: Duration, in_flight: u32) -> bool {
        if self.draining > 0 {
            self.draining -= 1;
            return false;
        }
        self.window_sum += rtt.as_secs_f64();
        self.window_count += 1;
        self.window_peak = self.window_peak.max(in_flight);
        if self.window_count < WINDOW_SAMPLES {
            return false;
        }
        let short = self.window_sum / f64::from(self.window_count);
        let peak = self.window_peak;
        self.window_sum = 0.0;
        self.window_count = 0;
        self.window_peak = 0;
        self.update(short, peak);
        true
    }

    fn update(&mut self, short: f64, peak: u32) {
        self.windows += 1;
        if let Some(restore) = self.probing.take() {
            // The probe window ran light: its mean is the baseline now.
            self.long_rtt = Some(short);
            self.limit = restore;
            return;
        }
        let long = match self.long_rtt {
            // Faster (or recovered): the baseline follows at once.
            Some(long) if short >= long => long,
            _ => short,
        };
        self.long_rtt = Some(long);
        // Grow only into a limit that was used: an idle group's limit stays put (and a
        // group that never fills its limit measures its baseline without probing).
        let used = f64::from(peak) >= self.limit * 0.5;
        if used && (EARLY_PROBES.contains(&self.windows) || self.windows.is_multiple_of(PROBE_EVERY)) {
            self.probing = Some(self.limit);
            self.draining = peak;
            self.limit = (self.limit / 2.0).max(f64::from(self.settings.min_limit));
            return;
        }
        let gradient = (self.settings.tolerance * long / short).clamp(0.5, 1.0);
        // Down at once (queueing hurts every request now; Gradient2's smoothing of the
        // decrease let an overloaded upstream thrash for seconds), up gently.
        let next = if gradient < 1.0 {
            self.limit * gradient
        } else {
            let headroom = if used { self.limit.sqrt() } else { 0.0 };
            self.limit + headroom * SMOOTHING
        };
        self.limit = next.clamp(f64::from(self.settings.min_limit), f64::from(self.settings.max_limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: AdaptiveSettings =
        AdaptiveSettings { initial_limit: 20, min_limit: 1, max_limit: 1000, tolerance: 1.5 };

    /// An upstream that serves `capacity` at once in `base`; beyond, requests queue in it.
    fn latency(capacity: u32, base: f64, in_flight: u32) -> Duration {
        let queued = f64::from(in_flight.saturating_sub(capacity)) / f64::from(capacity);
        Duration::from_secs_f64(base * (1.0 + queued))
    }

    /// Runs the limiter against that upstream with the limit always full.
    fn settle(capacity: u32, windows: u32) -> u32 {
        let mut gradient = Gradient::new(SETTINGS);
        for _ in 0..windows * WINDOW_SAMPLES {
            let in_flight = gradient.limit();
            gradient.sample(latency(capacity, 0.010, in_flight), in_flight);
        }
        gradient.limit()
    }

    #[test]
    fn the_limit_finds_the_upstreams_capacity() {
        for capacity in [10, 100, 400] {
            let limit = settle(capacity, 400);
            // At the limit found, latency is within the tolerance of the baseline
            // (1.5× the capacity in this model), and not far below the capacity.
            assert!(limit >= capacity * 3 / 4 && limit <= capacity * 3 / 2, "capacity {capacity}: limit {limit}");
        }
    }

    #[test]
    fn the_limit_shrinks_when_the_upstream_slows_and_grows_back() {
        let mut gradient = Gradient::new(AdaptiveSettings { initial_limit: 100, ..SETTINGS });
        for _ in 0..200 * WINDOW_SAMPLES {
            let in_flight = gradient.limit();
            gradient.sample(latency(100, 0.010, in_flight), in_flight);
        }
        let healthy = gradient.limit();
        // The upstream loses 3/4 of its capacity.
        for _ in 0..200 * WINDOW_SAMPLES {
            let in_flight = gradient.limit();
            gradient.sample(latency(25, 0.010, in_flight), in_flight);
        }
        let degraded = gradient.limit();
        assert!(degraded < healthy / 2, "healthy {healthy}, degraded {degraded}");
        for _ in 0..400 * WINDOW_SAMPLES {
            let in_flight = gradient.limit();
            gradient.sample(latency(100, 0.010, in_flight), in_flight);
        }
        assert!(gradient.limit() > degraded * 2, "recovered to {} from {degraded}", gradient.limit());
    }

    #[test]
    fn an_idle_group_keeps_its_limit_and_bounds_hold() {
        let mut gradient = Gradient::new(SETTINGS);
        for _ in 0..100 * WINDOW_SAMPLES {
            gradient.sample(Duration::from_millis(10), 1);
        }
        assert_eq!(gradient.limit(), 20, "never used beyond 1: no growth");
        let mut tight = Gradient::new(AdaptiveSettings { min_limit: 5, max_limit: 8, ..SETTINGS });
        // 110 windows: the probes (at windows 2, 10, 30 and 100) are over.
        for _ in 0..110 * WINDOW_SAMPLES {
            tight.sample(Duration::from_millis(10), 8);
        }
        assert_eq!(tight.limit(), 8);
        // Far slower at once: down to the floor in one window...
        for _ in 0..WINDOW_SAMPLES {
            tight.sample(Duration::from_secs(5), 8);
        }
        assert_eq!(tight.limit(), 5);
        // ...until the next probe (window 200) measures that slowness at half the load
        // too: then it is the upstream's new normal, not queueing, and the limit grows back.
        for _ in 0..120 * WINDOW_SAMPLES {
            tight.sample(Duration::from_secs(5), 5);
        }
        assert_eq!(tight.limit(), 8);
    }
}
