//! What an HTTP/2 client connection is doing, for its idle timeout.
//!
//! The h2 crate has no timers (hyper's server had one, `header_read_timeout`, that also
//! bounded the idle wait between requests); sluice keeps the two apart, like nginx and
//! Envoy. An HTTP/2
//! connection must open its first stream within the header timeout (as an HTTP/1
//! connection must send its first head); after that it is closed only when no
//! stream has been in flight for the keep-alive timeout. (PINGs and SETTINGS keep
//! arriving on idle HTTP/2 connections, so bytes read say nothing here.)

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Activity of one HTTP/2 client connection. Times are milliseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    epoch: Instant,
    /// Requests whose response body has not ended yet.
    inflight: AtomicU32,
    /// When the last response ended.
    idle_since: AtomicU64,
    /// Whether any request has started on this connection.
    used: AtomicBool,
}

/// When the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request is in flight: nothing to time out here (the route timeout applies).
    Busy,
    /// No request yet: the first must start before this.
    FirstRequest(Instant),
    Idle(Instant),
}

impl crate::proxy::RequestTracker for ConnActivity {
    /// A stream (request) started.
    fn request_started(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    /// A response body ended (or was dropped).
    fn request_ended(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnActivity {
    /// A connection just accepted.
    pub(crate) fn new() -> Self {
        ConnActivity {
            epoch: Instant::now(),
            inflight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            used: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// When the connection expires if nothing else happens.
    pub(crate) fn expiry(&self, header_read_timeout: Duration, keepalive_timeout: Duration) -> Expiry {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return Expiry::Busy;
        }
        if !self.used.load(Ordering::Relaxed) {
            return Expiry::FirstRequest(self.epoch + header_read_timeout);
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        Expiry::Idle(self.epoch + Duration::from_millis(idle) + keepalive_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::RequestTracker;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_new_connection_must_start_a_request_within_the_header_timeout() {
        let a = ConnActivity::new();
        assert_eq!(a.expiry(HEADER, IDLE), Expiry::FirstRequest(a.epoch + HEADER));
    }

    #[test]
    fn after_a_request_only_the_idle_timeout_applies() {
        let a = ConnActivity::new();
        a.request_started();
        assert_eq!(a.expiry(HEADER, IDLE), Expiry::Busy);
        a.request_ended();
        assert!(matches!(a.expiry(HEADER, IDLE), Expiry::Idle(t) if t >= a.epoch + IDLE));
    }
}
