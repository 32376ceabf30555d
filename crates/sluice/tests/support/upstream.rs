//! Real upstream servers for tests: hyper on 127.0.0.1:0, HTTP/1.1 and h2c by detection,
//! counting the connections they accept.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The body type test servers and clients send.
pub type TestBody = BoxBody<Bytes, Infallible>;
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A running upstream server.
pub struct Upstream {
    pub addr: SocketAddr,
    accepted: watch::Receiver<usize>,
    closed: watch::Receiver<usize>,
}

impl Upstream {
    /// Serves `handler` for every request on every accepted connection.
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let (accepted_tx, accepted) = watch::channel(0usize);
        let (closed_tx, closed) = watch::channel(0usize);
        let closed_tx = Arc::new(closed_tx);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted_tx.send_modify(|n| *n += 1);
                let handler = Arc::clone(&handler);
                let closed_tx = Arc::clone(&closed_tx);
                let service = service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Upstream { addr, accepted, closed }
    }

    /// Answers every request with 200 and a body naming method and path.
    pub async fn hello() -> Upstream {
        Upstream::start(|req: Request<Incoming>| async move {
            Response::new(full(format!("hello {} {}", req.method(), req.uri().path())))
        })
        .await
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits until at least `n` connections were closed (by either side).
    pub async fn wait_closed(&self, n: usize) {
        let mut rx = self.closed.clone();
        tokio::time::timeout(super::WAIT, rx.wait_for(|&c| c >= n))
            .await
            .expect("upstream connections close")
            .expect("watch");
    }

    /// Waits until at least `n` connections were accepted.
    pub async fn wait_accepted(&self, n: usize) {
        let mut rx = self.accepted.clone();
        tokio::time::timeout(super::WAIT, rx.wait_for(|&a| a >= n)).await.expect("upstream accepts").expect("watch");
    }
}

/// A body of `remaining` zero bytes, produced in 64 KiB chunks without holding them.
pub struct ZeroBody {
    remaining: u64,
    chunk: Bytes,
}

impl ZeroBody {
    pub fn new(len: u64) -> ZeroBody {
        ZeroBody { remaining: len, chunk: Bytes::from(vec![0u8; 64 * 1024]) }
    }
}

impl Body for ZeroBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Reads a body to its end, counting bytes without keeping them.
pub async fn count_body(mut body: Incoming) -> u64 {
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            total += data.len() as u64;
        }
    }
    total
}
