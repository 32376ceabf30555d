//! `kind = "jwt"`: a bearer token's signature checked against the JWKS (a file, or a
//! URL kept by `jwks`) or an explicit HS256 secret, then `exp`/`nbf` (with leeway),
//! `iss` and `aud` (jsonwebtoken); the identity is a claim (`sub` by default).
//!
//! A key is used only for the algorithm family it is (RSA, EC, Ed25519): a token
//! cannot make sluice read an RSA public key as an HMAC secret (jsonwebtoken 9 leaves
//! that check to its caller).
//!
//! A token that passed is remembered by its SHA-256 (never the token itself) until its
//! `exp`, for at most `VERIFIED_FOR`: a client sends the same token with every request,
//! and checking an RS256 signature again each time cost ~420k instructions a request
//! (bench/gateway-cost.sh). A remembered token is still checked against the clock, and
//! checked again in full when the key set it was verified with is replaced.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use sluice_config::{JwksSource, JwtAlgorithm, JwtAuth};

use super::jwks::{RemoteJwks, RemoteKeySets};

/// Signing keys as read from a JWKS: each with its `kid` and family.
pub(crate) struct KeySet {
    keys: Vec<(Option<String>, Family, DecodingKey)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Rsa,
    P256,
    Ed25519,
}

impl KeySet {
    /// The usable keys of a JWKS document (others are skipped, and said so in the error
    /// only when none is usable).
    pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Family::P256,
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Family::Ed25519,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push((jwk.common.key_id.clone(), family, key));
            }
        }
        match keys.is_empty() {
            true => Err(format!("none of its {} keys is an RSA, P-256 or Ed25519 public key", set.keys.len())),
            false => Ok(KeySet { keys }),
        }
    }

    /// Keys that may have signed a token with this `kid` and family.
    fn candidates<'a>(&'a self, kid: Option<&'a str>, family: Family) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |(k, f, _)| *f == family && (kid.is_none() || k.as_deref() == kid))
            .map(|(_, _, key)| key)
    }
}

enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
    /// HS256 only.
    None,
}

/// A token that passed, as remembered.
pub(super) struct Verified {
    pub(super) identity: Arc<str>,
    pub(super) claim_headers: Vec<(HeaderName, HeaderValue)>,
    /// Its `exp` and `nbf` (seconds since the epoch).
    exp: u64,
    nbf: Option<u64>,
    /// The key set it was verified with (remote sets: replaced on a fetch).
    keys: Option<Arc<KeySet>>,
}

/// How long a passed token is remembered at most, and how many.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
const VERIFIED_MAX: u64 = 100_000;

pub(super) struct JwtCheck {
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    keys: Keys,
    hs256: Option<DecodingKey>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    identity_claim: String,
    claim_headers: Vec<(String, HeaderName)>,
}

impl JwtCheck {
    pub(super) fn new(config: &JwtAuth, remote: &RemoteKeySets) -> Result<Self, String> {
        let keys = match &config.jwks {
            JwksSource::File(path) if path.as_os_str().is_empty() => Keys::None,
            JwksSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Keys::Static(Arc::new(KeySet::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?))
            }
            JwksSource::Url(url) => Keys::Remote(remote.get(url, config.jwks_refresh)?),
        };
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| match a {
                JwtAlgorithm::Rs256 => Algorithm::RS256,
                JwtAlgorithm::Es256 => Algorithm::ES256,
                JwtAlgorithm::EdDsa => Algorithm::EdDSA,
                JwtAlgorithm::Hs256 => Algorithm::HS256,
            })
            .collect();
        let claim_headers = config
            .claim_headers
            .iter()
            .filter_map(|(claim, header)| Some((claim.clone(), HeaderName::from_bytes(header.as_bytes()).ok()?)))
            .collect();
        Ok(JwtCheck {
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_MAX).time_to_live(VERIFIED_FOR).build(),
            keys,
            hs256: config.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(&s.0)),
            algorithms,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
            identity_claim: config.identity_claim.clone(),
            claim_headers,
        })
    }

    pub(super) fn claim_headers(&self) -> &[(String, HeaderName)] {
        &self.claim_headers
    }

    /// The identity and the claim headers of a valid token, or why there is none.
    pub(super) async fn admit(&self, headers: &HeaderMap) -> Result<Arc<Verified>, &'static str> {
        let token = bearer_token(headers)?;
        let digest = sluice_config::sha256(token.as_bytes());
        if let Some(known) = self.verified.get(&digest) {
            if self.still_valid(&known)? {
                return Ok(known);
            }
        }
        let verified = Arc::new(self.verify(token).await?);
        self.verified.insert(digest, Arc::clone(&verified));
        Ok(verified)
    }

    /// Whether a remembered token still holds: Some(false) when its key set changed
    /// (verify it again), the refusal when its time is up.
    fn still_valid(&self, known: &Verified) -> Result<bool, &'static str> {
        let now = jsonwebtoken::get_current_timestamp();
        if now > known.exp.saturating_add(self.leeway) {
            return Err("expired");
        }
        if known.nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err("not_yet_valid");
        }
        let current = match &self.keys {
            Keys::Remote(remote) => remote.current(),
            _ => None,
        };
        Ok(match (&known.keys, current) {
            (Some(then), Some(now)) => Arc::ptr_eq(then, &now),
            (None, None) => true,
            _ => false,
        })
    }

    /// The token checked in full: signature, time, issuer, audience, identity claim.
    async fn verify(&self, token: &str) -> Result<Verified, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed_token")?;
        if !self.algorithms.contains(&header.alg) {
            return Err("algorithm_not_allowed");
        }
        let validation = self.validation(header.alg);
        let (claims, keys) = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or("algorithm_not_allowed")?;
                (decode(token, std::iter::once(key), &validation)?, None)
            }
            alg => {
                let family = match alg {
                    Algorithm::RS256 => Family::Rsa,
                    Algorithm::ES256 => Family::P256,
                    _ => Family::Ed25519,
                };
                let kid = header.kid.as_deref();
                let set = self.key_set(kid, family).await?;
                let claims = decode(token, set.candidates(kid, family), &validation)?;
                (claims, matches!(self.keys, Keys::Remote(_)).then_some(set))
            }
        };
        let identity = claim_text(&claims, &self.identity_claim).ok_or("missing_identity_claim")?;
        let mut claim_headers = Vec::new();
        for (claim, header) in &self.claim_headers {
            if let Some(value) = claim_text(&claims, claim).and_then(|v| HeaderValue::from_str(&v).ok()) {
                claim_headers.push((header.clone(), value));
            }
        }
        // Seconds, as jsonwebtoken read them (a JSON number, whole or not).
        let seconds = |name: &str| claims.get(name).and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)));
        let exp = seconds("exp").ok_or("missing_claim")?;
        let nbf = seconds("nbf");
        Ok(Verified { identity: Arc::from(identity), claim_headers, exp, nbf, keys })
    }

    /// The key set that holds the token's key: a remote set is fetched again (at most
    /// once per interval) when it has no key for the token's `kid`.
    async fn key_set(&self, kid: Option<&str>, family: Family) -> Result<Arc<KeySet>, &'static str> {
        match &self.keys {
            Keys::Static(set) => Ok(Arc::clone(set)),
            Keys::None => Err("unknown_key"),
            Keys::Remote(remote) => {
                if let Some(set) = remote.current() {
                    if set.candidates(kid, family).next().is_some() {
                        return Ok(set);
                    }
                }
                remote.refreshed().await.ok_or("keys_unavailable")
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        // jsonwebtoken refuses a token with any `aud` when none is configured.
        validation.validate_aud = !self.audience.is_empty();
        if !self.audience.is_empty() {
            validation.set_audience(&self.audience);
        }
        validation
    }
}

/// The token of `Authorization: Bearer TOKEN` (the scheme without case, RFC 9110 §11.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let mut sent = headers.get_all(AUTHORIZATION).iter();
    let value = match (sent.next(), sent.next()) {
        (None, _) => return Err("missing_credentials"),
        (Some(_), Some(_)) => return Err("several_credentials"),
        (Some(value), None) => value.to_str().map_err(|_| "malformed_token")?,
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err("missing_credentials"),
    }
}

/// The claims of the first key that verifies the token, or the reason none did.
fn decode<'a>(
    token: &str,
    keys: impl Iterator<Item = &'a DecodingKey>,
    validation: &Validation,
) -> Result<serde_json::Value, &'static str> {
    let mut why = "unknown_key";
    for key in keys {
        match jsonwebtoken::decode::<serde_json::Value>(token, key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(error) => {
                why = match error.kind() {
                    ErrorKind::ExpiredSignature => return Err("expired"),
                    ErrorKind::ImmatureSignature => return Err("not_yet_valid"),
                    ErrorKind::InvalidIssuer => return Err("wrong_issuer"),
                    ErrorKind::InvalidAudience => return Err("wrong_audience"),
                    ErrorKind::MissingRequiredClaim(_) => return Err("missing_claim"),
                    ErrorKind::InvalidSignature => "bad_signature",
                    _ => "malformed_token",
                }
            }
        }
    }
    Err(why)
}

/// A claim as header text: strings as they are, numbers and booleans as JSON, arrays
/// of those joined with ",".
fn claim_text(claims: &serde_json::Value, name: &str) -> Option<String> {
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match claims.get(name)? {
        serde_json::Value::Array(items) => Some(items.iter().filter_map(scalar).collect::<Vec<_>>().join(",")),
        other => scalar(other),
    }
    .filter(|text| !text.is_empty())
}
