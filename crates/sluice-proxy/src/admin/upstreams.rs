//! `GET /upstreams`: every group's endpoints with health, weight, in-flight requests,
//! EWMA latency, p50 and p99 of the last minute, and pool use, as JSON (summed over the
//! workers by `gather`).

use super::AdminState;
use crate::outcome::format::json_string;

pub(super) fn render(state: &AdminState) -> String {
    format!("{{\"upstreams\":{}}}\n", render_array(state))
}

/// The groups, as a JSON array.
pub(super) fn render_array(state: &AdminState) -> String {
    let mut out = Vec::with_capacity(1024);
    out.push(b'[');
    for (g, group) in super::gather::groups(state).iter().enumerate() {
        if g > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json_string(&mut out, group.name.as_bytes());
        out.extend_from_slice(b",\"endpoints\":[");
        for (i, e) in group.endpoints.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"endpoint\":");
            json_string(&mut out, e.endpoint.as_bytes());
            let (p50, p99) = state.history.endpoint_latency(&group.name, &e.endpoint);
            let ms = |v: Option<f64>| v.map_or("null".to_string(), |s| format!("{:.3}", s * 1000.0));
            out.extend_from_slice(format!(",\"p50_ms_1m\":{},\"p99_ms_1m\":{}", ms(p50), ms(p99)).as_bytes());
            let fields = format!(
                ",\"healthy\":{},\"weight\":{},\"outstanding\":{},\"ewma_ms\":{:.3},\"pool\":{{\"idle\":{},\"in_use\":{},\"created\":{},\"reused\":{},\"connect_failures\":{}}},\"queue\":{{\"waiting\":{},\"queued\":{},\"wait_seconds\":{:.3},\"timeouts\":{}}}}}",
                e.healthy,
                e.weight,
                e.outstanding,
                e.ewma_seconds * 1000.0,
                e.idle,
                e.open.saturating_sub(e.idle),
                e.created,
                e.reused,
                e.connect_failures,
                e.queue.waiting,
                e.queue.queued,
                e.queue.wait_seconds,
                e.queue.timeouts
            );
            out.extend_from_slice(fields.as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    String::from_utf8_lossy(&out).into_owned()
}
