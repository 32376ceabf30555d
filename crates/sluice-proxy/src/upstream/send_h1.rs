//! Sending one request to an HTTP/1 group: a try per connection the attempts allow,
//! each bounded by the per-try timeout or raced by a hedged copy, and the one match
//! that decides, from the try's result, whether to answer, retry or fail.

use std::io;
use std::time::Duration;

use http::StatusCode;
use hyper::Request;

use super::attempts::Attempts;
use super::h1::{self, EncodedRequest, ExchangeError, ResponseHead};
use super::hedge::{race, Winner};
use super::{retry, H1Body, Lease, UpstreamBody, UpstreamError, UpstreamGroup, UpstreamResponse};
use crate::body::RequestBody;
use crate::interim::Interim;

/// One try's result: a response head, how it failed, or None when no head came
/// within the per-try timeout.
type Tried = Option<Result<ResponseHead, ExchangeError>>;

impl UpstreamGroup {
    pub(super) async fn send_http1(
        &self,
        request: Request<RequestBody>,
        idempotent: bool,
        mut attempts: Attempts<'_>,
        interim: Option<&Interim>,
        fields: super::ResponseFields,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let (parts, body) = request.into_parts();
        let mut encoded = EncodedRequest::new(&parts, body);
        encoded.response_fields = fields;
        crate::http1::maps::give(parts.headers);
        // Sending consumes a body: a request that may go again keeps a copy for it.
        let spare = (attempts.replayable && encoded.has_body() && self.retry.retries_after_send())
            .then(|| encoded.replica())
            .flatten();
        // Whether the request can be sent again, from the copy when its body was used.
        let rewind = |encoded: &mut EncodedRequest| {
            encoded.can_resend()
                || match spare.as_ref().and_then(EncodedRequest::replica) {
                    Some(copy) => {
                        *encoded = copy;
                        true
                    }
                    None => false,
                }
        };
        while let Some(mut lease) = attempts.next_lease().await? {
            let hedge = self.hedge_delay(idempotent, &attempts);
            let tried = match hedge.and_then(|delay| encoded.replica().map(|copy| (delay, copy))) {
                Some((delay, copy)) => {
                    // Boxed: two exchanges side by side make a large future, and hedging is rare.
                    let hedged = Box::pin(self.hedged_h1(lease, (&mut encoded, copy), delay, &mut attempts, interim));
                    let (tried, winner) = hedged.await;
                    lease = winner;
                    Some(tried)
                }
                None => self.try_h1(&mut lease, &mut encoded, interim).await,
            };
            let Some(exchanged) = tried else {
                let endpoint = lease.endpoint().clone();
                drop(lease); // that connection may still answer late: it is closed
                let why = "no response head within per_try_timeout";
                attempts.try_timed_out();
                if rewind(&mut encoded) && attempts.retry(retry::Cause::Reset, &endpoint, &why).await {
                    continue;
                }
                return Err(UpstreamError::TryTimeout { endpoint: endpoint.to_string() });
            };
            match exchanged {
                Ok(head)
                    if self.retry.retries_on(head.parts.status)
                        && rewind(&mut encoded)
                        && attempts.retry(retry::Cause::Status, lease.endpoint(), &head.parts.status).await =>
                {
                    // The response is dropped unread, and its connection with it.
                    drop(head);
                    drop(lease);
                }
                Ok(head) => {
                    if let Some(announced) = crate::http1::keep_alive_timeout(&head.parts.headers) {
                        lease.upstream_keeps_idle(announced);
                    }
                    let body = if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
                        UpstreamBody::Switched(Box::new((lease, head.buf)))
                    } else {
                        UpstreamBody::Http1(Box::new(H1Body::new(lease, head.framing, head.reusable, head.buf)))
                    };
                    return Ok(UpstreamResponse { parts: head.parts, body, forwarded: head.forwarded });
                }
                // Nothing reached the upstream: any request goes on another connection.
                Err(ExchangeError::Unsent(e)) if encoded.can_resend() => attempts.stale(lease.endpoint(), &e),
                // Only a request that may go twice goes again: the closed connection
                // may have been closed after the upstream acted on it (RFC 9110 §9.2.2).
                Err(ExchangeError::Stale(e)) if attempts.replayable && rewind(&mut encoded) => {
                    attempts.stale(lease.endpoint(), &e);
                }
                Err(ExchangeError::ClientBody(cause)) => return Err(UpstreamError::ClientBody(cause)),
                Err(ExchangeError::Failed(source))
                    if rewind(&mut encoded) && attempts.retry(retry::Cause::Reset, lease.endpoint(), &source).await => {
                }
                Err(ExchangeError::Unsent(source) | ExchangeError::Stale(source) | ExchangeError::Failed(source)) => {
                    return Err(UpstreamError::Exchange {
                        endpoint: lease.endpoint().to_string(),
                        source: source.into(),
                    });
                }
            }
        }
        Err(attempts.into_error())
    }

    /// One try on `lease`, within the per-try timeout when there is one.
    async fn try_h1(&self, lease: &mut Lease, encoded: &mut EncodedRequest, interim: Option<&Interim>) -> Tried {
        let reused = lease.begin_request();
        let Some(stream) = lease.h1_stream() else { return Some(Err(not_http1())) };
        match self.retry.per_try_timeout() {
            Some(limit) => tokio::time::timeout(limit, h1::exchange(stream, encoded, reused, interim)).await.ok(),
            None => Some(h1::exchange(stream, encoded, reused, interim).await),
        }
    }

    /// Sends `encoded` on `first`; if no response head has come after `delay`, and the
    /// budget allows, sends `copy` to the next endpoint too. The first head wins; the
    /// other exchange is dropped (its connection closed) and its endpoint told the
    /// request was cancelled. Returns the result and the lease it came on.
    async fn hedged_h1(
        &self,
        mut first: Lease,
        (encoded, mut copy): (&mut EncodedRequest, EncodedRequest),
        delay: Duration,
        attempts: &mut Attempts<'_>,
        interim: Option<&Interim>,
    ) -> (Result<ResponseHead, ExchangeError>, Lease) {
        let reused = first.begin_request();
        let Some(stream) = first.h1_stream() else { return (Err(not_http1()), first) };
        let mut one = Box::pin(h1::exchange(stream, encoded, reused, interim));
        let early = tokio::select! {
            result = &mut one => Some(result),
            _ = tokio::time::sleep(delay) => None,
        };
        if let Some(result) = early {
            drop(one);
            return (result, first);
        }
        let Some((mut second, hold)) = attempts.hedge_lease().await else {
            let result = one.await;
            return (result, first);
        };
        let reused = second.begin_request();
        let Some(stream) = second.h1_stream() else {
            let result = one.await;
            return (result, first);
        };
        let mut two = Box::pin(h1::exchange(stream, &mut copy, reused, interim));
        let (result, winner) = race(&mut one, &mut two, Result::is_err).await;
        drop((one, two));
        attempts.hedge_settled(winner, hold, &second);
        match winner {
            Winner::First => (result, first),
            Winner::Second => (result, second),
        }
    }
}

fn not_http1() -> ExchangeError {
    ExchangeError::Failed(io::Error::other("not an HTTP/1 connection"))
}
