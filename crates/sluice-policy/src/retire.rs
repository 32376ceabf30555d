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
}

/// Why a connection retires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    IdleTimeout,
    Lifetime,
    RequestCount,
}

impl RetireRules {
    /// Should an idle connection be closed now rather than reused?
    pub fn check_idle(&self, age: &ConnAge, now: Instant) -> Option<Retire> {
        if now.saturating_duration_since(age.idle_since) >= self.idle_timeout {
            return Some(Retire::IdleTimeout);
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

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RetireRules =
        RetireRules { idle_timeout: Duration::from_secs(10), max_lifetime: Duration::from_secs(60), max_requests: 3 };

    #[test]
    fn retires_on_idle_lifetime_and_count() {
        let t0 = Instant::now();
        let fresh = ConnAge { opened: t0, idle_since: t0, requests: 1 };
        assert_eq!(RULES.check_idle(&fresh, t0 + Duration::from_secs(9)), None);
        assert_eq!(RULES.check_idle(&fresh, t0 + Duration::from_secs(10)), Some(Retire::IdleTimeout));
        let old = ConnAge { opened: t0, idle_since: t0 + Duration::from_secs(59), requests: 1 };
        assert_eq!(RULES.check_reuse(&old, t0 + Duration::from_secs(60)), Some(Retire::Lifetime));
        let busy = ConnAge { opened: t0, idle_since: t0, requests: 3 };
        assert_eq!(RULES.check_reuse(&busy, t0), Some(Retire::RequestCount));
        let unlimited = RetireRules { max_requests: 0, ..RULES };
        assert_eq!(unlimited.check_reuse(&busy, t0), None);
    }
}
