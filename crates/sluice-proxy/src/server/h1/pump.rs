//! Moves a request body from the client socket to the request path, one frame at a
//! time, while the connection waits for (or writes) the response. A client that sent
//! `Expect: 100-continue` gets its go-ahead only once the body is asked for: by sluice
//! buffering it, or by an upstream that agreed to take it.

use bytes::BytesMut;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::body::{BodyFrame, ClientBodyError, RequestBody};
use crate::http1::body::{BodyDecoder, Decoded};
use crate::http1::{Framing, HeadError};

/// Frames buffered between the client connection and the upstream at most. With
/// reads of up to `READ_CHUNK`, this bounds a request's body memory.
const CHANNEL_FRAMES: usize = 2;
/// Read at least this much room into the buffer per read while streaming a body.
const READ_CHUNK: usize = 16 * 1024;

/// The sending side of a request body.
pub(crate) struct BodyPump {
    frames: Option<mpsc::Sender<BodyFrame>>,
    decoder: BodyDecoder,
    /// Present until the body is first asked for, when the client expects a 100.
    go_ahead: Option<oneshot::Receiver<()>>,
    /// Body bytes passed on so far (for the outcome record).
    received: u64,
}

impl BodyPump {
    /// A pump and the body to put in the request; no channel for an empty body.
    pub(crate) fn new(framing: Framing, expect_continue: bool) -> (BodyPump, RequestBody) {
        let decoder = BodyDecoder::new(framing);
        if framing == Framing::Empty {
            return (BodyPump { frames: None, decoder, go_ahead: None, received: 0 }, RequestBody::Empty);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let remaining = decoder.remaining_length();
        let (go_tx, go_rx) = if expect_continue {
            let (go_tx, go_rx) = oneshot::channel();
            (Some(go_tx), Some(go_rx))
        } else {
            (None, None)
        };
        (
            BodyPump { frames: Some(tx), decoder, go_ahead: go_rx, received: 0 },
            RequestBody::Channel { frames: rx, remaining, go_ahead: go_tx },
        )
    }

    /// Request body bytes read from the client and passed on.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Still moving frames: call `step`.
    pub(crate) fn is_active(&self) -> bool {
        self.frames.is_some()
    }

    /// The whole body was read from the client, so the connection can take another request.
    pub(crate) fn is_complete(&self) -> bool {
        self.decoder.is_done()
    }

    /// Moves one frame once the consumer has room for it. Cancel-safe: dropping it
    /// mid-read loses nothing (bytes stay in `buf`, the go-ahead stays armed).
    pub(crate) async fn step<T: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut T, buf: &mut BytesMut) {
        if let Some(go_ahead) = &mut self.go_ahead {
            let asked = go_ahead.await.is_ok();
            self.go_ahead = None;
            // Not asked (the body was dropped unread): no 100, and the unread body
            // means the connection closes after the response.
            if !asked || io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                self.frames = None;
                return;
            }
        }
        let Some(frames) = &self.frames else { return std::future::pending().await };
        if !move_frame(frames, &mut self.decoder, io, buf, &mut self.received).await {
            self.frames = None;
        }
    }
}

/// Sends the next frame; false once the body has ended, broke, or the consumer stopped
/// reading it (then the unread rest means the connection closes after the response).
async fn move_frame<T: AsyncRead + Unpin>(
    frames: &mpsc::Sender<BodyFrame>,
    decoder: &mut BodyDecoder,
    io: &mut T,
    buf: &mut BytesMut,
    received: &mut u64,
) -> bool {
    let Ok(permit) = frames.reserve().await else { return false };
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(data)) => {
                *received += data.len() as u64;
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
                        permit.send(Err(ClientBodyError::Closed.into()));
                        return false;
                    }
                }
            }
            Err(e) => {
                let why = match e {
                    HeadError::Malformed(why) => why,
                    _ => "trailer section too large",
                };
                permit.send(Err(ClientBodyError::Malformed(why).into()));
                return false;
            }
        }
    }
}
