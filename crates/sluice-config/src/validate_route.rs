//! `[[route]]`: what a route matches, where it sends, its timeouts and bodies, cache,
//! rate limits and priority.

use std::time::Duration;

use toml::Spanned;

use crate::defaults;
use crate::file::FileRoute;
use crate::model::*;
use crate::validate::*;

pub(crate) fn check_route(
    checker: &mut Checker,
    index: usize,
    route: &FileRoute,
    upstreams: &[String],
    rate_limits: &std::collections::BTreeMap<String, crate::file::FileRateLimit>,
    auths: &std::collections::BTreeMap<String, crate::file::FileAuth>,
) -> Option<RouteConfig> {
    let key = format!("route[{index}]");
    let auth = crate::validate_gateway::route_auth(checker, &key, route, auths);
    if route.auth.is_none() {
        for name in route.rate_limits.iter().flatten() {
            let by_identity = rate_limits
                .get(name.get_ref())
                .and_then(|l| l.key.as_ref())
                .is_some_and(|parts| parts.get_ref().iter().any(|p| p.get_ref().trim() == "identity"));
            if by_identity {
                checker.problem(
                    name.span(),
                    format!("{key}.rate_limits"),
                    format!("rate_limit.{} counts by \"identity\", which only a route with auth has; add auth = \"NAME\" to the route", name.get_ref()),
                );
            }
        }
    }
    let (rewrite, captures) = crate::validate_gateway::check_rewrite(checker, &key, route);
    let redirect = route
        .redirect
        .as_ref()
        .and_then(|r| crate::validate_gateway::check_redirect(checker, &key, r, captures.as_deref()));
    let compression =
        route.compression.as_ref().and_then(|c| crate::validate_gateway::check_compression(checker, &key, c));
    let route_rate_limits = crate::validate_limits::route_rate_limits(checker, &key, &route.rate_limits, rate_limits);
    let (priority, priority_header) = crate::validate_limits::check_priority(checker, &key, route);
    let upstream = match &route.upstream {
        Some(named) => {
            let found = upstreams.iter().position(|n| n == named.get_ref());
            if found.is_none() {
                let known = if upstreams.is_empty() {
                    "none is defined; add an [upstream.NAME] table".to_string()
                } else {
                    format!("defined: {}", upstreams.join(", "))
                };
                checker.problem(
                    named.span(),
                    format!("{key}.upstream"),
                    format!("no upstream named \"{}\" ({known})", named.get_ref()),
                );
            }
            found.map(Some)
        }
        // A route that redirects every request it takes sends none upstream.
        None if route.redirect.is_some() => Some(None),
        None => {
            let span =
                [&route.name, &route.path_prefix, &route.host].iter().find_map(|f| f.as_ref().map(Spanned::span));
            checker.problem(
                span.unwrap_or(0..0),
                format!("{key}.upstream"),
                "is missing; name the group the route sends to, e.g. upstream = \"api\" (only a route with [route.redirect] needs none)",
            );
            None
        }
    };
    let host = route.host.as_ref().and_then(|h| {
        let text = h.get_ref().to_ascii_lowercase();
        let bare = text.strip_prefix("*.").unwrap_or(&text);
        let valid = !bare.is_empty()
            && !bare.contains('*')
            && bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
        if !valid {
            checker.problem(
                h.span(),
                format!("{key}.host"),
                format!("\"{}\" is not a host name; write \"api.example.com\" or \"*.example.com\"", h.get_ref()),
            );
            return None;
        }
        Some(Some(text))
    });
    let path_prefix = match &route.path_prefix {
        Some(p) if !p.get_ref().starts_with('/') => {
            checker.problem(
                p.span(),
                format!("{key}.path_prefix"),
                format!("\"{}\" must start with \"/\"", p.get_ref()),
            );
            None
        }
        Some(p) => Some(p.get_ref().clone()),
        None => Some("/".to_string()),
    };
    let mut methods = Vec::new();
    for m in route.methods.iter().flatten() {
        let upper = m.get_ref().to_ascii_uppercase();
        if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            checker.problem(
                m.span(),
                format!("{key}.methods"),
                format!("\"{}\" is not an HTTP method; write e.g. \"GET\"", m.get_ref()),
            );
        } else {
            methods.push(upper);
        }
    }
    let upgrades = check_upgrades(checker, &key, route);
    let large_request_bodies = choice(
        checker,
        &route.large_request_bodies,
        &format!("{key}.large_request_bodies"),
        &[("spool", LargeBodies::Spool), ("stream", LargeBodies::Stream)],
    );
    let large_responses = choice(
        checker,
        &route.large_responses,
        &format!("{key}.large_responses"),
        &[("spool", LargeResponses::Spool), ("stream", LargeResponses::Stream)],
    );
    let max_request_body = match &route.max_request_body {
        Some(size) if size.get_ref().0 == 0 => {
            checker.problem(size.span(), format!("{key}.max_request_body"), "must be at least 1 byte; e.g. \"10MiB\"");
            None
        }
        Some(size) => Some(size.get_ref().0),
        None => Some(defaults::MAX_REQUEST_BODY),
    };
    let host = if route.host.is_some() { host? } else { None };
    let timeout = nonzero_duration(checker, &route.timeout, &format!("{key}.timeout"));
    let read_timeout = nonzero_duration(checker, &route.read_timeout, &format!("{key}.read_timeout"));
    let tunnel_idle_timeout =
        nonzero_duration(checker, &route.tunnel_idle_timeout, &format!("{key}.tunnel_idle_timeout"));
    let path_prefix = path_prefix?;
    let name = match &route.name {
        Some(name) => name.get_ref().clone(),
        None => format!("{}{}", host.as_deref().unwrap_or(""), path_prefix),
    };
    Some(RouteConfig {
        name,
        host,
        path_prefix,
        methods,
        upstream: upstream?,
        timeout: timeout.unwrap_or(defaults::ROUTE_TIMEOUT),
        read_timeout: read_timeout.unwrap_or(defaults::READ_TIMEOUT),
        tunnel_idle_timeout: tunnel_idle_timeout.unwrap_or(defaults::TUNNEL_IDLE_TIMEOUT),
        request_buffer: route.request_buffer.map(|s| s.0).unwrap_or(defaults::BODY_BUFFER),
        response_buffer: route.response_buffer.map(|s| s.0).unwrap_or(defaults::BODY_BUFFER),
        max_request_body: max_request_body?,
        large_request_bodies: large_request_bodies?,
        large_responses: large_responses?,
        max_response_spool: route.max_response_spool.map_or(defaults::MAX_RESPONSE_SPOOL, |s| s.0),
        upgrades,
        cache: route.cache.as_ref().is_some_and(|c| *c.get_ref()),
        cache_default_lifetime: cache_default_lifetime(checker, index, route),
        cors: route.cors.as_ref().and_then(|cors| check_cors(checker, index, cors)),
        auth,
        rewrite: (!rewrite.is_noop()).then_some(rewrite),
        redirect,
        compression,
        rate_limits: route_rate_limits,
        priority,
        priority_header,
    })
}

/// `route.cache_default_lifetime`: only on a cached route.
pub(crate) fn cache_default_lifetime(checker: &mut Checker, index: usize, route: &FileRoute) -> Option<Duration> {
    let key = format!("route[{index}].cache_default_lifetime");
    let lifetime = nonzero_duration(checker, &route.cache_default_lifetime, &key)?;
    if !route.cache.as_ref().is_some_and(|c| *c.get_ref()) {
        if let Some(value) = &route.cache_default_lifetime {
            checker.problem(value.span(), key, "applies to cached routes only; add cache = true, or remove it");
        }
        return None;
    }
    Some(lifetime)
}

/// Upgrade tokens are protocol names (RFC 9110 §7.8), compared without case.
pub(crate) fn check_upgrades(checker: &mut Checker, key: &str, route: &FileRoute) -> Vec<String> {
    let Some(list) = &route.upgrades else { return vec!["websocket".to_string()] };
    let mut upgrades = Vec::new();
    for protocol in list {
        let name = protocol.get_ref().to_ascii_lowercase();
        let token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
        if !token {
            checker.problem(
                protocol.span(),
                format!("{key}.upgrades"),
                format!("\"{}\" is not a protocol name; write e.g. \"websocket\"", protocol.get_ref()),
            );
        } else if name.starts_with("h2c") {
            checker.problem(
                protocol.span(),
                format!("{key}.upgrades"),
                "\"h2c\" cannot be tunnelled: requests inside it would bypass sluice's routing (h2c smuggling); remove it".to_string(),
            );
        } else {
            upgrades.push(name);
        }
    }
    upgrades
}

/// `[route.cors]`: origins as browsers send them (scheme, host, port; no path), a
/// wildcard only for one label, `*` only without credentials; method and header names
/// as tokens.
pub(crate) fn check_cors(checker: &mut Checker, index: usize, cors: &crate::file::FileCors) -> Option<CorsConfig> {
    let before = checker.problems.len();
    let key = format!("route[{index}].cors");
    let credentials = cors.credentials.unwrap_or(false);
    let mut origins = Vec::new();
    for origin in cors.origins.get_ref() {
        match cors_origin(origin.get_ref()) {
            Ok(CorsOrigin::Any) if credentials => checker.problem(
                origin.span(),
                format!("{key}.origins"),
                "\"*\" with credentials = true would let any site act as the user; list the origins",
            ),
            Ok(parsed) => origins.push(parsed),
            Err(why) => checker.problem(origin.span(), format!("{key}.origins"), why),
        }
    }
    if cors.origins.get_ref().is_empty() {
        checker.problem(
            cors.origins.span(),
            format!("{key}.origins"),
            "is empty; list the origins, e.g. [\"https://app.example.com\"]",
        );
    }
    let tokens = |checker: &mut Checker, list: &Option<Vec<Spanned<String>>>, name: &str, upper: bool| -> Vec<String> {
        let mut out = Vec::new();
        for item in list.iter().flatten() {
            let text = item.get_ref().trim();
            let token = http_token(text);
            if !token {
                checker.problem(
                    item.span(),
                    format!("{key}.{name}"),
                    format!("\"{text}\" is not a {}", if upper { "method" } else { "header name" }),
                );
                continue;
            }
            out.push(if upper { text.to_ascii_uppercase() } else { text.to_ascii_lowercase() });
        }
        out
    };
    let methods = match &cors.methods {
        Some(_) => tokens(checker, &cors.methods, "methods", true),
        None => vec!["GET".into(), "HEAD".into(), "POST".into()],
    };
    let headers = tokens(checker, &cors.headers, "headers", false);
    let expose_headers = tokens(checker, &cors.expose_headers, "expose_headers", false);
    let max_age =
        nonzero_duration(checker, &cors.max_age, &format!("{key}.max_age")).unwrap_or(Duration::from_secs(600));
    (checker.problems.len() == before).then_some(CorsConfig {
        origins,
        methods,
        headers,
        expose_headers,
        credentials,
        max_age,
    })
}

/// An allowed origin as written.
fn cors_origin(text: &str) -> Result<CorsOrigin, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(CorsOrigin::Any);
    }
    let fix = "write scheme://host[:port] with no path, e.g. \"https://app.example.com\" or \"https://*.example.com\"";
    let Some((scheme, host)) = text.split_once("://") else {
        return Err(format!("\"{text}\" is not an origin; {fix}"));
    };
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("\"{text}\" is not an origin (an origin has no path); {fix}"));
    }
    let lower = host.to_ascii_lowercase();
    match lower.strip_prefix("*.") {
        Some(suffix) if !suffix.contains('*') && suffix.contains('.') => {
            Ok(CorsOrigin::Subdomains { scheme: scheme.to_string(), suffix: format!(".{suffix}") })
        }
        Some(_) => Err(format!("\"{text}\": a wildcard stands for one label of a domain; {fix}")),
        None if lower.contains('*') => Err(format!("\"{text}\": a wildcard stands for one label of a domain; {fix}")),
        None => Ok(CorsOrigin::Exact(format!("{scheme}://{lower}"))),
    }
}
