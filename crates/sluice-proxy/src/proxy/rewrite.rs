//! A route's rewriting (issue 23 §4): the path the upstream is sent (prefix or regex,
//! from the normalised path), header edits both ways, and redirects, with templates
//! whose variables (`{client_addr}`, `{identity}`, `{1}`...) are filled in here.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::{Response, StatusCode};
use sluice_config::{HeaderEdits, PathRewrite, RedirectConfig, RewriteConfig, Template, TemplatePart, TemplateVar};

use super::ProxyBody;

/// What a request brings to its templates beyond the request itself: who it is, and
/// the route regex's captures. Made only on routes that rewrite or authenticate.
#[derive(Clone)]
pub(crate) struct Passage {
    pub(crate) identity: Option<Arc<str>>,
    /// The upstream's path when the route's rewrite changed it (a regex's `to` may
    /// give a query too; the client's follows it).
    pub(crate) path: Option<String>,
    /// The regex's groups (0: the whole match); None where a group did not take part.
    captures: Vec<Option<String>>,
    /// The client's address (after `trusted_proxies`).
    client: IpAddr,
    /// The normalised path and the query as the client sent them.
    client_path: String,
    client_query: Option<String>,
}

/// The request's values for templates.
pub(crate) struct Vars<'a> {
    pub(crate) passage: &'a Passage,
    pub(crate) request_id: &'a HeaderValue,
    pub(crate) route: &'a str,
    pub(crate) scheme: &'static str,
    pub(crate) host: Option<&'a HeaderValue>,
}

impl Passage {
    /// The passage of a request for `uri` on a route with `rewrite` (the new path and
    /// the captures when the regex matches).
    pub(crate) fn new(
        rewrite: Option<&RewriteConfig>,
        uri: &http::Uri,
        identity: Option<Arc<str>>,
        client: IpAddr,
    ) -> Passage {
        let client_path = uri.path().to_string();
        let client_query = uri.query().map(str::to_string);
        let mut passage = Passage { identity, path: None, captures: Vec::new(), client, client_query, client_path };
        match rewrite.and_then(|r| r.path.as_ref()) {
            Some(PathRewrite::Prefix { strip, add }) => {
                let path = passage.client_path.as_str();
                let rest = match path.strip_prefix(strip.as_str()) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                    _ => path,
                };
                let joined = format!("{add}{rest}");
                passage.path = Some(if joined.is_empty() { "/".to_string() } else { joined });
            }
            Some(PathRewrite::Regex { regex, to }) => {
                if let Some(found) = regex.0.captures(&passage.client_path) {
                    passage.captures = found.iter().map(|m| m.map(|m| m.as_str().to_string())).collect();
                    let path = render(to, &Vars::bare(&passage));
                    passage.path = Some(if path.starts_with('/') { path } else { format!("/{path}") });
                }
            }
            None => {}
        }
        passage
    }
}

impl<'a> Vars<'a> {
    /// Values for a path template: only the passage's own (the path needs no others).
    fn bare(passage: &'a Passage) -> Vars<'a> {
        static EMPTY: HeaderValue = HeaderValue::from_static("");
        Vars { passage, request_id: &EMPTY, route: "", scheme: "http", host: None }
    }
}

/// The template's text with the request's values.
pub(crate) fn render(template: &Template, vars: &Vars<'_>) -> String {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Var(var) => match var {
                TemplateVar::ClientAddr => out.push_str(&vars.passage.client.to_string()),
                TemplateVar::RequestId => out.push_str(vars.request_id.to_str().unwrap_or("")),
                TemplateVar::Identity => out.push_str(vars.passage.identity.as_deref().unwrap_or("")),
                TemplateVar::Route => out.push_str(vars.route),
                TemplateVar::Scheme => out.push_str(vars.scheme),
                TemplateVar::Host => out.push_str(vars.host.and_then(|h| h.to_str().ok()).unwrap_or("")),
                TemplateVar::Hostname => out.push_str(hostname(vars.host)),
                TemplateVar::Path => out.push_str(&vars.passage.client_path),
                TemplateVar::Query => out.push_str(vars.passage.client_query.as_deref().unwrap_or("")),
                TemplateVar::Uri => {
                    out.push_str(&vars.passage.client_path);
                    if let Some(query) = &vars.passage.client_query {
                        out.push('?');
                        out.push_str(query);
                    }
                }
                TemplateVar::Capture(i) => {
                    out.push_str(vars.passage.captures.get(*i).and_then(Option::as_deref).unwrap_or(""))
                }
            },
        }
    }
    out
}

/// The Host without its port (an IPv6 literal keeps its brackets).
fn hostname(host: Option<&HeaderValue>) -> &str {
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// Applies `edits` to `headers`: remove, then set, then add. A value that is not a
/// valid field value once filled in (a variable brought a control character) is left out.
pub(crate) fn edit_headers(edits: &HeaderEdits, headers: &mut HeaderMap, vars: &Vars<'_>) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, template) in &edits.set {
        if let Ok(value) = HeaderValue::from_str(&render(template, vars)) {
            headers.insert(name.clone(), value);
        }
    }
    for (name, template) in &edits.add {
        if let Ok(value) = HeaderValue::from_str(&render(template, vars)) {
            headers.append(name.clone(), value);
        }
    }
}

/// The route's redirect (the router took the request for it: its scheme, if it names one).
pub(crate) fn redirect(redirect: &RedirectConfig, vars: &Vars<'_>) -> Response<ProxyBody> {
    let target = render(&redirect.to, vars);
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    match HeaderValue::from_str(&target) {
        Ok(location) => {
            response.headers_mut().insert(LOCATION, location);
        }
        // A variable brought bytes a Location cannot hold: the client sent them.
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::PathRegex;

    fn rewrite(path: PathRewrite) -> RewriteConfig {
        RewriteConfig { path: Some(path), ..Default::default() }
    }

    #[test]
    fn prefixes_are_stripped_at_segment_boundaries_and_replaced() {
        let strip = rewrite(PathRewrite::Prefix { strip: "/api".into(), add: String::new() });
        let path = |r: &RewriteConfig, uri: &str| {
            Passage::new(Some(r), &uri.parse().expect("uri"), None, [127, 0, 0, 1].into()).path
        };
        assert_eq!(path(&strip, "/api/users?x=1").as_deref(), Some("/users"));
        assert_eq!(path(&strip, "/api").as_deref(), Some("/"));
        assert_eq!(path(&strip, "/apis/x").as_deref(), Some("/apis/x"));
        let replace = rewrite(PathRewrite::Prefix { strip: "/api".into(), add: "/v2".into() });
        assert_eq!(path(&replace, "/api/users").as_deref(), Some("/v2/users"));
    }

    #[test]
    fn regex_captures_fill_the_path_and_other_templates() {
        let regex = PathRegex(regex::Regex::new(r"^/users/(?P<id>\d+)$").expect("regex"));
        let names = [None, Some("id".to_string())];
        let to = Template::parse("/v1/people/{id}", Some(&names)).expect("template");
        let config = rewrite(PathRewrite::Regex { regex, to });
        let passage = Passage::new(
            Some(&config),
            &"/users/42?full=1".parse().expect("uri"),
            Some(Arc::from("acme")),
            [10, 0, 0, 1].into(),
        );
        assert_eq!(passage.path.as_deref(), Some("/v1/people/42"));
        let id = HeaderValue::from_static("req-1");
        let host = HeaderValue::from_static("api.test:8080");
        let vars = Vars { passage: &passage, request_id: &id, route: "users", scheme: "http", host: Some(&host) };
        let template =
            Template::parse("{1} {identity} {client_addr} {request_id} {route} {hostname} {uri}", Some(&names))
                .expect("t");
        assert_eq!(render(&template, &vars), "42 acme 10.0.0.1 req-1 users api.test /users/42?full=1");
        let unmatched = Passage::new(Some(&config), &"/other".parse().expect("uri"), None, [10, 0, 0, 1].into());
        assert_eq!(unmatched.path, None);
    }
}
