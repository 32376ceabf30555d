//! Cache-Control (RFC 9111 §5.2), parsed once per message into the directives a shared
//! cache acts on. Parsing is lenient where the RFC asks for it: names are
//! case-insensitive, values may be quoted, unknown directives are ignored, and a
//! delta-seconds that is malformed or given twice with different values makes the
//! response stale (§1.2.2, §4.2.1) rather than fresh for longer than meant.

/// The directives of one message's Cache-Control field lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request: answer from the cache or not at all (504).
    pub only_if_cached: bool,
    /// Request: a stale response is acceptable, up to this many seconds stale (None
    /// inside: any staleness).
    pub max_stale: Option<Option<u64>>,
    /// Request: the response must stay fresh for at least this long.
    pub min_fresh: Option<u64>,
}

/// Delta-seconds beyond 2^31 are taken as 2^31 (RFC 9111 §1.2.2).
const DELTA_MAX: u64 = 1 << 31;

impl CacheControl {
    /// Parses every field line of the field, in order.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in lines {
            let Ok(line) = std::str::from_utf8(line) else { continue };
            for (name, value) in directives(line) {
                cc.apply(&name.to_ascii_lowercase(), value);
            }
        }
        cc
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        match name {
            "max-age" => seconds(&mut self.max_age, value),
            "s-maxage" => seconds(&mut self.s_maxage, value),
            "stale-while-revalidate" => seconds(&mut self.stale_while_revalidate, value),
            "stale-if-error" => seconds(&mut self.stale_if_error, value),
            "min-fresh" => seconds(&mut self.min_fresh, value),
            "max-stale" => {
                self.max_stale = Some(value.map(|v| delta(v).unwrap_or(0)));
            }
            "no-store" => self.no_store = true,
            // A field-named no-cache (`no-cache="Set-Cookie"`) lets a cache reuse the rest;
            // sluice revalidates the whole response instead, which is always allowed.
            "no-cache" => self.no_cache = true,
            // Likewise a field-named private: a shared cache does not store the response.
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }

    /// Whether a shared cache may serve the response stale at all (RFC 9111 §4.2.4):
    /// not under must-revalidate, proxy-revalidate, or s-maxage.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// Sets a delta-seconds directive: a malformed value, or a second different one, is 0.
fn seconds(slot: &mut Option<u64>, value: Option<&str>) {
    let parsed = value.and_then(delta).unwrap_or(0);
    *slot = match *slot {
        Some(previous) if previous != parsed => Some(0),
        _ => Some(parsed),
    };
}

fn delta(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits: a parse error here can only be overflow.
    Some(value.parse::<u64>().map_or(DELTA_MAX, |v| v.min(DELTA_MAX)))
}

/// `name[=value]` items of a comma-separated list; commas inside quotes do not split.
fn directives(line: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_outside_quotes(line).filter_map(|item| {
        let item = item.trim();
        if item.is_empty() {
            return None;
        }
        Some(match item.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (item, None),
        })
    })
}

/// Splits on commas that are not inside a quoted string.
pub(crate) fn split_outside_quotes(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}
