//! Record boxes are reused: a worker takes one from its own small stock, refilled in
//! batches from what the access log's writer thread hands back. Freeing a box on the
//! writer thread that a worker allocated would cost the worker's allocator its fast
//! path (glibc's per-thread cache only takes back what the same thread frees): with
//! the access log on, that doubled the time spent in malloc (callgrind).

// The boxes are the point: each record travels as a pointer through the access log's
// queue and back, so the vectors hold boxes, not records.
#![allow(clippy::vec_box)]

use std::cell::RefCell;
use std::sync::Mutex;

use super::Outcome;
use crate::stock::Stock;

/// Boxes a worker keeps at hand however quiet it is, and at most (one per request in
/// flight at 1,024 connections; ~1.3 KiB each), trimmed to demand once a second.
const LOCAL_MIN: usize = 64;
const LOCAL_STOCK: usize = 1024;
/// Boxes waiting to be taken by any worker (the rest are freed).
const SHARED_STOCK: usize = 8192;

static RETURNED: Mutex<Vec<Box<Outcome>>> = Mutex::new(Vec::new());

thread_local! {
    static STOCK: RefCell<Stock<Box<Outcome>>> = const { RefCell::new(Stock::new(LOCAL_MIN, LOCAL_STOCK)) };
}

/// Frees the boxes this thread did not need in the last period.
pub(super) fn trim() {
    let _ = STOCK.try_with(|stock| stock.borrow_mut().trim());
}

/// A box for a new record: from this thread's stock, else a batch from the returned
/// ones, else a new allocation.
pub(super) fn take() -> Box<Outcome> {
    // `try_with`: a thread being torn down (its locals gone) just allocates.
    STOCK
        .try_with(|stock| {
            let mut stock = stock.borrow_mut();
            if stock.len() == 0 {
                let mut returned = RETURNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let from = returned.len().saturating_sub(LOCAL_MIN);
                returned.drain(from..).for_each(|outcome| stock.give(outcome));
            }
            stock.take()
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Outcome::empty()))
}

/// A copy of `outcome` in a box from the stock (for a second reader of the record).
pub(super) fn copy_of(outcome: &Outcome) -> Box<Outcome> {
    let mut copy = take();
    copy.copy_from(outcome);
    copy
}

/// Keeps a finished record's box on this thread (no access log: it ends here).
pub(super) fn keep(outcome: Box<Outcome>) {
    let _ = STOCK.try_with(|stock| stock.borrow_mut().give(outcome));
}

/// Hands written records back for the workers (the access log's writer thread).
pub(super) fn give_back(done: &mut Vec<Box<Outcome>>) {
    let mut returned = RETURNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let room = SHARED_STOCK.saturating_sub(returned.len()).min(done.len());
    returned.extend(done.drain(..room));
    drop(returned);
    done.clear(); // beyond the stock: freed here
}
