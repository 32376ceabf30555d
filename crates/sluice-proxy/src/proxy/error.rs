//! The one place where a failed request becomes a response: status, a short body
//! naming the cause, Retry-After where waiting helps, and one log line with the id.

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::request_body::ClientBodyError;
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
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpgradeNeedsHttp1 | ProxyError::UnrequestedSwitch => StatusCode::BAD_GATEWAY,
            // sluice's own disk failed it, as nginx answers when it cannot write a temp file.
            ProxyError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
                UpstreamError::PoolExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
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

/// The response for `error`, logged with the request id.
pub(crate) fn error_response(error: &ProxyError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let status = error.status();
    let id = request_id.to_str().unwrap_or("-");
    let clients_fault = matches!(error, ProxyError::Client(_));
    // The client's mistakes are logged as such and quietly (an attacker controls
    // their rate); the upstream's are warnings.
    if clients_fault {
        tracing::debug!(request_id = id, %status, fault = "client", "{error}");
    } else if status == StatusCode::NOT_FOUND {
        tracing::debug!(request_id = id, %status, "{error}");
    } else {
        let fault = if matches!(error, ProxyError::Spool(_)) { "sluice" } else { "upstream" };
        tracing::warn!(request_id = id, %status, fault, "{error}");
    }
    let body = format!("{} {}: {error}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut body = ProxyBody::local(body);
    if clients_fault {
        body.mark_close();
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if matches!(error, ProxyError::Client(ClientError::Connect)) {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(super::target::ALLOWED_METHODS));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The pool wait already took wait_timeout; a second is a fair pause before retrying.
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
