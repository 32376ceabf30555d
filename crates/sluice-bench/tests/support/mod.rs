//! A real HTTP server for the load generator's tests: hyper on 127.0.0.1:0, HTTP/1.1 and
//! h2c (and TLS when asked), counting what it sees, able to stall or misbehave on purpose.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub requests: u64,
    pub connections: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// (method, path, body) of each request, when `keep_requests` is set.
    pub log: Vec<(String, String, String)>,
}

#[derive(Clone, Default)]
pub struct Behaviour {
    /// After this many requests, every request arriving in the next `Duration` is held
    /// until that time is over: a server that stalls once.
    pub stall_after: Option<(u64, Duration)>,
    /// Answer with this status instead of 200.
    pub status: Option<u16>,
    pub keep_requests: bool,
}

struct State {
    seen: Mutex<Seen>,
    stall_until: Mutex<Option<Instant>>,
    behaviour: Behaviour,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    // Dropped last: stops the server with the test.
    _runtime: tokio::runtime::Runtime,
}

impl TestServer {
    pub fn start(behaviour: Behaviour) -> TestServer {
        TestServer::start_with_tls(behaviour, None)
    }

    /// With `tls`, serves HTTPS (ALPN h2 and http/1.1).
    pub fn start_with_tls(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State { seen: Mutex::default(), stall_until: Mutex::new(None), behaviour });
        runtime.spawn(accept_loop(listener, Arc::clone(&state), tls));
        TestServer { addr, state, _runtime: runtime }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Seen {
        self.state.seen.lock().expect("lock").clone()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        state.seen.lock().expect("lock").connections += 1;
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&state), request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            }
        });
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let now = Instant::now();
    let hold_until = {
        let mut seen = state.seen.lock().expect("lock");
        seen.requests += 1;
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        if state.behaviour.keep_requests {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            seen.log.push((parts.method.to_string(), path, String::from_utf8_lossy(&body).into_owned()));
        }
        let mut stall_until = state.stall_until.lock().expect("lock");
        if let Some((after, length)) = state.behaviour.stall_after {
            if seen.requests == after {
                *stall_until = Some(now + length);
            }
        }
        stall_until.filter(|until| *until > now)
    };
    if let Some(until) = hold_until {
        // The server under test stalls: this is its behaviour, not test synchronisation.
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello from the test server\n")));
    if let Some(status) = state.behaviour.status {
        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    }
    Ok(response)
}

/// Runs `sluice bench` (the library, as the CLI does) with these arguments, no progress.
pub fn bench(args: &[&str]) -> sluice_bench::Report {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: sluice_bench::BenchArgs,
    }
    let mut argv = vec!["bench", "--no-progress"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    sluice_bench::run(&cli.args).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"))
}

/// A self-signed certificate for "localhost" and 127.0.0.1: (server config, PEM of the cert).
pub fn tls_server() -> (Arc<rustls::ServerConfig>, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("certificate");
    let cert_pem = key.cert.pem();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.key_pair.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (Arc::new(config), cert_pem)
}
