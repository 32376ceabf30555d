//! When a pooled upstream connection must stop being used.

use std::time::{Duration, Instant};

/// Limits a pool puts on each connection.
#[derive(Debug, Clone, Copy)]
pub struct RetireRules {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// 0: no limit.
    pub max_requests: u64,
}

/// What a pool knows about one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnAge {
    pub opened: Instant,
    /// When it last went idle.
    pub idle_since: Instant,
    pub requests: u64,
    /// How long the upstream said it keeps this connection idle (`Keep-Alive: timeout=N`).
    pub announced_idle: Option<Duration>,
}

impl ConnAge {
    /// A connection opened at `now`.
    pub fn new(now: Instant) -> Self {
        ConnAge { opened: now, idle_since: now, requests: 0, announced_idle: None }
    }
}

/// Why a connection retires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    IdleTimeout,
    /// Idle as long as the upstream keeps connections: it said so (`Keep-Alive:
    /// timeout`), or its closes showed it ([`IdleLearner`]).
    UpstreamIdle,
    Lifetime,
    RequestCount,
}

impl RetireRules {
    /// Should an idle connection be closed now rather than reused? `learned` is how
    /// long the upstream was seen to keep idle connections ([`IdleLearner::limit`]).
    pub fn check_idle(&self, age: &ConnAge, now: Instant, learned: Option<Duration>) -> Option<Retire> {
        let idle = now.saturating_duration_since(age.idle_since);
        if idle >= self.idle_timeout {
            return Some(Retire::IdleTimeout);
        }
        let upstream = match (age.announced_idle.map(before_announced), learned) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if upstream.is_some_and(|limit| idle >= limit) {
            return Some(Retire::UpstreamIdle);
        }
        self.check_reuse(age, now)
    }

    /// May a connection that just finished a request go back to the pool?
    pub fn check_reuse(&self, age: &ConnAge, now: Instant) -> Option<Retire> {
        if now.saturating_duration_since(age.opened) >= self.max_lifetime {
            Some(Retire::Lifetime)
        } else if self.max_requests != 0 && age.requests >= self.max_requests {
            Some(Retire::RequestCount)
        } else {
            None
        }
    }
}

/// When to stop reusing a connection whose upstream announced `Keep-Alive: timeout=N`:
/// a second before N (a quarter before, for short ones), so that a request sent just
/// then does not cross the upstream's close on the wire.
pub fn before_announced(announced: Duration) -> Duration {
    announced.saturating_sub(Duration::from_secs(1)).max(announced * 3 / 4)
}

/// How long an upstream keeps idle connections, learned from the ones it closed
/// (Node's 5 s, gunicorn's 2 s and many others close without saying so). Each close
/// found by the pool's sweep gives a lower bound: the connection was seen open at that
/// idle age, so the upstream's limit is longer. Retiring idle connections before that
/// bound (at 90% of it, so that the sweep that would see one open at that age again
/// retires it instead) is always before the upstream's close. One close is not a
/// habit: the limit is known once three sweeps saw closes, from the second-smallest of
/// the last eight bounds, so that one early close (a restart) does not set it.
#[derive(Debug, Default, Clone)]
pub struct IdleLearner {
    bounds: [Duration; LEARNED_CLOSES],
    seen: usize,
}

/// Closes remembered by [`IdleLearner`].
const LEARNED_CLOSES: usize = 8;

/// A close found after less than this says nothing about an idle limit.
const SHORTEST_BOUND: Duration = Duration::from_millis(100);

impl IdleLearner {
    /// A connection found closed had been seen open at idle age `seen_open_idle`.
    /// Returns true when the learned limit changed.
    pub fn closed(&mut self, seen_open_idle: Duration) -> bool {
        if seen_open_idle < SHORTEST_BOUND {
            return false;
        }
        let before = self.limit();
        self.bounds[self.seen % LEARNED_CLOSES] = seen_open_idle;
        self.seen += 1;
        self.limit() != before
    }

    /// The idle age at which connections should be retired, once closes showed one.
    pub fn limit(&self) -> Option<Duration> {
        let known = self.seen.min(LEARNED_CLOSES);
        if known < 3 {
            return None;
        }
        let mut bounds = self.bounds;
        let bounds = &mut bounds[..known];
        bounds.sort_unstable();
        Some(bounds[1] * 9 / 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_keep_alive_retires_before_the_upstream_closes() {
        let t0 = Instant::now();
        let age = ConnAge { announced_idle: Some(Duration::from_secs(5)), ..ConnAge::new(t0) };
        assert_eq!(RULES.check_idle(&age, t0 + Duration::from_millis(3_900), None), None);
        assert_eq!(RULES.check_idle(&age, t0 + Duration::from_secs(4), None), Some(Retire::UpstreamIdle));
        assert_eq!(before_announced(Duration::from_secs(1)), Duration::from_millis(750));
        assert_eq!(before_announced(Duration::from_secs(60)), Duration::from_secs(59));
    }

    #[test]
    fn closes_seen_three_times_set_the_limit_and_one_early_close_does_not() {
        let mut learner = IdleLearner::default();
        assert!(!learner.closed(Duration::from_millis(20)), "too short to mean anything");
        assert!(!learner.closed(Duration::from_millis(4_300)));
        assert!(!learner.closed(Duration::from_millis(300)), "a restart's close");
        assert_eq!(learner.limit(), None, "two closes are not a habit");
        assert!(learner.closed(Duration::from_millis(4_600)));
        assert_eq!(learner.limit(), Some(Duration::from_millis(3_870)), "the early close is not the limit");
        let t0 = Instant::now();
        let age = ConnAge::new(t0);
        assert_eq!(RULES.check_idle(&age, t0 + Duration::from_millis(3_869), learner.limit()), None);
        assert_eq!(
            RULES.check_idle(&age, t0 + Duration::from_millis(3_870), learner.limit()),
            Some(Retire::UpstreamIdle)
        );
    }

    const RULES: RetireRules =
        RetireRules { idle_timeout: Duration::from_secs(10), max_lifetime: Duration::from_secs(60), max_requests: 3 };

    #[test]
    fn retires_on_idle_lifetime_and_count() {
        let t0 = Instant::now();
        let fresh = ConnAge { requests: 1, ..ConnAge::new(t0) };
        assert_eq!(RULES.check_idle(&fresh, t0 + Duration::from_secs(9), None), None);
        assert_eq!(RULES.check_idle(&fresh, t0 + Duration::from_secs(10), None), Some(Retire::IdleTimeout));
        let old = ConnAge { idle_since: t0 + Duration::from_secs(59), requests: 1, ..ConnAge::new(t0) };
        assert_eq!(RULES.check_reuse(&old, t0 + Duration::from_secs(60)), Some(Retire::Lifetime));
        let busy = ConnAge { requests: 3, ..ConnAge::new(t0) };
        assert_eq!(RULES.check_reuse(&busy, t0), Some(Retire::RequestCount));
        let unlimited = RetireRules { max_requests: 0, ..RULES };
        assert_eq!(unlimited.check_reuse(&busy, t0), None);
    }
}
