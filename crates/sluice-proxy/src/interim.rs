//! Interim (1xx) responses on their way from an upstream to the client while the
//! final response is awaited: 103 Early Hints, 102 Processing and any other 1xx but
//! 100 (sluice's own go-ahead, or the upstream's, which releases the body) and 101
//! (a final answer to an upgrade). RFC 9110 §15.2: a proxy forwards them.
//!
//! The client's connection (HTTP/1.1) or stream task (HTTP/2) owns one `Interim` per
//! request, lends it down the request path (`proxy::handle` → `Origin` → the upstream
//! exchange), and sends what the exchange puts in it before the final response. All of
//! it runs in one task, so this is a queue with a waker, not a channel: it costs nothing
//! until an upstream sends a 1xx.
//!
//! Only HTTP/1 upstreams fill it: hyper's HTTP/2 client drops the 1xx it receives
//! (hyperium/hyper#4114, open), so an HTTP/2 upstream's are not relayed.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, StatusCode};

/// Interim heads not yet written to the client at most; more are dropped (an upstream
/// that floods 1xx gains nothing, and the client sees the final response regardless).
const PENDING_MAX: usize = 8;

/// One interim response: status and fields (hop-by-hop fields already removed).
pub(crate) struct InterimHead {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

/// The per-request queue of interim heads.
#[derive(Default)]
pub(crate) struct Interim {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A Vec, not a VecDeque (at most 8, so `remove(0)` is cheap): the VecDeque's 8 more
    /// bytes in every request's exchange future cost 7.7k instructions per HTTP/1
    /// request (49.9k; the box it is moved into was no longer filled in place).
    heads: Vec<InterimHead>,
    waker: Option<Waker>,
}

impl Interim {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `status` is one this relays.
    pub(crate) fn relays(status: StatusCode) -> bool {
        status.is_informational() && status != StatusCode::CONTINUE && status != StatusCode::SWITCHING_PROTOCOLS
    }

    /// Queues a head for the client (the upstream side).
    pub(crate) fn push(&self, status: StatusCode, mut headers: HeaderMap) {
        crate::http1::hop::remove_hop_by_hop(&mut headers);
        // A 1xx has no content: framing fields in one are meaningless at best.
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        let mut state = self.state();
        if state.heads.len() >= PENDING_MAX {
            tracing::debug!(%status, "interim response dropped: {PENDING_MAX} already wait for the client");
            return;
        }
        state.heads.push(InterimHead { status, headers });
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Whether heads are queued.
    pub(crate) fn is_pending(&self) -> bool {
        !self.state().heads.is_empty()
    }

    /// The oldest queued head, if any.
    pub(crate) fn take(&self) -> Option<InterimHead> {
        let mut state = self.state();
        (!state.heads.is_empty()).then(|| state.heads.remove(0))
    }

    /// Ready with the next head once one is queued (the connection side).
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<InterimHead> {
        let mut state = self.state();
        if !state.heads.is_empty() {
            return Poll::Ready(state.heads.remove(0));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_1xx_but_continue_and_switching() {
        assert!(Interim::relays(StatusCode::from_u16(103).expect("103")));
        assert!(Interim::relays(StatusCode::PROCESSING));
        assert!(!Interim::relays(StatusCode::CONTINUE));
        assert!(!Interim::relays(StatusCode::SWITCHING_PROTOCOLS));
        assert!(!Interim::relays(StatusCode::OK));
    }

    #[test]
    fn heads_come_out_in_order_without_hop_by_hop_fields_and_bounded() {
        let interim = Interim::default();
        let mut headers = HeaderMap::new();
        headers.insert("link", "</a.css>; rel=preload".parse().expect("value"));
        headers.insert("connection", "x-hop".parse().expect("value"));
        headers.insert("x-hop", "1".parse().expect("value"));
        headers.insert("content-length", "5".parse().expect("value"));
        interim.push(StatusCode::PROCESSING, HeaderMap::new());
        interim.push(StatusCode::from_u16(103).expect("103"), headers);
        for _ in 0..20 {
            interim.push(StatusCode::PROCESSING, HeaderMap::new());
        }
        assert_eq!(interim.take().map(|h| h.status), Some(StatusCode::PROCESSING));
        let hints = interim.take().expect("the 103");
        assert_eq!(hints.status.as_u16(), 103);
        assert_eq!(hints.headers.len(), 1, "only Link is left: {:?}", hints.headers);
        let mut left = 0;
        while interim.take().is_some() {
            left += 1;
        }
        assert_eq!(left, PENDING_MAX - 2);
    }
}
