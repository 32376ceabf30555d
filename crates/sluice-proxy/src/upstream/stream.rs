//! An upstream connection's byte stream: plain TCP, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Read at least this much room per read.
const READ_CHUNK: usize = 16 * 1024;

/// A connection to one upstream endpoint.
pub(crate) enum UpstreamStream {
    Tcp(TcpStream),
    /// Boxed: rustls's state is large and most upstreams are cleartext.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// The address connected to.
    pub(crate) fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.peer_addr().ok(),
            UpstreamStream::Tls(tls) => tls.get_ref().0.peer_addr().ok(),
        }
    }

    /// Reads what is available into `buf`. Cleartext goes by readiness and `try_read_buf`
    /// (no zeroing, no `unsafe`); TLS reads through rustls into a zeroed tail.
    pub(crate) fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match self {
            UpstreamStream::Tcp(stream) => loop {
                std::task::ready!(stream.poll_read_ready(cx))?;
                let room = buf.capacity() - buf.len();
                match stream.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(n) if n > 0 && n < room => {
                        // A short read emptied the socket: forget its readiness, as tokio's
                        // own poll_read does, so that the pool's check before lending the
                        // connection (`is_open`) needs no system call.
                        let _ = stream.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                        return Poll::Ready(Ok(n));
                    }
                    result => return Poll::Ready(result),
                }
            },
            UpstreamStream::Tls(stream) => {
                let start = buf.len();
                buf.resize(buf.capacity().max(start + 1024), 0);
                let mut read = ReadBuf::new(&mut buf[start..]);
                let polled = Pin::new(stream.as_mut()).poll_read(cx, &mut read);
                let n = read.filled().len();
                buf.truncate(start + n);
                polled.map_ok(|()| n)
            }
        }
    }

    /// Whether an idle pooled connection is still open. A readable idle cleartext
    /// connection has either been closed by the upstream or sent bytes nobody asked
    /// for; an idle TLS one may hold a session ticket, so only a close counts. Costs no
    /// system call unless the socket was marked readable.
    pub(crate) fn is_open(&self) -> bool {
        let mut byte = [0u8; 1];
        match self {
            UpstreamStream::Tcp(stream) => {
                matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            UpstreamStream::Tls(stream) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut peek = ReadBuf::new(&mut byte);
                match stream.get_ref().0.poll_peek(&mut cx, &mut peek) {
                    Poll::Pending => true,
                    Poll::Ready(Ok(n)) => n > 0,
                    Poll::Ready(Err(_)) => false,
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
