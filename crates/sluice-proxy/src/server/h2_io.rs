//! The client stream as the h2 crate's server sees it: bytes sluice already read (the
//! h2c preface its HTTP/1 layer found) come first, and the frame headers going by in
//! both directions are followed, to bound control-frame floods.
//!
//! The h2 crate answers every PING and SETTINGS it reads, so a client can make
//! sluice spend CPU and write bandwidth at will (200,000 PINGs were all acknowledged).
//! PINGs and SETTINGS that ask for an answer draw on a token bucket per connection
//! (`FLOOD_BURST`, refilled at `FLOOD_RATE` a second: far above what keep-alive pings
//! and settings changes need). An empty bucket ends the connection: a GOAWAY
//! (ENHANCE_YOUR_CALM, RFC 9113 §5.4.1) is written between two of h2's frames (the
//! outbound frame boundaries are followed for that), then the read fails with
//! [`ControlFlood`] and the connection's `flooded` flag is set.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http2::{FrameCursor, FLAG_ACK, FRAME_HEADER_LEN, TYPE_GOAWAY, TYPE_HEADERS, TYPE_PING, TYPE_SETTINGS};

/// Control frames a connection may send at once.
const FLOOD_BURST: f64 = 1_000.0;
/// And per second after that.
const FLOOD_RATE: f64 = 100.0;
/// The client connection preface, before the first frame.
const PREFACE_LEN: usize = 24;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The error an HTTP/2 connection ends with when it floods control frames.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 control frame flood (PING/SETTINGS beyond {FLOOD_BURST} at once or {FLOOD_RATE}/s)")]
pub(crate) struct ControlFlood;

/// The client's frames: the control-frame budget and the last stream it opened.
struct FrameWatch {
    cursor: FrameCursor,
    tokens: f64,
    refilled: Instant,
    last_stream: u32,
}

impl FrameWatch {
    fn new() -> Self {
        FrameWatch {
            cursor: FrameCursor::new(PREFACE_LEN),
            tokens: FLOOD_BURST,
            refilled: Instant::now(),
            last_stream: 0,
        }
    }

    /// Looks at bytes on their way to h2; Err once the client floods.
    fn observe(&mut self, bytes: &[u8]) -> Result<(), ControlFlood> {
        let (tokens, refilled, last_stream) = (&mut self.tokens, &mut self.refilled, &mut self.last_stream);
        self.cursor.pass(bytes, |header| {
            let [.., kind, flags, s0, s1, s2, s3] = *header;
            if kind == TYPE_HEADERS {
                *last_stream = (*last_stream).max(u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]));
            }
            if matches!(kind, TYPE_PING | TYPE_SETTINGS) && flags & FLAG_ACK == 0 {
                spend(tokens, refilled)?;
            }
            Ok(())
        })
    }
}

/// Takes one token from the bucket, refilled for the time since the last take.
fn spend(tokens: &mut f64, refilled: &mut Instant) -> Result<(), ControlFlood> {
    let now = Instant::now();
    *tokens = (*tokens + now.duration_since(*refilled).as_secs_f64() * FLOOD_RATE).min(FLOOD_BURST) - 1.0;
    *refilled = now;
    if *tokens < 0.0 {
        return Err(ControlFlood);
    }
    Ok(())
}

/// GOAWAY(last_stream, ENHANCE_YOUR_CALM).
fn goaway(last_stream: u32) -> [u8; FRAME_HEADER_LEN + 8] {
    let mut frame = [0u8; FRAME_HEADER_LEN + 8];
    frame[2] = 8;
    frame[3] = TYPE_GOAWAY;
    frame[9..13].copy_from_slice(&last_stream.to_be_bytes());
    frame[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame
}

pin_project! {
    pub(crate) struct H2Io<T> {
        prefix: BytesMut,
        watch: FrameWatch,
        // h2's frames going out: where one ends, a GOAWAY of ours may go.
        written: FrameCursor,
        // Set when the connection is ended for a flood: h2 keeps only the
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
        let io = H2Io {
            prefix,
            watch: FrameWatch::new(),
            written: FrameCursor::new(0),
            flooded: Arc::clone(&flooded),
            inner,
        };
        (io, flooded)
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for H2Io<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let before = buf.filled().len();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                *this.prefix = BytesMut::new(); // give the buffer back
            }
        } else {
            std::task::ready!(this.inner.as_mut().poll_read(cx, buf))?;
        }
        let Err(flood) = this.watch.observe(&buf.filled()[before..]) else { return Poll::Ready(Ok(())) };
        this.flooded.store(true, Ordering::Relaxed);
        // Best effort, never waiting: h2 reads and writes from one task, so no
        // write of its own is half done unless the cursor says so.
        if this.written.at_boundary() {
            let frame = goaway(this.watch.last_stream);
            if let Poll::Ready(Ok(n)) = this.inner.as_mut().poll_write(cx, &frame) {
                let _ = this.written.pass::<()>(&frame[..n], |_| Ok(()));
                let _ = this.inner.as_mut().poll_flush(cx);
            }
        }
        Poll::Ready(Err(io::Error::other(flood)))
    }
}

impl<T: AsyncWrite> AsyncWrite for H2Io<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.inner.poll_write(cx, buf))?;
        let _ = this.written.pass::<()>(&buf[..n], |_| Ok(()));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let mut n = std::task::ready!(this.inner.poll_write_vectored(cx, bufs))?;
        let written = n;
        for slice in bufs {
            let take = n.min(slice.len());
            let _ = this.written.pass::<()>(&slice[..take], |_| Ok(()));
            n -= take;
            if n == 0 {
                break;
            }
        }
        Poll::Ready(Ok(written))
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
    fn the_outbound_cursor_knows_frame_boundaries_across_writes() {
        let mut cursor = FrameCursor::new(0);
        let frames = [frame(0x0, 0, 300), frame(TYPE_PING, FLAG_ACK, 8)].concat();
        let mut boundaries = 0;
        for (i, byte) in frames.iter().enumerate() {
            cursor.pass::<()>(std::slice::from_ref(byte), |_| Ok(())).expect("pass");
            if cursor.at_boundary() {
                boundaries += 1;
                assert!(i == 9 + 300 - 1 || i == frames.len() - 1, "boundary at {i}");
            }
        }
        assert_eq!(boundaries, 2);
        assert_eq!(&goaway(7)[..9], &[0, 0, 8, TYPE_GOAWAY, 0, 0, 0, 0, 0]);
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
