//! The HTTP/2 client: hyper's, one connection shared by several concurrent streams.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::connect::Stream;
use crate::failure::Failure;
use crate::plan::RequestSpec;

pub type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Windows big enough that flow control does not limit a benchmark (h2load's defaults are
/// larger still); HTTP/2's 64 KiB default would stall large bodies on loopback.
const WINDOW: u32 = 16 * 1024 * 1024;

/// Runs the HTTP/2 handshake on an open connection; the connection is driven by a task
/// on the current thread's runtime until every sender is dropped.
pub async fn handshake(stream: Stream) -> Result<Sender, Failure> {
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::from_hyper(&e))?;
    tokio::spawn(async move {
        // Its error, if any, is seen by the requests on it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request on a stream of `sender`'s connection; returns status and body length.
pub async fn exchange(sender: &mut Sender, request: &RequestSpec) -> Result<(u16, u64), Failure> {
    sender.ready().await.map_err(|e| Failure::from_hyper(&e))?;
    let mut builder = http::Request::builder().method(request.method.clone()).uri(request.uri.clone());
    for (name, value) in &request.headers {
        // HTTP/2 carries the host in :authority; a Host field there would be malformed.
        if name != http::header::HOST {
            builder = builder.header(name, value);
        }
    }
    let outgoing = builder.body(Full::new(request.body.clone())).map_err(|_| Failure::Protocol)?;
    let response = sender.send_request(outgoing).await.map_err(|e| Failure::from_hyper(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::from_hyper(&e))?;
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
        }
    }
    Ok((status, length))
}
