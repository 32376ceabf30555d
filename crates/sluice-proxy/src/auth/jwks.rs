//! JWKS URLs, fetched off the request path and kept for the process (across reloads
//! and workers): fetched when first named, again in the background once older than
//! `jwks_refresh`, and sooner when a token names a `kid` the set lacks, at most once
//! per `UNKNOWN_KID_INTERVAL`. A request that needs a fetch in progress waits for it
//! (at most `FETCH_TIMEOUT`); a failed fetch keeps the keys already held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::net::TcpStream;

use super::jwt::KeySet;

/// An unknown `kid` fetches the set again at most this often.
const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// A fetch (connect, TLS, request, body) gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS larger than this is refused.
const MAX_JWKS: usize = 1 << 20;

/// The process's remote key sets, by URL.
#[derive(Default)]
pub(crate) struct RemoteKeySets {
    by_url: Mutex<HashMap<String, Arc<RemoteJwks>>>,
}

impl RemoteKeySets {
    /// The set at `url`, fetched now if it is new.
    pub(crate) fn get(&self, url: &str, refresh: Duration) -> Result<Arc<RemoteJwks>, String> {
        let mut sets = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get(url) {
            set.state().refresh = refresh;
            return Ok(Arc::clone(set));
        }
        let target = Target::parse(url)?;
        let (generation, _) = tokio::sync::watch::channel(0);
        let set = Arc::new(RemoteJwks {
            target,
            state: Mutex::new(State { keys: None, fetched_at: None, kid_fetch_at: None, fetching: false, refresh }),
            generation,
        });
        set.start_fetch();
        sets.insert(url.to_string(), Arc::clone(&set));
        Ok(set)
    }
}

pub(crate) struct RemoteJwks {
    target: Target,
    state: Mutex<State>,
    /// Bumped after each fetch, failed or not: waiters wake on it.
    generation: tokio::sync::watch::Sender<u64>,
}

struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    /// When an unknown `kid` last started a fetch.
    kid_fetch_at: Option<Instant>,
    fetching: bool,
    refresh: Duration,
}

impl RemoteJwks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys held, if any; a set older than `jwks_refresh` is fetched again in the
    /// background while it is used.
    pub(crate) fn current(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let (keys, stale) = {
            let state = self.state();
            (state.keys.clone(), state.fetched_at.is_none_or(|at| at.elapsed() >= state.refresh))
        };
        if stale {
            self.start_fetch();
        }
        keys
    }

    /// The keys after a fetch for an unknown `kid`: the one in progress, or a new one
    /// when no unknown `kid` started one in the last `UNKNOWN_KID_INTERVAL`; else the
    /// keys held.
    pub(crate) async fn refreshed(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let mut seen = self.generation.subscribe();
        let wait = {
            let mut state = self.state();
            let due = state.kid_fetch_at.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_INTERVAL);
            if due && !state.fetching {
                state.kid_fetch_at = Some(Instant::now());
            }
            state.fetching || due
        };
        if wait {
            self.start_fetch();
            let _ = tokio::time::timeout(FETCH_TIMEOUT, seen.changed()).await;
        }
        self.state().keys.clone()
    }

    /// Starts a fetch unless one is running (spawned on the caller's runtime).
    fn start_fetch(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        {
            let mut state = self.state();
            if state.fetching {
                return;
            }
            state.fetching = true;
        }
        let set = Arc::clone(self);
        runtime.spawn(async move {
            let fetched = match tokio::time::timeout(FETCH_TIMEOUT, set.target.fetch()).await {
                Ok(result) => result.and_then(|bytes| KeySet::parse(&bytes)),
                Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
            };
            {
                let mut state = set.state();
                state.fetching = false;
                match fetched {
                    Ok(keys) => {
                        state.keys = Some(Arc::new(keys));
                        state.fetched_at = Some(Instant::now());
                    }
                    Err(why) => {
                        tracing::warn!(url = %set.target.url, "cannot fetch the JWKS (keys held are kept): {why}")
                    }
                }
            }
            set.generation.send_modify(|g| *g += 1);
        });
    }
}

/// Where a JWKS URL points.
struct Target {
    url: String,
    https: bool,
    host: String,
    port: u16,
    uri: http::Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("jwks_url {url}: {e}"))?;
        let https = uri.scheme_str() == Some("https");
        let host =
            uri.host().ok_or_else(|| format!("jwks_url {url} has no host"))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target { url: url.to_string(), https, host, port, uri })
    }

    async fn fetch(&self) -> Result<Bytes, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| format!("connect: {e}"))?;
        match self.https {
            false => self.get(tcp).await,
            true => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.get(tls).await
            }
        }
    }

    async fn get<S>(&self, stream: S) -> Result<Bytes, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self.uri.authority().map_or(self.host.as_str(), |a| a.as_str());
        let request = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS).collect().await.map_err(|e| format!("body: {e}"))?;
        Ok(body.to_bytes())
    }
}
