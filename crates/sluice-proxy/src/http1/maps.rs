//! Header maps reused per worker thread, like the read buffers (`buffers`): a parsed
//! head takes an emptied map and the exchange gives it back once the head is encoded
//! (the request's toward the upstream, the response's toward the client). Two maps a
//! request, each two allocations, were a tenth of glibc's work per request (callgrind).

use std::cell::RefCell;

use http::HeaderMap;

use crate::stock::Stock;

/// Maps kept per worker thread however quiet it is, and at most (trimmed to demand
/// once a second with the buffers); a map that grew past `MAX_KEPT_CAPACITY` fields
/// (a large head) is freed rather than kept.
const KEPT_MIN: usize = 64;
const KEPT_MAX: usize = 1024;
const MAX_KEPT_CAPACITY: usize = 64;
/// Every map made here has room for this many fields (a response head and what the
/// proxy adds), so that any kept map fits the next head; smaller ones given back (the
/// h2 crate's, of a few request fields) are freed, since growing one costs more than
/// making one.
const TYPICAL_FIELDS: usize = 16;

thread_local! {
    static FREE: RefCell<Stock<HeaderMap>> = const { RefCell::new(Stock::new(KEPT_MIN, KEPT_MAX)) };
}

/// An empty map with room for `fields` without growing.
pub(crate) fn take(fields: usize) -> HeaderMap {
    match FREE.try_with(|free| free.borrow_mut().take()) {
        Ok(Some(mut map)) => {
            map.reserve(fields);
            map
        }
        _ => HeaderMap::with_capacity(fields.max(TYPICAL_FIELDS)),
    }
}

/// Gives a map back, emptied; its values (slices of a read buffer) are let go now.
pub(crate) fn give(mut map: HeaderMap) {
    if !(TYPICAL_FIELDS..=MAX_KEPT_CAPACITY).contains(&map.capacity()) {
        return;
    }
    map.clear();
    let _ = FREE.try_with(|free| free.borrow_mut().give(map));
}

/// Frees the maps this thread did not need in the last period.
pub(crate) fn trim() {
    let _ = FREE.try_with(|free| free.borrow_mut().trim());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_come_back_empty_with_their_room() {
        let mut map = take(16);
        map.insert("a", "1".parse().expect("value"));
        let room = map.capacity();
        give(map);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the same map, not a new one");
        let mut big = take(200);
        for i in 0..200 {
            big.insert(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).expect("name"),
                "v".parse().expect("value"),
            );
        }
        give(big);
        assert!(take(1).capacity() < 200, "a grown map is freed, not kept");
        let small = HeaderMap::with_capacity(2);
        let small_room = small.capacity();
        give(small);
        assert!(take(1).capacity() >= TYPICAL_FIELDS.max(small_room + 1), "a small map is not kept");
    }
}
