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
pub(crate) mod format;
pub(crate) mod otlp;
mod recycle;
pub(crate) mod series;
mod trace;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Version};

pub(crate) use access_log::AccessLog;
pub(crate) use otlp::SpanExport;
pub(crate) use trace::{read_hex, write_hex, SpanIds, Trace};

/// Frees the record boxes this thread did not need in the last period (`stock`).
pub(crate) fn trim_stock() {
    recycle::trim();
}

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
///
/// Text from the request (ids, target, Host, User-Agent, Referer) is copied into the
/// record's own inline buffer: a record allocates nothing and holds none of the
/// request's buffers, so the request's memory is reused at once while the record waits
/// for the access log's writer thread. Boxes are recycled (`recycle`), so in steady
/// state a record costs no allocation at all.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) texts: Texts,
    pub(crate) client: SocketAddr,
    pub(crate) started_at: SystemTime,
    started: Instant,
    /// None when the request head could not be read far enough to know it.
    pub(crate) method: Option<Method>,
    pub(crate) version: Version,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) upstream_trace: UpstreamTrace,
    /// The span's ids and upstream tries, when the request is sampled for export.
    pub(crate) trace: Trace,
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
    /// The route's auth decision: `ok`, or why the credential was refused.
    pub(crate) auth: Option<&'static str>,
    /// The limit that refused the request (`SHED_LIMITS`: a circuit breaker, a pool), if one did.
    pub(crate) limit: Option<&'static str>,
    /// The worker (event loop) that served the request.
    pub(crate) worker: u16,
}

/// The text fields of a record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    RequestId,
    TraceId,
    /// The request target as the client sent it.
    Target,
    Host,
    UserAgent,
    Referer,
    /// Who `auth` says is calling.
    Identity,
    /// The path and query sent upstream, when a rewrite changed them.
    UpstreamTarget,
}

const TEXT_FIELDS: usize = 8;
/// Room for all text fields of a record; longer values are cut (the target keeps
/// its first 512 bytes, which is what a log reader needs; 1 KiB a record keeps the
/// records in flight to the writer thread within the caches).
const TEXT_CAPACITY: usize = 1024;
/// At most this much of one field.
const TEXT_FIELD_MAX: usize = 512;

/// Text fields copied into one inline buffer.
pub(crate) struct Texts {
    buf: [u8; TEXT_CAPACITY],
    len: u16,
    /// (start, length) per field; `ABSENT` when not set.
    spans: [(u16, u16); TEXT_FIELDS],
}

const ABSENT: (u16, u16) = (u16::MAX, 0);

impl Texts {
    fn new() -> Self {
        Texts { buf: [0; TEXT_CAPACITY], len: 0, spans: [ABSENT; TEXT_FIELDS] }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spans = [ABSENT; TEXT_FIELDS];
    }

    /// Copies `value` (cut to what fits) as `field`.
    pub(crate) fn set(&mut self, field: Text, value: &[u8]) {
        let start = usize::from(self.len);
        let n = value.len().min(TEXT_FIELD_MAX).min(TEXT_CAPACITY - start);
        self.buf[start..start + n].copy_from_slice(&value[..n]);
        self.len += n as u16;
        self.spans[field as usize] = (start as u16, n as u16);
    }

    /// Replaces `field` with `value` in place when `value` is no longer (a redaction);
    /// otherwise sets it anew.
    pub(crate) fn replace(&mut self, field: Text, value: &[u8]) {
        let (start, len) = self.spans[field as usize];
        if start == u16::MAX || value.len() > usize::from(len) {
            return self.set(field, value);
        }
        let start = usize::from(start);
        self.buf[start..start + value.len()].copy_from_slice(value);
        self.spans[field as usize].1 = value.len() as u16;
    }

    pub(crate) fn get(&self, field: Text) -> Option<&[u8]> {
        let (start, len) = self.spans[field as usize];
        (start != u16::MAX).then(|| &self.buf[usize::from(start)..usize::from(start) + usize::from(len)])
    }

    /// A field as text for log lines; "-" when absent or not UTF-8.
    pub(crate) fn str(&self, field: Text) -> &str {
        self.get(field).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("-")
    }
}

impl std::fmt::Debug for Texts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Texts").field("request_id", &self.str(Text::RequestId)).finish_non_exhaustive()
    }
}

/// What the upstream layer did for one request: which endpoint answered, after how many tries.
#[derive(Default)]
pub(crate) struct UpstreamTrace {
    pub(crate) endpoint: Option<Arc<str>>,
    /// Connections tried (connect failures and stale pooled connections included).
    pub(crate) attempts: u32,
    /// The endpoint's balancer state, told how the request ended when the record does:
    /// the balancer learns from records, it keeps no counts of its own.
    pub(crate) feedback: Option<Arc<dyn Feedback>>,
}

impl std::fmt::Debug for UpstreamTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTrace").field("endpoint", &self.endpoint).field("attempts", &self.attempts).finish()
    }
}

/// Whoever learns from a finished request (the balancer's per-endpoint state).
pub(crate) trait Feedback: Send + Sync {
    /// The request this endpoint was serving ended: `outcome` says how.
    fn finished(&self, outcome: &Outcome);

    /// The request could not use this endpoint (its connect failed) and moved on.
    fn attempt_failed(&self);

    /// The request's attempt here lost a hedging race: nothing learnt either way.
    fn cancelled(&self);
}

impl Outcome {
    fn empty() -> Self {
        Outcome {
            texts: Texts::new(),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            started_at: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            method: None,
            version: Version::HTTP_11,
            route: None,
            upstream: None,
            upstream_trace: UpstreamTrace::default(),
            trace: Trace::default(),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_head: None,
            total: Duration::ZERO,
            error: None,
            end: End::Complete,
            cache: None,
            auth: None,
            limit: None,
            worker: 0,
        }
    }

    /// Makes a (recycled) record new, for a request that begins now.
    fn reset(&mut self, client: SocketAddr, request_id: &HeaderValue) {
        // Field by field: the text buffer is only cleared, not rebuilt.
        self.texts.clear();
        self.texts.set(Text::RequestId, request_id.as_bytes());
        self.client = client;
        self.started = Instant::now();
        self.method = None;
        self.version = Version::HTTP_11;
        self.route = None;
        self.upstream = None;
        self.upstream_trace = UpstreamTrace::default();
        self.trace.clear();
        self.status = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.upstream_head = None;
        self.total = Duration::ZERO;
        self.error = None;
        self.end = End::Complete;
        self.cache = None;
        self.auth = None;
        self.limit = None;
    }

    /// Makes this record a copy of `other` (a recycled box's vectors keep their room).
    /// Every field is named, so that a field added to the record cannot be left out.
    fn copy_from(&mut self, other: &Outcome) {
        let Outcome {
            texts,
            client,
            started_at,
            started,
            method,
            version,
            route,
            upstream,
            upstream_trace,
            trace,
            status,
            bytes_in,
            bytes_out,
            upstream_head,
            total,
            error,
            end,
            cache,
            auth,
            limit,
            worker,
        } = other;
        self.texts.buf = texts.buf;
        self.texts.len = texts.len;
        self.texts.spans = texts.spans;
        self.client = *client;
        self.started_at = *started_at;
        self.started = *started;
        self.method.clone_from(method);
        self.version = *version;
        self.route.clone_from(route);
        self.upstream.clone_from(upstream);
        self.upstream_trace.endpoint.clone_from(&upstream_trace.endpoint);
        self.upstream_trace.attempts = upstream_trace.attempts;
        // The balancer hears of a request once, from the original.
        self.upstream_trace.feedback = None;
        self.trace.ids = trace.ids;
        self.trace.trace_id = trace.trace_id;
        self.trace.tries.clone_from(&trace.tries);
        self.status = *status;
        self.bytes_in = *bytes_in;
        self.bytes_out = *bytes_out;
        self.upstream_head = *upstream_head;
        self.total = *total;
        self.error = *error;
        self.end = *end;
        self.cache = *cache;
        self.auth = *auth;
        self.limit = *limit;
        self.worker = *worker;
    }

    /// For a head the connection refused: the method and target of its request line, if
    /// it had the shape of one (`METHOD TARGET ...`); otherwise both stay unknown (null
    /// in the access log), never made up.
    pub(crate) fn describe_refused(&mut self, raw: &[u8]) {
        let start = raw.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(raw.len());
        let raw = &raw[start..];
        let line = &raw[..raw.iter().position(|b| *b == b'\n').unwrap_or(raw.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|b| *b == b' ');
        let method = parts.next().filter(|m| !m.is_empty() && m.len() <= 32).and_then(|m| Method::from_bytes(m).ok());
        let target = parts.next().filter(|t| !t.is_empty());
        if let (Some(method), Some(target)) = (method, target) {
            self.method = Some(method);
            self.texts.set(Text::Target, target);
        }
    }

    /// The request's line and the headers the access log shows. Only copied when some
    /// reader of records shows text (`Outcomes::shows_text`): without an access log, a
    /// request skips the lookups and copies.
    pub(crate) fn describe<B>(&mut self, request: &http::Request<B>) {
        self.method = Some(request.method().clone());
        self.version = request.version();
        let uri = request.uri();
        match (uri.scheme_str(), uri.authority(), uri.path_and_query()) {
            // Absolute form, as HTTP/1 proxies receive it: shown whole.
            (Some(scheme), Some(authority), path) if self.version != Version::HTTP_2 => {
                let full = [scheme, "://", authority.as_str(), path.map_or("", |p| p.as_str())].concat();
                self.texts.set(Text::Target, full.as_bytes());
            }
            (_, _, Some(path)) => self.texts.set(Text::Target, path.as_str().as_bytes()),
            _ => self.texts.set(Text::Target, uri.to_string().as_bytes()),
        }
        let headers = request.headers();
        for (field, name) in [
            (Text::Host, http::header::HOST),
            (Text::UserAgent, http::header::USER_AGENT),
            (Text::Referer, http::header::REFERER),
        ] {
            if let Some(value) = headers.get(name) {
                self.texts.set(field, value.as_bytes());
            }
        }
    }

    /// The request id, for log lines.
    pub(crate) fn request_id(&self) -> &str {
        self.texts.str(Text::RequestId)
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
    /// The record of a request that begins now.
    pub(crate) fn begin(client: SocketAddr, request_id: &HeaderValue, sink: &Arc<Outcomes>) -> Self {
        let mut outcome = recycle::take();
        outcome.reset(client, request_id);
        outcome.worker = sink.worker;
        Record { outcome: Some(outcome), sink: Arc::clone(sink), meter: None }
    }

    pub(crate) fn outcome(&mut self) -> &mut Outcome {
        // Present until `finish` or drop, which take `self`; never replaced in between.
        self.outcome.get_or_insert_with(|| Box::new(Outcome::empty()))
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
    /// Requests by the class of their status: 1xx..5xx (index 0 = no status sent); the
    /// request total is their sum.
    pub(crate) by_class: [AtomicU64; 6],
    /// Requests refused as the client's fault (a 4xx sluice made).
    pub(crate) client_errors: AtomicU64,
    pub(crate) upstream_broke: AtomicU64,
    pub(crate) client_gone: AtomicU64,
    pub(crate) send_timeouts: AtomicU64,
    /// Requests refused by a limit, by `SHED_LIMITS`.
    pub(crate) shed: [AtomicU64; SHED_LIMITS.len()],
}

/// The limits that refuse requests today (a record's `limit`): a group's circuit breaker
/// (requests in flight, requests waiting for a connection) and a pool out of connections.
pub(crate) const SHED_LIMITS: [&str; 7] =
    ["max_requests", "max_pending", "queue", "rate", "adaptive", "upstream_paced", "upstream_rate"];

/// Where one worker's finished records go: its own totals (no cache line is shared
/// between workers per request), and the process's access log.
pub(crate) struct Outcomes {
    pub(crate) tally: Tally,
    /// Per route and group, when metrics are on (an admin listener is configured).
    pub(crate) series: Option<series::SeriesSet>,
    access_log: Option<Arc<AccessLog>>,
    /// Where sampled requests' spans go (`[tracing]`).
    spans: Option<Arc<SpanExport>>,
    worker: u16,
}

impl Tally {
    pub(crate) fn requests(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Outcomes {
    /// Worker `worker`'s records, written to `access_log` when there is one.
    pub(crate) fn new(
        access_log: Option<Arc<AccessLog>>,
        spans: Option<Arc<SpanExport>>,
        worker: u16,
        metrics: bool,
    ) -> Self {
        Outcomes { tally: Tally::default(), series: metrics.then(Default::default), access_log, spans, worker }
    }

    /// The share of new traces to sample, when spans are exported.
    pub(crate) fn sample_ratio(&self) -> Option<f64> {
        self.spans.as_ref().map(|spans| spans.sample_ratio)
    }

    /// The one place a finished record is counted and passed on.
    fn record(&self, mut outcome: Box<Outcome>) {
        if let Some(feedback) = outcome.upstream_trace.feedback.take() {
            feedback.finished(&outcome);
        }
        if self.shows_text() || outcome.sampled() {
            // The wall-clock start labels the line and the span; read once, at the end,
            // and only for them (the monotonic clock measures).
            outcome.started_at = SystemTime::now().checked_sub(outcome.total).unwrap_or(SystemTime::UNIX_EPOCH);
        }
        let tally = &self.tally;
        let class = usize::from(outcome.status / 100).min(5);
        tally.by_class[class].fetch_add(1, Ordering::Relaxed);
        if outcome.error.is_some_and(|kind| kind.starts_with("client_")) {
            tally.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(series) = &self.series {
            series.record(&outcome);
        }
        if let Some(index) = outcome.limit.and_then(|limit| SHED_LIMITS.iter().position(|&l| l == limit)) {
            tally.shed[index].fetch_add(1, Ordering::Relaxed);
        }
        match outcome.end {
            End::UpstreamBroke => tally.upstream_broke.fetch_add(1, Ordering::Relaxed),
            End::ClientGone => tally.client_gone.fetch_add(1, Ordering::Relaxed),
            End::SendTimeout => tally.send_timeouts.fetch_add(1, Ordering::Relaxed),
            End::Complete | End::TunnelClosed => 0,
        };
        if tracing::enabled!(target: "sluice::request", tracing::Level::DEBUG) {
            let mut line = Vec::with_capacity(1024);
            format::json_line(&outcome, &mut line);
            tracing::debug!(target: "sluice::request", "{}", String::from_utf8_lossy(&line));
        }
        if let Some(spans) = self.spans.as_ref().filter(|_| outcome.sampled()) {
            if self.access_log.is_none() {
                spans.send(outcome);
                return;
            }
            spans.send(recycle::copy_of(&outcome));
        }
        match &self.access_log {
            Some(log) => log.send(outcome),
            None => recycle::keep(outcome),
        }
    }

    /// Whether finished records are shown as text (an access log, or request records at
    /// debug level), so that a request copies its target and headers into its record.
    pub(crate) fn shows_text(&self) -> bool {
        self.access_log.is_some() || tracing::enabled!(target: "sluice::request", tracing::Level::DEBUG)
    }
}

impl Tally {
    /// Adds `other`'s totals to these (for the process's totals over its workers).
    pub(crate) fn add(&self, other: &Tally) {
        let add = |to: &AtomicU64, from: &AtomicU64| to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        for (to, from) in self.by_class.iter().zip(&other.by_class) {
            add(to, from);
        }
        add(&self.client_errors, &other.client_errors);
        add(&self.upstream_broke, &other.upstream_broke);
        add(&self.client_gone, &other.client_gone);
        add(&self.send_timeouts, &other.send_timeouts);
        for (to, from) in self.shed.iter().zip(&other.shed) {
            add(to, from);
        }
    }
}
