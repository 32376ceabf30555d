//! The exporter's HTTP/1.1 client for the collector: one keep-alive connection,
//! reopened when the collector closed it, on a single-threaded runtime of the
//! exporter's own thread (the workers' event loops never carry export traffic).

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sluice_config::TracingConfig;
use tokio::net::TcpStream;

/// Read at most this much of the collector's answer (it is a small status message).
const ANSWER_LIMIT: usize = 64 * 1024;

pub(super) struct Collector {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

struct Client {
    authority: String,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Collector {
    pub(super) fn new(config: &TracingConfig) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Checked by the config; a header that still does not parse is left out.
        let headers = config
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.parse().ok()?, HeaderValue::from_str(value).ok()?)))
            .collect();
        let client = Client {
            authority: config.authority.clone(),
            path: config.path.clone(),
            headers,
            timeout: config.timeout,
            sender: None,
        };
        Ok(Collector { runtime, client })
    }

    /// POSTs one batch; Err says why it was not taken.
    pub(super) fn post(&mut self, body: &[u8]) -> Result<(), String> {
        let client = &mut self.client;
        let timeout = client.timeout;
        let body = Bytes::copy_from_slice(body);
        self.runtime.block_on(async move {
            match tokio::time::timeout(timeout, client.exchange(body)).await {
                Ok(result) => result,
                Err(_) => {
                    client.sender = None; // an answer may still come on it: not reused
                    Err(format!("no answer within {timeout:?}"))
                }
            }
        })
    }
}

impl fmt::Display for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.client.authority, self.client.path)
    }
}

impl Client {
    async fn exchange(&mut self, body: Bytes) -> Result<(), String> {
        let mut sender = match self.sender.take().filter(|s| !s.is_closed()) {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await.map_err(|e| format!("connection lost: {e}"))?;
        let mut request = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        request.headers_mut().extend(self.headers.iter().cloned());
        let response = sender.send_request(request).await.map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), ANSWER_LIMIT).collect().await;
        let answer = answer.map_err(|e| format!("answer broke off: {e}"))?.to_bytes();
        self.sender = Some(sender);
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            Err(format!("the collector answered {status}: {text}"))
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {} failed: {e}", self.authority))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
