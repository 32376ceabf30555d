//! A sampled request's span in its outcome record: the span's ids and one entry per
//! upstream try (connect failures, stale connections, retries and hedged copies each
//! count), with when it began and ended and why it did not answer. Filled only for
//! sampled requests (`[tracing]`): an unsampled request pushes nothing, and a recycled
//! record keeps its tries' capacity, so sampling allocates once per record box.

use std::sync::Arc;
use std::time::Duration;

use super::Outcome;

/// Sluice's span for a request, when the trace is sampled (W3C ids, lower-case hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanIds {
    pub(crate) span_id: [u8; 16],
    /// The client's span, when it sent a `traceparent`.
    pub(crate) parent: Option<[u8; 16]>,
}

/// The trace part of a record.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// Some when the request is sampled.
    pub(crate) ids: Option<SpanIds>,
    pub(crate) trace_id: [u8; 32],
    pub(crate) tries: Vec<Try>,
}

/// One upstream try of a request.
#[derive(Debug, Clone)]
pub(crate) struct Try {
    pub(crate) endpoint: Arc<str>,
    /// From the request's start.
    pub(crate) start: Duration,
    /// From the request's start; None while the try is going on (the last try ends
    /// with the request).
    pub(crate) end: Option<Duration>,
    /// Why this try gave no answer the client got (`connect_failed`, `reset`,
    /// `retried_status`, `stale_connection`, `per_try_timeout`, `hedge_lost`).
    pub(crate) failure: Option<&'static str>,
    /// A hedged copy, sent while an earlier try was still waiting.
    pub(crate) hedge: bool,
}

impl Trace {
    pub(crate) fn clear(&mut self) {
        self.ids = None;
        self.tries.clear();
    }
}

impl Outcome {
    /// Whether this request's span is exported.
    pub(crate) fn sampled(&self) -> bool {
        self.trace.ids.is_some()
    }

    /// A try on `endpoint` begins now: counted (`attempts`), and for a sampled request
    /// noted with its start.
    pub(crate) fn begin_try(&mut self, endpoint: &Arc<str>, hedge: bool) {
        self.upstream_trace.attempts += 1;
        if self.sampled() {
            let start = self.started.elapsed();
            self.trace.tries.push(Try { endpoint: Arc::clone(endpoint), start, end: None, failure: None, hedge });
        }
    }

    /// The latest try still going on ended now, without an answer, for `failure`.
    pub(crate) fn end_try(&mut self, failure: &'static str) {
        if self.sampled() {
            let now = self.started.elapsed();
            if let Some(open) = self.trace.tries.iter_mut().rev().find(|t| t.end.is_none()) {
                open.end = Some(now);
                open.failure = Some(failure);
            }
        }
    }

    /// A hedging race is decided: the loser (the hedged copy, unless it won) ends now.
    pub(crate) fn end_hedge_loser(&mut self, hedge_won: bool) {
        if self.sampled() {
            let now = self.started.elapsed();
            let loser = self.trace.tries.iter_mut().rev().find(|t| t.end.is_none() && t.hedge != hedge_won);
            if let Some(loser) = loser {
                loser.end = Some(now);
                loser.failure = Some("hedge_lost");
            }
        }
    }
}

/// `value` as 16 lower-case hex digits into `out` (request ids, trace and span ids).
pub(crate) fn write_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate().take(16) {
        *slot = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The value of up to 16 lower-case hex digits (anything else counts as 0).
pub(crate) fn read_hex(digits: &[u8]) -> u64 {
    let digit = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => 0,
    };
    digits.iter().take(16).fold(0, |n, &b| (n << 4) | u64::from(digit(b)))
}
