//! `GET /upstreams`: every group's endpoints with health, weight, in-flight requests,
//! EWMA latency and pool use, as JSON (summed over the workers; healthy only when every
//! worker sees the endpoint healthy).

use super::AdminState;
use crate::outcome::format::json_string;

pub(super) fn render(state: &AdminState) -> String {
    format!("{{\"upstreams\":{}}}\n", render_array(state))
}

/// The groups, as a JSON array.
pub(super) fn render_array(state: &AdminState) -> String {
    let mut out = Vec::with_capacity(1024);
    out.push(b'[');
    let Some(first) = state.workers.first() else {
        out.push(b']');
        return String::from_utf8_lossy(&out).into_owned();
    };
    let groups = first.snapshot().groups.clone();
    for (g, group) in groups.iter().enumerate() {
        if g > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json_string(&mut out, group.name.as_bytes());
        out.extend_from_slice(b",\"endpoints\":[");
        let mut endpoints = group.endpoints();
        let mut seen_pools: Vec<usize> = endpoints.iter().map(|e| e.pool).collect();
        for worker in &state.workers[1..] {
            let snapshot = worker.snapshot();
            let Some(theirs) = snapshot.groups.iter().find(|other| other.name == group.name) else { continue };
            for (mine, theirs) in endpoints.iter_mut().zip(theirs.endpoints()) {
                mine.healthy &= theirs.healthy;
                mine.outstanding += theirs.outstanding;
                mine.ewma_seconds = mine.ewma_seconds.max(theirs.ewma_seconds);
                if !seen_pools.contains(&theirs.pool) {
                    seen_pools.push(theirs.pool);
                    mine.idle += theirs.idle;
                    mine.open += theirs.open;
                    mine.created += theirs.created;
                    mine.reused += theirs.reused;
                    mine.connect_failures += theirs.connect_failures;
                }
            }
        }
        for (i, e) in endpoints.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"endpoint\":");
            json_string(&mut out, e.endpoint.as_bytes());
            let fields = format!(
                ",\"healthy\":{},\"weight\":{},\"outstanding\":{},\"ewma_ms\":{:.3},\"pool\":{{\"idle\":{},\"in_use\":{},\"created\":{},\"reused\":{},\"connect_failures\":{}}}}}",
                e.healthy,
                e.weight,
                e.outstanding,
                e.ewma_seconds * 1000.0,
                e.idle,
                e.open.saturating_sub(e.idle),
                e.created,
                e.reused,
                e.connect_failures
            );
            out.extend_from_slice(fields.as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    String::from_utf8_lossy(&out).into_owned()
}
