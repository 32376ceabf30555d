//! Request bodies larger than a route's `request_buffer` written to a temp file before
//! the upstream is contacted (`large_request_bodies = "spool"`), so a slow uploader
//! holds no upstream connection whatever the body's size; nginx does this by default.
//!
//! The file is bounded by `max_request_body` (the guarded body stops there), created
//! readable by sluice alone, and unlinked as soon as it is open, so nothing is left on
//! disk when the request ends or the process dies. File I/O runs on tokio's bounded
//! blocking pool, never on a worker.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};

use super::body::BodyError;
use super::request_body::{client_cause, ClientBodyError, Streaming};

/// Bytes read back from the file per frame.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error(transparent)]
    Client(ClientBodyError),
    #[error("cannot spool the request body in {}: {source}", dir.display())]
    Disk { dir: PathBuf, source: io::Error },
}

/// A request body read back from its spool file.
pub struct SpooledBody {
    file: File,
    remaining: u64,
    trailers: Option<HeaderMap>,
}

/// Writes the rest of `body` to a new file in `dir`, then rewinds it for reading.
pub(crate) async fn write(mut body: Streaming, dir: &Path) -> Result<SpooledBody, SpoolError> {
    let disk = |source| SpoolError::Disk { dir: dir.to_path_buf(), source };
    let mut file = create(dir).await.map_err(disk)?;
    let mut written = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SpoolError::Client(client_cause(&*e).unwrap_or(ClientBodyError::Closed)))?;
        match frame.into_data() {
            Ok(data) => {
                file.write_all(&data).await.map_err(disk)?;
                written += data.len() as u64;
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    file.flush().await.map_err(disk)?;
    file.seek(SeekFrom::Start(0)).await.map_err(disk)?;
    Ok(SpooledBody { file, remaining: written, trailers })
}

/// A new file only sluice can read, already unlinked.
async fn create(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("sluice-spool-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let file = tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).await?;
    tokio::fs::remove_file(&path).await?;
    Ok(file)
}

impl Body for SpooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let mut chunk = vec![0u8; this.remaining.min(READ_CHUNK) as usize];
        let mut read = ReadBuf::new(&mut chunk);
        std::task::ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            return Poll::Ready(Some(Err("the spool file ended before the body did".into())));
        }
        chunk.truncate(n);
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // With trailers the body must go chunked, so its length is not offered.
        match self.trailers {
            None => SizeHint::with_exact(self.remaining),
            Some(_) => SizeHint::new(),
        }
    }
}
