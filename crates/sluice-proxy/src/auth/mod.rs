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
    /// The 401's challenges (RFC 9110 §11.6.1), made once: `Bearer realm=...` for JWT,
    /// with `error="invalid_token"` when a token was sent (RFC 6750 §3.1: not when none
    /// was); for API keys `ApiKey realm=..., header=...` either way.
    challenge_without: HeaderValue,
    challenge_invalid: HeaderValue,
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
        let name = &config.name;
        let (without, invalid) = match &check {
            Check::Jwt(_) => {
                (format!("Bearer realm=\"{name}\""), format!("Bearer realm=\"{name}\", error=\"invalid_token\""))
            }
            Check::ApiKey(check) => {
                let text = format!("ApiKey realm=\"{name}\", header=\"{}\"", check.header_name());
                (text.clone(), text)
            }
        };
        // A name a field value cannot hold gets the bare scheme.
        let value = |text: String| HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("Bearer"));
        Ok(Authenticator {
            challenge_without: value(without),
            challenge_invalid: value(invalid),
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
        let identity = match &self.check {
            Check::ApiKey(check) => check.admit(parts, self.hide_credentials).map_err(|reason| self.refused(reason))?,
            Check::Jwt(check) => {
                for (_, header) in check.claim_headers() {
                    parts.headers.remove(header);
                }
                let verified = check.admit(&parts.headers).await.map_err(|reason| self.refused(reason))?;
                if self.hide_credentials {
                    parts.headers.remove(http::header::AUTHORIZATION);
                }
                for (name, value) in &verified.claim_headers {
                    parts.headers.append(name.clone(), value.clone());
                }
                Arc::clone(&verified.identity)
            }
        };
        if let (Some(name), Ok(value)) = (&self.identity_header, HeaderValue::from_str(&identity)) {
            parts.headers.insert(name.clone(), value);
        }
        Ok(identity)
    }

    /// The query parameter a key may come in, if any (records hide its value).
    pub(crate) fn query_parameter(&self) -> Option<&str> {
        match &self.check {
            Check::ApiKey(check) => check.query_parameter(),
            Check::Jwt(_) => None,
        }
    }

    fn refused(&self, reason: &'static str) -> Refused {
        let challenge = match reason {
            "missing_credentials" => &self.challenge_without,
            _ => &self.challenge_invalid,
        };
        Refused { reason, challenge: challenge.clone() }
    }
}

impl Refused {
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(WWW_AUTHENTICATE, self.challenge.clone());
    }
}
