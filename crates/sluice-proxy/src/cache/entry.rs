//! A stored response: its head, its whole body, what the freshness rules need of it
//! (read once, when it is stored), the request values it varies on, and its tags.
//! Also its wire form for the shared tiers: a versioned binary layout written and read
//! here (a few length-prefixed fields; any malformed or other-version value reads as
//! a miss, never a panic).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use http::header::{
    HeaderName, HeaderValue, AGE, CACHE_CONTROL, DATE, ETAG, EXPIRES, LAST_MODIFIED, PRAGMA, SET_COOKIE, VARY,
};
use http::{HeaderMap, StatusCode};
use sluice_policy::cache::{self as rules, CacheControl, Heuristic, Stored, Timing};

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A date field in seconds since the epoch; None when absent or not a valid date.
pub(crate) fn date_field(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(value).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What the freshness rules read off a response's headers.
pub(crate) struct Facts {
    pub(crate) control: CacheControl,
    pub(crate) timing: Timing,
    pub(crate) lifetime: u64,
    pub(crate) explicit_lifetime: bool,
    pub(crate) has_validator: bool,
    /// The Vary names, lower case; None for `Vary: *`.
    pub(crate) vary: Option<Vec<String>>,
}

/// Where a stored response keeps the targeted cache-control field (RFC 9213) that
/// decided its caching: `CDN-Cache-Control` or the configured one, moved here when the
/// response arrived (`proxy::cached`), so that every later reading of the stored
/// headers (a 304's refresh, the shared tier's copy) sees it without the config, and
/// so that it is never sent on (`h1_fields`, `proxy::cached::serve_with`).
pub(crate) const TARGETED: HeaderName = HeaderName::from_static("sluice-targeted-cache-control");

impl Facts {
    pub(crate) fn read(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: u64,
        response_time: u64,
        heuristic: Option<Heuristic>,
    ) -> Facts {
        // RFC 9213 §2.2: a targeted field, when there is one, replaces Cache-Control (and
        // Expires, and Pragma) for this cache.
        let targeted = headers.get(TARGETED);
        let mut control = match targeted {
            Some(value) => CacheControl::parse(std::iter::once(value.as_bytes())),
            None => CacheControl::parse(headers.get_all(CACHE_CONTROL).iter().map(HeaderValue::as_bytes)),
        };
        // HTTP/1.0 origins say no-cache with Pragma (RFC 9111 §5.4 leaves it to caches).
        if targeted.is_none()
            && !headers.contains_key(CACHE_CONTROL)
            && headers.get_all(PRAGMA).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            control.no_cache = true;
        }
        let expires = (targeted.is_none() && headers.contains_key(EXPIRES)).then(|| date_field(headers, &EXPIRES));
        let timing = Timing {
            request_time,
            response_time,
            date: date_field(headers, &DATE),
            age: headers.get(AGE).and_then(|v| parse_age(v.as_bytes())),
            expires,
            last_modified: date_field(headers, &LAST_MODIFIED),
        };
        let lifetime = rules::lifetime(&control, &timing, status.as_u16(), heuristic);
        Facts {
            explicit_lifetime: control.max_age.is_some() || control.s_maxage.is_some() || expires.is_some(),
            has_validator: headers.contains_key(ETAG) || timing.last_modified.is_some(),
            vary: rules::vary_names(headers.get_all(VARY).iter().map(HeaderValue::as_bytes)),
            control,
            timing,
            lifetime,
        }
    }
}

/// A request's values for the names a response varies on.
pub(crate) type VaryValues = Vec<(String, Option<String>)>;

/// The request's normalised values for `names`.
pub(crate) fn vary_values(names: &[String], request: &HeaderMap) -> VaryValues {
    names
        .iter()
        .map(|name| {
            (name.clone(), rules::normalise_field(request.get_all(name.as_str()).iter().map(HeaderValue::as_bytes)))
        })
        .collect()
}

/// One stored response.
pub(crate) struct Entry {
    pub(crate) key: Arc<str>,
    pub(crate) status: StatusCode,
    /// As the origin sent them, minus hop-by-hop fields (and Set-Cookie where stripped).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) timing: Timing,
    pub(crate) control: CacheControl,
    pub(crate) lifetime: u64,
    pub(crate) vary: VaryValues,
    pub(crate) tags: Vec<String>,
    /// The stored fields in HTTP/1 form, without Content-Length (the writer frames the
    /// body), Age and Cache-Status (set per answer): a hit to an HTTP/1 client copies
    /// these bytes instead of cloning the header map.
    pub(crate) h1_fields: Bytes,
    /// A fresh hit's Age and Cache-Status values, made once per second of age (a hit
    /// then allocates neither).
    hit_headers: std::sync::Mutex<Option<(u64, HeaderValue, HeaderValue)>>,
}

impl Entry {
    /// Builds the entry for a response that the storing rules accepted.
    pub(crate) fn new(
        key: Arc<str>,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        facts: Facts,
        vary: VaryValues,
        tag_header: &str,
    ) -> Entry {
        headers.remove(SET_COOKIE);
        // A response stored without a Date gets the time it arrived (RFC 9110 §6.6.1).
        let mut facts = facts;
        if !headers.contains_key(DATE) {
            facts.timing.date = Some(facts.timing.response_time);
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(
                UNIX_EPOCH + std::time::Duration::from_secs(facts.timing.response_time),
            )) {
                headers.insert(DATE, value);
            }
        }
        let tags = tags(&headers, tag_header);
        // Room for the Age and Cache-Status every answer from the entry carries, so that
        // setting them on a copy replaces a value instead of growing the map. An Age of 0
        // means what no Age means (RFC 9111 §4.2.3).
        if !headers.contains_key(AGE) {
            headers.insert(AGE, HeaderValue::from_static("0"));
            facts.timing.age = Some(0);
        }
        headers.insert(HeaderName::from_static("cache-status"), HeaderValue::from_static("sluice"));
        let h1_fields = h1_fields(&headers);
        Entry {
            h1_fields,
            key,
            status,
            headers,
            body,
            timing: facts.timing,
            control: facts.control,
            lifetime: facts.lifetime,
            vary,
            tags,
            hit_headers: std::sync::Mutex::new(None),
        }
    }

    /// The Age and Cache-Status values of a fresh hit now (`make` builds the status
    /// from the freshness left).
    pub(crate) fn hit_headers(&self, now: u64, make: impl FnOnce(i64) -> HeaderValue) -> (HeaderValue, HeaderValue) {
        let mut cached = self.hit_headers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, age, status)) = &*cached {
            if *at == now {
                return (age.clone(), status.clone());
            }
        }
        let stored = self.stored(now);
        let ttl = i64::try_from(stored.lifetime).unwrap_or(i64::MAX) - i64::try_from(stored.age).unwrap_or(i64::MAX);
        let (age, status) = (HeaderValue::from(stored.age), make(ttl));
        *cached = Some((now, age.clone(), status.clone()));
        (age, status)
    }

    /// The freshness rules' view of it, now.
    pub(crate) fn stored(&self, now: u64) -> Stored<'_> {
        Stored { control: &self.control, lifetime: self.lifetime, age: self.timing.current_age(now) }
    }

    /// Whether this variant answers a request with these headers (RFC 9111 §4.1).
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| {
            let theirs = rules::normalise_field(request.get_all(name.as_str()).iter().map(HeaderValue::as_bytes));
            &theirs == value
        })
    }

    /// The same variant (the same names with the same values).
    pub(crate) fn same_variant(&self, other: &Entry) -> bool {
        self.vary == other.vary
    }

    /// Bytes held: what the memory tier weighs.
    pub(crate) fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        self.key.len() + headers + self.body.len() + 256
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(ETAG)
    }

    pub(crate) fn last_modified(&self) -> Option<u64> {
        self.timing.last_modified
    }

    /// The entry after a 304 (RFC 9111 §3.2, §4.3.4): the 304's fields replace the
    /// stored ones (Content-Length aside), its timing becomes the entry's.
    pub(crate) fn refreshed(
        &self,
        not_modified: &HeaderMap,
        request_time: u64,
        response_time: u64,
        heuristic: Option<Heuristic>,
        tag_header: &str,
    ) -> Entry {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if name == http::header::CONTENT_LENGTH || name == SET_COOKIE {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let facts = Facts::read(self.status, &headers, request_time, response_time, heuristic);
        Entry::new(Arc::clone(&self.key), self.status, headers, self.body.clone(), facts, self.vary.clone(), tag_header)
    }
}

/// `headers` as HTTP/1 field lines, but for those set per answer or by the writer.
fn h1_fields(headers: &HeaderMap) -> Bytes {
    let mut out = Vec::with_capacity(headers.len() * 40);
    for (name, value) in headers {
        if name == AGE || name == http::header::CONTENT_LENGTH || name.as_str() == "cache-status" || name == TARGETED {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// The tags an entry is purged by: the tag header's space- or comma-separated names.
fn tags(headers: &HeaderMap, tag_header: &str) -> Vec<String> {
    if tag_header.is_empty() {
        return Vec::new();
    }
    headers
        .get_all(tag_header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([' ', ',']))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The first bytes of every stored value; the last byte is the layout's version.
const MAGIC: &[u8; 4] = b"SLC\x01";

impl Entry {
    /// The wire form for a shared tier.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.put_slice(MAGIC);
        put_bytes(&mut out, self.key.as_bytes());
        out.put_u16(self.status.as_u16());
        out.put_u64(self.timing.request_time);
        out.put_u64(self.timing.response_time);
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        out.put_u32(self.vary.len() as u32);
        for (name, value) in &self.vary {
            put_bytes(&mut out, name.as_bytes());
            match value {
                Some(value) => {
                    out.put_u8(1);
                    put_bytes(&mut out, value.as_bytes());
                }
                None => out.put_u8(0),
            }
        }
        put_bytes(&mut out, &self.body);
        out
    }

    /// Reads a stored value back; None when it is not one this version wrote.
    pub(crate) fn decode(mut data: Bytes, heuristic: Option<Heuristic>, tag_header: &str) -> Option<Entry> {
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return None;
        }
        data.advance(MAGIC.len());
        let key: Arc<str> = Arc::from(std::str::from_utf8(&take_bytes(&mut data)?).ok()?);
        let status = StatusCode::from_u16(take_u16(&mut data)?).ok()?;
        let request_time = take_u64(&mut data)?;
        let response_time = take_u64(&mut data)?;
        let mut headers = HeaderMap::new();
        for _ in 0..take_u32(&mut data)? {
            let name = HeaderName::from_bytes(&take_bytes(&mut data)?).ok()?;
            let value = HeaderValue::from_maybe_shared(take_bytes(&mut data)?).ok()?;
            headers.append(name, value);
        }
        let mut vary = Vec::new();
        for _ in 0..take_u32(&mut data)? {
            let name = String::from_utf8(take_bytes(&mut data)?.to_vec()).ok()?;
            let value = match take_u8(&mut data)? {
                0 => None,
                _ => Some(String::from_utf8(take_bytes(&mut data)?.to_vec()).ok()?),
            };
            vary.push((name, value));
        }
        let body = take_bytes(&mut data)?;
        let facts = Facts::read(status, &headers, request_time, response_time, heuristic);
        Some(Entry::new(key, status, headers, body, facts, vary, tag_header))
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn take_bytes(data: &mut Bytes) -> Option<Bytes> {
    let len = take_u32(data)? as usize;
    (data.remaining() >= len).then(|| data.split_to(len))
}

fn take_u8(data: &mut Bytes) -> Option<u8> {
    (data.remaining() >= 1).then(|| data.get_u8())
}

fn take_u16(data: &mut Bytes) -> Option<u16> {
    (data.remaining() >= 2).then(|| data.get_u16())
}

fn take_u32(data: &mut Bytes) -> Option<u32> {
    (data.remaining() >= 4).then(|| data.get_u32())
}

fn take_u64(data: &mut Bytes) -> Option<u64> {
    (data.remaining() >= 8).then(|| data.get_u64())
}

/// RFC 9111 §5.1: Age is a delta-seconds; a list's first member counts ("7200, 0" is
/// 7200, never fresher); an age too large for a number is as old as can be (§1.2.2);
/// anything else is no Age.
fn parse_age(value: &[u8]) -> Option<u64> {
    let first = value.split(|b| *b == b',').next()?.trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(std::str::from_utf8(first).ok()?.parse().unwrap_or(u64::from(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_takes_the_first_member_and_refuses_garbage() {
        assert_eq!(parse_age(b"7200, 0"), Some(7200), "cache-tests age-parse-suffix");
        assert_eq!(parse_age(b" 30 "), Some(30));
        assert_eq!(parse_age(b"99999999999999999999999"), Some(u64::from(u32::MAX)), "too large: as old as can be");
        assert_eq!(parse_age(b"-1"), None);
        assert_eq!(parse_age(b"1a"), None);
        assert_eq!(parse_age(b""), None);
    }

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert("surrogate-key", HeaderValue::from_static("user-7 list"));
        let facts = Facts::read(StatusCode::OK, &headers, 1_000, 1_001, None);
        let vary = vec![("accept-encoding".to_string(), Some("gzip".to_string())), ("x-absent".to_string(), None)];
        Entry::new(
            Arc::from("http://a/x"),
            StatusCode::OK,
            headers,
            Bytes::from_static(b"hello"),
            facts,
            vary,
            "surrogate-key",
        )
    }

    #[test]
    fn an_entry_reads_back_from_its_wire_form() {
        let original = entry();
        let decoded = Entry::decode(Bytes::from(original.encode()), None, "surrogate-key").expect("decodes");
        assert_eq!(decoded.key, original.key);
        assert_eq!(decoded.status, original.status);
        assert_eq!(decoded.headers, original.headers);
        assert_eq!(decoded.body, original.body);
        assert_eq!(decoded.vary, original.vary);
        assert_eq!((decoded.lifetime, decoded.timing.clone()), (60, original.timing.clone()));
        assert_eq!(decoded.tags, ["user-7", "list"]);
    }

    #[test]
    fn anything_else_reads_as_a_miss() {
        let encoded = entry().encode();
        for cut in [0, 3, 4, 10, encoded.len() - 1] {
            assert!(Entry::decode(Bytes::copy_from_slice(&encoded[..cut]), None, "").is_none(), "cut at {cut}");
        }
        let mut other_version = encoded.clone();
        other_version[3] = 2;
        assert!(Entry::decode(Bytes::from(other_version), None, "").is_none());
        assert!(Entry::decode(Bytes::from_static(b"SLC\x01\xff\xff\xff\xff"), None, "").is_none());
    }
}
