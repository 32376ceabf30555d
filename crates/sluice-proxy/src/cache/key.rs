//! The cache key: scheme, host, path and query by default; configured request headers
//! and cookies added, the query or some of its parameters left out. Keys start with
//! `scheme://host/path`, so a prefix purge is a string prefix match after the scheme.

use http::header::COOKIE;
use http::HeaderMap;
use sluice_config::{CacheConfig, KeyAuthority};

/// What names the site in a key (`cache.key_authority`), lower-cased: the request's
/// Host, the Host without its port, or the route's upstream group name.
pub(crate) fn authority(config: &CacheConfig, host: &str, upstream: &str) -> String {
    let chosen = match config.key_authority {
        KeyAuthority::Host => host,
        KeyAuthority::Hostname => without_port(host),
        KeyAuthority::Upstream => upstream,
    };
    chosen.to_ascii_lowercase()
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`; a name without a port as it is.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// The primary key of a request for `host` and `path_and_query` (host lower-cased).
pub(crate) fn primary(
    config: &CacheConfig,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> String {
    let mut key = url(config, scheme, host, path_and_query);
    key.push_str(&extras(config, headers));
    key
}

/// The key's URL part: `scheme://host/path?query`, the query filtered as configured.
pub(crate) fn url(config: &CacheConfig, scheme: &str, host: &str, path_and_query: &str) -> String {
    let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let mut key = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 8);
    key.push_str(scheme);
    key.push_str("://");
    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(path);
    if let Some(query) = query.filter(|_| !config.key_ignore_query) {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                !config.key_ignore_params.iter().any(|ignored| ignored == name)
            })
            .collect();
        if !kept.is_empty() {
            key.push('?');
            key.push_str(&kept.join("&"));
        }
    }
    key
}

/// The key's configured extras (request headers and cookies), each on a line of its
/// own after the URL; empty (no allocation) when none are configured.
pub(crate) fn extras(config: &CacheConfig, headers: &HeaderMap) -> String {
    let mut key = String::new();
    for name in &config.key_headers {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        for value in headers.get_all(name.as_str()) {
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    for name in &config.key_cookies {
        key.push_str("\ncookie:");
        key.push_str(name);
        key.push('=');
        if let Some(value) = cookie(headers, name) {
            key.push_str(value);
        }
    }
    key
}

/// The value of cookie `name` in the request's Cookie fields.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v))
}

/// Whether `key` is for `host` and a path under `path_prefix` (any scheme).
pub(crate) fn under(key: &str, host: &str, path_prefix: &str) -> bool {
    let Some((_, rest)) = key.split_once("://") else { return false };
    rest.strip_prefix(host).is_some_and(|path| path.starts_with(path_prefix))
}

#[cfg(test)]
mod tests {
    use super::without_port;

    #[test]
    fn a_port_is_taken_off_names_and_bracketed_addresses_only() {
        for (host, name) in [
            ("api.test:8080", "api.test"),
            ("api.test", "api.test"),
            ("[::1]:443", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("odd:port", "odd:port"),
        ] {
            assert_eq!(without_port(host), name, "{host}");
        }
    }
}
