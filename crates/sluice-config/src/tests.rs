//! Config parsing and validation, as a user editing a file would see it.

use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[server]
worker_threads = 2
keepalive_timeout = "5s"

[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "*.example.com"
path_prefix = "/api"
methods = ["get", "POST"]
upstream = "api"
timeout = "3s"

[upstream.api]
endpoints = ["127.0.0.1:9001", "backend.internal:80"]
protocol = "http2"
pool = { max_connections = 8, min_idle = 2, max_idle = 4 }
"#;

fn problems(source: &str) -> Vec<Problem> {
    match parse(source, Path::new("sluice.toml")) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn a_good_file_gets_its_values_and_defaults() {
    let config = parse(GOOD, Path::new("/etc/sluice/sluice.toml")).expect("valid");
    assert_eq!(config.server.worker_threads, 2);
    assert_eq!(config.server.keepalive_timeout, Duration::from_secs(5));
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.routes[0].host.as_deref(), Some("*.example.com"));
    assert_eq!(config.routes[0].methods, vec!["GET", "POST"]);
    assert_eq!(config.routes[0].timeout, Duration::from_secs(3));
    let api = &config.upstreams[config.routes[0].upstream.expect("an upstream")];
    assert_eq!(api.protocol, UpstreamProtocol::Http2);
    assert_eq!(api.endpoints[1], Endpoint { host: "backend.internal".into(), port: 80 });
    assert_eq!(api.pool.min_idle, 2);
    assert_eq!(api.pool.idle_timeout, Duration::from_secs(60));
}

#[test]
fn an_unknown_key_is_an_error_on_its_line() {
    let src = "[server]\nmax_conections = 5\n";
    let p = problems(src);
    let unknown = p.iter().find(|p| p.line == 2).expect("the unknown key's problem");
    assert_eq!(unknown.key, "server.max_conections");
    assert_eq!(unknown.message, "unknown key `max_conections`; did you mean `max_connections`?");
}

#[test]
fn every_misspelt_key_an_unknown_table_and_the_checks_of_values_come_in_one_run() {
    let src = r#"[server]
max_conections = 5
keepalive_timout = "5s"

[[listener]]
adress = "127.0.0.1:8080"

[[route]]
upstrem = "api"
path_prefix = "api"

[upstream.api]
endpoint = ["127.0.0.1:9"]
balanse = "round_robin"

[upstream.api.healthcheck]
path = "/healthz"
interval = "1s"

[server.nothing_like_it]
x = 1
"#;
    let found = problems(src);
    let seen: Vec<(usize, &str, &str)> = found.iter().map(|p| (p.line, p.key.as_str(), p.message.as_str())).collect();
    for (line, key, says) in [
        (2, "server.max_conections", "did you mean `max_connections`?"),
        (3, "server.keepalive_timout", "did you mean `keepalive_timeout`?"),
        (6, "listener[0].adress", "did you mean `address`?"),
        (9, "route[0].upstrem", "did you mean `upstream`?"),
        (13, "upstream.api.endpoint", "did you mean `endpoints`?"),
        (14, "upstream.api.balanse", "did you mean `balance`?"),
        (16, "upstream.api.healthcheck", "did you mean `health_check`?"),
    ] {
        assert!(
            seen.iter().any(|(l, k, m)| (*l, *k) == (line, key) && m.contains(says)),
            "{line} {key} {says:?} in {seen:#?}"
        );
    }
    // The unknown table's own keys are not reported as strays of the table above it.
    assert!(!seen.iter().any(|(l, _, _)| *l == 17 || *l == 18), "{seen:#?}");
    assert!(
        seen.iter().any(|(l, k, m)| *l == 20 && *k == "server.nothing_like_it" && m.contains("unknown key")),
        "{seen:#?}"
    );
    // And the values are checked in the same run: the route's path must start with "/".
    assert!(seen.iter().any(|(l, k, _)| *l == 10 && k.contains("path_prefix")), "{seen:#?}");
}

#[test]
fn a_type_error_names_the_table_path_and_the_type_in_words() {
    let found = problems("[server]\nmax_connections = \"many\"\n");
    let typed = found.iter().find(|p| p.line == 2).expect("the type error");
    assert_eq!(typed.key, "server.max_connections");
    assert!(typed.message.contains("expected a whole number"), "{}", typed.message);
    assert!(!typed.message.contains("usize"), "{}", typed.message);
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let src = "[server]\nkeepalive_timeout = \"5 minutes\"\n";
    let p = problems(src);
    let bad = p.iter().find(|p| p.line == 2).expect("the duration's problem");
    assert_eq!(bad.key, "server.keepalive_timeout");
    assert!(bad.message.contains("\"10s\""), "{}", bad.message);
}

#[test]
fn every_semantic_problem_is_listed_with_its_line_and_key() {
    let src = r#"[[listener]]
address = "localhost"

[[route]]
upstream = "missing"
path_prefix = "api"

[upstream.api]
endpoints = ["127.0.0.1:9001", "no-port"]
protocol = "http3"
"#;
    let p = problems(src);
    let summary: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert!(summary.contains(&(2, "listener[0].address")), "{summary:?}");
    assert!(summary.contains(&(5, "route[0].upstream")), "{summary:?}");
    assert!(summary.contains(&(6, "route[0].path_prefix")), "{summary:?}");
    assert!(summary.contains(&(9, "upstream.api.endpoints[1]")), "{summary:?}");
    assert!(summary.contains(&(10, "upstream.api.protocol")), "{summary:?}");
    let missing = p.iter().find(|p| p.key == "route[0].upstream").expect("route problem");
    assert!(missing.message.contains("defined: api"), "{}", missing.message);
}

#[test]
fn the_rendered_error_names_file_line_and_key() {
    let err = parse("[[listener]]\naddress = \"nope\"\n", Path::new("conf/sluice.toml")).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("conf/sluice.toml:2: listener[0].address:"), "{text}");
}

#[test]
fn pool_limits_must_be_consistent() {
    let src = r#"[[listener]]
address = "127.0.0.1:1"
[[route]]
upstream = "a"
[upstream.a]
endpoints = ["127.0.0.1:2"]
pool = { max_connections = 2, max_idle = 5 }
"#;
    let p = problems(src);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "upstream.a.pool.max_idle");
    assert_eq!(p[0].line, 7);
}

#[test]
fn a_missing_tls_file_is_named() {
    let src = r#"[[listener]]
address = "127.0.0.1:8443"
tls = { certificate = "nope.pem", key = "nokey.pem" }
[[route]]
upstream = "a"
[upstream.a]
endpoints = ["127.0.0.1:2"]
"#;
    let p = problems(src);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].message.contains("nope.pem"), "{}", p[0].message);
}

#[test]
fn type_errors_and_unknown_keys_are_all_reported_in_one_pass() {
    let src = r#"[server]
max_conections = 5
keepalive_timeout = 60
header_read_timeout = "5 minutes"

[[listener]]
address = "127.0.0.1:8080"
backlog = "big"
protocl = "auto"

[[route]]
upstream = "api"
timeout = "soon"

[upstream.api]
endpoints = ["127.0.0.1:9001", 9002]
pool = { max_connections = "many" }
"#;
    let p = problems(src);
    let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 8, 9, 13, 16, 17], "{p:#?}");
    assert_eq!(p[0].key, "server.max_conections");
    assert!(p[0].message.contains("did you mean `max_connections`?"), "{}", p[0].message);
    assert!(p[2].message.contains("\"10s\""), "{}", p[2].message);
}

#[test]
fn parse_problems_and_value_problems_come_together() {
    let src = "[server]\nmax_conections = 5\n\n[[listener]]\naddress = \"localhost\"\n\n[[route]]\nupstream = \"nope\"\n\n[upstream.api]\nendpoints = [\"127.0.0.1:1\"]\n";
    let p = problems(src);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["server.max_conections", "listener[0].address", "route[0].upstream"], "{p:#?}");
}

#[test]
fn tls_files_that_are_not_pem_are_named_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("sluice-config-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), "this is not a certificate\n").expect("write");
    std::fs::write(dir.join("key.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .expect("write");
    let src = "[[listener]]\naddress = \"127.0.0.1:8443\"\ntls = { certificate = \"cert.pem\", key = \"key.pem\" }\n[[route]]\nupstream = \"a\"\n[upstream.a]\nendpoints = [\"127.0.0.1:2\"]\n";
    let err = parse(src, &dir.join("sluice.toml")).expect_err("not PEM");
    let _ = std::fs::remove_dir_all(&dir);
    let p = err.problems();
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!((p[0].line, p[0].key.as_str()), (3, "listener[0].tls.certificate"));
    assert!(p[0].message.contains("no CERTIFICATE block"), "{}", p[0].message);
    assert_eq!(p[1].key, "listener[0].tls.key");
    assert!(p[1].message.contains("no usable private key"), "{}", p[1].message);
}

#[test]
fn body_settings_are_checked() {
    let src = r#"[server]
spool_dir = "/no/such/folder"
http2_stream_window = "4GiB"
[[listener]]
address = "127.0.0.1:1"
[[route]]
upstream = "a"
large_request_bodies = "disk"
upgrades = ["websocket", "h2c"]
max_request_body = 0
[upstream.a]
endpoints = ["127.0.0.1:2"]
"#;
    let p = problems(src);
    let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        keys,
        vec![
            (2, "server.spool_dir"),
            (3, "server.http2_stream_window"),
            (8, "route[0].large_request_bodies"),
            (9, "route[0].upgrades"),
            (10, "route[0].max_request_body")
        ],
        "{p:#?}"
    );
    assert!(p[1].message.contains("\"64KiB\""), "{}", p[1].message);
    assert!(p[3].message.contains("h2c smuggling"), "{}", p[3].message);
    let ok = parse(
        &src.replace("/no/such/folder", "/tmp")
            .replace("\"disk\"", "\"spool\"")
            .replace(", \"h2c\"", "")
            .replace("= 0", "= \"2MiB\"")
            .replace("\"4GiB\"", "\"1MiB\""),
        Path::new("s.toml"),
    )
    .expect("valid");
    assert_eq!(ok.routes[0].large_request_bodies, LargeBodies::Spool);
    assert_eq!(ok.routes[0].max_request_body, 2 << 20);
    assert_eq!(ok.routes[0].request_buffer, 64 * 1024);
    assert_eq!(ok.server.http2_stream_window, 1 << 20);
}

const MINIMAL: &str = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\n[[route]]\nupstream = \"up\"\n\n[upstream.up]\nendpoints = [\"127.0.0.1:9001\"]\n";

#[test]
fn every_problem_is_reported_in_one_pass_with_its_line() {
    let src = r#"
[server]
drain_timeout = "0s"
keepalive_timeout = "5 minutes"
trusted_proxies = ["10.0.0.0/8", "not-an-ip", "::1/129"]

[[listener]]
address = "127.0.0.1:8080"

[[listener]]
address = "127.0.0.1:8080"

[[route]]
upstream = "up"
timeout = "0s"
read_timeout = "0ms"

[upstream.up]
endpoints = ["127.0.0.1:9001"]
pool = { connect_timeout = "0s", idle_timeout = "0s" }

[access_log]
format = "xml"
"#;
    let p = problems(src);
    let at = |key: &str| p.iter().find(|p| p.key == key).map(|p| p.line);
    assert_eq!(at("server.drain_timeout"), Some(3), "{p:#?}");
    assert_eq!(at("server.keepalive_timeout"), Some(4), "a bad duration does not hide the others: {p:#?}");
    assert_eq!(p.iter().filter(|p| p.key == "server.trusted_proxies").count(), 2, "{p:#?}");
    assert_eq!(at("listener.address"), Some(11), "{p:#?}");
    assert_eq!(at("route[0].timeout"), Some(15));
    assert_eq!(at("route[0].read_timeout"), Some(16));
    assert_eq!(at("upstream.up.pool.connect_timeout"), Some(20));
    assert_eq!(at("upstream.up.pool.idle_timeout"), Some(20));
    assert_eq!(at("access_log.format"), Some(23));
    let duplicate = p.iter().find(|p| p.key == "listener.address").expect("duplicate");
    assert!(duplicate.message.contains("already used by an earlier [[listener]]"), "{}", duplicate.message);
}

#[test]
fn an_admin_listener_on_a_proxy_listeners_port_is_an_error_and_a_wildcard_overlap_a_warning() {
    let base = "[[route]]\nupstream = \"up\"\n[upstream.up]\nendpoints = [\"127.0.0.1:9\"]\n";
    let clash = format!("[[listener]]\naddress = \"0.0.0.0:8080\"\n[admin]\naddress = \"127.0.0.1:8080\"\n{base}");
    let found = problems(&clash);
    assert_eq!((found[0].line, found[0].key.as_str()), (4, "admin.address"), "{found:?}");
    assert!(found[0].message.contains("listener[0]'s address"), "{}", found[0].message);
    let overlap =
        format!("[[listener]]\naddress = \"127.0.0.1:8080\"\n[[listener]]\naddress = \"0.0.0.0:8080\"\n{base}");
    let config = parse(&overlap, Path::new("sluice.toml")).expect("valid, with a warning");
    let warning = config.warnings.iter().find(|w| w.key == "listener[1].address").expect("the overlap warned");
    assert_eq!(warning.line, 4);
    assert!(warning.message.contains("share port 8080"), "{}", warning.message);
    let apart = format!("[[listener]]\naddress = \"127.0.0.1:8080\"\n[[listener]]\naddress = \"0.0.0.0:8081\"\n{base}");
    assert!(parse(&apart, Path::new("sluice.toml")).expect("valid").warnings.is_empty());
}

#[test]
fn unreachable_routes_and_unused_upstreams_are_warnings() {
    let src = format!(
        "{MINIMAL}\n[[route]]\npath_prefix = \"/api\"\nupstream = \"up\"\n\n[upstream.spare]\nendpoints = [\"127.0.0.1:9002\"]\n"
    );
    let config = parse(&src, Path::new("sluice.toml")).expect("valid, with warnings");
    let keys: Vec<(&str, usize)> = config.warnings.iter().map(|w| (w.key.as_str(), w.line)).collect();
    assert_eq!(keys, [("route[1]", 12), ("upstream.spare", 14)], "{:#?}", config.warnings);
    assert!(config.warnings[0].message.contains("can never match: route[0]"));
    // A narrower route first is fine.
    let ordered = MINIMAL.replace("[[route]]\nupstream", "[[route]]\npath_prefix = \"/api\"\nupstream")
        + "\n[[route]]\nupstream = \"up\"\n";
    assert!(parse(&ordered, Path::new("sluice.toml")).expect("valid").warnings.is_empty());
}

#[test]
fn access_log_trusted_proxies_route_names_and_pool_defaults() {
    let src = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\n{MINIMAL}\n[access_log]\nformat = \"combined\"\n"
    );
    let config = parse(&src, Path::new("/etc/sluice/sluice.toml")).expect("valid");
    let log = config.access_log.expect("access log");
    assert_eq!((log.destination, log.format, log.queue), (LogDestination::Stderr, LogFormat::Combined, 65_536));
    let nets = &config.server.trusted_proxies;
    assert!(nets[0].contains("10.1.2.3".parse().expect("ip")) && !nets[0].contains("11.0.0.1".parse().expect("ip")));
    assert!(nets[1].contains("::1".parse().expect("ip")));
    assert!(nets[0].contains("::ffff:10.0.0.1".parse().expect("ip")), "IPv4-mapped addresses match their network");
    assert_eq!(config.routes[0].name, "/");
    let pool = config.upstreams[0].pool;
    assert_eq!((pool.max_idle, pool.max_connections), (256, 256), "no idle cap below the connection cap");
}

#[test]
fn the_example_file_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sluice.toml");
    let config = load(&path).expect("the example is valid");
    use crate::defaults::*;
    let s = &config.server;
    assert_eq!(
        (s.max_connections, s.header_read_timeout, s.keepalive_timeout, s.drain_timeout),
        (MAX_CONNECTIONS, HEADER_READ_TIMEOUT, KEEPALIVE_TIMEOUT, DRAIN_TIMEOUT)
    );
    assert_eq!((s.client_body_timeout, s.send_timeout, s.dns_ttl), (CLIENT_BODY_TIMEOUT, SEND_TIMEOUT, DNS_TTL));
    assert_eq!((s.model, s.upstream_pools), (MODEL, UPSTREAM_POOLS));
    assert_eq!(s.http2_stream_window, HTTP2_STREAM_WINDOW);
    let route = &config.routes[0];
    assert_eq!(
        (route.timeout, route.read_timeout, route.tunnel_idle_timeout),
        (ROUTE_TIMEOUT, READ_TIMEOUT, TUNNEL_IDLE_TIMEOUT)
    );
    assert_eq!(
        (route.request_buffer, route.response_buffer, route.max_request_body),
        (BODY_BUFFER, BODY_BUFFER, MAX_REQUEST_BODY)
    );
    let api = config.upstreams.iter().find(|u| u.name == "api").expect("api");
    assert_eq!(api.pool, PoolSettings::default());
    assert_eq!(api.queue_timeout, QUEUE_TIMEOUT);
    assert_eq!(config.listeners[0].backlog, BACKLOG);
    assert_eq!(config.access_log.map(|l| l.queue), Some(ACCESS_LOG_QUEUE));
}

#[test]
fn balance_weights_and_hash_keys_are_read_and_checked() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\n[[route]]\nupstream = \"api\"\n[upstream.api]\n";
    let config = parse(
        &format!("{base}endpoints = [\"10.0.0.1:80\", {{ address = \"10.0.0.2:80\", weight = 3 }}]\nbalance = \"consistent_hash\"\nhash_key = \"header:X-User\"\n"),
        Path::new("sluice.toml"),
    )
    .expect("valid");
    let api = &config.upstreams[0];
    assert_eq!(api.weights, vec![1, 3]);
    assert_eq!(api.balance, Balance::ConsistentHash(HashKey::Header("x-user".into())));
    let default = parse(&format!("{base}endpoints = [\"10.0.0.1:80\"]\n"), Path::new("sluice.toml")).expect("valid");
    assert_eq!(default.upstreams[0].balance, Balance::LeastRequest, "the default");

    let missing = problems(&format!("{base}endpoints = [\"10.0.0.1:80\"]\nbalance = \"consistent_hash\"\n"));
    assert!(missing[0].key.ends_with("hash_key") && missing[0].message.contains("needs a key"), "{missing:?}");
    let unused = problems(&format!("{base}endpoints = [\"10.0.0.1:80\"]\nhash_key = \"path\"\n"));
    assert!(unused[0].message.contains("only used by"), "{unused:?}");
    let bad =
        problems(&format!("{base}endpoints = [\"10.0.0.1:80\"]\nbalance = \"consistent_hash\"\nhash_key = \"body\"\n"));
    assert!(bad[0].message.contains("\"header:NAME\""), "{bad:?}");
    let zero = problems(&format!("{base}endpoints = [{{ address = \"10.0.0.1:80\", weight = 0 }}]\n"));
    assert!(zero[0].key.ends_with("weight") && zero[0].line == 6, "{zero:?}");
    let algorithm = problems(&format!("{base}endpoints = [\"10.0.0.1:80\"]\nbalance = \"fastest\"\n"));
    assert!(algorithm[0].message.contains("\"least_request\""), "{algorithm:?}");
}

#[test]
fn outlier_settings_have_defaults_and_a_percentage_is_checked() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\n[[route]]\nupstream = \"api\"\n[upstream.api]\nendpoints = [\"10.0.0.1:80\"]\n";
    let config = parse(base, Path::new("sluice.toml")).expect("valid");
    let outlier = config.upstreams[0].outlier;
    assert_eq!(
        (outlier.consecutive_failures, outlier.base_ejection, outlier.max_ejected_percent),
        (5, std::time::Duration::from_secs(30), 50)
    );
    let over = problems(&format!("{base}[upstream.api.outlier]\nmax_ejected_percent = 150\n"));
    assert!(over[0].key.ends_with("max_ejected_percent") && over[0].line == 8, "{over:?}");
}

#[test]
fn retry_settings_have_defaults_and_conditions_are_checked() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\n[[route]]\nupstream = \"api\"\n[upstream.api]\nendpoints = [\"10.0.0.1:80\"]\n";
    let retry = parse(base, Path::new("sluice.toml")).expect("valid").upstreams[0].retry.clone();
    assert_eq!((retry.retries, retry.on_connect_failure, retry.on_reset, retry.budget_percent), (2, true, true, 20));
    assert!(retry.on_status.is_empty());
    let chosen =
        parse(&format!("{base}[upstream.api.retry]\non = [\"503\", \"connect-failure\"]\n"), Path::new("s.toml"))
            .expect("valid")
            .upstreams[0]
            .retry
            .clone();
    assert_eq!((chosen.on_status, chosen.on_connect_failure, chosen.on_reset), (vec![503], true, false));
    let p95 = parse(&format!("{base}[upstream.api.retry]\nhedge_after = \"p95\"\n"), Path::new("s.toml")).expect("p95");
    assert_eq!(p95.upstreams[0].retry.hedge_after, Some(HedgeAfter::P95));
    let hedge = problems(&format!("{base}[upstream.api.retry]\nhedge_after = \"soon\"\n"));
    assert!(hedge[0].message.contains("\"p95\""), "{hedge:?}");
    let bad = problems(&format!("{base}[upstream.api.retry]\non = [\"404\"]\n"));
    assert!(bad[0].key.ends_with("retry.on") && bad[0].message.contains("\"connect-failure\""), "{bad:?}");
}

#[test]
fn health_checks_are_read_and_checked() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\n[[route]]\nupstream = \"api\"\n[upstream.api]\nendpoints = [\"10.0.0.1:80\"]\n";
    let check = parse(&format!("{base}[upstream.api.health_check]\npath = \"/healthz\"\n"), Path::new("s.toml"))
        .expect("valid")
        .upstreams[0]
        .health_check
        .clone()
        .expect("configured");
    assert_eq!((check.interval, check.healthy_threshold, check.unhealthy_threshold), (Duration::from_secs(5), 2, 3));
    let relative = problems(&format!("{base}[upstream.api.health_check]\npath = \"healthz\"\n"));
    assert!(relative[0].key.ends_with("health_check.path"), "{relative:?}");
    let h2 = format!("{base}protocol = \"http2\"\n[upstream.api.health_check]\npath = \"/healthz\"\n");
    assert!(parse(&h2, Path::new("s.toml")).is_ok(), "HTTP/2 groups are checked over HTTP/2");
}

const CACHED: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
upstream = "api"
cache = true

[upstream.api]
endpoints = ["127.0.0.1:9001"]
"#;

#[test]
fn the_cache_gets_its_defaults_and_a_shared_tier() {
    let config =
        parse(&format!("{CACHED}[cache]\n[cache.redis]\nurl = \"redis://127.0.0.1:6379\"\n"), Path::new("s.toml"))
            .expect("valid");
    assert!(config.routes[0].cache);
    let cache = config.cache.expect("cache");
    assert_eq!((cache.memory, cache.max_object, cache.heuristic_percent), (256 << 20, 8 << 20, 0));
    assert!(cache.coalesce && !cache.store_set_cookie);
    assert_eq!(cache.tag_header, "surrogate-key");
    assert!(cache.purge_from.iter().any(|n| n.contains("127.0.0.1".parse().expect("ip"))));
    assert!(!cache.purge_from.iter().any(|n| n.contains("10.1.2.3".parse().expect("ip"))));
    match cache.shared {
        Some(SharedTierConfig::Redis { link, timeout, prefix, coalesce_lock }) => {
            assert_eq!(link.topology, RedisTopology::Server("redis://127.0.0.1:6379".into()));
            assert_eq!(
                (link.url.as_str(), timeout, prefix.as_str(), coalesce_lock),
                ("redis://127.0.0.1:6379", Duration::from_millis(50), "sluice", false)
            );
        }
        other => panic!("expected the Redis tier, got {other:?}"),
    }
}

#[test]
fn cache_problems_name_their_line_and_key() {
    let found = problems(CACHED);
    assert_eq!((found[0].line, found[0].key.as_str()), (7, "route[0].cache"));
    assert!(found[0].message.contains("no [cache] table"), "{}", found[0].message);
    let source = format!(
        "{CACHED}[cache]\nmemory = \"1MiB\"\nmax_object = \"2MiB\"\nheuristic_percent = 150\npurge_from = [\"nope\"]\n\
         key_headers = [\"bad header\"]\n[cache.redis]\nurl = \"http://x\"\n[cache.memcached]\naddress = \"nohost\"\n"
    );
    let found: Vec<(usize, String)> = problems(&source).into_iter().map(|p| (p.line, p.key)).collect();
    for expected in [
        (13, "cache.max_object"),
        (14, "cache.heuristic_percent"),
        (15, "cache.purge_from"),
        (16, "cache.key_headers"),
        (20, "cache.memcached"),
    ] {
        assert!(found.iter().any(|(l, k)| (*l, k.as_str()) == expected), "{expected:?} in {found:?}");
    }
}

#[test]
fn redis_links_name_the_wrong_part_and_read_cluster_and_sentinel_urls() {
    let tier = |redis: &str| format!("{CACHED}[cache]\nkey_authority = \"nope\"\n[cache.redis]\n{redis}\n");
    let found =
        problems(&tier("url = \"redis-cluster://a:1,b\"\npassword_file = \"/nonexistent/pw\"\nca_file = \"ca.pem\""));
    let keys: Vec<(usize, &str)> = found.iter().map(|p| (p.line, p.key.as_str())).collect();
    for expected in [
        (12, "cache.key_authority"),
        (14, "cache.redis.url"),
        (15, "cache.redis.password_file"),
        (16, "cache.redis.ca_file"),
    ] {
        assert!(keys.contains(&expected), "{expected:?} in {found:?}");
    }
    let message = |key: &str| found.iter().find(|p| p.key == key).map(|p| p.message.clone()).unwrap_or_default();
    assert!(message("cache.redis.url").contains("\"b\" is not host:port"), "{}", message("cache.redis.url"));
    assert!(message("cache.redis.ca_file").contains("use a rediss:// URL"), "{}", message("cache.redis.ca_file"));
    assert!(message("cache.key_authority").contains("\"hostname\""), "{}", message("cache.key_authority"));
    let sentinel = format!("{CACHED}[cache]\n[cache.redis]\nurl = \"redis-sentinel://s1:26379,s2:26379/main/2\"\n");
    let config = parse(&sentinel, Path::new("sluice.toml")).expect("valid");
    match config.cache.and_then(|c| c.shared) {
        Some(SharedTierConfig::Redis { link, .. }) => assert_eq!(
            link.topology,
            RedisTopology::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                service: "main".into(),
                primary: "redis://primary/2".into(),
            }
        ),
        other => panic!("{other:?}"),
    }
    let limit = format!("{CACHED}[rate_limit.x]\nrate = \"1/s\"\nredis_password_file = \"pw\"\n");
    let found = problems(&limit);
    assert!(
        found.iter().any(|p| p.key == "rate_limit.x.redis_password_file" && p.message.contains("global")),
        "{found:?}"
    );
}

#[test]
fn tracing_defaults_to_the_local_collector_and_names_bad_values() {
    let config = parse(&format!("{GOOD}\n[tracing]\n"), Path::new("sluice.toml")).expect("valid");
    let tracing = config.tracing.expect("[tracing] present");
    assert_eq!((tracing.authority.as_str(), tracing.path.as_str()), ("127.0.0.1:4318", "/v1/traces"));
    assert_eq!((tracing.sample_ratio, tracing.service_name.as_str()), (1.0, "sluice"));
    assert!(parse(GOOD, Path::new("sluice.toml")).expect("valid").tracing.is_none(), "off by default");

    let bad = format!(
        "{GOOD}\n[tracing]\notlp_endpoint = \"https://otel.example.com\"\nsample_ratio = 1.5\nqueue = 10\n\
         [tracing.headers]\n\"bad name\" = \"x\"\n"
    );
    let found = problems(&bad);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["tracing.otlp_endpoint", "tracing.sample_ratio", "tracing.queue", "tracing.headers.bad name"],
        "{found:?}"
    );
    let lines = GOOD.lines().count() + 3;
    assert_eq!(found[0].line, lines, "the line of otlp_endpoint");
    assert!(found[0].message.contains("OpenTelemetry Collector"), "{}", found[0].message);
}

#[test]
fn tracing_header_values_never_print() {
    let source = format!("{GOOD}\n[tracing]\n[tracing.headers]\nx-api-key = \"hunter2-secret\"\n");
    let config = parse(&source, Path::new("sluice.toml")).expect("valid");
    let shown = format!("{config:?}");
    assert!(shown.contains("x-api-key") && !shown.contains("hunter2"), "{shown}");
}

#[test]
fn queue_timeout_is_the_groups_and_the_old_pool_key_says_where_it_went() {
    let base = "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"a\"\n[upstream.a]\nendpoints = [\"127.0.0.1:1\"]\n";
    let config = parse(base, Path::new("sluice.toml")).expect("valid");
    assert_eq!(config.upstreams[0].queue_timeout, Duration::from_secs(1), "the default");
    let config = parse(&format!("{base}queue_timeout = \"0ms\"\n"), Path::new("sluice.toml")).expect("valid");
    assert_eq!(config.upstreams[0].queue_timeout, Duration::ZERO, "zero: no waiting in line");
    let p = problems(&format!("{base}pool = {{ wait_timeout = \"300ms\" }}\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].line, p[0].key.as_str()), (7, "upstream.a.pool.wait_timeout"));
    assert!(p[0].message.contains("queue_timeout = \"300ms\" in [upstream.a]"), "{}", p[0].message);
}

#[test]
fn cors_origins_are_checked_as_browsers_send_them() {
    let route = |cors: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"up\"\n[route.cors]\n{cors}\n\
             [upstream.up]\nendpoints = [\"127.0.0.1:9\"]\n"
        )
    };
    let config =
        parse(&route("origins = [\"https://App.test:8443\", \"https://*.example.com\", \"*\"]"), Path::new("s.toml"))
            .expect("valid");
    let cors = config.routes[0].cors.as_ref().expect("cors");
    assert_eq!(cors.methods, ["GET", "HEAD", "POST"]);
    assert_eq!(cors.max_age, Duration::from_secs(600));
    assert!(cors.origins[0].allows("https://app.test:8443"));
    assert!(!cors.origins[0].allows("https://app.test"));
    assert!(cors.origins[1].allows("https://shop.example.com"));
    assert!(!cors.origins[1].allows("https://example.com") && !cors.origins[1].allows("https://a.b.example.com"));
    for (bad, says) in [
        ("origins = [\"https://app.test/path\"]", "an origin has no path"),
        ("origins = [\"app.test\"]", "is not an origin"),
        ("origins = [\"https://*.*.example.com\"]", "one label"),
        ("origins = [\"https://a*.example.com\"]", "one label"),
        ("origins = [\"*\"]\ncredentials = true", "any site act as the user"),
        ("origins = []", "is empty"),
        ("origins = [\"https://a.test\"]\nmethods = [\"GET POST\"]", "is not a method"),
        ("origins = [\"https://a.test\"]\ncolour = 1", "unknown key"),
    ] {
        let found = problems(&route(bad));
        assert!(
            found.iter().any(|p| p.key.starts_with("route[0].cors") && p.message.contains(says)),
            "{bad}: {says:?} in {found:#?}"
        );
    }
}
