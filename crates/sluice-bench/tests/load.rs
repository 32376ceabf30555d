//! `sluice bench` against real servers on 127.0.0.1: what it reports is what the server saw.

mod support;

use std::time::Duration;

use sluice_bench::failure::Failure;
use support::{bench, Behaviour, TestServer};

#[test]
fn http1_counts_match_what_the_server_saw() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["-c", "8", "-t", "2", "-n", "2000", &server.url("/count")]);
    let seen = server.seen();
    assert_eq!((report.responses, report.status_class(2), report.errors), (2000, 2000, 0));
    assert_eq!(seen.requests, 2000, "the server's count");
    assert_eq!(seen.connections, 8, "keep-alive: one connection per -c");
    assert_eq!((report.connections.opened, report.connections.peak_open), (8, 8));
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    assert_eq!(report.body_bytes, 2000 * "hello from the test server\n".len() as u64);
}

#[test]
fn http2_multiplexes_streams_over_few_connections() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["--http2", "-c", "2", "--streams", "8", "-t", "1", "-n", "1000", &server.url("/h2")]);
    let seen = server.seen();
    assert_eq!((report.responses, report.errors, seen.requests), (1000, 0, 1000));
    assert_eq!(seen.connections, 2, "2 connections carried 16 concurrent streams");
    assert_eq!(report.settings.protocol, "HTTP/2");
}

#[test]
fn no_keepalive_opens_a_connection_per_request() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["--no-keepalive", "-c", "4", "-t", "1", "-n", "200", &server.url("/")]);
    let seen = server.seen();
    assert_eq!((report.responses, seen.requests, seen.connections), (200, 200, 200));
    assert_eq!(report.connections.opened, 200);
}

#[test]
fn warmup_requests_are_sent_but_not_recorded() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["-c", "4", "-t", "1", "--warmup", "300ms", "-n", "500", &server.url("/")]);
    let seen = server.seen();
    assert_eq!(report.responses, 500);
    assert!(report.warmup_requests > 0, "some requests went out during the warm-up");
    assert_eq!(seen.requests, 500 + report.warmup_requests);
}

#[test]
fn fixed_rate_holds_within_two_percent() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["--rate", "2000", "-d", "3s", "-c", "16", "-t", "2", &server.url("/paced")]);
    let seen = server.seen();
    let expected = 6000.0;
    let within = |value: f64, target: f64| (value - target).abs() <= 0.02 * target;
    assert!(within(seen.requests as f64, expected), "server saw {} of {expected}", seen.requests);
    let (first, last) = (seen.first.expect("requests"), seen.last.expect("requests"));
    let server_rate = (seen.requests - 1) as f64 / last.duration_since(first).as_secs_f64();
    assert!(within(server_rate, 2000.0), "server saw {server_rate:.1} req/s");
    assert!(within(report.rate, 2000.0), "reported {:.1} req/s", report.rate);
    // Second by second, too: every whole second within 2% of the rate.
    for point in report.per_second.iter().take(3) {
        assert!(within(point.responses as f64, 2000.0), "second {}: {}", point.second, point.responses);
    }
}

/// A ramp: 500 → 2,500 req/s over 2 s, then held. Each second gets the requests the
/// integral of the rate gives (1,000, 2,000, 2,500), within 3%.
#[test]
fn a_rate_ramp_follows_its_timetable() {
    let server = TestServer::start(Behaviour::default());
    let report = bench(&["--rate", "500:2500 over 2s", "-d", "3s", "-c", "16", "-t", "2", &server.url("/ramp")]);
    assert_eq!(report.settings.rate_profile.as_deref(), Some("500:2500 over 2s"));
    assert_eq!(report.settings.rate, Some(2500.0), "the peak");
    let within = |value: f64, target: f64| (value - target).abs() <= 0.03 * target;
    for (point, expected) in report.per_second.iter().zip([1000.0, 2000.0, 2500.0]) {
        assert!(within(point.responses as f64, expected), "second {}: {} of {expected}", point.second, point.responses);
    }
    assert!(within(report.requests as f64, 5500.0), "{} requests", report.requests);
}

/// A server that stalls for one second once. Open loop (latency from the due time) shows the
/// stall in p99; a closed loop, as wrk measures, records only one slow sample per
/// connection and its p99 stays low.
#[test]
fn a_one_second_stall_shows_in_open_loop_p99_and_hides_in_closed_loop() {
    let stall = Behaviour { stall_after: Some((1000, Duration::from_secs(1))), ..Behaviour::default() };
    let server = TestServer::start(stall.clone());
    let open = bench(&["--rate", "1000", "-d", "4s", "-c", "8", "-t", "1", &server.url("/")]);
    assert_eq!(open.errors, 0);
    assert!(open.latency_ms.max >= 900.0, "the stall happened: max {} ms", open.latency_ms.max);
    assert!(open.latency_ms.p99 >= 500.0, "open loop p99 {} ms must show the 1 s stall", open.latency_ms.p99);
    // ~1,000 requests fell due while all 8 connections waited: reported as sent late.
    assert!(open.late_requests >= 500, "late: {}", open.late_requests);

    let server = TestServer::start(stall);
    let closed = bench(&["-c", "8", "-t", "1", "-d", "4s", &server.url("/")]);
    assert!(closed.latency_ms.max >= 900.0, "the stall happened: max {} ms", closed.latency_ms.max);
    assert!(closed.responses > 20_000, "closed loop ran fast: {}", closed.responses);
    assert!(closed.latency_ms.p99 < 100.0, "closed loop hides the stall: p99 {} ms", closed.latency_ms.p99);
    eprintln!(
        "stall of 1 s: open loop p99 {} ms ({} late); closed loop p99 {} ms, max {} ms, {} responses",
        open.latency_ms.p99, open.late_requests, closed.latency_ms.p99, closed.latency_ms.max, closed.responses
    );
}

#[test]
fn failures_are_counted_by_kind_and_the_run_goes_on() {
    // Refused: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let report = bench(&["-c", "2", "-t", "1", "-n", "20", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!((report.failures_of(Failure::Refused), report.responses), (20, 0));

    // Status classes.
    let server = TestServer::start(Behaviour { status: Some(503), ..Behaviour::default() });
    let report = bench(&["-c", "2", "-t", "1", "-n", "50", &server.url("/")]);
    assert_eq!((report.status_class(5), report.status_class(2)), (50, 0));

    // DNS: a name that cannot resolve, beside one that does (when none resolves, the
    // run stops before it starts: tests/bench_cli.rs in the sluice crate).
    let report = bench(&["-c", "2", "-t", "1", "-n", "4", &server.url("/"), "http://no-such-host.invalid/"]);
    let dns = report.failures_of(Failure::Dns);
    assert!(
        dns >= 1 && report.responses >= 1 && dns + report.responses == 4,
        "{dns} DNS failures, {} responses",
        report.responses
    );
}

#[test]
fn timeouts_and_closed_connections_are_told_apart() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let silent = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let closing = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let (silent_addr, closing_addr) = (silent.local_addr().expect("addr"), closing.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        runtime.block_on(async move {
            use tokio::io::AsyncReadExt;
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = silent.accept() => held.push(stream), // never answers
                    Ok((mut stream, _)) = closing.accept() => {
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf).await; // reads the request, then closes
                    }
                }
                if held.len() >= 4 {
                    break;
                }
            }
            held
        })
    });
    let report = bench(&["-c", "2", "-t", "1", "-n", "6", &format!("http://{closing_addr}/")]);
    assert_eq!(report.failures_of(Failure::Closed), 6, "{:?}", report.failures);
    let report = bench(&["-c", "2", "-t", "1", "-n", "4", "--timeout", "200ms", &format!("http://{silent_addr}/")]);
    assert_eq!(report.failures_of(Failure::Timeout), 4, "{:?}", report.failures);
    assert!(handle.join().is_ok());
}

#[test]
fn request_file_and_several_urls_are_sent_in_turn() {
    let server = TestServer::start(Behaviour { keep_requests: true, ..Behaviour::default() });
    let dir = std::env::temp_dir().join(format!("sluice-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("requests.txt");
    let lines = format!(
        "# orders API\n{}\nDELETE {}\n{{\"method\": \"PUT\", \"url\": \"{}\", \"body\": \"{{\\\"n\\\": 1}}\"}}\n",
        server.url("/a"),
        server.url("/b"),
        server.url("/c")
    );
    std::fs::write(&file, lines).expect("write");
    let report = bench(&[
        "-c",
        "1",
        "-t",
        "1",
        "-n",
        "400",
        "-m",
        "POST",
        "-b",
        "hi",
        &server.url("/u"),
        "-f",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(report.responses, 400);
    let log = server.seen().log;
    let count = |method: &str, path: &str, body: &str| {
        log.iter().filter(|(m, p, b)| m == method && p == path && b == body).count()
    };
    assert_eq!(count("POST", "/u", "hi"), 100, "the URL with -m and -b");
    assert_eq!(count("GET", "/a", ""), 100);
    assert_eq!(count("DELETE", "/b", ""), 100);
    assert_eq!(count("PUT", "/c", "{\"n\": 1}"), 100);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_with_alpn_for_both_protocols() {
    let (config, cert_pem) = support::tls_server();
    let server = TestServer::start_with_tls(Behaviour::default(), Some(config));
    let dir = std::env::temp_dir().join(format!("sluice-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert_pem).expect("write");
    let url = format!("https://localhost:{}/secure", server.addr.port());
    let ca = ca.to_str().expect("utf-8");

    let report = bench(&["-c", "2", "-t", "1", "-n", "100", "--cacert", ca, &url]);
    assert_eq!((report.status_class(2), report.errors), (100, 0));
    let report = bench(&["--http2", "--streams", "4", "-c", "1", "-t", "1", "-n", "100", "--cacert", ca, &url]);
    assert_eq!((report.status_class(2), report.errors), (100, 0));
    let report = bench(&["-c", "1", "-t", "1", "-n", "10", "--insecure", &url]);
    assert_eq!(report.status_class(2), 10);
    // Without trusting the certificate: every attempt is a TLS failure.
    let report = bench(&["-c", "1", "-t", "1", "-n", "3", &url]);
    assert_eq!(report.failures_of(Failure::Tls), 3, "{:?}", report.failures);
    // ... and the report says why, not only how often.
    let why = &report.failure_samples["tls"];
    assert!(why.iter().any(|m| m.contains("UnknownIssuer")), "{why:?}");
    assert_eq!(server.seen().connections, 2 + 1 + 1 + 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http2_sends_request_bodies_larger_than_a_flow_control_window() {
    let server = TestServer::start(Behaviour { keep_requests: true, ..Behaviour::default() });
    let body = "b".repeat(200_000); // over HTTP/2's 64 KiB default window
    let url = server.url("/upload");
    let report =
        bench(&["--http2", "--streams", "4", "-c", "1", "-t", "1", "-n", "20", "-m", "POST", "-b", &body, &url]);
    assert_eq!((report.status_class(2), report.errors), (20, 0), "{:?}", report.failures);
    let log = server.seen().log;
    assert_eq!(log.len(), 20);
    assert!(log.iter().all(|(method, path, received)| method == "POST" && path == "/upload" && *received == body));
}
