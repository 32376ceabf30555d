//! Retries: the budget that keeps them from amplifying an outage, and the backoff
//! between them.
//!
//! The budget is Finagle's: every request deposits `percent`/100 of a retry, every
//! retry withdraws one, over a sliding window of `WINDOW`; `min_per_second` retries are
//! always allowed so that a quiet service can still retry. With every backend failing,
//! upstream attempts stay within (1 + percent/100) × requests + min_per_second × the
//! window, instead of (1 + retries) × requests.

use std::time::{Duration, Instant};

/// The budget's memory.
pub const WINDOW: Duration = Duration::from_secs(10);
const BUCKETS: usize = 10;

/// Retries allowed, given the requests of the last `WINDOW`.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_per_second: u32,
    /// Per second of the window: (requests, retries).
    buckets: [(u64, u64); BUCKETS],
    /// The second the newest bucket counts, from `start`.
    current: u64,
    start: Instant,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32, now: Instant) -> Self {
        RetryBudget { percent, min_per_second, buckets: [(0, 0); BUCKETS], current: 0, start: now }
    }

    /// A request (not a retry) began.
    pub fn deposit(&mut self, now: Instant) {
        self.bucket(now).0 += 1;
    }

    /// Whether one more retry fits; if so it is counted.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.bucket(now);
        let (requests, retries) = self.buckets.iter().fold((0, 0), |(a, b), (r, t)| (a + r, b + t));
        let allowed = requests * u64::from(self.percent) / 100 + u64::from(self.min_per_second) * WINDOW.as_secs();
        if retries >= allowed {
            return false;
        }
        self.bucket(now).1 += 1;
        true
    }

    /// The bucket for `now`, clearing the seconds that passed since the last use.
    fn bucket(&mut self, now: Instant) -> &mut (u64, u64) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let passed = second.saturating_sub(self.current).min(BUCKETS as u64);
        for step in 1..=passed {
            self.buckets[((self.current + step) % BUCKETS as u64) as usize] = (0, 0);
        }
        self.current = self.current.max(second);
        &mut self.buckets[(self.current % BUCKETS as u64) as usize]
    }
}

/// Exponential backoff with full jitter (AWS's): before retry `n` (1-based), a wait
/// drawn uniformly from [0, min(base × 2^(n-1), 10 × base)], from `random`.
pub fn backoff(base: Duration, n: u32, random: u64) -> Duration {
    let cap = base.saturating_mul(10);
    let ceiling = base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(cap);
    let nanos = ceiling.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random % (nanos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_budget_when_everything_fails() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(20, 1, start);
        let mut retries = 0;
        // 1,000 requests over 5 s, each wanting 3 retries.
        for i in 0..1_000u64 {
            let now = start + Duration::from_millis(i * 5);
            budget.deposit(now);
            for _ in 0..3 {
                if budget.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        assert!(retries <= 200 + 10, "{retries} retries for 1,000 requests");
        assert!(retries >= 190, "the budget is used: {retries}");
    }

    #[test]
    fn a_quiet_service_may_still_retry_and_old_requests_are_forgotten() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(20, 1, start);
        budget.deposit(start);
        assert!(budget.try_withdraw(start), "min_per_second covers a single request");
        let mut busy = RetryBudget::new(20, 0, start);
        for _ in 0..100 {
            busy.deposit(start);
        }
        assert!((0..20).all(|_| busy.try_withdraw(start)));
        assert!(!busy.try_withdraw(start), "21st retry for 100 requests");
        let later = start + WINDOW + Duration::from_secs(1);
        assert!(!busy.try_withdraw(later), "the window forgot the requests that paid for retries");
    }

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_and_a_cap() {
        let base = Duration::from_millis(25);
        assert_eq!(backoff(base, 1, u64::MAX), Duration::from_nanos(u64::MAX % 25_000_001));
        assert!(backoff(base, 1, 12_345) <= base);
        assert!(backoff(base, 3, u64::MAX / 3) <= base * 4);
        assert!(backoff(base, 30, u64::MAX - 7) <= base * 10, "capped at 10 × base");
        assert_eq!(backoff(base, 2, 0), Duration::ZERO);
    }
}
