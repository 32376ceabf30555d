//! The final report as a table for people.

use std::fmt::Write as _;

use super::{format_ms, Report};
use crate::progress::thousands;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.settings;
    let protocol = match (s.protocol.as_str(), s.keepalive) {
        ("HTTP/2", _) => format!("HTTP/2, {} streams per connection", s.streams),
        (p, true) => format!("{p} keep-alive"),
        (p, false) => format!("{p}, a new connection per request"),
    };
    let mode = match (&s.rate_profile, s.rate) {
        (Some(profile), _) => format!("open loop at {profile} req/s"),
        (None, Some(rate)) => format!("open loop at {} req/s", thousands(rate.round() as u64)),
        (None, None) => "closed loop".to_string(),
    };
    let length = match (s.duration_s, s.count) {
        (Some(d), _) => format!("{d}s"),
        (None, Some(n)) => format!("{} requests", thousands(n)),
        (None, None) => String::new(),
    };
    let warmup = if s.warmup_s > 0.0 { format!(" after {}s warm-up", s.warmup_s) } else { String::new() };
    let (connections, threads) = (counted(s.connections, "connection"), counted(s.threads, "thread"));
    let _ = writeln!(out, "sluice bench: {protocol}, {connections} on {threads}, {mode}, {length}{warmup}");
    for request in s.requests.iter().take(5) {
        let _ = writeln!(out, "  {request}");
    }
    if s.requests.len() > 5 {
        let _ = writeln!(out, "  ... and {} more", s.requests.len() - 5);
    }
    if report.interrupted {
        let _ = writeln!(
            out,
            "  (interrupted by Ctrl-C after {:.2}s: the figures cover the part that ran)",
            report.elapsed_s
        );
    }
    out.push('\n');
    let mib_per_s = report.body_bytes as f64 / report.elapsed_s.max(1e-9) / (1024.0 * 1024.0);
    row(
        &mut out,
        "requests",
        &format!(
            "{} in {:.2}s, {} responses/s, {mib_per_s:.1} MiB/s of bodies",
            thousands(report.requests),
            report.elapsed_s,
            thousands(report.rate.round() as u64)
        ),
    );
    // Exact codes (200, 404, 503...); reports from before they were counted have classes.
    let by_code = if report.status_codes.is_empty() { &report.status } else { &report.status_codes };
    let status: Vec<String> = by_code.iter().map(|(code, n)| format!("{code} {}", thousands(*n))).collect();
    row(&mut out, "responses", &if status.is_empty() { "none".to_string() } else { status.join("   ") });
    // A 5xx answer is a failed request as much as a reset is (--max-error-rate counts both).
    let mut failures: Vec<String> =
        report.failures.iter().map(|(kind, n)| format!("{kind} {}", thousands(*n))).collect();
    if report.status_class(5) > 0 {
        failures.insert(0, format!("5xx responses {}", thousands(report.status_class(5))));
    }
    row(&mut out, "failed", &if failures.is_empty() { "none".to_string() } else { failures.join("   ") });
    for (i, url) in report.per_url.iter().enumerate() {
        let p99 = url.p99_ms.map_or("-".to_string(), format_ms);
        let line = format!(
            "{}: {} responses, {} failed, p99 {p99}",
            url.request,
            thousands(url.responses),
            thousands(url.failed)
        );
        row(&mut out, if i == 0 { "per URL" } else { "" }, &line);
    }
    for (kind, messages) in &report.failure_samples {
        for message in messages {
            row(&mut out, "", &format!("{kind}: {message}"));
        }
    }
    if report.responses == 0 {
        row(&mut out, "latency", "no responses to measure");
    } else {
        let _ = writeln!(
            out,
            "  {:<13}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "latency", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        latency_row(&mut out, "", &report.latency_ms);
        // A limit refused some: the admitted requests' latency apart from the refusals'.
        if let (Some(admitted), Some(refused)) = (&report.admitted_latency_ms, &report.refused_latency_ms) {
            latency_row(&mut out, "admitted", admitted);
            latency_row(&mut out, "429/503", refused);
        }
    }
    if let Some(line) = per_second_line(report) {
        row(&mut out, "per second", &line);
    }
    if s.rate.is_some() && report.late_requests > 0 {
        let share = 100.0 * report.late_requests as f64 / report.requests.max(1) as f64;
        row(
            &mut out,
            "sent late",
            &format!(
                "{} ({share:.1}%): every connection was busy when they were due; the wait counts as latency \
                 (more -c if the server takes more at once)",
                thousands(report.late_requests)
            ),
        );
    }
    let c = &report.connections;
    row(
        &mut out,
        "connections",
        &format!(
            "{} asked for, {} open at most, {} opened in all (file descriptor limit {})",
            thousands(c.requested as u64),
            thousands(c.peak_open),
            thousands(c.opened),
            thousands(c.fd_limit)
        ),
    );
    out
}

/// "1 thread", "2 threads".
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n as u64))
    }
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "  {name:<13}{value}");
}

/// Min / median / max responses per whole second (the last, partial second left out).
fn latency_row(out: &mut String, label: &str, l: &super::Latency) {
    let _ = writeln!(
        out,
        "  {:<13}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        label,
        format_ms(l.p50),
        format_ms(l.p90),
        format_ms(l.p99),
        format_ms(l.p99_9),
        format_ms(l.max),
        format_ms(l.mean)
    );
}

fn per_second_line(report: &Report) -> Option<String> {
    // A run of "3 s" measures 2.99 s or 3.01 s: its last second counts as whole when
    // at least 95% of it was measured.
    let whole = (report.elapsed_s + 0.05).floor() as usize;
    let mut counts: Vec<u64> = report.per_second.iter().take(whole).map(|s| s.responses).collect();
    if counts.len() < 2 {
        return None;
    }
    counts.sort_unstable();
    Some(format!(
        "min {}   median {}   max {}   (over {} whole seconds)",
        thousands(counts[0]),
        thousands(counts[counts.len() / 2]),
        thousands(counts[counts.len() - 1]),
        counts.len()
    ))
}
