//! The status page's last five minutes, kept in sluice rather than in a browser tab: a
//! task samples the request totals every second and keeps one point per second
//! (requests per second, p50 and p99 of that second, status classes per second), so
//! a page opened now shows what happened before it was opened, and a reload loses
//! nothing. 300 points of 7 numbers: 17 KiB. Each endpoint's response times are
//! sampled too, for its p50 and p99 over the last minute (61 samples of 15 counts each).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::AdminState;
use crate::outcome::series::BUCKETS;

/// Points kept: one a second for five minutes.
pub(super) const POINTS: usize = 300;

/// One second of traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub(super) time_ms: u64,
    pub(super) rps: f64,
    /// Seconds; None when no request ended in that second.
    pub(super) p50: Option<f64>,
    pub(super) p99: Option<f64>,
    pub(super) ok: f64,
    pub(super) client_errors: f64,
    pub(super) server_errors: f64,
}

/// The totals a point is the difference of.
#[derive(Clone)]
struct Totals {
    time_ms: u64,
    requests: u64,
    by_class: [u64; 6],
    latency: Vec<u64>,
}

/// Seconds of per-endpoint samples kept: one minute, and the sample it starts from.
const ENDPOINT_SAMPLES: usize = 61;

/// Each endpoint's cumulative response time counts (`group\nendpoint` → per bucket).
type EndpointCounts = std::collections::HashMap<String, Vec<u64>>;

#[derive(Default)]
pub(super) struct History {
    points: Mutex<VecDeque<Point>>,
    endpoints: Mutex<VecDeque<EndpointCounts>>,
}

impl History {
    /// The points, oldest first, as JSON arrays `[time_ms, rps, p50_s, p99_s, ok, 4xx, 5xx]`
    /// (null for a percentile of a second without requests).
    pub(super) fn json(&self) -> String {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(points.len() * 48 + 2);
        out.push('[');
        let number = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.6}"));
        for (i, p) in points.iter().enumerate() {
            let _ = write!(
                out,
                "{}[{},{:.3},{},{},{:.3},{:.3},{:.3}]",
                if i == 0 { "" } else { "," },
                p.time_ms,
                p.rps,
                number(p.p50),
                number(p.p99),
                p.ok,
                p.client_errors,
                p.server_errors
            );
        }
        out.push(']');
        out
    }

    /// An endpoint's p50 and p99 (seconds) over the last minute; None without requests.
    pub(super) fn endpoint_latency(&self, group: &str, endpoint: &str) -> (Option<f64>, Option<f64>) {
        let samples = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{group}\n{endpoint}");
        let (Some(oldest), Some(newest)) = (samples.front(), samples.back()) else { return (None, None) };
        let Some(now) = newest.get(&key) else { return (None, None) };
        let counts: Vec<u64> = match oldest.get(&key) {
            Some(before) => now.iter().zip(before).map(|(n, b)| n.saturating_sub(*b)).collect(),
            None => now.clone(),
        };
        (percentile(&counts, 0.5), percentile(&counts, 0.99))
    }

    fn push_endpoints(&self, counts: EndpointCounts) {
        let mut samples = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == ENDPOINT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(counts);
    }

    fn push(&self, point: Point) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }
}

/// Samples every second until the admin state is gone.
pub(super) fn start(state: &Arc<AdminState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Totals> = None;
        loop {
            tick.tick().await;
            let Some(state) = Weak::upgrade(&state) else { return };
            let now = totals(&state);
            if let Some(before) = &last {
                state.history.push(point(before, &now));
            }
            last = Some(now);
            state.history.push_endpoints(endpoint_counts(&state));
        }
    });
}

fn endpoint_counts(state: &AdminState) -> EndpointCounts {
    let mut counts = EndpointCounts::new();
    for group in super::gather::groups(state) {
        for e in &group.endpoints {
            counts.insert(format!("{}\n{}", group.name, e.endpoint), e.latency_counts.to_vec());
        }
    }
    counts
}

fn totals(state: &AdminState) -> Totals {
    let (tally, series) = super::gather::requests(state);
    let latency = super::gather::total_latency(&series);
    let mut by_class = [0u64; 6];
    for (class, count) in tally.by_class.iter().enumerate().take(6) {
        by_class[class] = count.load(std::sync::atomic::Ordering::Relaxed);
    }
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Totals { time_ms, requests: tally.requests(), by_class, latency: latency.buckets.to_vec() }
}

/// The second between two totals.
fn point(before: &Totals, now: &Totals) -> Point {
    let seconds = (now.time_ms.saturating_sub(before.time_ms) as f64 / 1000.0).max(0.001);
    let per_second = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
    let counts: Vec<u64> = now.latency.iter().zip(&before.latency).map(|(n, b)| n.saturating_sub(*b)).collect();
    Point {
        time_ms: now.time_ms,
        rps: per_second(before.requests, now.requests),
        p50: percentile(&counts, 0.5),
        p99: percentile(&counts, 0.99),
        ok: per_second(before.by_class[2], now.by_class[2]) + per_second(before.by_class[3], now.by_class[3]),
        client_errors: per_second(before.by_class[4], now.by_class[4]),
        server_errors: per_second(before.by_class[5], now.by_class[5]),
    }
}

/// The upper bound (seconds) of the bucket holding quantile `q`; beyond the last
/// bound, the last bound (the page shows it as "over").
fn percentile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += count;
        if seen as f64 >= total as f64 * q {
            return Some(BUCKETS.get(i).copied().unwrap_or(BUCKETS[BUCKETS.len() - 1]));
        }
    }
    BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_the_difference_of_two_totals_and_five_minutes_are_kept() {
        let zero = Totals { time_ms: 0, requests: 0, by_class: [0; 6], latency: vec![0; BUCKETS.len() + 1] };
        let mut later = zero.clone();
        later.time_ms = 1000;
        later.requests = 100;
        later.by_class = [0, 0, 90, 0, 5, 5];
        later.latency[0] = 98;
        later.latency[BUCKETS.len() - 1] = 2;
        let p = point(&zero, &later);
        assert_eq!((p.rps, p.ok, p.client_errors, p.server_errors), (100.0, 90.0, 5.0, 5.0));
        assert_eq!(p.p50, Some(BUCKETS[0]));
        assert_eq!(p.p99, Some(BUCKETS[BUCKETS.len() - 1]));
        assert_eq!(point(&later, &later).p50, None, "a quiet second has no percentile");
        let history = History::default();
        for i in 0..(POINTS + 10) {
            history.push(Point { time_ms: i as u64, ..p });
        }
        let json = history.json();
        assert_eq!(json.matches('[').count(), POINTS + 1);
        assert!(json.starts_with("[[10,100.000,"), "{}", &json[..40]);
    }
}
