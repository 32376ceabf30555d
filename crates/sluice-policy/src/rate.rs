//! Rate limits by GCRA (the generic cell rate algorithm): a key's whole state is one
//! number, its theoretical arrival time (TAT), so it fits one Redis key (updated by one
//! script) as well as one map entry. Equivalent to a token bucket of `burst` tokens
//! refilled at `rate`, without a refill timer: over any stretch of time `t`, at most
//! `rate × t + burst` requests are admitted.
//!
//! Times are nanoseconds on any monotonic clock the caller keeps (the same for every
//! decision on a key); the Redis script does the same arithmetic in microseconds on
//! Redis's own clock, so that instances with skewed clocks share one limit.

use std::time::Duration;

/// `rate` and `burst` as GCRA's two intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time per admitted request (1 / rate), ns.
    interval: u64,
    /// How far ahead of now the TAT may run: (burst − 1) intervals, ns.
    tolerance: u64,
}

/// What a decision says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted: store `tat`; `remaining` more would be admitted right now.
    Admit { tat: u64, remaining: u64 },
    /// Refused: the next request conforms after `retry_after`.
    Refuse { retry_after: Duration },
}

impl Gcra {
    /// `count` requests per `per`, up to `burst` (≥ 1) at once.
    pub fn new(count: u32, per: Duration, burst: u32) -> Gcra {
        let interval = (per.as_nanos() / u128::from(count.max(1))).max(1) as u64;
        Gcra { interval, tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)) }
    }

    /// The time one request adds to a key's TAT.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// The bucket's size.
    pub fn burst(&self) -> u64 {
        self.tolerance / self.interval + 1
    }

    /// One request at `now` against `tat` (None: the key has no state, as good as full).
    pub fn decide(&self, tat: Option<u64>, now: u64) -> Decision {
        match self.take(tat, now, 1) {
            (0, _) => {
                let tat = tat.unwrap_or(now).max(now);
                let conforms_at = tat.saturating_sub(self.tolerance);
                Decision::Refuse { retry_after: Duration::from_nanos(conforms_at.saturating_sub(now)) }
            }
            (_, tat) => Decision::Admit { tat, remaining: self.remaining(tat, now) },
        }
    }

    /// Up to `want` requests at once (a worker taking a lease of several): how many
    /// conform now, and the TAT after them.
    pub fn take(&self, tat: Option<u64>, now: u64, want: u64) -> (u64, u64) {
        let tat = tat.unwrap_or(now).max(now);
        // A request conforms while the TAT is at most `tolerance` ahead of now.
        let room = (now + self.tolerance).checked_sub(tat).map_or(0, |ahead| ahead / self.interval + 1);
        let granted = room.min(want);
        (granted, tat + granted * self.interval)
    }

    /// Requests that would be admitted at `now` given `tat`.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        (now + self.tolerance).checked_sub(tat).map_or(0, |ahead| ahead / self.interval + 1)
    }

    /// Until the bucket is full again (the RateLimit field's `t`): when the TAT reaches now.
    pub fn until_full(&self, tat: u64, now: u64) -> Duration {
        Duration::from_nanos(tat.saturating_sub(now))
    }

    /// A key whose TAT is at or before now is as good as new: its state may be dropped.
    pub fn is_spent(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Offers a request every `every` ns for `span` ns; returns how many were admitted.
    fn admitted_over(gcra: &Gcra, every: u64, span: u64) -> u64 {
        let (mut tat, mut now, mut admitted) = (None, 0, 0);
        while now <= span {
            if let Decision::Admit { tat: next, .. } = gcra.decide(tat, now) {
                tat = Some(next);
                admitted += 1;
            }
            now += every;
        }
        admitted
    }

    #[test]
    fn a_burst_is_admitted_at_once_and_then_the_rate() {
        let gcra = Gcra::new(100, Duration::from_secs(1), 20);
        assert_eq!(gcra.burst(), 20);
        let mut tat = None;
        for i in 0..20 {
            match gcra.decide(tat, 0) {
                Decision::Admit { tat: next, remaining } => {
                    tat = Some(next);
                    assert_eq!(remaining, 19 - i);
                }
                refused => panic!("request {i} of the burst: {refused:?}"),
            }
        }
        assert_eq!(gcra.decide(tat, 0), Decision::Refuse { retry_after: Duration::from_millis(10) });
        assert!(matches!(gcra.decide(tat, 10 * MS), Decision::Admit { .. }), "one interval later");
    }

    #[test]
    fn over_time_at_most_rate_times_time_plus_burst() {
        let gcra = Gcra::new(100, Duration::from_secs(1), 20);
        // 10 s of requests every 1 ms (10× the rate): 1,000 + 20, and the one at t = 0.
        let admitted = admitted_over(&gcra, MS, 10_000 * MS);
        assert_eq!(admitted, 1_000 + 20);
        // Below the rate, everything.
        assert_eq!(admitted_over(&gcra, 20 * MS, 10_000 * MS), 501);
    }

    #[test]
    fn a_lease_takes_only_what_conforms_now() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 5);
        let (granted, tat) = gcra.take(None, 0, 3);
        assert_eq!(granted, 3);
        let (granted, tat) = gcra.take(Some(tat), 0, 3);
        assert_eq!(granted, 2, "the bucket holds 5");
        assert_eq!(gcra.take(Some(tat), 0, 3).0, 0);
        assert_eq!(gcra.take(Some(tat), 100 * MS, 3).0, 1, "one interval later, one more");
        assert_eq!(gcra.remaining(tat, 500 * MS), 5, "full again once the TAT is past");
        assert!(Gcra::is_spent(tat, 500 * MS));
    }
}
