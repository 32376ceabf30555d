//! A finished request as OTLP spans, in OTLP/HTTP's JSON encoding (the OpenTelemetry
//! protocol's protobuf messages in proto3 JSON; ids as lower-case hex, 64-bit integers
//! as strings, enums as numbers). One server span per request, and a client span per
//! upstream try as its child. Attribute names follow OpenTelemetry's HTTP semantic
//! conventions; sluice's own are under `sluice.`.
//!
//! Encoded on the exporter's thread, never on the request path: the request path only
//! copies what the span needs out of its record (`FinishedSpan::from_outcome`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use super::super::format::{decimal, json_string};
use super::super::trace::{SpanIds, Try};
use super::super::{End, Outcome, Text, TEXT_FIELDS};

/// What a span needs from a record, owned (the record goes on to the access log).
pub(crate) struct FinishedSpan {
    trace_id: [u8; 32],
    ids: SpanIds,
    start: SystemTime,
    total: Duration,
    method: Method,
    version: Version,
    /// The record's text fields, copied compactly.
    texts: Box<[u8]>,
    spans: [(u16, u16); TEXT_FIELDS],
    client: SocketAddr,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    status: u16,
    error: Option<&'static str>,
    cache: Option<&'static str>,
    end: End,
    bytes_in: u64,
    bytes_out: u64,
    tries: Vec<Try>,
}

impl FinishedSpan {
    /// The span of a sampled record (None when it is not sampled). Takes its tries.
    pub(crate) fn from_outcome(o: &mut Outcome) -> Option<Self> {
        let ids = o.trace.ids?;
        let used = usize::from(o.texts.len);
        Some(FinishedSpan {
            trace_id: o.trace.trace_id,
            ids,
            start: o.started_at,
            total: o.total,
            method: o.method.clone(),
            version: o.version,
            texts: o.texts.buf[..used].into(),
            spans: o.texts.spans,
            client: o.client,
            route: o.route.clone(),
            upstream: o.upstream.clone(),
            status: o.status,
            error: o.error,
            cache: o.cache,
            end: o.end,
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            tries: std::mem::take(&mut o.trace.tries),
        })
    }

    fn text(&self, field: Text) -> Option<&[u8]> {
        let (start, len) = self.spans[field as usize];
        (start != u16::MAX).then(|| self.texts.get(usize::from(start)..usize::from(start) + usize::from(len))).flatten()
    }

    /// Spans this request makes besides its own: one per upstream try.
    pub(crate) fn tries_len(&self) -> usize {
        self.tries.len()
    }

    fn failed(&self) -> bool {
        self.status >= 500 || self.end == End::UpstreamBroke
    }
}

/// Who sends the spans: OTLP's resource.
pub(crate) struct Resource {
    pub(crate) service_name: String,
    pub(crate) host_name: Option<String>,
}

const KIND_SERVER: u8 = 2;
const KIND_CLIENT: u8 = 3;
const STATUS_ERROR: u8 = 2;

/// One export request's body: every span of `batch` under one resource and scope.
pub(crate) fn encode(resource: &Resource, batch: &[FinishedSpan], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    let mut attrs = Attrs::new(out);
    attrs.text("service.name", resource.service_name.as_bytes());
    attrs.text("service.version", env!("CARGO_PKG_VERSION").as_bytes());
    attrs.int("process.pid", u64::from(std::process::id()));
    if let Some(host) = &resource.host_name {
        attrs.text("host.name", host.as_bytes());
    }
    out.extend_from_slice(b"]},\"scopeSpans\":[{\"scope\":{\"name\":\"sluice\",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\"},\"spans\":[");
    let mut first = true;
    for span in batch {
        server_span(span, out, &mut first);
        let last = span.tries.len().saturating_sub(1);
        for (index, attempt) in span.tries.iter().enumerate() {
            client_span(span, index, index == last, attempt, out, &mut first);
        }
    }
    out.extend_from_slice(b"]}]}]}");
}

fn server_span(span: &FinishedSpan, out: &mut Vec<u8>, first: &mut bool) {
    let name = match &span.route {
        Some(route) => [span.method.as_str(), " ", route].concat(),
        None => span.method.as_str().to_string(),
    };
    let parent = span.ids.parent.as_ref().map(|p| &p[..]);
    let end = span.start + span.total;
    span_head(out, first, &span.trace_id, &span.ids.span_id, parent, name.as_bytes(), KIND_SERVER, span.start, end);
    let mut attrs = Attrs::new(out);
    attrs.text("http.request.method", span.method.as_str().as_bytes());
    if let Some(target) = span.text(Text::Target) {
        let (path, query) =
            target.iter().position(|&b| b == b'?').map_or((target, None), |q| (&target[..q], Some(&target[q + 1..])));
        attrs.text("url.path", path);
        if let Some(query) = query {
            attrs.text("url.query", query);
        }
    }
    if let Some(host) = span.text(Text::Host) {
        attrs.text("server.address", host);
    }
    attrs.text("client.address", span.client.ip().to_string().as_bytes());
    attrs.text("network.protocol.version", protocol_version(span.version));
    if let Some(agent) = span.text(Text::UserAgent) {
        attrs.text("user_agent.original", agent);
    }
    if span.status != 0 {
        attrs.int("http.response.status_code", u64::from(span.status));
    }
    attrs.int("http.request.body.size", span.bytes_in);
    attrs.int("http.response.body.size", span.bytes_out);
    if let Some(error) = span.error {
        attrs.text("error.type", error.as_bytes());
    }
    if let Some(id) = span.text(Text::RequestId) {
        attrs.text("sluice.request_id", id);
    }
    for (key, value) in [("sluice.route", &span.route), ("sluice.upstream", &span.upstream)] {
        if let Some(value) = value {
            attrs.text(key, value.as_bytes());
        }
    }
    if let Some(cache) = span.cache {
        attrs.text("sluice.cache", cache.as_bytes());
    }
    attrs.text("sluice.end", span.end.as_str().as_bytes());
    span_tail(out, span.failed());
}

fn client_span(span: &FinishedSpan, index: usize, last: bool, attempt: &Try, out: &mut Vec<u8>, first: &mut bool) {
    let upstream = span.upstream.as_deref().unwrap_or("upstream");
    let name = [span.method.as_str(), " ", upstream].concat();
    let span_id = try_span_id(&span.ids.span_id, index);
    let start = span.start + attempt.start;
    let end = span.start + attempt.end.unwrap_or(span.total);
    span_head(out, first, &span.trace_id, &span_id, Some(&span.ids.span_id), name.as_bytes(), KIND_CLIENT, start, end);
    let mut attrs = Attrs::new(out);
    attrs.text("http.request.method", span.method.as_str().as_bytes());
    let (host, port) = attempt.endpoint.rsplit_once(':').unwrap_or((&attempt.endpoint, ""));
    attrs.text("server.address", host.trim_start_matches('[').trim_end_matches(']').as_bytes());
    if let Ok(port) = port.parse::<u16>() {
        attrs.int("server.port", u64::from(port));
    }
    if index > 0 {
        attrs.int("http.request.resend_count", index as u64);
    }
    // The last try's answer is the response (unless sluice answered itself after it).
    let answered = last && attempt.failure.is_none() && span.status != 0 && span.error.is_none();
    if answered {
        attrs.int("http.response.status_code", u64::from(span.status));
    }
    let failure = attempt.failure.or(if last { span.error } else { None });
    if let Some(failure) = failure {
        attrs.text("error.type", failure.as_bytes());
    }
    if attempt.hedge {
        attrs.boolean("sluice.hedge", true);
    }
    let failed = failure.is_some_and(|f| f != "hedge_lost") || (answered && span.status >= 500);
    span_tail(out, failed);
}

/// A try's span id: the request's span id mixed with the try's index (64 bits, never 0).
fn try_span_id(request_span: &[u8; 16], index: usize) -> [u8; 16] {
    let base = request_span.iter().fold(0u64, |n, &b| (n << 4) | u64::from(hex_value(b)));
    let mut x = base ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let x = x.max(1);
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[((x >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => 0,
    }
}

fn protocol_version(version: Version) -> &'static [u8] {
    match version {
        Version::HTTP_2 => b"2",
        Version::HTTP_10 => b"1.0",
        _ => b"1.1",
    }
}

#[allow(clippy::too_many_arguments)]
fn span_head(
    out: &mut Vec<u8>,
    first: &mut bool,
    trace_id: &[u8; 32],
    span_id: &[u8; 16],
    parent: Option<&[u8]>,
    name: &[u8],
    kind: u8,
    start: SystemTime,
    end: SystemTime,
) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"traceId\":\"");
    out.extend_from_slice(trace_id);
    out.extend_from_slice(b"\",\"spanId\":\"");
    out.extend_from_slice(span_id);
    out.push(b'"');
    if let Some(parent) = parent {
        out.extend_from_slice(b",\"parentSpanId\":\"");
        out.extend_from_slice(parent);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"name\":");
    json_string(out, name);
    out.extend_from_slice(b",\"kind\":");
    decimal(out, u64::from(kind));
    out.extend_from_slice(b",\"startTimeUnixNano\":\"");
    decimal(out, unix_nanos(start));
    out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    decimal(out, unix_nanos(end));
    out.extend_from_slice(b"\",\"attributes\":[");
}

fn span_tail(out: &mut Vec<u8>, failed: bool) {
    out.extend_from_slice(b"]");
    if failed {
        out.extend_from_slice(b",\"status\":{\"code\":");
        decimal(out, u64::from(STATUS_ERROR));
        out.push(b'}');
    }
    out.push(b'}');
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// An OTLP attribute list being written: `{"key":...,"value":{...}}` entries.
struct Attrs<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Attrs<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Attrs { out, first: true }
    }

    fn key(&mut self, key: &str, kind: &[u8]) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"{\"key\":\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\",\"value\":{\"");
        self.out.extend_from_slice(kind);
        self.out.extend_from_slice(b"\":");
    }

    fn text(&mut self, key: &str, value: &[u8]) {
        self.key(key, b"stringValue");
        json_string(self.out, value);
        self.out.extend_from_slice(b"}}");
    }

    fn int(&mut self, key: &str, value: u64) {
        self.key(key, b"intValue");
        self.out.push(b'"');
        decimal(self.out, value);
        self.out.extend_from_slice(b"\"}}");
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.key(key, b"boolValue");
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
        self.out.extend_from_slice(b"}}");
    }
}
