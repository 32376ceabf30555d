//! sluice's runtime: listeners and connections (`server`), the request path
//! (`proxy`), upstream groups and their pools (`upstream`), and the swappable
//! configuration snapshot they read (`runtime`).
//!
//! See ARCHITECTURE.md at the repository root for one request's path through these.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod body;
mod cache;
mod gate;
mod http1;
mod http2;
mod interim;
mod limit;
mod outcome;
mod proxy;
mod redis_link;
mod runtime;
mod server;
mod stats;
mod stock;
mod upstream;

pub use admin::{Admin, ReloadRequest};
pub use server::{Reloaded, Reloader, Server, ServerError, BLOCKING_THREADS};
