//! `--plot FILE.svg`: the latency percentile curve and throughput per second, as one SVG a
//! browser opens. Written by hand: two line charts are a page of SVG, and a plotting crate
//! would pull in font and image stacks for it.

use std::fmt::Write as _;

use super::Report;

const WIDTH: f64 = 820.0;
const CHART_HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 45.0;

struct Chart<'a> {
    top: f64,
    title: String,
    /// Joined with straight lines (a curve), or drawn as steps over each unit (per second).
    steps: bool,
    y_label: &'a str,
    /// Points in chart units.
    points: Vec<(f64, f64)>,
    x_max: f64,
    x_ticks: Vec<(f64, String)>,
    color: &'a str,
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    // A third chart when the report has each second's p99 (reports from before did not).
    let charts = if report.latency_per_second.iter().any(|s| s.p99_ms.is_some()) { 3.0 } else { 2.0 };
    let height = charts * (CHART_HEIGHT + 70.0) + 40.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let s = &report.settings;
    let subtitle = format!(
        "{} · {} connections · {} · {} responses/s · {} responses, {} errors · {}",
        s.protocol,
        s.connections,
        s.mode,
        report.rate.round(),
        report.responses,
        report.errors,
        s.requests.first().map_or("", String::as_str)
    );
    let _ = writeln!(out, r##"<text x="{LEFT}" y="18" fill="#555">{}</text>"##, escape(&subtitle));
    // Latency by percentile, x on the "nines" scale: x = log10(1 / (1 - q)).
    let latency = Chart {
        top: 60.0,
        title: format!(
            "Latency by percentile: p50 {} · p99 {} · p99.9 {} · max {}",
            super::format_ms(report.latency_ms.p50),
            super::format_ms(report.latency_ms.p99),
            super::format_ms(report.latency_ms.p99_9),
            super::format_ms(report.latency_ms.max)
        ),
        steps: false,
        y_label: "ms",
        points: report.percentiles.iter().map(|[p, ms]| (nines(*p / 100.0), *ms)).collect(),
        x_max: 5.0,
        x_ticks: ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
            .iter()
            .enumerate()
            .map(|(i, t)| (i as f64, t.to_string()))
            .collect(),
        color: "#c0392b",
    };
    draw(&mut out, &latency);
    // Whole seconds only (the last, partial one would look like a drop), unless that is all.
    let whole = (report.elapsed_s.floor() as usize).max(1);
    let shown: Vec<_> = report.per_second.iter().take(whole).collect();
    let seconds = shown.len().max(1) as f64;
    let throughput = Chart {
        top: 60.0 + CHART_HEIGHT + 70.0,
        title: "Responses per second, over the run".to_string(),
        steps: true,
        y_label: "responses/s",
        points: shown.iter().map(|p| (p.second as f64, p.responses as f64)).collect(),
        x_max: seconds,
        x_ticks: second_ticks(seconds),
        color: "#2e86c1",
    };
    draw(&mut out, &throughput);
    // p99 over time: where a stall or a slow build-up shows, which the percentile curve
    // of the whole run hides. Seconds count from the start (warm-up included).
    let over_time: Vec<(f64, f64)> =
        report.latency_per_second.iter().filter_map(|s| Some((s.second as f64, s.p99_ms?))).collect();
    if !over_time.is_empty() {
        let last = over_time.iter().map(|p| p.0).fold(1.0, f64::max);
        let p99_chart = Chart {
            top: 60.0 + 2.0 * (CHART_HEIGHT + 70.0),
            title: "p99 latency per second, over the run".to_string(),
            steps: true,
            y_label: "ms",
            points: over_time,
            x_max: last,
            x_ticks: second_ticks(last),
            color: "#8e44ad",
        };
        draw(&mut out, &p99_chart);
    }
    out.push_str("</svg>\n");
    out
}

/// Ticks for a time axis of `seconds`: about ten, on whole seconds.
fn second_ticks(seconds: f64) -> Vec<(f64, String)> {
    let step = (seconds / 10.0).ceil().max(1.0);
    (0..=(seconds / step) as u64).map(|i| (i as f64 * step, format!("{}s", (i as f64 * step) as u64))).collect()
}

/// The "nines" of a quantile, capped at five (99.999%).
fn nines(q: f64) -> f64 {
    if q >= 0.99999 {
        5.0
    } else {
        (1.0 / (1.0 - q)).log10()
    }
}

fn draw(out: &mut String, chart: &Chart) {
    let (top, bottom) = (chart.top, chart.top + CHART_HEIGHT);
    let (left, right) = (LEFT, WIDTH - RIGHT);
    // 5% headroom so a flat line at the maximum does not hide in the frame.
    let y_max = nice_ceiling(1.05 * chart.points.iter().map(|p| p.1).fold(0.0, f64::max));
    let x = |v: f64| left + (v / chart.x_max.max(1e-9)) * (right - left);
    let y = |v: f64| bottom - (v / y_max) * (bottom - top);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top - 14.0,
        chart.title
    );
    let divisions = grid_divisions(y_max);
    for i in 0..=divisions {
        let value = y_max * i as f64 / divisions as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{right}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            y(value),
            left - 6.0,
            y(value) + 4.0,
            short(value)
        );
    }
    for (value, label) in &chart.x_ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{bottom}" stroke="#eee"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
            x(*value),
            bottom + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
        chart.y_label
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{}" height="{CHART_HEIGHT}" fill="none" stroke="#888"/>"##,
        right - left
    );
    let path: Vec<String> = if chart.steps {
        // Each point covers the unit before it: second 3 is the time from 2 s to 3 s.
        chart
            .points
            .iter()
            .flat_map(|(px, py)| [(px - 1.0, *py), (*px, *py)])
            .map(|(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect()
    } else {
        chart.points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py))).collect()
    };
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
        chart.color,
        path.join(" ")
    );
}

/// A round number at or above `v` for the top of an axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= v).unwrap_or(10.0 * power)
}

/// Grid lines that land on round values for a top of 1, 2 or 5 × 10ⁿ.
fn grid_divisions(top: f64) -> u32 {
    let mantissa = top / 10f64.powf(top.log10().floor());
    if (mantissa - 2.0).abs() < 1e-9 {
        4
    } else {
        5
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(65_432.0), 100_000.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9 && nines(1.0) == 5.0 && nines(0.0) == 0.0);
    }
}
