//! The process and its sockets: FD exhaustion, the connection cap, client timeouts,
//! graceful drain on SIGTERM, and config errors.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client::{self, get, send1};
use support::upstream::{full, Upstream};
use support::{one_worker, simple_config, Sluice, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// Opens `n` client connections and sends one GET on each; responses arrive on the channel
/// tagged with the connection's index, and each connection is handed back for reuse.
async fn open_and_request(
    addr: std::net::SocketAddr,
    n: usize,
) -> mpsc::UnboundedReceiver<(usize, StatusCode, hyper::client::conn::http1::SendRequest<support::upstream::TestBody>)>
{
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let stream = TcpStream::connect(addr).await.expect("connect (kernel backlog)");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut conn = client::h1_over(stream).await;
            let (parts, _) = send1(&mut conn, get("/")).await;
            let _ = tx.send((i, parts.status, conn));
        });
    }
    rx
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_fd_table_pauses_accepting_without_spinning_or_dropping_connections() {
    let upstream = Upstream::hello().await;
    // A warm pool: its upstream connections are open before the flood takes every
    // descriptor (a connect under EMFILE would fail the request with a 502). One worker:
    // with two, the cap of 4 is shared and the second worker would have to connect.
    let pool = "pool = { max_connections = 4, max_idle = 4, min_idle = 4 }";
    let config = one_worker(&simple_config(&[upstream.addr], pool)) + "[admin]\naddress = \"127.0.0.1:0\"\n";
    let sluice = Sluice::start_with(&config, Some(48));
    sluice.wait_for_log("file descriptors: 48 available");
    upstream.wait_accepted(4).await;
    let total = 80;
    let mut responses = open_and_request(sluice.addr, total).await;
    sluice.wait_for_log("out of file descriptors");

    // The connections sluice did accept are served, and keep being served.
    let mut served = Vec::new();
    while served.len() < 10 {
        let (i, status, conn) =
            tokio::time::timeout(WAIT, responses.recv()).await.expect("a response").expect("channel");
        assert_eq!(status, StatusCode::OK);
        served.push((i, conn));
    }
    let cpu_before = sluice.cpu_time();
    let window = Instant::now();
    for (_, conn) in served.iter_mut() {
        let (parts, body) = send1(conn, get("/again")).await;
        assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"hello GET /again"[..]));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // a measurement window while accept() keeps failing
    let cpu = sluice.cpu_time() - cpu_before;
    let elapsed = window.elapsed();
    assert!(cpu < elapsed / 2, "the accept loop must not spin: {cpu:?} CPU in {elapsed:?}");

    // Closing connections frees descriptors; every waiting client is then served.
    let mut done = served.len();
    drop(served);
    while done < total {
        let (_, status, conn) = tokio::time::timeout(WAIT, responses.recv())
            .await
            .expect("every client is served eventually")
            .expect("channel");
        assert_eq!(status, StatusCode::OK);
        drop(conn);
        done += 1;
    }
    let log = sluice.log();
    let warnings = log.matches("out of file descriptors").count();
    assert!(warnings < 30, "EMFILE logging is rate-limited, got {warnings} lines");
    // The metrics count every failed accept, though the log is rate-limited.
    let (_, page) = support::client::get_once(sluice.admin.expect("admin"), "/metrics").await;
    let page = String::from_utf8_lossy(&page);
    let failed: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("sluice_accept_errors_total{kind=\"fd_exhausted\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the accept error metric");
    assert!(failed as usize >= warnings, "{failed} failed accepts counted, {warnings} logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_max_connections_new_clients_wait_in_the_backlog() {
    // The two connections at the cap are busy (their responses held by the upstream),
    // so neither can be closed to make room: the third waits until one goes. (Idle ones
    // would be closed for it: hostile_heads.rs tests that.)
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = Arc::clone(&release);
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.expect("open").forget();
            Response::new(full("held"))
        }
    })
    .await;
    let config = format!("[server]\nmax_connections = 2\n{}", simple_config(&[upstream.addr], ""));
    let sluice = Sluice::start(&config);
    let mut responses = open_and_request(sluice.addr, 2).await;
    upstream.wait_accepted(2).await;
    let mut third = open_and_request(sluice.addr, 1).await;
    sluice.wait_for_log("the new connection waits for a place");
    release.add_permits(2);
    let (first, _, first_conn) =
        tokio::time::timeout(WAIT, responses.recv()).await.expect("response").expect("channel");
    let (second, _, second_conn) =
        tokio::time::timeout(WAIT, responses.recv()).await.expect("response").expect("channel");
    assert_ne!(first, second);
    let waiting = tokio::time::timeout(Duration::from_millis(300), third.recv()).await;
    assert!(waiting.is_err(), "a third connection is not served while two are open");
    drop(first_conn);
    release.add_permits(1);
    let (_, status, _) =
        tokio::time::timeout(WAIT, third.recv()).await.expect("served after a slot frees").expect("channel");
    assert_eq!(status, StatusCode::OK);
    drop(second_conn);
}

/// A one-route config with the given header-read and keep-alive timeouts.
fn with_timeouts(upstream: std::net::SocketAddr, header_read: &str, keepalive: &str) -> String {
    let server = format!("[server]\nheader_read_timeout = \"{header_read}\"\nkeepalive_timeout = \"{keepalive}\"\n");
    server + &simple_config(&[upstream], "")
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_and_idle_keepalive_are_closed_on_their_own_timeouts() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&with_timeouts(upstream.addr, "300ms", "1s"));

    // A slowloris client: half a request head, then nothing.
    let mut slow = TcpStream::connect(sluice.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut answer)).await.expect("closed in time").expect("read");
    let waited = started.elapsed();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "), "{}", String::from_utf8_lossy(&answer));
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "header timeout after {waited:?}");

    // A keep-alive client that goes quiet after a response: closed after keepalive_timeout,
    // not after the shorter header timeout.
    let mut idle = TcpStream::connect(sluice.addr).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    support::read_until(&mut idle, "hello GET /").await;
    let started = Instant::now();
    let n = tokio::time::timeout(WAIT, idle.read(&mut [0u8; 64])).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "idle timeout after {waited:?}");
}

/// A request head that fills sluice's 4 KiB read buffer exactly leaves the socket
/// marked readable with nothing to read; the connection must still count as idle
/// (keep-alive timeout, no buffer), not as a slow request head (408).
#[tokio::test(flavor = "multi_thread")]
async fn a_head_that_fills_the_read_buffer_exactly_leaves_the_connection_idle() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&with_timeouts(upstream.addr, "300ms", "1500ms"));
    let mut head = String::from("GET /exact HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    let pad = 4096 - head.len() - 4;
    head.push_str(&"p".repeat(pad));
    head.push_str("\r\n\r\n");
    assert_eq!(head.len(), 4096);
    let mut stream = TcpStream::connect(sluice.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    support::read_until(&mut stream, "hello GET /exact").await;
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("closed in time").expect("read");
    let waited = started.elapsed();
    assert!(rest.is_empty(), "an idle connection gets no 408: {}", String::from_utf8_lossy(&rest));
    assert!(waited >= Duration::from_millis(1200), "closed after {waited:?}, before keepalive_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (arrived_tx, release_rx) = (Arc::clone(&arrived), Arc::clone(&release));
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let (arrived, release) = (Arc::clone(&arrived_tx), Arc::clone(&release_rx));
        async move {
            arrived.notify_one();
            release.notified().await;
            Response::new(full("finished after SIGTERM"))
        }
    })
    .await;
    let mut sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let addr = sluice.addr;
    let in_flight = tokio::spawn(async move { client::get_once(addr, "/slow").await });
    arrived.notified().await;

    sluice.terminate();
    sluice.wait_for_log("listeners closed");
    assert!(TcpStream::connect(addr).await.is_err(), "no new connections after SIGTERM");
    release.notify_one();
    let (parts, body) = in_flight.await.expect("client");
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "finished after SIGTERM");
    let status = tokio::task::spawn_blocking(move || sluice.wait_exit()).await.expect("wait");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn check_lists_every_problem_with_file_line_and_key() {
    let dir = support::TempDir::new();
    std::fs::write(dir.path.join("cert.pem"), "not a certificate\n").expect("write");
    std::fs::write(dir.path.join("key.pem"), "not a key\n").expect("write");
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "everything.toml",
            "[server]\nmax_conections = 10\nkeepalive_timeout = 60\n\n[[listener]]\naddress = \"localhost:80\"\ntls = { certificate = \"cert.pem\", key = \"key.pem\" }\n\n[[route]]\nupstream = \"api\"\n",
            &[
                ":2: server.max_conections: unknown key `max_conections`; did you mean `max_connections`?",
                ":3: server.keepalive_timeout:",
                ":6: listener[0].address:",
                ":7: listener[0].tls.certificate:",
                ":7: listener[0].tls.key:",
                ":10: route[0].upstream:",
            ],
        ),
        ("typo.toml", "[server]\nmax_conections = 10\n", &[":2: server.max_conections: unknown key"]),
        ("duration.toml", "[server]\n\nkeepalive_timeout = \"ten seconds\"\n", &[":3: server.keepalive_timeout:"]),
        (
            "semantic.toml",
            "[[listener]]\naddress = \"localhost:80\"\n\n[[route]]\nupstream = \"api\"\n\n[upstream.web]\nendpoints = [\"10.0.0.1\"]\n",
            &[":2: listener[0].address:", ":5: route[0].upstream: no upstream named \"api\" (defined: web)", ":8: upstream.web.endpoints[0]:"],
        ),
        ("syntax.toml", "[[listener]\naddress = 1\n", &[":1:"]),
        (
            "listeners.toml",
            "[[listener]]\naddress = \"127.0.0.1:8080\"\n[[listener]]\naddress = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"up\"\ntimeout = \"0s\"\n[upstream.up]\nendpoints = [\"127.0.0.1:9\"]\n",
            &[":4: listener.address: 127.0.0.1:8080 is already used", ":7: route[0].timeout: must be longer than 0"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path.join(name);
        std::fs::write(&path, text).expect("write");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run check");
        assert_eq!(output.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needle in expected {
            assert!(
                stderr.contains(&format!("{}{needle}", path.display())),
                "{name}: expected {needle:?} in:\n{stderr}"
            );
        }
    }
    let good = dir.path.join("good.toml");
    std::fs::write(&good, simple_config(&["127.0.0.1:9".parse().expect("addr")], "")).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg("--config")
        .arg(&good)
        .output()
        .expect("run check");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Valid, but a route hides another and an upstream is unused: ok, with warnings.
    let warned = dir.path.join("warned.toml");
    let text = simple_config(&["127.0.0.1:9".parse().expect("addr")], "")
        + "\n[[route]]\npath_prefix = \"/api\"\nupstream = \"up\"\n\n[upstream.spare]\nendpoints = [\"127.0.0.1:10\"]\n";
    std::fs::write(&warned, text).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg("--config")
        .arg(&warned)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("warning: route[1]: can never match"), "{stdout}");
    assert!(stdout.contains("warning: upstream.spare: no route sends requests to it"), "{stdout}");
}
