//! `GET /metrics`: Prometheus text (format 0.0.4), computed when asked from what the
//! workers already keep: the outcome records' totals and per-route series, the pools'
//! counters, the balancers' view of each endpoint, the retry budgets, the cache's
//! counters, the connection cap and the FD table. Nothing here runs per request.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::AdminState;
use crate::outcome::series::{Histogram, Series, BUCKETS};
use crate::outcome::SHED_LIMITS;
use crate::upstream::EndpointView;

pub(super) fn render(state: &AdminState) -> String {
    let mut out = String::with_capacity(8 * 1024);
    requests(&mut out, state);
    connections(&mut out, state);
    upstreams(&mut out, state);
    cache(&mut out, state);
    rate_limits(&mut out, state);
    spans(&mut out, state);
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format asks.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn requests(out: &mut String, state: &AdminState) {
    let (tally, series) = super::gather::requests(state);
    head(
        out,
        "sluice_requests_total",
        "counter",
        "Requests by route, upstream group and status class (none: no status sent).",
    );
    for s in &series {
        let (route, upstream) = (label(s.route.as_deref().unwrap_or("")), label(s.upstream.as_deref().unwrap_or("")));
        for (class, count) in s.by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
            let class = if class == 0 { "none".to_string() } else { format!("{class}xx") };
            let _ = writeln!(
                out,
                "sluice_requests_total{{route=\"{route}\",upstream=\"{upstream}\",class=\"{class}\"}} {count}"
            );
        }
    }
    head(out, "sluice_request_duration_seconds", "histogram", "From the request head to the record's end.");
    for s in &series {
        histogram(out, "sluice_request_duration_seconds", s, &s.total);
    }
    head(
        out,
        "sluice_upstream_duration_seconds",
        "histogram",
        "From handing the request to the upstream group to its response head.",
    );
    for s in &series {
        histogram(out, "sluice_upstream_duration_seconds", s, &s.upstream_head);
    }
    for (name, help, counter) in [
        ("sluice_client_errors_total", "Requests refused as the client's fault.", &tally.client_errors),
        ("sluice_client_gone_total", "Requests whose client went away before the end.", &tally.client_gone),
        ("sluice_upstream_broke_total", "Responses the upstream broke off.", &tally.upstream_broke),
        (
            "sluice_send_timeouts_total",
            "Clients cut for taking no response bytes for send_timeout.",
            &tally.send_timeouts,
        ),
        (
            "sluice_h2_control_floods_total",
            "HTTP/2 connections closed for flooding PING or SETTINGS.",
            &state.process.counters.h2_control_floods,
        ),
    ] {
        head(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(Relaxed));
    }
    head(
        out,
        "sluice_requests_shed_total",
        "counter",
        "Requests refused by a limit: a group's max_requests or max_pending, the line for a connection (queue), a route's rate limit.",
    );
    for (limit, counter) in SHED_LIMITS.iter().zip(&tally.shed) {
        let _ = writeln!(out, "sluice_requests_shed_total{{limit=\"{limit}\"}} {}", counter.load(Relaxed));
    }
}

fn histogram(out: &mut String, name: &str, s: &Series, h: &Histogram) {
    if h.count == 0 {
        return;
    }
    let labels = format!(
        "route=\"{}\",upstream=\"{}\"",
        label(s.route.as_deref().unwrap_or("")),
        label(s.upstream.as_deref().unwrap_or(""))
    );
    let mut cumulative = 0;
    for (i, count) in h.buckets.iter().enumerate() {
        cumulative += count;
        let le = BUCKETS.get(i).map_or("+Inf".to_string(), |le| le.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum.as_secs_f64());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

fn connections(out: &mut String, state: &AdminState) {
    let counters = &state.process.counters;
    head(
        out,
        "sluice_connections_open",
        "gauge",
        "Client connections open, by protocol (http1: HTTP/1.1 or not yet known).",
    );
    let open = state.max_connections.saturating_sub(state.limit.available_permits()) as u64;
    let http2 = counters.open_http2.load(Relaxed);
    let _ = writeln!(out, "sluice_connections_open{{protocol=\"http1\"}} {}", open.saturating_sub(http2));
    let _ = writeln!(out, "sluice_connections_open{{protocol=\"http2\"}} {http2}");
    head(out, "sluice_connections_tls_open", "gauge", "Client connections open over TLS (of the above).");
    let _ = writeln!(out, "sluice_connections_tls_open {}", counters.open_tls.load(Relaxed));
    head(
        out,
        "sluice_accept_errors_total",
        "counter",
        "Failed accepts, by kind (fd_exhausted: the FD table or kernel memory full).",
    );
    let _ = writeln!(
        out,
        "sluice_accept_errors_total{{kind=\"fd_exhausted\"}} {}",
        counters.accept_exhausted.load(Relaxed)
    );
    let _ = writeln!(out, "sluice_accept_errors_total{{kind=\"other\"}} {}", counters.accept_other.load(Relaxed));
    head(
        out,
        "sluice_connections_reclaimed_total",
        "counter",
        "Connections closed at max_connections to let new clients in (idle, or a head still coming in).",
    );
    let _ = writeln!(out, "sluice_connections_reclaimed_total {}", counters.reclaimed_at_cap.load(Relaxed));
    head(
        out,
        "sluice_connections_refused_total",
        "counter",
        "Connections closed at once by a limit: their client had max_connections_per_ip open.",
    );
    let refused = counters.refused_per_ip.load(Relaxed);
    let _ = writeln!(out, "sluice_connections_refused_total{{limit=\"ip_connections\"}} {refused}");
    head(out, "sluice_connections_max", "gauge", "server.max_connections.");
    let _ = writeln!(out, "sluice_connections_max {}", state.max_connections);
    if let Some(used) = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()) {
        head(out, "sluice_fds_open", "gauge", "File descriptors open in the process.");
        let _ = writeln!(out, "sluice_fds_open {used}");
    }
    if let Some(limit) = fd_limit() {
        head(out, "sluice_fds_limit", "gauge", "The process's RLIMIT_NOFILE soft limit.");
        let _ = writeln!(out, "sluice_fds_limit {limit}");
    }
    head(out, "sluice_response_spool_bytes", "gauge", "Response bytes spilled to files for slow clients now.");
    let _ = writeln!(out, "sluice_response_spool_bytes {}", crate::proxy::spill::spilled_now());
}

/// The soft limit on open files, from /proc/self/limits.
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A metric per endpoint: name, type, help, and its value.
type EndpointMetric = (&'static str, &'static str, &'static str, fn(&EndpointView) -> f64);

fn upstreams(out: &mut String, state: &AdminState) {
    let groups = super::gather::groups(state);
    adaptive(out, &groups);
    let gauges: [EndpointMetric; 12] = [
        ("sluice_upstream_healthy", "gauge", "1 when the endpoint is in rotation on every worker.", |e| {
            f64::from(u8::from(e.healthy))
        }),
        ("sluice_upstream_weight", "gauge", "The endpoint's configured weight.", |e| f64::from(e.weight)),
        ("sluice_upstream_in_flight", "gauge", "Requests sent to the endpoint and not finished.", |e| {
            e.outstanding as f64
        }),
        ("sluice_upstream_pool_idle", "gauge", "Idle pooled connections.", |e| e.idle as f64),
        ("sluice_upstream_pool_in_use", "gauge", "Pooled connections in use.", |e| {
            e.open.saturating_sub(e.idle) as f64
        }),
        ("sluice_upstream_pool_created_total", "counter", "Connections opened.", |e| e.created as f64),
        ("sluice_upstream_pool_reused_total", "counter", "Requests that reused a pooled connection.", |e| {
            e.reused as f64
        }),
        ("sluice_upstream_connect_failures_total", "counter", "Failed connects.", |e| e.connect_failures as f64),
        ("sluice_upstream_queue_waiting", "gauge", "Requests waiting in line for a connection now.", |e| {
            e.queue.waiting as f64
        }),
        ("sluice_upstream_queued_total", "counter", "Requests that waited in line for a connection.", |e| {
            e.queue.queued as f64
        }),
        ("sluice_upstream_queue_wait_seconds_total", "counter", "Time requests spent in line, summed.", |e| {
            e.queue.wait_seconds
        }),
        ("sluice_upstream_queue_timeouts_total", "counter", "Requests that waited queue_timeout in vain (503).", |e| {
            e.queue.timeouts as f64
        }),
    ];
    for (name, kind, help, value) in gauges {
        head(out, name, kind, help);
        for group in &groups {
            for e in &group.endpoints {
                let (upstream, endpoint) = (label(&group.name), label(&e.endpoint));
                let _ = writeln!(out, "{name}{{upstream=\"{upstream}\",endpoint=\"{endpoint}\"}} {}", value(e));
            }
        }
    }
    head(out, "sluice_upstream_retries_total", "counter", "Retries and hedges made.");
    for group in &groups {
        let _ =
            writeln!(out, "sluice_upstream_retries_total{{upstream=\"{}\"}} {}", label(&group.name), group.retries.0);
    }
    head(out, "sluice_upstream_retry_budget_refusals_total", "counter", "Retries the retry budget refused.");
    for group in &groups {
        let (upstream, refused) = (label(&group.name), group.retries.1);
        let _ = writeln!(out, "sluice_upstream_retry_budget_refusals_total{{upstream=\"{upstream}\"}} {refused}");
    }
}

fn cache(out: &mut String, state: &AdminState) {
    let Some(cache) = &state.process.cache else { return };
    let s = &cache.stats;
    for (name, help, counter) in [
        ("sluice_cache_hits_total", "Answered from a fresh stored response.", &s.hits),
        ("sluice_cache_misses_total", "Fetched from the origin.", &s.misses),
        ("sluice_cache_stale_total", "Answered stale (stale-while-revalidate, stale-if-error).", &s.stale),
        ("sluice_cache_coalesced_total", "Answered from another request's fetch.", &s.coalesced),
        ("sluice_cache_revalidated_total", "Refreshed by a 304.", &s.revalidated),
        ("sluice_cache_stored_total", "Responses stored.", &s.stored),
        ("sluice_cache_shared_hits_total", "Found in the shared tier (Redis or memcached).", &s.shared_hits),
    ] {
        head(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(Relaxed));
    }
    head(out, "sluice_cache_shared_errors_total", "counter", "Shared tier operations that failed or timed out.");
    let _ = writeln!(out, "sluice_cache_shared_errors_total {}", cache.shared_errors());
    let (bytes, entries) = cache.memory_use();
    head(out, "sluice_cache_memory_bytes", "gauge", "Bytes held by the memory tier.");
    let _ = writeln!(out, "sluice_cache_memory_bytes {bytes}");
    head(out, "sluice_cache_entries", "gauge", "Keys in the memory tier.");
    let _ = writeln!(out, "sluice_cache_entries {entries}");
}

fn adaptive(out: &mut String, groups: &[super::gather::GroupView]) {
    let limited: Vec<_> = groups.iter().filter_map(|g| g.adaptive.map(|a| (label(&g.name), a))).collect();
    if limited.is_empty() {
        return;
    }
    head(out, "sluice_upstream_adaptive_limit", "gauge", "The group's adaptive concurrency limit.");
    for (upstream, (limit, _)) in &limited {
        let _ = writeln!(out, "sluice_upstream_adaptive_limit{{upstream=\"{upstream}\"}} {limit}");
    }
    head(out, "sluice_upstream_adaptive_in_flight", "gauge", "Requests holding a place under the adaptive limit.");
    for (upstream, (_, in_flight)) in &limited {
        let _ = writeln!(out, "sluice_upstream_adaptive_in_flight{{upstream=\"{upstream}\"}} {in_flight}");
    }
}

fn rate_limits(out: &mut String, state: &AdminState) {
    let policies = state.process.limits.rates.states();
    if policies.is_empty() {
        return;
    }
    head(out, "sluice_rate_limit_decisions_total", "counter", "Rate-limit decisions by policy and result.");
    for (name, policy) in &policies {
        let s = &policy.stats;
        for (result, counter) in [("admitted", &s.admitted), ("refused", &s.refused)] {
            let line = format!("sluice_rate_limit_decisions_total{{policy=\"{}\",result=\"{result}\"}}", label(name));
            let _ = writeln!(out, "{line} {}", counter.load(Relaxed));
        }
    }
    head(
        out,
        "sluice_rate_limit_store_fallbacks_total",
        "counter",
        "Global decisions Redis did not make in time, made by on_store_error instead.",
    );
    for (name, policy) in &policies {
        let fallbacks = policy.stats.store_fallbacks.load(Relaxed);
        let _ = writeln!(out, "sluice_rate_limit_store_fallbacks_total{{policy=\"{}\"}} {fallbacks}", label(name));
    }
    head(
        out,
        "sluice_rate_limit_store_errors_total",
        "counter",
        "Redis operations of global rate limits that failed or timed out.",
    );
    let _ = writeln!(out, "sluice_rate_limit_store_errors_total {}", state.process.limits.rates.store_errors());
}

fn spans(out: &mut String, state: &AdminState) {
    let Some(spans) = &state.process.spans else { return };
    let s = &spans.stats;
    head(
        out,
        "sluice_trace_spans_total",
        "counter",
        "Spans sent to the OTLP collector (exported), dropped with a full queue (dropped), or lost with an export that failed (failed).",
    );
    for (result, counter) in [("exported", &s.exported), ("dropped", &s.dropped), ("failed", &s.failed)] {
        let _ = writeln!(out, "sluice_trace_spans_total{{result=\"{result}\"}} {}", counter.load(Relaxed));
    }
}
