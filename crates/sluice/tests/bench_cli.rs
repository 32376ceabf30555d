//! `sluice bench` as a user runs it: the binary, its table, progress, JSON, plot and
//! comparison, its FD budget, and its errors for bad input.

mod support;

use std::process::{Command, Output};

use support::upstream::Upstream;
use support::TempDir;

/// Runs `sluice bench ARGS` (under `prlimit --nofile=N:N` when given) off the async runtime.
async fn sluice_bench(args: Vec<String>, nofile: Option<u64>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = support::sluice_command(nofile);
        command.arg("bench").args(&args).output().expect("run sluice bench")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_plot_and_compare() {
    let upstream = Upstream::hello().await;
    let url = format!("http://{}/api", upstream.addr);
    let dir = TempDir::new();
    let svg = dir.path.join("a.svg");
    let a = sluice_bench(
        args(&["-n", "300", "-c", "4", "-t", "1", "--json", "--plot", svg.to_str().expect("utf-8"), &url]),
        None,
    )
    .await;
    assert!(a.status.success(), "{}", text(&a.stderr));
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).expect("stdout is JSON");
    assert_eq!(report["responses"], 300);
    assert_eq!(report["status"]["2xx"], 300);
    assert_eq!(report["connections"]["opened"], 4);
    assert_eq!(upstream.accepted(), 4);
    let p99 = report["latency_ms"]["p99"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 <= report["latency_ms"]["max"].as_f64().expect("max"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let started = report["started_unix_s"].as_f64().expect("start time");
    assert!(started <= now && now - started < 60.0, "started {started}, now {now}");
    // Each second's p99 (a short run's last partial second under 250 ms is left out).
    let over_time = dir.path.join("c.svg");
    let timed = sluice_bench(
        args(&["-d", "2s", "-c", "2", "-t", "1", "--json", "--plot", over_time.to_str().expect("utf-8"), &url]),
        None,
    )
    .await;
    let timed: serde_json::Value = serde_json::from_slice(&timed.stdout).expect("JSON");
    let plot = std::fs::read_to_string(&over_time).expect("plot written");
    assert_eq!(plot.matches("<polyline").count(), 3, "p99 over time is the third chart");
    assert!(plot.contains("p99 latency per second"), "{plot}");
    let seconds = timed["latency_per_second"].as_array().expect("p99 per second");
    assert!(seconds.len() >= 2, "{seconds:?}");
    assert!(seconds.iter().all(|s| s["p99_ms"].as_f64().is_some_and(|p| p > 0.0)), "{seconds:?}");
    let answered: u64 = seconds.iter().map(|s| s["responses"].as_u64().unwrap_or(0)).sum();
    assert!(answered > 0 && answered <= timed["responses"].as_u64().unwrap_or(0), "{seconds:?}");

    let plot = std::fs::read_to_string(&svg).expect("plot written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"), "an SVG document");
    let timed_seconds = report["latency_per_second"].as_array().map_or(0, |s| s.len());
    let charts = if timed_seconds > 0 { 3 } else { 2 };
    assert_eq!(plot.matches("<polyline").count(), charts, "latency curve, throughput (and p99 over time)");
    assert!(plot.contains("99.9%") && plot.contains("Responses per second"));

    let b = sluice_bench(args(&["-n", "300", "-c", "8", "-t", "1", "--json", &url]), None).await;
    assert!(b.status.success(), "{}", text(&b.stderr));
    let b_report: serde_json::Value = serde_json::from_slice(&b.stdout).expect("JSON");
    let (a_json, b_json) = (dir.path.join("a.json"), dir.path.join("b.json"));
    std::fs::write(&a_json, &a.stdout).expect("write");
    std::fs::write(&b_json, &b.stdout).expect("write");
    let compared =
        sluice_bench(args(&["--compare", a_json.to_str().expect("utf-8"), b_json.to_str().expect("utf-8")]), None)
            .await;
    assert!(compared.status.success(), "{}", text(&compared.stderr));
    let out = text(&compared.stdout);
    let ratio = b_report["rate"].as_f64().expect("rate") / report["rate"].as_f64().expect("rate");
    let rate_line = out.lines().find(|l| l.trim_start().starts_with("responses/s")).expect("a responses/s row");
    assert!(rate_line.trim_end().ends_with(&format!("{ratio:.2}")), "{rate_line} vs {ratio:.2}");
    assert!(out.contains("B ÷ A") && out.contains("latency p99.9") && out.contains("8 connections"), "{out}");

    // HTTP/2 runs say how many streams each connection carried.
    let h2 =
        sluice_bench(args(&["--http2", "--streams", "4", "-n", "200", "-c", "2", "-t", "1", "--json", &url]), None)
            .await;
    assert!(h2.status.success(), "{}", text(&h2.stderr));
    let h2_json = dir.path.join("h2.json");
    std::fs::write(&h2_json, &h2.stdout).expect("write");
    let compared =
        sluice_bench(args(&["--compare", a_json.to_str().expect("utf-8"), h2_json.to_str().expect("utf-8")]), None)
            .await;
    let out = text(&compared.stdout);
    assert!(out.contains("2 connections × 4 streams"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_on_stdout_and_progress_lines_when_not_a_terminal() {
    let upstream = Upstream::hello().await;
    let url = format!("http://{}/", upstream.addr);
    let run = sluice_bench(args(&["-d", "3s", "-c", "2", "-t", "1", &url]), None).await;
    assert!(run.status.success(), "{}", text(&run.stderr));
    let progress = text(&run.stderr);
    let seconds: Vec<&str> = progress.lines().filter(|l| l.contains("responses/s") && l.contains("p99")).collect();
    assert!(seconds.len() >= 2 && seconds[0].trim_start().starts_with("1s"), "one line a second:\n{progress}");
    let table = text(&run.stdout);
    for needle in [
        "2 connections on 1 thread, closed loop, 3s",
        "requests",
        "responses    200 ",
        "failed       none",
        "p99.9",
        "per second",
        "(over 3 whole seconds)",
        "2 asked for",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_a_5xx_is_reported_as_failed_not_as_no_errors() {
    let upstream = Upstream::start(|_: http::Request<hyper::body::Incoming>| async {
        let mut response = http::Response::new(support::upstream::full("down"));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await;
    let url = format!("http://{}/", upstream.addr);
    let run = sluice_bench(args(&["-n", "200", "-c", "2", "-t", "1", &url]), None).await;
    assert!(!run.status.success(), "every request failed: exit 1");
    let table = text(&run.stdout);
    assert!(table.contains("failed       5xx responses 200"), "{table}");
    assert!(!table.contains("none"), "{table}");
    let said = text(&run.stderr);
    assert!(said.contains("200 of 200 requests failed (100.00%: 200 5xx responses, 0 without a response)"), "{said}");
}

/// On a terminal (a pseudo-terminal from `script`), progress is a bar redrawn in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_bar_on_a_terminal() {
    let upstream = Upstream::hello().await;
    let command = format!("{} bench -d 2s -c 2 -t 1 http://{}/", env!("CARGO_BIN_EXE_sluice"), upstream.addr);
    let run = tokio::task::spawn_blocking(move || {
        Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(std::process::Stdio::null()).output()
    })
    .await
    .expect("join")
    .expect("run script");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let screen = text(&run.stdout);
    assert!(screen.contains("\x1b[2K"), "lines redrawn in place (erase-line sequences):\n{screen:?}");
    assert!(screen.contains("[00:00:01]") && screen.contains("responses/s"), "elapsed time and rate:\n{screen}");
    assert!(screen.contains("1s ") && screen.contains("p99"), "the second's rate and p99:\n{screen}");
    assert!(screen.contains("closed loop, 2s") && screen.contains("latency"), "then the table:\n{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fd_limit_is_reported_and_counted_not_fatal() {
    let upstream = Upstream::hello().await;
    let url = format!("http://{}/", upstream.addr);
    let run = sluice_bench(args(&["-c", "60", "-t", "1", "-n", "600", "--json", &url]), Some(40)).await;
    // Failed requests (EMFILE here) end the run with status 1, after the report.
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("requests failed"), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("the file descriptor limit is 40"), "{}", text(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    let emfile = report["failures"]["emfile"].as_u64().unwrap_or(0);
    let responses = report["responses"].as_u64().unwrap_or(0);
    let peak = report["connections"]["peak_open"].as_u64().unwrap_or(0);
    assert!(emfile > 0 && responses > 0, "EMFILE {emfile}, responses {responses}");
    assert_eq!(emfile + responses, 600, "every request accounted for");
    assert!(peak > 0 && peak < 40, "at most {peak} open under a limit of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let cases: [(&[&str], &str); 4] = [
        (&["ftp://example/"], "must start with http:// or https://"),
        (&["-f", "/nonexistent/requests.txt"], "cannot read /nonexistent/requests.txt"),
        (&["-H", "no colon", "http://127.0.0.1:1/"], "has no colon"),
        (&["--rate", "0", "http://127.0.0.1:1/"], "--rate must be a positive number"),
    ];
    for (list, needle) in cases {
        let run = sluice_bench(args(list), None).await;
        assert!(!run.status.success(), "{list:?} should fail");
        assert!(text(&run.stderr).contains(needle), "{list:?}: {}", text(&run.stderr));
    }
}

/// Ctrl-C (SIGINT) ends a long run early with a report of what ran, as wrk and oha do:
/// in a closed loop, and in an open loop whose connections wait up to a minute for their
/// next due time (1 request per second over 64 connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_run_and_still_reports() {
    let upstream = Upstream::hello().await;
    let url = format!("http://{}/", upstream.addr);
    for extra in [&[][..], &["--rate", "1"][..]] {
        let mut list = vec!["-d", "60s", "-c", "64", "-t", "1"];
        list.extend_from_slice(extra);
        list.push(&url);
        let run = tokio::task::spawn_blocking({
            let list = args(&list);
            move || interrupt_after_first_progress_line(list)
        });
        let (status, stderr, stdout) =
            tokio::time::timeout(support::WAIT, run).await.expect("stopped well before 60 s").expect("join");
        assert!(status.success(), "{extra:?}: {status:?}\n{stderr}");
        assert!(stderr.contains("interrupted; finishing the requests in flight"), "{extra:?}: {stderr}");
        assert!(stdout.contains("interrupted by Ctrl-C after"), "{extra:?}: {stdout}");
        assert!(stdout.contains("responses    200 ") && stdout.contains("p99.9"), "{extra:?}: {stdout}");
    }
}

/// Starts `sluice bench ARGS`, sends SIGINT once its first progress line is out, and
/// returns its exit status, the rest of its stderr, and its stdout.
fn interrupt_after_first_progress_line(list: Vec<String>) -> (std::process::ExitStatus, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = support::sluice_command(None)
        .arg("bench")
        .args(&list)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice bench");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("read stderr") > 0 && !line.contains("responses/s") {
        line.clear();
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("read stderr");
    let mut stdout = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
    (child.wait().expect("wait"), rest, stdout)
}

/// A dead port: every request refused. The run reports, then exits 1 saying why, unless
/// failures are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_and_missed_thresholds_make_the_exit_status_non_zero() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let refused = format!("http://{dead}/");
    let run = sluice_bench(args(&["-n", "50", "-c", "2", "-t", "1", &refused]), None).await;
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("50 of 50 requests failed (100.00%: 0 5xx responses, 50 without a response)"),
        "{}",
        text(&run.stderr)
    );
    assert!(text(&run.stdout).contains("refused 50"), "the report is still printed: {}", text(&run.stdout));
    assert!(text(&run.stdout).contains("refused: Connection refused"), "with what failed: {}", text(&run.stdout));
    let allowed =
        sluice_bench(args(&["-n", "50", "-c", "2", "-t", "1", "--max-error-rate", "100%", &refused]), None).await;
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));

    // Exact status codes; a 404 is a failed request as k6 and vegeta count them.
    let upstream = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        let status = if req.uri().path() == "/missing" { 404 } else { 200 };
        http::Response::builder().status(status).body(support::upstream::full("x")).expect("response")
    })
    .await;
    let (ok, missing) = (format!("http://{}/ok", upstream.addr), format!("http://{}/missing", upstream.addr));
    let mixed = sluice_bench(args(&["-n", "100", "-c", "2", "-t", "1", "--json", &ok, &missing]), None).await;
    assert_eq!(mixed.status.code(), Some(1), "{}", text(&mixed.stderr));
    let report: serde_json::Value = serde_json::from_slice(&mixed.stdout).expect("JSON");
    assert_eq!((report["status_codes"]["200"].as_u64(), report["status_codes"]["404"].as_u64()), (Some(50), Some(50)));
    assert_eq!(report["failed_requests"], 50);
    // A row per URL.
    let rows = report["per_url"].as_array().expect("per-URL rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["request"].as_str(), rows[0]["responses"].as_u64(), rows[0]["failed"].as_u64()),
        (Some(&*format!("GET {ok}")), Some(50), Some(0))
    );
    assert_eq!((rows[1]["responses"].as_u64(), rows[1]["failed"].as_u64()), (Some(50), Some(50)));
    assert!(rows[1]["p99_ms"].as_f64().is_some_and(|p| p > 0.0));
    let tolerated =
        sluice_bench(args(&["-n", "100", "-c", "2", "-t", "1", "--max-error-rate", "0.5", &ok, &missing]), None).await;
    assert!(tolerated.status.success(), "50% failed is within 0.5: {}", text(&tolerated.stderr));
    assert!(text(&tolerated.stdout).contains("200 50   404 50"), "{}", text(&tolerated.stdout));
    assert!(
        text(&tolerated.stdout).contains(&format!("GET {missing}: 50 responses, 50 failed")),
        "{}",
        text(&tolerated.stdout)
    );

    // A p99 threshold.
    let strict = sluice_bench(args(&["-n", "50", "-c", "2", "-t", "1", "--max-p99", "0ms", &ok]), None).await;
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains("above --max-p99 0.00 ms"), "{}", text(&strict.stderr));
    let relaxed = sluice_bench(args(&["-n", "50", "-c", "2", "-t", "1", "--max-p99", "10s", &ok]), None).await;
    assert!(relaxed.status.success(), "{}", text(&relaxed.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_host_resolves_the_run_stops_at_once() {
    let started = std::time::Instant::now();
    let run = sluice_bench(args(&["-d", "30s", "http://no-such-host.invalid/"]), None).await;
    assert!(!run.status.success());
    assert!(text(&run.stderr).contains("no URL's host resolves"), "{}", text(&run.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "not a 30 s run of DNS failures");
}
