//! Process-wide counters of what went wrong and whose fault it was. Each event is also
//! logged with its request id; the running totals go in those log lines today and feed
//! the Prometheus metrics when they come (issue #12).

use std::sync::atomic::{AtomicU64, Ordering};

/// Event counts since start. Relaxed atomics: totals, not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    /// Upstream response bodies that broke off (closed early, bad chunking).
    pub(crate) upstream_truncated: AtomicU64,
    /// Requests refused as the client's fault (4xx from sluice: bad head, body, path).
    pub(crate) client_errors: AtomicU64,
    /// Clients cut because they stopped taking response bytes for send_timeout.
    pub(crate) send_timeouts: AtomicU64,
    /// HTTP/2 connections closed for flooding control frames (PING, SETTINGS).
    pub(crate) h2_control_floods: AtomicU64,
}

impl Counters {
    /// Counts one event; returns the new total.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}
