//! The request path, one linear async function: id → target (authority, normalised
//! path) → route → body admission (limits, buffering) → upstream request → send
//! (pooled, with timeout) → response, or an error mapped in `error`.
//!
//! Every request gets an outcome record here (`crate::outcome`), filled in along the
//! way and carried in the response body to the request's end.
//!
//! Later stages slot in here in this order: admission (limits) before routing, the
//! cache between routing and sending; both write their decision into the record.

mod body;
mod cached;
mod compress;
mod cors;
mod error;
mod headers;
pub(crate) mod read_ahead;
mod request_body;
pub(crate) mod rewrite;
pub(crate) mod spill;
mod spool;
pub(crate) mod target;
mod upgrade;

use std::sync::Arc;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use sluice_config::UpstreamProtocol;

pub(crate) use body::{InflightGuard, ProxyBody, RequestTracker, UpstreamUpgrade, WireFields};
pub(crate) use error::ClientError;
use error::{error_response, ProxyError};
pub(crate) use headers::{remove_hop_by_hop, X_REQUEST_ID};
use rewrite::{Passage, Vars};
use target::Target;

use crate::body::{BodyLimits, RequestBody};
use crate::interim::Interim;
use crate::outcome::{Outcome, Record, Text};
use crate::runtime::{ConnContext, Route, Snapshot};
use crate::upstream::{ResponseFields, UpstreamBody, UpstreamResponse};

/// Handles one client request; never fails (errors become responses). The response
/// body carries the request's outcome record to the end of the response. `interim`
/// receives the upstream's 1xx responses, for a client that can be sent them.
pub(crate) async fn handle(
    conn: Arc<ConnContext>,
    mut request: Request<RequestBody>,
    interim: Option<&Interim>,
) -> Response<ProxyBody> {
    let outcomes = &conn.shared.outcomes;
    let headers::Ids { request_id, trace_id, span } = headers::identify(request.headers_mut(), outcomes.sample_ratio());
    let mut record = Record::begin(conn.peer, &request_id, outcomes);
    if span.is_some() {
        let trace = &mut record.outcome().trace;
        trace.ids = span;
        trace.trace_id = trace_id;
    }
    if outcomes.shows_text() || span.is_some() {
        record.outcome().describe(&request);
        record.outcome().texts.set(Text::TraceId, &trace_id);
    }
    let grpc = error::is_grpc(request.headers());
    let mut response = match forward(&conn, request, &request_id, interim, record.outcome()).await {
        Ok(response) => response,
        Err(error) => error_response(&error, record.outcome(), grpc),
    };
    record.outcome().status = response.status().as_u16();
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    response.body_mut().attach(record);
    response
}

/// The response for a request the connection layer could not read, with its record;
/// `raw` is what was read of it.
pub(crate) fn client_error_response(conn: &ConnContext, error: ClientError, raw: &[u8]) -> Response<ProxyBody> {
    let request_id = headers::new_request_id();
    let mut record = Record::begin(conn.peer, &request_id, &conn.shared.outcomes);
    record.outcome().describe_refused(raw);
    let mut response = error_response(&ProxyError::Client(error), record.outcome(), false);
    record.outcome().status = response.status().as_u16();
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    response.body_mut().attach(record);
    response
}

async fn forward(
    conn: &Arc<ConnContext>,
    mut request: Request<RequestBody>,
    request_id: &HeaderValue,
    interim: Option<&Interim>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let snapshot = conn.shared.current();
    if target::resolve(&mut request, snapshot.server.paths)? == Target::ServerOptions {
        return Ok(target::server_options());
    }
    let host = request_host(&request);
    if request.method().as_str() == "PURGE" {
        if let Some(cache) = &conn.shared.cache {
            let name = host.as_ref().and_then(|h| h.to_str().ok());
            let route = snapshot.router.find(name, request.uri().path().trim_end_matches('*'), "GET");
            let upstream = route.map_or("", |route| &*route.upstream.name);
            return cached::purge(cache, conn.peer.ip(), &request, host.as_ref(), upstream).await;
        }
    }
    let scheme = scheme_of(conn);
    // A redirect for one scheme is a route for that scheme only: others go on to the next.
    let route = snapshot
        .router
        .find_where(
            host.as_ref().and_then(|h| h.to_str().ok()),
            request.uri().path(),
            request.method().as_str(),
            |route| route.redirect.as_ref().is_none_or(|r| r.only_scheme.as_deref().is_none_or(|s| s == scheme)),
        )
        .ok_or(ProxyError::NoRoute)?;
    outcome.route = Some(Arc::clone(&route.name));
    // A redirect comes first: nothing else of the route applies to a request sent away.
    if let Some(redirect) = &route.redirect {
        let client = headers::client_address(request.headers(), conn.peer.ip(), &snapshot.server.trusted_proxies);
        let passage = Passage::new(route.rewrite.as_deref(), request.uri(), None, client);
        let vars = Vars { passage: &passage, request_id, route: &route.name, scheme, host: host.as_ref() };
        return Ok(rewrite::redirect(redirect, &vars));
    }
    outcome.upstream = Some(Arc::clone(&route.upstream.name));
    // A browser's preflight is answered here, before auth (a browser sends no
    // credentials with it), limits, cache and upstream.
    if let Some(answer) = route.cors.as_ref().and_then(|cors| cors::preflight(cors, &request)) {
        return Ok(answer);
    }
    let cors_origin = cors::origin(route.cors.as_ref(), &request);
    // Boxed, like the rate limits below: only routes with auth carry its future.
    let identity = match &route.auth {
        None => None,
        Some(auth) => {
            let (admitted, identity) = Box::pin(authenticate(auth, request, outcome)).await?;
            request = admitted;
            Some(identity)
        }
    };
    // Rate limits first: a refused request costs neither the cache nor the upstream.
    // Boxed: the Redis round trip's future is kilobytes, and inline it made every
    // request's future (moved into its box per request) that much larger: +8k
    // instructions per request on routes without limits (cost guard).
    let rate_fields = match route.rate_limits.is_empty() {
        true => None,
        false => Some(Box::new(Box::pin(admit_by_rate(conn, &snapshot, route, &request, identity.as_deref())).await?)),
    };
    let passage = route.rewrite.as_ref().map(|rw| {
        let client = headers::client_address(request.headers(), conn.peer.ip(), &snapshot.server.trusted_proxies);
        Box::new(Passage::new(Some(rw), request.uri(), identity, client))
    });
    let compression = route.compression.as_ref().and_then(|config| compress::plan(config, &request));
    let cache = conn.shared.cache.as_ref().filter(|_| route.cache);
    // An HTTP/1 client's response is written from its fields as they came, unless the
    // cache stores them (it needs them all in a map); hyper writes HTTP/2 from the map.
    let fields = match cache.is_none() && request.version() < Version::HTTP_2 && !route.edits_response {
        true => ResponseFields::Forward,
        false => ResponseFields::Map,
    };
    let origin = Origin {
        conn,
        snapshot: &snapshot,
        route,
        host: host.as_ref(),
        request_id,
        interim,
        fields,
        passage: passage.as_deref(),
    };
    let mut response = match cache {
        // Boxed: the cache's path holds a fetch of its own and more; inline, it made
        // every request's future twice its size (12 KiB), copied into its box per
        // request (cost guard: +8k instructions when it crossed glibc's 4 KiB
        // rep-movsb threshold).
        Some(cache) => Box::pin(cached::handle(cache, &origin, request, outcome)).await,
        None => origin.fetch(request, outcome).await,
    }?;
    let vars =
        passage.as_deref().map(|passage| Vars { passage, request_id, route: &route.name, scheme, host: host.as_ref() });
    let outgoing = Outgoing { vars, compression, rate_fields, cors_origin };
    outgoing.apply(route, &mut response);
    Ok(response)
}

/// What `forward` learnt on the way in that the response needs on its way out.
struct Outgoing<'a> {
    /// The template values, on a route that rewrites.
    vars: Option<Vars<'a>>,
    compression: Option<compress::Plan>,
    rate_fields: Option<Box<crate::limit::RateFields>>,
    cors_origin: Option<HeaderValue>,
}

impl Outgoing<'_> {
    /// The route's changes to a response, in order: its header edits, compression (on
    /// what the edits left), the rate limits' fields, CORS.
    fn apply(self, route: &Route, response: &mut Response<ProxyBody>) {
        let edits = route.rewrite.as_ref().map(|rw| &rw.response_headers).filter(|e| !e.is_empty());
        if let (Some(edits), Some(vars)) = (edits, &self.vars) {
            rewrite::edit_headers(edits, response.headers_mut(), vars);
        }
        if let Some(config) = &route.compression {
            compress::apply(config, self.compression, response);
        }
        if let Some(rate_fields) = self.rate_fields {
            rate_fields.apply(response.headers_mut());
        }
        if let Some(cors) = &route.cors {
            cors::decorate(cors, self.cors_origin.as_ref(), response.headers_mut());
        }
    }
}

/// The route's auth, applied to `request` (its head rewritten for the upstream): the
/// identity, in the record too, or the refusal.
async fn authenticate(
    auth: &crate::auth::Authenticator,
    request: Request<RequestBody>,
    outcome: &mut Outcome,
) -> Result<(Request<RequestBody>, Arc<str>), ProxyError> {
    // A key in the query would be in the target the record shows, valid or not: hidden.
    if let Some(name) = auth.query_parameter() {
        if let Some(redacted) = outcome.texts.get(Text::Target).and_then(|t| crate::auth::redact_query(t, name)) {
            outcome.texts.replace(Text::Target, &redacted);
        }
    }
    let (mut parts, body) = request.into_parts();
    let identity = auth.admit(&mut parts).await.map_err(|refused| ProxyError::Unauthorized(Box::new(refused)))?;
    outcome.auth = Some("ok");
    outcome.texts.set(Text::Identity, identity.as_bytes());
    Ok((Request::from_parts(parts, body), identity))
}

/// The route's rate limits, applied to `request`: the RateLimit fields for its
/// response, or the refusal.
async fn admit_by_rate<B>(
    conn: &ConnContext,
    snapshot: &Snapshot,
    route: &Route,
    request: &Request<B>,
    identity: Option<&str>,
) -> Result<crate::limit::RateFields, ProxyError> {
    let client = headers::client_address(request.headers(), conn.peer.ip(), &snapshot.server.trusted_proxies);
    let subject = crate::limit::Subject { headers: request.headers(), client, route: &route.name, identity };
    crate::limit::check(&route.rate_limits, &subject, &conn.shared.leases)
        .await
        .map_err(|refused| ProxyError::RateLimited(Box::new(refused)))
}

/// Where a routed request goes when sluice does not answer it itself: the route's
/// upstream group, on behalf of the client of `conn`.
pub(crate) struct Origin<'a> {
    conn: &'a Arc<ConnContext>,
    snapshot: &'a Arc<Snapshot>,
    route: &'a Arc<Route>,
    host: Option<&'a HeaderValue>,
    request_id: &'a HeaderValue,
    /// Where the upstream's 1xx responses go (an HTTP/1.1 client's request only).
    interim: Option<&'a Interim>,
    /// What the response's writer needs of its fields (`ResponseFields`).
    fields: ResponseFields,
    /// The request's identity, captures and rewritten path, on a route that rewrites.
    passage: Option<&'a Passage>,
}

/// An `Origin` that a background task can keep (a cache refresh).
pub(crate) struct OwnedOrigin {
    conn: Arc<ConnContext>,
    snapshot: Arc<Snapshot>,
    route: Arc<Route>,
    host: Option<HeaderValue>,
    request_id: HeaderValue,
    passage: Option<Box<Passage>>,
}

impl OwnedOrigin {
    pub(crate) fn origin(&self) -> Origin<'_> {
        Origin {
            conn: &self.conn,
            snapshot: &self.snapshot,
            route: &self.route,
            host: self.host.as_ref(),
            request_id: &self.request_id,
            interim: None,
            fields: ResponseFields::Map,
            passage: self.passage.as_deref(),
        }
    }

    /// A record of its own for a request sluice makes by itself (it is logged too).
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::begin(self.conn.peer, &self.request_id, &self.conn.shared.outcomes);
        record.outcome().route = Some(Arc::clone(&self.route.name));
        record.outcome().upstream = Some(Arc::clone(&self.route.upstream.name));
        record
    }
}

impl Origin<'_> {
    pub(crate) fn to_owned(&self) -> OwnedOrigin {
        OwnedOrigin {
            conn: Arc::clone(self.conn),
            snapshot: Arc::clone(self.snapshot),
            route: Arc::clone(self.route),
            host: self.host.cloned(),
            request_id: self.request_id.clone(),
            passage: self.passage.cloned().map(Box::new),
        }
    }

    /// Whether the route has `auth`: its requests count as carrying Authorization for
    /// the cache (RFC 9111 §3.5), though sluice took the credential off.
    pub(crate) fn authenticated(&self) -> bool {
        self.route.auth.is_some()
    }

    /// Whether the route changes its responses' fields (compression, header edits): a
    /// stored response then goes out from its map, not as stored bytes.
    pub(crate) fn fields_in_map(&self) -> bool {
        self.route.edits_response
    }

    /// The scheme the client used, for cache keys.
    pub(crate) fn scheme(&self) -> &'static str {
        scheme_of(self.conn)
    }

    pub(crate) fn host(&self) -> Option<&HeaderValue> {
        self.host
    }

    /// The route's `cache_default_lifetime`.
    pub(crate) fn cache_default_lifetime(&self) -> Option<std::time::Duration> {
        self.route.cache_default_lifetime
    }

    /// The route's upstream group name (a cache key's authority can be it).
    pub(crate) fn upstream_name(&self) -> &str {
        &self.route.upstream.name
    }

    /// Sends the request to the route's upstream group and returns its response (body
    /// admission, rewriting, the route timeout, the response head cleaned).
    pub(crate) async fn fetch(
        &self,
        request: Request<RequestBody>,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Origin { conn, snapshot, route, host, request_id, interim, fields, passage } = *self;
        let upgrade = upgrade::requested(&request, &route.upgrades);
        if upgrade.is_some() && route.upstream.protocol() != UpstreamProtocol::Http1 {
            return Err(ProxyError::UpgradeNeedsHttp1);
        }
        let limits = BodyLimits {
            buffer: route.request_buffer,
            max: route.max_request_body,
            timeout: snapshot.server.client_body_timeout,
            large: route.large_request_bodies,
        };
        // Boxed: most requests have no body, and this future is larger than the rest of the path.
        let request = match request.body().is_end_stream() {
            true => request,
            false => Box::pin(request_body::admit(request, limits, &snapshot.server.spool_dir)).await?,
        };
        let idempotent = is_idempotent(request.method());
        let priority = route.priority(request.headers());
        let trusted = snapshot.server.trusted_proxies.iter().any(|network| network.contains(conn.peer.ip()));
        let underscores = snapshot.server.underscores_in_headers;
        let forwarding = Forwarding { host, request_id, trusted, underscores, passage };
        let upstream_request = upstream_request(conn, route, request, forwarding, upgrade.as_ref());
        if passage.is_some_and(|p| p.path.is_some()) {
            let target = upstream_request.uri().path_and_query().map_or("/", |p| p.as_str());
            outcome.texts.set(Text::UpstreamTarget, target.as_bytes());
        }
        let sent_at = std::time::Instant::now();
        let key = route.upstream.request_key(&upstream_request, conn.peer);
        // Pinned where it is made: moved into the timeout, this ~3.5 KiB future was
        // copied once more per request.
        let response = {
            let sending = route.upstream.send(upstream_request, idempotent, key, interim, fields, priority, outcome);
            let sending = std::pin::pin!(sending);
            tokio::time::timeout(route.timeout, sending).await.map_err(|_| ProxyError::Timeout)??
        };
        outcome.upstream_head = Some(sent_at.elapsed());

        let UpstreamResponse { mut parts, body, forwarded } = response;
        if let UpstreamBody::Switched(switched) = body {
            let (lease, read) = *switched;
            let protocol = upgrade.ok_or(ProxyError::UnrequestedSwitch)?;
            let tunnel = UpstreamUpgrade { lease, read, idle_timeout: route.tunnel_idle_timeout };
            return upgrade::switching(parts, protocol, tunnel);
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let mut body = ProxyBody::upstream(body, route.read_timeout);
        body.set_read_ahead(route.response_buffer, route.max_response_spool);
        if let Some(forwarded) = forwarded {
            body.forward_fields(forwarded);
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// What the forwarding headers say.
struct Forwarding<'a> {
    host: Option<&'a HeaderValue>,
    request_id: &'a HeaderValue,
    /// The client is a trusted proxy: its X-Forwarded-For is extended, not replaced.
    trusted: bool,
    /// Header names with `_` are forwarded (`server.underscores_in_headers`).
    underscores: bool,
    /// The route's rewriting of this request, when it has any.
    passage: Option<&'a Passage>,
}

/// Rewrites the client's request for the upstream: URI form and version for the
/// upstream protocol, hop-by-hop headers out, forwarding headers in.
fn upstream_request(
    conn: &ConnContext,
    route: &Route,
    request: Request<RequestBody>,
    forwarding: Forwarding<'_>,
    upgrade: Option<&HeaderValue>,
) -> Request<RequestBody> {
    let Forwarding { host, request_id, trusted, underscores, passage } = forwarding;
    let (mut parts, body) = request.into_parts();
    let client_version = parts.version;
    let trailers = headers::wants_trailers(&parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers);
    if !underscores {
        headers::remove_underscored(&mut parts.headers);
    }
    if trailers {
        parts.headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    headers::add_forwarding(&mut parts.headers, conn.peer.ip(), trusted, conn.tls, host, client_version);
    parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(protocol) = upgrade {
        parts.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(http::header::UPGRADE, protocol.clone());
    }
    let mut path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let (Some(passage), Some(rewrite)) = (passage, &route.rewrite) {
        if let Some(new_path) = &passage.path {
            // The client's query follows the new target's own, if it has one.
            let target = match (parts.uri.query(), new_path.contains('?')) {
                (Some(query), true) => format!("{new_path}&{query}"),
                (Some(query), false) => format!("{new_path}?{query}"),
                (None, _) => new_path.clone(),
            };
            // A rewritten path that is not a valid target (a capture brought bytes a
            // path cannot hold) leaves the normalised one.
            path = PathAndQuery::try_from(target).unwrap_or(path);
        }
        if !rewrite.request_headers.is_empty() {
            let vars = Vars { passage, request_id, route: &route.name, scheme: scheme_of(conn), host };
            rewrite::edit_headers(&rewrite.request_headers, &mut parts.headers, &vars);
        }
    }
    let host = route.upstream_host.as_ref().or(host);
    match route.upstream.protocol() {
        UpstreamProtocol::Http1 => {
            // RFC 9113 §8.2.3: HTTP/2 clients may split Cookie into several fields;
            // HTTP/1.1 servers expect one (RFC 6265 §5.4), joined with "; ".
            if client_version == Version::HTTP_2 {
                headers::join_cookies(&mut parts.headers);
            }
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            // Host is kept (an HTTP/2 client sent it as :authority), unless the route
            // sends the upstream's own name.
            if route.upstream_host.is_some() || !parts.headers.contains_key(HOST) {
                if let Some(host) = host {
                    parts.headers.insert(HOST, host.clone());
                }
            }
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            let authority = host
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| Authority::from_static("localhost"));
            parts.uri = Uri::builder()
                .scheme(route.upstream.scheme())
                .authority(authority)
                .path_and_query(path)
                .build()
                .unwrap_or_default();
            parts.headers.remove(HOST);
        }
    }
    Request::from_parts(parts, body)
}

/// The scheme the client connected with.
fn scheme_of(conn: &ConnContext) -> &'static str {
    if conn.tls {
        "https"
    } else {
        "http"
    }
}

/// The host the client addressed: HTTP/2 :authority or the Host header. A header
/// value clone shares its bytes; only an HTTP/2 :authority is copied.
fn request_host(request: &Request<RequestBody>) -> Option<HeaderValue> {
    if let Some(authority) = request.uri().authority() {
        return HeaderValue::from_str(authority.as_str()).ok();
    }
    request.headers().get(HOST).cloned()
}

/// Methods that may be sent again after a failed connect (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}
