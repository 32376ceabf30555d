//! Rewriting on a route (issue 23 §4), against the real binary: the path the upstream
//! gets (prefix stripped or replaced, or a regex with captures, after normalisation),
//! with both paths in the record; request and response headers added, set and removed
//! with variables; redirects with each status, and only for one scheme; the Host kept
//! or the upstream's own; over HTTP/1 and HTTP/2. And `sluice check` naming the
//! gateway settings' mistakes.

mod support;

use http::{Request, Response, StatusCode};
use support::client::{self, field, send1, send2};
use support::upstream::{full, Upstream};
use support::{with_access_log, Sluice};

/// An upstream that answers with the target it got and every header, one per line,
/// and says who it is in a `server` field.
async fn echo() -> Upstream {
    Upstream::start(|request: Request<hyper::body::Incoming>| async move {
        let mut text = format!("target={}\n", request.uri());
        for (name, value) in request.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        let mut response = Response::new(full(text));
        response.headers_mut().insert("server", http::HeaderValue::from_static("origin/1.0"));
        response.headers_mut().insert("x-internal", http::HeaderValue::from_static("secret"));
        response
    })
    .await
}

fn config(upstream: &Upstream) -> String {
    with_access_log(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\nname = \"strip\"\npath_prefix = \"/api/\"\nupstream = \"api\"\n\
         [route.rewrite]\nstrip_prefix = \"/api\"\n\
         [[route]]\nname = \"replace\"\npath_prefix = \"/v1/\"\nupstream = \"api\"\n\
         [route.rewrite]\nstrip_prefix = \"/v1\"\nadd_prefix = \"/internal/v2\"\nhost = \"upstream\"\n\
         [[route]]\nname = \"people\"\npath_prefix = \"/users/\"\nupstream = \"api\"\n\
         [route.rewrite]\nregex = '^/users/(?P<id>[0-9]+)/(\\w+)$'\nto = \"/v2/people/{{id}}?part={{2}}\"\n\
         [route.request_headers]\nset = {{ x-client = \"{{client_addr}}\", x-user-id = \"{{id}}\" }}\n\
         add = {{ x-via-route = \"{{route}} {{request_id}}\" }}\nremove = [\"x-debug\"]\n\
         [route.response_headers]\nset = {{ x-served-by = \"sluice ({{route}})\" }}\nremove = [\"server\", \"x-internal\"]\n\
         [[route]]\nname = \"moved\"\npath_prefix = \"/old/\"\n\
         [route.redirect]\nstatus = 301\nto = \"http://{{host}}/new{{uri}}\"\n\
         [[route]]\nname = \"temporary\"\npath_prefix = \"/tmp/\"\nupstream = \"api\"\n\
         [route.redirect]\nstatus = 307\nto = \"/elsewhere\"\n\
         [[route]]\nname = \"secure\"\npath_prefix = \"/login\"\n\
         [route.redirect]\nonly_scheme = \"http\"\nto = \"https://{{hostname}}:8443{{uri}}\"\n\
         [[route]]\nname = \"tls-only\"\npath_prefix = \"/account\"\nupstream = \"api\"\n\
         [route.redirect]\nonly_scheme = \"https\"\nto = \"http://{{host}}{{uri}}\"\n\
         [[route]]\nname = \"plain\"\nupstream = \"api\"\n\
         [upstream.api]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ))
}

async fn get1(sluice: &Sluice, target: &str, fields: &[(&str, &str)]) -> (http::response::Parts, String) {
    client::get_text(sluice.addr, "api.test:8080", target, fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_rewritten_after_normalisation_and_the_record_shows_both() {
    let upstream = echo().await;
    let sluice = Sluice::start(&config(&upstream));

    let (parts, seen) = get1(&sluice, "/api/users?page=2", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(seen.starts_with("target=/users?page=2\n"), "{seen}");
    let id = field(&parts, "x-request-id").to_string();
    // Normalised first: dot segments and encoded letters are resolved before the strip.
    let (_, seen) = get1(&sluice, "/api/./x/../%75sers", &[]).await;
    assert!(seen.starts_with("target=/users\n"), "{seen}");
    // The prefix is stripped only at a segment boundary, and a bare prefix becomes "/".
    let (_, seen) = get1(&sluice, "/api/", &[]).await;
    assert!(seen.starts_with("target=/\n"), "{seen}");

    let (_, seen) = get1(&sluice, "/v1/orders/7", &[]).await;
    assert!(seen.starts_with("target=/internal/v2/orders/7\n"), "{seen}");
    // host = "upstream": the endpoint's address, not the client's Host.
    assert!(seen.contains(&format!("host: {}\n", upstream.addr)), "{seen}");

    let (parts, seen) = get1(&sluice, "/users/42/orders?full=1", &[("x-debug", "1"), ("x-client", "forged")]).await;
    assert!(seen.starts_with("target=/v2/people/42?part=orders&full=1\n"), "{seen}");
    let regex_id = field(&parts, "x-request-id").to_string();
    // No match: the path passes unchanged.
    let (_, seen) = get1(&sluice, "/users/alice/orders", &[]).await;
    assert!(seen.starts_with("target=/users/alice/orders\n"), "{seen}");

    // The route without a rewrite keeps the client's Host.
    let (_, seen) = get1(&sluice, "/plain", &[]).await;
    assert!(seen.contains("host: api.test:8080\n") && seen.starts_with("target=/plain\n"), "{seen}");

    let record = sluice.record(&id);
    assert_eq!(
        (record["target"].as_str(), record["upstream_target"].as_str()),
        (Some("/api/users?page=2"), Some("/users?page=2"))
    );
    let record = sluice.record(&regex_id);
    assert_eq!(record["upstream_target"], "/v2/people/42?part=orders&full=1");

    // HTTP/2: the same rewrite, and :authority from the upstream's name.
    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/v1/orders/8").body(full("")).expect("request");
    let (parts, body) = send2(&mut h2, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = String::from_utf8_lossy(&body);
    assert!(
        seen.starts_with("target=/internal/v2/orders/8\n") && seen.contains(&format!("host: {}\n", upstream.addr)),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_added_set_and_removed_both_ways_with_variables() {
    let upstream = echo().await;
    let sluice = Sluice::start(&config(&upstream));
    let (parts, seen) = get1(&sluice, "/users/42/profile", &[("x-debug", "1"), ("x-client", "forged")]).await;
    let id = field(&parts, "x-request-id");
    assert!(seen.contains("x-client: 127.0.0.1\n") && !seen.contains("forged"), "{seen}");
    assert!(seen.contains("x-user-id: 42\n"), "{seen}");
    assert!(seen.contains(&format!("x-via-route: people {id}\n")), "{seen}");
    assert!(!seen.contains("x-debug"), "{seen}");
    assert_eq!(field(&parts, "x-served-by"), "sluice (people)");
    assert!(parts.headers.get("server").is_none() && parts.headers.get("x-internal").is_none());
    // Other routes' responses are untouched.
    let (parts, _) = get1(&sluice, "/plain", &[]).await;
    assert_eq!(field(&parts, "server"), "origin/1.0");

    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/users/7/x").header("x-debug", "1").body(full("")).expect("request");
    let (parts, body) = send2(&mut h2, request).await;
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.contains("x-user-id: 7\n") && !seen.contains("x-debug"), "{seen}");
    assert_eq!(field(&parts, "x-served-by"), "sluice (people)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_answer_without_the_upstream_and_only_for_their_scheme() {
    let upstream = echo().await;
    let sluice = Sluice::start(&config(&upstream));
    let before = upstream.accepted();
    let (parts, _) = get1(&sluice, "/old/page?x=1", &[]).await;
    assert_eq!(parts.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(field(&parts, "location"), "http://api.test:8080/new/old/page?x=1");
    let (parts, _) = get1(&sluice, "/tmp/a", &[]).await;
    assert_eq!((parts.status, field(&parts, "location")), (StatusCode::TEMPORARY_REDIRECT, "/elsewhere"));
    // Plain HTTP to a route that redirects plain HTTP: to HTTPS, method and body kept (308).
    let (parts, _) = get1(&sluice, "/login?next=/home", &[]).await;
    assert_eq!(parts.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(field(&parts, "location"), "https://api.test:8443/login?next=/home");
    assert_eq!(upstream.accepted(), before, "a redirect reached the upstream");
    // A route that redirects HTTPS only is not one for plain HTTP: the next route takes it.
    let (parts, seen) = get1(&sluice, "/account", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(seen.starts_with("target=/account\n"), "{seen}");
    let id = field(&parts, "x-request-id").to_string();
    assert_eq!(sluice.record(&id)["route"], "plain");

    let mut h2 = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/old/h2").body(full("")).expect("request");
    let (parts, _) = send2(&mut h2, request).await;
    assert_eq!(
        (parts.status, field(&parts, "location")),
        (StatusCode::MOVED_PERMANENTLY, "http://api.test/new/old/h2")
    );
    for status in [302u16, 303, 308] {
        let text = config(&upstream).replace("status = 307", &format!("status = {status}"));
        let other = Sluice::start(&text);
        assert_eq!(get1(&other, "/tmp/a", &[]).await.0.status.as_u16(), status);
    }
}

#[test]
fn check_names_the_gateway_settings_mistakes() {
    let dir = support::TempDir::new();
    let path = dir.path.join("sluice.toml");
    let text = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
        [auth.partners]\nkind = \"api_key\"\nkeys_file = \"missing.keys\"\n\
        [auth.tokens]\nkind = \"jwt\"\njwks_file = \"jwks.json\"\nalgorithms = [\"HS256\"]\n\
        [[route]]\npath_prefix = \"/a\"\nupstream = \"api\"\nauth = \"partner\"\n\
        [[route]]\npath_prefix = \"/b\"\nupstream = \"api\"\n[route.rewrite]\nregex = \"^/b/(\"\nto = \"/x\"\n\
        [[route]]\npath_prefix = \"/c\"\nupstream = \"api\"\n[route.rewrite]\nregex = \"^/c/(x)$\"\nto = \"/y/{2}\"\n\
        [[route]]\npath_prefix = \"/d\"\nupstream = \"api\"\n[route.cors]\norigins = [\"https://app.test/path\"]\n\
        [[route]]\npath_prefix = \"/e\"\nupstream = \"api\"\n[route.redirect]\nstatus = 200\nto = \"/f\"\n\
        [[route]]\npath_prefix = \"/g\"\nupstream = \"api\"\n[route.request_headers]\nset = { x-a = \"{nope}\" }\n\
        [[route]]\npath_prefix = \"/h\"\nupstream = \"api\"\n[route.compression]\nalgorithms = [\"deflate\"]\nlevels = { gzip = 12 }\n\
        [[route]]\npath_prefix = \"/i\"\n\
        [upstream.api]\nendpoints = [\"127.0.0.1:9\"]\n";
    std::fs::write(&path, text).expect("config");
    std::fs::write(dir.path.join("jwks.json"), "{\"keys\": []}").expect("jwks");
    let out = support::sluice_command(None).arg("check").arg("--config").arg(&path).output().expect("check");
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for expected in [
        "auth.partners.keys_file: cannot read",
        "auth.tokens.algorithms: \"HS256\" needs hs256_secret_file",
        "route[0].auth: no auth named \"partner\" (defined: partners, tokens)",
        "route[1].rewrite.regex: is not a valid regular expression",
        "route[2].rewrite.to: \"{2}\": rewrite.regex has 1 capture groups",
        "route[3].cors.origins",
        "route[4].redirect.status: 200 is not a redirect",
        "route[5].request_headers.set.x-a: \"{nope}\" is not a variable",
        "route[6].compression.algorithms: \"deflate\" is not an algorithm",
        "route[6].compression.levels.gzip: 12 is out of range; gzip takes 1 to 9",
        "route[7].upstream: is missing",
    ] {
        assert!(said.contains(expected), "check did not say {expected:?}:\n{said}");
    }
}

/// A plain listener and a TLS one on the same routes: the first route sends plain HTTP
/// to HTTPS, and is no route at all for HTTPS, which the next one forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_sent_to_https_and_https_goes_on_to_the_api() {
    let upstream = echo().await;
    let dir = support::TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    std::fs::write(dir.path.join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.path.join("key.pem"), cert.key_pair.serialize_pem()).expect("key");
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificate = \"cert.pem\", key = \"key.pem\" }}\n\
         [[route]]\nname = \"to-https\"\n[route.redirect]\nonly_scheme = \"http\"\nto = \"https://{{hostname}}:8443{{uri}}\"\n\
         [[route]]\nname = \"api\"\nupstream = \"api\"\n\
         [route.request_headers]\nset = {{ x-scheme = \"{{scheme}}\" }}\n\
         [upstream.api]\nendpoints = [\"{}\"]\n",
        upstream.addr
    );
    let path = dir.path.join("sluice.toml");
    std::fs::write(&path, text).expect("config");
    let sluice = Sluice::start_file(dir, &path, None);
    let (plain, tls) = (sluice.addrs[0], sluice.addrs[1]);

    let mut conn = client::h1(plain).await;
    let request = Request::post("/orders?x=1").header("host", "localhost").body(full("order")).expect("request");
    let (parts, _) = send1(&mut conn, request).await;
    assert_eq!(parts.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(field(&parts, "location"), "https://localhost:8443/orders?x=1");
    assert_eq!(upstream.accepted(), 0);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS");
    let mut conn = client::h1_over(stream).await;
    let request = Request::post("/orders?x=1").header("host", "localhost").body(full("order")).expect("request");
    let (parts, body) = send1(&mut conn, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.starts_with("target=/orders?x=1\n") && seen.contains("x-scheme: https\n"), "{seen}");
}
