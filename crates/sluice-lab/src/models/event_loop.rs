//! One event loop: a single thread runs every connection as a task, waiting on epoll.

use std::net::TcpListener;
use std::sync::Arc;

use super::http;

pub fn serve(listener: TcpListener, response: Vec<u8>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(accept(listener, response.into()))
}

/// Accepts on `listener` (non-blocking from here on), a task per connection.
pub(super) async fn accept(listener: TcpListener, response: Arc<[u8]>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let response = Arc::clone(&response);
                tokio::spawn(async move { http::serve_async(stream, &response).await });
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
