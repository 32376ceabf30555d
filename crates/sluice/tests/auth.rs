//! Who is calling (issue 23 §1), against the real binary: API keys from a header or the
//! query, JWTs signed with RSA, P-256 and Ed25519 keys that openssl makes here (JWKS
//! from a file and from a URL), HS256 only when asked for; 401s with their challenges;
//! the identity upstream (a forged copy removed), in the record, and as a rate-limit
//! key; credentials never in the access log or `/config`; HTTP/1 and HTTP/2.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{Request, Response, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use support::client::{self, field, send1, send2};
use support::upstream::{full, Upstream};
use support::{Sluice, TempDir};

const ACME_KEY: &str = "acme-0123456789abcdef0123456789";
const GLOBEX_KEY: &str = "globex-fedcba9876543210fedcba98";

/// An upstream that answers with the target it got and every header, one per line.
async fn echo() -> Upstream {
    Upstream::start(|request: Request<hyper::body::Incoming>| async move {
        let mut text = format!("target={}\n", request.uri());
        for (name, value) in request.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        Response::new(full(text))
    })
    .await
}

fn start_in(dir: TempDir, config: &str) -> Sluice {
    let path = dir.path.join("sluice.toml");
    std::fs::write(&path, config).expect("write config");
    Sluice::start_file(dir, &path, None)
}

async fn get1(sluice: &Sluice, target: &str, fields: &[(&str, &str)]) -> (http::response::Parts, String) {
    client::get_text(sluice.addr, "api.test", target, fields).await
}

fn api_key_config(upstream: &Upstream, extra_route: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [auth.partners]\nkind = \"api_key\"\nkeys_file = \"partners.keys\"\nquery = \"api_key\"\nidentity_header = \"X-Identity\"\n\
         [auth.json_partners]\nkind = \"api_key\"\nkeys_file = \"partners.json\"\nheader = \"X-Key\"\n\
         [[route]]\npath_prefix = \"/json\"\nupstream = \"api\"\nauth = \"json_partners\"\n\
         [[route]]\npath_prefix = \"/api\"\nupstream = \"api\"\nauth = \"partners\"\n{extra_route}\
         [upstream.api]\nendpoints = [\"{}\"]\n[access_log]\npath = \"access.log\"\n",
        upstream.addr
    )
}

fn key_files(dir: &TempDir) {
    std::fs::write(dir.path.join("partners.keys"), format!("# name key\nacme {ACME_KEY}\nglobex {GLOBEX_KEY}\n"))
        .expect("keys");
    std::fs::write(dir.path.join("partners.json"), format!("[{{\"name\": \"initech\", \"key\": \"{ACME_KEY}\"}}]"))
        .expect("json keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_from_a_header_or_the_query_name_the_caller_and_never_reach_the_log() {
    let upstream = echo().await;
    let dir = TempDir::new();
    key_files(&dir);
    let sluice = start_in(dir, &api_key_config(&upstream, ""));

    let (none, _) = get1(&sluice, "/api/x", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(field(&none, "www-authenticate"), "ApiKey realm=\"partners\", header=\"x-api-key\"");
    let (wrong, body) = get1(&sluice, "/api/x", &[("x-api-key", "not-a-key-0123456789")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("unknown"), "the client is not told why: {body}");

    // The header: the key's name goes upstream, the key and a forged identity do not.
    let (ok, seen) = get1(&sluice, "/api/x", &[("x-api-key", ACME_KEY), ("x-identity", "admin")]).await;
    assert_eq!(ok.status, StatusCode::OK, "{seen}");
    assert!(seen.contains("x-identity: acme\n"), "{seen}");
    assert!(!seen.contains("admin") && !seen.contains(ACME_KEY), "{seen}");
    let ok_id = field(&ok, "x-request-id").to_string();

    // The query: the parameter is taken off what the upstream gets.
    let (ok, seen) = get1(&sluice, &format!("/api/q?a=1&api_key={GLOBEX_KEY}&b=2"), &[]).await;
    assert_eq!(ok.status, StatusCode::OK, "{seen}");
    assert!(seen.contains("target=/api/q?a=1&b=2\n") && seen.contains("x-identity: globex\n"), "{seen}");
    let query_id = field(&ok, "x-request-id").to_string();
    // A key in the header, and a parameter of the key's name: neither goes upstream.
    let (ok, seen) = get1(&sluice, "/api/q?api_key=decoy-value-0123456789", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(ok.status, StatusCode::OK, "{seen}");
    assert!(seen.starts_with("target=/api/q\n") && !seen.contains("decoy"), "{seen}");
    let (bad_query, _) = get1(&sluice, "/api/q?api_key=wrong-key-in-the-query", &[]).await;
    assert_eq!(bad_query.status, StatusCode::UNAUTHORIZED);

    // A JSON key file, another header; a key of the other auth's file is not this one's.
    let (json, seen) = get1(&sluice, "/json/x", &[("x-key", ACME_KEY)]).await;
    assert_eq!(json.status, StatusCode::OK, "{seen}");
    let (other, _) = get1(&sluice, "/json/x", &[("x-key", GLOBEX_KEY)]).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    // HTTP/2 the same.
    let mut h2 = client::h2(sluice.addr).await;
    let request =
        Request::get("http://api.test/api/h2").header("x-api-key", GLOBEX_KEY).body(full("")).expect("request");
    let (parts, body) = send2(&mut h2, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("x-identity: globex\n"));
    let request = Request::get("http://api.test/api/h2").body(full("")).expect("request");
    assert_eq!(send2(&mut h2, request).await.0.status, StatusCode::UNAUTHORIZED);

    // Records: the decision and the identity; never a key, valid or not.
    let records = sluice.records(10);
    // Workers write their records in their own order: compared as counts.
    let mut reasons: Vec<&str> = records.iter().filter_map(|r| r["auth"].as_str()).collect();
    reasons.sort_unstable();
    let expected = ["missing_credentials", "missing_credentials", "ok", "ok", "ok", "ok", "ok"];
    assert_eq!(reasons, [&expected[..], &["unknown_key"; 3]].concat());
    assert_eq!(sluice.record(&ok_id)["identity"], "acme");
    assert_eq!(sluice.record(&query_id)["target"], "/api/q?a=1&api_key=-&b=2");
    let log = std::fs::read_to_string(sluice.dir.path.join("access.log")).expect("log");
    for secret in [ACME_KEY, GLOBEX_KEY, "wrong-key-in-the-query", "not-a-key-0123456789", "decoy-value-0123456789"] {
        assert!(!log.contains(secret), "{secret} in the access log:\n{log}");
        assert!(!sluice.log().contains(secret), "{secret} in the log");
    }
    let config = admin_config(&sluice).await;
    assert!(config.contains("partners") && !config.contains(ACME_KEY) && !config.contains(GLOBEX_KEY), "{config}");
}

async fn admin_config(sluice: &Sluice) -> String {
    let mut admin = client::h1(sluice.admin.expect("admin")).await;
    let request = Request::get("/config").header("host", "admin").body(full("")).expect("request");
    String::from_utf8_lossy(&send1(&mut admin, request).await.1).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_read_again_on_reload_and_a_broken_file_keeps_the_old_ones() {
    let upstream = echo().await;
    let dir = TempDir::new();
    key_files(&dir);
    let sluice = start_in(dir, &api_key_config(&upstream, ""));
    let keys = sluice.dir.path.join("partners.keys");
    std::fs::write(&keys, format!("globex {GLOBEX_KEY}\nhooli hooli-00112233445566778899\n")).expect("keys");
    let status = Command::new("kill").arg("-HUP").arg(sluice.pid().to_string()).status().expect("kill");
    assert!(status.success());
    sluice.wait_for_log("config reloaded");
    assert_eq!(get1(&sluice, "/api/x", &[("x-api-key", "hooli-00112233445566778899")]).await.0.status, StatusCode::OK);
    assert_eq!(get1(&sluice, "/api/x", &[("x-api-key", ACME_KEY)]).await.0.status, StatusCode::UNAUTHORIZED);

    std::fs::write(&keys, "hooli\n").expect("keys");
    let status = Command::new("kill").arg("-HUP").arg(sluice.pid().to_string()).status().expect("kill");
    assert!(status.success());
    let log = sluice.wait_for_log("config not reloaded");
    assert!(log.contains("partners.keys") && log.contains("line 1"), "{log}");
    assert_eq!(get1(&sluice, "/api/x", &[("x-api-key", GLOBEX_KEY)]).await.0.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_is_a_rate_limit_key() {
    let upstream = echo().await;
    let dir = TempDir::new();
    key_files(&dir);
    let route =
        "rate_limits = [\"per_partner\"]\n[rate_limit.per_partner]\nkey = [\"identity\"]\nrate = \"2/m\"\nburst = 2\n";
    let sluice = start_in(dir, &api_key_config(&upstream, route));
    let mut statuses = Vec::new();
    for key in [ACME_KEY, ACME_KEY, ACME_KEY, GLOBEX_KEY, GLOBEX_KEY, GLOBEX_KEY] {
        statuses.push(get1(&sluice, "/api/x", &[("x-api-key", key)]).await.0.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
}

/// Signing keys made by openssl, their JWKS entries, and tokens signed with them.
struct Keys {
    dir: std::path::PathBuf,
}

impl Keys {
    fn make(dir: &std::path::Path) -> Keys {
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa-other.pem"]);
        run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
        run(&["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"]);
        Keys { dir: dir.to_path_buf() }
    }

    fn openssl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl").args(args).current_dir(&self.dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    }

    fn jwk(&self, kind: &str, kid: &str) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        match kind {
            "rsa" | "rsa-other" => {
                let text =
                    String::from_utf8(self.openssl(&["rsa", "-in", &format!("{kind}.pem"), "-noout", "-modulus"]))
                        .expect("text");
                let hex = text.trim().trim_start_matches("Modulus=");
                let n: Vec<u8> =
                    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
                format!("{{\"kty\":\"RSA\",\"kid\":\"{kid}\",\"use\":\"sig\",\"n\":\"{}\",\"e\":\"AQAB\"}}", b64(&n))
            }
            "ec" => {
                let der = self.openssl(&["pkey", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
                let point = &der[der.len() - 64..];
                format!(
                    "{{\"kty\":\"EC\",\"kid\":\"{kid}\",\"crv\":\"P-256\",\"x\":\"{}\",\"y\":\"{}\"}}",
                    b64(&point[..32]),
                    b64(&point[32..])
                )
            }
            _ => {
                let der = self.openssl(&["pkey", "-in", "ed.pem", "-pubout", "-outform", "DER"]);
                format!(
                    "{{\"kty\":\"OKP\",\"kid\":\"{kid}\",\"crv\":\"Ed25519\",\"x\":\"{}\"}}",
                    b64(&der[der.len() - 32..])
                )
            }
        }
    }

    fn token(&self, kind: &str, kid: &str, claims: serde_json::Value) -> String {
        let pem = std::fs::read(self.dir.join(format!("{kind}.pem"))).expect("pem");
        let (alg, key) = match kind {
            "rsa" | "rsa-other" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).expect("rsa key")),
            "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).expect("ec key")),
            _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).expect("ed key")),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        encode(&header, &claims, &key).expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_secs()
}

fn claims(sub: &str, exp_from_now: i64) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "iss": "https://issuer.test", "aud": "orders",
        "exp": (now() as i64 + exp_from_now), "tenant": "t-7", "roles": ["read", "write"],
    })
}

fn jwt_config(upstream: &Upstream, jwks: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [auth.users]\nkind = \"jwt\"\n{jwks}\nissuer = \"https://issuer.test\"\naudience = [\"orders\"]\n\
         identity_header = \"X-User\"\nclaim_headers = {{ tenant = \"X-Tenant\", roles = \"X-Roles\" }}\n\
         [auth.shared]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nhs256_secret_file = \"hs.secret\"\n\
         [[route]]\npath_prefix = \"/hs\"\nupstream = \"api\"\nauth = \"shared\"\n\
         [[route]]\npath_prefix = \"/api\"\nupstream = \"api\"\nauth = \"users\"\n\
         [upstream.api]\nendpoints = [\"{}\"]\n[access_log]\npath = \"access.log\"\n",
        upstream.addr
    )
}

const HS_SECRET: &str = "a-shared-secret-of-more-than-32-bytes!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_by_signature_time_issuer_and_audience() {
    let upstream = echo().await;
    let dir = TempDir::new();
    let keys = Keys::make(&dir.path);
    let jwks = format!("{{\"keys\": [{}, {}, {}]}}", keys.jwk("rsa", "r1"), keys.jwk("ec", "e1"), keys.jwk("ed", "d1"));
    std::fs::write(dir.path.join("jwks.json"), jwks).expect("jwks");
    std::fs::write(dir.path.join("hs.secret"), HS_SECRET).expect("secret");
    let sluice = start_in(dir, &jwt_config(&upstream, "jwks_file = \"jwks.json\""));
    let bearer = |token: &str| format!("Bearer {token}");

    for (kind, kid) in [("rsa", "r1"), ("ec", "e1"), ("ed", "d1")] {
        let token = keys.token(kind, kid, claims("alice", 300));
        let (parts, seen) = get1(
            &sluice,
            "/api/orders",
            &[("authorization", &bearer(&token)), ("x-user", "root"), ("x-tenant", "t-0")],
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK, "{kind}: {seen}");
        assert!(
            seen.contains("x-user: alice\n")
                && seen.contains("x-tenant: t-7\n")
                && seen.contains("x-roles: read,write\n"),
            "{seen}"
        );
        assert!(!seen.contains("root") && !seen.contains("t-0") && !seen.contains("authorization"), "{seen}");
    }
    // Within the 30 s leeway, and past it.
    let late = keys.token("ec", "e1", claims("alice", -10));
    assert_eq!(get1(&sluice, "/api/x", &[("authorization", &bearer(&late))]).await.0.status, StatusCode::OK);

    let mut not_yet = claims("alice", 300);
    not_yet["nbf"] = serde_json::json!(now() + 120);
    let mut wrong_iss = claims("alice", 300);
    wrong_iss["iss"] = serde_json::json!("https://evil.test");
    let mut wrong_aud = claims("alice", 300);
    wrong_aud["aud"] = serde_json::json!("billing");
    let hs_key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let refused = [
        (keys.token("rsa", "r1", claims("alice", -120)), "expired"),
        (keys.token("rsa", "r1", not_yet), "not_yet_valid"),
        (keys.token("ed", "d1", wrong_iss), "wrong_issuer"),
        (keys.token("ec", "e1", wrong_aud), "wrong_audience"),
        // Signed by a key the JWKS does not hold, under a kid it does.
        (keys.token("rsa-other", "r1", claims("alice", 300)), "bad_signature"),
        (keys.token("rsa", "r9", claims("alice", 300)), "unknown_key"),
        // HS256 is not this auth's: not even with the route's other secret.
        (
            encode(&Header::new(Algorithm::HS256), &claims("alice", 300), &hs_key).expect("sign"),
            "algorithm_not_allowed",
        ),
        ("not.a.token".to_string(), "malformed_token"),
    ];
    let mut ids = Vec::new();
    for (token, _) in &refused {
        let (parts, body) = get1(&sluice, "/api/x", &[("authorization", &bearer(token))]).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(field(&parts, "www-authenticate"), "Bearer realm=\"users\", error=\"invalid_token\"");
        assert_eq!(body, "401 Unauthorized: authentication required\n");
        ids.push(field(&parts, "x-request-id").to_string());
    }
    for ((_, reason), id) in refused.iter().zip(&ids) {
        assert_eq!(sluice.record(id)["auth"], *reason);
    }
    // No token: a challenge without an error code (RFC 6750 §3.1).
    let (none, _) = get1(&sluice, "/api/x", &[]).await;
    assert_eq!(field(&none, "www-authenticate"), "Bearer realm=\"users\"");
    let (basic, _) = get1(&sluice, "/api/x", &[("authorization", "Basic YWxpY2U6cHc=")]).await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);

    // HS256 where the auth asks for it, with its secret.
    let hs = encode(&Header::new(Algorithm::HS256), &claims("svc", 300), &hs_key).expect("sign");
    let (parts, _) = get1(&sluice, "/hs/x", &[("authorization", &bearer(&hs))]).await;
    assert_eq!(parts.status, StatusCode::OK);
    // HTTP/2 the same.
    let mut h2 = client::h2(sluice.addr).await;
    let token = keys.token("ed", "d1", claims("bob", 300));
    let request =
        Request::get("http://api.test/api/h2").header("authorization", bearer(&token)).body(full("")).expect("r");
    let (parts, body) = send2(&mut h2, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("x-user: bob\n"));
    assert_eq!(sluice.record(field(&parts, "x-request-id"))["identity"], "bob");
    let log = std::fs::read_to_string(sluice.dir.path.join("access.log")).expect("log");
    assert!(!log.contains(&token) && !log.contains(&hs), "a token in the access log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_off_the_request_path_and_again_for_a_new_kid_at_most_once_per_interval() {
    let upstream = echo().await;
    let dir = TempDir::new();
    let keys = Keys::make(&dir.path);
    std::fs::write(dir.path.join("hs.secret"), HS_SECRET).expect("secret");
    let served = Arc::new(Mutex::new(format!("{{\"keys\": [{}]}}", keys.jwk("rsa", "r1"))));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (text, count) = (Arc::clone(&served), Arc::clone(&fetches));
    let jwks_server = Upstream::start(move |_request: Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        let body = text.lock().expect("jwks").clone();
        async move { Response::new(full(body)) }
    })
    .await;
    let jwks = format!("jwks_url = \"http://{}/.well-known/jwks.json\"", jwks_server.addr);
    let sluice = start_in(dir, &jwt_config(&upstream, &jwks));
    // Fetched at start, before any request needs it.
    support::redis_deployments::wait_until("the JWKS fetched at start", || fetches.load(Ordering::SeqCst) >= 1);
    let bearer = |token: &str| format!("Bearer {token}");
    let token = keys.token("rsa", "r1", claims("alice", 300));
    assert_eq!(get1(&sluice, "/api/x", &[("authorization", &bearer(&token))]).await.0.status, StatusCode::OK);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // The issuer adds a key: a token with its kid makes sluice fetch the set again.
    *served.lock().expect("jwks") = format!("{{\"keys\": [{}, {}]}}", keys.jwk("rsa", "r1"), keys.jwk("ec", "e2"));
    let rotated = keys.token("ec", "e2", claims("carol", 300));
    let (parts, seen) = get1(&sluice, "/api/x", &[("authorization", &bearer(&rotated))]).await;
    assert_eq!(parts.status, StatusCode::OK, "{seen}");
    assert!(seen.contains("x-user: carol\n"));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // Unknown kids do not make a fetch each: at most one per 10 s.
    for _ in 0..20 {
        let forged = keys.token("rsa", "nope", claims("mallory", 300));
        assert_eq!(
            get1(&sluice, "/api/x", &[("authorization", &bearer(&forged))]).await.0.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "unknown kids within the interval fetched the JWKS again");
}

/// A token that passed is remembered (its signature is not checked again), but never
/// past its `exp`, and not once its key has left the issuer's JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_still_expires_and_goes_with_its_key() {
    let upstream = echo().await;
    let dir = TempDir::new();
    let keys = Keys::make(&dir.path);
    std::fs::write(dir.path.join("hs.secret"), HS_SECRET).expect("secret");
    let served = Arc::new(Mutex::new(format!("{{\"keys\": [{}, {}]}}", keys.jwk("rsa", "r1"), keys.jwk("ec", "e1"))));
    let text = Arc::clone(&served);
    let jwks_server = Upstream::start(move |_request: Request<hyper::body::Incoming>| {
        let body = text.lock().expect("jwks").clone();
        async move { Response::new(full(body)) }
    })
    .await;
    let jwks = format!("jwks_url = \"http://{}/jwks\"\njwks_refresh = \"1s\"\nleeway = \"0s\"", jwks_server.addr);
    let sluice = start_in(dir, &jwt_config(&upstream, &jwks));
    let bearer = |token: &str| format!("Bearer {token}");

    // Valid for two more seconds: accepted, remembered, then refused once the time is up.
    let short = keys.token("ec", "e1", claims("dora", 2));
    assert_eq!(get1(&sluice, "/api/x", &[("authorization", &bearer(&short))]).await.0.status, StatusCode::OK);
    assert_eq!(get1(&sluice, "/api/x", &[("authorization", &bearer(&short))]).await.0.status, StatusCode::OK);
    let refused = poll_until_refused(&sluice, &bearer(&short)).await;
    assert_eq!(sluice.record(&refused)["auth"], "expired");

    // The issuer drops r1: its token, remembered, is refused once sluice has the new set.
    let token = keys.token("rsa", "r1", claims("erin", 300));
    assert_eq!(get1(&sluice, "/api/x", &[("authorization", &bearer(&token))]).await.0.status, StatusCode::OK);
    *served.lock().expect("jwks") = format!("{{\"keys\": [{}]}}", keys.jwk("ec", "e1"));
    let refused = poll_until_refused(&sluice, &bearer(&token)).await;
    assert_eq!(sluice.record(&refused)["auth"], "unknown_key");
}

/// Sends the credential until sluice refuses it (within `support::WAIT`); the refused
/// request's id.
async fn poll_until_refused(sluice: &Sluice, authorization: &str) -> String {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let (parts, _) = get1(sluice, "/api/x", &[("authorization", authorization)]).await;
        if parts.status == StatusCode::UNAUTHORIZED {
            return field(&parts, "x-request-id").to_string();
        }
        assert!(std::time::Instant::now() < deadline, "still accepted after {:?}", support::WAIT);
        // Polling the clock and the issuer's set, which change on their own.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
