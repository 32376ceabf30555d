//! The admin listener's status page in a real headless browser (Debian's Chromium,
//! installed by scripts/test.sh): it loads without console errors, shows the
//! configured upstreams, and its request counter rises while the test sends traffic.

mod support;

use std::process::Command;

use support::client;
use support::upstream::Upstream;
use support::{Sluice, TempDir};

const TOKEN: &str = "status-page-token-0123";

fn browser() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return name;
        }
    }
    panic!("no Chromium: scripts/test.sh installs Debian's `chromium` package");
}

/// Loads `url` in headless Chromium, lets its scripts run for a few (virtual) seconds,
/// and returns the page's DOM then and the browser's log (console messages included).
fn load(url: &str) -> (String, String) {
    let profile = TempDir::new();
    let output = Command::new("timeout")
        .arg("90")
        .arg(browser())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The number the page shows in the element with this id.
fn shown(dom: &str, id: &str) -> u64 {
    let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in:\n{dom}")) + id.len() + 6;
    let text: String = dom[start..].chars().take_while(|c| *c != '<').filter(char::is_ascii_digit).collect();
    text.parse().unwrap_or_else(|_| panic!("#{id} shows no number in:\n{dom}"))
}

async fn traffic(sluice: &Sluice, n: usize) {
    for i in 0..n {
        let (parts, _) = client::get_once(sluice.addr, &format!("/page/{i}")).await;
        assert_eq!(parts.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_upstreams_and_a_rising_request_count() {
    let upstream = Upstream::hello().await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"catalog\"\n\
         [upstream.catalog]\nendpoints = [\"{}\"]\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let url = format!("http://{}/?token={TOKEN}", sluice.admin.expect("admin"));
    traffic(&sluice, 30).await;
    let (dom, log) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || load(&url)
    })
    .await
    .expect("browser");
    assert!(!log.contains("Uncaught") && !log.contains(":ERROR:CONSOLE"), "console errors:\n{log}");
    assert!(dom.contains("catalog") && dom.contains(&upstream.addr.to_string()), "the upstreams are shown:\n{dom}");
    assert!(dom.contains("<span class=\"dot up\"></span>healthy"), "the endpoint's health:\n{dom}");
    assert!(dom.contains("<span id=\"error\"></span>"), "the page reached its data:\n{dom}");
    assert!(dom.contains("id=\"state\">live"), "it updates live");
    assert!(
        dom.contains("<div class=\"value\" id=\"shed\">0</div>"),
        "requests shed by limits, filled in from /stats.json (none):\n{dom}"
    );
    let first = shown(&dom, "requests-total");
    assert!(first >= 30, "{first} requests shown after 30");
    // More traffic while the browser watches.
    let (_, (dom, _)) = tokio::join!(traffic(&sluice, 40), async {
        let url = url.clone();
        tokio::task::spawn_blocking(move || load(&url)).await.expect("browser")
    });
    let (later, _) = tokio::task::spawn_blocking(move || load(&url)).await.expect("browser");
    let second = shown(&dom, "requests-total").max(shown(&later, "requests-total"));
    assert!(second >= first + 40, "the counter rose from {first} to {second}");
}

#[test]
fn without_the_token_the_page_is_401() {
    // The page itself is behind the token too (`?token=` or the header).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let upstream = Upstream::hello().await;
        let config = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [\"{}\"]\n\
             [admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
            upstream.addr
        );
        let sluice = Sluice::start(&config);
        let admin = sluice.admin.expect("admin");
        assert_eq!(client::get_once(admin, "/").await.0.status, 401);
        assert_eq!(client::get_once(admin, "/stats.json?token=wrong").await.0.status, 401);
        let (parts, body) = client::get_once(admin, &format!("/stats.json?token={TOKEN}")).await;
        assert_eq!(parts.status, 200);
        let stats: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(stats["upstreams"][0]["name"], "u");
        assert_eq!(
            client::get_once(admin, &format!("/metrics?token={TOKEN}")).await.0.status,
            401,
            "only the page takes ?token="
        );
    });
}

/// The value of the y-axis label of chart `id` (`12 req/s`, `4.0 req/s`).
fn chart_top(dom: &str, id: &str) -> f64 {
    let chart = &dom[dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"))..];
    let chart = &chart[..chart.find("</svg>").expect("the chart's end")];
    let label = chart.split("font-size=\"11\">").nth(1).expect("the y-axis label");
    let number: String = label.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    number.parse().unwrap_or_else(|_| panic!("#{id}'s label: {label}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_after_a_load_run_shows_that_run() {
    let upstream = Upstream::hello().await;
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"catalog\"\n\
         [upstream.catalog]\nendpoints = [\"{}\"]\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        upstream.addr
    );
    let sluice = Sluice::start(&config);
    let admin = sluice.admin.expect("admin");
    traffic(&sluice, 60).await;
    // sluice keeps a point a second: wait until the run is in it (another process's state).
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let (_, body) = client::get_once(admin, &format!("/stats.json?token={TOKEN}")).await;
        let stats: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let history = stats["history"].as_array().expect("history").clone();
        let seen: f64 = history.iter().map(|p| p[1].as_f64().unwrap_or(0.0)).sum();
        let endpoint = &stats["upstreams"][0]["endpoints"][0];
        if seen >= 59.0 && endpoint["p99_ms_1m"].as_f64().is_some_and(|ms| ms > 0.0) {
            assert!(endpoint["p50_ms_1m"].as_f64().is_some_and(|ms| ms > 0.0), "{endpoint}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run never reached the history: {history:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // No traffic now: a page opened only now still draws the run, with units.
    let url = format!("http://{admin}/?token={TOKEN}");
    let (dom, log) = tokio::task::spawn_blocking(move || load(&url)).await.expect("browser");
    assert!(!log.contains("Uncaught") && !log.contains(":ERROR:CONSOLE"), "console errors:\n{log}");
    assert!(chart_top(&dom, "chart-rps") > 0.0, "the run's requests per second:\n{dom}");
    assert!(chart_top(&dom, "chart-status") > 0.0, "the run's 2xx per second");
    for unit in ["req/s</text>", "−5 min</text>", "now</text>"] {
        assert!(dom.contains(unit), "axis label {unit:?}:\n{dom}");
    }
    assert!(chart_top(&dom, "chart-latency") > 0.0, "the run's latency");
    // Each endpoint's p50 / p99 over the last minute, in its row.
    let row = &dom[dom.find("class=\"endpoint\"").expect("the endpoint's row")..];
    let row = &row[..row.find("</tr>").expect("the row's end")];
    assert!(!row.contains("<td>– / –</td>") && row.contains(" / "), "{row}");
    assert!(row.contains("µs / ") || row.contains("ms / "), "a latency with its unit: {row}");
}
