//! CORS (the Fetch standard's CORS protocol) for a route with `[route.cors]`: sluice
//! answers a browser's preflight itself (the upstream never sees it), and gives an
//! actual response the fields that let the calling page read it. An origin not allowed
//! gets no CORS fields (its preflight a 403), so the browser keeps the response from
//! the page; every response says `Vary: Origin`, so no cache gives one origin's answer
//! to another.

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};
use sluice_config::CorsConfig;

use super::ProxyBody;

/// The answer to a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), or None for any other request.
pub(super) fn preflight<B>(cors: &CorsConfig, request: &Request<B>) -> Option<Response<ProxyBody>> {
    let headers = request.headers();
    if request.method() != Method::OPTIONS {
        return None;
    }
    let origin = headers.get(ORIGIN)?;
    let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
    let mut response = Response::new(ProxyBody::empty());
    response.headers_mut().insert(
        VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    let asked_headers: Vec<String> = headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let method_allowed = method.to_str().is_ok_and(|m| simple_method(m) || cors.methods.iter().any(|a| a == m));
    // A browser asks only for headers whose values are not CORS-safelisted (a JSON
    // Content-Type included): each must be listed.
    let headers_allowed = asked_headers.iter().all(|h| cors.headers.contains(h));
    if !allowed(cors, origin) || !method_allowed || !headers_allowed {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return Some(response);
    }
    *response.status_mut() = StatusCode::NO_CONTENT;
    let fields = response.headers_mut();
    allow_origin(cors, origin, fields);
    if let Ok(methods) = HeaderValue::from_str(&cors.methods.join(", ")) {
        fields.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    if !asked_headers.is_empty() {
        if let Ok(allowed) = HeaderValue::from_str(&asked_headers.join(", ")) {
            fields.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
    }
    fields.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age.as_secs()));
    Some(response)
}

/// Gives an actual response the CORS fields for the request's `Origin` (none for an
/// origin not allowed), and `Vary: Origin` in any case.
pub(super) fn decorate(cors: &CorsConfig, origin: Option<&HeaderValue>, fields: &mut HeaderMap) {
    fields.append(VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin.filter(|o| allowed(cors, o)) else { return };
    allow_origin(cors, origin, fields);
    if !cors.expose_headers.is_empty() {
        if let Ok(exposed) = HeaderValue::from_str(&cors.expose_headers.join(", ")) {
            fields.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
        }
    }
}

/// The request's `Origin` when the route handles CORS (read before the request moves on).
pub(super) fn origin<B>(cors: Option<&CorsConfig>, request: &Request<B>) -> Option<HeaderValue> {
    cors.and(request.headers().get(ORIGIN)).cloned()
}

fn allowed(cors: &CorsConfig, origin: &HeaderValue) -> bool {
    origin.to_str().is_ok_and(|origin| cors.origins.iter().any(|allowed| allowed.allows(origin)))
}

/// The origin itself, not `*`: a page that sends credentials needs its own origin
/// echoed, and an echo is right for every allowed origin.
fn allow_origin(cors: &CorsConfig, origin: &HeaderValue, fields: &mut HeaderMap) {
    fields.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.credentials {
        fields.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// Methods a page may use without being listed (the Fetch standard's CORS-safelisted).
fn simple_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "POST")
}
