//! HTTP/1.1 upgrades: the request asks, the upstream answers 101, and the connection
//! layer joins the two connections into a byte tunnel. Only the protocols a route lists
//! (`upgrades`, default WebSocket) are asked for; any other `Upgrade`, h2c above all,
//! is removed as hop-by-hop, because after a tunnelled h2c upgrade a client talks to
//! the upstream directly, past sluice's routing (h2c smuggling).

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, Version};

use super::body::{ProxyBody, UpstreamUpgrade};
use super::error::ProxyError;
use super::headers;
use crate::body::RequestBody;

/// The protocols an HTTP/1.1 request asks to switch to (`Connection: upgrade` +
/// `Upgrade`) that the route allows, as the `Upgrade` value to forward.
pub(crate) fn requested(request: &Request<RequestBody>, allowed: &[String]) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 || allowed.is_empty() {
        return None;
    }
    let offered = request.headers().get(UPGRADE)?.to_str().ok()?;
    if !crate::http1::has_token(request.headers(), &CONNECTION, "upgrade") {
        return None;
    }
    let kept: Vec<&str> = offered.split(',').map(str::trim).filter(|p| is_allowed(p, allowed)).collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// `websocket` or `WebSocket/13` against the allowed names (lower case, no version).
fn is_allowed(protocol: &str, allowed: &[String]) -> bool {
    let name = protocol.split('/').next().unwrap_or("").trim();
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The client's 101, carrying the upstream connection for the tunnel. The upstream
/// must switch to a protocol that was asked for.
pub(crate) fn switching(
    mut parts: http::response::Parts,
    asked: HeaderValue,
    upstream: UpstreamUpgrade,
) -> Result<Response<ProxyBody>, ProxyError> {
    let upgrade_to = parts.headers.get(UPGRADE).cloned().unwrap_or_else(|| asked.clone());
    let asked_names: Vec<String> = asked
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(|p| p.split('/').next().unwrap_or("").trim().to_ascii_lowercase())
        .collect();
    if !is_allowed(upgrade_to.to_str().unwrap_or(""), &asked_names) {
        return Err(ProxyError::UnrequestedSwitch);
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(UPGRADE, upgrade_to);
    Ok(Response::from_parts(parts, ProxyBody::switching(upstream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(upgrade: &str, connection: &str) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        request.headers_mut().insert(UPGRADE, HeaderValue::from_str(upgrade).expect("value"));
        request.headers_mut().insert(CONNECTION, HeaderValue::from_str(connection).expect("value"));
        request
    }

    #[test]
    fn only_allowed_protocols_are_asked_for() {
        let websocket = vec!["websocket".to_string()];
        assert_eq!(requested(&upgrade_request("websocket", "Upgrade"), &websocket).expect("ws"), "websocket");
        assert!(requested(&upgrade_request("h2c", "Upgrade, HTTP2-Settings"), &websocket).is_none());
        assert_eq!(
            requested(&upgrade_request("h2c, WebSocket/13", "upgrade"), &websocket).expect("ws"),
            "WebSocket/13"
        );
        assert!(requested(&upgrade_request("websocket", "keep-alive"), &websocket).is_none());
        assert!(requested(&upgrade_request("websocket", "upgrade"), &[]).is_none());
    }
}
