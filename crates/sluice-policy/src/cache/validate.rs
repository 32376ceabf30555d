//! Conditional requests (RFC 9110 §13) and Vary (RFC 9111 §4.1): whether a client's
//! If-None-Match / If-Modified-Since lets sluice answer 304 from a stored response, and
//! whether a stored variant matches a request.

use super::control::split_outside_quotes;

/// Whether the stored response, with this ETag and Last-Modified, lets sluice answer a
/// GET or HEAD with 304. If-None-Match, when present, decides alone (§13.2.2).
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<u64>,
    etag: Option<&str>,
    last_modified: Option<u64>,
) -> bool {
    if let Some(list) = if_none_match {
        let list = list.trim();
        if list == "*" {
            return etag.is_some();
        }
        let Some(etag) = etag else { return false };
        return split_outside_quotes(list).any(|candidate| weak_match(candidate.trim(), etag.trim()));
    }
    match (if_modified_since, last_modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Weak comparison (§8.8.3.2): the opaque tags equal, W/ ignored.
fn weak_match(a: &str, b: &str) -> bool {
    let opaque = |tag: &str| tag.strip_prefix("W/").unwrap_or(tag).to_string();
    !a.is_empty() && opaque(a) == opaque(b)
}

/// A request header's value as Vary compares it: field lines joined with ", ", the
/// whitespace around each comma-separated item trimmed. Absent is None.
pub fn normalise_field<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut out: Option<String> = None;
    for line in lines {
        let text = String::from_utf8_lossy(line);
        for item in text.split(',') {
            let out = out.get_or_insert_with(String::new);
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(item.trim());
        }
    }
    out
}

/// The field names a Vary value lists, lower-cased; None for `*` (never matches).
pub fn vary_names<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for line in lines {
        for name in String::from_utf8_lossy(line).split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}
