//! `kind = "api_key"`: a key from a header (default `X-API-Key`) or a query parameter,
//! looked up by its SHA-256 hash and confirmed with a constant-time comparison; the
//! key's name is the identity.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;
use http::uri::PathAndQuery;
use sluice_config::ApiKeyAuth;
use subtle::ConstantTimeEq;

pub(super) struct ApiKeyCheck {
    header: HeaderName,
    query: Option<String>,
    keys: Arc<HashMap<[u8; 32], Arc<str>>>,
}

impl ApiKeyCheck {
    pub(super) fn new(config: &ApiKeyAuth) -> Result<Self, String> {
        let header = HeaderName::from_bytes(config.header.as_bytes()).map_err(|e| format!("{}: {e}", config.header))?;
        Ok(ApiKeyCheck { header, query: config.query.clone(), keys: Arc::clone(&config.keys.0) })
    }

    pub(super) fn header_name(&self) -> &str {
        self.header.as_str()
    }

    pub(super) fn query_parameter(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The key's name. The credential is removed from the request when `hide` is set.
    pub(super) fn admit(&self, parts: &mut Parts, hide: bool) -> Result<Arc<str>, &'static str> {
        let mut sent = parts.headers.get_all(&self.header).iter();
        let key = match (sent.next(), sent.next()) {
            (Some(_), Some(_)) => return Err("several_credentials"),
            (Some(value), None) => value.as_bytes().to_vec(),
            (None, _) => match self.query.as_deref().and_then(|name| query_value(parts.uri.query(), name)) {
                Some(value) => value,
                None => return Err("missing_credentials"),
            },
        };
        let name = self.lookup(&key).ok_or("unknown_key")?;
        if hide {
            parts.headers.remove(&self.header);
            // The parameter goes too when the key came in the header: the upstream sees
            // no credential-shaped value either way.
            if let Some(param) = &self.query {
                without_query_param(parts, param);
            }
        }
        Ok(name)
    }

    /// The name whose key hashes to `key`'s hash. The map finds the entry by the hash
    /// (which says nothing an attacker can use about a key), and the hashes are then
    /// compared in constant time.
    fn lookup(&self, key: &[u8]) -> Option<Arc<str>> {
        let hash = sluice_config::sha256(key);
        let (stored, name) = self.keys.get_key_value(&hash)?;
        bool::from(stored.ct_eq(&hash)).then(|| Arc::clone(name))
    }
}

/// The value of query parameter `name`, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    let mut found = None;
    for pair in query?.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return None;
            }
            found = Some(percent_decode(value));
        }
    }
    found
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The request's target without query parameter `name`.
fn without_query_param(parts: &mut Parts, name: &str) {
    let Some(query) = parts.uri.query() else { return };
    let kept: Vec<&str> =
        query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name).collect();
    let path = parts.uri.path();
    let target = match kept.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{}", kept.join("&")),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = PathAndQuery::try_from(target).ok();
    parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
}

/// `target` with the value of query parameter `name` replaced by `-` (for records).
pub(crate) fn redact_query(target: &[u8], name: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(target).ok()?;
    let (path, query) = text.split_once('?')?;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == name => format!("{key}=-"),
            _ => pair.to_string(),
        })
        .collect();
    Some(format!("{path}?{}", pairs.join("&")).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_credentials_are_read_decoded_and_redacted() {
        assert_eq!(query_value(Some("a=1&api_key=ab%2Fc+d&b=2"), "api_key"), Some(b"ab/c d".to_vec()));
        assert_eq!(query_value(Some("api_key=1&api_key=2"), "api_key"), None);
        assert_eq!(query_value(Some("x=1"), "api_key"), None);
        assert_eq!(redact_query(b"/p?api_key=secret&x=1", "api_key"), Some(b"/p?api_key=-&x=1".to_vec()));
        let mut parts = http::Request::get("/p?api_key=secret&x=1").body(()).expect("request").into_parts().0;
        without_query_param(&mut parts, "api_key");
        assert_eq!(parts.uri, "/p?x=1");
    }
}
