//! Process-wide counters of connection-level events that no request's outcome record
//! covers. Everything about requests is counted from their records (`outcome::Tally`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Event counts since start. Relaxed atomics: totals, not synchronisation.
#[derive(Default)]
pub(crate) struct Counters {
    /// HTTP/2 connections closed for flooding control frames (PING, SETTINGS).
    pub(crate) h2_control_floods: AtomicU64,
}

impl Counters {
    /// Counts one event; returns the new total.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}
