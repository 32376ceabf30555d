//! The lab's results: a table for people, JSON for tools, an SVG chart for both.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::models::{Model, PoolSize};

/// Every measurement of one lab run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    /// This process's file descriptor limit, which caps the connection counts.
    pub fd_limit: u64,
    pub duration_s: f64,
    pub pool: PoolSize,
    pub rows: Vec<Row>,
}

/// One model at one connection count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub model: Model,
    /// Connections driven (`asked`, capped by the FD limit).
    pub connections: usize,
    pub asked: usize,
    /// Successful (2xx) responses per second.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Peak resident memory over the idle baseline, per connection.
    pub kib_per_connection: f64,
    /// Peak resident memory of the model's process.
    pub rss_kib: u64,
    /// Peak threads of the model's process.
    pub threads: u64,
    pub responses: u64,
    /// Requests without a 2xx/3xx response.
    pub failed_requests: u64,
    /// Failures by kind ("timeout", "reset", "status 503"...).
    pub failures: BTreeMap<String, u64>,
}

/// The results as a table.
pub fn table(results: &Results) -> String {
    let mut out = format!(
        "{:<22} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8}  failures\n",
        "model", "conns", "2xx/s", "p50 ms", "p99 ms", "KiB/conn", "threads"
    );
    for row in &results.rows {
        let conns =
            if row.connections < row.asked { format!("{}*", row.connections) } else { row.connections.to_string() };
        let failures = if row.failures.is_empty() {
            "-".to_string()
        } else {
            row.failures.iter().map(|(kind, n)| format!("{kind}: {n}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8}  {failures}",
            row.model.name(),
            conns,
            row.rate,
            row.p50_ms,
            row.p99_ms,
            row.kib_per_connection,
            row.threads
        );
    }
    if results.rows.iter().any(|r| r.connections < r.asked) {
        let _ = writeln!(out, "* capped by the file descriptor limit ({})", results.fd_limit);
    }
    let _ = writeln!(
        out,
        "{:.1} s per row; thread pool: {} threads, queue {}; memory is peak RSS over the idle baseline",
        results.duration_s, results.pool.threads, results.pool.queue
    );
    out
}

/// What a chart shows of a row.
type Metric = fn(&Row) -> f64;

const COLORS: [&str; 4] = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"];
const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 220.0;

/// Three bar charts side by side (2xx responses/s, p99, KiB per connection): a group of bars
/// per connection count, a bar per model.
pub fn svg(results: &Results) -> String {
    let models: Vec<Model> = Model::ALL.into_iter().filter(|m| results.rows.iter().any(|r| r.model == *m)).collect();
    let mut levels: Vec<usize> = results.rows.iter().map(|r| r.connections).collect();
    levels.sort_unstable();
    levels.dedup();
    let width = 3.0 * (PANEL_W + 40.0) + 20.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        PANEL_H + 110.0
    );
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let panels: [(&str, Metric); 3] = [
        ("successful responses/s", |r| r.rate),
        ("p99 latency (ms)", |r| r.p99_ms),
        ("memory per connection (KiB)", |r| r.kib_per_connection),
    ];
    for (i, (title, value)) in panels.iter().enumerate() {
        let x0 = 20.0 + i as f64 * (PANEL_W + 40.0) + 30.0;
        panel(&mut out, x0, title, *value, results, &models, &levels);
    }
    for (i, model) in models.iter().enumerate() {
        let x = 50.0 + i as f64 * 180.0;
        let y = PANEL_H + 90.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 10.0,
            color(*model),
            x + 16.0,
            model.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn color(model: Model) -> &'static str {
    COLORS[Model::ALL.iter().position(|m| *m == model).unwrap_or(0)]
}

fn panel(out: &mut String, x0: f64, title: &str, value: Metric, results: &Results, models: &[Model], levels: &[usize]) {
    let top = 40.0;
    let max = results.rows.iter().map(value).fold(0.0f64, f64::max).max(f64::MIN_POSITIVE);
    let _ = writeln!(out, "<text x=\"{x0}\" y=\"24\" font-size=\"13\" font-weight=\"bold\">{title}</text>");
    let _ = writeln!(
        out,
        "<line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>",
        top + PANEL_H,
        x0 + PANEL_W,
        top + PANEL_H
    );
    let _ = writeln!(out, "<text x=\"{x0}\" y=\"{}\" fill=\"#444\">max {:.1}</text>", top - 4.0, max);
    let group_w = PANEL_W / levels.len().max(1) as f64;
    let bar_w = (group_w - 10.0) / models.len().max(1) as f64;
    for (g, level) in levels.iter().enumerate() {
        let gx = x0 + g as f64 * group_w + 5.0;
        for (m, model) in models.iter().enumerate() {
            let Some(row) = results.rows.iter().find(|r| r.model == *model && r.connections == *level) else {
                continue;
            };
            let h = value(row) / max * PANEL_H;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} at {}: {:.2}</title></rect>",
                gx + m as f64 * bar_w,
                top + PANEL_H - h,
                bar_w.max(1.0) - 1.0,
                h,
                color(*model),
                model.name(),
                level,
                value(row)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{level} conns</text>",
            gx + (group_w - 10.0) / 2.0,
            top + PANEL_H + 16.0
        );
    }
}
