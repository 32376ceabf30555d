//! Overload limits, file types → model: `[rate_limit.NAME]` → `RateLimitConfig` (and
//! the routes' `rate_limits` names → indexes), `[upstream.NAME.adaptive]` →
//! `AdaptiveConfig`, a route's `priority`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::defaults;
use crate::file::{FileAdaptive, FileRateLimit, FileRoute, FileUpstreamRate};
use crate::model::{
    AdaptiveConfig, MissingKey, Priority, RateKeyPart, RateLimitConfig, RateScope, StoreErrorPolicy, UpstreamRate,
};
use crate::validate::{choice, http_token, nonzero_duration, Checker};

/// What to write instead of a malformed rate.
const RATE_HINT: &str = "write a count per unit: \"100/s\", \"600/m\" or \"10000/h\"";

/// `"100/s"`, `"5/m"`, `"1000/h"`: a count per second, minute or hour.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let (count, unit) = text.trim().split_once('/').ok_or_else(|| format!("\"{text}\" is not a rate; {RATE_HINT}"))?;
    let count: u32 = match count.trim().parse() {
        Ok(n) if n > 0 => n,
        _ => return Err(format!("\"{text}\" needs a whole count above 0; {RATE_HINT}")),
    };
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("\"{text}\" has unknown unit \"{other}\"; {RATE_HINT}")),
    };
    Ok((count, per))
}

pub(crate) fn check_rate_limits(
    checker: &mut Checker,
    limits: &BTreeMap<String, FileRateLimit>,
    base_dir: &Path,
) -> Vec<RateLimitConfig> {
    limits.iter().filter_map(|(name, limit)| check_rate_limit(checker, name, limit, base_dir)).collect()
}

fn check_rate_limit(
    checker: &mut Checker,
    name: &str,
    limit: &FileRateLimit,
    base_dir: &Path,
) -> Option<RateLimitConfig> {
    let table = format!("rate_limit.{name}");
    let before = checker.problems.len();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        // The name is sent in the RateLimit fields and names the Redis keys.
        checker.problem(
            limit.rate.span(),
            table.clone(),
            "a rate limit's name is letters, digits, '-', '_' and '.' only (clients see it in RateLimit-Policy); rename the table",
        );
    }
    let key = match &limit.key {
        None => vec![RateKeyPart::ClientIp],
        Some(parts) if parts.get_ref().is_empty() => {
            checker.problem(
                parts.span(),
                format!("{table}.key"),
                "is empty; list what to count by, e.g. [\"client_ip\"]",
            );
            Vec::new()
        }
        Some(parts) => parts.get_ref().iter().filter_map(|part| key_part(checker, &table, part)).collect(),
    };
    let (count, per) = parse_rate(limit.rate.get_ref()).unwrap_or_else(|why| {
        checker.problem(limit.rate.span(), format!("{table}.rate"), why);
        (1, Duration::from_secs(1))
    });
    let burst = match &limit.burst {
        Some(burst) if *burst.get_ref() == 0 => {
            checker.problem(
                burst.span(),
                format!("{table}.burst"),
                format!("is 0, which admits nothing; give 1 or more (the requests admitted at once; default {count})"),
            );
            1
        }
        Some(burst) => *burst.get_ref(),
        None => count,
    };
    let scope = scope(checker, &table, limit, base_dir);
    let timeout =
        nonzero_duration(checker, &limit.timeout, &format!("{table}.timeout")).unwrap_or(defaults::RATE_STORE_TIMEOUT);
    let on_store_error = choice(
        checker,
        &limit.on_store_error,
        &format!("{table}.on_store_error"),
        &[("local", StoreErrorPolicy::Local), ("open", StoreErrorPolicy::Open), ("closed", StoreErrorPolicy::Closed)],
    );
    let missing_key = choice(
        checker,
        &limit.missing_key,
        &format!("{table}.missing_key"),
        &[("shared", MissingKey::Shared), ("refuse", MissingKey::Refuse)],
    );
    if scope == RateScope::Local {
        let global_only = [
            (limit.on_store_error.as_ref().map(Spanned::span), "on_store_error"),
            (limit.timeout.as_ref().map(Spanned::span), "timeout"),
            (limit.redis_password_file.as_ref().map(Spanned::span), "redis_password_file"),
            (limit.redis_ca_file.as_ref().map(Spanned::span), "redis_ca_file"),
        ];
        for (value, key) in global_only {
            if let Some(span) = value {
                checker.problem(
                    span,
                    format!("{table}.{key}"),
                    "applies to scope = \"global\" only (a local limit has no store to fail); remove it or set scope",
                );
            }
        }
    }
    let (on_store_error, missing_key) = (on_store_error?, missing_key?);
    (checker.problems.len() == before).then(|| RateLimitConfig {
        name: name.to_string(),
        key,
        count,
        per,
        burst,
        scope,
        on_store_error,
        timeout,
        missing_key,
    })
}

fn key_part(checker: &mut Checker, table: &str, part: &Spanned<String>) -> Option<RateKeyPart> {
    let text = part.get_ref().trim();
    match text {
        "client_ip" => return Some(RateKeyPart::ClientIp),
        "route" => return Some(RateKeyPart::Route),
        "identity" => return Some(RateKeyPart::Identity),
        _ => {}
    }
    if let Some(header) = text.strip_prefix("header:") {
        let valid = http_token(header);
        if valid {
            return Some(RateKeyPart::Header(header.to_ascii_lowercase()));
        }
    }
    checker.problem(
        part.span(),
        format!("{table}.key"),
        format!("\"{text}\" is not a key part; write \"client_ip\", \"route\", \"identity\" or \"header:NAME\" (e.g. \"header:x-api-key\")"),
    );
    None
}

fn scope(checker: &mut Checker, table: &str, limit: &FileRateLimit, base_dir: &Path) -> RateScope {
    let scope = limit.scope.as_ref().map_or("local", |s| s.get_ref().as_str());
    match (scope, &limit.redis) {
        ("local", None) => RateScope::Local,
        ("local", Some(redis)) => {
            checker.problem(
                redis.span(),
                format!("{table}.redis"),
                "is only for scope = \"global\"; remove it, or set scope = \"global\" to share the limit through Redis",
            );
            RateScope::Local
        }
        ("global", Some(redis)) => {
            let link = crate::validate_redis::check_redis_link(
                checker,
                redis,
                &format!("{table}.redis"),
                (&limit.redis_password_file, &limit.redis_ca_file),
                (&format!("{table}.redis_password_file"), &format!("{table}.redis_ca_file")),
                base_dir,
            );
            link.map_or(RateScope::Local, RateScope::Global)
        }
        ("global", None) => {
            let span = limit.scope.as_ref().map(Spanned::span).unwrap_or_default();
            checker.problem(
                span,
                format!("{table}.redis"),
                "is missing: a global limit is kept in Redis; add redis = \"redis://HOST:6379\"",
            );
            RateScope::Local
        }
        (other, _) => {
            let span = limit.scope.as_ref().map(Spanned::span).unwrap_or_default();
            checker.problem(
                span,
                format!("{table}.scope"),
                format!("\"{other}\" is not a scope; write \"local\" (this process) or \"global\" (every instance, through Redis)"),
            );
            RateScope::Local
        }
    }
}

/// A route's `rate_limits` names → indexes into the sorted limits.
pub(crate) fn route_rate_limits(
    checker: &mut Checker,
    route_key: &str,
    names: &Option<Vec<Spanned<String>>>,
    limits: &BTreeMap<String, FileRateLimit>,
) -> Vec<usize> {
    let Some(names) = names else { return Vec::new() };
    let known: Vec<&String> = limits.keys().collect();
    names
        .iter()
        .filter_map(|name| match known.iter().position(|k| *k == name.get_ref()) {
            Some(index) => Some(index),
            None => {
                let defined = if known.is_empty() {
                    "none is defined; add a [rate_limit.NAME] table".to_string()
                } else {
                    format!("defined: {}", known.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))
                };
                checker.problem(
                    name.span(),
                    format!("{route_key}.rate_limits"),
                    format!("no rate limit named \"{}\" ({defined})", name.get_ref()),
                );
                None
            }
        })
        .collect()
}

/// `[upstream.NAME.adaptive]`.
pub(crate) fn check_adaptive(checker: &mut Checker, key: &str, adaptive: &FileAdaptive) -> Option<AdaptiveConfig> {
    let before = checker.problems.len();
    let value = |v: &Option<Spanned<u32>>, default: u32| v.as_ref().map_or(default, |v| *v.get_ref());
    let min_limit = value(&adaptive.min_limit, 1);
    let max_limit = value(&adaptive.max_limit, 1000);
    let initial_limit = value(&adaptive.initial_limit, 20.clamp(min_limit, max_limit.max(min_limit)));
    if let Some(v) = adaptive.min_limit.as_ref().filter(|_| min_limit == 0) {
        checker.problem(
            v.span(),
            format!("{key}.adaptive.min_limit"),
            "is 0, which would admit nothing; give 1 or more",
        );
    }
    if let Some(v) = adaptive.max_limit.as_ref().filter(|_| max_limit < min_limit) {
        checker.problem(
            v.span(),
            format!("{key}.adaptive.max_limit"),
            format!("{max_limit} is below min_limit ({min_limit}); raise it"),
        );
    }
    if let Some(v) = adaptive.initial_limit.as_ref().filter(|_| !(min_limit..=max_limit).contains(&initial_limit)) {
        checker.problem(
            v.span(),
            format!("{key}.adaptive.initial_limit"),
            format!("{initial_limit} is outside min_limit..max_limit ({min_limit}..{max_limit})"),
        );
    }
    let tolerance = adaptive.tolerance.as_ref().map_or(1.3, |t| *t.get_ref());
    if let Some(v) = adaptive.tolerance.as_ref().filter(|_| !(1.0..=10.0).contains(&tolerance)) {
        checker.problem(
            v.span(),
            format!("{key}.adaptive.tolerance"),
            "is how much slower than its baseline the upstream may get before the limit shrinks: give 1.0 to 10.0 (default 1.3)",
        );
    }
    (checker.problems.len() == before).then_some(AdaptiveConfig { initial_limit, min_limit, max_limit, tolerance })
}

/// `[upstream.NAME.rate]`.
pub(crate) fn check_upstream_rate(checker: &mut Checker, key: &str, rate: &FileUpstreamRate) -> Option<UpstreamRate> {
    let (count, per) = parse_rate(rate.rate.get_ref())
        .map_err(|why| checker.problem(rate.rate.span(), format!("{key}.rate.rate"), why))
        .ok()?;
    let burst = match &rate.burst {
        Some(b) if *b.get_ref() == 0 => {
            checker.problem(
                b.span(),
                format!("{key}.rate.burst"),
                "is 0, which sends nothing; give 1 or more (default 1)",
            );
            return None;
        }
        Some(b) => *b.get_ref(),
        None => 1,
    };
    Some(UpstreamRate { count, per, burst })
}

/// A route's `priority` and `priority_header`.
pub(crate) fn check_priority(checker: &mut Checker, key: &str, route: &FileRoute) -> (Priority, Option<String>) {
    let priority = choice(
        checker,
        &route.priority,
        &format!("{key}.priority"),
        &[("critical", Priority::Critical), ("sheddable", Priority::Sheddable)],
    )
    .unwrap_or(Priority::Critical);
    let header = route.priority_header.as_ref().and_then(|name| {
        let text = name.get_ref().trim();
        if !http_token(text) {
            checker.problem(
                name.span(),
                format!("{key}.priority_header"),
                "is not a header name; write e.g. \"x-priority\"",
            );
            return None;
        }
        Some(text.to_ascii_lowercase())
    });
    (priority, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_unit_and_bad_ones_say_what_to_write() {
        assert_eq!(parse_rate("100/s"), Ok((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("5/m"), Ok((5, Duration::from_secs(60))));
        assert_eq!(parse_rate("1000/h"), Ok((1000, Duration::from_secs(3600))));
        for bad in ["100", "0/s", "x/s", "10/d", "-1/s"] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.contains("\"100/s\""), "{e}");
        }
    }
}
