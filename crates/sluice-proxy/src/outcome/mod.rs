//! One outcome record per request: made when the request begins, filled in along its
//! path, and handed on exactly once when its response ends, fails or is abandoned
//! (dropped: a client gone, a stream reset). Whatever counts requests reads these
//! records (the totals in [`Tally`], the access log, and later balancer feedback,
//! limits and metrics); nothing on the request path keeps a count of its own.
//!
//! The record is boxed once per request and moved, never copied: through the request
//! path, into the response body, and at its end to the access log's writer thread,
//! which formats it there, off the request path.

mod access_log;
mod format;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use sluice_config::AccessLogConfig;

pub(crate) use access_log::AccessLog;

/// How a request's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The whole response was handed to the client connection.
    Complete,
    /// The client went away (closed, reset its stream) before the response ended.
    ClientGone,
    /// The upstream's body broke off or stalled past read_timeout: the client saw a truncation.
    UpstreamBroke,
    /// The client took no response bytes for send_timeout and was cut.
    SendTimeout,
    /// An upgraded connection (WebSocket) closed; bytes count both directions.
    TunnelClosed,
}

impl End {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::ClientGone => "client_gone",
            End::UpstreamBroke => "upstream_broke",
            End::SendTimeout => "send_timeout",
            End::TunnelClosed => "tunnel_closed",
        }
    }
}

/// Everything known about one request when it ends.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) request_id: HeaderValue,
    /// W3C trace id (32 hex digits) of the request's traceparent.
    pub(crate) trace_id: Option<HeaderValue>,
    pub(crate) client: SocketAddr,
    pub(crate) started_at: SystemTime,
    started: Instant,
    pub(crate) method: Method,
    /// The request target as the client sent it.
    pub(crate) target: Uri,
    pub(crate) version: Version,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) upstream_trace: UpstreamTrace,
    /// The status sent to the client; 0 when none was.
    pub(crate) status: u16,
    /// Request body bytes read from the client.
    pub(crate) bytes_in: u64,
    /// Response body bytes taken from the upstream (or made by sluice) for the client;
    /// for a tunnel, bytes sent to the client.
    pub(crate) bytes_out: u64,
    /// From handing the request to the upstream group to its response head.
    pub(crate) upstream_head: Option<Duration>,
    /// From the request head to the record's end.
    pub(crate) total: Duration,
    /// Why sluice answered itself, or why the response broke off (a short snake_case kind).
    pub(crate) error: Option<&'static str>,
    pub(crate) end: End,
    /// Room for the cache's decision (hit, miss, stale...), issue #11.
    pub(crate) cache: Option<&'static str>,
    /// Room for the limits' decision (rate_limited, shed...), issue #12.
    pub(crate) limit: Option<&'static str>,
}

/// What the upstream layer did for one request: which endpoint answered, after how many tries.
#[derive(Debug, Default)]
pub(crate) struct UpstreamTrace {
    pub(crate) endpoint: Option<Arc<str>>,
    /// Connections tried (connect failures and stale pooled connections included).
    pub(crate) attempts: u32,
}

impl Outcome {
    /// A record for a request that begins now.
    pub(crate) fn begin(client: SocketAddr, request_id: HeaderValue) -> Self {
        Outcome {
            request_id,
            trace_id: None,
            client,
            started_at: SystemTime::now(),
            started: Instant::now(),
            method: Method::GET,
            target: Uri::default(),
            version: Version::HTTP_11,
            host: None,
            user_agent: None,
            referer: None,
            route: None,
            upstream: None,
            upstream_trace: UpstreamTrace::default(),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_head: None,
            total: Duration::ZERO,
            error: None,
            end: End::Complete,
            cache: None,
            limit: None,
        }
    }

    /// The request's line and the headers the access log shows.
    pub(crate) fn describe<B>(&mut self, request: &http::Request<B>) {
        self.method = request.method().clone();
        self.target = request.uri().clone();
        self.version = request.version();
        let headers = request.headers();
        self.host = headers.get(http::header::HOST).cloned();
        self.user_agent = headers.get(http::header::USER_AGENT).cloned();
        self.referer = headers.get(http::header::REFERER).cloned();
    }
}

/// The record of a request in flight. Dropping it ends the request's life: a record
/// that is dropped before being finished says the client went away.
pub(crate) struct Record {
    outcome: Option<Box<Outcome>>,
    sink: Arc<Outcomes>,
    /// Request body bytes, counted where the body is read (HTTP/2 clients).
    meter: Option<Arc<AtomicU64>>,
}

impl Record {
    pub(crate) fn new(outcome: Outcome, sink: &Arc<Outcomes>) -> Self {
        Record { outcome: Some(Box::new(outcome)), sink: Arc::clone(sink), meter: None }
    }

    pub(crate) fn outcome(&mut self) -> &mut Outcome {
        // Present until `finish` or drop, which take `self`.
        self.outcome.get_or_insert_with(|| {
            Box::new(Outcome::begin(SocketAddr::from(([0, 0, 0, 0], 0)), HeaderValue::from_static("-")))
        })
    }

    pub(crate) fn set_meter(&mut self, meter: Arc<AtomicU64>) {
        self.meter = Some(meter);
    }

    /// Ends the request's life with `end`.
    pub(crate) fn finish(mut self, end: End) {
        self.complete(end);
    }

    fn complete(&mut self, end: End) {
        let Some(mut outcome) = self.outcome.take() else { return };
        outcome.end = end;
        outcome.total = outcome.started.elapsed();
        if let Some(meter) = &self.meter {
            outcome.bytes_in = outcome.bytes_in.max(meter.load(Ordering::Relaxed));
        }
        self.sink.record(outcome);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.complete(End::ClientGone);
    }
}

/// Totals kept from the outcome records (the Prometheus metrics of #12 read these).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) requests: AtomicU64,
    /// Responses by status class: 1xx..5xx (index 0 = no status sent).
    pub(crate) by_class: [AtomicU64; 6],
    /// Requests refused as the client's fault (a 4xx sluice made).
    pub(crate) client_errors: AtomicU64,
    pub(crate) upstream_broke: AtomicU64,
    pub(crate) client_gone: AtomicU64,
    pub(crate) send_timeouts: AtomicU64,
}

/// Where finished records go.
pub(crate) struct Outcomes {
    pub(crate) tally: Tally,
    access_log: Option<AccessLog>,
}

impl Outcomes {
    /// Starts the access log's writer thread when one is configured.
    pub(crate) fn new(config: Option<&AccessLogConfig>) -> std::io::Result<Self> {
        let access_log = config.map(AccessLog::start).transpose()?;
        Ok(Outcomes { tally: Tally::default(), access_log })
    }

    /// The one place a finished record is counted and passed on.
    fn record(&self, outcome: Box<Outcome>) {
        let tally = &self.tally;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let class = usize::from(outcome.status / 100).min(5);
        tally.by_class[class].fetch_add(1, Ordering::Relaxed);
        if outcome.error.is_some_and(|kind| kind.starts_with("client")) {
            tally.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        match outcome.end {
            End::UpstreamBroke => tally.upstream_broke.fetch_add(1, Ordering::Relaxed),
            End::ClientGone => tally.client_gone.fetch_add(1, Ordering::Relaxed),
            End::SendTimeout => tally.send_timeouts.fetch_add(1, Ordering::Relaxed),
            End::Complete | End::TunnelClosed => 0,
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(target: "sluice::request", "{}", format::json_line(&outcome));
        }
        if let Some(log) = &self.access_log {
            log.send(outcome);
        }
    }

    /// Writes out the access log's queue (at shutdown).
    pub(crate) fn flush(&self) {
        if let Some(log) = &self.access_log {
            log.flush();
        }
    }

    /// Access log lines dropped because the writer thread fell behind.
    pub(crate) fn dropped_lines(&self) -> u64 {
        self.access_log.as_ref().map_or(0, AccessLog::dropped)
    }
}
