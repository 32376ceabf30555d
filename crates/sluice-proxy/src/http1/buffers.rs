//! Read buffers reused per worker thread: a request takes one when its first byte
//! arrives and gives it back when it ends, so an idle connection holds none and a busy
//! worker does not allocate (and glibc does not consolidate) 4 KiB per request.

use std::cell::RefCell;

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

thread_local! {
    static FREE: RefCell<Stock<BytesMut>> = const { RefCell::new(Stock::new(KEPT_MIN, KEPT_MAX)) };
}

/// An empty buffer with room for at least `READ_BUFFER` bytes.
pub(crate) fn take() -> BytesMut {
    FREE.with(|free| free.borrow_mut().take()).unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

/// Frees the buffers this thread did not need in the last period.
pub(crate) fn trim() {
    FREE.with(|free| free.borrow_mut().trim());
}

/// Gives a buffer back. Kept only if nothing else still shares its memory (header
/// values and body chunks are slices of it while a request lives).
pub(crate) fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() > MAX_KEPT_CAPACITY || !buf.try_reclaim(READ_BUFFER) {
        return;
    }
    FREE.with(|free| free.borrow_mut().give(buf));
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
        let mut unshared = take();
        unshared.extend_from_slice(b"abc");
        let ptr = unshared.as_ptr();
        give(unshared);
        let reused = take();
        assert_eq!(reused.as_ptr(), ptr);
        assert!(reused.is_empty() && reused.capacity() >= READ_BUFFER);
    }
}
