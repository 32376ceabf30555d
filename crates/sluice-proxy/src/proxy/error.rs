//! The one place where a failed request becomes a response: status, a short body
//! naming the cause, Retry-After where waiting helps, and one log line with the id.

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::body::ClientBodyError;
use crate::limit::Refusal;
use crate::outcome::Outcome;
use crate::upstream::UpstreamError;

/// A request sluice will not take as it was sent: the client's fault, logged and
/// counted as such, never as an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("request target too long")]
    UriTooLong,
    #[error("HTTP version not supported")]
    Version,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("request head not received within header_read_timeout")]
    HeadTimeout,
    #[error("bad request path: {0}")]
    Path(sluice_policy::path::PathError),
    #[error("CONNECT is not supported: sluice is a reverse proxy, not a tunnel")]
    Connect,
    #[error(transparent)]
    Body(#[from] ClientBodyError),
}

/// Why sluice answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("upstream did not answer within the route timeout")]
    Timeout,
    #[error("WebSocket and other upgrades need an http1 upstream group")]
    UpgradeNeedsHttp1,
    #[error("upstream switched protocols without being asked to")]
    UnrequestedSwitch,
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Spool(super::spool::SpoolError),
    /// The client asked for a cached response only (`only-if-cached`) and there is none.
    #[error("not in the cache, and the request said only-if-cached")]
    NotCached,
    /// PURGE from a client outside `cache.purge_from`.
    #[error("PURGE is not allowed from this address")]
    PurgeForbidden,
    /// The route's `auth` did not accept the request's credential (boxed: its
    /// challenge travels with it). The client is told no more than that.
    #[error("authentication required")]
    Unauthorized(Box<crate::auth::Refused>),
    /// A route's rate limit refused the request (boxed: its fields travel with it).
    #[error("{}", rate_refusal(.0))]
    RateLimited(Box<crate::limit::Refused>),
}

fn rate_refusal(refused: &crate::limit::Refused) -> String {
    match &refused.why {
        Refusal::Rate => "over the route's rate limit".to_string(),
        Refusal::MissingKey(header) => format!("the request has no {header}, which the route's rate limit counts by"),
        Refusal::StoreDown => "the rate limit's Redis did not answer and on_store_error is \"closed\"".to_string(),
    }
}

/// A request body that broke off while it was being sent upstream is the client's
/// failure: it becomes a client error here, the one place upstream errors convert.
impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::ClientBody(cause) => ProxyError::Client(ClientError::Body(cause)),
            other => ProxyError::Upstream(other),
        }
    }
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::RateLimited(refused) => match refused.why {
                Refusal::Rate => StatusCode::TOO_MANY_REQUESTS,
                Refusal::MissingKey(_) => StatusCode::BAD_REQUEST,
                Refusal::StoreDown => StatusCode::SERVICE_UNAVAILABLE,
            },
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpgradeNeedsHttp1 | ProxyError::UnrequestedSwitch => StatusCode::BAD_GATEWAY,
            // sluice's own disk failed it, as nginx answers when it cannot write a temp file.
            ProxyError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // RFC 9111 §5.2.1.7.
            ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::PurgeForbidden => StatusCode::FORBIDDEN,
            ProxyError::Client(e) => match e {
                ClientError::Malformed(_)
                | ClientError::Path(_)
                | ClientError::Body(ClientBodyError::Malformed(_) | ClientBodyError::Closed) => StatusCode::BAD_REQUEST,
                ClientError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ClientError::UriTooLong => StatusCode::URI_TOO_LONG,
                ClientError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                ClientError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
                ClientError::HeadTimeout | ClientError::Body(ClientBodyError::Timeout) => StatusCode::REQUEST_TIMEOUT,
                ClientError::Connect => StatusCode::METHOD_NOT_ALLOWED,
                ClientError::Body(ClientBodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            },
            ProxyError::Upstream(e) => match e {
                UpstreamError::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Tls { .. } => StatusCode::BAD_GATEWAY,
                UpstreamError::QueueTimeout { .. } | UpstreamError::Overloaded { .. } | UpstreamError::Paced { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                UpstreamError::TryTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Connect { .. }
                | UpstreamError::Exchange { .. }
                | UpstreamError::StaleConnections { .. }
                | UpstreamError::NoEndpoint => StatusCode::BAD_GATEWAY,
                // `From<UpstreamError>` makes this a ProxyError::Client; never seen here.
                UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
            },
        }
    }
}

impl ProxyError {
    /// The limit that refused the request, when one did (the record's `limit`): the
    /// group's circuit breaker, or a pool with no connection free in time.
    fn limit(&self) -> Option<&'static str> {
        match self {
            ProxyError::Upstream(UpstreamError::Overloaded { limit, .. }) => Some(limit),
            ProxyError::Upstream(UpstreamError::QueueTimeout { .. }) => Some("queue"),
            ProxyError::RateLimited(_) => Some("rate"),
            ProxyError::Upstream(UpstreamError::Paced { .. }) => Some("upstream_paced"),
            _ => None,
        }
    }

    /// The record's error kind: short, stable, snake_case (metrics labels use it later).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::Timeout => "upstream_timeout",
            ProxyError::UpgradeNeedsHttp1 => "upgrade_needs_http1",
            ProxyError::UnrequestedSwitch => "upstream_unrequested_switch",
            ProxyError::Spool(_) => "spool_failed",
            ProxyError::NotCached => "not_cached",
            ProxyError::PurgeForbidden => "purge_forbidden",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::RateLimited(refused) => match refused.why {
                Refusal::Rate => "rate_limited",
                Refusal::MissingKey(_) => "rate_key_missing",
                Refusal::StoreDown => "rate_store_unavailable",
            },
            ProxyError::Client(e) => match e {
                ClientError::Malformed(_) => "client_malformed",
                ClientError::HeadTooLarge => "client_head_too_large",
                ClientError::UriTooLong => "client_uri_too_long",
                ClientError::Version => "client_version",
                ClientError::NotImplemented(_) => "client_not_implemented",
                ClientError::HeadTimeout => "client_head_timeout",
                ClientError::Path(_) => "client_bad_path",
                ClientError::Connect => "client_connect_method",
                ClientError::Body(ClientBodyError::TooLarge) => "client_body_too_large",
                ClientError::Body(ClientBodyError::Timeout) => "client_body_timeout",
                ClientError::Body(ClientBodyError::Malformed(_)) => "client_body_malformed",
                ClientError::Body(ClientBodyError::Closed) => "client_body_closed",
            },
            ProxyError::Upstream(e) => match e {
                UpstreamError::Connect { .. } => "upstream_connect",
                UpstreamError::ConnectTimeout { .. } => "upstream_connect_timeout",
                UpstreamError::Tls { .. } => "upstream_tls",
                UpstreamError::QueueTimeout { .. } => "upstream_queue_timeout",
                UpstreamError::Paced { .. } => "upstream_paced",
                UpstreamError::Overloaded { .. } => "upstream_overloaded",
                UpstreamError::TryTimeout { .. } => "upstream_try_timeout",
                UpstreamError::Exchange { .. } => "upstream_exchange",
                UpstreamError::StaleConnections { .. } => "upstream_stale_connections",
                UpstreamError::NoEndpoint => "upstream_no_endpoint",
                UpstreamError::ClientBody(_) => "client_body_closed",
            },
        }
    }

    /// What the client is told: the cause, never an internal address (the log has those).
    fn public_message(&self) -> String {
        match self {
            ProxyError::Upstream(e) => match e {
                UpstreamError::Connect { .. } => "could not connect to the upstream",
                UpstreamError::ConnectTimeout { .. } => "connecting to the upstream timed out",
                UpstreamError::Tls { .. } => "the TLS handshake with the upstream failed",
                UpstreamError::QueueTimeout { .. } => "every upstream connection is busy; retry shortly",
                UpstreamError::Paced { .. } => "the upstream asked for a pause; retry after the time given",
                UpstreamError::Overloaded { .. } => "the upstream is at its limit of requests in flight; retry shortly",
                UpstreamError::TryTimeout { .. } => "the upstream did not answer in time",
                UpstreamError::Exchange { .. } => "the upstream failed while handling the request",
                UpstreamError::StaleConnections { .. } => "the upstream closed its connections",
                UpstreamError::NoEndpoint => "the upstream group has no endpoint",
                UpstreamError::ClientBody(_) => "the request body broke off",
            }
            .to_string(),
            // sluice's own disk: the path is internal too.
            ProxyError::Spool(_) => "could not store the request body".to_string(),
            ProxyError::RateLimited(refused) if refused.why == Refusal::StoreDown => {
                "the rate limiter is unavailable; retry shortly".to_string()
            }
            other => other.to_string(),
        }
    }
}

/// Whether the client speaks gRPC (`content-type: application/grpc[+proto|...]`), so
/// that an error reaches it as a gRPC status it can read.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The response for `error`, logged with the request's id, route and upstream.
pub(crate) fn error_response(error: &ProxyError, outcome: &mut Outcome, grpc: bool) -> Response<ProxyBody> {
    let status = error.status();
    outcome.error = Some(error.kind());
    outcome.limit = error.limit();
    if let ProxyError::Unauthorized(refused) = error {
        outcome.auth = Some(refused.reason);
    }
    let id = outcome.request_id();
    let route = outcome.route.as_deref().unwrap_or("-");
    let upstream = outcome.upstream.as_deref().unwrap_or("-");
    let clients_fault = matches!(error, ProxyError::Client(_));
    // Refused by a limit: the client's doing (and an attacker's rate), logged quietly.
    let limited = matches!(
        error,
        ProxyError::RateLimited(_) | ProxyError::Upstream(UpstreamError::Paced { .. }) | ProxyError::Unauthorized(_)
    );
    if let ProxyError::Unauthorized(refused) = error {
        tracing::debug!(request_id = id, route, reason = refused.reason, "credential refused");
    }
    // The client's mistakes are logged as such and quietly (an attacker controls
    // their rate); the upstream's are warnings.
    if clients_fault {
        tracing::debug!(request_id = id, route, %status, fault = "client", "{error}");
    } else if limited {
        tracing::debug!(request_id = id, route, %status, "{error}");
    } else if matches!(error, ProxyError::NotCached) {
        // only-if-cached: the client's choice, not anyone's fault.
        tracing::debug!(request_id = id, route, %status, "{error}");
    } else if status == StatusCode::NOT_FOUND {
        tracing::debug!(request_id = id, %status, "{error}");
    } else {
        let fault = if matches!(error, ProxyError::Spool(_)) { "sluice" } else { "upstream" };
        tracing::warn!(request_id = id, route, upstream, %status, fault, "{error}");
    }
    let message = error.public_message();
    let mut response = if grpc {
        grpc_error(status, &message)
    } else {
        let body = format!("{} {}: {message}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
        let mut response = Response::new(ProxyBody::local(body));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    };
    if clients_fault {
        response.body_mut().mark_close();
    }
    if matches!(error, ProxyError::Client(ClientError::Connect)) {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(super::target::ALLOWED_METHODS));
    }
    if let ProxyError::Unauthorized(refused) = error {
        refused.apply(response.headers_mut());
    }
    // When to come back: what a limit or the upstream said, else (a wait in line that
    // already took queue_timeout, a circuit breaker) a second.
    let retry_after = match error {
        ProxyError::RateLimited(refused) => {
            refused.fields.apply(response.headers_mut());
            Some(refused.retry_after)
        }
        ProxyError::Upstream(UpstreamError::Paced { retry_after }) => Some(*retry_after),
        _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(std::time::Duration::from_secs(1)),
        _ => None,
    };
    if let Some(after) = retry_after {
        let seconds = crate::limit::seconds_up(after).max(1);
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A gRPC "Trailers-Only" error: HTTP 200, the status in `grpc-status` and
/// `grpc-message` (percent-encoded), no body; the HTTP status mapped as Envoy does
/// for its own replies (gRPC's HTTP-to-status table, reversed).
fn grpc_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let code = match status {
        StatusCode::BAD_REQUEST => "3",                                       // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => "16",                                     // UNAUTHENTICATED
        StatusCode::FORBIDDEN => "7",                                         // PERMISSION_DENIED
        StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED => "12",          // UNIMPLEMENTED
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => "8", // RESOURCE_EXHAUSTED
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "4",     // DEADLINE_EXCEEDED
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => "14",    // UNAVAILABLE
        _ => "13",                                                            // INTERNAL
    };
    let mut encoded = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    response
}
