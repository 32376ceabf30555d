//! Reads the upstream's SETTINGS_MAX_CONCURRENT_STREAMS as its frames go by to hyper.
//!
//! hyper's HTTP/2 client keeps the peer's settings to itself, and the pool needs the
//! stream limit to know when a connection is full (and another should open). This
//! wrapper follows the frame headers the upstream sends and reads the payload of each
//! SETTINGS frame; the latest value is published in an atomic the pool reads.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http2::{payload_len, FrameCursor, Piece, FLAG_ACK, TYPE_SETTINGS};

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// The stream limit assumed until the upstream says (RFC 9113 §6.5.2 recommends no
/// less than 100; an initial unlimited value would let one connection take everything).
pub(crate) const ASSUMED_STREAM_LIMIT: u32 = 100;
/// SETTINGS payload bytes kept for parsing; a longer frame is a peer we do not follow.
const MAX_SETTINGS_PAYLOAD: usize = 6 * 16;

/// What the pool learns of the peer's settings.
#[derive(Debug)]
pub(crate) struct PeerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS, or the assumed value until it is known.
    pub(crate) stream_limit: AtomicU32,
    /// The peer's first SETTINGS (its connection preface) has been read.
    seen: AtomicBool,
    seen_now: tokio::sync::Notify,
}

impl PeerSettings {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(PeerSettings {
            stream_limit: AtomicU32::new(ASSUMED_STREAM_LIMIT),
            seen: AtomicBool::new(false),
            seen_now: tokio::sync::Notify::new(),
        })
    }

    /// Waits until the peer's first SETTINGS has been read (a new connection is not
    /// used before its stream limit is known), or `timeout` passes (the assumed limit
    /// stands).
    pub(crate) async fn known(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let seen_now = self.seen_now.notified();
                if self.seen.load(Ordering::Acquire) {
                    return;
                }
                seen_now.await;
            }
        })
        .await;
    }
}

/// The peer's settings, shared with the pool.
pub(crate) type StreamLimit = Arc<PeerSettings>;

/// Follows the frames of the inbound byte stream, keeping only SETTINGS payloads.
pub(crate) struct SettingsReader {
    cursor: FrameCursor,
    /// The current frame is a SETTINGS (not an ACK): its payload so far.
    settings: Option<Vec<u8>>,
    limit: StreamLimit,
}

impl SettingsReader {
    pub(crate) fn new(limit: StreamLimit) -> Self {
        SettingsReader { cursor: FrameCursor::new(0), settings: None, limit }
    }

    /// Moves over bytes the upstream sent.
    pub(crate) fn observe(&mut self, mut bytes: &[u8]) {
        while let Some(piece) = self.cursor.next(&mut bytes) {
            match piece {
                Piece::Header(header) => {
                    let [.., kind, flags, _, _, _, _] = header;
                    self.settings = (kind == TYPE_SETTINGS && flags & FLAG_ACK == 0).then(Vec::new);
                    if payload_len(&header) == 0 {
                        self.end_frame();
                    }
                }
                Piece::Payload { bytes, ends } => {
                    if let Some(payload) = &mut self.settings {
                        let room = MAX_SETTINGS_PAYLOAD.saturating_sub(payload.len());
                        payload.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    }
                    if ends {
                        self.end_frame();
                    }
                }
            }
        }
    }

    fn end_frame(&mut self) {
        let Some(payload) = self.settings.take() else { return };
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            if id == SETTINGS_MAX_CONCURRENT_STREAMS {
                let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                self.limit.stream_limit.store(value, Ordering::Relaxed);
            }
        }
        if !self.limit.seen.swap(true, Ordering::AcqRel) {
            self.limit.seen_now.notify_waiters();
        }
    }
}

pin_project! {
    /// The upstream socket as hyper's client sees it, with inbound SETTINGS followed.
    pub(crate) struct WatchSettings<T> {
        #[pin]
        inner: T,
        reader: SettingsReader,
    }
}

impl<T> WatchSettings<T> {
    pub(crate) fn new(inner: T, limit: StreamLimit) -> Self {
        WatchSettings { inner, reader: SettingsReader::new(limit) }
    }
}

impl<T: AsyncRead> AsyncRead for WatchSettings<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.reader.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for WatchSettings<T> {
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

    fn settings(entries: &[(u16, u32)], flags: u8) -> Vec<u8> {
        let len = entries.len() * 6;
        let mut frame = vec![0, 0, len as u8, TYPE_SETTINGS, flags, 0, 0, 0, 0];
        for (id, value) in entries {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame
    }

    #[test]
    fn the_stream_limit_is_read_across_split_reads_and_updates() {
        let limit = PeerSettings::new();
        let mut reader = SettingsReader::new(Arc::clone(&limit));
        let mut bytes = settings(&[(0x4, 65_535), (SETTINGS_MAX_CONCURRENT_STREAMS, 7)], 0);
        // A DATA frame with a payload that looks like SETTINGS must not count.
        let fake = settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 999)], 0);
        bytes.extend_from_slice(&[0, 0, fake.len() as u8, 0x0, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&fake);
        for byte in bytes.chunks(1) {
            reader.observe(byte);
        }
        assert_eq!(limit.stream_limit.load(Ordering::Relaxed), 7);
        assert!(limit.seen.load(Ordering::Relaxed));
        reader.observe(&settings(&[], FLAG_ACK));
        assert_eq!(limit.stream_limit.load(Ordering::Relaxed), 7, "an ACK carries no settings");
        reader.observe(&settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 3)], 0));
        assert_eq!(limit.stream_limit.load(Ordering::Relaxed), 3);
    }
}
