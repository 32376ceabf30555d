//! File types → runtime types. Collects every problem instead of stopping at the first,
//! each with the line it is on, the key, and what to write instead.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::defaults;
use crate::duration::ConfigDuration;
use crate::file::{
    FileAccessLog, FileCertificate, FileConfig, FileEndpoint, FileHealthCheck, FileListener, FileOutlier, FilePool,
    FileRetry, FileRoute, FileServer, FileUpstream, FileUpstreamTls,
};
use crate::model::*;
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
    let routes: Vec<RouteConfig> = file
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| check_route(&mut checker, i, r, &names, &file.rate_limits))
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
        Ok(Config { server, listeners, routes, upstreams, rate_limits, access_log, cache, admin, tracing, warnings })
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

/// `[admin]`: its address (loopback by default) and optional bearer token.
fn check_admin(checker: &mut Checker, admin: &crate::file::FileAdmin) -> Option<AdminConfig> {
    let address = match &admin.address {
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        Some(text) => match text.get_ref().parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                checker.problem(
                    text.span(),
                    "admin.address",
                    format!("\"{}\" is not an IP address with a port; write e.g. \"127.0.0.1:9901\"", text.get_ref()),
                );
                return None;
            }
        },
    };
    let token = match &admin.token {
        Some(token) if token.get_ref().len() < 16 || token.get_ref().chars().any(|c| c.is_whitespace()) => {
            checker.problem(
                token.span(),
                "admin.token",
                "must be at least 16 characters without spaces; e.g. the output of `openssl rand -hex 16`",
            );
            return None;
        }
        Some(token) => Some(token.get_ref().clone()),
        None => None,
    };
    Some(AdminConfig { address, token })
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

/// Two listeners on one address cannot both bind; say so before trying.
fn check_duplicate_addresses(checker: &mut Checker, files: &[FileListener], listeners: &[ListenerConfig]) {
    for (i, listener) in listeners.iter().enumerate() {
        // Port 0 asks the system for a free port: each such listener gets its own.
        if listener.address.port() != 0 && listeners[..i].iter().any(|l| l.address == listener.address) {
            if let Some(file) = files.iter().filter(|f| f.address.get_ref().parse() == Ok(listener.address)).nth(1) {
                checker.problem(
                    file.address.span(),
                    "listener.address",
                    format!(
                        "{} is already used by an earlier [[listener]]; give each listener its own address",
                        listener.address
                    ),
                );
            }
        }
    }
}

/// Two sockets on one port, one on a wildcard address (0.0.0.0, ::) and one on a
/// specific address: `run` binds both (SO_REUSEPORT), and the specific one takes its
/// address's connections while the wildcard takes the rest: rarely what was meant.
pub(crate) fn overlapping_listeners(listeners: &[ListenerConfig]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, a) in listeners.iter().enumerate() {
        for (j, b) in listeners.iter().enumerate().skip(i + 1) {
            let same_port = a.address.port() == b.address.port() && a.address.port() != 0;
            let family = a.address.is_ipv4() == b.address.is_ipv4();
            let one_wildcard = a.address.ip().is_unspecified() != b.address.ip().is_unspecified();
            if same_port && family && one_wildcard {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// The admin listener cannot share a proxy listener's address (or its port with a
/// wildcard on either side): `run` would fail to bind it.
fn check_admin_apart(
    checker: &mut Checker,
    admin: &AdminConfig,
    file: &crate::file::FileAdmin,
    listeners: &[ListenerConfig],
) {
    let clash = listeners.iter().enumerate().find(|(_, l)| {
        l.address.port() == admin.address.port()
            && admin.address.port() != 0
            && (l.address.ip() == admin.address.ip()
                || l.address.ip().is_unspecified()
                || admin.address.ip().is_unspecified())
    });
    if let (Some((i, listener)), Some(address)) = (clash, &file.address) {
        checker.problem(
            address.span(),
            "admin.address",
            format!(
                "{} is also listener[{i}]'s address ({}); give the admin listener a port of its own, e.g. \"127.0.0.1:9901\"",
                admin.address, listener.address
            ),
        );
    }
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

fn check_listener(
    checker: &mut Checker,
    index: usize,
    listener: &FileListener,
    base_dir: &Path,
) -> Option<ListenerConfig> {
    let key = format!("listener[{index}]");
    let address = match listener.address.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            checker.problem(
                listener.address.span(),
                format!("{key}.address"),
                format!(
                    "\"{}\" is not an IP address with a port; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    listener.address.get_ref()
                ),
            );
            None
        }
    };
    let protocol = choice(
        checker,
        &listener.protocol,
        &format!("{key}.protocol"),
        &[("auto", ListenerProtocol::Auto), ("http1", ListenerProtocol::Http1), ("http2", ListenerProtocol::Http2)],
    );
    let backlog = match &listener.backlog {
        Some(b) if *b.get_ref() == 0 => {
            checker.problem(b.span(), format!("{key}.backlog"), "must be at least 1; the default is 4096");
            None
        }
        Some(b) => Some(*b.get_ref()),
        None => Some(defaults::BACKLOG),
    };
    let tls = match &listener.tls {
        None => Some(None),
        Some(tls) => check_listener_tls(checker, &key, tls, listener.address.span(), base_dir).map(Some),
    };
    Some(ListenerConfig {
        address: address?,
        protocol: protocol?,
        reuse_port: listener.reuse_port,
        backlog: backlog?,
        tls: tls?,
    })
}

/// A TLS listener's certificates: `certificate` + `key`, or a `certificates` list.
fn check_listener_tls(
    checker: &mut Checker,
    key: &str,
    tls: &crate::file::FileTls,
    span: Range<usize>,
    base_dir: &Path,
) -> Option<TlsFiles> {
    let mut certificates = Vec::new();
    if let (Some(certificate), Some(pem_key)) = (&tls.certificate, &tls.key) {
        let pair = FileCertificate { certificate: certificate.clone(), key: pem_key.clone() };
        certificates.push(check_pem_pair(checker, &format!("{key}.tls"), &pair, base_dir)?);
    } else if tls.certificate.is_some() || tls.key.is_some() {
        checker.problem(span.clone(), format!("{key}.tls"), "give both certificate and key");
        return None;
    }
    for (i, pair) in tls.certificates.iter().flat_map(|c| c.get_ref().iter()).enumerate() {
        certificates.push(check_pem_pair(checker, &format!("{key}.tls.certificates[{i}]"), pair, base_dir)?);
    }
    if certificates.is_empty() {
        checker.problem(
            span,
            format!("{key}.tls"),
            "names no certificate; write tls = { certificate = \"cert.pem\", key = \"key.pem\" }",
        );
        return None;
    }
    Some(TlsFiles { certificates })
}

/// A certificate chain and key that exist and parse as PEM.
fn check_pem_pair(
    checker: &mut Checker,
    key: &str,
    pair: &FileCertificate,
    base_dir: &Path,
) -> Option<CertificateFiles> {
    let files = CertificateFiles {
        certificate: base_dir.join(pair.certificate.get_ref()),
        key: base_dir.join(pair.key.get_ref()),
    };
    let mut ok = true;
    for (path, spanned, name) in
        [(&files.certificate, &pair.certificate, "certificate"), (&files.key, &pair.key, "key")]
    {
        if let Some(message) = pem_file_problem(path, name == "key") {
            checker.problem(spanned.span(), format!("{key}.{name}"), message);
            ok = false;
        }
    }
    ok.then_some(files)
}

/// A PEM file that is missing or holds nothing usable.
pub(crate) fn pem_file_problem(path: &Path, is_key: bool) -> Option<String> {
    if !path.is_file() {
        return Some(format!(
            "file {} does not exist; give a PEM file path (relative paths are from the config file's folder)",
            path.display()
        ));
    }
    pem_problem(path, is_key)
}

/// Reads a PEM file as the server will at start: a certificate chain (at least one
/// CERTIFICATE block) or one private key. None when it is usable.
fn pem_problem(path: &Path, is_key: bool) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let shown = path.display();
    if is_key {
        return PrivateKeyDer::from_pem_file(path).err().map(|e| {
            format!("{shown} holds no usable private key ({e}); give a PEM file with a PKCS#8, PKCS#1 or SEC1 key")
        });
    }
    match CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()) {
        Ok(certs) if certs.is_empty() => {
            Some(format!("{shown} holds no CERTIFICATE block; give the PEM certificate chain, leaf first"))
        }
        Ok(_) => None,
        Err(e) => Some(format!("{shown} is not a PEM certificate chain ({e}); give the chain, leaf first")),
    }
}

fn check_upstream(
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
fn check_health(checker: &mut Checker, key: &str, check: &FileHealthCheck) -> Option<HealthCheck> {
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
fn check_retry(checker: &mut Checker, key: &str, retry: &FileRetry) -> Option<RetrySettings> {
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
fn check_outlier(checker: &mut Checker, key: &str, outlier: &FileOutlier) -> Option<OutlierSettings> {
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
fn check_balance(checker: &mut Checker, key: &str, upstream: &FileUpstream) -> Option<Balance> {
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
fn check_upstream_tls(checker: &mut Checker, key: &str, tls: &FileUpstreamTls, base_dir: &Path) -> Option<UpstreamTls> {
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
fn fingerprint(text: &str) -> Option<[u8; 32]> {
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
fn parse_endpoint(text: &str) -> Option<Endpoint> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Endpoint { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let valid_host = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid_host.then(|| Endpoint { host: host.to_string(), port })
}

fn check_pool(checker: &mut Checker, key: &str, pool: &FilePool) -> Option<PoolSettings> {
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

fn check_route(
    checker: &mut Checker,
    index: usize,
    route: &FileRoute,
    upstreams: &[String],
    rate_limits: &std::collections::BTreeMap<String, crate::file::FileRateLimit>,
) -> Option<RouteConfig> {
    let key = format!("route[{index}]");
    let route_rate_limits = crate::validate_limits::route_rate_limits(checker, &key, &route.rate_limits, rate_limits);
    let (priority, priority_header) = crate::validate_limits::check_priority(checker, &key, route);
    let upstream = upstreams.iter().position(|n| n == route.upstream.get_ref());
    if upstream.is_none() {
        let known = if upstreams.is_empty() {
            "none is defined; add an [upstream.NAME] table".to_string()
        } else {
            format!("defined: {}", upstreams.join(", "))
        };
        checker.problem(
            route.upstream.span(),
            format!("{key}.upstream"),
            format!("no upstream named \"{}\" ({known})", route.upstream.get_ref()),
        );
    }
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
        rate_limits: route_rate_limits,
        priority,
        priority_header,
    })
}

/// `route.cache_default_lifetime`: only on a cached route.
fn cache_default_lifetime(checker: &mut Checker, index: usize, route: &FileRoute) -> Option<Duration> {
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

/// Upgrade tokens are protocol names (RFC 9110 §7.8), compared without case.
fn check_upgrades(checker: &mut Checker, key: &str, route: &FileRoute) -> Vec<String> {
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
