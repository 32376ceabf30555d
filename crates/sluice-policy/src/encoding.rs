//! Content-coding negotiation (RFC 9110 §12.5.3): which of the codings sluice offers
//! a client's `Accept-Encoding` prefers, and whether a media type is one a route
//! compresses.

/// The index in `offered` (the server's order of preference) of the coding the
/// client weighs highest, or None when it accepts none of them (or sent no
/// `Accept-Encoding`: sluice then sends the response as it is, as nginx does).
/// `accept_encoding` gives the field's values, as often as asked (one pass per offer:
/// nothing is allocated on the request path).
///
/// A coding's weight is its own `q`, else `*`'s, else 0; `q=0` refuses it. Ties go to
/// the earlier offer.
pub fn choose<'a, I>(accept_encoding: impl Fn() -> I, offered: &[&str]) -> Option<usize>
where
    I: Iterator<Item = &'a [u8]>,
{
    let mut best: Option<(usize, u16)> = None;
    for (i, coding) in offered.iter().enumerate() {
        let q = weight(accept_encoding(), coding);
        if q > 0 && best.is_none_or(|(_, top)| q > top) {
            best = Some((i, q));
        }
    }
    best.map(|(i, _)| i)
}

/// `coding`'s weight in thousandths: its own `q`, else `*`'s, else 0.
fn weight<'a>(values: impl Iterator<Item = &'a [u8]>, coding: &str) -> u16 {
    let (mut own, mut any) = (None, None);
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts.find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")));
            let Some(q) = q.map_or(Some(1000), qvalue) else { continue };
            if name == "*" {
                any = Some(q);
            } else if name.eq_ignore_ascii_case(coding) {
                own = Some(q);
            }
        }
    }
    own.or(any).unwrap_or(0)
}

/// A qvalue in thousandths ("0.8" → 800); None when it is not one (RFC 9110 §12.4.2).
fn qvalue(text: &str) -> Option<u16> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether `content_type` (a Content-Type value) is one of `types`: exact media types
/// (`application/json`) or families (`text/*`), lower case.
pub fn type_listed(content_type: &[u8], types: &[String]) -> bool {
    let Ok(text) = std::str::from_utf8(content_type) else { return false };
    let media = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let family = media.split('/').next().unwrap_or("");
    types.iter().any(|t| *t == media || t.strip_suffix("/*").is_some_and(|f| f == family))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERED: [&str; 3] = ["zstd", "br", "gzip"];

    fn pick(header: &str) -> Option<&'static str> {
        choose(|| std::iter::once(header.as_bytes()), &OFFERED).map(|i| OFFERED[i])
    }

    #[test]
    fn the_clients_weights_decide_and_ties_go_to_the_server_order() {
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip, deflate, br"), Some("br"));
        assert_eq!(pick("gzip;q=1.0, br;q=0.5"), Some("gzip"));
        assert_eq!(pick("br;q=0, gzip;q=0.1"), Some("gzip"));
        assert_eq!(pick("*"), Some("zstd"));
        assert_eq!(pick("*;q=0.5, zstd;q=0"), Some("br"));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=0, *;q=0"), None);
        assert_eq!(pick("GZIP"), Some("gzip"));
        assert_eq!(pick("gzip;q=2"), None, "an invalid qvalue is ignored");
        assert_eq!(choose(std::iter::empty, &OFFERED), None);
        assert_eq!(choose(|| [b"br;q=0.3".as_slice(), b"gzip;q=0.4"].into_iter(), &OFFERED), Some(2));
    }

    #[test]
    fn media_types_match_exactly_or_by_family() {
        let types = vec!["text/*".to_string(), "application/json".to_string()];
        assert!(type_listed(b"application/json; charset=utf-8", &types));
        assert!(type_listed(b"Text/HTML", &types));
        assert!(!type_listed(b"application/jsonx", &types));
        assert!(!type_listed(b"image/png", &types));
    }
}
