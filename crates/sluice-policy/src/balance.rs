//! Endpoint selection. For now round robin with failover order; health state and
//! other algorithms hang here later.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Lock-free round robin over `len` endpoints.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The order in which to try endpoints for one request: a rotating start, then the
    /// rest, so a failed connect falls over to every other endpoint once.
    pub fn order(&self, len: usize) -> impl Iterator<Item = usize> {
        let start = if len == 0 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % len };
        (0..len).map(move |i| (start + i) % len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_visits_every_endpoint_once() {
        let rr = RoundRobin::default();
        let first: Vec<usize> = rr.order(3).collect();
        let second: Vec<usize> = rr.order(3).collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(second, vec![1, 2, 0]);
        assert_eq!(rr.order(0).count(), 0);
    }
}
