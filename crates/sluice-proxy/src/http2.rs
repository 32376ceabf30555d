//! HTTP/2 frame boundaries in a byte stream, for the layers that watch frames go by
//! without owning the connection (hyper does): the client side's flood budget
//! (`server::h2_io`) and the upstream side's stream limit (`upstream::h2_settings`).

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS (the server preface) and GOAWAY(last stream 0, PROTOCOL_ERROR):
/// RFC 9113 §3.4 makes an invalid preface a connection error of that type.
pub(crate) const PREFACE_ERROR: &[u8] = b"\0\0\0\x04\0\0\0\0\0\0\0\x08\x07\0\0\0\0\0\0\0\0\0\0\0\0\x01";

pub(crate) const FRAME_HEADER_LEN: usize = 9;
pub(crate) const TYPE_HEADERS: u8 = 0x1;
pub(crate) const TYPE_SETTINGS: u8 = 0x4;
pub(crate) const TYPE_PING: u8 = 0x6;
pub(crate) const TYPE_GOAWAY: u8 = 0x7;
pub(crate) const FLAG_ACK: u8 = 0x1;

/// What the next bytes of a frame stream are.
pub(crate) enum Piece<'a> {
    /// A frame header, just completed.
    Header([u8; FRAME_HEADER_LEN]),
    /// Payload bytes (or, before the first frame, bytes being skipped); `ends` when the
    /// payload is complete with them.
    Payload { bytes: &'a [u8], ends: bool },
}

/// Where a byte stream of frames stands: inside a payload, or (part of) a header.
pub(crate) struct FrameCursor {
    /// Bytes to pass before the next frame header (a preface, then each payload).
    skip: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
}

impl FrameCursor {
    /// A cursor that first skips `skip` bytes (a connection preface).
    pub(crate) fn new(skip: usize) -> Self {
        FrameCursor { skip, header: [0; FRAME_HEADER_LEN], header_len: 0 }
    }

    /// The next piece of `bytes`, which it advances past; None once they are used up.
    pub(crate) fn next<'a>(&mut self, bytes: &mut &'a [u8]) -> Option<Piece<'a>> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let (payload, rest) = bytes.split_at(self.skip.min(bytes.len()));
                *bytes = rest;
                self.skip -= payload.len();
                return Some(Piece::Payload { bytes: payload, ends: self.skip == 0 });
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            *bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                self.skip = payload_len(&self.header);
                return Some(Piece::Header(self.header));
            }
        }
        None
    }

    /// Moves over `bytes`, calling `on_header` with each frame header completed.
    pub(crate) fn pass<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_header: impl FnMut(&[u8; FRAME_HEADER_LEN]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(piece) = self.next(&mut bytes) {
            if let Piece::Header(header) = piece {
                on_header(&header)?;
            }
        }
        Ok(())
    }

    /// Between two frames: a frame of our own may be written here.
    pub(crate) fn at_boundary(&self) -> bool {
        self.skip == 0 && self.header_len == 0
    }
}

/// The payload length a frame header declares.
pub(crate) fn payload_len(header: &[u8; FRAME_HEADER_LEN]) -> usize {
    let [l0, l1, l2, ..] = *header;
    usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2)
}
