//! The line of requests waiting for a pool's connection (or stream slot): first come,
//! first served. What frees up is handed to the oldest waiter, never left where a
//! request that came later could take it first (HikariCP's hand-off queue; HAProxy's
//! server queue). With a wake-and-retry scheme instead (a `Notify`), a woken waiter
//! races every newcomer for the connection and some requests waited many times longer
//! than others (issue 20: p99 328 ms at 1,024 clients over a 256-connection pool).
//!
//! A waiter gets `Some(value)`, or `None`: "look again yourself" (a connection opened
//! with room for many, or one failed to open or closed: its turn to open one).
//!
//! A waiter joins the line and then looks once more for what it was waiting for, so
//! that a release between its first look and its joining is not missed.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// What a waiter is sent.
pub(crate) type Handed<V> = Option<V>;

/// The waiters of one pool, oldest first.
pub(crate) struct WaitQueue<V> {
    waiters: Mutex<VecDeque<oneshot::Sender<Handed<V>>>>,
}

impl<V> Default for WaitQueue<V> {
    fn default() -> Self {
        WaitQueue { waiters: Mutex::new(VecDeque::new()) }
    }
}

impl<V> WaitQueue<V> {
    /// Joins the line, at the back.
    pub(crate) fn join(&self) -> Ticket<V> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.lock();
        // Waiters that gave up (queue timeout, client gone) leave their sender behind;
        // the oldest are dropped here, so the line holds at most one queue_timeout's
        // arrivals even when nothing is ever handed out.
        while waiters.front().is_some_and(|w| w.is_closed()) {
            waiters.pop_front();
        }
        waiters.push_back(tx);
        Ticket { rx }
    }

    /// Whether anyone waits (maybe one that gave up and was not yet dropped).
    pub(crate) fn is_waiting(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Hands `value` to the oldest waiter still waiting; gives it back when nobody is.
    pub(crate) fn hand(&self, value: V) -> Result<(), V> {
        let mut waiters = self.lock();
        let mut value = value;
        while let Some(waiter) = Self::pop_live(&mut waiters) {
            match waiter.send(Some(value)) {
                Ok(()) => return Ok(()),
                // It gave up between the check and the send: the next one.
                Err(Some(back)) => value = back,
                Err(None) => return Ok(()),
            }
        }
        Err(value)
    }

    /// Tells the oldest waiter to look again (a connection can be opened now, or the
    /// one being opened failed), if anyone waits.
    pub(crate) fn wake_first(&self) {
        let mut waiters = self.lock();
        while let Some(waiter) = Self::pop_live(&mut waiters) {
            if waiter.send(None).is_ok() {
                return;
            }
        }
    }

    /// Tells every waiter to look again (a connection opened with room for many streams).
    pub(crate) fn wake_all(&self) {
        for waiter in self.lock().drain(..) {
            let _ = waiter.send(None);
        }
    }

    fn pop_live(waiters: &mut VecDeque<oneshot::Sender<Handed<V>>>) -> Option<oneshot::Sender<Handed<V>>> {
        while let Some(waiter) = waiters.pop_front() {
            if !waiter.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<oneshot::Sender<Handed<V>>>> {
        // Plain data: a panic elsewhere leaves it consistent.
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A waiter's ticket: its receiver, taken back when it stops waiting so that whatever
/// was handed to it at that very moment is not lost.
pub(crate) struct Ticket<V> {
    rx: oneshot::Receiver<Handed<V>>,
}

impl<V> Ticket<V> {
    pub(crate) fn receiver(&mut self) -> &mut oneshot::Receiver<Handed<V>> {
        &mut self.rx
    }

    /// Stops waiting: nothing can be handed after this; returns what was handed before.
    pub(crate) fn leave(mut self) -> Option<V> {
        self.rx.close();
        self.rx.try_recv().ok().flatten()
    }
}
