//! What the admin pages read, summed over the workers in one place: the requests'
//! totals and per-route series, and each group's endpoints (a pool the workers share is
//! counted once; an endpoint is healthy only when every worker sees it healthy).

use std::sync::Arc;

use super::AdminState;
use crate::outcome::series::Series;
use crate::outcome::Tally;
use crate::upstream::EndpointView;

/// One upstream group, over every worker.
pub(super) struct GroupView {
    pub(super) name: Arc<str>,
    pub(super) endpoints: Vec<EndpointView>,
    /// Retries made, and refused by the budget.
    pub(super) retries: (u64, u64),
    /// The adaptive limit and the requests under it, if configured.
    pub(super) adaptive: Option<(u32, u32)>,
}

/// The groups in config order.
pub(super) fn groups(state: &AdminState) -> Vec<GroupView> {
    let mut groups: Vec<GroupView> = Vec::new();
    let mut seen_pools = Vec::new();
    for worker in &state.workers {
        let snapshot = worker.snapshot();
        for group in &snapshot.groups {
            let at = match groups.iter().position(|g| g.name == group.name) {
                Some(at) => at,
                None => {
                    let name = Arc::clone(&group.name);
                    groups.push(GroupView { name, endpoints: Vec::new(), retries: (0, 0), adaptive: None });
                    groups.len() - 1
                }
            };
            let view = &mut groups[at];
            let (made, refused) = group.retry_counts();
            view.retries = (view.retries.0 + made, view.retries.1 + refused);
            // One limiter per process: every worker's group shows the same one.
            if let Some(state) = group.adaptive_state() {
                view.adaptive = Some(state);
            }
            for mut e in group.endpoints() {
                if seen_pools.contains(&e.pool) {
                    (e.idle, e.open, e.created, e.reused, e.connect_failures) = (0, 0, 0, 0, 0);
                    e.queue = crate::upstream::QueueView::default();
                } else {
                    seen_pools.push(e.pool);
                }
                match view.endpoints.iter_mut().find(|mine| mine.endpoint == e.endpoint) {
                    Some(mine) => {
                        mine.healthy &= e.healthy;
                        mine.outstanding += e.outstanding;
                        mine.ewma_seconds = mine.ewma_seconds.max(e.ewma_seconds);
                        for (to, from) in mine.latency_counts.iter_mut().zip(e.latency_counts) {
                            *to += from;
                        }
                        mine.idle += e.idle;
                        mine.open += e.open;
                        mine.created += e.created;
                        mine.reused += e.reused;
                        mine.connect_failures += e.connect_failures;
                        mine.queue.add(&e.queue);
                    }
                    None => view.endpoints.push(e),
                }
            }
        }
    }
    groups
}

/// Every request's total time, over the routes' series.
pub(super) fn total_latency(series: &[Series]) -> crate::outcome::series::Histogram {
    let mut latency = crate::outcome::series::Histogram::default();
    for s in series {
        latency.add(&s.total);
    }
    latency
}

/// The requests' totals, and their series per route and group.
pub(super) fn requests(state: &AdminState) -> (Tally, Vec<Series>) {
    let tally = Tally::default();
    let mut series: Vec<Series> = Vec::new();
    for worker in &state.workers {
        tally.add(&worker.outcomes.tally);
        for theirs in worker.outcomes.series.iter().flat_map(|s| s.snapshot()) {
            match series.iter_mut().find(|s| s.route == theirs.route && s.upstream == theirs.upstream) {
                Some(mine) => {
                    for (to, from) in mine.by_class.iter_mut().zip(theirs.by_class) {
                        *to += from;
                    }
                    mine.total.add(&theirs.total);
                    mine.upstream_head.add(&theirs.upstream_head);
                }
                None => series.push(theirs),
            }
        }
    }
    (tally, series)
}
