//! Body and transport types shared by the layers above: the request path (`proxy`),
//! the upstream clients (`upstream`) and the connections (`server`) all use these, so
//! they live below all three and none of those imports another's internals for them.

mod request;
mod spooled;

pub(crate) use request::{client_cause, BodyFrame, BodyLimits, Buffered, ClientBodyError, RequestBody, Streaming};
pub(crate) use spooled::SpooledBody;

/// Boxed error for bodies; hyper only needs `Into<Box<dyn Error>>`.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
