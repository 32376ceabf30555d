//! `--compare A.json B.json`: two runs side by side, with B ÷ A for each figure.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::{format_ms, Report};
use crate::progress::thousands;

pub fn compare_files(a: &Path, b: &Path) -> anyhow::Result<String> {
    Ok(compare(&read(a)?, &read(b)?, &a.display().to_string(), &b.display().to_string()))
}

fn read(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a `sluice bench --json` report", path.display()))
}

/// A row of the comparison: name, A's value, B's value, how to show a value.
type Row = (&'static str, f64, f64, fn(f64) -> String);

pub fn compare(a: &Report, b: &Report, a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    for (label, name, report) in [("A", a_name, a), ("B", b_name, b)] {
        let s = &report.settings;
        // HTTP/2 runs multiplex: say how many streams each connection carried.
        let streams = if s.streams > 1 { format!(" × {} streams", s.streams) } else { String::new() };
        let _ = writeln!(
            out,
            "{label}: {name}: {}, {} connections{streams}, {}, {}",
            s.protocol,
            s.connections,
            s.mode,
            s.requests.join(" ")
        );
    }
    out.push('\n');
    let _ = writeln!(out, "  {:<14}{:>14}{:>14}{:>10}", "", "A", "B", "B ÷ A");
    let rows: [Row; 9] = [
        ("responses/s", a.rate, b.rate, |v| thousands(v.round() as u64)),
        ("requests", a.requests as f64, b.requests as f64, |v| thousands(v as u64)),
        ("errors", a.errors as f64, b.errors as f64, |v| thousands(v as u64)),
        ("latency p50", a.latency_ms.p50, b.latency_ms.p50, format_ms),
        ("latency p90", a.latency_ms.p90, b.latency_ms.p90, format_ms),
        ("latency p99", a.latency_ms.p99, b.latency_ms.p99, format_ms),
        ("latency p99.9", a.latency_ms.p99_9, b.latency_ms.p99_9, format_ms),
        ("latency max", a.latency_ms.max, b.latency_ms.max, format_ms),
        ("latency mean", a.latency_ms.mean, b.latency_ms.mean, format_ms),
    ];
    for (name, x, y, show) in rows {
        let ratio = if x > 0.0 { format!("{:.2}", y / x) } else { "-".to_string() };
        let _ = writeln!(out, "  {name:<14}{:>14}{:>14}{ratio:>10}", show(x), show(y));
    }
    out
}
