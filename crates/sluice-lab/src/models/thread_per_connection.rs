//! A thread per connection: accept, spawn a thread with the default stack, and let it
//! block on the connection until the connection ends.

use std::net::TcpListener;
use std::sync::Arc;

use super::http;

pub fn serve(listener: TcpListener, response: Vec<u8>) -> std::io::Result<()> {
    let response: Arc<[u8]> = response.into();
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10)); // EMFILE: do not spin
                continue;
            }
        };
        let response = Arc::clone(&response);
        // The thread cannot be made: the connection is closed (dropped with the closure).
        if let Err(e) = std::thread::Builder::new().spawn(move || http::serve_blocking(stream, &response)) {
            eprintln!("cannot start a thread: {e}");
        }
    }
}
