//! Read buffers reused per worker thread: a request takes one when its first byte
//! arrives and gives it back when it ends, so an idle connection holds none and a busy
//! worker does not allocate (and glibc does not consolidate) 4 KiB per request.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::BytesMut;

use crate::stock::Stock;

/// The size every read buffer starts with; larger heads and bodies grow it.
pub(crate) const READ_BUFFER: usize = 4096;
/// Buffers kept per worker thread however quiet it is (64 × 4 KiB), and at most (4 MiB),
/// trimmed to demand once a second (`stock`).
const KEPT_MIN: usize = 64;
const KEPT_MAX: usize = 1024;
/// A buffer that grew past this (a large body) is freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 16 * 1024;

/// Buffers given back while still shared, at most: an HTTP/2 stream's upstream response
/// ends (its buffer given back) while the head's values and the body, slices of it, wait
/// for the client; they are free a moment later.
const LATER_MAX: usize = 64;

thread_local! {
    static FREE: RefCell<Stock<BytesMut>> = const { RefCell::new(Stock::new(KEPT_MIN, KEPT_MAX)) };
    static LATER: RefCell<VecDeque<BytesMut>> = const { RefCell::new(VecDeque::new()) };
}

/// An empty buffer with room for at least `READ_BUFFER` bytes.
pub(crate) fn take() -> BytesMut {
    FREE.with(|free| free.borrow_mut().take())
        .or_else(reclaim_later)
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

/// Buffers given back shared that one `take` tries (an atomic load each).
const LATER_TRIES: usize = 4;

/// One of the oldest buffers given back shared that nothing shares any more. Those
/// still held (by a stream still sending, a cache entry...) go to the back of the line.
fn reclaim_later() -> Option<BytesMut> {
    LATER.with(|later| {
        let mut later = later.borrow_mut();
        for _ in 0..LATER_TRIES.min(later.len()) {
            let mut buf = later.pop_front()?;
            if buf.try_reclaim(READ_BUFFER) {
                return Some(buf);
            }
            later.push_back(buf);
        }
        None
    })
}

/// Frees the buffers this thread did not need in the last period, and lets go of those
/// still shared (their memory is freed with their last slice).
pub(crate) fn trim() {
    FREE.with(|free| free.borrow_mut().trim());
    LATER.with(|later| later.borrow_mut().clear());
}

/// Gives a buffer back. Kept for reuse if nothing else shares its memory (header
/// values and body chunks are slices of it while a request lives), else put in line
/// to be tried again, a few at most.
pub(crate) fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    if buf.try_reclaim(READ_BUFFER) {
        return FREE.with(|free| free.borrow_mut().give(buf));
    }
    LATER.with(|later| {
        let mut later = later.borrow_mut();
        if later.len() == LATER_MAX {
            later.pop_front();
        }
        later.push_back(buf);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_only_when_unshared() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let shared = buf.split_to(4).freeze();
        let shared_memory = shared.as_ptr();
        give(buf);
        let mut again = take();
        again.extend_from_slice(b"x");
        assert_ne!(again.as_ptr(), shared_memory, "memory still shared with a live slice is not handed out");
        drop((shared, again));
        let mut later = take();
        assert_eq!(later.as_ptr(), shared_memory, "given back shared, reused once its slices are gone");
        later.extend_from_slice(b"x");
        let pinned = later.split_to(1).freeze();
        give(later);
        trim(); // a period ends: the still-shared buffer is let go
        assert_ne!(take().as_ptr(), shared_memory);
        drop(pinned);
        let mut unshared = take();
        unshared.extend_from_slice(b"abc");
        let ptr = unshared.as_ptr();
        give(unshared);
        let reused = take();
        assert_eq!(reused.as_ptr(), ptr);
        assert!(reused.is_empty() && reused.capacity() >= READ_BUFFER);
    }
}
