//! File types → runtime types. Collects every problem instead of stopping at the first,
//! each with the line it is on, the key, and what to write instead.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::defaults;
use crate::duration::ConfigDuration;
use crate::file::{FileAccessLog, FileConfig, FileServer};
use crate::model::*;
use crate::validate_listeners::*;
use crate::validate_route::*;
use crate::validate_upstream::*;
use crate::Problem;

/// Accumulates problems while validating one file.
pub(crate) struct Checker<'a> {
    source: &'a str,
    pub(crate) problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        line_of(self.source, span.start)
    }

    pub(crate) fn problem(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.problems.push(Problem { line, key: key.into(), message: message.into() });
    }
}

/// A token of RFC 9110 §5.6.2: a header name, a method, a coding.
pub(crate) fn http_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Checks a parsed file; `base_dir` resolves relative TLS paths.
pub(crate) fn validate(file: FileConfig, source: &str, base_dir: &Path) -> Result<Config, Vec<Problem>> {
    let mut checker = Checker { source, problems: Vec::new() };
    let server = check_server(&mut checker, &file.server);
    if file.listeners.is_empty() {
        checker.problems.push(Problem {
            line: 1,
            key: "listener".into(),
            message: "no [[listener]] is configured; add one, e.g. [[listener]] address = \"127.0.0.1:8080\"".into(),
        });
    }
    let listeners: Vec<ListenerConfig> =
        file.listeners.iter().enumerate().filter_map(|(i, l)| check_listener(&mut checker, i, l, base_dir)).collect();
    check_duplicate_addresses(&mut checker, &file.listeners, &listeners);
    let names: Vec<String> = file.upstreams.keys().cloned().collect();
    if file.upstreams.is_empty() && file.routes.iter().all(|r| r.upstream.is_none()) && !file.routes.is_empty() {
        checker.problems.push(Problem {
            line: 1,
            key: "upstream".into(),
            message: "no [upstream.NAME] is configured; add one, e.g. [upstream.api] endpoints = [\"127.0.0.1:8000\"]"
                .into(),
        });
    }
    let upstreams =
        file.upstreams.iter().filter_map(|(name, u)| check_upstream(&mut checker, name, u, base_dir)).collect();
    if file.routes.is_empty() {
        checker.problems.push(Problem {
            line: 1,
            key: "route".into(),
            message: "no [[route]] is configured; add one, e.g. [[route]] upstream = \"api\"".into(),
        });
    }
    let rate_limits = crate::validate_limits::check_rate_limits(&mut checker, &file.rate_limits, base_dir);
    let auths = crate::validate_gateway::check_auths(&mut checker, &file.auth, base_dir);
    let routes: Vec<RouteConfig> = file
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| check_route(&mut checker, i, r, &names, &file.rate_limits, &file.auth))
        .collect();
    let access_log = file.access_log.as_ref().and_then(|log| check_access_log(&mut checker, log, base_dir));
    let cache = file.cache.as_ref().and_then(|cache| crate::validate_cache::check_cache(&mut checker, cache, base_dir));
    let admin = file.admin.as_ref().and_then(|admin| check_admin(&mut checker, admin));
    if let (Some(admin), Some(file_admin)) = (&admin, &file.admin) {
        check_admin_apart(&mut checker, admin, file_admin, &listeners);
    }
    let tracing = file.tracing.as_ref().and_then(|t| crate::validate_tracing::check_tracing(&mut checker, t));
    if cache.is_none() {
        for (index, route) in file.routes.iter().enumerate() {
            if let Some(wants) = route.cache.as_ref().filter(|c| *c.get_ref()) {
                let message = if file.cache.is_some() {
                    "the route asks for the cache, but [cache] has problems (see them)"
                } else {
                    "the route asks for the cache, but there is no [cache] table; add one, e.g. [cache] memory = \"256MiB\""
                };
                checker.problem(wants.span(), format!("route[{index}].cache"), message);
            }
        }
    }
    if checker.problems.is_empty() {
        let warnings = crate::warnings::find(&file, source, &listeners, &routes, &names);
        Ok(Config {
            server,
            listeners,
            routes,
            upstreams,
            rate_limits,
            access_log,
            cache,
            admin,
            tracing,
            auths,
            warnings,
        })
    } else {
        checker.problems.sort_by_key(|p| p.line);
        Err(checker.problems)
    }
}

fn check_server(checker: &mut Checker, server: &FileServer) -> ServerSettings {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let worker_threads = positive(checker, &server.worker_threads, "server.worker_threads").unwrap_or(cores);
    let max_connections =
        positive(checker, &server.max_connections, "server.max_connections").unwrap_or(defaults::MAX_CONNECTIONS);
    let max_connections_per_ip = positive(checker, &server.max_connections_per_ip, "server.max_connections_per_ip")
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let header_read_timeout = nonzero_duration(checker, &server.header_read_timeout, "server.header_read_timeout")
        .unwrap_or(defaults::HEADER_READ_TIMEOUT);
    let keepalive_timeout = nonzero_duration(checker, &server.keepalive_timeout, "server.keepalive_timeout")
        .unwrap_or(defaults::KEEPALIVE_TIMEOUT);
    let client_body_timeout = nonzero_duration(checker, &server.client_body_timeout, "server.client_body_timeout")
        .unwrap_or(defaults::CLIENT_BODY_TIMEOUT);
    let send_timeout =
        nonzero_duration(checker, &server.send_timeout, "server.send_timeout").unwrap_or(defaults::SEND_TIMEOUT);
    let defaults = PathRules::default();
    let escaped_slashes = choice(
        checker,
        &server.escaped_slashes,
        "server.escaped_slashes",
        &[("reject", EscapedSlashes::Reject), ("decode", EscapedSlashes::Decode), ("keep", EscapedSlashes::Keep)],
    )
    .unwrap_or(defaults.escaped_slashes);
    let model = choice(
        checker,
        &server.model,
        "server.model",
        &[("per-core", ConcurrencyModel::PerCore), ("work-stealing", ConcurrencyModel::WorkStealing)],
    )
    .unwrap_or(defaults::MODEL);
    let upstream_pools = choice(
        checker,
        &server.upstream_pools,
        "server.upstream_pools",
        &[("per-worker", PoolSharing::PerWorker), ("shared", PoolSharing::Shared)],
    )
    .unwrap_or(defaults::UPSTREAM_POOLS);
    ServerSettings {
        worker_threads,
        model,
        upstream_pools,
        max_connections,
        max_connections_per_ip,
        header_read_timeout,
        keepalive_timeout,
        drain_timeout: nonzero_duration(checker, &server.drain_timeout, "server.drain_timeout")
            .unwrap_or(defaults::DRAIN_TIMEOUT),
        client_body_timeout,
        send_timeout,
        paths: PathRules { merge_slashes: server.merge_slashes.unwrap_or(defaults.merge_slashes), escaped_slashes },
        underscores_in_headers: server.underscores_in_headers.unwrap_or(defaults::UNDERSCORES_IN_HEADERS),
        spool_dir: check_spool_dir(checker, server),
        spool_max_total: server.spool_max_total.map_or(defaults::SPOOL_MAX_TOTAL, |s| s.0),
        http2_stream_window: check_stream_window(checker, &server.http2_stream_window),
        trusted_proxies: check_networks(
            checker,
            server.trusted_proxies.as_deref().unwrap_or(&[]),
            "server.trusted_proxies",
        ),
        dns_ttl: nonzero_duration(checker, &server.dns_ttl, "server.dns_ttl").unwrap_or(defaults::DNS_TTL),
        config_watch: nonzero_duration(checker, &server.config_watch, "server.config_watch"),
    }
}

/// `server.trusted_proxies`: addresses or CIDR networks.
pub(crate) fn check_networks(checker: &mut Checker, list: &[Spanned<String>], key: &str) -> Vec<IpNetwork> {
    let mut networks = Vec::new();
    for entry in list {
        let text = entry.get_ref().trim();
        let (addr, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let parsed = addr.parse::<std::net::IpAddr>().ok().and_then(|address| {
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
                None => max,
            };
            Some(IpNetwork { address, prefix })
        });
        match parsed {
            Some(network) => networks.push(network),
            None => checker.problem(
                entry.span(),
                key,
                format!("\"{text}\" is not an IP address or network; write e.g. \"10.0.0.0/8\" or \"::1\""),
            ),
        }
    }
    networks
}

/// `[access_log]`: where and how.
fn check_access_log(checker: &mut Checker, log: &FileAccessLog, base_dir: &Path) -> Option<AccessLogConfig> {
    let destination = match &log.path {
        None => LogDestination::Stderr,
        Some(p) if p.get_ref() == "stderr" || p.get_ref() == "-" => LogDestination::Stderr,
        Some(p) => {
            let path = base_dir.join(p.get_ref());
            if !path.parent().is_some_and(Path::is_dir) {
                checker.problem(
                    p.span(),
                    "access_log.path",
                    format!("the folder of {} does not exist; create it or write \"stderr\"", path.display()),
                );
            }
            LogDestination::File(path)
        }
    };
    let format = choice(
        checker,
        &log.format,
        "access_log.format",
        &[("json", LogFormat::Json), ("combined", LogFormat::Combined), ("combined-plain", LogFormat::CombinedPlain)],
    )?;
    let queue = positive(checker, &log.queue, "access_log.queue").unwrap_or(defaults::ACCESS_LOG_QUEUE);
    Some(AccessLogConfig { destination, format, queue })
}

/// The spool folder must exist; the default is the system's temp folder.
fn check_spool_dir(checker: &mut Checker, server: &FileServer) -> std::path::PathBuf {
    let Some(dir) = &server.spool_dir else { return std::env::temp_dir() };
    let path = std::path::PathBuf::from(dir.get_ref());
    if !path.is_dir() {
        checker.problem(
            dir.span(),
            "server.spool_dir",
            format!(
                "{} is not a folder; give an existing folder sluice may write to, e.g. \"/var/tmp\"",
                path.display()
            ),
        );
    }
    path
}

pub(crate) fn positive(checker: &mut Checker, value: &Option<Spanned<usize>>, key: &str) -> Option<usize> {
    let value = value.as_ref()?;
    if *value.get_ref() == 0 {
        checker.problem(value.span(), key, "must be at least 1");
        return None;
    }
    Some(*value.get_ref())
}

/// HTTP/2 allows windows up to 2^31-1; below 16 KiB (one frame) uploads crawl.
fn check_stream_window(checker: &mut Checker, value: &Option<Spanned<crate::size::ConfigSize>>) -> u32 {
    let Some(value) = value else { return defaults::HTTP2_STREAM_WINDOW };
    match u32::try_from(value.get_ref().0) {
        Ok(n) if (16 * 1024..=i32::MAX as u32).contains(&n) => n,
        _ => {
            let why = "must be from \"16KiB\" to 2147483647 bytes (HTTP/2's limit); e.g. \"64KiB\"";
            checker.problem(value.span(), "server.http2_stream_window", why);
            defaults::HTTP2_STREAM_WINDOW
        }
    }
}

pub(crate) fn nonzero_duration(
    checker: &mut Checker,
    value: &Option<Spanned<ConfigDuration>>,
    key: &str,
) -> Option<Duration> {
    let value = value.as_ref()?;
    if value.get_ref().0.is_zero() {
        checker.problem(value.span(), key, "must be longer than 0; e.g. \"10s\"");
        return None;
    }
    Some(value.get_ref().0)
}

/// A setting that names one of `choices` (the first is the default when it is absent);
/// anything else is a problem that lists them.
pub(crate) fn choice<T: Copy>(
    checker: &mut Checker,
    value: &Option<Spanned<String>>,
    key: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let Some(value) = value else { return choices.first().map(|(_, default)| *default) };
    if let Some((_, chosen)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
        return Some(*chosen);
    }
    let names: Vec<String> = choices.iter().map(|(name, _)| format!("\"{name}\"")).collect();
    let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
    let listed = if rest.is_empty() { last.to_string() } else { format!("{} or {last}", rest.join(", ")) };
    checker.problem(
        value.span(),
        key,
        format!(
            "unknown value \"{}\"; use {listed} (the default is {})",
            value.get_ref(),
            names.first().map_or("", String::as_str)
        ),
    );
    None
}
