//! Sending one request to an HTTP/2 group: a stream per try, each bounded by the
//! per-try timeout or raced by a hedged copy. A request that may go again (see
//! `RetryState::replayable`) keeps a replica of its head and whole body to build the
//! next try from; a request the connection never took goes again as it is.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};

use super::attempts::Attempts;
use super::hedge::{race, Winner};
use super::{retry, Lease, UpstreamBody, UpstreamError, UpstreamGroup, UpstreamResponse};
use crate::body::RequestBody;

/// How one try on an HTTP/2 stream ended.
enum Tried {
    Response(Response<Incoming>),
    /// The connection closed before taking the request: it can go anywhere as it is.
    Unsent(Request<RequestBody>),
    Failed(hyper::Error),
    /// No response head within the per-try timeout (the stream is reset).
    TimedOut,
    NotHttp2,
}

impl From<Option<Result<Response<Incoming>, TrySendError<Request<RequestBody>>>>> for Tried {
    fn from(sent: Option<Result<Response<Incoming>, TrySendError<Request<RequestBody>>>>) -> Self {
        match sent {
            None => Tried::NotHttp2,
            Some(Ok(response)) => Tried::Response(response),
            Some(Err(mut e)) => match e.take_message() {
                Some(unsent) => Tried::Unsent(unsent),
                None => Tried::Failed(e.into_error()),
            },
        }
    }
}

impl Tried {
    fn is_answer(&self) -> bool {
        matches!(self, Tried::Response(_))
    }
}

/// A request's head and whole body, kept to build another try from.
struct Replica {
    head: Request<()>,
    body: RequestBody,
}

impl Replica {
    /// None when the body is not at hand whole.
    fn of(request: &Request<RequestBody>) -> Option<Replica> {
        let body = request.body().replica()?;
        let mut head = Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = request.headers().clone();
        Some(Replica { head, body })
    }

    fn make(&self) -> Request<RequestBody> {
        let mut request = Request::new(self.body.replica().unwrap_or(RequestBody::Empty));
        *request.method_mut() = self.head.method().clone();
        *request.uri_mut() = self.head.uri().clone();
        *request.version_mut() = self.head.version();
        *request.headers_mut() = self.head.headers().clone();
        request
    }
}

impl UpstreamGroup {
    pub(super) async fn send_http2(
        &self,
        mut request: Request<RequestBody>,
        idempotent: bool,
        mut attempts: Attempts<'_>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let hedging = idempotent && self.retry.hedge_after().is_some();
        let replica = (attempts.replayable && (self.retry.retries_after_send() || hedging))
            .then(|| Replica::of(&request))
            .flatten();
        while let Some(mut lease) = attempts.next_lease().await? {
            let hedge = replica.as_ref().and_then(|replica| Some((self.hedge_delay(idempotent, &attempts)?, replica)));
            let tried = match hedge {
                Some((delay, replica)) => {
                    // Boxed: two tries side by side make a large future, and hedging is rare.
                    let hedged = Box::pin(self.hedged_h2(lease, request, replica, delay, &mut attempts));
                    let (tried, winner) = hedged.await;
                    lease = winner;
                    tried
                }
                None => self.try_h2(&mut lease, request).await,
            };
            // What the next try sends, if there is one.
            let again = || replica.as_ref().map(Replica::make);
            request = match tried {
                Tried::Response(response) => {
                    let status = response.status();
                    if self.retry.retries_on(status) {
                        if let Some(next) = again() {
                            if attempts.retry(retry::Cause::Status, lease.endpoint(), &status).await {
                                drop(response); // its stream is reset
                                request = next;
                                continue;
                            }
                        }
                    }
                    let (parts, body) = response.into_parts();
                    return Ok(UpstreamResponse {
                        parts,
                        body: UpstreamBody::Http2(Box::new(super::H2Body { body, _lease: lease })),
                        forwarded: None,
                    });
                }
                Tried::Unsent(unsent) => {
                    attempts.stale(lease.endpoint(), &"HTTP/2 connection closed before the request");
                    unsent
                }
                Tried::Failed(error) => {
                    if let Some(cause) = crate::body::client_cause(&error) {
                        return Err(UpstreamError::ClientBody(cause));
                    }
                    match again() {
                        Some(next) if attempts.retry(retry::Cause::Reset, lease.endpoint(), &error).await => next,
                        _ => {
                            let endpoint = lease.endpoint().to_string();
                            return Err(UpstreamError::Exchange { endpoint, source: error.into() });
                        }
                    }
                }
                Tried::TimedOut => {
                    let why = "no response head within per_try_timeout";
                    attempts.try_timed_out();
                    match again() {
                        Some(next) if attempts.retry(retry::Cause::Reset, lease.endpoint(), &why).await => next,
                        _ => return Err(UpstreamError::TryTimeout { endpoint: lease.endpoint().to_string() }),
                    }
                }
                Tried::NotHttp2 => return Err(UpstreamError::NoEndpoint),
            };
        }
        Err(attempts.into_error())
    }

    /// One try on `lease`, within the per-try timeout when there is one.
    async fn try_h2(&self, lease: &mut Lease, request: Request<RequestBody>) -> Tried {
        let sending = lease.send_h2(request);
        match self.retry.per_try_timeout() {
            Some(limit) => tokio::time::timeout(limit, sending).await.map_or(Tried::TimedOut, Tried::from),
            None => Tried::from(sending.await),
        }
    }

    /// Sends `request` on `first`; if no response head has come after `delay`, and the
    /// budget allows, sends a copy to the next endpoint too. The first answer wins; the
    /// other stream is reset and its endpoint told the request was cancelled.
    async fn hedged_h2(
        &self,
        mut first: Lease,
        request: Request<RequestBody>,
        replica: &Replica,
        delay: Duration,
        attempts: &mut Attempts<'_>,
    ) -> (Tried, Lease) {
        let mut one = Box::pin(async { Tried::from(first.send_h2(request).await) });
        let early = tokio::select! {
            tried = &mut one => Some(tried),
            _ = tokio::time::sleep(delay) => None,
        };
        if let Some(tried) = early {
            drop(one);
            return (tried, first);
        }
        let Some((mut second, hold)) = attempts.hedge_lease().await else {
            let tried = one.await;
            return (tried, first);
        };
        let copy = replica.make();
        let mut two = Box::pin(async { Tried::from(second.send_h2(copy).await) });
        let (tried, winner) = race(&mut one, &mut two, |tried: &Tried| !tried.is_answer()).await;
        drop((one, two));
        attempts.hedge_settled(winner, hold, &second);
        match winner {
            Winner::First => (tried, first),
            Winner::Second => (tried, second),
        }
    }
}
