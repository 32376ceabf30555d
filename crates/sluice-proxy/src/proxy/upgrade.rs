//! HTTP/1.1 upgrades (WebSocket): the 101 from the upstream is passed on and the two
//! connections become one byte tunnel.

use std::sync::Arc;

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::headers;
use crate::server::ConnContext;
use crate::upstream::Lease;

/// The client's half of a requested upgrade.
pub(crate) struct ClientUpgrade {
    /// The `Upgrade` header value, e.g. `websocket`.
    pub(crate) protocol: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Takes the upgrade out of an HTTP/1.1 request that asks for one (`Connection: upgrade`).
pub(crate) fn take_request_upgrade(request: &mut Request<Incoming>) -> Option<ClientUpgrade> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = request.headers().get(UPGRADE)?.clone();
    let asks = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| ClientUpgrade {
        protocol,
        on_upgrade: hyper::upgrade::on(request),
    })
}

/// Answers the client with the upstream's 101 and joins the two connections once both
/// sides have switched. The tunnel holds the client connection's slot and the upstream
/// connection until either side closes.
pub(crate) fn tunnel(
    conn: Arc<ConnContext>,
    client: ClientUpgrade,
    mut upstream: Response<Incoming>,
    lease: Lease,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let upgrade_to = upstream
        .headers()
        .get(UPGRADE)
        .cloned()
        .unwrap_or(client.protocol);
    let peer = conn.peer;
    tokio::spawn(async move {
        let (client_io, upstream_io) = match tokio::try_join!(client.on_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "upgrade did not complete");
                return;
            }
        };
        let result = tokio::io::copy_bidirectional(
            &mut TokioIo::new(client_io),
            &mut TokioIo::new(upstream_io),
        )
        .await;
        tracing::debug!(%peer, ?result, "tunnel closed");
        drop((lease, conn));
    });
    let (mut parts, _) = upstream.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(UPGRADE, upgrade_to);
    Response::from_parts(parts, ProxyBody::local(""))
}
