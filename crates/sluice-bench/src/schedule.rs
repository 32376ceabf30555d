//! Which request goes when: the decision logic of a run, without I/O.
//!
//! Closed loop: a connection sends its next request as soon as the last one is answered,
//! until the time or count runs out. Open loop (`--rate`): request *i* is due at a fixed
//! time on a timetable shared by all threads; a connection takes the next due request when
//! it is free, and its latency counts from the due time (see [`Ticket::start`]), so a stalled
//! server shows up as the queueing it causes instead of as fewer, faster samples.

use std::time::{Duration, Instant};

/// One thread's share of the run.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    measure_from: Instant,
    /// Open loop: seconds between two requests of the whole run, and this thread's place
    /// among the threads (thread t sends requests t, t + threads, t + 2·threads, ...).
    timetable: Option<Timetable>,
    limit: Limit,
    issued: u64,
    measured: u64,
}

#[derive(Debug, Clone)]
struct Timetable {
    rate: RateProfile,
    thread: u64,
    threads: u64,
}

/// The offered rate over a run (`--rate`): a constant, a ramp (`1000:10000 over 30s`),
/// or stages (`100 for 10s, 100:1000 over 20s, 1000`). After the last stage the rate
/// holds at its final value. Times count from the start of the run, warm-up included.
#[derive(Debug, Clone, PartialEq)]
pub struct RateProfile {
    /// As given, for the report.
    pub text: String,
    /// (rate at the start, rate at the end, seconds), in order.
    stages: Vec<(f64, f64, f64)>,
    /// The rate after the last stage.
    then: f64,
}

impl RateProfile {
    /// Parses `R`, `R1:R2 over D` and `R for D`, comma-separated; rates in requests per
    /// second, durations as in the config file ("30s", "500ms").
    pub fn parse(text: &str) -> Result<RateProfile, String> {
        let hint = "write e.g. 2000, \"1000:10000 over 30s\" or \"100 for 10s, 100:1000 over 20s\"";
        let rate = |t: &str| -> Result<f64, String> {
            let r: f64 = t.trim().parse().map_err(|_| format!("\"{}\" is not a rate; {hint}", t.trim()))?;
            if r.is_finite() && r > 0.0 {
                Ok(r)
            } else {
                Err("--rate must be a positive number of requests per second".to_string())
            }
        };
        let seconds = |t: &str| -> Result<f64, String> {
            let d = sluice_config::parse_duration(t.trim())?;
            if d.is_zero() {
                return Err(format!("a --rate stage must last longer than 0; {hint}"));
            }
            Ok(d.as_secs_f64())
        };
        let mut stages = Vec::new();
        let parts: Vec<&str> = text.split(',').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some((rates, duration)) = part.split_once(" over ") {
                let (from, to) = rates
                    .split_once(':')
                    .ok_or(format!("\"{}\" needs FROM:TO before \"over\"; {hint}", part.trim()))?;
                stages.push((rate(from)?, rate(to)?, seconds(duration)?));
            } else if let Some((r, duration)) = part.split_once(" for ") {
                let r = rate(r)?;
                stages.push((r, r, seconds(duration)?));
            } else if last {
                let then = rate(part)?;
                return Ok(RateProfile { text: text.trim().to_string(), stages, then });
            } else {
                return Err(format!("\"{}\" needs \"for\" or \"over\" a duration; {hint}", part.trim()));
            }
        }
        let then = stages.last().map_or(1.0, |s| s.1);
        Ok(RateProfile { text: text.trim().to_string(), stages, then })
    }

    /// A constant rate.
    pub fn constant(rate: f64) -> RateProfile {
        RateProfile { text: rate.to_string(), stages: Vec::new(), then: rate }
    }

    /// The highest rate the profile reaches.
    pub fn peak(&self) -> f64 {
        self.stages.iter().flat_map(|s| [s.0, s.1]).fold(self.then, f64::max)
    }

    /// Whether the rate changes over the run.
    pub fn varies(&self) -> bool {
        self.stages.iter().any(|s| s.0 != self.then || s.1 != self.then)
    }

    /// Seconds from the start at which request `n` (counting from 0) is due: where the
    /// integral of the rate reaches `n`.
    pub fn due_s(&self, n: f64) -> f64 {
        let (mut done, mut at) = (0.0, 0.0);
        for &(from, to, length) in &self.stages {
            let in_stage = (from + to) / 2.0 * length;
            if n < done + in_stage {
                let k = n - done;
                // k = from·t + (to - from)·t² / (2·length): the positive root.
                let a = (to - from) / (2.0 * length);
                let t =
                    if a.abs() < 1e-12 { k / from } else { (-from + (from * from + 4.0 * a * k).sqrt()) / (2.0 * a) };
                return at + t;
            }
            done += in_stage;
            at += length;
        }
        at + (n - done) / self.then
    }
}

/// When this thread stops taking requests after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Deadline(Instant),
    Count(u64),
}

/// Permission to send one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Open loop: when the request should be sent.
    pub due: Option<Instant>,
    /// Sent during the warm-up: not recorded.
    pub warmup: bool,
}

impl Ticket {
    /// The instant latency is measured from, given when the connection became free to send.
    /// Late (the connection was busy past the due time): the due time, so the wait is
    /// counted. Early: the caller waited until `due`, and latency counts from when it
    /// actually sent (`free_at`), so a timer firing late is not charged to the server.
    pub fn start(&self, free_at: Instant, sent_at: Instant) -> Instant {
        match self.due {
            Some(due) if free_at >= due => due,
            _ => sent_at,
        }
    }
}

impl Schedule {
    /// A closed-loop schedule.
    pub fn closed(start: Instant, warmup: Duration, limit: Limit) -> Schedule {
        Schedule { start, measure_from: start + warmup, timetable: None, limit, issued: 0, measured: 0 }
    }

    /// An open-loop schedule for thread `thread` of `threads`, at `rate` in all.
    pub fn open(
        start: Instant,
        warmup: Duration,
        limit: Limit,
        rate: RateProfile,
        thread: usize,
        threads: usize,
    ) -> Schedule {
        let timetable = Timetable { rate, thread: thread as u64, threads: threads.max(1) as u64 };
        Schedule { timetable: Some(timetable), ..Schedule::closed(start, warmup, limit) }
    }

    /// The moment recording starts.
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// The next request to send, or None when this thread is done.
    pub fn next(&mut self, now: Instant) -> Option<Ticket> {
        let due = self.timetable.as_ref().map(|t| {
            let index = self.issued * t.threads + t.thread;
            self.start + Duration::from_secs_f64(t.rate.due_s(index as f64))
        });
        let at = due.unwrap_or(now);
        let warmup = at < self.measure_from;
        if !warmup {
            let more = match self.limit {
                Limit::Deadline(end) => at < end,
                Limit::Count(n) => self.measured < n,
            };
            if !more {
                return None;
            }
            self.measured += 1;
        }
        self.issued += 1;
        Some(Ticket { due, warmup })
    }
}

/// Splits `total` into `parts` shares that differ by at most one; share `index`.
pub fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_threads_interleave_on_one_timetable() {
        let start = Instant::now();
        let end = start + Duration::from_millis(10);
        let mut dues = Vec::new();
        for thread in 0..2 {
            let mut schedule =
                Schedule::open(start, Duration::ZERO, Limit::Deadline(end), RateProfile::constant(1000.0), thread, 2);
            while let Some(ticket) = schedule.next(start) {
                dues.push(ticket.due.expect("open loop").duration_since(start).as_micros());
            }
        }
        dues.sort_unstable();
        // 1,000 per second for 10 ms: exactly 10, one every millisecond, the last before the end.
        assert_eq!(dues, (0..10).map(|i| i * 1000).collect::<Vec<_>>());
    }

    #[test]
    fn warmup_tickets_are_not_counted_against_the_limit() {
        let start = Instant::now();
        let mut schedule =
            Schedule::open(start, Duration::from_millis(5), Limit::Count(3), RateProfile::constant(1000.0), 0, 1);
        let tickets: Vec<_> = std::iter::from_fn(|| schedule.next(start)).collect();
        assert_eq!(tickets.len(), 8);
        assert_eq!(tickets.iter().filter(|t| t.warmup).count(), 5);
        let mut closed = Schedule::closed(start, Duration::from_secs(60), Limit::Count(1));
        assert!((0..100).all(|_| closed.next(start).is_some_and(|t| t.warmup)), "all warm-up for a minute");
        assert_eq!(closed.next(start + Duration::from_secs(61)).map(|t| t.warmup), Some(false));
        assert_eq!(closed.next(start + Duration::from_secs(61)), None);
    }

    #[test]
    fn closed_loop_stops_at_its_deadline() {
        let start = Instant::now();
        let mut schedule = Schedule::closed(start, Duration::ZERO, Limit::Deadline(start + Duration::from_secs(1)));
        assert!(schedule.next(start + Duration::from_millis(999)).is_some());
        assert!(schedule.next(start + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn latency_counts_from_the_due_time_only_when_the_sender_was_late() {
        let due = Instant::now();
        let ticket = Ticket { due: Some(due), warmup: false };
        let late = due + Duration::from_millis(300);
        assert_eq!(ticket.start(late, late), due, "a busy connection: the wait is latency");
        let timer_late = due + Duration::from_micros(900);
        assert_eq!(ticket.start(due - Duration::from_millis(1), timer_late), timer_late, "our timer, not the server");
        let closed = Ticket { due: None, warmup: false };
        assert_eq!(closed.start(late, late + Duration::from_millis(1)), late + Duration::from_millis(1));
    }

    #[test]
    fn shares_add_up() {
        assert_eq!((0..3).map(|i| share(10, 3, i)).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!((0..4).map(|i| share(2, 4, i)).sum::<u64>(), 2);
    }

    #[test]
    fn rate_profiles_parse_and_give_due_times() {
        let constant = RateProfile::parse("2000").expect("constant");
        assert!(!constant.varies());
        assert!((constant.due_s(4000.0) - 2.0).abs() < 1e-9);

        // 1000 → 3000 req/s over 10 s: 20,000 requests in the ramp, then 3000 req/s.
        let ramp = RateProfile::parse("1000:3000 over 10s").expect("ramp");
        assert!(ramp.varies());
        assert_eq!(ramp.peak(), 3000.0);
        // 1000 = 1000·t + 100·t²: t = 0.9161 s, sooner than the 1 s a constant 1000 req/s gives.
        assert!((ramp.due_s(1000.0) - 0.9161).abs() < 1e-3, "{}", ramp.due_s(1000.0));
        assert!((ramp.due_s(20_000.0) - 10.0).abs() < 1e-9);
        assert!((ramp.due_s(23_000.0) - 11.0).abs() < 1e-9, "holds the last rate after the ramp");
        // Due times never go backwards.
        let mut last = 0.0;
        for n in 0..25_000 {
            let t = ramp.due_s(f64::from(n));
            assert!(t >= last, "{n}");
            last = t;
        }

        let stages = RateProfile::parse("100 for 10s, 100:1000 over 20s, 1000").expect("stages");
        assert!((stages.due_s(1000.0) - 10.0).abs() < 1e-9);
        assert!((stages.due_s(1000.0 + 11_000.0) - 30.0).abs() < 1e-9);
        assert!((stages.due_s(12_000.0 + 500.0) - 30.5).abs() < 1e-9);

        for bad in ["0", "fast", "100 for 0s", "100:200", "100 over 5s", "100, 200"] {
            assert!(RateProfile::parse(bad).is_err(), "{bad}");
        }
    }
}
