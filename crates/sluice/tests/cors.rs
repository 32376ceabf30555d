//! CORS on a route (issue 23 §2): preflights answered by sluice (the upstream never
//! sees them), the fields on actual responses, `Vary: Origin`, refusals for origins,
//! methods and headers not allowed; over HTTP/1 and HTTP/2; and in headless Chromium,
//! a page on one origin calling the API on another with `fetch()`, with and without
//! credentials, as browsers enforce it.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use support::client::{self, send1, send2};
use support::upstream::{full, Upstream};
use support::{Sluice, TempDir};

/// An API that answers with its method and path and counts what it sees.
async fn api() -> (Upstream, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let upstream = Upstream::start(move |request: Request<hyper::body::Incoming>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let text = format!("hello {} {}", request.method(), request.uri().path());
        async move { Response::new(full(text)) }
    })
    .await;
    (upstream, seen)
}

fn config(api: &Upstream, origins: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\npath_prefix = \"/api\"\nupstream = \"api\"\n\
         [route.cors]\norigins = [{origins}]\nmethods = [\"GET\", \"PUT\"]\nheaders = [\"x-custom\"]\n\
         expose_headers = [\"x-request-id\"]\ncredentials = true\nmax_age = \"5m\"\n\
         [upstream.api]\nendpoints = [\"{}\"]\n",
        api.addr
    )
}

async fn ask(sluice: &Sluice, method: &str, fields: &[(&str, &str)]) -> http::response::Parts {
    let mut conn = client::h1(sluice.addr).await;
    let mut request = Request::builder().method(method).uri("/api/x").header("host", "api.test");
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    send1(&mut conn, request.body(full("")).expect("request")).await.0
}

fn field<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts.headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_sluice_and_refused_for_what_is_not_allowed() {
    let (api, seen) = api().await;
    let sluice = Sluice::start(&config(&api, "\"https://app.test\", \"https://*.example.com\""));
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        vec![("origin", origin), ("access-control-request-method", method), ("access-control-request-headers", headers)]
    };
    let allowed = ask(&sluice, "OPTIONS", &preflight("https://app.test", "PUT", "X-Custom")).await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert_eq!(field(&allowed, "access-control-allow-origin"), "https://app.test");
    assert_eq!(field(&allowed, "access-control-allow-credentials"), "true");
    assert!(field(&allowed, "access-control-allow-methods").contains("PUT"));
    assert_eq!(field(&allowed, "access-control-allow-headers"), "x-custom");
    assert_eq!(field(&allowed, "access-control-max-age"), "300");
    assert!(field(&allowed, "vary").contains("Origin"));
    let subdomain = ask(&sluice, "OPTIONS", &preflight("https://shop.example.com", "GET", "")).await;
    assert_eq!(subdomain.status, StatusCode::NO_CONTENT, "one label under the wildcard");
    for (origin, method, headers, why) in [
        ("https://evil.test", "PUT", "", "an origin not listed"),
        ("https://example.com", "GET", "", "the bare domain of a wildcard"),
        ("https://a.b.example.com", "GET", "", "two labels under a one-label wildcard"),
        ("http://app.test", "GET", "", "another scheme"),
        ("https://app.test", "DELETE", "", "a method not listed"),
        ("https://app.test", "PUT", "x-other", "a header not listed"),
    ] {
        let refused = ask(&sluice, "OPTIONS", &preflight(origin, method, headers)).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{why}");
        assert_eq!(field(&refused, "access-control-allow-origin"), "", "{why}: no CORS fields");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no preflight reached the upstream");
    // An OPTIONS that is not a preflight goes on as any request does.
    assert_eq!(ask(&sluice, "OPTIONS", &[]).await.status, StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_responses_get_the_fields_for_allowed_origins_only_and_always_vary_on_origin() {
    let (api, _) = api().await;
    let sluice = Sluice::start(&config(&api, "\"https://app.test\""));
    let allowed = ask(&sluice, "GET", &[("origin", "https://app.test")]).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(field(&allowed, "access-control-allow-origin"), "https://app.test");
    assert_eq!(field(&allowed, "access-control-allow-credentials"), "true");
    assert_eq!(field(&allowed, "access-control-expose-headers"), "x-request-id");
    assert!(field(&allowed, "vary").contains("Origin"));
    for fields in [vec![("origin", "https://evil.test")], vec![]] {
        let other = ask(&sluice, "GET", &fields).await;
        assert_eq!(other.status, StatusCode::OK, "served: the browser, not sluice, keeps it from the page");
        assert_eq!(field(&other, "access-control-allow-origin"), "");
        assert!(field(&other, "vary").contains("Origin"), "a cache must not give one origin's answer to another");
    }
    // The same over HTTP/2.
    let mut conn = client::h2(sluice.addr).await;
    let request = Request::get("http://api.test/api/x").header("origin", "https://app.test").body(full("")).expect("r");
    let (parts, _) = send2(&mut conn, request).await;
    assert_eq!(field(&parts, "access-control-allow-origin"), "https://app.test");
    let request = Request::builder()
        .method("OPTIONS")
        .uri("http://api.test/api/x")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "PUT")
        .body(full(""))
        .expect("request");
    assert_eq!(send2(&mut conn, request).await.0.status, StatusCode::NO_CONTENT);
}

fn browser() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if Command::new("which").arg(name).output().is_ok_and(|o| o.status.success()) {
            return name;
        }
    }
    panic!("no Chromium: scripts/test.sh installs Debian's `chromium` package");
}

/// The text the page at `url` wrote into `#out` after its scripts ran.
fn page_result(url: &str) -> String {
    let profile = TempDir::new();
    let output = Command::new("timeout")
        .arg("90")
        .arg(browser())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = dom.find("<pre id=\"out\">").unwrap_or_else(|| panic!("no #out in:\n{dom}")) + 14;
    dom[start..dom[start..].find("</pre>").map_or(dom.len(), |end| start + end)].to_string()
}

/// A page on its own origin that calls the API named in its URL (`?api=host:port`)
/// three ways and writes what it saw.
async fn page_server() -> Upstream {
    let html = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
(async () => {
  const api = new URLSearchParams(location.search).get("api");
  const lines = [];
  const calls = [["plain", {}], ["put", {method: "PUT", headers: {"X-Custom": "1"}}], ["credentials", {credentials: "include"}]];
  for (const [name, options] of calls) {
    try {
      const r = await fetch("http://" + api + "/api/x", options);
      lines.push(name + " " + r.status + " " + (await r.text()) + " " + (r.headers.get("x-request-id") ? "id" : "no-id"));
    } catch (e) {
      lines.push(name + " blocked");
    }
  }
  document.getElementById("out").textContent = lines.join("; ");
})();
</script></body></html>"#;
    Upstream::start(move |_: Request<hyper::body::Incoming>| async move {
        let mut response = Response::new(full(html));
        response.headers_mut().insert("content-type", "text/html".parse().expect("type"));
        response
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_calls_the_api_in_chromium_with_and_without_credentials() {
    let (api, seen) = api().await;
    let (allowed, other) = (page_server().await, page_server().await);
    let sluice = Sluice::start(&config(&api, &format!("\"http://{}\"", allowed.addr)));
    let open = |page: std::net::SocketAddr| {
        let url = format!("http://{page}/?api={}", sluice.addr);
        tokio::task::spawn_blocking(move || page_result(&url))
    };
    let (from_allowed, from_other) =
        (open(allowed.addr).await.expect("browser"), open(other.addr).await.expect("browser"));
    // The listed origin: a simple GET, a PUT with a custom header (after a preflight
    // sluice answered), and a GET with credentials; the exposed header is readable.
    assert_eq!(
        from_allowed, "plain 200 hello GET /api/x id; put 200 hello PUT /api/x id; credentials 200 hello GET /api/x id",
        "what the page on the allowed origin saw"
    );
    // Another origin: the browser keeps every answer from the page. (The simple GETs
    // reach the API, as CORS allows; the PUT's preflight is refused, so it never does.)
    assert_eq!(from_other, "plain blocked; put blocked; credentials blocked");
    assert_eq!(seen.load(Ordering::SeqCst), 3 + 2, "the allowed page's three calls, the other's two GETs");
}
