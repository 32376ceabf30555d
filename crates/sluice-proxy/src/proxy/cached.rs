//! A routed request through the response cache, top to bottom: unsafe methods
//! invalidate; GET and HEAD are answered from a stored response when the freshness
//! rules allow (`sluice_policy::cache`), revalidated with the origin when they do not,
//! and fetched once for a burst of identical misses (coalescing), the response stored
//! while it streams to the client. Every answer says what happened in `Cache-Status`
//! (RFC 9211) and in the request's record. PURGE requests end here too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, PRAGMA, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use sluice_policy::cache::{self as rules, CacheControl, Exchange, NotStored, Usable};

use super::{Origin, OwnedOrigin, ProxyBody, ProxyError};
use crate::body::RequestBody;
use crate::cache::{self, Across, Cache, CacheFill, Entry, Facts, FillTo, Join, Lead, TARGETED};
use crate::outcome::Outcome;

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// How often a request waiting on another instance's fetch (the Redis lock) looks
/// for its result in the shared tier.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// What the client's request asks of the cache, read once.
struct Asked {
    key: String,
    control: CacheControl,
    authorized: bool,
    head: bool,
    /// The client speaks HTTP/1 (its writer takes a stored response's fields as bytes).
    http1: bool,
    /// The client's own conditionals, answered by sluice from a stored response.
    if_none_match: Option<String>,
    if_modified_since: Option<u64>,
}

pub(super) async fn handle(
    cache: &Arc<Cache>,
    origin: &Origin<'_>,
    mut request: Request<RequestBody>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let method = request.method().clone();
    if !matches!(method, Method::GET | Method::HEAD) {
        return unsafe_method(cache, origin, request, outcome).await;
    }
    let asked = read_request(cache, origin, &mut request);
    let now = cache::unix_now();
    let stored = cache.lookup(&asked.key, request.headers()).await.filter(|entry| shareable(&asked, entry));
    if let Some(entry) = stored {
        match rules::usable(&entry.stored(now), &asked.control) {
            Usable::Fresh { ttl } if ttl >= 0 => {
                count(&cache.stats.hits);
                outcome.cache = Some("hit");
                let (age, status) = entry.hit_headers(now, |ttl| cache_status(&format!("hit; ttl={ttl}")));
                return Ok(serve_with(&entry, &asked, age, status));
            }
            Usable::Fresh { ttl } => {
                count(&cache.stats.hits);
                outcome.cache = Some("hit");
                return Ok(serve(&entry, &asked, now, &format!("hit; ttl={ttl}; detail=max-stale")));
            }
            Usable::StaleWhileRevalidate { ttl } => {
                count(&cache.stats.stale);
                if let Join::Lead(lead) = cache.join(&asked.key) {
                    refresh_in_background(cache, origin.to_owned(), request, Arc::clone(&entry), lead);
                }
                outcome.cache = Some("stale");
                return Ok(serve(&entry, &asked, now, &format!("hit; ttl={ttl}; detail=stale-while-revalidate")));
            }
            Usable::Revalidate => return revalidate(cache, origin, request, &asked, entry, outcome).await,
        }
    }
    if asked.control.only_if_cached {
        outcome.cache = Some("miss");
        return Err(ProxyError::NotCached);
    }
    miss(cache, origin, request, &asked, outcome).await
}

/// The key, the directives and the conditionals of a GET or HEAD; the conditionals
/// are taken off (sluice answers them; the origin is asked its own), and a HEAD goes
/// to the origin as a GET, so that its response can be stored (nginx does the same).
fn read_request(cache: &Cache, origin: &Origin<'_>, request: &mut Request<RequestBody>) -> Asked {
    let host = origin.host().and_then(|h| h.to_str().ok()).unwrap_or("");
    let authority = cache::key_authority(&cache.config, host, origin.upstream_name());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let key = cache::primary_key(&cache.config, origin.scheme(), &authority, path, request.headers());
    // One pass over the names present (compared without hashing) finds what the cache
    // reads; the hashed lookups below happen only for fields that are there.
    let (mut has_control, mut has_pragma, mut conditional, mut authorized) = (false, false, false, false);
    for name in request.headers().keys() {
        has_control |= name == CACHE_CONTROL;
        has_pragma |= name == PRAGMA;
        conditional |= name == IF_NONE_MATCH || name == IF_MODIFIED_SINCE;
        authorized |= name == AUTHORIZATION;
    }
    // sluice took the credential off a request its route's auth admitted.
    authorized |= origin.authenticated();
    let headers = request.headers_mut();
    let mut control = CacheControl::default();
    if has_control {
        control = CacheControl::parse(headers.get_all(CACHE_CONTROL).iter().map(HeaderValue::as_bytes));
    } else if has_pragma && headers.get_all(PRAGMA).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")) {
        control.no_cache = true;
    }
    let (mut if_none_match, mut if_modified_since) = (None, None);
    if conditional {
        if_none_match = headers.remove(IF_NONE_MATCH).and_then(|v| v.to_str().ok().map(str::to_string));
        if_modified_since = cache::date_field(headers, &IF_MODIFIED_SINCE);
        headers.remove(IF_MODIFIED_SINCE);
    }
    let head = request.method() == Method::HEAD;
    if head {
        *request.method_mut() = Method::GET;
    }
    Asked {
        key,
        control,
        authorized,
        head,
        http1: request.version() != http::Version::HTTP_2 && !origin.fields_in_map(),
        if_none_match,
        if_modified_since,
    }
}

/// A request with Authorization may only be given a stored response that says it may
/// be shared (RFC 9111 §3.5).
fn shareable(asked: &Asked, entry: &Entry) -> bool {
    !asked.authorized || entry.control.public || entry.control.s_maxage.is_some() || entry.control.must_revalidate
}

/// Nothing usable is stored: fetch, coalesced with the same key's other misses.
async fn miss(
    cache: &Arc<Cache>,
    origin: &Origin<'_>,
    request: Request<RequestBody>,
    asked: &Asked,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    // An authorized request never shares a fetch: its response may be private.
    if asked.authorized || !cache.config.coalesce {
        return fetch(cache, origin, request, asked, None, None, outcome).await;
    }
    match cache.join(&asked.key) {
        Join::Lead(mut lead) => {
            if cache.locks_across() {
                match cache.lock_across(&asked.key).await {
                    Across::Free => lead.hold_across(cache),
                    Across::Pass => {}
                    Across::Fetching => {
                        if let Some(entry) = wait_for_other_instance(cache, &asked.key, request.headers()).await {
                            count(&cache.stats.coalesced);
                            lead.stored(Arc::clone(&entry));
                            outcome.cache = Some("coalesced");
                            return Ok(serve(&entry, asked, cache::unix_now(), "fwd=miss; collapsed; detail=instance"));
                        }
                    }
                }
            }
            fetch(cache, origin, request, asked, Some(lead), None, outcome).await
        }
        Join::Follow(landing) => {
            match followed(cache, landing, &request, asked, outcome, "fwd=miss; collapsed").await {
                Some(response) => Ok(response),
                None => fetch(cache, origin, request, asked, None, None, outcome).await,
            }
        }
        Join::Pass => fetch(cache, origin, request, asked, None, None, outcome).await,
    }
}

/// A follower's answer: the leader's stored response, when there is one and it is the
/// variant this request asks for; None sends the follower to the origin itself.
async fn followed(
    cache: &Cache,
    landing: tokio::sync::watch::Receiver<cache::Landing>,
    request: &Request<RequestBody>,
    asked: &Asked,
    outcome: &mut Outcome,
    status: &str,
) -> Option<Response<ProxyBody>> {
    let entry = cache::follow(landing).await?;
    if !entry.matches(request.headers()) {
        return None;
    }
    count(&cache.stats.coalesced);
    outcome.cache = Some("coalesced");
    Some(serve(&entry, asked, cache::unix_now(), status))
}

/// Another instance holds the fetch lock: its response appears in the shared tier, or
/// the lock goes (failed) or turns to `pass` (not storable), and this request goes to
/// the origin itself at once: it never waits longer than the other fetch plus a poll.
/// `coalesce_wait` bounds it when the other instance dies holding the lock.
async fn wait_for_other_instance(cache: &Cache, key: &str, headers: &http::HeaderMap) -> Option<Arc<Entry>> {
    let deadline = tokio::time::Instant::now() + cache.config.coalesce_wait;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LOCK_POLL).await;
        match cache.poll_across(key, headers).await {
            (Some(entry), _) => return Some(entry),
            (None, Across::Fetching) => {}
            (None, Across::Free | Across::Pass) => return None,
        }
    }
    None
}

/// A stored response that must be checked with the origin first: a conditional
/// request when it has validators; a 304 refreshes it, a 5xx or failure may still be
/// answered with it (stale-if-error).
async fn revalidate(
    cache: &Arc<Cache>,
    origin: &Origin<'_>,
    mut request: Request<RequestBody>,
    asked: &Asked,
    entry: Arc<Entry>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    // One revalidation at a time per key; the others wait for its result.
    let join = if asked.authorized || !cache.config.coalesce { Join::Pass } else { cache.join(&asked.key) };
    let lead = match join {
        Join::Lead(lead) => Some(lead),
        Join::Follow(landing) => {
            if let Some(response) = followed(cache, landing, &request, asked, outcome, "fwd=stale; collapsed").await {
                return Ok(response);
            }
            None
        }
        Join::Pass => None,
    };
    add_validators(&mut request, &entry);
    fetch(cache, origin, request, asked, lead, Some(entry), outcome).await
}

fn add_validators(request: &mut Request<RequestBody>, entry: &Entry) {
    let headers = request.headers_mut();
    if let Some(etag) = entry.etag() {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.headers.get(LAST_MODIFIED) {
        headers.insert(IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Goes to the origin; stores what may be stored while it streams to the client.
/// `stale` is the stored response being revalidated, if any.
async fn fetch(
    cache: &Arc<Cache>,
    origin: &Origin<'_>,
    request: Request<RequestBody>,
    asked: &Asked,
    lead: Option<Lead>,
    stale: Option<Arc<Entry>>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let vary_source = request.headers().clone();
    let request_time = cache::unix_now();
    // Boxed: the origin's future is large, and a hit (the common case) never needs it.
    let fetched = Box::pin(origin.fetch(request, outcome)).await;
    let response_time = cache::unix_now();
    let stale_usable =
        |entry: &Entry| rules::usable_on_error(&entry.stored(response_time), &asked.control).then_some(());
    let mut response = match fetched {
        Ok(response) => response,
        Err(error) => {
            if let Some(entry) = stale.as_ref().filter(|e| stale_usable(e).is_some()) {
                count(&cache.stats.stale);
                outcome.cache = Some("stale");
                let status =
                    format!("fwd=stale; fwd-status=502; detail=stale-if-error; ttl={}", ttl(entry, response_time));
                return Ok(serve(entry, asked, response_time, &status));
            }
            return Err(error);
        }
    };
    take_targeted(response.headers_mut(), cache.targeted_fields());
    let status = response.status();
    default_lifetime(response.headers_mut(), origin.cache_default_lifetime(), status);
    if let Some(entry) = &stale {
        if status == StatusCode::NOT_MODIFIED {
            let refreshed = Arc::new(entry.refreshed(
                response.headers(),
                request_time,
                response_time,
                cache.heuristic(),
                &cache.config.tag_header,
            ));
            cache.store(Arc::clone(&refreshed));
            if let Some(lead) = lead {
                lead.stored(Arc::clone(&refreshed));
            }
            count(&cache.stats.revalidated);
            outcome.cache = Some("revalidated");
            return Ok(serve(&refreshed, asked, response_time, "fwd=stale; fwd-status=304"));
        }
        if status.is_server_error() && stale_usable(entry).is_some() {
            count(&cache.stats.stale);
            outcome.cache = Some("stale");
            let detail = format!(
                "fwd=stale; fwd-status={}; detail=stale-if-error; ttl={}",
                status.as_u16(),
                ttl(entry, response_time)
            );
            return Ok(serve(entry, asked, response_time, &detail));
        }
    }
    count(&cache.stats.misses);
    // An authorized request that found nothing it may share went around the cache.
    outcome.cache = Some(if asked.authorized { "bypass" } else { "miss" });
    let fwd = if stale.is_some() { "fwd=stale" } else { "fwd=miss" };
    Ok(store_while_streaming(cache, response, asked, &vary_source, (request_time, response_time), lead, fwd))
}

/// Attaches a fill to a storable response's body (or says why it is not stored) and
/// shapes the answer for the client: a HEAD gets the head, a matching conditional
/// gets 304; the body is then read into the cache in the background.
fn store_while_streaming(
    cache: &Arc<Cache>,
    response: Response<ProxyBody>,
    asked: &Asked,
    request_headers: &http::HeaderMap,
    (request_time, response_time): (u64, u64),
    lead: Option<Lead>,
    fwd: &str,
) -> Response<ProxyBody> {
    let (mut parts, mut body) = response.into_parts();
    let facts = Facts::read(parts.status, &parts.headers, request_time, response_time, cache.heuristic());
    let decision = storable(cache, &parts, &facts, asked);
    let status_text = match decision {
        Ok(()) => {
            let vary = cache::vary_values(facts.vary.as_deref().unwrap_or(&[]), request_headers);
            let to = FillTo {
                key: Arc::from(asked.key.as_str()),
                status: parts.status,
                headers: parts.headers.clone(),
                facts,
                vary,
            };
            body.fill_cache(CacheFill::new(Arc::clone(cache), to, lead));
            format!("{fwd}; stored")
        }
        Err(reason) => {
            if let Some(lead) = lead {
                lead.not_storable();
            }
            format!("{fwd}; detail={}", reason.as_str())
        }
    };
    parts.headers.insert(CACHE_STATUS.clone(), cache_status(&status_text));
    parts.headers.remove(TARGETED); // this cache's alone (kept in the stored copy)
    let stored = decision.is_ok();
    // Set-Cookie goes to the client that caused the fetch; the stored copy has none.
    let not_modified = stored
        && rules::not_modified(
            asked.if_none_match.as_deref(),
            asked.if_modified_since,
            parts.headers.get(ETAG).and_then(|v| v.to_str().ok()),
            cache::date_field(&parts.headers, &LAST_MODIFIED),
        );
    if asked.head || not_modified {
        // The body is read for the cache alone: only when it will be stored, and within
        // the background bound; otherwise dropping it closes its upstream connection
        // (reading 16 MiB that nobody stores cost the pool a connection for as long).
        if stored {
            drain_in_background(cache, body);
        }
        if not_modified {
            return not_modified_response(&parts.headers);
        }
        return Response::from_parts(parts, ProxyBody::empty());
    }
    Response::from_parts(parts, body)
}

/// RFC 9213: the first targeted cache-control field present (the configured one, then
/// CDN-Cache-Control) decides this cache's caching; it moves to `TARGETED`, which the
/// stored copy keeps and no client is sent. The fields themselves are taken off: they
/// were meant for this cache (one of that name from the origin is replaced too).
fn take_targeted(headers: &mut http::HeaderMap, fields: &[HeaderName]) {
    let targeted = fields.iter().find_map(|name| headers.get(name).cloned());
    for name in fields {
        headers.remove(name);
    }
    headers.remove(TARGETED);
    if let Some(value) = targeted {
        headers.insert(TARGETED, value);
    }
}

/// `cache_default_lifetime` (nginx's `proxy_cache_valid`): a response that gives no
/// lifetime of its own (no max-age, s-maxage or Expires) gets one for this cache alone,
/// in the targeted field that the stored copy keeps and no client is sent, so that
/// every instance reading it from the shared tier agrees. no-store, private and
/// no-cache keep the response out as ever; only heuristically cacheable statuses.
fn default_lifetime(headers: &mut http::HeaderMap, lifetime: Option<Duration>, status: StatusCode) {
    let Some(lifetime) = lifetime else { return };
    if !rules::heuristically_cacheable(status.as_u16()) {
        return;
    }
    let targeted = headers.get(TARGETED).cloned();
    let governing: Vec<HeaderValue> = match &targeted {
        Some(value) => vec![value.clone()],
        None => headers.get_all(CACHE_CONTROL).iter().cloned().collect(),
    };
    let control = CacheControl::parse(governing.iter().map(HeaderValue::as_bytes));
    let expires = targeted.is_none() && headers.contains_key(EXPIRES);
    let explicit = control.max_age.is_some() || control.s_maxage.is_some() || expires;
    if explicit || control.no_store || control.private || control.no_cache {
        return;
    }
    let mut directives: Vec<String> = governing
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    directives.push(format!("max-age={}", lifetime.as_secs().max(1)));
    if let Ok(value) = HeaderValue::from_str(&directives.join(", ")) {
        headers.insert(TARGETED, value);
    }
}

/// The storing rules for this response, and the size limit when its length is known.
fn storable(cache: &Cache, parts: &http::response::Parts, facts: &Facts, asked: &Asked) -> Result<(), NotStored> {
    let exchange = Exchange {
        method: "GET",
        request: &asked.control,
        request_has_authorization: asked.authorized,
        status: parts.status.as_u16(),
        response: &facts.control,
        explicit_lifetime: facts.explicit_lifetime,
        has_validator: facts.has_validator,
        lifetime: facts.lifetime,
        has_set_cookie: parts.headers.contains_key(http::header::SET_COOKIE),
        vary_star: facts.vary.is_none(),
    };
    rules::storable(&exchange, cache.config.store_set_cookie)?;
    let length = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > cache.config.max_object) {
        return Err(NotStored::TooLarge);
    }
    Ok(())
}

/// Reads a body to its end with no client, so that its fill stores it; under the
/// cache's background bound (else the body is dropped: not stored, connection closed).
fn drain_in_background(cache: &Cache, mut body: ProxyBody) {
    let Some(permit) = cache.background_permit() else { return };
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
        drop(permit);
    });
}

/// stale-while-revalidate: the stale response was served; this fetches its
/// replacement once, as a request of its own (with its own record and log line).
fn refresh_in_background(
    cache: &Arc<Cache>,
    origin: OwnedOrigin,
    mut request: Request<RequestBody>,
    entry: Arc<Entry>,
    lead: Lead,
) {
    let Some(permit) = cache.background_permit() else { return }; // the stale entry keeps serving
    let cache = Arc::clone(cache);
    add_validators(&mut request, &entry);
    tokio::spawn(async move {
        let _permit = permit;
        let mut record = origin.record();
        let asked = Asked {
            key: entry.key.to_string(),
            control: CacheControl::default(),
            authorized: false,
            head: true, // nobody reads this answer: the body is drained into the cache
            http1: false,
            if_none_match: None,
            if_modified_since: None,
        };
        let outcome = record.outcome();
        let answered = fetch(&cache, &origin.origin(), request, &asked, Some(lead), Some(entry), outcome).await;
        outcome.cache = Some("refresh");
        outcome.status = answered.as_ref().map_or(502, |r| r.status().as_u16());
        record.finish(crate::outcome::End::Complete);
    });
}

/// The response for a stored entry: 304 when the client's conditional matches, the
/// head alone for HEAD, else the whole stored response; with Age and Cache-Status.
fn serve(entry: &Entry, asked: &Asked, now: u64, status: &str) -> Response<ProxyBody> {
    serve_with(entry, asked, HeaderValue::from(entry.timing.current_age(now)), cache_status(status))
}

fn serve_with(entry: &Entry, asked: &Asked, age: HeaderValue, status: HeaderValue) -> Response<ProxyBody> {
    let modified = entry.last_modified();
    let etag = entry.etag().and_then(|v| v.to_str().ok());
    let mut response = if rules::not_modified(asked.if_none_match.as_deref(), asked.if_modified_since, etag, modified) {
        not_modified_response(&entry.headers)
    } else if asked.http1 && !asked.head {
        // The stored fields go out as bytes; the map carries only what this answer adds.
        let mut response = Response::new(ProxyBody::stored(entry.h1_fields.clone(), entry.body.clone()));
        *response.status_mut() = entry.status;
        response
    } else {
        let body = if asked.head { ProxyBody::empty() } else { ProxyBody::local(entry.body.clone()) };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response.headers_mut().remove(TARGETED);
        response
    };
    response.headers_mut().insert(AGE, age);
    response.headers_mut().insert(CACHE_STATUS.clone(), status);
    response
}

/// A 304 with the fields RFC 9110 §15.4.5 says it carries.
fn not_modified_response(headers: &http::HeaderMap) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, VARY, LAST_MODIFIED, CACHE_STATUS.clone()] {
        for value in headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

fn ttl(entry: &Entry, now: u64) -> i64 {
    let stored = entry.stored(now);
    i64::try_from(stored.lifetime).unwrap_or(i64::MAX) - i64::try_from(stored.age).unwrap_or(i64::MAX)
}

fn cache_status(text: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("sluice; {text}")).unwrap_or_else(|_| HeaderValue::from_static("sluice"))
}

fn count(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// POST, PUT, DELETE, PATCH and any other method the cache does not answer: sent on;
/// a non-error answer to an unsafe method invalidates the stored responses for the
/// target URI and for its Location and Content-Location on the same host (RFC 9111 §4.4).
async fn unsafe_method(
    cache: &Arc<Cache>,
    origin: &Origin<'_>,
    request: Request<RequestBody>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
    let raw_host = origin.host().and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let host = cache::key_authority(&cache.config, &raw_host, origin.upstream_name());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    // What the request adds to its keys (usually nothing), read before it is sent on.
    let extras = cache::key_extras(&cache.config, request.headers());
    let mut response = Box::pin(origin.fetch(request, outcome)).await?;
    let status = response.status();
    if safe || status.is_client_error() || status.is_server_error() {
        outcome.cache = Some("bypass");
        response.headers_mut().insert(CACHE_STATUS.clone(), cache_status("fwd=method"));
        return Ok(response);
    }
    let mut paths = vec![path];
    for name in [LOCATION, CONTENT_LOCATION] {
        if let Some(target) = response.headers().get(&name).and_then(|v| v.to_str().ok()) {
            if let Some(path) = same_host_path(target, &raw_host) {
                paths.push(path);
            }
        }
    }
    let keys: Vec<String> = paths
        .iter()
        .flat_map(|path| ["http", "https"].map(|scheme| cache::key_url(&cache.config, scheme, &host, path) + &extras))
        .collect();
    cache.invalidate(&keys).await;
    outcome.cache = Some("invalidate");
    response.headers_mut().insert(CACHE_STATUS.clone(), cache_status("fwd=method; detail=invalidated"));
    Ok(response)
}

/// The path of a Location or Content-Location that names the same host (or none).
fn same_host_path(target: &str, host: &str) -> Option<String> {
    if target.starts_with('/') && !target.starts_with("//") {
        return Some(target.to_string());
    }
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    authority.eq_ignore_ascii_case(host).then_some(path)
}

/// `PURGE /path` removes that URL; `PURGE /prefix*` every URL under the prefix; with a
/// tag header (`Surrogate-Key: a b`), every entry tagged so. Only from `purge_from`.
/// `upstream` is the group a GET of the path would be routed to (for keys named by
/// it, `key_authority = "upstream"`). Every instance sharing the tier drops the
/// entries from its memory too.
pub(super) async fn purge(
    cache: &Arc<Cache>,
    client: IpAddr,
    request: &Request<RequestBody>,
    host: Option<&HeaderValue>,
    upstream: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !cache.config.purge_from.iter().any(|network| network.contains(client)) {
        return Err(ProxyError::PurgeForbidden);
    }
    let host = cache::key_authority(&cache.config, host.and_then(|h| h.to_str().ok()).unwrap_or(""), upstream);
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let tags: Vec<String> = request
        .headers()
        .get_all(cache.config.tag_header.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([' ', ',']))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let (mode, purged) = if !tags.is_empty() {
        ("tags", cache.purge_tags(&tags).await)
    } else if let Some(prefix) = path.strip_suffix('*') {
        ("prefix", cache.purge_prefix(&host, prefix).await)
    } else {
        ("url", cache.purge_url(&host, path).await)
    };
    tracing::info!(%client, %host, path, mode, purged, "cache purge");
    let body = format!("{{\"purged\":{purged},\"mode\":\"{mode}\"}}\n");
    let mut response = Response::new(ProxyBody::local(Bytes::from(body)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
