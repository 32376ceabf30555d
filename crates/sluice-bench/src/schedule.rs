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

#[derive(Debug, Clone, Copy)]
struct Timetable {
    interval_s: f64,
    thread: u64,
    threads: u64,
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

    /// An open-loop schedule for thread `thread` of `threads`, `rate` requests per second in all.
    pub fn open(start: Instant, warmup: Duration, limit: Limit, rate: f64, thread: usize, threads: usize) -> Schedule {
        let timetable = Timetable { interval_s: 1.0 / rate, thread: thread as u64, threads: threads.max(1) as u64 };
        Schedule { timetable: Some(timetable), ..Schedule::closed(start, warmup, limit) }
    }

    /// The moment recording starts.
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// The next request to send, or None when this thread is done.
    pub fn next(&mut self, now: Instant) -> Option<Ticket> {
        let due = self.timetable.map(|t| {
            let index = self.issued * t.threads + t.thread;
            self.start + Duration::from_secs_f64(index as f64 * t.interval_s)
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
            let mut schedule = Schedule::open(start, Duration::ZERO, Limit::Deadline(end), 1000.0, thread, 2);
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
        let mut schedule = Schedule::open(start, Duration::from_millis(5), Limit::Count(3), 1000.0, 0, 1);
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
}
