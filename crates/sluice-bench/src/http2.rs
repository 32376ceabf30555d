//! The HTTP/2 client: the `h2` crate, one connection shared by `--streams` stream loops.
//!
//! `h2` directly rather than hyper's client, which spawns a task and passes each request
//! and response through channels (measured with callgrind: ~32k instructions per request
//! through hyper, see docs/BENCHMARKS.md for the figure with `h2` alone).

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use crate::connect::Stream;
use crate::failure::Failure;
use crate::plan::RequestSpec;

/// Windows big enough that flow control does not limit a benchmark (h2load's defaults are
/// larger still); HTTP/2's 64 KiB default would stall large bodies on loopback.
const WINDOW: u32 = 16 * 1024 * 1024;

/// A handle on one HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection task ends: the handle must not be used for new streams.
    closed: Rc<Cell<bool>>,
}

impl H2Conn {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// Runs the HTTP/2 handshake on an open connection; a task on this thread drives the
/// connection until it ends or every handle is dropped.
pub async fn handshake(stream: Stream) -> Result<H2Conn, Failure> {
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| Failure::from_h2(&e))?;
    let closed = Rc::new(Cell::new(false));
    let flag = Rc::clone(&closed);
    tokio::task::spawn_local(async move {
        // Its error, if any, is seen by the streams on it.
        let _ = connection.await;
        flag.set(true);
    });
    Ok(H2Conn { sender, closed })
}

/// Sends one request on a new stream; returns status and body length.
pub async fn exchange(conn: &mut H2Conn, request: &RequestSpec) -> Result<(u16, u64), Failure> {
    std::future::poll_fn(|cx| conn.sender.poll_ready(cx)).await.map_err(|e| Failure::from_h2(&e))?;
    let mut head = http::Request::builder().method(request.method.clone()).uri(request.uri.clone());
    for (name, value) in &request.headers {
        // HTTP/2 carries the host in :authority; a Host field there would be malformed.
        if name != http::header::HOST {
            head = head.header(name, value);
        }
    }
    let head = head.body(()).map_err(|_| Failure::Protocol)?;
    let no_body = request.body.is_empty();
    let (response, mut send) = conn.sender.send_request(head, no_body).map_err(|e| Failure::from_h2(&e))?;
    if !no_body {
        // h2 queues the data and sends it as flow control allows.
        send.send_data(request.body.clone(), true).map_err(|e| Failure::from_h2(&e))?;
    }
    let response = response.await.map_err(|e| Failure::from_h2(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut length = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Failure::from_h2(&e))?;
        length += chunk.len() as u64;
        // Give the window back at once: a benchmark reads as fast as it can.
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok((status, length))
}
