//! Header rewriting between client and upstream: hop-by-hop headers removed (RFC 9110
//! §7.6.1), forwarding headers added, request ids, W3C trace context.

use std::net::IpAddr;

use std::hash::BuildHasher;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

pub(crate) use crate::http1::hop::remove_hop_by_hop;
pub(crate) use crate::http1::X_REQUEST_ID;
use crate::outcome::{read_hex, write_hex, SpanIds};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Removes header fields whose names have `_`: CGI and WSGI servers turn `-` into `_`
/// to name headers, so `X_Forwarded_For` would reach them as `X-Forwarded-For`,
/// beside or instead of the one sluice wrote (nginx drops them by default too).
pub(crate) fn remove_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|name| name.as_str().contains('_')).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Joins several `Cookie` fields into one, "; "-separated (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let parts: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(joined) = HeaderValue::from_maybe_shared(Bytes::from(parts.join(&b"; "[..]))) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Whether the client asked for trailers (`TE: trailers`), which gRPC needs end to end.
pub(crate) fn wants_trailers(headers: &HeaderMap) -> bool {
    crate::http1::has_token(headers, &header::TE, "trailers")
}

/// Adds X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Via. A trusted
/// The client's address: the peer's, or, when the peer is a trusted proxy, the
/// rightmost X-Forwarded-For address that is not one (nginx's `real_ip_recursive`):
/// entries left of the last untrusted hop were written by whoever the client is.
pub(crate) fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[sluice_config::IpNetwork]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|network| network.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&HeaderValue> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
    for value in values.iter().rev() {
        let Ok(text) = value.to_str() else { return client };
        for hop in text.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// proxy's X-Forwarded-For is extended with its address; anyone else's is replaced, so
/// that a client cannot make the upstream believe it comes from another address.
/// One allocation at most per value: these run on every request.
pub(crate) fn add_forwarding(
    headers: &mut HeaderMap,
    client: IpAddr,
    trusted: bool,
    tls: bool,
    host: Option<&HeaderValue>,
    version: Version,
) {
    let mut forwarded_for = Vec::with_capacity(48);
    let prior: Vec<&[u8]> = if trusted {
        headers.get_all(&X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes).collect()
    } else {
        Vec::new()
    };
    for value in prior {
        forwarded_for.extend_from_slice(value);
        forwarded_for.extend_from_slice(b", ");
    }
    // Without `std::fmt`: formatting the address was ~1,000 instructions a request (callgrind).
    crate::outcome::format::ip(&mut forwarded_for, client);
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    let hop: &[u8] = if version == Version::HTTP_2 { b"2 sluice" } else { b"1.1 sluice" };
    let via = match headers.get(header::VIA) {
        Some(prior) => HeaderValue::from_maybe_shared(Bytes::from([prior.as_bytes(), b", ", hop].concat()))
            .unwrap_or(HeaderValue::from_static("1.1 sluice")),
        None => HeaderValue::from_static(if version == Version::HTTP_2 { "2 sluice" } else { "1.1 sluice" }),
    };
    headers.insert(header::VIA, via);
}

/// The client's `x-request-id` when it is a sane token.
fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let id = headers.get(&X_REQUEST_ID)?;
    let sane = !id.is_empty() && id.len() <= 128 && id.as_bytes().iter().all(|b| b.is_ascii_graphic());
    sane.then(|| id.clone())
}

/// Unpredictable 64-bit values: SipHash, keyed per thread from the OS's randomness
/// (std's `RandomState`), of a per-thread counter. Without the key an observer cannot
/// tell consecutive values apart from random ones, so ids reveal neither request
/// volume nor order; and it costs ~60 instructions a value where a ChaCha generator
/// cost ~400 (callgrind).
fn unpredictable<const N: usize>() -> [u64; N] {
    thread_local! {
        static KEYED: (std::collections::hash_map::RandomState, std::cell::Cell<u64>) =
            (std::collections::hash_map::RandomState::new(), std::cell::Cell::new(0));
    }
    KEYED
        .try_with(|(key, counter)| {
            let n = counter.get();
            counter.set(n.wrapping_add(1));
            std::array::from_fn(|i| key.hash_one((n, i)))
        })
        // A thread being torn down: a fresh key (itself random) does.
        .unwrap_or_else(|_| {
            let key = std::collections::hash_map::RandomState::new();
            std::array::from_fn(|i| key.hash_one(i))
        })
}

/// 32 unpredictable hex digits: for requests the connection layer refused (`identify`
/// makes the others).
pub(crate) fn new_request_id() -> HeaderValue {
    let [a, b] = unpredictable::<2>();
    let mut id = [0u8; 32];
    write_hex(&mut id[..16], a);
    write_hex(&mut id[16..], b);
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// A request's identity: its id (the client's when sane, else new), its W3C trace id
/// (32 hex digits), and its span's ids when the trace is sampled for export.
pub(crate) struct Ids {
    pub(crate) request_id: HeaderValue,
    pub(crate) trace_id: [u8; 32],
    pub(crate) span: Option<SpanIds>,
}

/// The request id and W3C Trace Context, from one draw of the generator and one
/// allocation. A valid `traceparent` is continued with sluice's own span as the parent
/// (trace id and flags kept); a missing or malformed one starts a trace whose id is
/// the request id, so that the two can be matched. `tracestate` passes untouched.
///
/// With span export on (`sample_ratio`), a continued trace is sampled when its sampled
/// flag says so (the parent decides, as OpenTelemetry's parent-based sampler does); a
/// trace sluice starts is sampled at `sample_ratio`, and then flagged sampled for the
/// upstream too.
pub(crate) fn identify(headers: &mut HeaderMap, sample_ratio: Option<f64>) -> Ids {
    let [a, b] = unpredictable::<2>();
    // [new request id: 32][traceparent: 55]
    let mut raw = *b"0000000000000000000000000000000000-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut raw[..16], a);
    write_hex(&mut raw[16..32], b.max(1));
    raw[32..35].copy_from_slice(b"00-");
    let mut parent = None;
    match headers.get(&TRACEPARENT).map(HeaderValue::as_bytes).filter(|v| valid_traceparent(v)) {
        Some(prior) => {
            raw[35..67].copy_from_slice(&prior[3..35]);
            raw[85..87].copy_from_slice(&prior[53..55]);
            parent = prior[36..52].try_into().ok();
        }
        None => {
            raw.copy_within(..32, 35);
            // 53 random bits against the ratio: a uniform draw in [0, 1).
            if sample_ratio.is_some_and(|ratio| ((a >> 11) as f64) < ratio * (1u64 << 53) as f64) {
                raw[86] = b'1';
            }
        }
    }
    // The span id need only differ from other spans: mixed from the same draw.
    write_hex(&mut raw[68..84], (a ^ b.rotate_left(32)).max(1));
    let sampled = sample_ratio.is_some() && read_hex(&raw[85..87]) & 1 == 1;
    let span = sampled.then(|| SpanIds { span_id: raw[68..84].try_into().unwrap_or([b'0'; 16]), parent });
    let shared = Bytes::copy_from_slice(&raw);
    let value = |range: std::ops::Range<usize>| {
        HeaderValue::from_maybe_shared(shared.slice(range)).unwrap_or(HeaderValue::from_static("0"))
    };
    headers.insert(TRACEPARENT.clone(), value(32..87));
    let request_id = client_request_id(headers).unwrap_or_else(|| value(0..32));
    let mut trace_id = [0u8; 32];
    trace_id.copy_from_slice(&raw[35..67]);
    Ids { request_id, trace_id, span }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero (W3C Trace Context §3.2).
/// A later version may be longer; its first 55 bytes are read as version 00.
fn valid_traceparent(v: &[u8]) -> bool {
    let lower_hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let not_zero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    let version_ok = match v.get(..2) {
        Some(b"00") => v.len() == 55,
        Some(ver) => lower_hex(ver) && ver != b"ff" && (v.len() == 55 || v.get(55) == Some(&b'-')),
        None => false,
    };
    version_ok
        && v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && lower_hex(&v[3..35])
        && lower_hex(&v[36..52])
        && lower_hex(&v[53..55])
        && not_zero(&v[3..35])
        && not_zero(&v[36..52])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        m
    }

    #[test]
    fn the_client_address_is_the_rightmost_untrusted_hop() {
        let trusted = [sluice_config::IpNetwork { address: "10.0.0.0".parse().expect("ip"), prefix: 8 }];
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.0.0.5");
        let two_hops = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4"), ("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(client_address(&two_hops, proxy, &trusted), ip("1.2.3.4"), "what the client wrote is left of it");
        assert_eq!(
            client_address(&two_hops, ip("9.9.9.9"), &trusted),
            ip("9.9.9.9"),
            "an untrusted peer is the client"
        );
        assert_eq!(client_address(&map(&[]), proxy, &trusted), proxy, "a trusted peer that says nothing");
        let garbage = map(&[("x-forwarded-for", "junk, 10.0.0.7")]);
        assert_eq!(client_address(&garbage, proxy, &trusted), ip("10.0.0.7"), "the last address that parsed");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("trailer", "grpc-status"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("accept"));
        assert!(h.contains_key("trailer"), "an end-to-end declaration (RFC 9110 §6.6.2)");

        // Fields named by a second Connection line, and by one that names only itself.
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", " x-a ,, X-B"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("close", "3"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["close", "accept"]);
        let mut h = map(&[("connection", "Close, x-a"), ("x-a", "1"), ("close", "3"), ("date", "d")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["date"]);
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn forwarding_headers_append_to_what_came_before() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("via", "1.0 edge")]);
        let host = HeaderValue::from_static("api.example.com");
        add_forwarding(&mut h, "127.0.0.2".parse().expect("ip"), true, true, Some(&host), Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.0 edge, 1.1 sluice");

        let mut spoofed = map(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8")]);
        add_forwarding(&mut spoofed, "127.0.0.2".parse().expect("ip"), false, false, None, Version::HTTP_11);
        assert_eq!(spoofed.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.2"]);
    }

    fn trace(headers: &mut HeaderMap) -> String {
        String::from_utf8_lossy(&identify(headers, None).trace_id).into_owned()
    }

    #[test]
    fn traceparent_is_continued_when_valid_and_made_when_not() {
        let prior = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", prior), ("tracestate", "congo=t61rcWkgMzE")]);
        assert_eq!(trace(&mut h), "4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = h["traceparent"].to_str().expect("ascii").to_string();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7", "sluice's span is the new parent");
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = map(&[("traceparent", bad)]);
            let id = trace(&mut h);
            assert!(valid_traceparent(h["traceparent"].as_bytes()), "{bad}");
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let mut none = HeaderMap::new();
        let ids = identify(&mut none, None);
        assert_eq!(&none["traceparent"].as_bytes()[3..35], &ids.trace_id[..]);
        assert_eq!(&ids.trace_id[..], ids.request_id.as_bytes(), "a trace sluice starts has the request's id");
        assert!(valid_traceparent(none["traceparent"].as_bytes()));
    }

    #[test]
    fn sampling_follows_the_parent_and_else_the_ratio() {
        let parent = |flags: &str| format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        let span = |pairs: &[(&str, &str)], ratio| identify(&mut map(pairs), ratio).span;
        let sampled = span(&[("traceparent", &parent("01"))], Some(0.0)).expect("the parent sampled it");
        assert_eq!(&sampled.parent.expect("parent"), b"00f067aa0ba902b7");
        assert!(span(&[("traceparent", &parent("00"))], Some(1.0)).is_none(), "the parent did not sample it");
        assert!(span(&[("traceparent", &parent("01"))], None).is_none(), "export is off");
        let mut fresh = HeaderMap::new();
        let ids = identify(&mut fresh, Some(1.0));
        let sent = fresh["traceparent"].to_str().expect("ascii");
        assert!(sent.ends_with("-01"), "a sampled new trace says so upstream: {sent}");
        assert_eq!(ids.span.expect("sampled").span_id, sent.as_bytes()[36..52]);
        let taken = (0..2000).filter(|_| span(&[], Some(0.25)).is_some()).count();
        assert!((400..600).contains(&taken), "{taken} of 2000 sampled at 0.25");
        assert!(span(&[], Some(0.0)).is_none());
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_unique_when_new() {
        let request_id = |pairs: &[(&str, &str)]| identify(&mut map(pairs), None).request_id;
        assert_eq!(request_id(&[("x-request-id", "abc-123")]), "abc-123");
        let a = request_id(&[("x-request-id", "has space")]);
        let b = request_id(&[]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        // Consecutive ids share no counter: their halves differ too.
        assert_ne!(a.as_bytes()[..16], b.as_bytes()[..16]);
        assert_ne!(a.as_bytes()[16..], b.as_bytes()[16..]);
    }
}
