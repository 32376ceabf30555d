//! What the metrics read per route and upstream group: requests by status class and
//! two latency histograms (the whole request, and the upstream's response head), kept
//! per worker from the finished records (`Outcomes::record`) when metrics are on. A
//! worker's series sit behind a lock only its own thread takes per request (the admin
//! listener's reads are rare), and a route is found by pointer, not by hashing its name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Outcome;

/// Histogram bucket upper bounds, in seconds (Prometheus `le`).
pub(crate) const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets counted: the bounds, and +Inf.
pub(crate) const BUCKET_COUNT: usize = BUCKETS.len() + 1;

/// The bucket of `value`: the first bound it is within, else +Inf (the last).
pub(crate) fn bucket_of(value: Duration) -> usize {
    let seconds = value.as_secs_f64();
    BUCKETS.iter().position(|le| seconds <= *le).unwrap_or(BUCKETS.len())
}

/// Counts per bucket (the last is +Inf), their sum and count.
#[derive(Clone, Default)]
pub(crate) struct Histogram {
    pub(crate) buckets: [u64; BUCKET_COUNT],
    pub(crate) sum: Duration,
    pub(crate) count: u64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        self.buckets[bucket_of(value)] += 1;
        self.sum += value;
        self.count += 1;
    }

    pub(crate) fn add(&mut self, other: &Histogram) {
        for (to, from) in self.buckets.iter_mut().zip(other.buckets) {
            *to += from;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// One route and upstream group's requests.
#[derive(Clone)]
pub(crate) struct Series {
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    /// By status class, index 0 for no status sent.
    pub(crate) by_class: [u64; 6],
    pub(crate) total: Histogram,
    pub(crate) upstream_head: Histogram,
}

fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

/// One worker's series.
#[derive(Default)]
pub(crate) struct SeriesSet(Mutex<Vec<Series>>);

impl SeriesSet {
    pub(crate) fn record(&self, outcome: &Outcome) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = all.iter().position(|s| same(&s.route, &outcome.route) && same(&s.upstream, &outcome.upstream));
        let at = match found {
            Some(at) => at,
            None => {
                all.push(Series {
                    route: outcome.route.clone(),
                    upstream: outcome.upstream.clone(),
                    by_class: [0; 6],
                    total: Histogram::default(),
                    upstream_head: Histogram::default(),
                });
                all.len() - 1
            }
        };
        let series = &mut all[at];
        series.by_class[usize::from(outcome.status / 100).min(5)] += 1;
        series.total.observe(outcome.total);
        if let Some(head) = outcome.upstream_head {
            series.upstream_head.observe(head);
        }
    }

    /// A copy, for the metrics page.
    pub(crate) fn snapshot(&self) -> Vec<Series> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
