//! Idle deadlines of one worker's keep-alive connections, in queues swept by one task,
//! instead of a tokio timer and a shutdown `Notified` in every idle connection.
//!
//! An idle connection is what sluice holds most of, and its task's future is what it
//! costs: a `Sleep` (112 bytes) and a `Notified` (64) made every waiting connection's
//! future 176 bytes larger, and tokio rounds a task to 128 bytes. Here an idle
//! connection holds a 16-byte [`IdleTicket`]; its deadline and waker sit in a slot of
//! this worker's table (48 bytes, reused through a free list).
//!
//! The sweeper wakes every [`TICK`] and scans the slots in use: a few nanoseconds a
//! slot, so 10,000 idle connections cost ~20 µs a tick (0.04% of a core). A deadline
//! queue was tried first and dropped: a ticket ends long before its deadline in the
//! common case (the next request comes), so the queue kept an entry per request for a
//! whole keep-alive timeout (millions under load). Deadlines are late by at most one
//! tick, which idle and header timeouts (seconds) do not notice.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::Shutdown;

/// How often the sweeper looks for expired deadlines: the timeouts' precision.
const TICK: Duration = Duration::from_millis(50);
/// The worker's reusable-object stocks are trimmed to demand every second.
const TICKS_PER_TRIM: u32 = 20;
/// How long a drain keeps an idle keep-alive connection open for one more request
/// (answered with `Connection: close`). Closing it at once raced with a client
/// that had just sent its next request: behind an L4 balancer, 2 of 24 clients saw
/// their request fail when one of three instances was stopped. One second covers a
/// client's turn-around many times over; the drain waits for it anyway.
pub(crate) const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// The idle deadlines of one worker. Per-core workers lock it uncontended.
#[derive(Default)]
pub(crate) struct IdleTimers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use (not free), so the sweep can stop early when there are none.
    waiting: usize,
    /// Shutdown has begun: idle deadlines are at most `DRAIN_IDLE_GRACE` away.
    draining: bool,
}

struct Slot {
    /// Bumped when the slot is freed: a check that a ticket only frees its own slot.
    generation: u32,
    /// A request head being read, not an idle wait: a drain lets it finish.
    head: bool,
    deadline: Instant,
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Free,
    Waiting(Option<Waker>),
    Expired,
}

/// One idle connection's place in the queues; dropping it removes the deadline.
pub(crate) struct IdleTicket<'a> {
    timers: &'a IdleTimers,
    slot: u32,
    generation: u32,
}

impl IdleTimers {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent state (each
        // operation is a few assignments), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A deadline `timeout` from now for an idle connection (at most `DRAIN_IDLE_GRACE`
    /// during a drain).
    pub(crate) fn register(&self, timeout: Duration) -> IdleTicket<'_> {
        self.register_as(timeout, false)
    }

    /// A deadline `timeout` from now for a request head being read: a drain does not
    /// end it (the request may be under way), the connection cap may (`reclaim_one`).
    pub(crate) fn register_head(&self, timeout: Duration) -> IdleTicket<'_> {
        self.register_as(timeout, true)
    }

    fn register_as(&self, timeout: Duration, head: bool) -> IdleTicket<'_> {
        let mut inner = self.lock();
        let timeout = if inner.draining && !head { timeout.min(DRAIN_IDLE_GRACE) } else { timeout };
        let deadline = Instant::now() + timeout;
        let state = State::Waiting(None);
        inner.waiting += 1;
        let slot = match inner.free.pop() {
            Some(slot) => slot,
            None => {
                inner.slots.push(Slot { generation: 0, head, deadline, state: State::Free });
                (inner.slots.len() - 1) as u32
            }
        };
        let entry = &mut inner.slots[slot as usize];
        entry.state = state;
        entry.head = head;
        entry.deadline = deadline;
        IdleTicket { timers: self, slot, generation: entry.generation }
    }

    /// Wakes the connections whose deadline has passed. Returns how many are waiting.
    fn expire(&self, now: Instant) -> usize {
        let mut wake = Vec::new();
        let waiting = {
            let mut inner = self.lock();
            if inner.waiting > 0 {
                for slot in inner.slots.iter_mut().filter(|s| s.deadline <= now) {
                    if let State::Waiting(waker) = &mut slot.state {
                        wake.extend(waker.take());
                        slot.state = State::Expired;
                    }
                }
            }
            inner.slots.iter().filter(|s| matches!(s.state, State::Waiting(_))).count()
        };
        // Woken outside the lock: a woken task on another thread may poll at once.
        wake.into_iter().for_each(Waker::wake);
        waiting
    }

    /// At the connection cap: the waiting connection nearest its deadline (an idle
    /// keep-alive one, or a request head still coming in) expires now, so that its
    /// place goes to a new client, as nginx reuses idle keep-alive connections and
    /// HAProxy closes stalled ones at `maxconn`. False when none waits.
    pub(crate) fn reclaim_one(&self) -> bool {
        let waker = {
            let mut inner = self.lock();
            let oldest =
                inner.slots.iter_mut().filter(|s| matches!(s.state, State::Waiting(_))).min_by_key(|s| s.deadline);
            match oldest {
                Some(slot) => match std::mem::replace(&mut slot.state, State::Expired) {
                    State::Waiting(waker) => waker,
                    _ => None,
                },
                None => return false,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Shutdown: every idle connection's deadline comes within `DRAIN_IDLE_GRACE`, and
    /// any new one's too (a request that arrives meanwhile is answered, then the
    /// connection closes).
    fn drain_all(&self) {
        let mut inner = self.lock();
        inner.draining = true;
        let grace = Instant::now() + DRAIN_IDLE_GRACE;
        for slot in inner.slots.iter_mut().filter(|slot| !slot.head) {
            slot.deadline = slot.deadline.min(grace);
        }
    }

    /// The worker's sweeper task: expires deadlines every tick until shutdown, then
    /// brings idle deadlines within the drain's grace and expires them as they pass.
    pub(crate) async fn sweep(&self, shutdown: &Shutdown) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                now = tick.tick() => { self.expire(now); }
                _ = shutdown.wait() => break,
            }
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(TICKS_PER_TRIM) {
                // On the worker's own thread (per-core): its buffer and record stocks.
                trim_this_threads_stocks();
            }
        }
        self.drain_all();
        // Heads being read when the drain began keep their deadlines (bounded by the
        // drain timeout too).
        while self.expire(tick.tick().await) > 0 {}
    }
}

/// Trims this thread's stocks of buffers, header maps and record boxes (`stock.rs`):
/// once a second, by each worker's sweeper.
fn trim_this_threads_stocks() {
    crate::http1::buffers::trim();
    crate::http1::maps::trim();
    crate::outcome::trim_stock();
}

impl IdleTicket<'_> {
    /// Ready once the deadline has passed or shutdown has begun.
    pub(crate) fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.timers.lock();
        let slot = &mut inner.slots[self.slot as usize];
        match &mut slot.state {
            State::Waiting(Some(waker)) if waker.will_wake(cx.waker()) => Poll::Pending,
            State::Waiting(waker) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            State::Expired | State::Free => Poll::Ready(()),
        }
    }
}

impl Drop for IdleTicket<'_> {
    fn drop(&mut self) {
        let mut inner = self.timers.lock();
        let slot = &mut inner.slots[self.slot as usize];
        debug_assert_eq!(slot.generation, self.generation);
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = State::Free;
        inner.waiting -= 1;
        inner.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context(count: &Arc<Count>) -> Waker {
        Waker::from(Arc::clone(count))
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_expires_after_its_timeout_and_wakes_its_task_once() {
        let timers = IdleTimers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = context(&count);
        let mut cx = Context::from_waker(&waker);
        let ticket = timers.register(Duration::from_secs(2));
        assert!(ticket.poll_expired(&mut cx).is_pending());
        assert_eq!(timers.expire(Instant::now() + Duration::from_secs(1)), 1, "not yet");
        assert!(ticket.poll_expired(&mut cx).is_pending());
        assert_eq!(timers.expire(Instant::now() + Duration::from_secs(2)), 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(ticket.poll_expired(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_ticket_leaves_nothing_to_wake_and_its_slot_is_reused() {
        let timers = IdleTimers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = context(&count);
        let mut cx = Context::from_waker(&waker);
        let first = timers.register(Duration::from_secs(1));
        assert!(first.poll_expired(&mut cx).is_pending());
        drop(first);
        let second = timers.register(Duration::from_secs(5));
        assert!(second.poll_expired(&mut cx).is_pending());
        timers.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "the stale deadline of the dropped ticket wakes no one");
        assert!(second.poll_expired(&mut cx).is_pending(), "the slot's new user keeps its own deadline");
        assert_eq!(timers.expire(Instant::now() + Duration::from_secs(5)), 0);
        assert!(second.poll_expired(&mut cx).is_ready());
        assert_eq!(timers.lock().slots.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_gives_every_idle_ticket_and_every_new_one_the_grace_and_no_more() {
        let timers = IdleTimers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = context(&count);
        let mut cx = Context::from_waker(&waker);
        let tickets: Vec<_> = (0..3).map(|_| timers.register(Duration::from_secs(60))).collect();
        let soon = timers.register(DRAIN_IDLE_GRACE / 2);
        for ticket in &tickets {
            assert!(ticket.poll_expired(&mut cx).is_pending());
        }
        timers.drain_all();
        assert!(tickets.iter().all(|t| t.poll_expired(&mut cx).is_pending()), "a request may still come");
        let new = timers.register(Duration::from_secs(60));
        assert!(new.poll_expired(&mut cx).is_pending());
        timers.expire(Instant::now() + DRAIN_IDLE_GRACE / 2);
        assert!(soon.poll_expired(&mut cx).is_ready(), "an earlier deadline stays");
        assert!(tickets.iter().all(|t| t.poll_expired(&mut cx).is_pending()));
        timers.expire(Instant::now() + DRAIN_IDLE_GRACE);
        assert_eq!(count.0.load(Ordering::SeqCst), 4);
        assert!(tickets.iter().all(|t| t.poll_expired(&mut cx).is_ready()), "60 s became the grace");
        assert!(new.poll_expired(&mut cx).is_ready());
    }

    #[test]
    fn at_the_cap_the_wait_nearest_its_deadline_ends_and_a_drain_spares_heads() {
        let timers = IdleTimers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = context(&count);
        let mut cx = Context::from_waker(&waker);
        let idle = timers.register(Duration::from_secs(60));
        let head = timers.register_head(Duration::from_secs(10));
        assert!(idle.poll_expired(&mut cx).is_pending() && head.poll_expired(&mut cx).is_pending());
        assert!(timers.reclaim_one());
        assert!(head.poll_expired(&mut cx).is_ready(), "the head was nearest its deadline");
        assert!(idle.poll_expired(&mut cx).is_pending());
        drop(head);
        let late_head = timers.register_head(Duration::from_secs(10));
        timers.drain_all();
        timers.expire(Instant::now() + DRAIN_IDLE_GRACE);
        assert!(idle.poll_expired(&mut cx).is_ready(), "a drain ends idle waits after its grace");
        assert!(late_head.poll_expired(&mut cx).is_pending(), "and lets a head being read finish");
        assert!(timers.reclaim_one(), "the cap still may");
        drop((idle, late_head));
        assert!(!timers.reclaim_one(), "nothing waits");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_expires_deadlines_as_time_passes() {
        let timers = Arc::new(IdleTimers::default());
        let shutdown = Arc::new(Shutdown::default());
        let sweeper = {
            let (timers, shutdown) = (Arc::clone(&timers), Arc::clone(&shutdown));
            tokio::spawn(async move { timers.sweep(&shutdown).await })
        };
        let started = Instant::now();
        {
            let ticket = timers.register(Duration::from_millis(300));
            std::future::poll_fn(|cx| ticket.poll_expired(cx)).await;
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited <= Duration::from_millis(300) + TICK, "{waited:?}");
        shutdown.trigger();
        sweeper.await.expect("sweeper");
    }
}
