//! Request path normalisation before routing (RFC 3986 §6.2.2 and §5.2.4): the path
//! sluice routes on is the path it forwards, so an upstream that normalises again sees
//! the same thing. Otherwise `/public/../admin` matches a `/public` route and reaches
//! `/admin` upstream: a route-based access control bypass.
//!
//! Steps: percent-escapes of unreserved characters are decoded (so `%2e%2e` is `..`)
//! and the others upper-cased; `%2F` and `%5C` (encoded `/` and `\`) and a raw `\`
//! (which IIS and some frameworks read as `/`) are kept, decoded or rejected by
//! setting; empty segments are merged by setting; dot segments removed, a dot segment
//! with `;` parameters (`..;`, which Tomcat reads as `..`) included.

use std::borrow::Cow;

/// What to do with `%2F` / `%5C` / `\` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashAction {
    Keep,
    Decode,
    Reject,
}

/// How paths are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashAction,
}

/// Why a path was refused (a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `\` with `escaped_slashes = "reject"`.
    EscapedSlash,
    /// Not an absolute path.
    NotAbsolute,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "a % in the path is not followed by two hex digits",
            PathError::EscapedSlash => {
                "the path contains an encoded slash or a backslash (%2F, %5C or \\), which this server rejects"
            }
            PathError::NotAbsolute => "the path does not start with /",
        })
    }
}

/// The normalised form of `path` (no query); borrowed when nothing changes.
pub fn normalize(path: &str, options: PathOptions) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let may_change = bytes.iter().any(|&b| b == b'%' || b == b'\\')
        || bytes.windows(2).any(|w| w == b"/." || (options.merge_slashes && w == b"//"));
    if !may_change {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, options.escaped_slashes)?;
    let normalised = remove_dot_segments(&decoded, options.merge_slashes);
    Ok(if normalised == path { Cow::Borrowed(path) } else { Cow::Owned(normalised) })
}

/// RFC 3986 §2.3: unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes escapes of unreserved characters, upper-cases the rest, applies the
/// escaped-slash action.
fn decode_unreserved(path: &str, slashes: EscapedSlashAction) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            match slashes {
                EscapedSlashAction::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashAction::Decode => out.push(b'/'),
                EscapedSlashAction::Keep => out.push(b'\\'),
            }
            i += 1;
            continue;
        }
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let high = bytes.get(i + 1).copied().and_then(hex_value).ok_or(PathError::BadEscape)?;
        let low = bytes.get(i + 2).copied().and_then(hex_value).ok_or(PathError::BadEscape)?;
        let value = high << 4 | low;
        i += 3;
        match value {
            b'/' | b'\\' => match slashes {
                EscapedSlashAction::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashAction::Decode => out.push(b'/'),
                EscapedSlashAction::Keep => out.extend_from_slice(&[b'%', HEX[high as usize], HEX[low as usize]]),
            },
            v if is_unreserved(v) => out.push(v),
            _ => out.extend_from_slice(&[b'%', HEX[high as usize], HEX[low as usize]]),
        }
    }
    // Only ASCII bytes were added and the input was a str.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// RFC 3986 §5.2.4 on an absolute path, optionally merging empty segments.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        // `..;jsessionid=x` is `..` to Tomcat (path parameters, RFC 2396 §3.3).
        let dots = segment.split_once(';').map_or(segment, |(before, _)| before);
        match dots {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if merge_slashes && i != last && segment.is_empty() => continue,
            _ => {
                out.push(segment);
                continue;
            }
        }
        if i == last {
            out.push(""); // "/a/." and "/a/b/.." keep their trailing slash
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in out.iter() {
        result.push('/');
        result.push_str(segment);
    }
    if result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: PathOptions = PathOptions { merge_slashes: false, escaped_slashes: EscapedSlashAction::Reject };

    fn norm(path: &str) -> String {
        normalize(path, STRICT).expect("valid").into_owned()
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        for (input, expected) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/public/../admin", "/admin"),
            ("/a/./b/../c/", "/a/c/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/...", "/a/..."),
            ("/a/..b/.c", "/a/..b/.c"),
            ("//a", "//a"),
        ] {
            assert_eq!(norm(input), expected, "{input}");
        }
    }

    #[test]
    fn encoded_dots_are_dots() {
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2E./admin"), "/admin");
        assert_eq!(norm("/public/.%2e/admin"), "/admin");
        assert_eq!(norm("/%7euser/%41"), "/~user/A");
        assert_eq!(norm("/a%3fb%c3%a9"), "/a%3Fb%C3%A9", "reserved and non-ASCII stay escaped, upper case");
    }

    #[test]
    fn escaped_slashes_follow_the_setting() {
        let path = "/public/..%2Fadmin";
        assert_eq!(normalize(path, STRICT), Err(PathError::EscapedSlash));
        assert_eq!(normalize("/a%5cb", STRICT), Err(PathError::EscapedSlash));
        let keep = PathOptions { escaped_slashes: EscapedSlashAction::Keep, ..STRICT };
        assert_eq!(normalize("/public/..%2fadmin", keep).expect("kept"), "/public/..%2Fadmin");
        let decode = PathOptions { escaped_slashes: EscapedSlashAction::Decode, ..STRICT };
        assert_eq!(normalize(path, decode).expect("decoded"), "/admin");
        assert_eq!(normalize("/a%5Cb", decode).expect("decoded"), "/a/b");
    }

    #[test]
    fn raw_backslashes_and_dot_segments_with_parameters_cannot_bypass_a_route() {
        assert_eq!(normalize("/public/..\\admin", STRICT), Err(PathError::EscapedSlash));
        let decode = PathOptions { escaped_slashes: EscapedSlashAction::Decode, ..STRICT };
        assert_eq!(normalize("/public/..\\admin", decode).expect("decoded"), "/admin");
        let keep = PathOptions { escaped_slashes: EscapedSlashAction::Keep, ..STRICT };
        assert_eq!(normalize("/a\\b", keep).expect("kept"), "/a\\b");
        assert_eq!(norm("/public/..;/admin"), "/admin");
        assert_eq!(norm("/public/..;jsessionid=1/admin"), "/admin");
        assert_eq!(norm("/a/.;x/b"), "/a/b");
        assert_eq!(norm("/a/b;v=1/c"), "/a/b;v=1/c", "parameters on other segments stay");
        assert_eq!(norm("/a/..;"), "/");
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        let merge = PathOptions { merge_slashes: true, ..STRICT };
        assert_eq!(normalize("//a///b//", merge).expect("merged"), "/a/b/");
        assert_eq!(normalize("//", merge).expect("merged"), "/");
        assert_eq!(norm("/a//b"), "/a//b");
    }

    #[test]
    fn bad_escapes_and_relative_paths_are_errors() {
        assert_eq!(normalize("/a%zz", STRICT), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2", STRICT), Err(PathError::BadEscape));
        assert_eq!(normalize("a/b", STRICT), Err(PathError::NotAbsolute));
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        assert!(matches!(normalize("/api/v1/users", STRICT), Ok(Cow::Borrowed(_))));
    }

    /// Bounded property test: for random paths built from the characters that matter,
    /// the result is absolute, has no dot segment, and is a fixed point, so an upstream
    /// that normalises again sees the path sluice routed on.
    #[test]
    fn normalised_paths_are_fixed_points_without_dot_segments() {
        const PIECES: [&str; 13] = ["/", "a", ".", "..", "%2e", "%2E%2e", "%2f", "%41", "//", "b.", ";", ";x", "\\"];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for merge_slashes in [false, true] {
            for action in [EscapedSlashAction::Keep, EscapedSlashAction::Decode] {
                let options = PathOptions { merge_slashes, escaped_slashes: action };
                for _ in 0..20_000 {
                    let mut path = String::from("/");
                    for _ in 0..(next() % 9) {
                        path.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
                    }
                    let once = normalize(&path, options).expect("valid").into_owned();
                    assert!(once.starts_with('/'), "{path} → {once}");
                    let segments: Vec<&str> = once.split('/').collect();
                    let dot = |s: &&str| matches!(s.split(';').next(), Some("." | ".."));
                    assert!(!segments.iter().any(dot), "{path} → {once}");
                    assert_eq!(normalize(&once, options).expect("valid"), once.as_str(), "{path}");
                    if merge_slashes {
                        assert!(!once.contains("//"), "{path} → {once}");
                    }
                }
            }
        }
    }
}
