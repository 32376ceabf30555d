//! `[tracing]`, file types → `TracingConfig`: the collector's URL, sampling, batching.
use crate::defaults;
use crate::file::FileTracing;
use crate::model::TracingConfig;
use crate::validate::http_token;
use crate::validate::{nonzero_duration, positive, Checker};

pub(crate) fn check_tracing(checker: &mut Checker, tracing: &FileTracing) -> Option<TracingConfig> {
    let before = checker.problems.len();
    let (authority, path) = match &tracing.otlp_endpoint {
        Some(url) => split_url(url.get_ref()).unwrap_or_else(|why| {
            checker.problem(url.span(), "tracing.otlp_endpoint", why);
            (String::new(), String::new())
        }),
        None => split_url(defaults::OTLP_ENDPOINT).unwrap_or_default(),
    };
    let sample_ratio = match &tracing.sample_ratio {
        Some(ratio) if !(0.0..=1.0).contains(ratio.get_ref()) => {
            checker.problem(
                ratio.span(),
                "tracing.sample_ratio",
                "is the share of new traces sampled: give 0.0 to 1.0, e.g. 0.01 for one in a hundred",
            );
            0.0
        }
        Some(ratio) => *ratio.get_ref(),
        None => 1.0,
    };
    let service_name = match &tracing.service_name {
        Some(name) if name.get_ref().trim().is_empty() => {
            checker.problem(name.span(), "tracing.service_name", "is empty; name the service, e.g. \"edge-gateway\"");
            String::new()
        }
        Some(name) => name.get_ref().clone(),
        None => "sluice".to_string(),
    };
    let batch_size = positive(checker, &tracing.batch_size, "tracing.batch_size").unwrap_or(defaults::TRACING_BATCH);
    let queue = positive(checker, &tracing.queue, "tracing.queue").unwrap_or(defaults::TRACING_QUEUE);
    if let Some(v) = &tracing.queue {
        if queue < batch_size {
            checker.problem(
                v.span(),
                "tracing.queue",
                format!("is smaller than tracing.batch_size ({batch_size}); raise it"),
            );
        }
    }
    let mut headers = Vec::new();
    for (name, value) in tracing.headers.iter().flatten() {
        let valid_name = http_token(name);
        let valid_value = value.get_ref().bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !valid_name || !valid_value {
            checker.problem(
                value.span(),
                format!("tracing.headers.{name}"),
                "is not a valid header: a name of letters, digits and -, a value of visible ASCII",
            );
        }
        headers.push((name.to_ascii_lowercase(), value.get_ref().clone()));
    }
    let config = TracingConfig {
        authority,
        path,
        sample_ratio,
        service_name,
        batch_size,
        queue,
        flush_interval: nonzero_duration(checker, &tracing.flush_interval, "tracing.flush_interval")
            .unwrap_or(defaults::TRACING_FLUSH),
        timeout: nonzero_duration(checker, &tracing.timeout, "tracing.timeout").unwrap_or(defaults::TRACING_TIMEOUT),
        headers,
    };
    (checker.problems.len() == before).then_some(config)
}

/// `http://host:port/path` → ("host:port", "/path"); the port defaults to 4318, the
/// path to `/v1/traces` (OTLP/HTTP's).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err("https is not supported: run an OpenTelemetry Collector on this host and point sluice at it \
                        (\"http://127.0.0.1:4318/v1/traces\"); the collector forwards over TLS"
                .into())
        }
        _ => return Err(format!("\"{url}\" is not an http:// URL; write e.g. \"http://127.0.0.1:4318/v1/traces\"")),
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let path = if path.is_empty() || path == "/" { "/v1/traces" } else { path };
    let authority = if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
        return Err(format!("\"{url}\" has no usable host; write e.g. \"http://127.0.0.1:4318/v1/traces\""));
    } else if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_string()
    } else if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:4318")
    } else {
        return Err(format!("\"{url}\" has a malformed port; write e.g. \"http://127.0.0.1:4318/v1/traces\""));
    };
    if path.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
        return Err(format!("\"{url}\" has a path with spaces or non-ASCII; percent-encode it"));
    }
    Ok((authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn collector_urls_split_into_authority_and_path() {
        let ok = |url: &str| split_url(url).expect(url);
        assert_eq!(ok("http://127.0.0.1:4318/v1/traces"), ("127.0.0.1:4318".into(), "/v1/traces".into()));
        assert_eq!(ok("http://collector"), ("collector:4318".into(), "/v1/traces".into()));
        assert_eq!(ok("http://[::1]:9000/otlp/v1/traces"), ("[::1]:9000".into(), "/otlp/v1/traces".into()));
        assert_eq!(ok("http://[::1]/"), ("[::1]:4318".into(), "/v1/traces".into()));
        for bad in ["https://c:4318", "collector:4318", "http://", "http://u@c/", "http://c:99999/", "ftp://c"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
