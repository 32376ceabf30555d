//! Access log lines from outcome records: JSON (one object per line) and the combined
//! format of Apache and nginx with sluice's own fields appended. Runs on the writer
//! thread, never on the request path (except at debug level, where each record is also
//! logged through `tracing`).
//!
//! Written without `std::fmt`: a line is a few hundred bytes and `write!` spent most of
//! its time in the formatting machinery (callgrind: ~20,000 instructions a line with
//! `write!` and `to_string`, ~2,000 like this). Strings a client controls are escaped.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Outcome, Text};

/// `{"time":"2026-11-30T11:18:18.123Z","request_id":...}` with every field, nulls included.
pub(crate) fn json_line(o: &Outcome, out: &mut Vec<u8>) {
    out.reserve(768);
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(out, o.started_at);
    out.push(b'"');
    field(out, b",\"request_id\":", o.texts.get(Text::RequestId));
    raw_field(out, b",\"trace_id\":", o.texts.get(Text::TraceId));
    out.extend_from_slice(b",\"client\":\"");
    socket_addr(out, o.client);
    out.push(b'"');
    // A method is a token (no quote or backslash); an extension method is checked anyway.
    field(out, b",\"method\":", o.method.as_ref().map(|m| m.as_str().as_bytes()));
    field(out, b",\"target\":", o.texts.get(Text::Target));
    raw_field(out, b",\"protocol\":", Some(protocol(o)));
    field(out, b",\"host\":", o.texts.get(Text::Host));
    field(out, b",\"route\":", o.route.as_deref().map(str::as_bytes));
    field(out, b",\"upstream\":", o.upstream.as_deref().map(str::as_bytes));
    field(out, b",\"endpoint\":", o.upstream_trace.endpoint.as_deref().map(str::as_bytes));
    number(out, b",\"attempts\":", u64::from(o.upstream_trace.attempts));
    number(out, b",\"status\":", u64::from(o.status));
    number(out, b",\"bytes_in\":", o.bytes_in);
    number(out, b",\"bytes_out\":", o.bytes_out);
    out.extend_from_slice(b",\"upstream_head_ms\":");
    match o.upstream_head {
        Some(d) => millis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"total_ms\":");
    millis(out, o.total);
    raw_field(out, b",\"end\":", Some(o.end.as_str().as_bytes()));
    raw_field(out, b",\"error\":", o.error.map(str::as_bytes));
    number(out, b",\"worker\":", u64::from(o.worker));
    raw_field(out, b",\"cache\":", o.cache.map(str::as_bytes));
    raw_field(out, b",\"limit\":", o.limit.map(str::as_bytes));
    raw_field(out, b",\"auth\":", o.auth.map(str::as_bytes));
    field(out, b",\"identity\":", o.texts.get(Text::Identity));
    field(out, b",\"upstream_target\":", o.texts.get(Text::UpstreamTarget));
    field(out, b",\"user_agent\":", o.texts.get(Text::UserAgent));
    field(out, b",\"referer\":", o.texts.get(Text::Referer));
    out.push(b'}');
}

/// `127.0.0.1 - - [30/Nov/2026:11:18:18 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8" ...`
/// then `request_id=... route=... upstream=... endpoint=... attempts=1 upstream_head=0.001
/// total=0.001 end=complete error=-` (times in seconds, as nginx's $request_time).
pub(crate) fn combined_line(o: &Outcome, out: &mut Vec<u8>) {
    combined_plain_line(o, out);
    out.extend_from_slice(b" request_id=");
    quoted_text(out, o.texts.get(Text::RequestId).unwrap_or(b"-"));
    for (key, value) in [
        (&b" route="[..], o.route.as_deref()),
        (b" upstream=", o.upstream.as_deref()),
        (b" endpoint=", o.upstream_trace.endpoint.as_deref()),
    ] {
        out.extend_from_slice(key);
        quoted_text(out, value.unwrap_or("-").as_bytes());
    }
    if let Some(identity) = o.texts.get(Text::Identity) {
        out.extend_from_slice(b" identity=");
        quoted_text(out, identity);
    }
    if let Some(auth) = o.auth.filter(|a| *a != "ok") {
        out.extend_from_slice(b" auth=");
        out.extend_from_slice(auth.as_bytes());
    }
    out.extend_from_slice(b" attempts=");
    decimal(out, u64::from(o.upstream_trace.attempts));
    out.extend_from_slice(b" upstream_head=");
    match o.upstream_head {
        Some(d) => seconds(out, d),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" total=");
    seconds(out, o.total);
    out.extend_from_slice(b" end=");
    out.extend_from_slice(o.end.as_str().as_bytes());
    out.extend_from_slice(b" error=");
    out.extend_from_slice(o.error.unwrap_or("-").as_bytes());
}

/// Exactly Apache's combined format (`format = "combined-plain"`), which strict
/// parsers (Python's apachelogs, goaccess's COMBINED) take as it is.
pub(crate) fn combined_plain_line(o: &Outcome, out: &mut Vec<u8>) {
    match o.client {
        SocketAddr::V4(v4) => ipv4(out, v4.ip().octets()),
        SocketAddr::V6(v6) => out.extend_from_slice(v6.ip().to_string().as_bytes()),
    }
    out.extend_from_slice(b" - - [");
    clf_time(out, o.started_at);
    out.extend_from_slice(b"] \"");
    out.extend_from_slice(o.method.as_ref().map_or(&b"-"[..], |m| m.as_str().as_bytes()));
    out.push(b' ');
    quoted_text(out, o.texts.get(Text::Target).unwrap_or(b"-"));
    out.push(b' ');
    out.extend_from_slice(protocol(o));
    out.extend_from_slice(b"\" ");
    decimal(out, u64::from(o.status));
    out.push(b' ');
    decimal(out, o.bytes_out);
    out.extend_from_slice(b" \"");
    quoted_text(out, o.texts.get(Text::Referer).unwrap_or(b"-"));
    out.extend_from_slice(b"\" \"");
    quoted_text(out, o.texts.get(Text::UserAgent).unwrap_or(b"-"));
    out.push(b'"');
}

fn protocol(o: &Outcome) -> &'static [u8] {
    match o.version {
        http::Version::HTTP_2 => b"HTTP/2.0",
        http::Version::HTTP_10 => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    }
}

/// `,"name":"value"` (JSON-escaped) or `,"name":null`; `key` is `,"name":`.
#[inline(always)]
fn field(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(key);
    match value {
        Some(value) => json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// As `field`, for values sluice made that need no escaping (hex ids, fixed words).
#[inline(always)]
fn raw_field(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(key);
    match value {
        Some(value) => {
            out.push(b'"');
            out.extend_from_slice(value);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[inline(always)]
fn number(out: &mut Vec<u8>, key: &[u8], value: u64) {
    out.extend_from_slice(key);
    decimal(out, value);
}

/// A JSON string. Printable ASCII other than `"` and `\` is copied as is (the usual
/// case, checked in one pass); anything else goes through the escaping path, invalid
/// UTF-8 as U+FFFD.
#[inline(always)]
pub(crate) fn json_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    json_escaped(out, value);
    out.push(b'"');
}

/// `value` as the inside of a JSON string (no quotes).
#[inline(always)]
pub(crate) fn json_escaped(out: &mut Vec<u8>, value: &[u8]) {
    // Runs of plain bytes are copied whole; only a byte that needs escaping (rare in
    // practice) sends the rest of the value through the slow path.
    let plain = plain_prefix(value);
    out.extend_from_slice(&value[..plain]);
    if plain < value.len() {
        let value = &value[plain..];
        for ch in String::from_utf8_lossy(value).chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c as usize) >> 4]);
                    out.push(HEX[(c as usize) & 0xf]);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How many leading bytes of `value` a JSON string can hold as they are. Eight bytes
/// at a time (SWAR: a word has a byte below 0x20, at or above 0x7f, `"` or `\` exactly
/// when these expressions are non-zero), then byte by byte from the first word that has
/// one: scanning byte by byte was a quarter of a line's cost.
fn plain_prefix(value: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut at = 0;
    for chunk in value.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        let high = w & HIGHS != 0 || has_zero(w ^ (ONES * 0x7f));
        let quote = has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')));
        if control || high || quote {
            break;
        }
        at += 8;
    }
    at + value[at..].iter().position(|&b| !PLAIN[usize::from(b)]).unwrap_or(value.len() - at)
}

/// Bytes a JSON string can hold as they are: printable ASCII but `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// Bytes for a field of the combined format: `"`, `\` and anything not printable
/// ASCII as `\xHH` (nginx's escaping), so a client cannot forge a line or a field.
fn quoted_text(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        if (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\' || b == b' ' {
            out.push(b);
        } else {
            out.extend_from_slice(b"\\x");
            out.push(HEX[usize::from(b >> 4)].to_ascii_uppercase());
            out.push(HEX[usize::from(b & 0xf)].to_ascii_uppercase());
        }
    }
}

#[inline(always)]
pub(crate) fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` with at least `width` digits (zeros in front).
#[inline(always)]
fn padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    while rest > 0 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let shown = (digits.len() - at).max(width).clamp(1, digits.len());
    out.extend_from_slice(&digits[digits.len() - shown..]);
}

/// Milliseconds with three decimals (microsecond resolution).
#[inline(always)]
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros() as u64;
    decimal(out, micros / 1000);
    out.push(b'.');
    padded(out, micros % 1000, 3);
}

/// Seconds with three decimals.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    let millis = d.as_millis() as u64;
    decimal(out, millis / 1000);
    out.push(b'.');
    padded(out, millis % 1000, 3);
}

/// An IP address as text (IPv4 without `std::fmt`).
pub(crate) fn ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => ipv4(out, v4.octets()),
        std::net::IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

fn ipv4(out: &mut Vec<u8>, octets: [u8; 4]) {
    for (i, octet) in octets.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        decimal(out, u64::from(*octet));
    }
}

fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            ipv4(out, v4.ip().octets());
            out.push(b':');
            decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// (year, month 1-12, day, hour, minute, second, millisecond) in UTC.
fn civil(time: SystemTime) -> (u64, u64, u64, u64, u64, u64, u64) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u64);
    // Howard Hinnant's days-from-civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = (yoe + era * 400 + i64::from(month <= 2)).max(0) as u64;
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60, u64::from(since.subsec_millis()))
}

/// `2026-11-30T11:18:18.123Z`. The part up to the second is kept from the last call
/// (most lines in a burst share it): the writer is one thread, so a thread-local does.
fn rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    thread_local! {
        static LAST_SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, mut text) = LAST_SECOND.try_with(std::cell::Cell::get).unwrap_or((u64::MAX, [0; 19]));
    if second != since.as_secs() {
        let (y, mo, d, h, mi, s, _) = civil(time);
        let mut fresh = Vec::with_capacity(19);
        padded(&mut fresh, y, 4);
        for (sep, value) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', s)] {
            fresh.push(sep);
            padded(&mut fresh, value, 2);
        }
        if fresh.len() == 19 {
            text.copy_from_slice(&fresh);
            let _ = LAST_SECOND.try_with(|last| last.set((since.as_secs(), text)));
        } else {
            out.extend_from_slice(&fresh); // beyond year 9999: not cached
            text = [0; 19];
        }
    }
    if text[0] != 0 {
        out.extend_from_slice(&text);
    }
    out.push(b'.');
    padded(out, u64::from(since.subsec_millis()), 3);
    out.push(b'Z');
}

fn clf_time(out: &mut Vec<u8>, time: SystemTime) {
    const MONTHS: [&[u8]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let (y, mo, d, h, mi, s, _) = civil(time);
    padded(out, d, 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(mo as usize).saturating_sub(1) % 12]);
    out.push(b'/');
    padded(out, y, 4);
    for value in [h, mi, s] {
        out.push(b':');
        padded(out, value, 2);
    }
    out.extend_from_slice(b" +0000");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn dates_are_civil_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_037_498_123);
        assert_eq!(text(|o| rfc3339(o, t)), "2026-11-30T11:18:18.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(text(|o| clf_time(o, leap)), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(text(|o| decimal(o, 0)), "0");
        assert_eq!(text(|o| padded(o, 0, 2)), "00");
        assert_eq!(text(|o| padded(o, 7, 3)), "007");
        assert_eq!(text(|o| padded(o, 2026, 2)), "2026");
        assert_eq!(text(|o| decimal(o, u64::MAX)), "18446744073709551615");
        assert_eq!(text(|o| millis(o, Duration::from_micros(1_234_005))), "1234.005");
        assert_eq!(text(|o| seconds(o, Duration::from_millis(2_050))), "2.050");
        assert_eq!(text(|o| socket_addr(o, "10.0.0.7:443".parse().expect("addr"))), "10.0.0.7:443");
        assert_eq!(text(|o| socket_addr(o, "[::1]:8080".parse().expect("addr"))), "[::1]:8080");
    }

    #[test]
    fn the_word_scan_agrees_with_the_byte_scan() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly plain text, sometimes any byte at all.
                        if state.is_multiple_of(16) {
                            (state >> 8) as u8
                        } else {
                            b' ' + (state % 95) as u8
                        }
                    })
                    .collect();
                let expected = bytes.iter().position(|&b| !PLAIN[usize::from(b)]).unwrap_or(bytes.len());
                assert_eq!(plain_prefix(&bytes), expected, "{bytes:?}");
            }
        }
    }

    #[test]
    fn client_controlled_text_cannot_break_a_line() {
        assert_eq!(text(|o| json_string(o, b"a\"b\\c\nd\xff")), "\"a\\\"b\\\\c\\u000ad\u{fffd}\"");
        assert_eq!(text(|o| quoted_text(o, b"x\" y\n")), "x\\x22 y\\x0A");
    }
}
