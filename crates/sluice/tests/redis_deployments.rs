//! The shared cache tier and the global rate limit on the Redis deployments people run
//! (issue 21 §2), all real redis-server processes started by the test: a 3-primary
//! Cluster (shared keys spread over its nodes; a primary killed under load costs no
//! client request), Sentinel (the tier comes back on the new primary after a failover,
//! without a restart), and TLS with an ACL user whose password is in a file (and never
//! shown by `/config`).

mod support;

use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use support::client::{self, send1};
use support::redis_deployments::{array_length, tls_with_acl, wait_until, Cluster, Sentinel};
use support::upstream::{full, Upstream};
use support::{Sluice, TempDir, WAIT};

/// An origin whose responses are fresh for an hour, tagged by their first segment.
async fn origin() -> Upstream {
    Upstream::start(|request: Request<hyper::body::Incoming>| async move {
        let path = request.uri().path().to_string();
        let tag = path.split('/').nth(1).unwrap_or("").to_string();
        let mut response = http::Response::new(full(path));
        response.headers_mut().insert("cache-control", "max-age=3600".parse().expect("value"));
        response.headers_mut().insert("surrogate-key", tag.parse().expect("tag"));
        response
    })
    .await
}

fn config(origin: &Upstream, redis: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\nupstream = \"up\"\ncache = true\n[upstream.up]\nendpoints = [\"{}\"]\n\
         [cache]\n[cache.redis]\ntimeout = \"500ms\"\n{redis}\n",
        origin.addr
    )
}

async fn ask(addr: std::net::SocketAddr, method: &str, path: &str) -> (StatusCode, String) {
    let mut conn = client::h1(addr).await;
    let request =
        Request::builder().method(method).uri(path).header("host", "cache.test").body(full("")).expect("request");
    let (parts, _) = send1(&mut conn, request).await;
    let status = parts.headers.get("cache-status").map(|v| v.to_str().expect("text").to_string()).unwrap_or_default();
    (parts.status, status)
}

/// Asks `addr` for `path` until the answer is a hit (the entry written to the shared
/// tier by another instance, off its request path, may take a moment).
async fn until_hit(addr: std::net::SocketAddr, path: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, cache) = ask(addr, "GET", path).await;
        assert_eq!(status, StatusCode::OK);
        if cache.contains("hit") {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never a hit: {cache}");
        tokio::time::sleep(Duration::from_millis(20)).await; // another process's write
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_entries_over_its_slots_and_losing_a_primary_costs_no_request() {
    let cluster = Cluster::start();
    let origin = origin().await;
    let redis = format!("url = \"{}\"\ncoalesce_lock = true", cluster.url());
    let (a, b) = (Sluice::start(&config(&origin, &redis)), Sluice::start(&config(&origin, &redis)));
    for i in 0..30 {
        assert!(ask(a.addr, "GET", &format!("/c/{i}")).await.1.contains("fwd=miss"));
    }
    wait_until("30 entries in the cluster", || cluster.keys_per_node("sluice:v2:*").iter().sum::<usize>() == 30);
    let spread = cluster.keys_per_node("sluice:v2:*");
    assert!(spread.iter().all(|&n| n > 0), "keys spread over every primary: {spread:?}");
    for i in 0..30 {
        until_hit(b.addr, &format!("/c/{i}")).await;
    }
    // A prefix purge walks every primary; a tag purge finds its set in its own slot.
    let (status, _) = ask(b.addr, "PURGE", "/c/*").await;
    assert_eq!(status, StatusCode::OK);
    wait_until("no entry left on any node", || cluster.keys_per_node("sluice:v2:*").iter().sum::<usize>() == 0);
    // The purge reaches A's memory by pub/sub (within the documented second): A misses.
    let since = Instant::now();
    while ask(a.addr, "GET", "/c/1").await.1.contains("hit") {
        assert!(since.elapsed() < Duration::from_secs(1), "the purge never reached A's memory");
        tokio::time::sleep(Duration::from_millis(10)).await; // another process's state
    }
    until_hit(b.addr, "/c/1").await;
    let mut purge = client::h1(b.addr).await;
    let request = Request::builder().method("PURGE").uri("/").header("host", "cache.test").header("surrogate-key", "c");
    send1(&mut purge, request.body(full("")).expect("request")).await;
    wait_until("the tagged entry gone", || cluster.keys_per_node("sluice:v2:*").iter().sum::<usize>() == 0);

    // Load on both instances while one primary is killed: every request answered.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let (stop, answered) = (stop.clone(), std::sync::Arc::clone(&answered));
            tokio::spawn(async move {
                let mut n = 0usize;
                while !*stop.borrow() {
                    let (status, _) = ask(addr, "GET", &format!("/load/{}", n % 40)).await;
                    assert_eq!(status, StatusCode::OK, "a client request failed while a primary died");
                    n += 1;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let answered_by = |n: usize| {
        let answered = std::sync::Arc::clone(&answered);
        async move {
            let deadline = Instant::now() + WAIT;
            while answered.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(10)).await; // the clients' count
            }
        }
    };
    answered_by(100).await;
    let mut cluster = cluster;
    cluster.nodes[0].kill();
    // Until a surviving node has given the cluster up (its node timeout is 1 s), and
    // then 200 more requests: the tier fails under the clients, who see nothing of it.
    let survivor = cluster.nodes[1].port;
    tokio::task::spawn_blocking(move || {
        let cluster_info = || {
            let mut out = std::process::Command::new("redis-cli");
            out.args(["-p", &survivor.to_string(), "CLUSTER", "INFO"]);
            out.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
        };
        wait_until("the cluster notices the lost primary", || cluster_info().contains("cluster_state:fail"));
    })
    .await
    .expect("probe");
    let after = answered.load(std::sync::atomic::Ordering::Relaxed);
    answered_by(after + 200).await;
    stop_tx.send(true).expect("stop");
    for client in clients {
        client.await.expect("client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_the_tier_works_on_the_new_primary_without_a_restart() {
    let mut deployment = Sentinel::start();
    let origin = origin().await;
    let redis = format!("url = \"{}\"", deployment.url());
    let (a, b) = (Sluice::start(&config(&origin, &redis)), Sluice::start(&config(&origin, &redis)));
    ask(a.addr, "GET", "/s/before").await;
    until_hit(b.addr, "/s/before").await;
    let old = deployment.primary.port;
    deployment.primary.kill();
    wait_until("the sentinel promotes the replica", || deployment.primary_port() == deployment.replica.port);
    assert_ne!(old, deployment.replica.port);
    // New entries reach the new primary, and the other instance hits them.
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    loop {
        i += 1;
        let path = format!("/s/after{i}");
        ask(a.addr, "GET", &path).await;
        tokio::time::sleep(Duration::from_millis(100)).await; // the write is off the request path
        if array_length(&deployment.replica.command(&format!("KEYS sluice:v2:*{path}"))) == 1 {
            until_hit(b.addr, &path).await;
            break;
        }
        assert!(Instant::now() < deadline, "no entry ever reached the new primary");
    }
    // A purge still reaches the other instance's memory (the subscription moved too).
    let path = format!("/s/after{i}");
    let (status, _) = ask(b.addr, "PURGE", &path).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + WAIT;
    while ask(a.addr, "GET", &path).await.1.contains("hit") {
        assert!(Instant::now() < deadline, "the purge never reached A after the failover: {}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await; // another process's state
    }
}

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
fn certificates(dir: &TempDir) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    let path = |name: &str| dir.path.join(name).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    std::fs::write(path("redis.pem"), leaf.pem()).expect("write");
    std::fs::write(path("redis.key"), key.serialize_pem()).expect("write");
    (path("redis.pem"), path("redis.key"), path("ca.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_an_acl_user_with_a_password_file_and_no_secret_in_config() {
    let dir = TempDir::new();
    let (certificate, key, ca) = certificates(&dir);
    let redis = tls_with_acl(&dir, &certificate, &key, &ca, "s3cret-from-file");
    let password_file = dir.path.join("redis.pass");
    std::fs::write(&password_file, "s3cret-from-file\n").expect("write");
    let origin = origin().await;
    let tier = format!(
        "url = \"rediss://app@127.0.0.1:{}\"\npassword_file = \"{}\"\nca_file = \"{ca}\"",
        redis.port,
        password_file.display()
    );
    let (a, b) = (Sluice::start(&config(&origin, &tier)), Sluice::start(&config(&origin, &tier)));
    ask(a.addr, "GET", "/tls/one").await;
    until_hit(b.addr, "/tls/one").await;
    // A purge travels over the same TLS link (pub/sub) to A's memory.
    ask(b.addr, "PURGE", "/tls/one").await;
    let deadline = Instant::now() + WAIT;
    while ask(a.addr, "GET", "/tls/one").await.1.contains("hit") {
        assert!(Instant::now() < deadline, "the purge never reached A over TLS");
        tokio::time::sleep(Duration::from_millis(20)).await; // another process's state
    }
    // The wrong password: clients are still served (memory only), and the log says why.
    std::fs::write(&password_file, "wrong\n").expect("write");
    let c = Sluice::start(&config(&origin, &tier));
    let (status, _) = ask(c.addr, "GET", "/tls/two").await;
    assert_eq!(status, StatusCode::OK);
    c.wait_for_log("shared cache tier failed");
    // Credentials in the URL are never shown by /config; the file's content is never read into it.
    let inline = format!("url = \"rediss://app:inline-s3cret@127.0.0.1:{}\"\nca_file = \"{ca}\"", redis.port);
    let d = Sluice::start(&config(&origin, &inline));
    let admin = d.admin.expect("admin");
    let mut conn = client::h1(admin).await;
    let (_, shown) =
        send1(&mut conn, Request::get("/config").header("host", "admin").body(full("")).expect("request")).await;
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.contains("rediss://<redacted>@127.0.0.1"), "{shown}");
    assert!(!shown.contains("inline-s3cret") && !shown.contains("s3cret-from-file"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_rate_limit_counts_in_a_cluster_for_two_instances() {
    let cluster = Cluster::start();
    let origin = origin().await;
    let limit = format!(
        "[rate_limit.shared]\nkey = [\"route\"]\nrate = \"5/m\"\nburst = 5\nscope = \"global\"\nredis = \"{}\"\ntimeout = \"500ms\"\n",
        cluster.url()
    );
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\nrate_limits = [\"shared\"]\n\
         [upstream.up]\nendpoints = [\"{}\"]\n{limit}",
        origin.addr
    );
    let (a, b) = (Sluice::start(&config), Sluice::start(&config));
    let mut admitted = 0;
    for i in 0..12 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let (status, _) = ask(addr, "GET", "/limited").await;
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    // A burst of 5 for both instances together (the next is 12 s away at 5 per minute).
    assert_eq!(admitted, 5, "one count in the cluster for both instances");
    assert_eq!(cluster.keys_per_node("*shared*").iter().sum::<usize>(), 1);
}
