//! Response compression (`[route.compression]`, issue 23 §3): the coding is chosen from
//! the request's Accept-Encoding before the request moves on, and applied to a response
//! of a listed type that is not encoded already, not a range, not `no-transform`, and
//! not known to be smaller than `min_size`. The body streams through the encoder: what
//! it has made goes out every 16 KiB, and whenever the upstream has nothing more for
//! now (a flush), so a slow stream is not held back.
//!
//! The compressors are flate2, brotli and zstd, the ones async-compression wraps,
//! called directly: this body is polled frame by frame, and a synchronous encoder
//! writing into a Vec is all it needs (see ARCHITECTURE.md).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{Method, Request, Response};
use http_body::{Body, Frame};
use sluice_config::{Coding, CompressionConfig};

use super::ProxyBody;
use crate::body::BodyError;

/// Output is sent once this much has been made.
const SEND_AT: usize = 16 * 1024;

/// The coding a request will get, if its response qualifies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    coding: Coding,
    level: u32,
}

/// The coding for `request` under `config`: none for HEAD (no body to compress) or a
/// client that accepts none of the route's.
pub(super) fn plan<B>(config: &CompressionConfig, request: &Request<B>) -> Option<Plan> {
    if request.method() == Method::HEAD {
        return None;
    }
    let accept = || request.headers().get_all(ACCEPT_ENCODING).into_iter().map(HeaderValue::as_bytes);
    // At most three codings (validation drops repeats): their tokens on the stack.
    let mut tokens = [""; 3];
    for (token, (coding, _)) in tokens.iter_mut().zip(&config.algorithms) {
        *token = coding.token();
    }
    let offered = &tokens[..config.algorithms.len().min(3)];
    let index = sluice_policy::encoding::choose(accept, offered)?;
    let (coding, level) = config.algorithms[index];
    Some(Plan { coding, level })
}

/// Compresses `response` by `plan` when it qualifies. Every response of a listed type
/// says `Vary: Accept-Encoding`, compressed or not, so no cache downstream gives one
/// client's coding to another.
pub(super) fn apply(config: &CompressionConfig, plan: Option<Plan>, response: &mut Response<ProxyBody>) {
    let headers = response.headers();
    let listed =
        headers.get(CONTENT_TYPE).is_some_and(|t| sluice_policy::encoding::type_listed(t.as_bytes(), &config.types));
    if !listed {
        return;
    }
    response.headers_mut().append(VARY, HeaderValue::from_static("Accept-Encoding"));
    let headers = response.headers();
    let status = response.status().as_u16();
    let encoded = headers.get(CONTENT_ENCODING).is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_transform = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform"))));
    let length = headers.get(CONTENT_LENGTH).and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
    let too_small = length.is_some_and(|length| length < config.min_size);
    let compressible_status = matches!(status, 200..=203 | 400..=599);
    let Some(plan) = plan else { return };
    if encoded || no_transform || too_small || !compressible_status || headers.contains_key(CONTENT_RANGE) {
        return;
    }
    let headers = response.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(plan.coding.token()));
    // The compressed bytes are not the ones a strong validator names (RFC 9110 §8.8.1).
    if let Some(etag) = headers.get(ETAG).filter(|e| !e.as_bytes().starts_with(b"W/")) {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(ETAG, weak);
        }
    }
    response.body_mut().compress(Encoder::new(plan, length));
}

/// A streaming compressor writing into a buffer that is taken as output.
pub(crate) enum Encoder {
    Gzip(Box<Gzip>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(Box<Zstd>),
    /// Finished: nothing more is made.
    Done,
}

impl Encoder {
    /// An encoder for `plan`; `length`, the body's size when the response says it, lets
    /// each coding size its window and tables to it (as nginx sizes gzip's): a 4 KiB body
    /// costs no 32 KiB window to set up (measured in docs/BENCHMARKS.md).
    fn new(plan: Plan, length: Option<u64>) -> Encoder {
        // The smallest window that holds the whole body, within each format's range.
        let bits = |min: u32, max: u32| {
            length.map_or(max, |n| (u64::BITS - n.saturating_sub(1).leading_zeros()).clamp(min, max))
        };
        match plan.coding {
            Coding::Gzip => Encoder::Gzip(Box::new(Gzip::new(plan.level, bits(9, 15) as u8))),
            Coding::Brotli => {
                Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, plan.level, bits(10, 22))))
            }
            Coding::Zstd => match Zstd::new(plan.level as i32, length) {
                Ok(encoder) => Encoder::Zstd(Box::new(encoder)),
                // zstd could not set its context up (memory): gzip still can.
                Err(_) => Encoder::Gzip(Box::new(Gzip::new(1, 15))),
            },
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
            Encoder::Done => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Done => Ok(()),
        }
    }

    /// How much output is waiting.
    fn made(&self) -> usize {
        match self {
            Encoder::Gzip(e) => e.out.len(),
            Encoder::Brotli(e) => e.get_ref().len(),
            Encoder::Zstd(e) => e.out.len(),
            Encoder::Done => 0,
        }
    }

    /// The output made so far.
    fn take(&mut self) -> Bytes {
        let made = match self {
            Encoder::Gzip(e) => &mut e.out,
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => &mut e.out,
            Encoder::Done => return Bytes::new(),
        };
        Bytes::from(std::mem::take(made))
    }

    /// Ends the stream: the rest of the output.
    fn finish(&mut self) -> std::io::Result<Bytes> {
        let rest = match std::mem::replace(self, Encoder::Done) {
            Encoder::Gzip(mut e) => {
                e.finish()?;
                std::mem::take(&mut e.out)
            }
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(mut e) => {
                e.finish()?;
                std::mem::take(&mut e.out)
            }
            Encoder::Done => Vec::new(),
        };
        Ok(Bytes::from(rest))
    }
}

/// Encoder states kept per thread for the next response: setting one up (allocating and
/// clearing its window and tables) cost more than compressing a 4 KiB body (measured,
/// docs/BENCHMARKS.md). A few per thread; one that handled a large body keeps its size.
const KEPT_PER_THREAD: usize = 4;

thread_local! {
    static GZIP_STATES: std::cell::RefCell<Vec<(u32, u8, flate2::Compress)>> = const { std::cell::RefCell::new(Vec::new()) };
    static ZSTD_STATES: std::cell::RefCell<Vec<zstd::zstd_safe::CCtx<'static>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// gzip through flate2's `Compress`, for its window size (its `GzEncoder` has none) and
/// for reuse.
pub(crate) struct Gzip {
    compress: Option<flate2::Compress>,
    level: u32,
    window_bits: u8,
    out: Vec<u8>,
}

impl Gzip {
    fn new(level: u32, window_bits: u8) -> Gzip {
        let kept = GZIP_STATES.with(|states| {
            let mut states = states.borrow_mut();
            let at = states.iter().position(|(l, w, _)| *l == level && *w == window_bits)?;
            Some(states.swap_remove(at).2)
        });
        let compress = match kept {
            Some(mut compress) => {
                compress.reset();
                compress
            }
            None => flate2::Compress::new_gzip(flate2::Compression::new(level), window_bits),
        };
        Gzip { compress: Some(compress), level, window_bits, out: Vec::new() }
    }

    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            self.out.reserve(data.len() / 2 + 64);
            let compress = self.compress.as_mut().ok_or_else(|| std::io::Error::other("gzip stream finished"))?;
            let before = compress.total_in();
            compress.compress_vec(data, &mut self.out, flate2::FlushCompress::None).map_err(std::io::Error::other)?;
            data = &data[(compress.total_in() - before) as usize..];
        }
        Ok(())
    }

    /// Runs `flush` until the encoder has given everything it holds.
    fn drain(&mut self, flush: flate2::FlushCompress) -> std::io::Result<()> {
        loop {
            self.out.reserve(1024);
            let compress = self.compress.as_mut().ok_or_else(|| std::io::Error::other("gzip stream finished"))?;
            let status = compress.compress_vec(&[], &mut self.out, flush).map_err(std::io::Error::other)?;
            // Room left over: nothing more was waiting.
            if status == flate2::Status::StreamEnd || self.out.len() < self.out.capacity() {
                return Ok(());
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain(flate2::FlushCompress::Sync)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.drain(flate2::FlushCompress::Finish)
    }
}

impl Drop for Gzip {
    fn drop(&mut self) {
        if let Some(compress) = self.compress.take() {
            let (level, bits) = (self.level, self.window_bits);
            GZIP_STATES.with(|states| {
                let mut states = states.borrow_mut();
                if states.len() < KEPT_PER_THREAD {
                    states.push((level, bits, compress));
                }
            });
        }
    }
}

/// zstd through zstd-safe's context, kept for reuse (the `zstd` crate's writer owns and
/// frees its own).
pub(crate) struct Zstd {
    context: Option<zstd::zstd_safe::CCtx<'static>>,
    out: Vec<u8>,
}

fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

impl Zstd {
    fn new(level: i32, length: Option<u64>) -> std::io::Result<Zstd> {
        use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};
        let mut context = ZSTD_STATES.with(|states| states.borrow_mut().pop()).unwrap_or_else(CCtx::create);
        context.reset(ResetDirective::SessionAndParameters).map_err(zstd_error)?;
        context.set_parameter(CParameter::CompressionLevel(level)).map_err(zstd_error)?;
        // A known size lets zstd size its window and tables to the body.
        context.set_pledged_src_size(length).map_err(zstd_error)?;
        Ok(Zstd { context: Some(context), out: Vec::new() })
    }

    fn run(&mut self, data: &[u8], end: zstd::zstd_safe::zstd_sys::ZSTD_EndDirective) -> std::io::Result<()> {
        use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
        use zstd::zstd_safe::{InBuffer, OutBuffer};
        let context = self.context.as_mut().ok_or_else(|| std::io::Error::other("zstd stream finished"))?;
        let mut input = InBuffer::around(data);
        loop {
            self.out.reserve(data.len() / 2 + 1024);
            let at = self.out.len();
            let mut output = OutBuffer::around_pos(&mut self.out, at);
            let left = context.compress_stream2(&mut output, &mut input, end).map_err(zstd_error)?;
            let done = match end {
                ZSTD_EndDirective::ZSTD_e_continue => input.pos == data.len(),
                _ => left == 0,
            };
            if done {
                return Ok(());
            }
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.run(data, zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.run(&[], zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.run(&[], zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end)
    }
}

impl Drop for Zstd {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            ZSTD_STATES.with(|states| {
                let mut states = states.borrow_mut();
                if states.len() < KEPT_PER_THREAD {
                    states.push(context);
                }
            });
        }
    }
}

/// A compressed body: the upstream's (with its cache fill and read timeout) read
/// through an encoder.
pub(crate) struct Compressed {
    pub(crate) inner: ProxyBody,
    pub(crate) encoder: Encoder,
    /// Trailers that came after the data, sent after the encoder's last bytes.
    trailers: Option<http::HeaderMap>,
    /// Input went in since the last flush (a flush of nothing would still make bytes:
    /// gzip's empty sync block, sent again on every poll).
    unflushed: bool,
}

impl Compressed {
    pub(crate) fn new(inner: ProxyBody, encoder: Encoder) -> Compressed {
        Compressed { inner, encoder, trailers: None, unflushed: false }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        matches!(self.encoder, Encoder::Done) && self.trailers.is_none()
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if matches!(self.encoder, Encoder::Done) {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.encoder.write(&data).map_err(boxed)?;
                        self.unflushed |= !data.is_empty();
                        if self.encoder.made() >= SEND_AT {
                            return Poll::Ready(Some(Ok(Frame::data(self.encoder.take()))));
                        }
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        let rest = self.encoder.finish().map_err(boxed)?;
                        if rest.is_empty() {
                            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                        }
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    // Not finished: the client sees a truncated stream, as the upstream's was.
                    self.encoder = Encoder::Done;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    let rest = self.encoder.finish().map_err(boxed)?;
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(Frame::data(rest))));
                }
                Poll::Pending => {
                    // Nothing more for now: what the encoder holds goes out.
                    if std::mem::take(&mut self.unflushed) {
                        self.encoder.flush().map_err(boxed)?;
                    }
                    let made = self.encoder.take();
                    return match made.is_empty() {
                        true => Poll::Pending,
                        false => Poll::Ready(Some(Ok(Frame::data(made)))),
                    };
                }
            }
        }
    }
}

fn boxed(error: std::io::Error) -> BodyError {
    Box::new(error)
}
