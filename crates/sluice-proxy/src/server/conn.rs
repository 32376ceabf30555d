//! One client connection: optional TLS handshake, then HTTP/1.1 (sluice's own layer)
//! or HTTP/2 (hyper), chosen by ALPN, by the h2c preface, or by the listener's protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hyper_util::rt::TokioExecutor;
use sluice_config::ListenerProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;

use super::activity::ConnActivity;
use super::prefixed::Prefixed;
use super::{h1, h2};
use crate::runtime::Shared;

/// What the request path needs to know about the connection a request came on.
/// Shared by the connection task, its requests and any WebSocket tunnel it becomes.
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    /// Idle/header timeouts of HTTP/2 connections (HTTP/1 tracks these in its own loop).
    pub(crate) activity: ConnActivity,
    /// The connection's place under `max_connections`, given back when the last user ends.
    _permit: OwnedSemaphorePermit,
}

/// Per-listener settings every connection of it shares.
pub(crate) struct ListenerContext {
    pub(crate) protocol: ListenerProtocol,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// Serves one accepted connection until it closes, times out, or drains on shutdown.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnContext {
        shared,
        peer,
        tls: listener.tls.is_some(),
        activity: ConnActivity::new(),
        _permit: permit,
    });
    let Some(acceptor) = &listener.tls else {
        return serve_plain(stream, ctx, &listener, shutdown).await;
    };
    let timeout = ctx.shared.snapshot().server.header_read_timeout;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if alpn_h2 || listener.protocol == ListenerProtocol::Http2 {
        h2::serve(stream, ctx, &listener.http2, shutdown).await;
    } else {
        let detect = listener.protocol == ListenerProtocol::Auto;
        if let h1::Outcome::Http2 { io, read } = h1::serve(stream, Arc::clone(&ctx), shutdown.clone(), detect).await {
            h2::serve(Prefixed::new(read, io), ctx, &listener.http2, shutdown).await;
        }
    }
}

async fn serve_plain(
    stream: TcpStream,
    ctx: Arc<ConnContext>,
    listener: &ListenerContext,
    shutdown: watch::Receiver<bool>,
) {
    match listener.protocol {
        ListenerProtocol::Http2 => h2_with_prefix(stream, BytesMut::new(), ctx, listener, shutdown).await,
        ListenerProtocol::Http1 | ListenerProtocol::Auto => {
            let detect = listener.protocol == ListenerProtocol::Auto;
            if let h1::Outcome::Http2 { io, read } = h1::serve(stream, Arc::clone(&ctx), shutdown.clone(), detect).await
            {
                h2_with_prefix(io, read, ctx, listener, shutdown).await;
            }
        }
    }
}

async fn h2_with_prefix<T>(
    io: T,
    read: BytesMut,
    ctx: Arc<ConnContext>,
    listener: &ListenerContext,
    shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    h2::serve(Prefixed::new(read, io), ctx, &listener.http2, shutdown).await;
}
