//! Hop-by-hop fields (RFC 9110 §7.6.1) taken off a message: the ones `HOP_BY_HOP`
//! lists and every field `Connection` names. HTTP/1 framing's own concern, used by
//! every layer above that forwards a head (proxy, the server's HTTP/2 streams, 1xx
//! interim responses).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{tokens, HOP_BY_HOP};

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a few, compared without hashing) finds which
    // of these there are: most messages carry none, an upstream's usually only
    // Connection; only those are removed (each removal is a hashed lookup).
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    if present[0] {
        remove_connection_named(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(*name);
    }
}

/// Removes the fields that the Connection header names. Its values are held apart (a
/// reference count each, no copy) so that the fields can be removed as the tokens are
/// read; the usual single value needs no list (an empty `Vec` allocates nothing), where
/// a list of names cost ~250 instructions a request (callgrind). `keep-alive`, the usual
/// token, is in `HOP_BY_HOP` and removed anyway.
fn remove_connection_named(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONNECTION).iter();
    let first = values.next().cloned();
    let rest: Vec<HeaderValue> = values.cloned().collect();
    for value in first.iter().chain(&rest) {
        for token in tokens(value.as_bytes()) {
            if token.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                headers.remove(name);
            }
        }
    }
}
