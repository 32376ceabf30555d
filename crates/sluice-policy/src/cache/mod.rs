//! The rules of an HTTP shared cache, without I/O: Cache-Control parsing, whether a
//! response may be stored (RFC 9111 §3), its freshness lifetime and age (§4.2), what a
//! request may be served from it (§4, RFC 5861), conditional requests (RFC 9110 §13)
//! and Vary matching (§4.1). The cache in `sluice-proxy` reads headers into these
//! types and acts on the answers.

mod control;
mod freshness;
mod store;
mod validate;

pub use control::CacheControl;
pub use freshness::{
    heuristically_cacheable, keep_for, lifetime, usable, usable_on_error, Heuristic, Stored, Timing, Usable,
};
pub use store::{storable, Exchange, NotStored};
pub use validate::{normalise_field, not_modified, vary_names};

#[cfg(test)]
mod tests;
