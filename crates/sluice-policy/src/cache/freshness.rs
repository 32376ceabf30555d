//! How long a stored response is fresh, how old it is, and what a request may be
//! served from it (RFC 9111 §4.2, RFC 5861 for stale-while-revalidate and
//! stale-if-error). Times are whole seconds since the Unix epoch, passed in.

use super::CacheControl;

/// What a stored response says about its own timing, read when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// When the request that fetched it was sent, and when its response arrived.
    pub request_time: u64,
    pub response_time: u64,
    /// The response's Date (the origin's clock).
    pub date: Option<u64>,
    /// The response's Age header, when it came through another cache.
    pub age: Option<u64>,
    /// Expires: Some(None) when present but not a valid date (already expired, §5.3).
    pub expires: Option<Option<u64>>,
    pub last_modified: Option<u64>,
}

impl Timing {
    /// The response's current age (RFC 9111 §4.2.3).
    pub fn current_age(&self, now: u64) -> u64 {
        let apparent_age = self.date.map_or(0, |date| self.response_time.saturating_sub(date));
        let response_delay = self.response_time.saturating_sub(self.request_time);
        let corrected_age_value = self.age.unwrap_or(0) + response_delay;
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        corrected_initial_age + now.saturating_sub(self.response_time)
    }
}

/// Heuristic freshness (RFC 9111 §4.2.2): off unless configured; then a share of the
/// time since Last-Modified, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    pub percent: u64,
    pub max: u64,
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1), minus 206 (sluice
/// does not store partial content).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// The freshness lifetime in seconds (RFC 9111 §4.2.1), for a shared cache.
pub fn lifetime(cc: &CacheControl, timing: &Timing, status: u16, heuristic: Option<Heuristic>) -> u64 {
    if let Some(s_maxage) = cc.s_maxage {
        return s_maxage;
    }
    if let Some(max_age) = cc.max_age {
        return max_age;
    }
    match timing.expires {
        Some(Some(expires)) => {
            let date = timing.date.unwrap_or(timing.response_time);
            return expires.saturating_sub(date);
        }
        Some(None) => return 0,
        None => {}
    }
    let Some(Heuristic { percent, max }) = heuristic else { return 0 };
    if !heuristically_cacheable(status) && !cc.public {
        return 0;
    }
    match timing.last_modified {
        Some(modified) => {
            let date = timing.date.unwrap_or(timing.response_time);
            (date.saturating_sub(modified) * percent / 100).min(max)
        }
        None => 0,
    }
}

/// What a request may be given from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Serve it: fresh (or stale within the client's max-stale). `ttl` is the freshness
    /// left in seconds (negative when served stale).
    Fresh { ttl: i64 },
    /// Serve it stale, and refresh it in the background (stale-while-revalidate).
    StaleWhileRevalidate { ttl: i64 },
    /// Ask the origin first (with validators when the response has them).
    Revalidate,
}

/// A stored response as the freshness rules see it.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    pub control: &'a CacheControl,
    pub lifetime: u64,
    pub age: u64,
}

impl Stored<'_> {
    fn ttl(&self) -> i64 {
        i64::try_from(self.lifetime).unwrap_or(i64::MAX) - i64::try_from(self.age).unwrap_or(i64::MAX)
    }

    fn staleness(&self) -> u64 {
        self.age.saturating_sub(self.lifetime)
    }

    fn is_fresh(&self) -> bool {
        self.lifetime > self.age
    }
}

/// Whether and how `stored` may answer a request with directives `request`
/// (RFC 9111 §4, §5.2.1; RFC 5861 §3).
pub fn usable(stored: &Stored<'_>, request: &CacheControl) -> Usable {
    let ttl = stored.ttl();
    // no-cache on either side: always ask the origin (a 304 makes that cheap).
    if stored.control.no_cache || request.no_cache {
        return Usable::Revalidate;
    }
    if let Some(max_age) = request.max_age {
        if stored.age > max_age {
            return Usable::Revalidate;
        }
    }
    if stored.is_fresh() {
        let fresh_enough = request.min_fresh.is_none_or(|min| ttl >= i64::try_from(min).unwrap_or(i64::MAX));
        return if fresh_enough { Usable::Fresh { ttl } } else { Usable::Revalidate };
    }
    if stored.control.forbids_stale() {
        return Usable::Revalidate;
    }
    match request.max_stale {
        Some(None) => return Usable::Fresh { ttl },
        Some(Some(limit)) if stored.staleness() <= limit => return Usable::Fresh { ttl },
        _ => {}
    }
    match stored.control.stale_while_revalidate {
        Some(window) if stored.staleness() <= window => Usable::StaleWhileRevalidate { ttl },
        _ => Usable::Revalidate,
    }
}

/// Whether `stored` may be served stale because the origin failed or answered 5xx
/// (stale-if-error, RFC 5861 §4), from either side's directive.
pub fn usable_on_error(stored: &Stored<'_>, request: &CacheControl) -> bool {
    if stored.is_fresh() {
        return !stored.control.no_cache;
    }
    if stored.control.forbids_stale() {
        return false;
    }
    let window = request.stale_if_error.or(stored.control.stale_if_error);
    window.is_some_and(|window| stored.staleness() <= window)
}

/// How long a shared tier should keep the response: its freshness left plus the
/// longest window in which it may still be served stale.
pub fn keep_for(stored: &Stored<'_>) -> u64 {
    let fresh = stored.lifetime.saturating_sub(stored.age);
    if stored.control.forbids_stale() {
        return fresh;
    }
    let grace = stored.control.stale_while_revalidate.unwrap_or(0).max(stored.control.stale_if_error.unwrap_or(0));
    fresh + grace
}
