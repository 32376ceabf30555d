//! `[cache]` and its shared tier, file types → `CacheConfig`.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::defaults;
use crate::duration::ConfigDuration;
use crate::file::{FileCache, FileMemcachedTier, FileRedisTier};
use crate::model::{CacheConfig, IpNetwork, KeyAuthority, SharedTierConfig};
use crate::validate::http_token;
use crate::validate::{check_networks, choice, nonzero_duration, Checker};

pub(crate) fn check_cache(checker: &mut Checker, cache: &FileCache, base_dir: &Path) -> Option<CacheConfig> {
    let before = checker.problems.len();
    let size = |checker: &mut Checker, value: &Option<Spanned<crate::size::ConfigSize>>, key: &str, default: u64| {
        match value {
            Some(v) if v.get_ref().0 == 0 => {
                checker.problem(v.span(), key, "must be at least 1 byte; e.g. \"64MiB\"");
                default
            }
            Some(v) => v.get_ref().0,
            None => default,
        }
    };
    let memory = size(checker, &cache.memory, "cache.memory", defaults::CACHE_MEMORY);
    let max_object = size(checker, &cache.max_object, "cache.max_object", defaults::CACHE_MAX_OBJECT);
    if let Some(v) = &cache.max_object {
        if max_object > memory {
            checker.problem(
                v.span(),
                "cache.max_object",
                format!("is larger than cache.memory ({memory} bytes); lower it"),
            );
        }
    }
    let heuristic_percent = match &cache.heuristic_percent {
        Some(v) if *v.get_ref() > 100 => {
            checker.problem(v.span(), "cache.heuristic_percent", "is a percentage; give 0 (off) to 100, typically 10");
            0
        }
        Some(v) => *v.get_ref(),
        None => 0,
    };
    let purge_from = match &cache.purge_from {
        Some(list) => check_networks(checker, list, "cache.purge_from"),
        None => vec![
            IpNetwork { address: [127, 0, 0, 0].into(), prefix: 8 },
            IpNetwork { address: std::net::Ipv6Addr::LOCALHOST.into(), prefix: 128 },
        ],
    };
    let tag_header = match &cache.tag_header {
        Some(name) if http_token(name.get_ref()) => name.get_ref().to_ascii_lowercase(),
        Some(name) => {
            checker.problem(name.span(), "cache.tag_header", "is not a header name; write e.g. \"Surrogate-Key\"");
            String::new()
        }
        None => defaults::CACHE_TAG_HEADER.to_string(),
    };
    let targeted_field = match &cache.targeted_field {
        Some(name) if http_token(name.get_ref()) => Some(name.get_ref().to_ascii_lowercase()),
        Some(name) => {
            let fix = "is not a header name; write e.g. \"Sluice-Cache-Control\"";
            checker.problem(name.span(), "cache.targeted_field", fix);
            None
        }
        None => None,
    };
    let key_headers = names(checker, &cache.key_headers, "cache.key_headers", true);
    let key_cookies = names(checker, &cache.key_cookies, "cache.key_cookies", false);
    let key_ignore_params = names(checker, &cache.key_ignore_params, "cache.key_ignore_params", false);
    let shared = match (&cache.redis, &cache.memcached) {
        (Some(_), Some(memcached)) => {
            checker.problem(
                memcached.address.span(),
                "cache.memcached",
                "only one shared tier at a time: remove [cache.memcached] or [cache.redis]",
            );
            None
        }
        (Some(redis), None) => check_redis(checker, redis, base_dir),
        (None, Some(memcached)) => check_memcached(checker, memcached),
        (None, None) => None,
    };
    let config = CacheConfig {
        memory,
        max_object,
        heuristic_percent,
        heuristic_max: nonzero_duration(checker, &cache.heuristic_max, "cache.heuristic_max")
            .unwrap_or(defaults::CACHE_HEURISTIC_MAX),
        store_set_cookie: cache.store_set_cookie.unwrap_or(false),
        coalesce: cache.coalesce.unwrap_or(true),
        coalesce_wait: nonzero_duration(checker, &cache.coalesce_wait, "cache.coalesce_wait")
            .unwrap_or(defaults::CACHE_COALESCE_WAIT),
        purge_from,
        tag_header,
        targeted_field,
        key_headers,
        key_cookies,
        key_ignore_query: cache.key_ignore_query.unwrap_or(false),
        key_ignore_params,
        key_authority: choice(
            checker,
            &cache.key_authority,
            "cache.key_authority",
            &[("host", KeyAuthority::Host), ("hostname", KeyAuthority::Hostname), ("upstream", KeyAuthority::Upstream)],
        )
        .unwrap_or(KeyAuthority::Host),
        shared,
    };
    (checker.problems.len() == before).then_some(config)
}

fn check_redis(checker: &mut Checker, redis: &FileRedisTier, base_dir: &Path) -> Option<SharedTierConfig> {
    let link = crate::validate_redis::check_redis_link(
        checker,
        &redis.url,
        "cache.redis.url",
        (&redis.password_file, &redis.ca_file),
        ("cache.redis.password_file", "cache.redis.ca_file"),
        base_dir,
    );
    Some(SharedTierConfig::Redis {
        link: link?,
        timeout: timeout(checker, &redis.timeout, "cache.redis.timeout"),
        prefix: prefix(checker, &redis.prefix, "cache.redis.prefix")?,
        coalesce_lock: redis.coalesce_lock.unwrap_or(false),
    })
}

fn check_memcached(checker: &mut Checker, memcached: &FileMemcachedTier) -> Option<SharedTierConfig> {
    let address = memcached.address.get_ref().trim();
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        checker.problem(
            memcached.address.span(),
            "cache.memcached.address",
            format!("\"{address}\" is not host:port; write e.g. \"127.0.0.1:11211\""),
        );
        return None;
    }
    Some(SharedTierConfig::Memcached {
        address: address.to_string(),
        timeout: timeout(checker, &memcached.timeout, "cache.memcached.timeout"),
        prefix: prefix(checker, &memcached.prefix, "cache.memcached.prefix")?,
    })
}

fn timeout(checker: &mut Checker, value: &Option<Spanned<ConfigDuration>>, key: &str) -> Duration {
    nonzero_duration(checker, value, key).unwrap_or(defaults::CACHE_SHARED_TIMEOUT)
}

/// A key prefix: printable, no spaces (memcached keys allow neither).
fn prefix(checker: &mut Checker, value: &Option<Spanned<String>>, key: &str) -> Option<String> {
    let Some(value) = value else { return Some(defaults::CACHE_SHARED_PREFIX.to_string()) };
    let text = value.get_ref();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        checker.problem(value.span(), key, "must be 1 to 64 printable characters without spaces; e.g. \"sluice\"");
        return None;
    }
    Some(text.clone())
}

/// A list of names: header names (checked as tokens, lower-cased) or cookie and query
/// parameter names (any non-empty text).
fn names(checker: &mut Checker, list: &Option<Vec<Spanned<String>>>, key: &str, headers: bool) -> Vec<String> {
    let mut out = Vec::new();
    for name in list.iter().flatten() {
        let text = name.get_ref().trim();
        if text.is_empty() || (headers && !http_token(text)) {
            let what = if headers { "a header name" } else { "a name" };
            checker.problem(name.span(), key, format!("\"{text}\" is not {what}"));
            continue;
        }
        out.push(if headers { text.to_ascii_lowercase() } else { text.to_string() });
    }
    out
}
