//! One client connection: optional TLS handshake, then HTTP/1.1 (sluice's own layer)
//! or HTTP/2 (the h2 crate), chosen by ALPN, by the h2c preface, or by the listener's protocol.

use std::sync::Arc;

use bytes::BytesMut;
use sluice_config::ListenerProtocol;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{h1, h2};
use crate::runtime::ConnContext;

/// Per-listener settings every connection of it shares.
pub(crate) struct ListenerContext {
    pub(crate) protocol: ListenerProtocol,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) http2: ::h2::server::Builder,
}

/// Serves a TLS connection, or a cleartext one on an `http2` listener. (Cleartext
/// HTTP/1 connections are spawned straight into `h1::serve`, to keep them small.)
pub(crate) async fn serve(stream: TcpStream, ctx: Arc<ConnContext>, listener: Arc<ListenerContext>) {
    let Some(acceptor) = &listener.tls else {
        return h2::serve(stream, BytesMut::new(), ctx, listener).await;
    };
    let counters = Arc::clone(&ctx.shared.counters);
    let _open = crate::stats::Open::count(&counters.open_tls);
    let timeout = ctx.shared.snapshot().server.header_read_timeout;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(peer = %ctx.peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(peer = %ctx.peer, "TLS handshake timed out"),
    };
    let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if alpn_h2 || listener.protocol == ListenerProtocol::Http2 {
        return h2::serve(stream, BytesMut::new(), ctx, listener).await;
    }
    h1::serve(stream, ctx, listener).await;
}
