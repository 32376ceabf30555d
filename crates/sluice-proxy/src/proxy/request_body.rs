//! The admission of a request body before any upstream is contacted: over `max_request_body` is a 413; a body that fits `request_buffer` is
//! read whole first (so a slow uploader holds no upstream connection and a malformed
//! body is a 400 that never reaches the upstream); a larger one streams, watched for
//! the same limits, or is spooled to disk first (`spool`). Every way a body can break
//! is a [`ClientBodyError`].

use std::collections::VecDeque;
use std::path::Path;

use http::header::EXPECT;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use sluice_config::LargeBodies;

use super::error::{ClientError, ProxyError};
use super::spool::{self, SpoolError};
use crate::body::{client_cause, BodyLimits, Buffered, ClientBodyError, RequestBody, Streaming};
use crate::http1;

/// Applies the body limits before the request goes anywhere (see the module comment);
/// the caller skips it for a request without a body.
/// The client's `Expect: 100-continue` is kept only for a body that streams as it
/// arrives, so the upstream decides; a body sluice reads first, it asked for itself.
pub(crate) async fn admit(
    request: Request<RequestBody>,
    limits: BodyLimits,
    spool_dir: &Path,
) -> Result<Request<RequestBody>, ProxyError> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let declared = request.body().size_hint().exact();
    if declared.is_some_and(|n| n > limits.max) {
        return Err(ClientError::Body(ClientBodyError::TooLarge).into());
    }
    let (mut parts, body) = request.into_parts();
    let mut streaming = Streaming { prefix: VecDeque::new(), inner: body, limits, received: 0, waiting: None };
    // A body of unknown size whose client waits for a go-ahead streams too, so that the
    // upstream gives it (or refuses) rather than sluice inviting an upload the upstream
    // may not want: a chunked upload to an upstream answering 413 sent 0.1-5.5 MB first.
    let waits_for_go_ahead = declared.is_none() && http1::expects_continue(&parts.headers);
    if declared.is_some_and(|n| n > limits.buffer) || waits_for_go_ahead {
        return large(parts, streaming, spool_dir).await;
    }
    let mut chunks = VecDeque::new();
    let mut buffered = 0u64;
    let mut trailers = None;
    while let Some(frame) = streaming.frame().await {
        let frame = frame.map_err(|e| ClientError::Body(client_cause(&*e).unwrap_or(ClientBodyError::Closed)))?;
        match frame.into_data() {
            Ok(data) => {
                buffered += data.len() as u64;
                chunks.push_back(data);
                if buffered > limits.buffer {
                    parts.headers.remove(EXPECT);
                    streaming.prefix = chunks;
                    return large(parts, streaming, spool_dir).await;
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    parts.headers.remove(EXPECT);
    Ok(Request::from_parts(parts, RequestBody::Buffered(Box::new(Buffered { chunks, trailers, remaining: buffered }))))
}

/// A body over `request_buffer`: spooled to disk first (the default: a slow uploader
/// holds no upstream connection), or streamed as it arrives. A client that waits for
/// `100 Continue` streams either way, so that the upstream gives the go-ahead or
/// refuses before any of the body is sent (the trade: such a client's upload holds a
/// connection while it is sent, as with `stream`; docs/SECURITY.md).
async fn large(
    mut parts: http::request::Parts,
    streaming: Streaming,
    spool_dir: &Path,
) -> Result<Request<RequestBody>, ProxyError> {
    let stream = streaming.limits.large == LargeBodies::Stream || http1::expects_continue(&parts.headers);
    let body = match stream {
        true => RequestBody::Streaming(Box::new(streaming)),
        false => {
            parts.headers.remove(EXPECT);
            match spool::write(streaming, spool_dir).await {
                Ok(spooled) => RequestBody::Spooled(Box::new(spooled)),
                Err(SpoolError::Client(cause)) => return Err(ClientError::Body(cause).into()),
                Err(e) => return Err(ProxyError::Spool(e)),
            }
        }
    };
    Ok(Request::from_parts(parts, body))
}
