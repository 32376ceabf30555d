//! Passive health: outlier detection from the requests' own outcomes (Envoy's
//! `consecutive_5xx`). An endpoint that fails `consecutive_failures` requests in a row
//! (connect failures, timeouts and 5xx) is ejected for `base_ejection` × the number of
//! times it has been ejected (capped at `MAX_EJECTION`), so a flapping endpoint stays
//! out longer each time. Never more than `max_ejected_percent` of a group is ejected
//! (at least one endpoint may be); when every endpoint is ejected or unhealthy anyway,
//! the balancer uses them all ("panic mode") rather than failing every request.

use std::time::{Duration, Instant};

/// An ejection lasts at most this long, however often the endpoint was ejected.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// `[upstream.NAME.outlier]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierRules {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejected_percent: u32,
}

/// One endpoint's passive health.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outlier {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// What one outcome did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// Ejected now, for this long.
    Ejected(Duration),
}

impl Outlier {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    pub fn success(&mut self) {
        self.consecutive = 0;
    }

    /// Back in rotation now (an active check passed again); the count of past
    /// ejections is kept, so a flapping endpoint's next ejection is still longer.
    pub fn reinstate(&mut self, now: Instant) {
        self.ejected_until = Some(now);
        self.consecutive = 0;
    }

    /// When it came back into rotation, if it ever was out (for slow start).
    pub fn back_since(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|until| *until <= now)
    }

    /// A failed request. `ejected_now` is how many endpoints of the group are ejected,
    /// `group` how many it has.
    pub fn failure(&mut self, now: Instant, rules: &OutlierRules, ejected_now: usize, group: usize) -> Verdict {
        self.consecutive += 1;
        if self.consecutive < rules.consecutive_failures.max(1) || self.is_ejected(now) {
            return Verdict::Unchanged;
        }
        let allowed = (group * rules.max_ejected_percent as usize / 100).max(1);
        if ejected_now >= allowed {
            return Verdict::Unchanged;
        }
        self.ejections += 1;
        self.consecutive = 0;
        let time = rules.base_ejection.saturating_mul(self.ejections).min(MAX_EJECTION);
        self.ejected_until = Some(now + time);
        Verdict::Ejected(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: OutlierRules =
        OutlierRules { consecutive_failures: 3, base_ejection: Duration::from_secs(10), max_ejected_percent: 50 };

    #[test]
    fn consecutive_failures_eject_for_longer_each_time() {
        let start = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.failure(start, &RULES, 0, 4), Verdict::Unchanged);
        o.success(); // a success in between resets the count
        for _ in 0..2 {
            assert_eq!(o.failure(start, &RULES, 0, 4), Verdict::Unchanged);
        }
        assert_eq!(o.failure(start, &RULES, 0, 4), Verdict::Ejected(Duration::from_secs(10)));
        assert!(o.is_ejected(start + Duration::from_secs(9)) && !o.is_ejected(start + Duration::from_secs(10)));
        let later = start + Duration::from_secs(11);
        for _ in 0..2 {
            o.failure(later, &RULES, 0, 4);
        }
        assert_eq!(
            o.failure(later, &RULES, 0, 4),
            Verdict::Ejected(Duration::from_secs(20)),
            "second time: twice as long"
        );
        let mut flapping = o;
        for i in 0..100 {
            let now = later + Duration::from_secs(400 * (i + 1));
            for _ in 0..3 {
                flapping.failure(now, &RULES, 0, 4);
            }
        }
        assert!(!flapping.is_ejected(later + Duration::from_secs(400 * 100 + MAX_EJECTION.as_secs() + 1)), "capped");
    }

    #[test]
    fn a_reinstated_endpoint_is_back_at_once_but_its_next_ejection_is_longer() {
        let now = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..3 {
            o.failure(now, &RULES, 0, 4);
        }
        o.reinstate(now);
        assert!(!o.is_ejected(now));
        assert_eq!(o.back_since(now), Some(now), "back now: slow start counts from here");
        for _ in 0..2 {
            assert_eq!(o.failure(now, &RULES, 0, 4), Verdict::Unchanged, "the count started again");
        }
        assert_eq!(o.failure(now, &RULES, 0, 4), Verdict::Ejected(Duration::from_secs(20)));
    }

    #[test]
    fn never_more_than_the_allowed_share_is_ejected_but_always_one_may_be() {
        let now = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..3 {
            o.failure(now, &RULES, 2, 4); // 2 of 4 already out: 50% reached
        }
        assert!(!o.is_ejected(now));
        let mut alone = Outlier::default();
        for _ in 0..3 {
            alone.failure(now, &RULES, 0, 1); // 50% of 1 rounds to 0; one may go anyway
        }
        assert!(alone.is_ejected(now));
    }
}
