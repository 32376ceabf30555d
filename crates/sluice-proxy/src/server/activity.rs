//! What a client connection is doing, for its idle and header-read timeouts.
//!
//! hyper 1.x has one timer (`header_read_timeout`) that also bounds the idle wait
//! between keep-alive requests, so a 10s header timeout would close keep-alive
//! connections after 10s. sluice keeps the two apart, like nginx and Envoy: a
//! connection's watchdog reads this state, updated by the I/O wrapper (bytes read)
//! and by the request path (request started, response body ended).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No request head is being read.
const NONE: u64 = u64::MAX;

/// Activity of one client connection. Times are milliseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    epoch: Instant,
    /// Requests whose response body has not ended yet.
    inflight: AtomicU32,
    /// When the last response ended (or the connection was accepted).
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived, if one is being read.
    head_started: AtomicU64,
    /// HTTP/2: bytes arrive between requests (PING, SETTINGS), so no header timeout.
    multiplexed: AtomicBool,
}

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request is in flight: nothing to time out here (the route timeout applies).
    Busy,
    HeaderRead(Instant),
    Idle(Instant),
}

impl ConnActivity {
    /// A connection just accepted: its first request head must arrive within the header timeout.
    pub(crate) fn new() -> Self {
        ConnActivity {
            epoch: Instant::now(),
            inflight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived from the client. Two relaxed loads on the hot path.
    pub(crate) fn on_read(&self) {
        if self.inflight.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == NONE {
            self.head_started.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A whole request head was read and handed to the request path. `multiplexed`:
    /// HTTP/2, where bytes between requests are not request heads.
    pub(crate) fn request_started(&self, multiplexed: bool) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        if multiplexed {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
    }

    /// A response body ended (or was dropped).
    pub(crate) fn request_ended(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When the connection expires if nothing else happens.
    pub(crate) fn expiry(&self, header_read_timeout: Duration, keepalive_timeout: Duration) -> Expiry {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return Expiry::Busy;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NONE && !self.multiplexed.load(Ordering::Relaxed) {
            return Expiry::HeaderRead(self.epoch + Duration::from_millis(head) + header_read_timeout);
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        Expiry::Idle(self.epoch + Duration::from_millis(idle) + keepalive_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_new_connection_must_send_a_head_within_the_header_timeout() {
        let a = ConnActivity::new();
        assert!(matches!(a.expiry(HEADER, IDLE), Expiry::HeaderRead(t) if t <= a.epoch + HEADER));
    }

    #[test]
    fn between_requests_the_idle_timeout_applies_until_bytes_arrive() {
        let a = ConnActivity::new();
        a.request_started(false);
        assert_eq!(a.expiry(HEADER, IDLE), Expiry::Busy);
        a.request_ended();
        assert!(matches!(a.expiry(HEADER, IDLE), Expiry::Idle(t) if t >= a.epoch + IDLE));
        a.on_read();
        assert!(matches!(a.expiry(HEADER, IDLE), Expiry::HeaderRead(_)));
    }

    #[test]
    fn http2_connections_only_time_out_when_idle() {
        let a = ConnActivity::new();
        a.request_started(true);
        a.request_ended();
        a.on_read();
        assert!(matches!(a.expiry(HEADER, IDLE), Expiry::Idle(_)));
    }
}
