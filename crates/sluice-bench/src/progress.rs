//! Live progress on stderr while a run goes: a bar in a terminal, one plain line per
//! second otherwise (CI logs, pipes). Each line is one second of all threads merged.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Tick;
use crate::plan::{Plan, Stop};
use crate::record::new_histogram;
use crate::report::format_ms;

pub struct Progress {
    output: Output,
    threads: usize,
    pending: BTreeMap<u64, Second>,
    /// Count mode: requests done so far, for the bar.
    done: u64,
    count_mode: bool,
    /// Each whole second's p99 across all threads, for the report.
    pub seconds: Vec<crate::report::LatencySecond>,
}

enum Output {
    Quiet,
    Lines,
    Bar(ProgressBar),
}

struct Second {
    reported: usize,
    length: std::time::Duration,
    responses: u64,
    errors: u64,
    warmup: bool,
    latency: Histogram<u64>,
}

impl Progress {
    pub fn new(plan: &Plan, quiet: bool) -> Progress {
        let (length, count_mode) = match plan.stop {
            Stop::After(d) => ((plan.warmup + d).as_secs(), false),
            Stop::Count(n) => (n, true),
        };
        let output = if quiet {
            Output::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(length.max(1));
            let template = "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {msg}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            Output::Bar(bar)
        } else {
            Output::Lines
        };
        Progress { output, threads: plan.threads, pending: BTreeMap::new(), done: 0, count_mode, seconds: Vec::new() }
    }

    pub fn tick(&mut self, tick: Tick) {
        let second = self.pending.entry(tick.second).or_insert_with(|| Second {
            reported: 0,
            length: tick.length,
            responses: 0,
            errors: 0,
            warmup: false,
            latency: new_histogram(),
        });
        second.reported += 1;
        second.length = second.length.max(tick.length);
        second.responses += tick.interval.responses;
        second.errors += tick.interval.errors;
        second.warmup |= tick.warmup;
        let _ = second.latency.add(&tick.interval.latency);
        if second.reported == self.threads {
            if let Some(second) = self.pending.remove(&tick.second) {
                self.show(tick.second, &second);
            }
        }
    }

    /// Shows what is left (seconds some threads did not reach) and clears the bar.
    pub fn finish(&mut self) {
        for (index, second) in std::mem::take(&mut self.pending) {
            self.show(index, &second);
        }
        if let Output::Bar(bar) = &self.output {
            bar.finish_and_clear();
        }
    }

    fn show(&mut self, index: u64, second: &Second) {
        self.seconds.push(crate::report::LatencySecond {
            second: index,
            warmup: second.warmup,
            responses: second.responses,
            p99_ms: (!second.latency.is_empty()).then(|| second.latency.value_at_quantile(0.99) as f64 / 1000.0),
        });
        let p99 = if second.latency.is_empty() {
            "-".to_string()
        } else {
            format_ms(second.latency.value_at_quantile(0.99) as f64 / 1000.0)
        };
        let rate = second.responses as f64 / second.length.as_secs_f64().max(0.001);
        let line = format!(
            "{:>4}s {:>10} responses/s  errors {:<6} p99 {}{}",
            index,
            thousands(rate.round() as u64),
            thousands(second.errors),
            p99,
            if second.warmup { "  (warm-up)" } else { "" }
        );
        if !second.warmup {
            self.done += second.responses + second.errors;
        }
        match &self.output {
            Output::Quiet => {}
            Output::Lines => eprintln!("{line}"),
            Output::Bar(bar) => {
                bar.set_position(if self.count_mode { self.done } else { index });
                bar.set_message(line.trim_start().to_string());
            }
        }
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
