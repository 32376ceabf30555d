//! A fixed thread pool with a bounded queue: accepted connections wait in the queue for
//! a free thread; a thread serves its connection until it closes (or is idle for
//! `http::IDLE_TIMEOUT`); a connection that finds the queue full gets 503 and is closed.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, TrySendError};
use std::sync::{Arc, Mutex};

use super::{http, PoolSize};

pub fn serve(listener: TcpListener, response: Vec<u8>, size: PoolSize) -> std::io::Result<()> {
    let response: Arc<[u8]> = response.into();
    let (queue, waiting) = mpsc::sync_channel::<TcpStream>(size.queue);
    let waiting = Arc::new(Mutex::new(waiting));
    for _ in 0..size.threads.max(1) {
        let (waiting, response) = (Arc::clone(&waiting), Arc::clone(&response));
        std::thread::Builder::new().spawn(move || work(&waiting, &response))?;
    }
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        match queue.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(mut stream)) => {
                let _ = stream.write_all(http::UNAVAILABLE);
            }
            Err(TrySendError::Disconnected(_)) => return Ok(()),
        }
    }
}

fn work(waiting: &Mutex<Receiver<TcpStream>>, response: &[u8]) {
    loop {
        let next = match waiting.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match next {
            Ok(stream) => {
                let _ = http::serve_blocking(stream, response);
            }
            Err(_) => return,
        }
    }
}
