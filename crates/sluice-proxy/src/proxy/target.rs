//! The request target as sluice routes and forwards it, the same for HTTP/1.1 and
//! HTTP/2 clients: one authority (RFC 9112 §3.2, RFC 9113 §8.3.1), one normalised path
//! (see `sluice_policy::path`), and deliberate answers for `CONNECT` and `OPTIONS *`.
//! Routing and forwarding read the request only after this, so they cannot disagree.

use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, HOST};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use sluice_config::{EscapedSlashes, PathRules};
use sluice_policy::path::{self, EscapedSlashAction, PathOptions};

use super::body::ProxyBody;
use super::error::{ClientError, ProxyError};
use crate::body::RequestBody;

/// What `Allow` says for `OPTIONS *` and for a refused `CONNECT`.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// Whether the request is for a route, or for the server itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Route,
    /// `OPTIONS *`: about the server, answered by sluice.
    ServerOptions,
}

/// Whether `bytes` may be a Host header or URI authority: RFC 3986 §3.2.2 host
/// characters with an optional port, and no userinfo (RFC 9110 §4.2.4). Empty is
/// allowed (RFC 9112 §3.2: a Host for a target without authority).
pub(crate) fn is_valid_authority(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| AUTHORITY_BYTES[usize::from(*b)])
}

/// Bytes allowed in an authority: unreserved, sub-delims, ':', '[', ']', '%' (a table,
/// as this runs on every request's Host).
const AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        i += 1;
    }
    table
};

/// Checks the request's target and rewrites its path to the normalised one.
pub(crate) fn resolve(request: &mut Request<RequestBody>, rules: PathRules) -> Result<Target, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ClientError::Connect.into());
    }
    if request.uri().path() == "*" && request.uri().authority().is_none() {
        return match *request.method() {
            Method::OPTIONS => Ok(Target::ServerOptions),
            _ => Err(ClientError::Malformed("the asterisk-form target is only for OPTIONS").into()),
        };
    }
    if request.version() == Version::HTTP_2 {
        check_h2_authority(request)?;
    }
    normalise_path(request.uri_mut(), rules)?;
    Ok(Target::Route)
}

/// RFC 9113 §8.3.1: `:authority` and a Host that differs from it are malformed; one
/// Host at most; either must be a valid authority.
fn check_h2_authority(request: &Request<RequestBody>) -> Result<(), ClientError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ClientError::Malformed("more than one Host header"));
    }
    let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
    if let (Some(authority), Some(host)) = (authority, host) {
        if !authority.eq_ignore_ascii_case(host.as_bytes()) {
            return Err(ClientError::Malformed("Host differs from :authority"));
        }
    }
    match authority.or(host.map(HeaderValue::as_bytes)) {
        Some(value) if is_valid_authority(value) => Ok(()),
        Some(_) => Err(ClientError::Malformed("invalid :authority or Host")),
        None => Err(ClientError::Malformed("HTTP/2 request without :authority or Host")),
    }
}

fn normalise_path(uri: &mut Uri, rules: PathRules) -> Result<(), ClientError> {
    let options = PathOptions {
        merge_slashes: rules.merge_slashes,
        escaped_slashes: match rules.escaped_slashes {
            EscapedSlashes::Keep => EscapedSlashAction::Keep,
            EscapedSlashes::Decode => EscapedSlashAction::Decode,
            EscapedSlashes::Reject => EscapedSlashAction::Reject,
        },
    };
    let normalised = match path::normalize(uri.path(), options).map_err(ClientError::Path)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    let with_query = match uri.query() {
        Some(query) => format!("{normalised}?{query}"),
        None => normalised,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(with_query).map_err(|_| ClientError::Malformed("invalid request target"))?);
    *uri = Uri::from_parts(parts).map_err(|_| ClientError::Malformed("invalid request target"))?;
    Ok(())
}

/// The answer to `OPTIONS *`: what sluice accepts, with no body.
pub(crate) fn server_options() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(""));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, version: Version, host: &[&str]) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        *request.method_mut() = method;
        *request.uri_mut() = uri.parse().expect("uri");
        *request.version_mut() = version;
        for h in host {
            request.headers_mut().append(HOST, HeaderValue::from_str(h).expect("host"));
        }
        request
    }

    #[test]
    fn paths_are_normalised_in_place_with_the_query_kept() {
        let mut r = request(Method::GET, "/public/%2e%2e/admin?a=/../b", Version::HTTP_11, &["x"]);
        assert_eq!(resolve(&mut r, PathRules::default()).expect("ok"), Target::Route);
        assert_eq!(r.uri(), "/admin?a=/../b");
        let mut h2 = request(Method::GET, "http://x.test/a/./b", Version::HTTP_2, &[]);
        resolve(&mut h2, PathRules::default()).expect("ok");
        assert_eq!(h2.uri(), "http://x.test/a/b");
    }

    #[test]
    fn connect_and_asterisk_get_deliberate_answers() {
        let mut connect = request(Method::CONNECT, "a.test:443", Version::HTTP_11, &["a.test:443"]);
        assert!(matches!(resolve(&mut connect, PathRules::default()), Err(ProxyError::Client(ClientError::Connect))));
        let mut options = request(Method::OPTIONS, "*", Version::HTTP_11, &["x"]);
        assert_eq!(resolve(&mut options, PathRules::default()).expect("ok"), Target::ServerOptions);
        let mut get = request(Method::GET, "*", Version::HTTP_11, &["x"]);
        assert!(resolve(&mut get, PathRules::default()).is_err());
    }

    #[test]
    fn http2_authority_and_host_must_agree() {
        let mut differ = request(Method::GET, "http://a.test/", Version::HTTP_2, &["b.test"]);
        assert!(resolve(&mut differ, PathRules::default()).is_err());
        let mut same = request(Method::GET, "http://a.test/", Version::HTTP_2, &["A.test"]);
        assert!(resolve(&mut same, PathRules::default()).is_ok());
        let mut none = request(Method::GET, "/", Version::HTTP_2, &[]);
        assert!(resolve(&mut none, PathRules::default()).is_err());
    }
}
