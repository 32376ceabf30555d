//! Whether a response may be stored by a shared cache (RFC 9111 §3, §3.5), and if not,
//! why: the reason goes into the Cache-Status header and the request's record.

use super::CacheControl;

/// What the storing rules look at of one exchange.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub method: &'a str,
    pub request: &'a CacheControl,
    pub request_has_authorization: bool,
    pub status: u16,
    pub response: &'a CacheControl,
    /// The response has an explicit lifetime (max-age, s-maxage or Expires).
    pub explicit_lifetime: bool,
    /// The response has a validator (ETag or Last-Modified).
    pub has_validator: bool,
    /// Its lifetime, with heuristics where configured.
    pub lifetime: u64,
    pub has_set_cookie: bool,
    pub vary_star: bool,
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    /// The request carried Authorization and the response did not allow sharing.
    Authorization,
    SetCookie,
    VaryStar,
    /// No lifetime and no validator: it could never be served again.
    NoLifetime,
    /// Larger than the cache's max object size.
    TooLarge,
}

impl NotStored {
    /// For Cache-Status `detail=` and the record.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoLifetime => "no-lifetime",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// The storing rules. `store_set_cookie`: the cache stores such responses with their
/// Set-Cookie removed (configured); otherwise they are not stored.
pub fn storable(exchange: &Exchange<'_>, store_set_cookie: bool) -> Result<(), NotStored> {
    let response = exchange.response;
    if !matches!(exchange.method, "GET" | "HEAD") {
        return Err(NotStored::Method);
    }
    if response.no_store || exchange.request.no_store {
        return Err(NotStored::NoStore);
    }
    if response.private {
        return Err(NotStored::Private);
    }
    // §3.5: a response to a request with Authorization is shared only when it says so.
    if exchange.request_has_authorization
        && !(response.public || response.s_maxage.is_some() || response.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if exchange.has_set_cookie && !store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if exchange.vary_star {
        return Err(NotStored::VaryStar);
    }
    let status = exchange.status;
    // Final statuses only, and never partial content or a 304 (it refreshes, §4.3.4).
    if !(200..600).contains(&status) || status == 206 || status == 304 {
        return Err(NotStored::Status);
    }
    let allowed = exchange.explicit_lifetime || response.public || super::heuristically_cacheable(status);
    if !allowed {
        return Err(NotStored::Status);
    }
    let reusable = (exchange.lifetime > 0 && !response.no_cache) || exchange.has_validator;
    if !reusable {
        return Err(NotStored::NoLifetime);
    }
    Ok(())
}
