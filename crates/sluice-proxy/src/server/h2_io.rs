//! The client stream as hyper's HTTP/2 server sees it: bytes sluice already read (the
//! h2c preface its HTTP/1 layer found) come first, and the frame headers going by are
//! watched for control-frame floods.
//!
//! hyper (the h2 crate) answers every PING and SETTINGS it reads, so a client can make
//! sluice spend CPU and write bandwidth at will (200,000 PINGs were all acknowledged).
//! PINGs and SETTINGS that ask for an answer draw on a token bucket per connection
//! (`FLOOD_BURST`, refilled at `FLOOD_RATE` a second: far above what keep-alive pings
//! and settings changes need); an empty bucket ends the connection with a
//! [`ControlFlood`] read error.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Control frames a connection may send at once.
const FLOOD_BURST: f64 = 1_000.0;
/// And per second after that.
const FLOOD_RATE: f64 = 100.0;
/// The client connection preface, before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

/// The error an HTTP/2 connection ends with when it floods control frames.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 control frame flood (PING/SETTINGS beyond {FLOOD_BURST} at once or {FLOOD_RATE}/s)")]
pub(crate) struct ControlFlood;

/// Follows frame boundaries in the bytes read, counting control frames.
struct FrameWatch {
    /// Bytes to pass before the next frame header (the preface, then each payload).
    skip: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    tokens: f64,
    refilled: Instant,
}

impl FrameWatch {
    fn new() -> Self {
        FrameWatch {
            skip: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            tokens: FLOOD_BURST,
            refilled: Instant::now(),
        }
    }

    /// Looks at bytes on their way to hyper; Err once the client floods.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), ControlFlood> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let [l0, l1, l2, kind, flags, ..] = self.header;
                self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                if matches!(kind, TYPE_PING | TYPE_SETTINGS) && flags & FLAG_ACK == 0 {
                    self.spend()?;
                }
            }
        }
        Ok(())
    }

    fn spend(&mut self) -> Result<(), ControlFlood> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * FLOOD_RATE).min(FLOOD_BURST) - 1.0;
        if self.tokens < 0.0 {
            return Err(ControlFlood);
        }
        Ok(())
    }
}

pin_project! {
    pub(crate) struct H2Io<T> {
        prefix: BytesMut,
        watch: FrameWatch,
        // Set when the connection is ended for a flood: hyper and h2 keep only the
        // message of an I/O error, so the cause is told this way.
        flooded: Arc<AtomicBool>,
        #[pin]
        inner: T,
    }
}

impl<T> H2Io<T> {
    /// The stream, and a flag set if it is ended for flooding control frames.
    pub(crate) fn new(prefix: BytesMut, inner: T) -> (Self, Arc<AtomicBool>) {
        let flooded = Arc::new(AtomicBool::new(false));
        (H2Io { prefix, watch: FrameWatch::new(), flooded: Arc::clone(&flooded), inner }, flooded)
    }
}

impl<T: AsyncRead> AsyncRead for H2Io<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                *this.prefix = BytesMut::new(); // give the buffer back
            }
        } else {
            std::task::ready!(this.inner.poll_read(cx, buf))?;
        }
        match this.watch.observe(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(flood) => {
                this.flooded.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::other(flood)))
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for H2Io<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![(payload >> 16) as u8, (payload >> 8) as u8, payload as u8, kind, flags, 0, 0, 0, 0];
        f.extend(std::iter::repeat_n(0u8, payload));
        f
    }

    #[test]
    fn pings_beyond_the_burst_are_a_flood_and_acks_and_data_are_not() {
        let mut watch = FrameWatch::new();
        watch.observe(&[b'P'; PREFACE_LEN]).expect("preface");
        for _ in 0..5_000 {
            watch.observe(&frame(0x0, 0, 100)).expect("DATA is not counted");
            watch.observe(&frame(TYPE_PING, FLAG_ACK, 8)).expect("a PING ack is not counted");
        }
        let ping = frame(TYPE_PING, 0, 8);
        let mut sent = 0;
        // Byte by byte: frame headers split across reads are followed.
        let result = (0..2_000).try_for_each(|_| {
            sent += 1;
            ping.iter().try_for_each(|b| watch.observe(std::slice::from_ref(b)))
        });
        assert!(result.is_err());
        assert!((1_000..1_100).contains(&sent), "flood seen after {sent} PINGs");
    }
}
