//! Access log lines from outcome records: JSON (one object per line) and the combined
//! format of Apache and nginx with sluice's own fields appended. Runs on the writer
//! thread, never on the request path (except at debug level, where each record is
//! also logged through `tracing`).

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::Outcome;

/// `{"time":"2026-11-30T11:18:18.123Z","request_id":...}` with every field, nulls included.
pub(crate) fn json_line(o: &Outcome) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\"time\":\"");
    rfc3339(&mut out, o.started_at);
    out.push('"');
    field_str(&mut out, "request_id", Some(o.request_id.as_bytes()));
    field_str(&mut out, "trace_id", o.trace_id.as_ref().map(HeaderValue::as_bytes));
    let _ = write!(out, ",\"client\":\"{}\"", o.client);
    field_str(&mut out, "method", Some(o.method.as_str().as_bytes()));
    field_str(&mut out, "target", Some(o.target.to_string().as_bytes()));
    field_str(&mut out, "protocol", Some(protocol(o).as_bytes()));
    field_str(&mut out, "host", o.host.as_ref().map(HeaderValue::as_bytes));
    field_str(&mut out, "route", o.route.as_deref().map(str::as_bytes));
    field_str(&mut out, "upstream", o.upstream.as_deref().map(str::as_bytes));
    field_str(&mut out, "endpoint", o.upstream_trace.endpoint.as_deref().map(str::as_bytes));
    let _ = write!(
        out,
        ",\"attempts\":{},\"status\":{},\"bytes_in\":{},\"bytes_out\":{}",
        o.upstream_trace.attempts, o.status, o.bytes_in, o.bytes_out
    );
    match o.upstream_head {
        Some(d) => {
            let _ = write!(out, ",\"upstream_head_ms\":{:.3}", millis(d));
        }
        None => out.push_str(",\"upstream_head_ms\":null"),
    }
    let _ = write!(out, ",\"total_ms\":{:.3}", millis(o.total));
    field_str(&mut out, "end", Some(o.end.as_str().as_bytes()));
    field_str(&mut out, "error", o.error.map(str::as_bytes));
    field_str(&mut out, "cache", o.cache.map(str::as_bytes));
    field_str(&mut out, "limit", o.limit.map(str::as_bytes));
    field_str(&mut out, "user_agent", o.user_agent.as_ref().map(HeaderValue::as_bytes));
    field_str(&mut out, "referer", o.referer.as_ref().map(HeaderValue::as_bytes));
    out.push('}');
    out
}

/// `127.0.0.1 - - [30/Nov/2026:11:18:18 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8" ...`
/// then `request_id=... route=... upstream=... endpoint=... attempts=1 upstream_head=0.001
/// total=0.002 end=complete error=-`.
pub(crate) fn combined_line(o: &Outcome) -> String {
    let mut out = String::with_capacity(384);
    let _ = write!(out, "{} - - [", o.client.ip());
    clf_time(&mut out, o.started_at);
    let _ = write!(out, "] \"{} ", o.method);
    escaped(&mut out, o.target.to_string().as_bytes());
    let _ = write!(out, " {}\" {} {} \"", protocol(o), o.status, o.bytes_out);
    escaped(&mut out, o.referer.as_ref().map_or(b"-", HeaderValue::as_bytes));
    out.push_str("\" \"");
    escaped(&mut out, o.user_agent.as_ref().map_or(b"-", HeaderValue::as_bytes));
    out.push_str("\" request_id=");
    escaped(&mut out, o.request_id.as_bytes());
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let _ = write!(
        out,
        " route={} upstream={} endpoint={} attempts={} upstream_head={} total={:.3} end={} error={}",
        dash(o.route.as_deref()),
        dash(o.upstream.as_deref()),
        dash(o.upstream_trace.endpoint.as_deref()),
        o.upstream_trace.attempts,
        o.upstream_head.map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64())),
        o.total.as_secs_f64(),
        o.end.as_str(),
        o.error.unwrap_or("-"),
    );
    out
}

fn protocol(o: &Outcome) -> &'static str {
    match o.version {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `,"name":"value"` (JSON-escaped) or `,"name":null`.
fn field_str(out: &mut String, name: &str, value: Option<&[u8]>) {
    let _ = write!(out, ",\"{name}\":");
    let Some(value) = value else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for ch in String::from_utf8_lossy(value).chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes for a quoted field of the combined format: `"` and `\` and anything not
/// printable ASCII as `\xHH` (nginx's escaping), so a client cannot forge a line.
fn escaped(out: &mut String, value: &[u8]) {
    for &b in value {
        match b {
            b'"' | b'\\' => {
                let _ = write!(out, "\\x{b:02X}");
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// (year, month 1-12, day, hour, minute, second, millisecond) in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Howard Hinnant's days-from-civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60, since.subsec_millis())
}

fn rfc3339(out: &mut String, time: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

fn clf_time(out: &mut String, time: SystemTime) {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s, _) = civil(time);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_037_498_123); // 2026-11-30T11:18:18.123Z
        let mut s = String::new();
        rfc3339(&mut s, t);
        assert_eq!(s, "2026-11-30T11:18:18.123Z");
        let mut c = String::new();
        clf_time(&mut c, UNIX_EPOCH + Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!(c, "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn client_controlled_text_cannot_break_a_line() {
        let mut s = String::new();
        field_str(&mut s, "ua", Some(b"a\"b\\c\nd"));
        assert_eq!(s, r#","ua":"a\"b\\c\u000ad""#);
        let mut c = String::new();
        escaped(&mut c, b"x\" y\n");
        assert_eq!(c, "x\\x22 y\\x0A");
    }
}
