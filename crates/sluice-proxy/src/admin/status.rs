//! The live status page: `GET /` serves one HTML page (embedded in the binary: no CDN,
//! no internet) whose script polls `GET /stats.json` every second and draws requests
//! per second, latency percentiles and status classes over the last five minutes
//! (kept by sluice, `history.rs`: a page opened now shows them too), open connections,
//! each upstream group's endpoints, requests shed by limits, and the cache's counters.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::AdminState;
use crate::outcome::series::BUCKETS;

pub(super) const PAGE: &str = include_str!("status.html");

/// Totals since start; the page turns successive ones into rates.
pub(super) fn stats(state: &AdminState) -> String {
    let (tally, series) = super::gather::requests(state);
    let latency = super::gather::total_latency(&series);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut out = String::with_capacity(2048);
    let _ = write!(out, "{{\"time_ms\":{now},\"requests\":{},\"by_class\":{{", tally.requests());
    for (class, count) in tally.by_class.iter().enumerate() {
        let name = if class == 0 { "none".to_string() } else { format!("{class}xx") };
        let _ = write!(out, "{}\"{name}\":{}", if class == 0 { "" } else { "," }, count.load(Relaxed));
    }
    out.push_str("},\"shed\":{");
    for (i, (limit, count)) in crate::outcome::SHED_LIMITS.iter().zip(&tally.shed).enumerate() {
        let _ = write!(out, "{}\"{limit}\":{}", if i == 0 { "" } else { "," }, count.load(Relaxed));
    }
    // Connections, not requests, but refused by a limit all the same.
    let _ = write!(out, ",\"ip_connections\":{}", state.process.counters.refused_per_ip.load(Relaxed));
    out.push_str("},\"latency\":{\"le\":[");
    for (i, le) in BUCKETS.iter().enumerate() {
        let _ = write!(out, "{}{le}", if i == 0 { "" } else { "," });
    }
    out.push_str("],\"counts\":[");
    for (i, count) in latency.buckets.iter().enumerate() {
        let _ = write!(out, "{}{count}", if i == 0 { "" } else { "," });
    }
    let open = state.max_connections.saturating_sub(state.limit.available_permits());
    let http2 = state.process.counters.open_http2.load(Relaxed);
    let _ = write!(
        out,
        "]}},\"connections\":{{\"open\":{open},\"http2\":{http2},\"max\":{}}},\"cache\":",
        state.max_connections
    );
    match &state.process.cache {
        Some(cache) => {
            let s = &cache.stats;
            let (bytes, entries) = cache.memory_use();
            let _ = write!(
                out,
                "{{\"hits\":{},\"misses\":{},\"stale\":{},\"coalesced\":{},\"stored\":{},\"shared_errors\":{},\"bytes\":{bytes},\"entries\":{entries}}}",
                s.hits.load(Relaxed),
                s.misses.load(Relaxed),
                s.stale.load(Relaxed),
                s.coalesced.load(Relaxed),
                s.stored.load(Relaxed),
                cache.shared_errors()
            );
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"history\":{}", state.history.json());
    let _ = writeln!(out, ",\"upstreams\":{}}}", super::upstreams::render_array(state));
    out
}
