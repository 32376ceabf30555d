//! The API gateway's route settings as sluice runs them (issue 23): `[auth.NAME]`
//! (API keys, JWT), `[route.rewrite]`, header edits, redirects and compression, and
//! the value templates they share (`{client_addr}`, `{1}`...).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `[auth.NAME]`: how a route's callers prove who they are.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub name: String,
    pub kind: AuthKind,
    /// The identity goes upstream in this header (lower case); a copy the client sent
    /// is removed first. None: not sent.
    pub identity_header: Option<String>,
    /// The credential (the key's header or query parameter, or Authorization) is
    /// removed before forwarding. Default true.
    pub hide_credentials: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthKind {
    ApiKey(ApiKeyAuth),
    Jwt(JwtAuth),
}

/// `kind = "api_key"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyAuth {
    /// The header the key is read from (lower case). Default `x-api-key`.
    pub header: String,
    /// A query parameter read when the header is absent. Default none.
    pub query: Option<String>,
    /// The keys, as SHA-256 hashes, read from `keys_file` when the config is loaded.
    pub keys: ApiKeys,
    pub keys_file: PathBuf,
}

/// Key hashes and the name each stands for. Only hashes are kept: a memory dump or a
/// `/config` never shows a key.
#[derive(Clone, Default)]
pub struct ApiKeys(pub Arc<HashMap<[u8; 32], Arc<str>>>);

impl PartialEq for ApiKeys {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} keys", self.0.len())
    }
}

/// `kind = "jwt"`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuth {
    pub jwks: JwksSource,
    /// The shortest time between two fetches of a JWKS URL (an unknown `kid` asks for
    /// one sooner than the periodic refresh). Default 5 minutes.
    pub jwks_refresh: Duration,
    /// Accepted `alg` values. Default RS256, ES256, EdDSA.
    pub algorithms: Vec<JwtAlgorithm>,
    /// The HS256 secret (`hs256_secret_file`), required for and only with "HS256".
    pub hs256_secret: Option<Secret>,
    /// `iss` must be this, when set.
    pub issuer: Option<String>,
    /// `aud` must hold one of these, when set.
    pub audience: Vec<String>,
    /// Allowed clock difference for `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
    /// The claim that becomes the identity. Default `sub`.
    pub identity_claim: String,
    /// Claims sent upstream, as (claim, header name in lower case).
    pub claim_headers: Vec<(String, String)>,
}

/// Where the JWT signing keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// Read with the config (reloaded with it).
    File(PathBuf),
    /// Fetched in the background, kept, and fetched again on an unknown `kid`.
    Url(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

/// A secret read from a file: never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a route changes on the way through (`[route.rewrite]`, `[route.request_headers]`,
/// `[route.response_headers]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RewriteConfig {
    pub path: Option<PathRewrite>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// The Host (or :authority) the upstream is sent.
    pub host: HostRewrite,
}

impl RewriteConfig {
    /// Whether a route with these settings changes anything.
    pub fn is_noop(&self) -> bool {
        self == &RewriteConfig::default()
    }
}

/// A new path for the upstream, made from the normalised path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathRewrite {
    /// `strip_prefix` removed (at a segment boundary), then `add_prefix` put before.
    Prefix { strip: String, add: String },
    /// A path the regex matches becomes `to` (with its captures); others pass unchanged.
    Regex { regex: PathRegex, to: Template },
}

/// A compiled regex, compared by its text.
#[derive(Clone)]
pub struct PathRegex(pub regex::Regex);

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl std::fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// Header edits in the order applied: remove, set (replace), add (append). Names are
/// lower case.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    pub remove: Vec<http::HeaderName>,
    pub set: Vec<(http::HeaderName, Template)>,
    pub add: Vec<(http::HeaderName, Template)>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostRewrite {
    /// The client's Host, as nginx's `proxy_set_header Host $host` (the default).
    #[default]
    Client,
    /// The address of the endpoint the request is sent to, as written in the config.
    Upstream,
}

/// `[route.redirect]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectConfig {
    /// 301, 302, 307 or 308. Default 308 (method and body kept).
    pub status: u16,
    pub to: Template,
    /// Only requests that came in over this scheme are redirected ("http": the route
    /// forwards HTTPS requests and sends plain ones to HTTPS). None: every request.
    pub only_scheme: Option<String>,
}

/// `[route.compression]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionConfig {
    /// In the server's order of preference, for codings the client weighs alike.
    pub algorithms: Vec<(Coding, u32)>,
    /// Media types compressed: exact (`application/json`) or a type's family (`text/*`).
    pub types: Vec<String>,
    /// Responses whose Content-Length is smaller pass as they are. Default 1 KiB.
    pub min_size: u64,
}

/// A content coding sluice can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The token in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// A header value or redirect target with variables, parsed once with the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Var(TemplateVar),
}

/// What `{name}` in a template stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateVar {
    /// `{client_addr}`: the client's IP address (through trusted proxies).
    ClientAddr,
    /// `{request_id}`.
    RequestId,
    /// `{identity}`: who `auth` says is calling (empty without auth).
    Identity,
    /// `{route}`: the route's name.
    Route,
    /// `{scheme}`: http or https, as the client connected.
    Scheme,
    /// `{host}`: the Host as sent (with its port).
    Host,
    /// `{hostname}`: the Host without its port.
    Hostname,
    /// `{path}`: the normalised path, before any rewrite.
    Path,
    /// `{query}`: the query, without `?`.
    Query,
    /// `{uri}`: path and, when there is one, `?` and the query.
    Uri,
    /// `{1}`, `{name}`: a capture of the route's `rewrite.regex` (empty when unmatched).
    Capture(usize),
}

impl Template {
    /// Parses `text`: `{var}` for a variable, `{{` and `}}` for braces. `captures` names
    /// the groups of the route's regex (index 0 is the whole match), when it has one.
    pub fn parse(text: &str, captures: Option<&[Option<String>]>) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err("a \"}\" without its \"{\"; write \"}}\" for a brace".to_string());
            }
            let end = tail.find('}').ok_or_else(|| "a \"{\" is not closed; write \"{{\" for a brace".to_string())?;
            let name = &tail[1..end];
            if !literal.is_empty() {
                parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Var(variable(name, captures)?));
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(TemplatePart::Text(literal));
        }
        Ok(Template { parts })
    }
}

const VARIABLES: &[(&str, TemplateVar)] = &[
    ("client_addr", TemplateVar::ClientAddr),
    ("request_id", TemplateVar::RequestId),
    ("identity", TemplateVar::Identity),
    ("route", TemplateVar::Route),
    ("scheme", TemplateVar::Scheme),
    ("host", TemplateVar::Host),
    ("hostname", TemplateVar::Hostname),
    ("path", TemplateVar::Path),
    ("query", TemplateVar::Query),
    ("uri", TemplateVar::Uri),
];

fn variable(name: &str, captures: Option<&[Option<String>]>) -> Result<TemplateVar, String> {
    if let Some((_, var)) = VARIABLES.iter().find(|(known, _)| *known == name) {
        return Ok(*var);
    }
    let Some(captures) = captures else {
        if name.bytes().all(|b| b.is_ascii_digit()) || name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "\"{{{name}}}\" is not a variable (captures need rewrite.regex); known: {}",
                known.join(", ")
            ));
        }
        return Err(format!("\"{{{name}}}\" is not a variable"));
    };
    if let Ok(index) = name.parse::<usize>() {
        if index < captures.len() {
            return Ok(TemplateVar::Capture(index));
        }
        return Err(format!("\"{{{name}}}\": rewrite.regex has {} capture groups", captures.len() - 1));
    }
    match captures.iter().position(|c| c.as_deref() == Some(name)) {
        Some(index) => Ok(TemplateVar::Capture(index)),
        None => {
            let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "\"{{{name}}}\" is neither a variable ({}) nor a capture group of rewrite.regex",
                known.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_read_variables_braces_and_captures() {
        let t = Template::parse("https://{hostname}:8443{uri}", None).expect("parses");
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Text("https://".into()),
                TemplatePart::Var(TemplateVar::Hostname),
                TemplatePart::Text(":8443".into()),
                TemplatePart::Var(TemplateVar::Uri),
            ]
        );
        let names = [None, Some("id".to_string())];
        let t = Template::parse("{{x}} /v2/{id}/{1}", Some(&names)).expect("parses");
        assert_eq!(t.parts[0], TemplatePart::Text("{x} /v2/".into()));
        assert_eq!(t.parts[1], TemplatePart::Var(TemplateVar::Capture(1)));
        assert_eq!(t.parts[3], TemplatePart::Var(TemplateVar::Capture(1)));
        assert!(Template::parse("{2}", Some(&names)).expect_err("refused").contains("1 capture groups"));
        assert!(Template::parse("{1}", None).expect_err("refused").contains("need rewrite.regex"));
        assert!(Template::parse("{nope}", None).expect_err("refused").contains("known: client_addr"));
        assert!(Template::parse("a{b", None).expect_err("refused").contains("not closed"));
        assert!(Template::parse("a}b", None).expect_err("refused").contains("without its"));
    }
}
