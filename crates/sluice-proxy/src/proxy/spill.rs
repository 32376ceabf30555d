//! Response bytes a client is not taking yet, past the route's `response_buffer`,
//! written to a temp file so that the upstream connection is free as soon as the
//! upstream has sent the whole body (nginx's proxy_buffering with its temp file). Both
//! client protocols use it: `server::h1::respond` spills encoded HTTP/1 bytes,
//! `read_ahead` (HTTP/2) spills data.
//!
//! Bounds: `max_response_spool` per response and `server.spool_max_total` for the whole
//! process (a count shared by the workers). Past either, the response stops spilling and
//! streams at the client's pace; nothing fails. Each bound may be passed by the one data
//! frame that met it (a frame's size is known only once it is read). The file is the
//! request spool's kind (`spool::create`): readable by sluice alone, unlinked at once, so
//! nothing stays on disk; its reads and writes run on tokio's bounded blocking pool.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Bytes spilled by every response of the process now.
static SPILLED: AtomicU64 = AtomicU64::new(0);

/// Spilled bytes are read back in pieces of this size.
pub(crate) const READ_BACK: usize = 64 * 1024;

/// Bytes in spill files now, all responses together (for metrics and tests).
pub(crate) fn spilled_now() -> u64 {
    SPILLED.load(Ordering::Relaxed)
}

/// What a response may spill: its own bound (0: never, `large_responses = "stream"`)
/// and where.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpillLimit {
    pub(crate) max: u64,
    pub(crate) total: u64,
}

/// One response's spill file: bytes go in at the end and come out in order.
pub(crate) struct Spill {
    file: Arc<std::fs::File>,
    written: u64,
    read: u64,
    limit: SpillLimit,
    /// A bound was met: no more bytes go in.
    full: bool,
}

impl Spill {
    /// A new spill file in `dir`; None (and a debug line) when it cannot be made, in
    /// which case the response streams.
    pub(crate) async fn open(dir: &Path, limit: SpillLimit) -> Option<Spill> {
        if limit.max == 0 || SPILLED.load(Ordering::Relaxed) >= limit.total {
            return None;
        }
        match super::spool::create(dir).await {
            Ok(file) => {
                let file = Arc::new(file.into_std().await);
                Some(Spill { file, written: 0, read: 0, limit, full: false })
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot spool a response; it streams instead");
                None
            }
        }
    }

    /// Whether more may go in (no bound met yet).
    pub(crate) fn has_room(&self) -> bool {
        !self.full
    }

    /// Bytes written and not read back yet.
    pub(crate) fn unread(&self) -> u64 {
        self.written - self.read
    }

    /// Appends `pieces` (in order). The bounds are counted here; meeting one closes the
    /// spill to more bytes, but these are written all the same (see the module comment).
    pub(crate) async fn append(&mut self, pieces: Vec<Bytes>) -> io::Result<()> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let total = SPILLED.fetch_add(len, Ordering::Relaxed) + len;
        if self.written + len >= self.limit.max || total >= self.limit.total {
            self.full = true;
        }
        let (file, at) = (Arc::clone(&self.file), self.written);
        self.written += len;
        blocking(move || {
            let mut offset = at;
            for piece in pieces {
                file.write_all_at(&piece, offset)?;
                offset += piece.len() as u64;
            }
            Ok(())
        })
        .await
    }

    /// Up to `max` of the bytes not read back yet (empty when there are none).
    pub(crate) async fn read(&mut self, max: usize) -> io::Result<Bytes> {
        let len = self.unread().min(max as u64) as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (file, at) = (Arc::clone(&self.file), self.read);
        let bytes = blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, at)?;
            Ok(buf)
        })
        .await?;
        self.read += len as u64;
        Ok(Bytes::from(bytes))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        SPILLED.fetch_sub(self.written, Ordering::Relaxed);
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_come_back_in_order_and_the_bounds_close_the_spill() {
        let dir = std::env::temp_dir();
        let limit = SpillLimit { max: 10, total: u64::MAX };
        let mut spill = Spill::open(&dir, limit).await.expect("a spill file");
        spill.append(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]).await.expect("append");
        assert!(spill.has_room());
        assert_eq!(&spill.read(4).await.expect("read")[..], b"abcd");
        spill.append(vec![Bytes::from_static(b"fghijk")]).await.expect("append");
        assert!(!spill.has_room(), "11 bytes met the bound of 10");
        assert_eq!(spill.unread(), 7);
        assert_eq!(&spill.read(100).await.expect("read")[..], b"efghijk");
        assert_eq!(spill.read(100).await.expect("read").len(), 0);
        let stream = SpillLimit { max: 0, total: u64::MAX };
        assert!(Spill::open(&dir, stream).await.is_none(), "large_responses = stream");
    }
}
