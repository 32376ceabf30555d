//! The admin listener: a separate address (loopback by default) for operators, with an
//! optional bearer token (anything without it gets 401). `/` (the live status page,
//! `status.rs`), `/healthz` (alive), `/readyz`
//! (listeners bound, not draining), `/metrics` (Prometheus text from the outcome
//! records, the pools, the balancers and the cache), `/upstreams` (each endpoint's
//! state as JSON), `POST /drain` (stop accepting, become not-ready, drain and exit, as
//! SIGTERM does) and `POST /purge` (the cache). Served with hyper's HTTP/1 server on
//! the main thread's runtime, never on a worker.

mod gather;
mod history;
mod metrics;
mod status;
mod upstreams;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice_config::AdminConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::runtime::{Process, Shared};

/// What the admin listener reads: the process and every worker.
pub(crate) struct AdminState {
    pub(crate) process: Arc<Process>,
    pub(crate) workers: Vec<Arc<Shared>>,
    /// Client connections open: max_connections minus the free permits.
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    token: Option<String>,
    drain: Notify,
    /// Set by `POST /drain`: not ready from its answer on, before the drain has begun.
    draining: std::sync::atomic::AtomicBool,
    /// The running configuration, for `/config`.
    config: std::sync::OnceLock<Arc<std::sync::Mutex<sluice_config::Config>>>,
    /// Where `POST /reload` asks for a reload (set by whoever can do one).
    reload: std::sync::OnceLock<mpsc::Sender<ReloadRequest>>,
    /// The status page's last five minutes, one point a second.
    history: history::History,
}

/// A reload asked for on the admin listener; the answer says what happened (Ok: what
/// was applied, Err: why nothing was).
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// The admin listener of a running server.
pub struct Admin {
    state: Arc<AdminState>,
}

impl Admin {
    pub(crate) fn new(
        config: &AdminConfig,
        process: Arc<Process>,
        workers: Vec<Arc<Shared>>,
        limit: Arc<Semaphore>,
        max_connections: usize,
    ) -> Admin {
        let state = AdminState {
            process,
            workers,
            limit,
            max_connections,
            token: config.token.clone(),
            drain: Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            reload: std::sync::OnceLock::new(),
            config: std::sync::OnceLock::new(),
            history: history::History::default(),
        };
        Admin { state: Arc::new(state) }
    }

    /// Binds `address` and serves it in a task of the current runtime; the bound address.
    pub async fn listen(&self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        history::start(&self.state);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // A full FD table would fail every accept at once: pause, never spin.
                        tracing::debug!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(respond(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(bound)
    }

    /// Shows `config` (kept current by reloads) at `GET /config`.
    pub fn show_config(&self, config: Arc<std::sync::Mutex<sluice_config::Config>>) {
        let _ = self.state.config.set(config);
    }

    /// The reloads asked for with `POST /reload` (call once).
    pub fn reload_requests(&self) -> mpsc::Receiver<ReloadRequest> {
        let (tx, rx) = mpsc::channel(4);
        let _ = self.state.reload.set(tx);
        rx
    }

    /// Completes when an operator asked for a drain (`POST /drain`).
    pub async fn drain_requested(&self) {
        self.state.drain.notified().await;
    }
}

async fn respond(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !authorized(state, &request) {
        let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let query = request.uri().query().unwrap_or("").to_string();
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => {
            let mut response = Response::new(Full::new(Bytes::from_static(status::PAGE.as_bytes())));
            let kind = header::HeaderValue::from_static("text/html; charset=utf-8");
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
            response
        }
        (&Method::GET, "/stats.json") => json(status::stats(state)),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz")
            if state.process.shutdown.is_triggered() || state.draining.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(state))));
            let kind = header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
            response
        }
        (&Method::GET, "/upstreams") => json(upstreams::render(state)),
        (&Method::GET, "/config") => match state.config.get() {
            Some(config) => {
                let config = config.lock().unwrap_or_else(|p| p.into_inner());
                let shown = redact(&format!("{:#?}\n", *config));
                let mut response = Response::new(Full::new(Bytes::from(shown)));
                response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
                response
            }
            None => text(StatusCode::NOT_FOUND, "no configuration to show\n"),
        },
        (&Method::POST, "/drain") => {
            tracing::warn!("drain requested on the admin listener: no new connections, draining");
            state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
            state.drain.notify_one();
            text(StatusCode::ACCEPTED, "draining\n")
        }
        (&Method::POST, "/purge") => purge(state, &query).await,
        (&Method::POST, "/reload") => reload(state).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/upstreams" | "/config" | "/drain" | "/purge" | "/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: / /stats.json /healthz /readyz /metrics /upstreams /config /drain /purge /reload\n",
        ),
    }
}

/// With a token configured, `Authorization: Bearer TOKEN`, or for the status page and
/// its data (a browser cannot set the header on a link), `?token=TOKEN`; compared in
/// constant time.
fn authorized(state: &AdminState, request: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else { return true };
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let from_header = header.and_then(|v| v.strip_prefix("Bearer "));
    let page = matches!(request.uri().path(), "/" | "/stats.json");
    let from_query = page
        .then(|| request.uri().query().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("token=")))
        .flatten();
    let same = |given: &str| {
        given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    };
    from_header.is_some_and(same) || from_query.is_some_and(same)
}

/// `POST /reload`: the config file is read and validated again; 200 when it was
/// applied, 400 with the problems when not (the running configuration stays).
async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    let Some(requests) = state.reload.get() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "reloading is not available\n");
    };
    let (tx, rx) = oneshot::channel();
    if requests.send(tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "reloading is not available\n");
    }
    let (status, message) = match rx.await {
        Ok(Ok(applied)) => (StatusCode::OK, applied),
        Ok(Err(problems)) => (StatusCode::BAD_REQUEST, problems),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the reload was dropped".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response
}

/// `POST /purge?host=H&url=/path`, `...&prefix=/p`, or `...&tag=T`: the cache's purge
/// (H as the keys name the site: with `key_authority = "upstream"`, the group's name).
/// It reaches every instance sharing the tier, as a PURGE request does.
async fn purge(state: &AdminState, query: &str) -> Response<Full<Bytes>> {
    let Some(cache) = &state.process.cache else {
        return text(StatusCode::NOT_FOUND, "no [cache] is configured\n");
    };
    let param = |name: &str| {
        query.split('&').find_map(|pair| pair.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    };
    let host = param("host").unwrap_or_default();
    let host = crate::cache::key_authority(&cache.config, &host, &host);
    let (mode, purged) = if let Some(tag) = param("tag") {
        ("tags", cache.purge_tags(&[tag]).await)
    } else if let Some(prefix) = param("prefix") {
        ("prefix", cache.purge_prefix(&host, &prefix).await)
    } else if let Some(url) = param("url") {
        ("url", cache.purge_url(&host, &url).await)
    } else {
        return text(StatusCode::BAD_REQUEST, "give url=/path, prefix=/path or tag=name (and host=)\n");
    };
    tracing::info!(%host, mode, purged, "cache purge (admin)");
    json(format!("{{\"purged\":{purged},\"mode\":\"{mode}\"}}\n"))
}

/// The effective configuration with its secrets taken out: the admin token (its Debug
/// form already hides it) and the credentials in URLs (`redis://user:password@host`).
fn redact(shown: &str) -> String {
    let mut out = String::with_capacity(shown.len());
    let mut rest = shown;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(['"', '\n', ' ']).unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(credentials) => {
                out.push_str("<redacted>");
                rest = &after[credentials..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}

fn json(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_redacted() {
        let shown = "url: \"redis://app:s3cret@10.0.0.5:6379\",\nother: \"redis://10.0.0.6:6379\",";
        let redacted = super::redact(shown);
        assert_eq!(redacted, "url: \"redis://<redacted>@10.0.0.5:6379\",\nother: \"redis://10.0.0.6:6379\",");
    }
}
