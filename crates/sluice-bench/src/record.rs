//! What a thread saw: latencies in an HDR histogram, counts by status class and failure
//! kind, and responses per second. One per thread, merged at the end: no sharing while
//! requests run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::failure::Failure;

/// Latencies are recorded in microseconds, from 1 µs to an hour, to 3 significant digits.
const HIGHEST_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("constant histogram bounds are valid")
}

/// Responses and failures in one second of the measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    pub responses: u64,
    pub errors: u64,
}

/// Counts since the previous progress tick.
#[derive(Debug, Clone)]
pub struct Interval {
    pub responses: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

#[derive(Debug, Clone)]
pub struct Recorder {
    measure_from: Instant,
    pub latency: Histogram<u64>,
    /// The same, apart for responses a limit refused (429 and 503) and for the rest: an
    /// overloaded target's refusals are fast, and mixed in they hide the admitted p99.
    pub refused_latency: Histogram<u64>,
    pub admitted_latency: Histogram<u64>,
    interval: Interval,
    pub per_second: Vec<Second>,
    /// Responses by status class: index 1 = 1xx ... 5 = 5xx; 0 = anything else.
    pub status: [u64; 6],
    /// Responses by exact status code, 100-599 at index code - 100 (others: only in `status[0]`).
    pub codes: Box<[u64; 500]>,
    pub failures: [u64; Failure::ALL.len()],
    /// A few failure messages per kind (`failure::note`), merged from every thread.
    pub samples: crate::failure::Samples,
    /// Per URL when there are several (`MAX_URL_ROWS` at most; later URLs share the last).
    pub per_url: Vec<UrlCounts>,
    pub body_bytes: u64,
    pub warmup: u64,
    /// Open loop: requests taken up after they were due, every connection being busy.
    pub late: u64,
    pub last_end: Option<Instant>,
    pub connects: u64,
    open: u64,
    pub peak_open: u64,
}

/// A limit's refusal: 429 Too Many Requests or 503 Service Unavailable.
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// Rows the report keeps per URL at most; a request file with more shares the last row.
pub const MAX_URL_ROWS: usize = 32;

/// One URL's share of a run.
#[derive(Debug, Clone)]
pub struct UrlCounts {
    pub responses: u64,
    /// No response, or a status outside 200-399.
    pub failed: u64,
    pub latency: Histogram<u64>,
}

impl Default for UrlCounts {
    fn default() -> Self {
        UrlCounts { responses: 0, failed: 0, latency: new_histogram() }
    }
}

impl Recorder {
    pub fn new(measure_from: Instant) -> Recorder {
        Recorder {
            measure_from,
            latency: new_histogram(),
            refused_latency: new_histogram(),
            admitted_latency: new_histogram(),
            interval: Interval { responses: 0, errors: 0, latency: new_histogram() },
            per_second: Vec::new(),
            status: [0; 6],
            codes: Box::new([0; 500]),
            failures: [0; Failure::ALL.len()],
            samples: Vec::new(),
            per_url: Vec::new(),
            body_bytes: 0,
            warmup: 0,
            late: 0,
            last_end: None,
            connects: 0,
            open: 0,
            peak_open: 0,
        }
    }

    /// A whole response arrived.
    pub fn response(&mut self, warmup: bool, start: Instant, end: Instant, status: u16, body_bytes: u64) {
        let micros = end.saturating_duration_since(start).as_micros().clamp(1, u128::from(HIGHEST_US)) as u64;
        self.interval.responses += 1;
        self.interval.latency.saturating_record(micros);
        if warmup {
            self.warmup += 1;
            return;
        }
        self.latency.saturating_record(micros);
        match is_refusal(status) {
            true => self.refused_latency.saturating_record(micros),
            false => self.admitted_latency.saturating_record(micros),
        }
        let class = usize::from(status / 100);
        self.status[if (1..=5).contains(&class) { class } else { 0 }] += 1;
        if let Some(count) = usize::from(status).checked_sub(100).and_then(|i| self.codes.get_mut(i)) {
            *count += 1;
        }
        self.body_bytes += body_bytes;
        self.second(end).responses += 1;
        self.ended_at(end);
    }

    /// Counts a request's end against its URL: `latency` for a response, `failed` for a
    /// failure or a status outside 200-399. Warm-up requests are left out.
    pub fn url_outcome(&mut self, warmup: bool, url: usize, latency: Option<(Instant, Instant)>, failed: bool) {
        if warmup {
            return;
        }
        let row = url.min(MAX_URL_ROWS - 1);
        if self.per_url.len() <= row {
            self.per_url.resize_with(row + 1, UrlCounts::default);
        }
        let counts = &mut self.per_url[row];
        counts.failed += u64::from(failed);
        if let Some((start, end)) = latency {
            counts.responses += 1;
            let micros = end.saturating_duration_since(start).as_micros().clamp(1, u128::from(HIGHEST_US)) as u64;
            counts.latency.saturating_record(micros);
        }
    }

    /// A request failed.
    pub fn failure(&mut self, warmup: bool, end: Instant, kind: Failure) {
        self.interval.errors += 1;
        if warmup {
            self.warmup += 1;
            return;
        }
        self.failures[kind.index()] += 1;
        self.second(end).errors += 1;
        self.ended_at(end);
    }

    fn ended_at(&mut self, end: Instant) {
        self.last_end = Some(self.last_end.map_or(end, |last| last.max(end)));
    }

    pub fn connected(&mut self) {
        self.connects += 1;
        self.open += 1;
        self.peak_open = self.peak_open.max(self.open);
    }

    pub fn disconnected(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    fn second(&mut self, end: Instant) -> &mut Second {
        let index = end.saturating_duration_since(self.measure_from).as_secs() as usize;
        if self.per_second.len() <= index {
            self.per_second.resize(index + 1, Second::default());
        }
        &mut self.per_second[index]
    }

    /// Counts since the last call, for live progress.
    pub fn take_interval(&mut self) -> Interval {
        let taken = self.interval.clone();
        self.interval.responses = 0;
        self.interval.errors = 0;
        self.interval.latency.reset();
        taken
    }

    /// Adds another thread's records to these.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.refused_latency.add(&other.refused_latency);
        let _ = self.admitted_latency.add(&other.admitted_latency);
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), Second::default());
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            mine.responses += theirs.responses;
            mine.errors += theirs.errors;
        }
        for (mine, theirs) in self.status.iter_mut().zip(other.status) {
            *mine += theirs;
        }
        for (mine, theirs) in self.codes.iter_mut().zip(other.codes.iter()) {
            *mine += theirs;
        }
        if self.per_url.len() < other.per_url.len() {
            self.per_url.resize_with(other.per_url.len(), UrlCounts::default);
        }
        for (mine, theirs) in self.per_url.iter_mut().zip(&other.per_url) {
            mine.responses += theirs.responses;
            mine.failed += theirs.failed;
            let _ = mine.latency.add(&theirs.latency);
        }
        for (kind, message) in &other.samples {
            let kept = self.samples.iter().filter(|(k, _)| k == kind).count();
            if kept < crate::failure::SAMPLES_PER_KIND && !self.samples.iter().any(|(k, m)| k == kind && m == message) {
                self.samples.push((*kind, message.clone()));
            }
        }
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
        self.body_bytes += other.body_bytes;
        self.warmup += other.warmup;
        self.late += other.late;
        if let Some(end) = other.last_end {
            self.ended_at(end);
        }
        self.connects += other.connects;
        self.peak_open += other.peak_open;
    }

    pub fn responses(&self) -> u64 {
        self.status.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        self.failures.iter().sum()
    }

    /// Time from the end of the warm-up to the last recorded completion.
    pub fn elapsed(&self) -> Duration {
        self.last_end.map_or(Duration::ZERO, |end| end.saturating_duration_since(self.measure_from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_second_and_class_and_leaves_warmup_out() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0);
        a.response(true, t0, t0 + Duration::from_millis(1), 200, 10);
        a.response(false, t0, t0 + Duration::from_millis(2), 200, 10);
        a.response(false, t0, t0 + Duration::from_millis(1500), 503, 0);
        let mut b = Recorder::new(t0);
        b.failure(false, t0 + Duration::from_millis(2500), Failure::Timeout);
        a.merge(&b);
        assert_eq!((a.responses(), a.errors(), a.warmup, a.body_bytes), (2, 1, 1, 10));
        assert_eq!((a.status[2], a.status[5]), (1, 1));
        let seconds: Vec<_> = a.per_second.iter().map(|s| (s.responses, s.errors)).collect();
        assert_eq!(seconds, [(1, 0), (1, 0), (0, 1)]);
        assert_eq!(a.elapsed(), Duration::from_millis(2500));
        assert_eq!(a.latency.len(), 2);
        assert!(a.latency.max() >= 1_499_000, "{}", a.latency.max());
        let interval = a.take_interval();
        assert_eq!((interval.responses, interval.latency.len()), (3, 3));
        assert_eq!(a.take_interval().latency.len(), 0);
    }
}
