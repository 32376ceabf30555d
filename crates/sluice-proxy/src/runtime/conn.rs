//! The context one client connection gives its requests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::per_ip::IpSlot;
use super::Shared;

/// What the request path needs to know about the connection a request came on.
/// Shared by the connection task, its requests and any WebSocket tunnel it becomes;
/// kept small because every idle connection holds one.
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    /// The connection's place under `max_connections`, given back when the last user ends.
    _permit: OwnedSemaphorePermit,
    /// Its place under `max_connections_per_ip`, when that is set (boxed: a pointer in
    /// every idle connection's context, where the slot is 32 bytes).
    _per_ip: Option<Box<IpSlot>>,
}

impl ConnContext {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        tls: bool,
        permit: OwnedSemaphorePermit,
        per_ip: Option<Box<IpSlot>>,
    ) -> Arc<Self> {
        Arc::new(ConnContext { shared, peer, tls, _permit: permit, _per_ip: per_ip })
    }
}
