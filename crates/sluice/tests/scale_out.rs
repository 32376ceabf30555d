//! Three sluice instances behind a real HAProxy in TCP mode, sharing one redis-server,
//! over three origins (issue 21 §§3-4): a response fetched once is a hit on all three;
//! a PURGE at one reaches all; killing one instance under load costs only the requests
//! it had in flight; killing Redis costs none; a drain (SIGTERM) of one costs none, for
//! HTTP/1 and HTTP/2 clients.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use support::client::{self, send1};
use support::haproxy::Haproxy;
use support::stores::Store;
use support::upstream::{full, Upstream};
use support::{Sluice, TempDir, WAIT};

/// Three origins: `/cached/*` fresh for an hour, anything else uncached, each 2 ms.
async fn origins() -> Vec<Upstream> {
    let mut origins = Vec::new();
    for _ in 0..3 {
        origins.push(
            Upstream::start(|request: Request<hyper::body::Incoming>| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let path = request.uri().path().to_string();
                let cached = path.starts_with("/cached/");
                let mut response = http::Response::new(full(path));
                let control = if cached { "max-age=3600" } else { "no-store" };
                response.headers_mut().insert("cache-control", control.parse().expect("value"));
                response
            })
            .await,
        );
    }
    origins
}

struct Fleet {
    instances: Vec<Sluice>,
    haproxy: Haproxy,
    redis: Store,
    _origins: Vec<Upstream>,
    _dir: TempDir,
}

impl Fleet {
    /// The instances' config is one file, as a Deployment's ConfigMap would be.
    async fn start() -> Fleet {
        let redis = Store::redis();
        let origins = origins().await;
        let endpoints: Vec<String> = origins.iter().map(|o| format!("\"{}\"", o.addr)).collect();
        let config = format!(
            "[server]\ndrain_timeout = \"10s\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"auto\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [[route]]\nupstream = \"up\"\ncache = true\n[upstream.up]\nendpoints = [{}]\n\
             [cache]\n[cache.redis]\nurl = \"{}\"\ntimeout = \"100ms\"\n",
            endpoints.join(", "),
            redis.url()
        );
        let instances: Vec<Sluice> = (0..3).map(|_| Sluice::start(&config)).collect();
        let servers: Vec<SocketAddr> = instances.iter().map(|s| s.addr).collect();
        let haproxy = Haproxy::tcp(&servers);
        Fleet { instances, haproxy, redis, _origins: origins, _dir: TempDir::new() }
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, String) {
    ask(addr, method, path, &[]).await
}

async fn ask(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut conn = client::h1(addr).await;
    let mut request = Request::builder().method(method).uri(path).header("host", "api.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(full("")).expect("request");
    let (parts, _) = send1(&mut conn, request).await;
    let status = parts.headers.get("cache-status").map(|v| v.to_str().expect("text").to_string()).unwrap_or_default();
    (parts.status, status)
}

/// What a load run saw: requests answered 200, and failed ones per client.
struct Load {
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<usize>>,
}

impl Load {
    /// `clients` closed-loop clients through `addr`, each on a keep-alive connection it
    /// makes again when the server closes it, as real clients do: a request the client
    /// never sent (the connection was already closing: hyper says "canceled") is sent
    /// on a new connection; a request sent and not answered 200 is a failure.
    fn start(addr: SocketAddr, clients: usize, http2: bool) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (answered, stop) = (Arc::clone(&answered), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut failed = 0;
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        failed += if http2 {
                            one_connection_h2(addr, c, &mut i, &answered, &stop).await
                        } else {
                            one_connection_h1(addr, c, &mut i, &answered, &stop).await
                        };
                    }
                    failed
                })
            })
            .collect();
        Load { answered, stop, clients }
    }

    /// Waits until `more` requests were answered since the call.
    async fn answered(&self, more: usize) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + WAIT;
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(10)).await; // the clients' count
        }
    }

    /// Stops the clients: each one's failed requests.
    async fn stop(self) -> Vec<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failed = Vec::new();
        for client in self.clients {
            failed.push(client.await.expect("client"));
        }
        failed
    }
}

fn path(client: usize, i: usize) -> String {
    // Half cached (100 URLs shared by every client), half passed to the origins.
    if i.is_multiple_of(2) {
        format!("/cached/{}", (client * 7 + i) % 100)
    } else {
        format!("/api/{client}/{i}")
    }
}

/// Requests on one HTTP/1.1 connection until it closes: failures (0 or 1).
async fn one_connection_h1(
    addr: SocketAddr,
    c: usize,
    i: &mut usize,
    answered: &AtomicUsize,
    stop: &AtomicBool,
) -> usize {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(conn);
    while !stop.load(Ordering::Relaxed) {
        if sender.ready().await.is_err() {
            return 0; // closed between requests, as the server said: a new connection
        }
        let request = Request::get(path(c, *i)).header("host", "api.test").body(full("")).expect("request");
        let response = match tokio::time::timeout(WAIT, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_canceled() => return 0, // never sent
            Ok(Err(e)) => {
                eprintln!("client {c}: {e:?}");
                return 1;
            }
            Err(_) => return 1,
        };
        let closing = response.headers().get("connection").is_some_and(|v| v == "close");
        let (parts, _) = client::read(response).await;
        if parts.status != StatusCode::OK {
            eprintln!("client {c}: {}", parts.status);
            return 1;
        }
        answered.fetch_add(1, Ordering::Relaxed);
        *i += 1;
        if closing {
            return 0;
        }
    }
    0
}

/// The same on one HTTP/2 connection (h2c through HAProxy's TCP mode).
async fn one_connection_h2(
    addr: SocketAddr,
    c: usize,
    i: &mut usize,
    answered: &AtomicUsize,
    stop: &AtomicBool,
) -> usize {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let executor = hyper_util::rt::TokioExecutor::new();
    let Ok((mut sender, conn)) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(conn);
    while !stop.load(Ordering::Relaxed) {
        if sender.ready().await.is_err() {
            return 0; // GOAWAY or closed: a new connection
        }
        let request = Request::get(format!("http://api.test{}", path(c, *i))).body(full("")).expect("request");
        let response = match tokio::time::timeout(WAIT, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            // Refused by a GOAWAY before the server took it (REFUSED_STREAM, or sent
            // after the GOAWAY arrived): never processed, sent again elsewhere.
            Ok(Err(e)) if e.is_canceled() || refused(&e) => return 0,
            Ok(Err(e)) => {
                eprintln!("client {c}: {e:?}");
                return 1;
            }
            Err(_) => return 1,
        };
        let (parts, _) = client::read(response).await;
        if parts.status != StatusCode::OK {
            eprintln!("client {c}: {}", parts.status);
            return 1;
        }
        answered.fetch_add(1, Ordering::Relaxed);
        *i += 1;
    }
    0
}

fn refused(error: &hyper::Error) -> bool {
    use std::error::Error;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away();
        }
        source = cause.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_fetched_once_is_a_hit_on_all_three_and_a_purge_at_one_reaches_all() {
    let fleet = Fleet::start().await;
    let [a, b, c] = [fleet.instances[0].addr, fleet.instances[1].addr, fleet.instances[2].addr];
    assert!(get(a, "GET", "/cached/one").await.1.contains("fwd=miss"));
    let deadline = Instant::now() + WAIT;
    while fleet.redis.command("DBSIZE").trim() == ":0" {
        assert!(Instant::now() < deadline, "the entry never reached Redis");
        tokio::time::sleep(Duration::from_millis(10)).await; // another process's write
    }
    for instance in [b, c] {
        assert!(get(instance, "GET", "/cached/one").await.1.contains("hit"), "a hit at every instance");
    }
    // Through the balancer, on new connections (round robin over all three): hits.
    for _ in 0..9 {
        assert!(get(fleet.haproxy.addr, "GET", "/cached/one").await.1.contains("hit"));
    }
    // Looked at with only-if-cached: a miss answers 504 and fetches nothing, so the
    // polling itself stores nothing back.
    let only_cached = [("cache-control", "only-if-cached")];
    for instance in [a, b, c] {
        assert_eq!(ask(instance, "GET", "/cached/one", &only_cached).await.0, StatusCode::OK);
    }
    let (status, _) = get(b, "PURGE", "/cached/one").await;
    assert_eq!(status, StatusCode::OK);
    let since = Instant::now();
    for instance in [a, b, c] {
        while ask(instance, "GET", "/cached/one", &only_cached).await.0 == StatusCode::OK {
            assert!(since.elapsed() < Duration::from_secs(1), "the purge at B did not reach every instance in 1 s");
            tokio::time::sleep(Duration::from_millis(10)).await; // another process's state
        }
    }
    eprintln!("a purge at one of three reached all within {:?}", since.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_instance_under_load_costs_only_the_requests_it_had_in_flight() {
    let mut fleet = Fleet::start().await;
    let load = Load::start(fleet.haproxy.addr, 24, false);
    load.answered(600).await;
    fleet.instances[1].kill();
    load.answered(1_500).await; // the others carry on
    let failed = load.stop().await;
    let total: usize = failed.iter().sum();
    eprintln!("killed one of three: {total} failed requests over 24 clients ({failed:?})");
    // What was in flight on the killed instance: each client's request there, and at
    // most one more whose connection the dying process's listener took into its backlog
    // before the kernel closed it (HAProxy's check marks it down within 100 ms). A
    // third of the clients were on it: 8 of 24 lost exactly one in most runs; in some,
    // two or three of them lost a second one (9-11 in all).
    assert!(failed.iter().all(|&f| f <= 2), "a client lost more than what was in flight: {failed:?}");
    assert!(total <= 24 / 3 * 2, "{total} failed: more than the killed instance's clients could have had in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_costs_no_request() {
    let mut fleet = Fleet::start().await;
    let load = Load::start(fleet.haproxy.addr, 24, false);
    load.answered(600).await;
    fleet.redis.kill();
    load.answered(1_500).await;
    let failed: usize = load.stop().await.iter().sum();
    assert_eq!(failed, 0, "requests failed when Redis died");
}

/// SIGTERM to one instance under load through the balancer: no request fails, and the
/// instance exits 0 once its connections have moved.
async fn a_drain_is_invisible(http2: bool) {
    let mut fleet = Fleet::start().await;
    let load = Load::start(fleet.haproxy.addr, 24, http2);
    load.answered(600).await;
    fleet.instances[0].terminate();
    load.answered(1_500).await;
    let status = fleet.instances[0].wait_exit();
    let failed: usize = load.stop().await.iter().sum();
    assert_eq!(failed, 0, "requests failed during the drain (http2: {http2})");
    assert!(status.success(), "the drained instance exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_of_one_instance_fails_no_http1_request() {
    a_drain_is_invisible(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_of_one_instance_fails_no_http2_request() {
    a_drain_is_invisible(true).await;
}
