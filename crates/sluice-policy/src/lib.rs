//! sluice's decision logic, free of I/O and of any async runtime: which route a
//! request takes (and the normalised path it routes on), which endpoint serves it, and
//! when a pooled connection retires.
//!
//! Everything here is a plain function of its inputs (time is passed in), so it is
//! unit-tested exhaustively and benchmarked on its own.
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod balance;
pub mod cache;
pub mod capacity;
pub mod encoding;
pub mod health;
pub mod path;
pub mod rate;
pub mod retire;
pub mod retry;
pub mod route;
