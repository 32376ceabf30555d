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
    /// Successful (2xx) responses per second: goodput.
    pub rate: f64,
    /// Of the responses (a refusal answered 503 is one).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Over every request, a failed or refused one counted as slower than any answer:
    /// None (shown "fails") when more than 1% of the requests failed.
    #[serde(default)]
    pub p99_all_ms: Option<f64>,
    /// Requests made (answered or not).
    #[serde(default)]
    pub requests: u64,
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

/// The p99 of every request, a failed or refused one counted as slower than any
/// answer: the answers' p99 while at most 1% failed (an estimate from their own
/// percentile, slightly low), else None.
pub fn p99_over_all(requests: u64, failed: u64, p99_of_answers: f64) -> Option<f64> {
    if requests == 0 || failed as f64 > requests as f64 * 0.01 {
        return None;
    }
    Some(p99_of_answers)
}

fn shown_ms(value: Option<f64>) -> String {
    value.map_or("fails".to_string(), |v| format!("{v:.2}"))
}

/// The results as a table, ending with the verdict.
pub fn table(results: &Results) -> String {
    let mut out = format!(
        "{:<22} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8}  failures\n",
        "model", "conns", "2xx/s", "p50 ms", "p99 all", "KiB/conn", "threads"
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
            "{:<22} {:>7} {:>10.0} {:>9.2} {:>9} {:>9.2} {:>8}  {failures}",
            row.model.name(),
            conns,
            row.rate,
            row.p50_ms,
            shown_ms(row.p99_all_ms),
            row.kib_per_connection,
            row.threads
        );
    }
    if results.rows.iter().any(|r| r.connections < r.asked) {
        let _ = writeln!(out, "* capped by the file descriptor limit ({})", results.fd_limit);
    }
    let _ = writeln!(
        out,
        "{:.1} s per row; thread pool: {} threads, queue {}; memory is peak RSS over the idle baseline, per \
         connection driven; p99 all counts every request, a failed or refused one as slower than any answer \
         (fails: more than 1% failed)",
        results.duration_s, results.pool.threads, results.pool.queue
    );
    out.push('\n');
    for line in verdict(results) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The answer to "a thread per call, a thread pool, or an event loop?", from the
/// measured rows at the most connections measured: the model with the most goodput,
/// then each other model against it (goodput, memory, failures).
pub fn verdict(results: &Results) -> Vec<String> {
    let Some(level) = results.rows.iter().map(|r| r.connections).max() else { return Vec::new() };
    let rows: Vec<&Row> = results.rows.iter().filter(|r| r.connections == level).collect();
    let Some(best) = rows.iter().copied().max_by(|a, b| a.rate.total_cmp(&b.rate)) else { return Vec::new() };
    let describe = |row: &Row| {
        let share = if row.requests == 0 { 0.0 } else { row.failed_requests as f64 / row.requests as f64 * 100.0 };
        let failed = if share > 1.0 {
            format!(", {share:.0}% of {} requests failed or refused", row.requests)
        } else {
            String::new()
        };
        let p99 = match row.p99_all_ms {
            Some(ms) => format!("p99 {ms:.2} ms over all requests"),
            None => "no p99 (over 1% of requests failed)".to_string(),
        };
        format!(
            "{} {:.0} 2xx/s, {p99}, {:.1} KiB per connection{failed}",
            row.model.name(),
            row.rate,
            row.kib_per_connection
        )
    };
    let mut lines = vec![format!("Verdict, on this machine at {level} connections: {}.", describe(best))];
    for row in rows.iter().filter(|r| r.model != best.model) {
        let times = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        lines.push(format!(
            "  {} served {:.1}x the goodput of {} with {:.1}x its memory per connection ({}).",
            best.model.name(),
            times(best.rate, row.rate),
            row.model.name(),
            times(best.kib_per_connection, row.kib_per_connection),
            describe(row)
        ));
    }
    lines
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
    let verdict = verdict(results);
    let height = PANEL_H + 90.0 + 16.0 * verdict.len() as f64 + 10.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    // Failed rows' p99 is drawn at the top of the axis and labelled: it is worse than
    // any answer.
    let panels: [(&str, Metric, bool); 3] = [
        ("successful responses/s", |r| r.rate, false),
        ("p99 over all requests (ms, log)", |r| r.p99_all_ms.unwrap_or(f64::INFINITY), true),
        ("memory per connection (KiB, log)", |r| r.kib_per_connection, true),
    ];
    for (i, (title, value, log)) in panels.iter().enumerate() {
        let x0 = 20.0 + i as f64 * (PANEL_W + 40.0) + 30.0;
        panel(&mut out, x0, title, *value, *log, results, &models, &levels);
    }
    for (i, line) in verdict.iter().enumerate() {
        let y = PANEL_H + 100.0 + 16.0 * i as f64;
        let _ =
            writeln!(out, "<text x=\"20\" y=\"{y}\">{}</text>", line.trim().replace('&', "&amp;").replace('<', "&lt;"));
    }
    for (i, model) in models.iter().enumerate() {
        let x = 50.0 + i as f64 * 180.0;
        let y = PANEL_H + 80.0;
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

/// One panel of bars; on a log axis (values spanning decades) the bars start at a
/// tenth of the smallest value. An infinite value (a p99 of failed requests) is a bar
/// to the top, labelled.
#[allow(clippy::too_many_arguments)] // one call site, each argument a part of the panel
fn panel(
    out: &mut String,
    x0: f64,
    title: &str,
    value: Metric,
    log: bool,
    results: &Results,
    models: &[Model],
    levels: &[usize],
) {
    let top = 40.0;
    let finite = results.rows.iter().map(value).filter(|v| v.is_finite() && *v > 0.0);
    let max = finite.clone().fold(0.0f64, f64::max).max(f64::MIN_POSITIVE);
    let floor = finite.fold(f64::INFINITY, f64::min).min(max) / 10.0;
    let height = |v: f64| -> f64 {
        if !v.is_finite() {
            return PANEL_H;
        }
        if log {
            if v <= floor {
                return 0.0;
            }
            ((v / floor).log10() / (max / floor).log10().max(f64::MIN_POSITIVE) * PANEL_H).min(PANEL_H)
        } else {
            v / max * PANEL_H
        }
    };
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
            let h = height(value(row));
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
            if !value(row).is_finite() {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">fails</text>",
                    gx + m as f64 * bar_w,
                    top - 2.0 + 10.0
                );
            }
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{level} conns</text>",
            gx + (group_w - 10.0) / 2.0,
            top + PANEL_H + 16.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: Model, connections: usize, rate: f64, kib: f64, requests: u64, failed: u64) -> Row {
        Row {
            model,
            connections,
            asked: connections,
            rate,
            p50_ms: 1.0,
            p99_ms: 2.0,
            p99_all_ms: p99_over_all(requests, failed, 2.0),
            requests,
            kib_per_connection: kib,
            rss_kib: 0,
            threads: 1,
            responses: requests,
            failed_requests: failed,
            failures: BTreeMap::new(),
        }
    }

    #[test]
    fn refusals_count_in_the_p99_and_the_verdict_says_what_was_measured() {
        assert_eq!(p99_over_all(1000, 10, 2.0), Some(2.0), "1% failed: still an answer's p99");
        assert_eq!(p99_over_all(1000, 11, 2.0), None, "more than 1%: the p99 is a failure");
        let results = Results {
            fd_limit: 20_000,
            duration_s: 3.0,
            pool: PoolSize { threads: 200, queue: 100 },
            rows: vec![
                row(Model::ThreadPool, 100, 900.0, 30.0, 2700, 0),
                row(Model::ThreadPerConnection, 10_000, 10_000.0, 24.0, 30_000, 0),
                row(Model::ThreadPool, 10_000, 1_000.0, 2.0, 28_000, 25_069),
                row(Model::PerCore, 10_000, 40_000.0, 2.4, 120_000, 0),
            ],
        };
        let verdict = verdict(&results);
        assert!(
            verdict[0].starts_with("Verdict, on this machine at 10000 connections: per-core 40000 2xx/s"),
            "{verdict:?}"
        );
        let pool = verdict.iter().find(|l| l.contains("thread-pool")).expect("the pool's line");
        assert!(
            pool.contains("40.0x the goodput of thread-pool")
                && pool.contains("no p99 (over 1% of requests failed)")
                && pool.contains("90% of 28000"),
            "{pool}"
        );
        let threads = verdict.iter().find(|l| l.contains("thread-per-connection")).expect("its line");
        assert!(threads.contains("4.0x the goodput of thread-per-connection with 0.1x its memory"), "{threads}");
        let table = table(&results);
        assert!(table.contains("fails") && table.contains("Verdict"), "{table}");
        let chart = svg(&results);
        assert!(chart.contains("Verdict, on this machine") && chart.contains(">fails</text>"), "{chart}");
        assert!(chart.contains("(ms, log)"));
    }
}
