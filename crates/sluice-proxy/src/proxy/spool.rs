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
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use tokio::fs::File;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::body::{client_cause, ClientBodyError, SpooledBody, Streaming};

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error(transparent)]
    Client(ClientBodyError),
    #[error("cannot spool the request body in {}: {source}", dir.display())]
    Disk { dir: PathBuf, source: io::Error },
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
pub(crate) async fn create(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("sluice-spool-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let file = tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).await?;
    tokio::fs::remove_file(&path).await?;
    Ok(file)
}
