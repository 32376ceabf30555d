//! `[auth.NAME]` and a route's gateway settings (`auth`, `[route.rewrite]`, header
//! edits, `[route.redirect]`, `[route.compression]`) checked into `crate::gateway`'s
//! types. Key files are read and hashed here, so `sluice check` finds their mistakes
//! and a reload that breaks one keeps the running config.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use crate::file::{FileAuth, FileCompression, FileHeaderEdits, FileRedirect, FileRewrite, FileRoute};
use crate::gateway::*;
use crate::validate::*;

/// Every `[auth.NAME]`, sorted by name (routes refer to them by index).
pub(crate) fn check_auths(
    checker: &mut Checker,
    auths: &BTreeMap<String, FileAuth>,
    base_dir: &Path,
) -> Vec<AuthConfig> {
    auths.iter().filter_map(|(name, auth)| check_auth(checker, name, auth, base_dir)).collect()
}

fn check_auth(checker: &mut Checker, name: &str, auth: &FileAuth, base_dir: &Path) -> Option<AuthConfig> {
    let key = format!("auth.{name}");
    let before = checker.problems.len();
    let identity_header = auth.identity_header.as_ref().and_then(|h| header_name(checker, &key, "identity_header", h));
    let kind = match auth.kind.get_ref().as_str() {
        "api_key" => {
            refuse_keys(
                checker,
                &key,
                "api_key",
                &[
                    ("jwks_file", auth.jwks_file.as_ref().map(Spanned::span)),
                    ("jwks_url", auth.jwks_url.as_ref().map(Spanned::span)),
                    ("issuer", auth.issuer.as_ref().map(Spanned::span)),
                    ("hs256_secret_file", auth.hs256_secret_file.as_ref().map(Spanned::span)),
                    ("identity_claim", auth.identity_claim.as_ref().map(Spanned::span)),
                ],
            );
            check_api_key(checker, &key, auth, base_dir).map(AuthKind::ApiKey)
        }
        "jwt" => {
            refuse_keys(
                checker,
                &key,
                "jwt",
                &[
                    ("keys_file", auth.keys_file.as_ref().map(Spanned::span)),
                    ("header", auth.header.as_ref().map(Spanned::span)),
                    ("query", auth.query.as_ref().map(Spanned::span)),
                ],
            );
            check_jwt(checker, &key, auth, base_dir).map(AuthKind::Jwt)
        }
        other => {
            checker.problem(
                auth.kind.span(),
                format!("{key}.kind"),
                format!("\"{other}\" is not an auth kind; write \"api_key\" or \"jwt\""),
            );
            None
        }
    };
    let kind = kind?;
    (checker.problems.len() == before).then(|| AuthConfig {
        name: name.to_string(),
        kind,
        identity_header,
        hide_credentials: auth.hide_credentials.unwrap_or(true),
    })
}

/// Keys of the other kind are mistakes, not ignored settings.
fn refuse_keys(checker: &mut Checker, key: &str, kind: &str, keys: &[(&str, Option<std::ops::Range<usize>>)]) {
    for (name, span) in keys {
        if let Some(span) = span {
            checker.problem(
                span.clone(),
                format!("{key}.{name}"),
                format!("is not a setting of kind = \"{kind}\"; remove it"),
            );
        }
    }
}

fn check_api_key(checker: &mut Checker, key: &str, auth: &FileAuth, base_dir: &Path) -> Option<ApiKeyAuth> {
    let header = match &auth.header {
        Some(h) => header_name(checker, key, "header", h)?,
        None => crate::defaults::API_KEY_HEADER.to_string(),
    };
    let query = match &auth.query {
        Some(q) if q.get_ref().is_empty() || q.get_ref().contains(['&', '=', '#', ' ']) => {
            checker.problem(q.span(), format!("{key}.query"), "is not a query parameter name; write e.g. \"api_key\"");
            None
        }
        other => other.as_ref().map(|q| q.get_ref().clone()),
    };
    let Some(file) = &auth.keys_file else {
        checker.problem(
            auth.kind.span(),
            format!("{key}.keys_file"),
            "is missing; name the key file, e.g. keys_file = \"partners.keys\"",
        );
        return None;
    };
    let path = base_dir.join(file.get_ref());
    let keys = match std::fs::read_to_string(&path) {
        Ok(text) => read_keys(&text).map_err(|why| format!("{}: {why}", path.display())),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    };
    match keys {
        Ok(keys) => Some(ApiKeyAuth { header, query, keys: ApiKeys(Arc::new(keys)), keys_file: path }),
        Err(why) => {
            checker.problem(file.span(), format!("{key}.keys_file"), why);
            None
        }
    }
}

/// A key file: `NAME KEY` per line (`#` comments), or JSON: `{"NAME": "KEY", ...}` or
/// `[{"name": ..., "key": ...}]`. Keys are hashed at once; the text is dropped.
pub(crate) fn read_keys(text: &str) -> Result<HashMap<[u8; 32], Arc<str>>, String> {
    let pairs: Vec<(String, String, usize)> = match text.trim_start().starts_with(['{', '[']) {
        true => json_keys(text)?,
        false => {
            let mut pairs = Vec::new();
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some(name), Some(key), None) => pairs.push((name.to_string(), key.to_string(), index + 1)),
                    _ => return Err(format!("line {}: write a name and a key, e.g. \"acme 3f9c...\"", index + 1)),
                }
            }
            pairs
        }
    };
    let mut keys = HashMap::new();
    for (name, key, line) in pairs {
        if key.len() < 16 {
            return Err(format!(
                "line {line}: the key for \"{name}\" has {} characters; use at least 16 (e.g. openssl rand -hex 32)",
                key.len()
            ));
        }
        if keys.insert(sha256(key.as_bytes()), Arc::from(name.as_str())).is_some() {
            return Err(format!("line {line}: the key for \"{name}\" is also another name's key"));
        }
    }
    if keys.is_empty() {
        return Err("holds no keys; every request would get 401".to_string());
    }
    Ok(keys)
}

fn json_keys(text: &str) -> Result<Vec<(String, String, usize)>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let mut pairs = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            for (name, key) in map {
                let key = key.as_str().ok_or_else(|| format!("\"{name}\": the key must be a string"))?;
                pairs.push((name, key.to_string(), 0));
            }
        }
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let field = |f: &str| item.get(f).and_then(|v| v.as_str()).map(str::to_string);
                match (field("name"), field("key")) {
                    (Some(name), Some(key)) => pairs.push((name, key, index + 1)),
                    _ => return Err(format!("item {}: write {{\"name\": ..., \"key\": ...}}", index + 1)),
                }
            }
        }
        _ => return Err("write {\"NAME\": \"KEY\"} or [{\"name\": ..., \"key\": ...}]".to_string()),
    }
    Ok(pairs)
}

/// SHA-256, as API keys are kept and compared.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn check_jwt(checker: &mut Checker, key: &str, auth: &FileAuth, base_dir: &Path) -> Option<JwtAuth> {
    let jwks = match (&auth.jwks_file, &auth.jwks_url) {
        (Some(file), None) => {
            let path = base_dir.join(file.get_ref());
            let problem = match std::fs::read(&path) {
                Ok(bytes) => jwks_problem(&bytes),
                Err(error) => Some(format!("cannot read {}: {error}", path.display())),
            };
            if let Some(why) = problem {
                checker.problem(file.span(), format!("{key}.jwks_file"), why);
            }
            Some(JwksSource::File(path))
        }
        (None, Some(url)) => {
            let text = url.get_ref();
            let valid = ["http://", "https://"].iter().any(|scheme| {
                text.strip_prefix(scheme).is_some_and(|rest| {
                    !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
                })
            });
            if !valid {
                checker.problem(url.span(), format!("{key}.jwks_url"), "is not an http:// or https:// URL");
            }
            Some(JwksSource::Url(text.clone()))
        }
        (Some(file), Some(_)) => {
            checker.problem(file.span(), format!("{key}.jwks_file"), "give jwks_file or jwks_url, not both");
            None
        }
        (None, None) if auth.hs256_secret_file.is_some() => Some(JwksSource::File(Default::default())),
        (None, None) => {
            checker.problem(
                auth.kind.span(),
                format!("{key}.jwks_url"),
                "is missing; give jwks_url = \"https://...\" or jwks_file = \"keys.json\"",
            );
            None
        }
    };
    let mut algorithms = Vec::new();
    for alg in auth.algorithms.iter().flatten() {
        match alg.get_ref().as_str() {
            "RS256" => algorithms.push(JwtAlgorithm::Rs256),
            "ES256" => algorithms.push(JwtAlgorithm::Es256),
            "EdDSA" => algorithms.push(JwtAlgorithm::EdDsa),
            "HS256" => algorithms.push(JwtAlgorithm::Hs256),
            other => checker.problem(
                alg.span(),
                format!("{key}.algorithms"),
                format!("\"{other}\" is not supported; write \"RS256\", \"ES256\", \"EdDSA\" or \"HS256\""),
            ),
        }
    }
    if auth.algorithms.is_none() {
        algorithms = vec![JwtAlgorithm::Rs256, JwtAlgorithm::Es256, JwtAlgorithm::EdDsa];
    }
    let hs256_secret = match &auth.hs256_secret_file {
        Some(file) => match std::fs::read(base_dir.join(file.get_ref())) {
            Ok(secret) if secret.trim_ascii().len() >= 32 => Some(Secret(secret.trim_ascii().to_vec())),
            Ok(_) => {
                checker.problem(
                    file.span(),
                    format!("{key}.hs256_secret_file"),
                    "holds fewer than 32 bytes; an HS256 secret must be at least 256 bits (openssl rand -hex 32)",
                );
                None
            }
            Err(error) => {
                checker.problem(file.span(), format!("{key}.hs256_secret_file"), format!("cannot read it: {error}"));
                None
            }
        },
        None => None,
    };
    let hs256 = algorithms.contains(&JwtAlgorithm::Hs256);
    let span = auth.algorithms.as_ref().and_then(|a| a.first()).map_or(auth.kind.span(), Spanned::span);
    if hs256 != auth.hs256_secret_file.is_some() {
        let message = match hs256 {
            true => "\"HS256\" needs hs256_secret_file (a shared secret is an explicit choice)",
            false => "hs256_secret_file is set but \"HS256\" is not in algorithms; add it to both or neither",
        };
        checker.problem(span, format!("{key}.algorithms"), message);
    }
    let mut claim_headers = Vec::new();
    for (claim, header) in auth.claim_headers.iter().flatten() {
        if let Some(name) = header_name(checker, key, "claim_headers", header) {
            claim_headers.push((claim.clone(), name));
        }
    }
    Some(JwtAuth {
        jwks: jwks?,
        jwks_refresh: nonzero_duration(checker, &auth.jwks_refresh, &format!("{key}.jwks_refresh"))
            .unwrap_or(crate::defaults::JWKS_REFRESH),
        algorithms,
        hs256_secret,
        issuer: auth.issuer.as_ref().map(|i| i.get_ref().clone()),
        audience: auth.audience.iter().flatten().map(|a| a.get_ref().clone()).collect(),
        leeway: auth.leeway.as_ref().map_or(crate::defaults::JWT_LEEWAY, |l| l.get_ref().0),
        identity_claim: auth
            .identity_claim
            .as_ref()
            .map_or_else(|| crate::defaults::JWT_IDENTITY_CLAIM.to_string(), |c| c.get_ref().clone()),
        claim_headers,
    })
}

/// What is wrong with a JWKS document, if anything (`{"keys": [...]}`).
fn jwks_problem(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) if value.get("keys").is_some_and(|k| k.is_array()) => None,
        Ok(_) => Some("is not a JWKS: write {\"keys\": [...]}".to_string()),
        Err(error) => Some(format!("is not valid JSON: {error}")),
    }
}

fn header_name(checker: &mut Checker, key: &str, name: &str, value: &Spanned<String>) -> Option<String> {
    let text = value.get_ref();
    let valid = http_token(text);
    if !valid {
        checker.problem(
            value.span(),
            format!("{key}.{name}"),
            format!("\"{text}\" is not a header name; write e.g. \"X-Identity\""),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

/// `route.auth`: the index of the `[auth.NAME]` it names.
pub(crate) fn route_auth(
    checker: &mut Checker,
    key: &str,
    route: &FileRoute,
    auths: &BTreeMap<String, FileAuth>,
) -> Option<usize> {
    let name = route.auth.as_ref()?;
    let index = auths.keys().position(|n| n == name.get_ref());
    if index.is_none() {
        let known = match auths.is_empty() {
            true => "none is defined; add an [auth.NAME] table".to_string(),
            false => format!("defined: {}", auths.keys().cloned().collect::<Vec<_>>().join(", ")),
        };
        checker.problem(name.span(), format!("{key}.auth"), format!("no auth named \"{}\" ({known})", name.get_ref()));
    }
    index
}

/// `[route.rewrite]` and the header edits, with the regex's capture names for the
/// templates of the route's redirect.
pub(crate) fn check_rewrite(
    checker: &mut Checker,
    key: &str,
    route: &FileRoute,
) -> (RewriteConfig, Option<Vec<Option<String>>>) {
    let mut config = RewriteConfig::default();
    let mut captures = None;
    if let Some(rewrite) = &route.rewrite {
        let (path, names) = path_rewrite(checker, key, rewrite, route);
        config.path = path;
        captures = names;
        config.host = match rewrite.host.as_ref().map(|h| h.get_ref().as_str()) {
            None | Some("client") => HostRewrite::Client,
            Some("upstream") => HostRewrite::Upstream,
            Some(other) => {
                let span = rewrite.host.as_ref().map_or(0..0, Spanned::span);
                checker.problem(span, format!("{key}.rewrite.host"), format!("\"{other}\" is not a choice; write \"client\" (the client's Host) or \"upstream\" (the endpoint's address)"));
                HostRewrite::Client
            }
        };
    }
    let names = captures.as_deref();
    if let Some(edits) = &route.request_headers {
        config.request_headers = header_edits(checker, &format!("{key}.request_headers"), edits, names);
    }
    if let Some(edits) = &route.response_headers {
        config.response_headers = header_edits(checker, &format!("{key}.response_headers"), edits, names);
    }
    (config, captures)
}

fn path_rewrite(
    checker: &mut Checker,
    key: &str,
    rewrite: &FileRewrite,
    route: &FileRoute,
) -> (Option<PathRewrite>, Option<Vec<Option<String>>>) {
    let key = format!("{key}.rewrite");
    let prefix = |checker: &mut Checker, value: &Option<Spanned<String>>, name: &str| -> Option<String> {
        let value = value.as_ref()?;
        let text = value.get_ref();
        if !text.starts_with('/') || text.contains(['?', '#']) {
            checker.problem(
                value.span(),
                format!("{key}.{name}"),
                format!("\"{text}\" is not a path prefix; write e.g. \"/api\""),
            );
            return None;
        }
        Some(text.trim_end_matches('/').to_string())
    };
    match (&rewrite.regex, &rewrite.to) {
        (Some(regex), to) => {
            if let Some(span) = rewrite.strip_prefix.as_ref().or(rewrite.add_prefix.as_ref()).map(Spanned::span) {
                checker.problem(
                    span,
                    format!("{key}.regex"),
                    "give regex and to, or strip_prefix / add_prefix, not both",
                );
            }
            let compiled = match regex::Regex::new(regex.get_ref()) {
                Ok(compiled) => compiled,
                Err(error) => {
                    let why = error.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                    checker.problem(
                        regex.span(),
                        format!("{key}.regex"),
                        format!("is not a valid regular expression: {why}"),
                    );
                    return (None, None);
                }
            };
            let names: Vec<Option<String>> = compiled.capture_names().map(|n| n.map(str::to_string)).collect();
            let Some(to) = to else {
                checker.problem(
                    regex.span(),
                    format!("{key}.to"),
                    "is missing; the path the regex makes, e.g. to = \"/v2/users/{1}\"",
                );
                return (None, Some(names));
            };
            match Template::parse(to.get_ref(), Some(&names)) {
                Ok(template) if to.get_ref().starts_with('/') || to.get_ref().starts_with('{') => {
                    (Some(PathRewrite::Regex { regex: PathRegex(compiled), to: template }), Some(names))
                }
                Ok(_) => {
                    checker.problem(to.span(), format!("{key}.to"), "must start with \"/\" (a path)");
                    (None, Some(names))
                }
                Err(why) => {
                    checker.problem(to.span(), format!("{key}.to"), why);
                    (None, Some(names))
                }
            }
        }
        (None, Some(to)) => {
            checker.problem(
                to.span(),
                format!("{key}.to"),
                "needs regex; to replace a prefix, write strip_prefix and add_prefix",
            );
            (None, None)
        }
        (None, None) => {
            let strip = prefix(checker, &rewrite.strip_prefix, "strip_prefix");
            let add = prefix(checker, &rewrite.add_prefix, "add_prefix");
            if let (Some(strip), Some(value)) = (&strip, &rewrite.strip_prefix) {
                let route_prefix = route.path_prefix.as_ref().map_or("/", |p| p.get_ref().as_str());
                if !route_prefix.starts_with(strip.as_str()) {
                    checker.problem(value.span(), format!("{key}.strip_prefix"), format!("\"{strip}\" is not part of the route's path_prefix \"{route_prefix}\", so it would strip nothing from some requests; make it a start of path_prefix"));
                }
            }
            match (strip, add) {
                (None, None) => (None, None),
                (strip, add) => {
                    (Some(PathRewrite::Prefix { strip: strip.unwrap_or_default(), add: add.unwrap_or_default() }), None)
                }
            }
        }
    }
}

fn header_edits(
    checker: &mut Checker,
    key: &str,
    edits: &FileHeaderEdits,
    captures: Option<&[Option<String>]>,
) -> HeaderEdits {
    let mut out = HeaderEdits::default();
    let named = |checker: &mut Checker,
                 list: &Option<BTreeMap<String, Spanned<String>>>,
                 what: &str|
     -> Vec<(http::HeaderName, Template)> {
        let mut parsed = Vec::new();
        for (name, value) in list.iter().flatten() {
            let Some(header) = header_name_of(name) else {
                checker.problem(value.span(), format!("{key}.{what}"), format!("\"{name}\" is not a header name"));
                continue;
            };
            if value.get_ref().bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                checker.problem(
                    value.span(),
                    format!("{key}.{what}.{name}"),
                    "a header value cannot hold a line break",
                );
                continue;
            }
            match Template::parse(value.get_ref(), captures) {
                Ok(template) => parsed.push((header, template)),
                Err(why) => checker.problem(value.span(), format!("{key}.{what}.{name}"), why),
            }
        }
        parsed
    };
    out.set = named(checker, &edits.set, "set");
    out.add = named(checker, &edits.add, "add");
    for name in edits.remove.iter().flatten() {
        let text = name.get_ref();
        match header_name_of(text) {
            Some(header) => out.remove.push(header),
            None => checker.problem(name.span(), format!("{key}.remove"), format!("\"{text}\" is not a header name")),
        }
    }
    out
}

/// A header name as written (any case), if it is one.
fn header_name_of(text: &str) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes()).ok()
}

/// `[route.redirect]`.
pub(crate) fn check_redirect(
    checker: &mut Checker,
    key: &str,
    redirect: &FileRedirect,
    captures: Option<&[Option<String>]>,
) -> Option<RedirectConfig> {
    let key = format!("{key}.redirect");
    let status = match &redirect.status {
        None => crate::defaults::REDIRECT_STATUS,
        Some(s) if [301, 302, 303, 307, 308].contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            checker.problem(
                s.span(),
                format!("{key}.status"),
                format!("{} is not a redirect; write 301, 302, 303, 307 or 308", s.get_ref()),
            );
            return None;
        }
    };
    let only_scheme = match redirect.only_scheme.as_ref().map(|s| (s.span(), s.get_ref().as_str())) {
        None => None,
        Some((_, scheme @ ("http" | "https"))) => Some(scheme.to_string()),
        Some((span, other)) => {
            checker.problem(
                span,
                format!("{key}.only_scheme"),
                format!("\"{other}\" is not a scheme; write \"http\" or \"https\""),
            );
            return None;
        }
    };
    let to = match Template::parse(redirect.to.get_ref(), captures) {
        Ok(to) => to,
        Err(why) => {
            checker.problem(redirect.to.span(), format!("{key}.to"), why);
            return None;
        }
    };
    Some(RedirectConfig { status, to, only_scheme })
}

/// `[route.compression]`.
pub(crate) fn check_compression(
    checker: &mut Checker,
    key: &str,
    compression: &FileCompression,
) -> Option<CompressionConfig> {
    let key = format!("{key}.compression");
    const LEVEL: i64 = crate::defaults::COMPRESSION_LEVEL;
    let before = checker.problems.len();
    let mut levels: BTreeMap<&str, (i64, Option<std::ops::Range<usize>>)> =
        [("zstd", (LEVEL, None)), ("br", (LEVEL, None)), ("gzip", (LEVEL, None))].into();
    for (name, level) in compression.levels.iter().flatten() {
        match levels.get_mut(name.as_str()) {
            Some(slot) => *slot = (*level.get_ref(), Some(level.span())),
            None => checker.problem(
                level.span(),
                format!("{key}.levels"),
                format!("\"{name}\" is not an algorithm; write zstd, br or gzip"),
            ),
        }
    }
    for (name, (level, span), range) in levels.iter().map(|(n, (l, s))| {
        (
            n,
            (l, s),
            match *n {
                "zstd" => 1..=19,
                "br" => 0..=11,
                _ => 1..=9,
            },
        )
    }) {
        if let (Some(span), false) = (span, range.contains(level)) {
            checker.problem(
                span.clone(),
                format!("{key}.levels.{name}"),
                format!("{level} is out of range; {name} takes {} to {}", range.start(), range.end()),
            );
        }
    }
    let level = |name: &str| levels.get(name).map_or(1, |(l, _)| *l as u32);
    let mut algorithms = Vec::new();
    let names: Vec<(String, std::ops::Range<usize>)> = match &compression.algorithms {
        Some(list) => list.iter().map(|a| (a.get_ref().clone(), a.span())).collect(),
        None => ["zstd", "br", "gzip"].iter().map(|n| (n.to_string(), 0..0)).collect(),
    };
    for (name, span) in names {
        let coding = match name.as_str() {
            "zstd" => Coding::Zstd,
            "br" => Coding::Brotli,
            "gzip" => Coding::Gzip,
            other => {
                checker.problem(
                    span,
                    format!("{key}.algorithms"),
                    format!("\"{other}\" is not an algorithm; write \"zstd\", \"br\" or \"gzip\""),
                );
                continue;
            }
        };
        // A repeat could never be chosen (ties go to the first): dropped.
        if algorithms.iter().any(|(listed, _)| *listed == coding) {
            continue;
        }
        algorithms.push((coding, level(coding.token())));
    }
    let types = match &compression.types {
        Some(list) => {
            let mut types = Vec::new();
            for t in list {
                let text = t.get_ref().trim().to_ascii_lowercase();
                let valid = text.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty() && !b.is_empty() && !a.contains('*') && (b == "*" || !b.contains('*'))
                });
                if valid {
                    types.push(text);
                } else {
                    checker.problem(
                        t.span(),
                        format!("{key}.types"),
                        format!("\"{text}\" is not a media type; write e.g. \"application/json\" or \"text/*\""),
                    );
                }
            }
            types
        }
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
    };
    let min_size = compression.min_size.as_ref().map_or(crate::defaults::COMPRESSION_MIN_SIZE, |s| s.get_ref().0);
    (checker.problems.len() == before && !algorithms.is_empty()).then_some(CompressionConfig {
        algorithms,
        types,
        min_size,
    })
}

/// What compresses well and is common in APIs and pages (nginx's gzip_types and more).
const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/problem+json",
    "application/ld+json",
    "application/graphql-response+json",
    "image/svg+xml",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_read_as_lines_or_json_and_kept_as_hashes() {
        let keys = read_keys("# partners\nacme 0123456789abcdef0123\n\nglobex  fedcba9876543210fedc\n").expect("reads");
        assert_eq!(keys.get(&sha256(b"0123456789abcdef0123")).map(|n| &**n), Some("acme"));
        assert_eq!(keys.len(), 2);
        let keys = read_keys("{\"acme\": \"0123456789abcdef0123\"}").expect("reads");
        assert_eq!(keys.get(&sha256(b"0123456789abcdef0123")).map(|n| &**n), Some("acme"));
        let keys = read_keys("[{\"name\": \"acme\", \"key\": \"0123456789abcdef0123\"}]").expect("reads");
        assert_eq!(keys.len(), 1);
        assert!(read_keys("acme short\n").expect_err("refused").contains("at least 16"));
        assert!(read_keys("acme\n").expect_err("refused").contains("line 1"));
        assert!(read_keys("a 0123456789abcdef0123\nb 0123456789abcdef0123\n").expect_err("refused").contains("line 2"));
        assert!(read_keys("# nothing\n").expect_err("refused").contains("no keys"));
    }
}
