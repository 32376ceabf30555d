//! An upstream that says "not now" is listened to. A 429 or 503 with `Retry-After`
//! (seconds or an HTTP date), or a `RateLimit` field saying nothing remains (`r=0;t=N`),
//! paces that endpoint for that long (at most `MAX_PACE`): new requests and retries go
//! to other endpoints, hedges skip it, and when every endpoint is paced a request waits
//! for the first to be free again within its queue_timeout, or gets 503 with the time
//! remaining as its `Retry-After`. Learned per worker, from the responses it sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode};

/// Longest pause an upstream can impose (a wrong or hostile Retry-After must not take
/// an endpoint out for a day).
const MAX_PACE: Duration = Duration::from_secs(300);

/// Each endpoint's pause, as ms past `epoch` (0: none).
pub(crate) struct Pacing {
    epoch: Instant,
    until_ms: Vec<AtomicU64>,
}

impl Pacing {
    pub(crate) fn new(endpoints: usize) -> Self {
        Pacing { epoch: Instant::now(), until_ms: (0..endpoints).map(|_| AtomicU64::new(0)).collect() }
    }

    /// How long endpoint `index` is still paced, if it is.
    pub(crate) fn remaining(&self, index: usize) -> Option<Duration> {
        let until = self.until_ms.get(index)?.load(Ordering::Relaxed);
        if until == 0 {
            return None; // never paced: no clock read on every request's way
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Learns from a response of endpoint `index`: true when it paced it (for how long
    /// is then `remaining`).
    pub(crate) fn learn(&self, index: usize, status: StatusCode, headers: &HeaderMap) -> bool {
        let Some(wait) = asked_to_wait(status, headers, SystemTime::now()) else { return false };
        let Some(slot) = self.until_ms.get(index) else { return false };
        let until = (self.epoch.elapsed() + wait.min(MAX_PACE)).as_millis() as u64;
        slot.fetch_max(until, Ordering::Relaxed);
        true
    }
}

/// How long a 429 or 503 asks its caller to wait: `Retry-After` (seconds, or an HTTP
/// date after `now`), or a `RateLimit` member with nothing remaining (`r=0;t=N`); the
/// longer when both say. None for other statuses or when neither says.
pub(crate) fn asked_to_wait(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let retry_after = headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|text| {
        let text = text.trim();
        match text.parse::<u64>() {
            Ok(seconds) => Some(Duration::from_secs(seconds)),
            Err(_) => httpdate::parse_http_date(text).ok().map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
        }
    });
    let exhausted = headers
        .get_all("ratelimit")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(exhausted_for)
        .max();
    retry_after.max(exhausted).filter(|wait| !wait.is_zero())
}

/// One `RateLimit` member (`"name";r=0;t=30`): its `t` when its `r` is 0.
fn exhausted_for(member: &str) -> Option<Duration> {
    let (mut remaining, mut reset) = (None, None);
    for param in member.split(';').skip(1) {
        match param.trim().split_once('=') {
            Some(("r", value)) => remaining = value.trim().parse::<u64>().ok(),
            Some(("t", value)) => reset = value.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    (remaining == Some(0)).then_some(reset.map(Duration::from_secs)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).expect("name"), value.parse().expect("value"));
        }
        map
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_ratelimit_fields() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        let wait = |pairs: &[(&str, &str)]| asked_to_wait(too_many, &headers(pairs), now);
        assert_eq!(wait(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(wait(&[("retry-after", later.as_str())]), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(wait(&[("retry-after", past.as_str())]), None, "a date already past asks for nothing");
        assert_eq!(wait(&[("ratelimit", "\"a\";r=5;t=30, \"b\";r=0;t=12")]), Some(Duration::from_secs(12)));
        assert_eq!(wait(&[("ratelimit", "\"a\";r=5;t=30")]), None, "something remains");
        assert_eq!(wait(&[("retry-after", "2"), ("ratelimit", "\"b\";r=0;t=7")]), Some(Duration::from_secs(7)));
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[]), None);
        let ok = asked_to_wait(StatusCode::OK, &headers(&[("retry-after", "3")]), now);
        assert_eq!(ok, None, "only 429 and 503 pace");
        let unavailable = asked_to_wait(StatusCode::SERVICE_UNAVAILABLE, &headers(&[("retry-after", "1")]), now);
        assert_eq!(unavailable, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_pause_is_bounded_and_only_lengthened() {
        let pacing = Pacing::new(2);
        assert!(pacing.learn(0, StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "86400")])));
        let left = pacing.remaining(0).expect("paced");
        assert!(left <= MAX_PACE && left > MAX_PACE - Duration::from_secs(1), "{left:?}");
        assert!(pacing.learn(0, StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "1")])));
        assert!(pacing.remaining(0).expect("still") > Duration::from_secs(200), "a shorter pause does not cut it");
        assert_eq!(pacing.remaining(1), None);
        assert!(!pacing.learn(5, StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "1")])), "no such endpoint");
    }
}
