//! A request body read back from its spool file (see `proxy::spool`, which writes it).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::fs::File;
use tokio::io::{AsyncRead, ReadBuf};

use super::BodyError;

/// Bytes read back from the file per frame.
const READ_CHUNK: u64 = 64 * 1024;

/// A request body read back from its spool file.
pub struct SpooledBody {
    pub(crate) file: File,
    pub(crate) remaining: u64,
    pub(crate) trailers: Option<HeaderMap>,
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
