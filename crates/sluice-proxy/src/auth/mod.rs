//! Who is calling (`[auth.NAME]`, issue 23 §1): an API key from a header or query
//! parameter, or a JWT in `Authorization: Bearer`. A request that passes gets an
//! *identity* (the key's name, or a claim); one that does not gets 401, whose reason
//! goes to the record and the log, never to the client.
//!
//! Credentials are removed before forwarding (unless `hide_credentials = false`), and
//! the headers sluice sets upstream (identity, claims) are first removed from what the
//! client sent, so a client cannot claim an identity by sending the header itself.

mod api_key;
mod jwks;
mod jwt;

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::request::Parts;
use sluice_config::{AuthConfig, AuthKind};

pub(crate) use api_key::redact_query;
pub(crate) use jwks::RemoteKeySets;

/// One `[auth.NAME]`, ready to check requests.
pub(crate) struct Authenticator {
    name: String,
    identity_header: Option<HeaderName>,
    hide_credentials: bool,
    check: Check,
}

enum Check {
    ApiKey(api_key::ApiKeyCheck),
    Jwt(jwt::JwtCheck),
}

/// Why a request did not pass: a short snake_case reason for the record, and the
/// challenge for its 401.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) reason: &'static str,
    pub(crate) challenge: HeaderValue,
}

impl Authenticator {
    /// Builds the check; a JWKS file that cannot be read or used is an error (the
    /// config is not taken).
    pub(crate) fn build(config: &AuthConfig, remote: &RemoteKeySets) -> Result<Self, String> {
        let check = match &config.kind {
            AuthKind::ApiKey(keys) => Check::ApiKey(api_key::ApiKeyCheck::new(keys)?),
            AuthKind::Jwt(jwt) => {
                Check::Jwt(jwt::JwtCheck::new(jwt, remote).map_err(|e| format!("auth.{}: {e}", config.name))?)
            }
        };
        Ok(Authenticator {
            name: config.name.clone(),
            identity_header: config.identity_header.as_deref().and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            hide_credentials: config.hide_credentials,
            check,
        })
    }

    /// Checks the request's credential and, when it passes, rewrites its head for the
    /// upstream: the client's copies of sluice's headers out, identity and claims in,
    /// the credential removed (unless kept).
    pub(crate) async fn admit(&self, parts: &mut Parts) -> Result<Arc<str>, Refused> {
        if let Some(name) = &self.identity_header {
            parts.headers.remove(name);
        }
        let (identity, claims) = match &self.check {
            Check::ApiKey(check) => {
                let identity = check.admit(parts, self.hide_credentials).map_err(|reason| self.refused(reason))?;
                (identity, Vec::new())
            }
            Check::Jwt(check) => {
                for (_, header) in check.claim_headers() {
                    parts.headers.remove(header);
                }
                let (identity, claims) = check.admit(&parts.headers).await.map_err(|reason| self.refused(reason))?;
                if self.hide_credentials {
                    parts.headers.remove(http::header::AUTHORIZATION);
                }
                (identity, claims)
            }
        };
        for (name, value) in claims {
            parts.headers.append(name, value);
        }
        if let (Some(name), Ok(value)) = (&self.identity_header, HeaderValue::from_str(&identity)) {
            parts.headers.insert(name.clone(), value);
        }
        Ok(Arc::from(identity))
    }

    /// The query parameter a key may come in, if any (records hide its value).
    pub(crate) fn query_parameter(&self) -> Option<&str> {
        match &self.check {
            Check::ApiKey(check) => check.query_parameter(),
            Check::Jwt(_) => None,
        }
    }

    /// The 401's challenge (RFC 9110 §11.6.1): `Bearer` for JWT with
    /// `error="invalid_token"` when a token was sent (RFC 6750 §3.1: not when none was),
    /// and the key's header for API keys.
    fn refused(&self, reason: &'static str) -> Refused {
        let text = match &self.check {
            Check::Jwt(_) if reason == "missing_credentials" => format!("Bearer realm=\"{}\"", self.name),
            Check::Jwt(_) => format!("Bearer realm=\"{}\", error=\"invalid_token\"", self.name),
            Check::ApiKey(check) => format!("ApiKey realm=\"{}\", header=\"{}\"", self.name, check.header_name()),
        };
        let challenge = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        Refused { reason, challenge }
    }
}

impl Refused {
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(WWW_AUTHENTICATE, self.challenge.clone());
    }
}
