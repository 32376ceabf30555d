//! Valid settings that are probably mistakes: a route that can never match because an
//! earlier one takes all its requests, an upstream group no route uses, and two
//! listeners on one port where one is a wildcard address.

use crate::file::FileConfig;
use crate::model::{ListenerConfig, RouteConfig};
use crate::validate::line_of;
use crate::Problem;

/// The warnings for a validated config; `names` are the upstream names, sorted.
pub(crate) fn find(
    file: &FileConfig,
    source: &str,
    listeners: &[ListenerConfig],
    routes: &[RouteConfig],
    names: &[String],
) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for (first, second) in crate::validate_listeners::overlapping_listeners(listeners) {
        let line = file.listeners.get(second).map_or(1, |l| line_of(source, l.address.span().start));
        let (a, b) = (listeners[first].address, listeners[second].address);
        warnings.push(Problem {
            line,
            key: format!("listener[{second}].address"),
            message: format!(
                "{b} and listener[{first}]'s {a} share port {}: connections to the specific address go to one, all others to the wildcard one; use one wildcard listener, or different ports",
                a.port()
            ),
        });
    }
    for (i, route) in routes.iter().enumerate() {
        if let Some(earlier) = routes[..i].iter().position(|e| covers(e, route)) {
            let span = file.routes.get(i).and_then(|r| {
                [&r.upstream, &r.name, &r.path_prefix, &r.host].iter().find_map(|f| f.as_ref().map(|f| f.span()))
            });
            let line = span.map_or(1, |s| line_of(source, s.start));
            warnings.push(Problem {
                line,
                key: format!("route[{i}]"),
                message: format!(
                    "can never match: route[{earlier}] (\"{}\") comes first and takes every request it would; move it above",
                    routes[earlier].name
                ),
            });
        }
    }
    for (index, name) in names.iter().enumerate() {
        if !routes.iter().any(|r| r.upstream == Some(index)) {
            let line = source.find(&format!("[upstream.{name}")).map_or(1, |offset| line_of(source, offset));
            warnings.push(Problem {
                line,
                key: format!("upstream.{name}"),
                message: "no route sends requests to it; add a [[route]] with upstream = \"{name}\" or remove it"
                    .replace("{name}", name),
            });
        }
    }
    warnings
}

/// Whether every request `later` matches is matched by `earlier` first.
fn covers(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    // A redirect for one scheme lets the other scheme's requests go on to later routes.
    if earlier.redirect.as_ref().is_some_and(|r| r.only_scheme.is_some()) {
        return false;
    }
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    let prefix = earlier.path_prefix == "/"
        || later.path_prefix == earlier.path_prefix
        || later
            .path_prefix
            .strip_prefix(earlier.path_prefix.trim_end_matches('/'))
            .is_some_and(|r| r.starts_with('/'));
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    host && prefix && methods
}
