//! An event loop per core: as many threads as cores, each with its own single-threaded
//! runtime and its own listening socket on one address (SO_REUSEPORT: the kernel spreads
//! new connections), sharing nothing. sluice's `per-core` model, on the lab's handler.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket on `address`; `reuse_port` lets the other loops bind it too.
pub(super) fn socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket)
}

pub fn serve(response: Vec<u8>, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let response: Arc<[u8]> = response.into();
    let first: TcpListener = socket(SocketAddr::from(([127, 0, 0, 1], 0)), true)?.into();
    let address = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(socket(address, true)?.into());
    }
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let response = Arc::clone(&response);
            std::thread::Builder::new().spawn(move || super::event_loop::serve(listener, response.to_vec()))
        })
        .collect::<Result<_, _>>()?;
    ready(address);
    for event_loop in loops {
        if let Ok(Err(e)) = event_loop.join() {
            return Err(e);
        }
    }
    Ok(())
}
