//! The command line turned into a plan: origins to connect to, requests encoded once.
//!
//! Connections are shared out over origins (scheme, host, port) round-robin; each connection
//! sends its origin's requests in turn, so keep-alive holds with several hosts in one run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

use crate::args::BenchArgs;

/// Where connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Addresses resolved before the run; empty when resolution failed (then every connect
    /// attempt counts a DNS error).
    pub addrs: Vec<SocketAddr>,
    pub dns_error: Option<String>,
}

/// One request, ready to send over either protocol.
#[derive(Debug)]
pub struct RequestSpec {
    pub method: Method,
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The whole HTTP/1.1 request, head and body, encoded once.
    pub http1: Bytes,
    /// A HEAD request's response has no body whatever its headers say.
    pub is_head: bool,
    /// Its place among the URLs given (`Plan::urls`), for the per-URL rows.
    pub url: usize,
}

/// When the run stops sending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

/// Everything a run needs, fixed before it starts.
#[derive(Debug)]
pub struct Plan {
    pub origins: Vec<Origin>,
    /// Requests per origin, in the order given.
    pub requests: Vec<Vec<Arc<RequestSpec>>>,
    pub urls: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    pub http2: bool,
    pub streams: usize,
    pub keepalive: bool,
    pub rate: Option<crate::schedule::RateProfile>,
    pub stop: Stop,
    pub warmup: Duration,
    pub timeout: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A request as read from the command line or a request file, before encoding.
struct RawRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Plan {
    pub fn from_args(args: &BenchArgs) -> anyhow::Result<Plan> {
        let raw = raw_requests(args)?;
        let connections = args.connections;
        if connections == 0 {
            bail!("--connections must be at least 1");
        }
        if args.streams == 0 {
            bail!("--streams must be at least 1");
        }
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let threads = threads.clamp(1, connections);
        let stop = match (args.requests, args.duration) {
            (Some(0), _) => bail!("--requests must be at least 1"),
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) if d.is_zero() => bail!("--duration must be longer than 0"),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        let keepalive = !args.no_keepalive;
        let mut origins: Vec<Origin> = Vec::new();
        let mut requests: Vec<Vec<Arc<RequestSpec>>> = Vec::new();
        for (url, request) in raw.iter().enumerate() {
            let (origin, mut spec) = encode(request, keepalive)?;
            spec.url = url;
            let index = match origins
                .iter()
                .position(|o| o.tls == origin.tls && o.host == origin.host && o.port == origin.port)
            {
                Some(i) => i,
                None => {
                    origins.push(resolve(origin));
                    requests.push(Vec::new());
                    origins.len() - 1
                }
            };
            requests[index].push(Arc::new(spec));
        }
        // Nothing could ever connect: say so now rather than run a load of DNS failures.
        if !origins.is_empty() && origins.iter().all(|o| o.dns_error.is_some()) {
            let why: Vec<String> = origins
                .iter()
                .map(|o| format!("{}: {}", o.host, o.dns_error.as_deref().unwrap_or("no addresses")))
                .collect();
            bail!("no URL's host resolves, so no request could be sent ({})", why.join("; "));
        }
        if connections < origins.len() {
            bail!("{} hosts need at least as many connections; --connections is {connections}", origins.len());
        }
        let tls = if origins.iter().any(|o| o.tls) {
            Some(crate::connect::tls_config(args.insecure, args.cacert.as_deref(), args.http2)?)
        } else {
            None
        };
        Ok(Plan {
            urls: raw.iter().map(|r| format!("{} {}", r.method, r.url)).collect(),
            origins,
            requests,
            connections,
            threads,
            http2: args.http2,
            streams: if args.http2 { args.streams } else { 1 },
            keepalive,
            rate: args.rate.clone(),
            stop,
            warmup: args.warmup,
            timeout: args.timeout,
            tls,
        })
    }

    /// Requests in flight at most: connections × streams.
    pub fn concurrency(&self) -> usize {
        self.connections * self.streams
    }
}

fn raw_requests(args: &BenchArgs) -> anyhow::Result<Vec<RawRequest>> {
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => Bytes::from(text.clone()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("cannot read --body-file {}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    let headers = args.headers.iter().map(|h| split_header(h)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut raw: Vec<RawRequest> = args
        .urls
        .iter()
        .map(|url| RawRequest {
            method: args.method.clone(),
            url: url.clone(),
            headers: headers.clone(),
            body: body.clone(),
        })
        .collect();
    if let Some(path) = &args.request_file {
        raw.extend(read_request_file(path, &headers)?);
    }
    if raw.is_empty() {
        bail!("no requests: give a URL or a --request-file with at least one request");
    }
    Ok(raw)
}

fn split_header(text: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("header \"{text}\" has no colon; write it as \"Name: value\"");
    };
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// Reads a request file: "URL", "METHOD URL" or a JSON object per line.
fn read_request_file(path: &Path, common_headers: &[(String, String)]) -> anyhow::Result<Vec<RawRequest>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), number + 1);
        let mut request = if line.starts_with('{') {
            json_request(line).with_context(at)?
        } else {
            let mut words = line.split_whitespace();
            let (method, url) = match (words.next(), words.next(), words.next()) {
                (Some(url), None, _) => ("GET", url),
                (Some(method), Some(url), None) => (method, url),
                _ => bail!("{}: expected \"URL\", \"METHOD URL\" or a JSON object", at()),
            };
            RawRequest { method: method.to_string(), url: url.to_string(), headers: Vec::new(), body: Bytes::new() }
        };
        let mut headers = common_headers.to_vec();
        headers.append(&mut request.headers);
        request.headers = headers;
        out.push(request);
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn default_method() -> String {
    "GET".to_string()
}

fn json_request(line: &str) -> anyhow::Result<RawRequest> {
    let json: JsonRequest =
        serde_json::from_str(line).context("not a request object {\"method\", \"url\", \"headers\", \"body\"}")?;
    Ok(RawRequest {
        method: json.method,
        url: json.url,
        headers: json.headers.into_iter().collect(),
        body: Bytes::from(json.body),
    })
}

/// Checks one request and encodes it for HTTP/1.1; returns its origin (unresolved).
fn encode(raw: &RawRequest, keepalive: bool) -> anyhow::Result<(Origin, RequestSpec)> {
    let uri: Uri = raw.url.parse().with_context(|| format!("\"{}\" is not a URL", raw.url))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("\"{}\": the URL must start with http:// or https://", raw.url),
    };
    let Some(host) = uri.host() else { bail!("\"{}\": the URL has no host", raw.url) };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let method = Method::from_bytes(raw.method.as_bytes())
        .with_context(|| format!("\"{}\" is not an HTTP method", raw.method))?;
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("\"{name}\" is not a header name"))?;
        let value =
            HeaderValue::from_str(value).with_context(|| format!("the value of {name} is not a valid header value"))?;
        headers.push((name, value));
    }
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let http1 = encode_http1(&method, path, &authority, &headers, &raw.body, keepalive);
    let origin =
        Origin { tls, host: host.trim_matches(['[', ']']).to_string(), port, addrs: Vec::new(), dns_error: None };
    let is_head = method == Method::HEAD;
    Ok((origin, RequestSpec { method, uri, headers, body: raw.body.clone(), http1, is_head, url: 0 }))
}

fn encode_http1(
    method: &Method,
    path: &str,
    authority: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
    keepalive: bool,
) -> Bytes {
    let has = |name: &http::header::HeaderName| headers.iter().any(|(n, _)| n == name);
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    if !has(&http::header::HOST) {
        out.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    if !has(&http::header::USER_AGENT) {
        out.extend_from_slice(concat!("user-agent: sluice-bench/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length = !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if needs_length && !has(&http::header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if !keepalive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Resolves the origin's host once, before the run.
fn resolve(mut origin: Origin) -> Origin {
    match (origin.host.as_str(), origin.port).to_socket_addrs() {
        Ok(addrs) => origin.addrs = addrs.collect(),
        Err(e) => origin.dns_error = Some(e.to_string()),
    }
    if origin.addrs.is_empty() && origin.dns_error.is_none() {
        origin.dns_error = Some("no addresses".to_string());
    }
    origin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(method: &str, url: &str, body: &str) -> RawRequest {
        RawRequest {
            method: method.into(),
            url: url.into(),
            headers: vec![("X-Key".into(), "1".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn encodes_a_request_once_with_host_length_and_user_headers() {
        let (origin, spec) = encode(&raw("POST", "http://127.0.0.1:9000/a?b=1", "xyz"), true).expect("valid");
        assert_eq!((origin.host.as_str(), origin.port, origin.tls), ("127.0.0.1", 9000, false));
        let text = std::str::from_utf8(&spec.http1).expect("ascii");
        assert!(text.starts_with("POST /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n"), "{text}");
        assert!(text.contains("x-key: 1\r\n") && text.contains("content-length: 3\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nxyz") && !text.contains("connection: close"), "{text}");
        let (_, spec) = encode(&raw("GET", "https://[::1]/", ""), false).expect("valid");
        let text = std::str::from_utf8(&spec.http1).expect("ascii");
        assert!(text.contains("connection: close\r\n") && !text.contains("content-length"), "{text}");
    }

    #[test]
    fn rejects_what_cannot_be_sent_with_a_reason() {
        for (url, needle) in
            [("ftp://x/", "http:// or https://"), ("/path", "http:// or https://"), ("http://", "not a URL")]
        {
            let error = encode(&raw("GET", url, ""), true).err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(error.contains(needle), "{url}: {error}");
        }
        let error = encode(&raw("GE T", "http://a/", ""), true).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("not an HTTP method"), "{error}");
    }

    #[test]
    fn request_file_lines_in_three_forms() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("requests.txt");
        std::fs::write(&path, "# comment\nhttp://a/1\n\nDELETE http://a/2\n{\"method\":\"PUT\",\"url\":\"http://b/3\",\"headers\":{\"k\":\"v\"},\"body\":\"x\"}\n")
            .expect("write");
        let requests = read_request_file(&path, &[("c".into(), "d".into())]).expect("valid file");
        let summary: Vec<_> =
            requests.iter().map(|r| (r.method.as_str(), r.url.as_str(), r.headers.len(), r.body.len())).collect();
        assert_eq!(summary, [("GET", "http://a/1", 1, 0), ("DELETE", "http://a/2", 1, 0), ("PUT", "http://b/3", 2, 1)]);
        std::fs::write(&path, "http://a/1\nGET http://a/2 extra\n").expect("write");
        let error = read_request_file(&path, &[]).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("requests.txt:2"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
