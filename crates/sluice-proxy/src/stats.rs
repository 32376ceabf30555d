//! Process-wide counters of connection-level events that no request's outcome record
//! covers. Everything about requests is counted from their records (`outcome::Tally`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Event counts since start. Relaxed atomics: totals, not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    /// HTTP/2 connections closed for flooding control frames (PING, SETTINGS).
    pub(crate) h2_control_floods: AtomicU64,
    /// Failed accepts: the FD table (or kernel memory) full, and anything else.
    pub(crate) accept_exhausted: AtomicU64,
    pub(crate) accept_other: AtomicU64,
    /// Connections closed at the connection cap to make room for new clients (idle
    /// keep-alive ones, or heads still coming in, those nearest their deadline first).
    pub(crate) reclaimed_at_cap: AtomicU64,
    /// Connections closed at once: their client had max_connections_per_ip open.
    pub(crate) refused_per_ip: AtomicU64,
    /// When that was last logged (seconds since the epoch).
    pub(crate) refused_per_ip_logged: AtomicU64,
    /// Client connections open now that speak HTTP/2, and that are TLS (the rest of the
    /// open connections speak HTTP/1.1, or have not said yet).
    pub(crate) open_http2: AtomicU64,
    pub(crate) open_tls: AtomicU64,
}

/// Counts one open connection in a gauge for as long as it lives.
pub(crate) struct Open<'a>(&'a AtomicU64);

impl<'a> Open<'a> {
    pub(crate) fn count(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    /// Counts one event; returns the new total.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// True at most once a second per `last` (when it was last true): for log lines an
    /// attacker could otherwise repeat at will.
    pub(crate) fn log_now(&self, last: &AtomicU64) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let before = last.load(Ordering::Relaxed);
        now > before && last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}
