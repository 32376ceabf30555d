//! The tries of one request: which endpoint next (balancer order), another connection
//! after a closed pooled one, whether a retry or a hedged copy is allowed
//! (the group's budget and circuit breaker), all counted in the request's record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::hedge::Winner;
use super::pool::QueueWait;
use super::{balance, retry, Lease, UpstreamError, UpstreamGroup};
use crate::outcome::Outcome;

/// A count held for as long as the guard lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one more unless `limit` is reached.
    fn enter(count: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let now = count.fetch_add(1, Ordering::Relaxed);
        if now >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Counted(count))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections one request may try: endpoints in balancer order, and on each
/// another connection after a closed pooled one. Each try is counted in the record.
pub(super) struct Attempts<'a> {
    group: &'a UpstreamGroup,
    /// The balancer's pick: endpoints are tried in order from it (`nth_in_order`).
    first: usize,
    next_endpoint: usize,
    current: Option<usize>,
    /// The last try found its pooled connection closed by the upstream: the next goes
    /// to the same endpoint, on another pooled connection or a new one. Not a retry and
    /// not limited: each such try uses up a pooled connection, and a new one is never
    /// taken for closed (`Lease::begin_request`), so the pool's own size bounds them.
    resend_here: bool,
    /// May be sent again after it was sent (idempotent, or its body read whole).
    pub(super) replayable: bool,
    last_error: UpstreamError,
    outcome: &'a mut Outcome,
    /// Retries made (connect failover, resets, statuses), against `retry`'s limits.
    pub(super) retries: u32,
    /// Held from the first retry: this request counts against `max_retries`.
    retrying: Option<Counted<'a>>,
    /// The request's time in line for connections, over all its tries.
    queue: QueueWait,
}

impl<'a> Attempts<'a> {
    /// `queue`: the request's time in line so far (the adaptive limit's), for the pools' lines.
    pub(super) fn new(
        group: &'a UpstreamGroup,
        replayable: bool,
        key: Option<u64>,
        outcome: &'a mut Outcome,
        queue: QueueWait,
    ) -> Self {
        group.retry.deposit();
        let first = balance::pick(&group.balancer, &group.loads, key);
        Attempts {
            group,
            first,
            next_endpoint: 0,
            current: None,
            resend_here: false,
            replayable,
            last_error: UpstreamError::NoEndpoint,
            outcome,
            retries: 0,
            retrying: None,
            queue,
        }
    }

    fn endpoint_in_order(&self, i: usize) -> Option<usize> {
        self.group.balancer.nth_in_order(self.first, i)
    }

    /// The next endpoint in order that has not asked for a pause. When every one left
    /// has (and this is the request's first endpoint), waits for the first to be free if
    /// the request's time in line allows, else `Paced`.
    async fn next_unpaced(&mut self) -> Result<Option<usize>, UpstreamError> {
        loop {
            let mut shortest: Option<std::time::Duration> = None;
            while let Some(index) = self.endpoint_in_order(self.next_endpoint) {
                self.next_endpoint += 1;
                match self.group.pacing.remaining(index) {
                    None => return Ok(Some(index)),
                    Some(left) => shortest = Some(shortest.map_or(left, |s| s.min(left))),
                }
            }
            // Retries do not wait for a paused endpoint: the failure stands.
            let (Some(wait), None) = (shortest, self.current) else { return Ok(None) };
            match self.queue.deadline() {
                Some(deadline) if tokio::time::Instant::now() + wait <= deadline => {
                    // Boxed: rare, and a timer inline would grow every request's future.
                    Box::pin(tokio::time::sleep(wait)).await;
                    self.next_endpoint = 0;
                }
                _ => return Err(UpstreamError::Paced { retry_after: wait }),
            }
        }
    }

    /// The next connection to try, or None when every allowed try is spent.
    pub(super) async fn next_lease(&mut self) -> Result<Option<Lease>, UpstreamError> {
        loop {
            let index = match self.current {
                Some(index) if self.resend_here => index,
                _ => {
                    let Some(index) = self.next_unpaced().await? else { return Ok(None) };
                    self.current = Some(index);
                    index
                }
            };
            self.resend_here = false;
            let pool = &self.group.pools[index];
            self.outcome.upstream_trace.endpoint = Some(Arc::clone(pool.label()));
            self.outcome.begin_try(pool.label(), false);
            self.group.loads[index].begin(self.outcome);
            let Some(waiting) = Counted::enter(&self.group.pending, self.group.breaker.max_pending) else {
                return Err(self.group.overloaded("max_pending"));
            };
            let checkout = pool.checkout(&mut self.queue).await;
            drop(waiting);
            match checkout {
                Ok(lease) => return Ok(Some(lease)),
                // Nothing was sent: any request, POST included, may go to the next endpoint.
                Err(e) if e.is_connect_failure() => {
                    self.outcome.end_try("connect_failed");
                    let more = self.endpoint_in_order(self.next_endpoint).is_some()
                        && self.count_as_retrying()
                        && self.group.retry.allow(retry::Cause::ConnectFailure, self.retries);
                    if more {
                        self.retries += 1;
                    }
                    tracing::warn!(
                        request_id = self.outcome.request_id(),
                        route = self.outcome.route.as_deref().unwrap_or("-"),
                        upstream = %self.group.name,
                        error = %e,
                        "{}", if more { "connect failed; trying the next endpoint" } else { "connect failed; no endpoint left" }
                    );
                    if !more {
                        return Err(e);
                    }
                    self.last_error = e; // this endpoint is down: move on
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether to try again elsewhere after a reset or a retried status; if so, waits
    /// the backoff and moves to the next endpoint (round again from the first choice
    /// when every one was tried).
    pub(super) async fn retry(
        &mut self,
        cause: retry::Cause,
        endpoint: &Arc<str>,
        why: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        if !self.replayable || !self.count_as_retrying() || !self.group.retry.allow(cause, self.retries) {
            return false;
        }
        self.retries += 1;
        self.outcome.end_try(cause.failure_kind());
        tracing::debug!(
            request_id = self.outcome.request_id(),
            upstream = %self.group.name,
            endpoint = %endpoint,
            %why,
            retry = self.retries,
            "retrying on another endpoint"
        );
        tokio::time::sleep(self.group.retry.backoff(self.retries)).await;
        self.current = None;
        if self.endpoint_in_order(self.next_endpoint).is_none() {
            self.next_endpoint = 0;
        }
        true
    }

    /// A connection to the next endpoint for a hedged copy, if the budget allows: the
    /// endpoint counts it as outstanding, but the record does not report to it unless
    /// it wins. None when there is no other endpoint, or no budget, or no connection.
    pub(super) async fn hedge_lease(&mut self) -> Option<(Lease, balance::Hedge)> {
        let index = self.endpoint_in_order(self.next_endpoint)?;
        if self.group.pacing.remaining(index).is_some() {
            return None; // it asked for a pause
        }
        if !self.count_as_retrying() || !self.group.retry.allow(retry::Cause::Hedge, self.retries) {
            return None;
        }
        self.retries += 1;
        self.next_endpoint += 1;
        let hold = self.group.loads[index].begin_hedge();
        self.outcome.begin_try(self.group.pools[index].label(), true);
        // A copy goes out only on a connection free now: waiting in line would only
        // delay the requests behind it.
        let lease = match self.group.pools[index].checkout(&mut QueueWait::none()).await {
            Ok(lease) => lease,
            Err(e) => {
                let no_room = matches!(e, UpstreamError::QueueTimeout { .. });
                self.outcome.end_try(if no_room { "no_free_connection" } else { "connect_failed" });
                return None;
            }
        };
        Some((lease, hold))
    }

    /// A hedging race is over: the losing try ends (for the request's trace). When the
    /// hedged copy (on `second`) won, the record names its endpoint and reports to it;
    /// otherwise `hold` is dropped, which tells its endpoint the copy was cancelled.
    pub(super) fn hedge_settled(&mut self, winner: Winner, hold: balance::Hedge, second: &Lease) {
        self.outcome.end_hedge_loser(winner == Winner::Second);
        if winner == Winner::Second {
            self.outcome.upstream_trace.endpoint = Some(Arc::clone(second.endpoint()));
            hold.won(self.outcome);
        }
    }

    /// The current try had no response head within the per-try timeout.
    pub(super) fn try_timed_out(&mut self) {
        self.outcome.end_try("per_try_timeout");
    }

    /// Whether this request may be among those retrying (`max_retries`); it stays
    /// counted until it is done.
    fn count_as_retrying(&mut self) -> bool {
        if self.retrying.is_none() {
            self.retrying = Counted::enter(&self.group.retrying, self.group.breaker.max_retries);
        }
        self.retrying.is_some()
    }

    /// The last lease's connection had been closed by the upstream before it took the
    /// request: the next lease is another connection to the same endpoint.
    pub(super) fn stale(&mut self, endpoint: &Arc<str>, error: &dyn std::fmt::Display) {
        self.resend_here = true;
        self.outcome.end_try("stale_connection");
        tracing::debug!(
            request_id = self.outcome.request_id(),
            endpoint = %endpoint,
            %error,
            "pooled connection was closed before the request; resending"
        );
        self.last_error = UpstreamError::StaleConnections { endpoint: endpoint.to_string() };
    }

    pub(super) fn into_error(self) -> UpstreamError {
        self.last_error
    }
}
