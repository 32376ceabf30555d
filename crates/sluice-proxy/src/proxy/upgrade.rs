//! HTTP/1.1 upgrades (WebSocket): the request asks, the upstream answers 101, and the
//! connection layer joins the two connections into a byte tunnel.

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, Version};

use super::body::{ProxyBody, UpstreamUpgrade};
use super::headers;
use super::request_body::RequestBody;

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade`).
pub(crate) fn requested(request: &Request<RequestBody>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = request.headers().get(UPGRADE)?;
    let asks = crate::http1::has_token(request.headers(), &CONNECTION, "upgrade");
    asks.then(|| protocol.clone())
}

/// The client's 101, carrying the upstream connection for the tunnel.
pub(crate) fn switching(
    mut parts: http::response::Parts,
    protocol: HeaderValue,
    upstream: UpstreamUpgrade,
) -> Response<ProxyBody> {
    let upgrade_to = parts.headers.get(UPGRADE).cloned().unwrap_or(protocol);
    headers::remove_hop_by_hop(&mut parts.headers);
    parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(UPGRADE, upgrade_to);
    Response::from_parts(parts, ProxyBody::switching(upstream))
}
