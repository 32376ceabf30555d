//! The seed's concurrency models, each an honest server of its kind for the same
//! handler ([`http`]). Each runs in a process of its own (`sluice lab --serve MODEL`), so
//! that its threads and memory are measured alone.
//!
//! How they map to the seed's description:
//! - [`thread_per_connection`]: "a thread per call": every accepted connection gets a new
//!   OS thread (Rust's default 2 MiB stack) that blocks in read and write (Apache prefork
//!   and worker's model, classic Java servlets).
//! - [`thread_pool`]: "a thread pool": a fixed set of threads and a bounded queue of
//!   accepted connections; a thread serves one connection until it closes; when the
//!   queue is full, the connection gets 503 and is closed (Tomcat's BIO connector, with
//!   its defaults maxThreads = 200, acceptCount = 100).
//! - [`event_loop`]: "an event loop": one thread multiplexes every connection with epoll
//!   (tokio's single-threaded runtime), as Node.js or Redis do.
//! - [`per_core`]: sluice's model: one event loop per core, each with its own listening
//!   socket (SO_REUSEPORT), sharing nothing (nginx, HAProxy, sluice's `per-core`).

pub mod event_loop;
pub mod http;
pub mod per_core;
pub mod thread_per_connection;
pub mod thread_pool;

use std::net::{SocketAddr, TcpListener};

/// A concurrency model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    ThreadPerConnection,
    ThreadPool,
    EventLoop,
    PerCore,
}

impl Model {
    pub const ALL: [Model; 4] = [Model::ThreadPerConnection, Model::ThreadPool, Model::EventLoop, Model::PerCore];

    pub fn name(self) -> &'static str {
        match self {
            Model::ThreadPerConnection => "thread-per-connection",
            Model::ThreadPool => "thread-pool",
            Model::EventLoop => "event-loop",
            Model::PerCore => "per-core",
        }
    }
}

/// How big the thread pool is.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PoolSize {
    pub threads: usize,
    pub queue: usize,
}

/// Binds 127.0.0.1 on a free port, calls `ready` with the address, and serves `model`
/// until the process ends.
pub fn serve(model: Model, pool: PoolSize, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let response = http::response(model.name());
    match model {
        Model::ThreadPerConnection => {
            let listener = listen()?;
            ready(listener.local_addr()?);
            thread_per_connection::serve(listener, response)
        }
        Model::ThreadPool => {
            let listener = listen()?;
            ready(listener.local_addr()?);
            thread_pool::serve(listener, response, pool)
        }
        Model::EventLoop => {
            let listener = listen()?;
            ready(listener.local_addr()?);
            event_loop::serve(listener, response)
        }
        Model::PerCore => per_core::serve(response, ready),
    }
}

fn listen() -> std::io::Result<TcpListener> {
    let socket = per_core::socket(SocketAddr::from(([127, 0, 0, 1], 0)), false)?;
    Ok(socket.into())
}
