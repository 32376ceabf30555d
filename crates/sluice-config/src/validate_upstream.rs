//! `[upstream.NAME]`: endpoints, balancing, pools, health checks, retries, outlier
//! ejection and TLS to the endpoints.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::defaults;
use crate::file::{
    FileCertificate, FileEndpoint, FileHealthCheck, FileOutlier, FilePool, FileRetry, FileUpstream, FileUpstreamTls,
};
use crate::model::*;
use crate::validate::*;
use crate::validate_listeners::{check_pem_pair, pem_file_problem};

pub(crate) fn check_upstream(
    checker: &mut Checker,
    name: &str,
    upstream: &FileUpstream,
    base_dir: &Path,
) -> Option<UpstreamConfig> {
    let key = format!("upstream.{name}");
    if upstream.endpoints.get_ref().is_empty() {
        checker.problem(
            upstream.endpoints.span(),
            format!("{key}.endpoints"),
            "is empty; list at least one \"host:port\"",
        );
    }
    let mut endpoints = Vec::new();
    let mut weights = Vec::new();
    for (i, endpoint) in upstream.endpoints.get_ref().iter().enumerate() {
        let FileEndpoint { address, weight } = endpoint.get_ref();
        if *weight == Some(0) {
            checker.problem(
                endpoint.span(),
                format!("{key}.endpoints[{i}].weight"),
                "is 0; give a weight of 1 or more (remove the endpoint to send it nothing)",
            );
        }
        match parse_endpoint(address) {
            Some(e) => {
                endpoints.push(e);
                weights.push(weight.unwrap_or(1).max(1));
            }
            None => checker.problem(
                endpoint.span(),
                format!("{key}.endpoints[{i}]"),
                format!("\"{address}\" is not host:port; write e.g. \"10.0.0.5:8080\" or \"api.internal:80\""),
            ),
        }
    }
    let balance = check_balance(checker, &key, upstream);
    let outlier = check_outlier(checker, &key, &upstream.outlier);
    let retry = check_retry(checker, &key, &upstream.retry);
    let health_check = upstream.health_check.as_ref().and_then(|check| check_health(checker, &key, check));

    let breaker = &upstream.circuit_breaker;
    let circuit_breaker = CircuitBreaker {
        max_requests: positive(checker, &breaker.max_requests, &format!("{key}.circuit_breaker.max_requests"))
            .unwrap_or(defaults::MAX_REQUESTS),
        max_pending: positive(checker, &breaker.max_pending, &format!("{key}.circuit_breaker.max_pending"))
            .unwrap_or(defaults::MAX_PENDING),
        max_retries: breaker.max_retries.unwrap_or(defaults::MAX_RETRIES),
    };
    let protocol = choice(
        checker,
        &upstream.protocol,
        &format!("{key}.protocol"),
        &[("http1", UpstreamProtocol::Http1), ("http2", UpstreamProtocol::Http2)],
    );
    let pool = check_pool(checker, &key, &upstream.pool);
    // None: not configured; Some(None): configured with problems (reported).
    let adaptive = upstream.adaptive.as_ref().map(|a| crate::validate_limits::check_adaptive(checker, &key, a));
    let rate = upstream.rate.as_ref().map(|r| crate::validate_limits::check_upstream_rate(checker, &key, r));
    let tls = match &upstream.tls {
        None => Some(None),
        Some(tls) => check_upstream_tls(checker, &key, tls, base_dir).map(Some),
    };
    if endpoints.len() != upstream.endpoints.get_ref().len() {
        return None;
    }
    Some(UpstreamConfig {
        name: name.to_string(),
        endpoints,
        weights,
        balance: balance?,
        slow_start: upstream.slow_start.as_ref().map_or(Duration::ZERO, |d| d.get_ref().0),
        outlier: outlier?,
        retry: retry?,
        circuit_breaker,
        // Zero means something here: 503 at once instead of waiting in line.
        queue_timeout: upstream.queue_timeout.map_or(defaults::QUEUE_TIMEOUT, |d| d.0),
        adaptive: match adaptive {
            Some(checked) => Some(checked?),
            None => None,
        },
        rate: match rate {
            Some(checked) => Some(checked?),
            None => None,
        },
        health_check,
        protocol: protocol?,
        pool: pool?,
        tls: tls?,
    })
}

/// `[upstream.NAME.health_check]`.
pub(crate) fn check_health(checker: &mut Checker, key: &str, check: &FileHealthCheck) -> Option<HealthCheck> {
    let path = check.path.get_ref();
    if !path.starts_with('/') {
        checker.problem(check.path.span(), format!("{key}.health_check.path"), "must start with /, e.g. \"/healthz\"");
        return None;
    }
    let key = format!("{key}.health_check");
    Some(HealthCheck {
        path: path.clone(),
        interval: nonzero_duration(checker, &check.interval, &format!("{key}.interval"))
            .unwrap_or(Duration::from_secs(5)),
        timeout: nonzero_duration(checker, &check.timeout, &format!("{key}.timeout")).unwrap_or(Duration::from_secs(1)),
        healthy_threshold: positive(checker, &check.healthy_threshold, &format!("{key}.healthy_threshold"))
            .unwrap_or(2),
        unhealthy_threshold: positive(checker, &check.unhealthy_threshold, &format!("{key}.unhealthy_threshold"))
            .unwrap_or(3),
        expected_statuses: check.expected_statuses.clone().unwrap_or_default(),
    })
}

/// `[upstream.NAME.retry]`.
pub(crate) fn check_retry(checker: &mut Checker, key: &str, retry: &FileRetry) -> Option<RetrySettings> {
    let mut settings = RetrySettings {
        retries: retry.retries.unwrap_or(defaults::RETRIES),
        on_connect_failure: retry.on.is_none(),
        on_reset: retry.on.is_none(),
        on_status: Vec::new(),
        budget_percent: retry.budget_percent.unwrap_or(defaults::RETRY_BUDGET_PERCENT),
        min_retries_per_second: retry.min_retries_per_second.unwrap_or(defaults::MIN_RETRIES_PER_SECOND),
        backoff: retry.backoff.as_ref().map_or(defaults::RETRY_BACKOFF, |b| b.get_ref().0),
        per_try_timeout: None,
        hedge_after: None,
        idempotent_only: retry.idempotent_only.unwrap_or(false),
    };
    if let Some(hedge) = &retry.hedge_after {
        let text = hedge.get_ref().trim();
        settings.hedge_after = match (text, crate::parse_duration(text)) {
            ("p95", _) => Some(HedgeAfter::P95),
            (_, Ok(delay)) if !delay.is_zero() => Some(HedgeAfter::Fixed(delay)),
            _ => {
                checker.problem(
                    hedge.span(),
                    format!("{key}.retry.hedge_after"),
                    format!("\"{text}\" is neither a delay nor \"p95\"; write e.g. \"50ms\" or \"p95\""),
                );
                return None;
            }
        };
    }
    settings.per_try_timeout =
        nonzero_duration(checker, &retry.per_try_timeout, &format!("{key}.retry.per_try_timeout"));
    let mut ok = true;
    for condition in retry.on.iter().flatten() {
        match condition.get_ref().as_str() {
            "connect-failure" => settings.on_connect_failure = true,
            "reset" => settings.on_reset = true,
            code => match code.parse::<u16>() {
                Ok(status) if (500..600).contains(&status) || status == 429 => settings.on_status.push(status),
                _ => {
                    ok = false;
                    checker.problem(
                        condition.span(),
                        format!("{key}.retry.on"),
                        format!("\"{code}\" is not a retry condition; use \"connect-failure\", \"reset\", or a 5xx or 429 status such as \"503\""),
                    );
                }
            },
        }
    }
    ok.then_some(settings)
}

/// `[upstream.NAME.outlier]`.
pub(crate) fn check_outlier(checker: &mut Checker, key: &str, outlier: &FileOutlier) -> Option<OutlierSettings> {
    let base_ejection = nonzero_duration(checker, &outlier.base_ejection, &format!("{key}.outlier.base_ejection"))
        .unwrap_or(defaults::OUTLIER_BASE_EJECTION);
    let max_ejected_percent = match &outlier.max_ejected_percent {
        Some(v) if *v.get_ref() > 100 => {
            checker.problem(v.span(), format!("{key}.outlier.max_ejected_percent"), "is a percentage; give 0 to 100");
            return None;
        }
        Some(v) => *v.get_ref(),
        None => defaults::OUTLIER_MAX_EJECTED_PERCENT,
    };
    Some(OutlierSettings {
        consecutive_failures: outlier.consecutive_failures.unwrap_or(defaults::OUTLIER_CONSECUTIVE_FAILURES),
        base_ejection,
        max_ejected_percent,
    })
}

/// `balance` and, for `consistent_hash`, `hash_key`.
pub(crate) fn check_balance(checker: &mut Checker, key: &str, upstream: &FileUpstream) -> Option<Balance> {
    #[derive(Clone, Copy)]
    enum Kind {
        RoundRobin,
        LeastRequest,
        Ewma,
        ConsistentHash,
        Random,
    }
    let kind = choice(
        checker,
        &upstream.balance,
        &format!("{key}.balance"),
        &[
            ("least_request", Kind::LeastRequest),
            ("round_robin", Kind::RoundRobin),
            ("ewma", Kind::Ewma),
            ("consistent_hash", Kind::ConsistentHash),
            ("random", Kind::Random),
        ],
    )?;
    let hash_key = upstream.hash_key.as_ref().map(|hash_key| {
        let text = hash_key.get_ref().trim();
        let parsed = match text.split_once(':') {
            Some(("header", name)) if !name.is_empty() => Some(HashKey::Header(name.to_ascii_lowercase())),
            Some(("cookie", name)) if !name.is_empty() => Some(HashKey::Cookie(name.to_string())),
            None if text == "client_ip" => Some(HashKey::ClientIp),
            None if text == "path" => Some(HashKey::Path),
            _ => None,
        };
        if parsed.is_none() {
            checker.problem(
                hash_key.span(),
                format!("{key}.hash_key"),
                format!(
                    "\"{text}\" is not a hash key; write \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"path\""
                ),
            );
        }
        (parsed, hash_key.span())
    });
    if let (false, Some((_, span))) = (matches!(kind, Kind::ConsistentHash), &hash_key) {
        checker.problem(
            span.clone(),
            format!("{key}.hash_key"),
            "is only used by balance = \"consistent_hash\"; set that, or remove hash_key",
        );
        return None;
    }
    Some(match kind {
        Kind::RoundRobin => Balance::RoundRobin,
        Kind::LeastRequest => Balance::LeastRequest,
        Kind::Ewma => Balance::Ewma,
        Kind::Random => Balance::Random,
        Kind::ConsistentHash => match hash_key {
            Some((parsed, _)) => Balance::ConsistentHash(parsed?),
            None => {
                let span = upstream.balance.as_ref().map_or(upstream.endpoints.span(), |b| b.span());
                checker.problem(
                    span,
                    format!("{key}.hash_key"),
                    "consistent_hash needs a key; add hash_key = \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"path\"",
                );
                return None;
            }
        },
    })
}

/// `[upstream.NAME.tls]`: a CA file and a client certificate, when given, must be usable.
pub(crate) fn check_upstream_tls(
    checker: &mut Checker,
    key: &str,
    tls: &FileUpstreamTls,
    base_dir: &Path,
) -> Option<UpstreamTls> {
    let mut ok = true;
    let ca_file = tls.ca_file.as_ref().map(|ca| {
        let path = base_dir.join(ca.get_ref());
        if let Some(message) = pem_file_problem(&path, false) {
            checker.problem(ca.span(), format!("{key}.tls.ca_file"), message);
            ok = false;
        }
        path
    });
    let client_certificate = match (&tls.certificate, &tls.key) {
        (Some(certificate), Some(pem_key)) => {
            let pair = FileCertificate { certificate: certificate.clone(), key: pem_key.clone() };
            let checked = check_pem_pair(checker, &format!("{key}.tls"), &pair, base_dir);
            ok &= checked.is_some();
            checked
        }
        (Some(one), None) | (None, Some(one)) => {
            checker.problem(one.span(), format!("{key}.tls"), "a client certificate needs both certificate and key");
            ok = false;
            None
        }
        (None, None) => None,
    };
    let mut pin_sha256 = Vec::new();
    for pin in tls.pin_sha256.iter().flatten() {
        match fingerprint(pin.get_ref()) {
            Some(bytes) => pin_sha256.push(bytes),
            None => {
                checker.problem(
                    pin.span(),
                    format!("{key}.tls.pin_sha256"),
                    "is not a SHA-256 fingerprint (64 hex digits, colons allowed); get it with `openssl x509 -in CERT.pem -noout -fingerprint -sha256`",
                );
                ok = false;
            }
        }
    }
    if let (Some(pins), Some(ca)) = (&tls.pin_sha256, &tls.ca_file) {
        if !pins.is_empty() {
            let fix = "pin_sha256 accepts exactly the pinned certificates and no CA is consulted; remove one of them";
            checker.problem(ca.span(), format!("{key}.tls.ca_file"), fix);
            ok = false;
        }
    }
    let server_name = tls.server_name.as_ref().map(|n| n.get_ref().clone());
    if let (Some(name), Some(spanned)) = (&server_name, &tls.server_name) {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            checker.problem(
                spanned.span(),
                format!("{key}.tls.server_name"),
                format!("\"{name}\" is not a DNS name or IP address"),
            );
            ok = false;
        }
    }
    ok.then_some(UpstreamTls { server_name, ca_file, pin_sha256, client_certificate })
}

/// A SHA-256 fingerprint as openssl prints it (`AB:CD:...`) or bare hex.
pub(crate) fn fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

/// `host:port`, `[v6]:port`; the host is not resolved here.
pub(crate) fn parse_endpoint(text: &str) -> Option<Endpoint> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Endpoint { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let valid_host = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid_host.then(|| Endpoint { host: host.to_string(), port })
}

pub(crate) fn check_pool(checker: &mut Checker, key: &str, pool: &FilePool) -> Option<PoolSettings> {
    let defaults = PoolSettings::default();
    let max_connections = positive(checker, &pool.max_connections, &format!("{key}.pool.max_connections"))
        .unwrap_or(defaults.max_connections);
    let max_idle = pool.max_idle.as_ref().map(|v| *v.get_ref()).unwrap_or(max_connections);
    let min_idle = pool.min_idle.as_ref().map(|v| *v.get_ref()).unwrap_or(defaults.min_idle);
    let mut ok = true;
    if let Some(v) = &pool.wait_timeout {
        checker.problem(
            v.span(),
            format!("{key}.pool.wait_timeout"),
            format!(
                "was renamed: the wait in line is the group's, over all of a request's tries; write \
                 queue_timeout = \"{}ms\" in [{key}] and remove it here",
                v.get_ref().0.as_millis()
            ),
        );
        ok = false;
    }
    if let Some(v) = &pool.max_idle {
        if max_idle > max_connections {
            checker.problem(
                v.span(),
                format!("{key}.pool.max_idle"),
                format!("{max_idle} is more than max_connections ({max_connections}); lower it"),
            );
            ok = false;
        }
    }
    if let Some(v) = &pool.min_idle {
        if min_idle > max_idle {
            checker.problem(
                v.span(),
                format!("{key}.pool.min_idle"),
                format!("{min_idle} is more than max_idle ({max_idle}); lower it"),
            );
            ok = false;
        }
    }
    let idle_timeout = nonzero_duration(checker, &pool.idle_timeout, &format!("{key}.pool.idle_timeout"));
    let max_lifetime = nonzero_duration(checker, &pool.max_lifetime, &format!("{key}.pool.max_lifetime"));
    let connect_timeout = nonzero_duration(checker, &pool.connect_timeout, &format!("{key}.pool.connect_timeout"));
    ok.then(|| PoolSettings {
        max_connections,
        max_idle,
        min_idle,
        idle_timeout: idle_timeout.unwrap_or(defaults.idle_timeout),
        max_lifetime: max_lifetime.unwrap_or(defaults.max_lifetime),
        max_requests: pool.max_requests.unwrap_or(defaults.max_requests),
        connect_timeout: connect_timeout.unwrap_or(defaults.connect_timeout),
    })
}
