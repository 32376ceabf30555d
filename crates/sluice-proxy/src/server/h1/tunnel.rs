//! The bytes of an upgraded connection (WebSocket), copied both ways under an idle
//! timeout: a tunnel where neither side sends for `idle_timeout` is closed, so a dead
//! peer does not hold two sockets forever.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read size each way.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// Bytes moved: client → upstream (`up`) and upstream → client (`down`).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) up: u64,
    pub(super) down: u64,
}

/// Why the tunnel closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// Both sides finished (each shut down its sending half).
    Done,
    Idle,
    Error,
}

/// Copies until both directions end, one fails, or nothing moves for `idle_timeout`.
/// A side that closes its sending half has that passed on (shutdown), as
/// `copy_bidirectional` does, so half-closed protocols still work.
pub(super) async fn copy<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle_timeout: std::time::Duration,
    counts: &mut Counts,
) -> Closed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut up_buf = vec![0u8; TUNNEL_BUFFER];
    let mut down_buf = vec![0u8; TUNNEL_BUFFER];
    let (mut up_open, mut down_open) = (true, true);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    while up_open || down_open {
        let moved: io::Result<()> = tokio::select! {
            read = client_read.read(&mut up_buf), if up_open => match read {
                Ok(0) => { up_open = false; upstream_write.shutdown().await }
                Ok(n) => { counts.up += n as u64; bounded(idle_timeout, upstream_write.write_all(&up_buf[..n])).await }
                Err(e) => Err(e),
            },
            read = upstream_read.read(&mut down_buf), if down_open => match read {
                Ok(0) => { down_open = false; client_write.shutdown().await }
                Ok(n) => { counts.down += n as u64; bounded(idle_timeout, client_write.write_all(&down_buf[..n])).await }
                Err(e) => Err(e),
            },
            _ = &mut idle => return Closed::Idle,
        };
        if moved.is_err() {
            return Closed::Error;
        }
        idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
    }
    Closed::Done
}

/// A write that the peer does not take within the idle timeout fails the tunnel too.
async fn bounded(
    timeout: std::time::Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    tokio::time::timeout(timeout, write).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
