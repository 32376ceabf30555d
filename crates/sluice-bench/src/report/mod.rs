//! The result of a run, as data: built once from the merged recorder, then rendered as a
//! table ([`table`]), JSON (serde), an SVG plot ([`svg`]) or compared with another ([`compare`]).

pub mod compare;
pub mod svg;
pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Outcome;
use crate::failure::Failure;
use crate::plan::{Plan, Stop};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub settings: Settings,
    /// Seconds from the end of the warm-up to the last response.
    pub elapsed_s: f64,
    /// Responses plus failures.
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    /// Responses per second.
    pub rate: f64,
    pub body_bytes: u64,
    /// Responses by status class ("2xx", ...).
    pub status: BTreeMap<String, u64>,
    /// Responses by exact status code ("200", "404", "503"...).
    #[serde(default)]
    pub status_codes: BTreeMap<String, u64>,
    /// Requests that failed: no response (`errors`) or a status outside 200-399, as k6
    /// and vegeta count them.
    #[serde(default)]
    pub failed_requests: u64,
    /// Failures by kind ("refused", "timeout", ...); kinds that did not happen are left out.
    pub failures: BTreeMap<String, u64>,
    /// A few distinct messages per kind of failure (what the TLS error was, and why).
    #[serde(default)]
    pub failure_samples: BTreeMap<String, Vec<String>>,
    pub latency_ms: Latency,
    /// When a limit refused some (429 or 503): the latency of the others, and of those.
    #[serde(default)]
    pub admitted_latency_ms: Option<Latency>,
    #[serde(default)]
    pub refused_latency_ms: Option<Latency>,
    /// The latency curve: [percentile, milliseconds], from 0 to 100.
    pub percentiles: Vec<[f64; 2]>,
    pub per_second: Vec<SecondPoint>,
    pub connections: Connections,
    pub warmup_requests: u64,
    /// Open loop: requests sent more than 2 ms after they were due because every
    /// connection was busy; their wait is part of their latency.
    #[serde(default)]
    pub late_requests: u64,
    /// Stopped early by Ctrl-C: the figures cover the part that ran.
    #[serde(default)]
    pub interrupted: bool,
    /// When the run started (warm-up included), in seconds since the Unix epoch.
    #[serde(default)]
    pub started_unix_s: f64,
    /// The p99 of each second, warm-up included.
    #[serde(default)]
    pub latency_per_second: Vec<LatencySecond>,
    /// One row per URL when several were given (empty otherwise).
    #[serde(default)]
    pub per_url: Vec<UrlRow>,
}

/// One URL's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlRow {
    /// "GET http://..."; "(URLs 32 and later)" for the shared last row.
    pub request: String,
    pub responses: u64,
    /// No response, or a status outside 200-399.
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub requests: Vec<String>,
    pub protocol: String,
    pub keepalive: bool,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    /// "closed-loop" or "open-loop".
    pub mode: String,
    pub rate: Option<f64>,
    /// A rate that changes over the run, as given ("1000:10000 over 30s"); `rate` is its peak.
    #[serde(default)]
    pub rate_profile: Option<String>,
    pub duration_s: Option<f64>,
    pub count: Option<u64>,
    pub warmup_s: f64,
    pub timeout_s: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    /// The figures of `histogram` (µs) in ms; zeros when it is empty.
    fn of(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            min: ms(histogram.min()),
            mean: histogram.mean() / 1000.0,
            stdev: histogram.stdev() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SecondPoint {
    pub second: u64,
    pub responses: u64,
    pub errors: u64,
}

/// One second of the run (warm-up included, counted from its start) across all threads:
/// the p99 over time, where a stall or a slow build-up shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LatencySecond {
    pub second: u64,
    pub warmup: bool,
    pub responses: u64,
    /// None when the second had no response.
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Connections {
    pub requested: usize,
    /// Connections opened over the run (reconnects included).
    pub opened: u64,
    /// The most open at once (the sum of each thread's peak).
    pub peak_open: u64,
    pub fd_limit: u64,
}

impl Report {
    pub fn build(plan: &Plan, outcome: Outcome, fd_limit: u64) -> Report {
        let recorder = &outcome.recorder;
        let elapsed = if recorder.last_end.is_some() { recorder.elapsed() } else { outcome.wall };
        let elapsed_s = elapsed.as_secs_f64();
        let responses = recorder.responses();
        let errors = recorder.errors();
        let histogram = &recorder.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = Latency::of(histogram);
        let refused = !recorder.refused_latency.is_empty();
        let percentiles = if histogram.is_empty() {
            Vec::new()
        } else {
            curve_quantiles().map(|q| [q * 100.0, ms(histogram.value_at_quantile(q))]).collect()
        };
        let classes = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
        let status =
            classes.iter().zip(recorder.status).filter(|(_, n)| *n > 0).map(|(c, n)| (c.to_string(), n)).collect();
        let status_codes: BTreeMap<String, u64> = recorder
            .codes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| ((i + 100).to_string(), *n))
            .collect();
        let unsuccessful: u64 =
            recorder.codes.iter().enumerate().filter(|(i, _)| !(100..300).contains(i)).map(|(_, n)| n).sum::<u64>()
                + recorder.status[0];
        let failures = Failure::ALL
            .iter()
            .zip(recorder.failures)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f.name().to_string(), n))
            .collect();
        let per_second = recorder
            .per_second
            .iter()
            .enumerate()
            .map(|(i, s)| SecondPoint { second: i as u64 + 1, responses: s.responses, errors: s.errors })
            .collect();
        Report {
            tool: concat!("sluice bench ", env!("CARGO_PKG_VERSION")).to_string(),
            settings: Settings::of(plan),
            elapsed_s,
            requests: responses + errors,
            responses,
            errors,
            rate: if elapsed_s > 0.0 { responses as f64 / elapsed_s } else { 0.0 },
            body_bytes: recorder.body_bytes,
            status,
            status_codes,
            failed_requests: errors + unsuccessful,
            failures,
            failure_samples: {
                let mut samples: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (kind, message) in &recorder.samples {
                    samples.entry(kind.name().to_string()).or_default().push(message.clone());
                }
                samples
            },
            latency_ms: latency,
            admitted_latency_ms: refused.then(|| Latency::of(&recorder.admitted_latency)),
            refused_latency_ms: refused.then(|| Latency::of(&recorder.refused_latency)),
            percentiles,
            per_second,
            connections: Connections {
                requested: plan.connections,
                opened: recorder.connects,
                peak_open: recorder.peak_open,
                fd_limit,
            },
            warmup_requests: recorder.warmup,
            late_requests: recorder.late,
            interrupted: outcome.interrupted,
            started_unix_s: 0.0,
            latency_per_second: Vec::new(),
            per_url: recorder
                .per_url
                .iter()
                .enumerate()
                .map(|(i, counts)| {
                    let last = i + 1 == crate::record::MAX_URL_ROWS && plan.urls.len() > crate::record::MAX_URL_ROWS;
                    let quantile = |q: f64| {
                        (!counts.latency.is_empty()).then(|| counts.latency.value_at_quantile(q) as f64 / 1000.0)
                    };
                    UrlRow {
                        request: if last {
                            format!("(URLs {} and later)", i + 1)
                        } else {
                            plan.urls.get(i).cloned().unwrap_or_default()
                        },
                        responses: counts.responses,
                        failed: counts.failed,
                        p50_ms: quantile(0.5),
                        p99_ms: quantile(0.99),
                    }
                })
                .collect(),
        }
    }

    /// Responses with the given status class (2 for 2xx).
    pub fn status_class(&self, class: u8) -> u64 {
        self.status.get(&format!("{class}xx")).copied().unwrap_or(0)
    }

    /// Why this run should end with a non-zero exit status (`--max-error-rate`,
    /// `--max-p99`, or any failed request when no rate is given); None when it passed.
    pub fn missed(&self, max_error_rate: Option<f64>, max_p99: Option<std::time::Duration>) -> Option<String> {
        let mut missed = Vec::new();
        let share = if self.requests == 0 { 0.0 } else { self.failed_requests as f64 / self.requests as f64 };
        let fivexx = self.status_class(5);
        let why =
            format!("{} 5xx responses, {} without a response", fivexx, self.failed_requests.saturating_sub(fivexx));
        match max_error_rate {
            None if self.failed_requests > 0 => missed.push(format!(
                "{} of {} requests failed ({:.2}%: {why}); allow some with --max-error-rate",
                self.failed_requests,
                self.requests,
                share * 100.0
            )),
            Some(max) if share > max => missed.push(format!(
                "{} of {} requests failed ({:.2}%: {why}), above --max-error-rate {:.2}%",
                self.failed_requests,
                self.requests,
                share * 100.0,
                max * 100.0
            )),
            _ => {}
        }
        if self.requests == 0 {
            missed.push("no request was made".to_string());
        }
        if let Some(max) = max_p99 {
            let limit = max.as_secs_f64() * 1000.0;
            if self.responses == 0 || self.latency_ms.p99 > limit {
                missed.push(format!("p99 {:.2} ms is above --max-p99 {limit:.2} ms", self.latency_ms.p99));
            }
        }
        (!missed.is_empty()).then(|| missed.join("; "))
    }

    pub fn failures_of(&self, kind: Failure) -> u64 {
        self.failures.get(kind.name()).copied().unwrap_or(0)
    }
}

impl Settings {
    fn of(plan: &Plan) -> Settings {
        Settings {
            requests: plan.urls.clone(),
            protocol: if plan.http2 { "HTTP/2" } else { "HTTP/1.1" }.to_string(),
            keepalive: plan.keepalive,
            connections: plan.connections,
            streams: plan.streams,
            threads: plan.threads,
            mode: if plan.rate.is_some() { "open-loop" } else { "closed-loop" }.to_string(),
            rate: plan.rate.as_ref().map(crate::schedule::RateProfile::peak),
            rate_profile: plan.rate.as_ref().filter(|r| r.varies()).map(|r| r.text.clone()),
            duration_s: match plan.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            count: match plan.stop {
                Stop::Count(n) => Some(n),
                Stop::After(_) => None,
            },
            warmup_s: plan.warmup.as_secs_f64(),
            timeout_s: plan.timeout.as_secs_f64(),
        }
    }
}

/// Quantiles for the latency curve, evenly spaced on the "nines" scale: 0, 20.6%, 36.9%,
/// ..., 90%, ..., 99%, ..., 99.999%, then 100%.
fn curve_quantiles() -> impl Iterator<Item = f64> {
    (0..=50).map(|k| 1.0 - 10f64.powf(-(k as f64) / 10.0)).chain(std::iter::once(1.0))
}

/// Milliseconds with as many decimals as make sense: 0.045 ms, 1.24 ms, 12.3 ms, 1234 ms.
pub fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
