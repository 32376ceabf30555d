//! A TOML or serde error in the words of the file: the key's full path
//! (`upstream.api.health_check.interval`, `route[2].upstream`), "did you mean" for a
//! near miss among the keys that table takes, and value types as people write them
//! ("a whole number", not `usize`). Also how to step past the error so that parsing
//! can go on and find the next one: a misspelt key is read as its near match (so a
//! required key spelt wrong does not stop everything), an unknown table is set aside
//! with all its keys (they would otherwise land in the table above it).

use crate::validate::line_of;
use crate::Problem;

/// The problem for `error`, found in `source`.
pub(crate) fn problem(source: &str, error: &toml::de::Error) -> Problem {
    let offset = error.span().map(|s| s.start).unwrap_or(0);
    let line = line_of(source, offset);
    let text = source.lines().nth(line - 1).unwrap_or("").trim();
    let key = if text.starts_with('[') {
        text.trim_matches(|c| c == '[' || c == ']').trim().to_string()
    } else {
        let name = text.split_once('=').map(|(k, _)| k.trim()).unwrap_or(text);
        match table_path(source, line) {
            Some(table) => format!("{table}.{name}"),
            None => name.to_string(),
        }
    };
    let raw = error.message().trim().replace('\n', " ");
    let message = match unknown_key(&raw) {
        Some((name, expected)) => match did_you_mean(name, &expected) {
            Some(near) => format!("unknown key `{name}`; did you mean `{near}`?"),
            None if expected.is_empty() => format!("unknown key `{name}`; remove it"),
            None => format!("unknown key `{name}`; the keys here are {}", expected.join(", ")),
        },
        None => format!("{}; in `{text}`", plain_types(&raw)),
    };
    Problem { line, key, message }
}

/// The unknown key and the keys its table takes, from serde's "unknown field `x`,
/// expected one of `a`, `b`" (or "expected `a`", or "there are no fields").
pub(crate) fn unknown_key(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).collect();
    Some((name, expected))
}

/// The one key of `expected` close enough to `name` to be what was meant: a case or
/// separator difference, or at most two edits (one for short names).
pub(crate) fn did_you_mean<'a>(name: &str, expected: &[&'a str]) -> Option<&'a str> {
    let plain = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
    if let Some(same) = expected.iter().find(|e| plain(e) == plain(name)) {
        return Some(same);
    }
    let allowed = if name.len() <= 4 { 1 } else { 2 };
    let mut near: Vec<(usize, &str)> =
        expected.iter().map(|e| (edits(name, e), *e)).filter(|(d, _)| *d <= allowed).collect();
    near.sort();
    match near.as_slice() {
        [(best, key), rest @ ..] if rest.first().is_none_or(|(next, _)| next > best) => Some(key),
        _ => None,
    }
}

/// Levenshtein distance (names are short).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// serde's Rust type names in words.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list, e.g. [\"a\", \"b\"]"),
        ("expected a map", "expected a table"),
    ] {
        out = out.replace(rust, words);
    }
    if let Some(at) = out.find("expected struct ") {
        out.replace_range(at.., "expected a table");
    }
    out
}

/// The table `line` (1-based) is in: the last header above it, with an array of
/// tables' index (`route[2]`), or None at the top of the file.
pub(crate) fn table_path(source: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.lines().take(line.saturating_sub(1)).collect();
    let header = lines.iter().rposition(|l| l.trim_start().starts_with('['))?;
    let text = lines[header].trim();
    if let Some(name) = text.strip_prefix("[[").and_then(|t| t.split("]]").next()).map(str::trim) {
        let index = lines[..header]
            .iter()
            .filter(|l| {
                l.trim().strip_prefix("[[").is_some_and(|t| t.trim_start().starts_with(name) && t.contains("]]"))
            })
            .count();
        return Some(format!("{name}[{index}]"));
    }
    let name = text.strip_prefix('[').and_then(|t| t.split(']').next()).map(|t| t.trim().to_string())?;
    // `[route.cors]` after `[[route]]`s is a table of the last route: `route[N].cors`.
    let (first, rest) = name.split_once('.').unwrap_or((name.as_str(), ""));
    let arrays = lines[..header]
        .iter()
        .filter(|l| l.trim().strip_prefix("[[").is_some_and(|t| t.split("]]").next().map(str::trim) == Some(first)))
        .count();
    match (arrays, rest.is_empty()) {
        (0, _) | (_, true) => Some(name),
        (n, false) => Some(format!("{first}[{}].{rest}", n - 1)),
    }
}

/// How to go on after an unknown key at `span` in `text`: read it as `near` when the
/// line has room (the name shorter, padded with spaces; or longer by the spaces before
/// `=`), so that offsets and line numbers stay. False: no room; blank it instead.
pub(crate) fn read_as(text: &mut [u8], span: &std::ops::Range<usize>, near: &str) -> bool {
    let (start, end) = (span.start.min(text.len()), span.end.min(text.len()));
    let line_end = text[end..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| end + i);
    let Some(equals) = text[end..line_end].iter().position(|&b| b == b'=').map(|i| end + i) else { return false };
    // The room: the name and the spaces up to `=`.
    let room = equals - start;
    if near.len() > room || !text[end..equals].iter().all(|b| *b == b' ' || *b == b'\t') {
        return false;
    }
    let written = &mut text[start..equals];
    written.fill(b' ');
    written[..near.len()].copy_from_slice(near.as_bytes());
    true
}

/// The lines of the table whose header is at `span`: the header to the next header.
pub(crate) fn table_range(text: &[u8], span: &std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
    let start = text[..span.start.min(text.len())].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if text.get(start..)?.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return None;
    }
    let mut end = text[start..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| start + i + 1);
    while end < text.len() {
        let next = text[end..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| end + i + 1);
        if text[end..next].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            break;
        }
        end = next;
    }
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested_and_far_ones_are_not() {
        let keys = ["health_check", "endpoints", "balance", "timeout", "retry"];
        assert_eq!(did_you_mean("healthcheck", &keys), Some("health_check"));
        assert_eq!(did_you_mean("endpoint", &keys), Some("endpoints"));
        assert_eq!(did_you_mean("Balance", &keys), Some("balance"));
        assert_eq!(did_you_mean("timout", &keys), Some("timeout"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("retyr", &["retry", "retra"]), None, "two equally near: no guess");
    }

    #[test]
    fn tables_and_arrays_of_tables_are_named_with_their_index() {
        let source = "[server]\na = 1\n[[route]]\nb = 2\n[[route]]\nc = 3\n[upstream.api.health_check]\nd = 4\n";
        assert_eq!(table_path(source, 2).as_deref(), Some("server"));
        assert_eq!(table_path(source, 4).as_deref(), Some("route[0]"));
        assert_eq!(table_path(source, 6).as_deref(), Some("route[1]"));
        assert_eq!(table_path(source, 8).as_deref(), Some("upstream.api.health_check"));
        assert_eq!(table_path("a = 1\n", 1), None);
        let sub = "[[route]]\na = 1\n[[route]]\nb = 2\n[route.cors]\nc = 3\n";
        assert_eq!(table_path(sub, 6).as_deref(), Some("route[1].cors"));
    }

    #[test]
    fn a_misspelt_key_is_read_as_its_near_match_when_the_line_has_room() {
        let mut text = b"upstrem  = \"api\"\n".to_vec();
        assert!(read_as(&mut text, &(0..7), "upstream"));
        assert_eq!(&text, b"upstream = \"api\"\n");
        let mut tight = b"upstrem=\"api\"\n".to_vec();
        assert!(!read_as(&mut tight, &(0..7), "upstream"));
        let mut shorter = b"endpointz = []\n".to_vec();
        assert!(read_as(&mut shorter, &(0..9), "endpoints"));
        assert_eq!(&shorter, b"endpoints = []\n");
    }
}
