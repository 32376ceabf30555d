//! The context one client connection gives its requests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

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
}

impl ConnContext {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr, tls: bool, permit: OwnedSemaphorePermit) -> Arc<Self> {
        Arc::new(ConnContext { shared, peer, tls, _permit: permit })
    }
}
