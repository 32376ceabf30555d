//! Route matching: host (exact or `*.suffix`), path prefix, method; first match wins.

use std::borrow::Cow;

/// A compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// Lower-case host, compared without the port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`
    /// and not `a.b.example.com` (one label, as in nginx and Envoy).
    Wildcard(String),
}

impl HostPattern {
    /// Parses `None` (any host), `"*.example.com"` or `"api.example.com"`.
    pub fn new(pattern: Option<&str>) -> Self {
        match pattern {
            None => HostPattern::Any,
            Some(p) => match p.strip_prefix('*') {
                Some(suffix) => HostPattern::Wildcard(suffix.to_ascii_lowercase()),
                None => HostPattern::Exact(p.to_ascii_lowercase()),
            },
        }
    }

    /// `host` is the request's host without port, already lower-case.
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && !host[..host.len() - suffix.len()].contains('.')
            }
        }
    }
}

/// One route's match conditions and the value it yields (e.g. a route index).
#[derive(Debug, Clone)]
pub struct RouteRule<T> {
    pub host: HostPattern,
    pub path_prefix: String,
    /// Upper-case; empty matches every method.
    pub methods: Vec<String>,
    pub target: T,
}

/// Routes in priority order.
#[derive(Debug, Clone)]
pub struct Router<T> {
    rules: Vec<RouteRule<T>>,
}

impl<T> Router<T> {
    pub fn new(rules: Vec<RouteRule<T>>) -> Self {
        Router { rules }
    }

    /// The first rule matching the request. `host` may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str, method: &str) -> Option<&T> {
        self.find_where(host, path, method, |_| true)
    }

    /// The first rule matching the request whose target `takes` it too (a condition
    /// the router does not know, such as the scheme a redirect is for).
    pub fn find_where(&self, host: Option<&str>, path: &str, method: &str, takes: impl Fn(&T) -> bool) -> Option<&T> {
        let host = host.map(normalize_host).unwrap_or_default();
        self.rules
            .iter()
            .find(|r| {
                r.host.matches(&host)
                    && path_has_prefix(path, &r.path_prefix)
                    && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
                    && takes(&r.target)
            })
            .map(|r| &r.target)
    }
}

/// Lower-cases and strips the port (`Api.Example.com:8080` → `api.example.com`).
fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    // Most hosts arrive lower-case: those are borrowed, not copied.
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

/// A prefix `/api` matches `/api`, `/api/x` and `/api?q`, but not `/apix`, unless the
/// prefix itself ends in `/`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || matches!(path.as_bytes().get(prefix.len()), None | Some(b'/') | Some(b'?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: Option<&str>, prefix: &str, methods: &[&str], target: u32) -> RouteRule<u32> {
        RouteRule {
            host: HostPattern::new(host),
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            target,
        }
    }

    #[test]
    fn first_matching_rule_wins_in_order() {
        let router = Router::new(vec![
            rule(Some("api.example.com"), "/v1", &["GET"], 1),
            rule(Some("*.example.com"), "/", &[], 2),
            rule(None, "/", &[], 3),
        ]);
        assert_eq!(router.find(Some("API.example.com:8080"), "/v1/users", "GET"), Some(&1));
        assert_eq!(router.find(Some("api.example.com"), "/v1/users", "POST"), Some(&2));
        assert_eq!(router.find(Some("www.example.com"), "/", "GET"), Some(&2));
        assert_eq!(router.find(Some("a.b.example.com"), "/", "GET"), Some(&3));
        assert_eq!(router.find(Some("example.com"), "/", "GET"), Some(&3));
        assert_eq!(router.find(None, "/", "GET"), Some(&3));
    }

    #[test]
    fn path_prefix_respects_segment_boundaries() {
        let router = Router::new(vec![rule(None, "/api", &[], 1), rule(None, "/static/", &[], 2)]);
        assert_eq!(router.find(None, "/api", "GET"), Some(&1));
        assert_eq!(router.find(None, "/api/x", "GET"), Some(&1));
        assert_eq!(router.find(None, "/api?q=1", "GET"), Some(&1));
        assert_eq!(router.find(None, "/apix", "GET"), None);
        assert_eq!(router.find(None, "/static/a.css", "GET"), Some(&2));
        assert_eq!(router.find(None, "/static", "GET"), None);
    }

    #[test]
    fn hosts_with_ports_and_ipv6_literals_are_normalized() {
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("Example.COM"), "example.com");
        assert_eq!(normalize_host("127.0.0.1:80"), "127.0.0.1");
    }
}
