//! Moves a request body from the client socket to the upstream, one frame at a time,
//! while the connection waits for (or writes) the response.

use bytes::BytesMut;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::http1::body::{BodyDecoder, Decoded};
use crate::http1::Framing;
use crate::proxy::{BodyFrame, RequestBody};

/// Frames buffered between the client connection and the upstream at most. With
/// reads of up to `READ_CHUNK`, this bounds a request's body memory.
const CHANNEL_FRAMES: usize = 2;
/// Read at least this much room into the buffer per read while streaming a body.
const READ_CHUNK: usize = 16 * 1024;

/// The sending side of a request body.
pub(crate) struct BodyPump {
    frames: Option<mpsc::Sender<BodyFrame>>,
    decoder: BodyDecoder,
    send_continue: bool,
}

impl BodyPump {
    /// A pump and the body to put in the request; no channel for an empty body.
    pub(crate) fn new(framing: Framing, expect_continue: bool) -> (BodyPump, RequestBody) {
        let decoder = BodyDecoder::new(framing);
        if framing == Framing::Empty {
            return (BodyPump { frames: None, decoder, send_continue: false }, RequestBody::Empty);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let remaining = decoder.remaining_length();
        (
            BodyPump { frames: Some(tx), decoder, send_continue: expect_continue },
            RequestBody::Channel { frames: rx, remaining },
        )
    }

    /// Still moving frames: call `step`.
    pub(crate) fn is_active(&self) -> bool {
        self.frames.is_some()
    }

    /// The whole body was read from the client, so the connection can take another request.
    pub(crate) fn is_complete(&self) -> bool {
        self.decoder.is_done()
    }

    /// Moves one frame once the upstream has room for it. Cancel-safe: dropping it
    /// mid-read loses nothing (bytes stay in `buf`).
    pub(crate) async fn step<T: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut T, buf: &mut BytesMut) {
        let Some(frames) = &self.frames else { return std::future::pending().await };
        if !move_frame(frames, &mut self.decoder, &mut self.send_continue, io, buf).await {
            self.frames = None;
        }
    }
}

/// Sends the next frame; false once the body has ended, broke, or the upstream stopped
/// reading it (then the unread rest means the connection closes after the response).
async fn move_frame<T: AsyncRead + AsyncWrite + Unpin>(
    frames: &mpsc::Sender<BodyFrame>,
    decoder: &mut BodyDecoder,
    send_continue: &mut bool,
    io: &mut T,
    buf: &mut BytesMut,
) -> bool {
    let Ok(permit) = frames.reserve().await else { return false };
    if std::mem::take(send_continue) && io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
        return false;
    }
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(data)) => {
                permit.send(Ok(Frame::data(data)));
                return true;
            }
            Ok(Decoded::Trailers(trailers)) => {
                permit.send(Ok(Frame::trailers(trailers)));
                return true;
            }
            Ok(Decoded::Done) => return false,
            Ok(Decoded::NeedMore) => {
                buf.reserve(READ_CHUNK);
                match io.read_buf(buf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        permit.send(Err("client closed the connection in the middle of the request body".into()));
                        return false;
                    }
                }
            }
            Err(e) => {
                permit.send(Err(e.into()));
                return false;
            }
        }
    }
}
