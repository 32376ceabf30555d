//! A finished request as OTLP spans, in OTLP/HTTP's JSON encoding (the OpenTelemetry
//! protocol's protobuf messages in proto3 JSON; ids as lower-case hex, 64-bit integers
//! as strings, enums as numbers). One server span per request, and a client span per
//! upstream try as its child. Attribute names follow OpenTelemetry's HTTP semantic
//! conventions; sluice's own are under `sluice.`.
//!
//! Encoded on the exporter's thread from the request's record itself (moved there, or
//! copied into a recycled box when the access log needs it too), never on the request
//! path; and without `std::fmt` or allocation per span (callgrind: the first version,
//! which copied fields into owned strings and formatted the client address, cost ~10k
//! instructions per request on the exporter thread).

use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;

use super::super::format::{decimal, ip, json_escaped, json_string};
use super::super::trace::{read_hex, write_hex, Try};
use super::super::{End, Outcome, Text};

/// Spans a record makes: its own and one per upstream try.
pub(crate) fn spans_of(o: &Outcome) -> u64 {
    1 + o.trace.tries.len() as u64
}

fn failed(o: &Outcome) -> bool {
    o.status >= 500 || o.end == End::UpstreamBroke
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
pub(crate) fn encode(resource: &Resource, batch: &[Box<Outcome>], out: &mut Vec<u8>) {
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
    for record in batch {
        let Some(ids) = record.trace.ids else { continue };
        server_span(record, &ids.span_id, ids.parent.as_ref(), out, &mut first);
        let last = record.trace.tries.len().saturating_sub(1);
        for (index, attempt) in record.trace.tries.iter().enumerate() {
            client_span(record, &ids.span_id, index, index == last, attempt, out, &mut first);
        }
    }
    out.extend_from_slice(b"]}]}]}");
}

fn server_span(o: &Outcome, span_id: &[u8; 16], parent: Option<&[u8; 16]>, out: &mut Vec<u8>, first: &mut bool) {
    let method = o.method.as_ref().map_or(&b"HTTP"[..], |m| m.as_str().as_bytes());
    let name: &[&[u8]] = match &o.route {
        Some(route) => &[method, b" ", route.as_bytes()],
        None => &[method],
    };
    let parent = parent.map(|p| &p[..]);
    let head = SpanHead { trace_id: &o.trace.trace_id, span_id, parent, name, kind: KIND_SERVER };
    head.write(out, first, o.started_at, o.started_at + o.total);
    let mut attrs = Attrs::new(out);
    attrs.text("http.request.method", method);
    if let Some(target) = o.texts.get(Text::Target) {
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], Some(&target[q + 1..])),
            None => (target, None),
        };
        attrs.text("url.path", path);
        if let Some(query) = query {
            attrs.text("url.query", query);
        }
    }
    if let Some(host) = o.texts.get(Text::Host) {
        attrs.text("server.address", host);
    }
    attrs.key("client.address", b"stringValue");
    attrs.out.push(b'"');
    ip(attrs.out, o.client.ip());
    attrs.out.extend_from_slice(b"\"}}");
    attrs.text("network.protocol.version", protocol_version(o.version));
    if let Some(agent) = o.texts.get(Text::UserAgent) {
        attrs.text("user_agent.original", agent);
    }
    if o.status != 0 {
        attrs.int("http.response.status_code", u64::from(o.status));
    }
    attrs.int("http.request.body.size", o.bytes_in);
    attrs.int("http.response.body.size", o.bytes_out);
    if let Some(error) = o.error {
        attrs.text("error.type", error.as_bytes());
    }
    if let Some(id) = o.texts.get(Text::RequestId) {
        attrs.text("sluice.request_id", id);
    }
    for (key, value) in [("sluice.route", &o.route), ("sluice.upstream", &o.upstream)] {
        if let Some(value) = value {
            attrs.text(key, value.as_bytes());
        }
    }
    if let Some(cache) = o.cache {
        attrs.text("sluice.cache", cache.as_bytes());
    }
    if let Some(limit) = o.limit {
        attrs.text("sluice.limit", limit.as_bytes());
    }
    attrs.text("sluice.end", o.end.as_str().as_bytes());
    span_tail(out, failed(o));
}

fn client_span(
    o: &Outcome,
    request_span: &[u8; 16],
    index: usize,
    last: bool,
    attempt: &Try,
    out: &mut Vec<u8>,
    first: &mut bool,
) {
    let method = o.method.as_ref().map_or(&b"HTTP"[..], |m| m.as_str().as_bytes());
    let upstream = o.upstream.as_deref().unwrap_or("upstream").as_bytes();
    let span_id = try_span_id(request_span, index);
    let head = SpanHead {
        trace_id: &o.trace.trace_id,
        span_id: &span_id,
        parent: Some(request_span),
        name: &[method, b" ", upstream],
        kind: KIND_CLIENT,
    };
    let end = attempt.end.unwrap_or(o.total);
    head.write(out, first, o.started_at + attempt.start, o.started_at + end);
    let mut attrs = Attrs::new(out);
    attrs.text("http.request.method", method);
    let (host, port) = attempt.endpoint.rsplit_once(':').unwrap_or((&attempt.endpoint, ""));
    attrs.text("server.address", host.trim_start_matches('[').trim_end_matches(']').as_bytes());
    if let Ok(port) = port.parse::<u16>() {
        attrs.int("server.port", u64::from(port));
    }
    if index > 0 {
        attrs.int("http.request.resend_count", index as u64);
    }
    // The last try's answer is the response (unless sluice answered itself after it).
    let answered = last && attempt.failure.is_none() && o.status != 0 && o.error.is_none();
    if answered {
        attrs.int("http.response.status_code", u64::from(o.status));
    }
    let failure = attempt.failure.or(if last { o.error } else { None });
    if let Some(failure) = failure {
        attrs.text("error.type", failure.as_bytes());
    }
    if attempt.hedge {
        attrs.boolean("sluice.hedge", true);
    }
    let failed = failure.is_some_and(|f| f != "hedge_lost") || (answered && o.status >= 500);
    span_tail(out, failed);
}

/// A try's span id: the request's span id mixed with the try's index (64 bits, never 0).
fn try_span_id(request_span: &[u8; 16], index: usize) -> [u8; 16] {
    let mut x = read_hex(request_span) ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let mut out = [0u8; 16];
    write_hex(&mut out, x.max(1));
    out
}

fn protocol_version(version: Version) -> &'static [u8] {
    match version {
        Version::HTTP_2 => b"2",
        Version::HTTP_10 => b"1.0",
        _ => b"1.1",
    }
}

/// What a span's JSON object starts with.
struct SpanHead<'a> {
    trace_id: &'a [u8; 32],
    span_id: &'a [u8; 16],
    parent: Option<&'a [u8]>,
    /// Written one after the other (no string is built for it).
    name: &'a [&'a [u8]],
    kind: u8,
}

impl SpanHead<'_> {
    /// `{"traceId":...,"attributes":[` (the caller writes the attributes and the tail).
    fn write(&self, out: &mut Vec<u8>, first: &mut bool, start: SystemTime, end: SystemTime) {
        if !std::mem::take(first) {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"traceId\":\"");
        out.extend_from_slice(self.trace_id);
        out.extend_from_slice(b"\",\"spanId\":\"");
        out.extend_from_slice(self.span_id);
        out.push(b'"');
        if let Some(parent) = self.parent {
            out.extend_from_slice(b",\"parentSpanId\":\"");
            out.extend_from_slice(parent);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"name\":\"");
        for part in self.name {
            json_escaped(out, part);
        }
        out.extend_from_slice(b"\",\"kind\":");
        decimal(out, u64::from(self.kind));
        out.extend_from_slice(b",\"startTimeUnixNano\":\"");
        decimal(out, unix_nanos(start));
        out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
        decimal(out, unix_nanos(end));
        out.extend_from_slice(b"\",\"attributes\":[");
    }
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
