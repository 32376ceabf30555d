//! The runtime configuration: one immutable [`Snapshot`] built from a validated
//! `Config`, behind an `ArcSwap` so a reload can replace it while connections stay
//! open. A request loads the snapshot once and uses that one to its end.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use sluice_config::{ConcurrencyModel, Config, PoolSharing, Priority, ServerSettings, UpstreamConfig, UpstreamRate};
use sluice_policy::rate::Gcra;
use sluice_policy::route::{HostPattern, RouteRule, Router};

mod conn;
mod idle;
pub(crate) mod per_ip;
mod shutdown;

pub(crate) use conn::ConnContext;
pub(crate) use idle::{IdleTicket, IdleTimers, DRAIN_IDLE_GRACE};
pub(crate) use shutdown::Shutdown;

use crate::cache::Cache;
use crate::limit::local::{Bank, Leases};
use crate::limit::{RatePolicy, RateRegistry};
use crate::outcome::{AccessLog, Outcomes, SpanExport, Tally};
use crate::stats::Counters;
use crate::upstream::adaptive::AdaptiveLimits;
use crate::upstream::{PoolRegistry, SharedCaps, UpstreamGroup};

/// Everything a request needs from the configuration.
pub(crate) struct Snapshot {
    pub(crate) server: ServerSettings,
    /// Routes are shared (`Arc`) so that a background fetch (a cache refresh) keeps one.
    pub(crate) router: Router<Arc<Route>>,
    pub(crate) groups: Vec<Arc<UpstreamGroup>>,
}

/// Where a matched request goes.
pub(crate) struct Route {
    /// For logs, metrics and the outcome record.
    pub(crate) name: Arc<str>,
    pub(crate) upstream: Arc<UpstreamGroup>,
    /// From handing the request to the upstream group (pool wait and connect included)
    /// to the response head.
    pub(crate) timeout: Duration,
    /// Longest silence from the upstream in the middle of a response body.
    pub(crate) read_timeout: Duration,
    /// Longest silence both ways on an upgraded connection.
    pub(crate) tunnel_idle_timeout: Duration,
    /// Request bodies up to this size are read whole before the upstream is contacted.
    pub(crate) request_buffer: u64,
    /// Response bytes read ahead of a slow client.
    pub(crate) response_buffer: u64,
    /// Response bytes past that spilled to a file for a slow client, at most (0: never).
    pub(crate) max_response_spool: u64,
    /// Larger request bodies get 413.
    pub(crate) max_request_body: u64,
    /// Bodies over request_buffer: streamed or spooled.
    pub(crate) large_request_bodies: sluice_config::LargeBodies,
    /// Upgrade protocols tunnelled (lower case).
    pub(crate) upgrades: Vec<String>,
    /// Responses go through the process's cache.
    pub(crate) cache: bool,
    /// A lifetime for cached responses that give none (`cache_default_lifetime`).
    pub(crate) cache_default_lifetime: Option<std::time::Duration>,
    /// Browser cross-origin calls (`[route.cors]`).
    pub(crate) cors: Option<sluice_config::CorsConfig>,
    /// Who may call (`auth`): checked after routing, before rate limits.
    pub(crate) auth: Option<Arc<crate::auth::Authenticator>>,
    /// Path, Host and header changes (`[route.rewrite]` and the header tables).
    pub(crate) rewrite: Option<Box<sluice_config::RewriteConfig>>,
    /// The Host sent upstream with `rewrite.host = "upstream"`.
    pub(crate) upstream_host: Option<http::HeaderValue>,
    /// sluice answers with a redirect (`[route.redirect]`).
    pub(crate) redirect: Option<Box<sluice_config::RedirectConfig>>,
    /// Responses compressed for clients that accept it (`[route.compression]`).
    pub(crate) compression: Option<Box<sluice_config::CompressionConfig>>,
    /// sluice changes its responses' fields beyond adding some (compression, response
    /// header edits): they must all be in the map, not forwarded as bytes.
    pub(crate) edits_response: bool,
    /// Rate limits applied in turn before anything else (none: nothing is counted).
    pub(crate) rate_limits: Vec<Arc<RatePolicy>>,
    /// Under an adaptive limit: wait in line (critical) or be refused at once.
    pub(crate) priority: Priority,
    /// A header whose value `critical` / `sheddable` overrides `priority`.
    pub(crate) priority_header: Option<http::HeaderName>,
}

impl Route {
    /// The request's priority: the route's, or what its priority header says.
    pub(crate) fn priority(&self, headers: &http::HeaderMap) -> Priority {
        let told = self.priority_header.as_ref().and_then(|name| headers.get(name));
        match told.map(http::HeaderValue::as_bytes) {
            Some(b"sheddable") => Priority::Sheddable,
            Some(b"critical") => Priority::Critical,
            _ => self.priority,
        }
    }
}

impl Snapshot {
    /// Builds the snapshot on the registry's pools (new ones start). Call inside a
    /// tokio runtime. An error names the upstream whose TLS settings failed to load.
    fn build(config: &Config, registry: &PoolRegistry, limits: &Limits) -> Result<Snapshot, String> {
        // Per-core workers each enforce their share of a group's limits.
        let workers = match config.server.model {
            ConcurrencyModel::PerCore => config.server.worker_threads,
            ConcurrencyModel::WorkStealing => 1,
        };
        let groups = config
            .upstreams
            .iter()
            .map(|u| {
                UpstreamGroup::build(u, registry, workers, &limits.adaptive, limits.upstream_rate(u)).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policies = limits.rates.policies(&config.rate_limits, workers)?;
        let auths = config
            .auths
            .iter()
            .map(|a| crate::auth::Authenticator::build(a, &limits.remote_keys).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        // A route that only redirects names no group; it holds the first, never used.
        let group_of = |r: &sluice_config::RouteConfig| {
            groups.get(r.upstream.unwrap_or(0)).cloned().ok_or_else(|| format!("route {}: no upstream group", r.name))
        };
        let rules = config
            .routes
            .iter()
            .map(|r| -> Result<_, String> {
                Ok(RouteRule {
                    host: HostPattern::new(r.host.as_deref()),
                    path_prefix: r.path_prefix.clone(),
                    methods: r.methods.clone(),
                    target: Arc::new(Route {
                        name: Arc::from(r.name.as_str()),
                        upstream: group_of(r)?,
                        timeout: r.timeout,
                        read_timeout: r.read_timeout,
                        tunnel_idle_timeout: r.tunnel_idle_timeout,
                        request_buffer: r.request_buffer,
                        response_buffer: r.response_buffer,
                        max_response_spool: match r.large_responses {
                            sluice_config::LargeResponses::Spool => r.max_response_spool,
                            sluice_config::LargeResponses::Stream => 0,
                        },
                        max_request_body: r.max_request_body,
                        large_request_bodies: r.large_request_bodies,
                        upgrades: r.upgrades.clone(),
                        cache: r.cache,
                        cache_default_lifetime: r.cache_default_lifetime,
                        cors: r.cors.clone(),
                        auth: r.auth.and_then(|i| auths.get(i).cloned()),
                        rewrite: r.rewrite.clone().map(Box::new),
                        upstream_host: r
                            .rewrite
                            .as_ref()
                            .filter(|rw| rw.host == sluice_config::HostRewrite::Upstream)
                            .and_then(|_| upstream_host(config.upstreams.get(r.upstream?)?)),
                        redirect: r.redirect.clone().map(Box::new),
                        compression: r.compression.clone().map(Box::new),
                        edits_response: r.compression.is_some()
                            || r.rewrite.as_ref().is_some_and(|rw| !rw.response_headers.is_empty()),
                        rate_limits: r.rate_limits.iter().map(|&i| Arc::clone(&policies[i])).collect(),
                        priority: r.priority,
                        priority_header: r
                            .priority_header
                            .as_deref()
                            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
                    }),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot { server: config.server.clone(), router: Router::new(rules), groups })
    }
}

/// The Host for `rewrite.host = "upstream"`: the group's TLS server name, else its
/// first endpoint's address as written.
fn upstream_host(group: &UpstreamConfig) -> Option<http::HeaderValue> {
    let name = match group.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
        Some(name) => name,
        None => group.endpoints.first()?.to_string(),
    };
    http::HeaderValue::from_str(&name).ok()
}

/// The process's state that outlives snapshots: rate limits' counts (by name),
/// groups' adaptive concurrency limits (by group), and remote JWKS (by URL).
#[derive(Default)]
pub(crate) struct Limits {
    pub(crate) rates: RateRegistry,
    pub(crate) adaptive: AdaptiveLimits,
    /// JWKS fetched from URLs, kept across reloads.
    pub(crate) remote_keys: crate::auth::RemoteKeySets,
    /// `[upstream.NAME.rate]` budgets, by group (kept while its settings are).
    upstream_rates: std::sync::Mutex<std::collections::HashMap<String, (UpstreamRate, Arc<Bank>)>>,
}

impl Limits {
    /// The budget of requests to `group` for the process, when it has `[upstream.NAME.rate]`.
    fn upstream_rate(&self, group: &UpstreamConfig) -> Option<(Gcra, Arc<Bank>)> {
        let rate = group.rate?;
        let mut banks = self.upstream_rates.lock().unwrap_or_else(|p| p.into_inner());
        let bank = match banks.get(&group.name) {
            Some((kept, bank)) if *kept == rate => Arc::clone(bank),
            _ => {
                let bank = Arc::new(Bank::default());
                banks.insert(group.name.clone(), (rate, Arc::clone(&bank)));
                bank
            }
        };
        Some((Gcra::new(rate.count, rate.per, rate.burst), bank))
    }
}

/// Why the process state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Upstream(String),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("{0}")]
    Cache(String),
    #[error("cannot start the span exporter: {0}")]
    Tracing(std::io::Error),
}

/// What the whole process shares: touched per connection or rarer, never per request
/// (the access log's queue aside, when there is one).
pub(crate) struct Process {
    /// Set on SIGTERM/Ctrl-C; connections drain.
    pub(crate) shutdown: Arc<Shutdown>,
    /// Connection-level events no request record covers.
    pub(crate) counters: Arc<Counters>,
    access_log: Option<Arc<AccessLog>>,
    /// Span export to an OpenTelemetry collector (`[tracing]`).
    pub(crate) spans: Option<Arc<SpanExport>>,
    /// Upstream pools when workers share them (`upstream_pools = "shared"`).
    shared_pools: Option<Arc<PoolRegistry>>,
    /// HTTP/1 connection caps the workers' own pools share (`upstream_pools = "per-worker"`).
    shared_caps: Option<Arc<SharedCaps>>,
    /// The response cache, one for every worker (`[cache]`).
    pub(crate) cache: Option<Arc<Cache>>,
    /// Open client connections per client address (`max_connections_per_ip`).
    per_ip: Arc<per_ip::PerIpConnections>,
    /// Rate limits' counts and adaptive limits, kept across reloads.
    pub(crate) limits: Arc<Limits>,
}

impl Process {
    pub(crate) fn new(config: &Config) -> Result<Self, StartError> {
        let access_log = config.access_log.as_ref().map(AccessLog::start).transpose().map_err(StartError::AccessLog)?;
        let per_core = config.server.model == ConcurrencyModel::PerCore;
        let share = per_core && config.server.upstream_pools == PoolSharing::Shared;
        let shared_pools = share.then(|| Arc::new(PoolRegistry::new(config.server.dns_ttl, None)));
        let shared_caps = (per_core && !share).then(Arc::default);
        let cache = config.cache.as_ref().map(Cache::new).transpose().map_err(StartError::Cache)?;
        let spans = config.tracing.as_ref().map(SpanExport::start).transpose().map_err(StartError::Tracing)?;
        Ok(Process {
            cache,
            shutdown: Arc::default(),
            counters: Arc::default(),
            access_log: access_log.map(Arc::new),
            spans: spans.map(Arc::new),
            shared_pools,
            shared_caps,
            per_ip: Arc::default(),
            limits: Arc::default(),
        })
    }

    /// Writes out the access log's and the span exporter's queues (at shutdown; blocks
    /// up to a few seconds).
    pub(crate) fn flush_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.flush();
        }
        if let Some(spans) = &self.spans {
            spans.flush();
        }
    }
}

/// State of one worker (an event loop), shared by its connections.
pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// The process's shutdown signal.
    pub(crate) shutdown: Arc<Shutdown>,
    pub(crate) counters: Arc<Counters>,
    /// Where this worker's requests' outcome records go (its totals, the access log).
    pub(crate) outcomes: Arc<Outcomes>,
    /// Upstream pools, kept across snapshots: this worker's, or the process's.
    pub(crate) pools: Arc<PoolRegistry>,
    /// This worker's idle connections' deadlines.
    pub(crate) idle: IdleTimers,
    /// The process's response cache.
    pub(crate) cache: Option<Arc<Cache>>,
    /// The process's count of open connections per client address.
    pub(crate) per_ip: Arc<per_ip::PerIpConnections>,
    /// The process's limits' state, and this worker's leases of rate limits.
    limits: Arc<Limits>,
    pub(crate) leases: Leases,
    pub(crate) worker: u16,
}

impl Shared {
    /// Worker `worker`'s state. Call on the worker's runtime: new pools start there.
    pub(crate) fn new(config: &Config, process: &Process, worker: u16) -> Result<Self, StartError> {
        let pools = match &process.shared_pools {
            Some(pools) => Arc::clone(pools),
            None => Arc::new(PoolRegistry::new(config.server.dns_ttl, process.shared_caps.clone())),
        };
        let snapshot = Snapshot::build(config, &pools, &process.limits).map_err(StartError::Upstream)?;
        Ok(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            shutdown: Arc::clone(&process.shutdown),
            counters: Arc::clone(&process.counters),
            outcomes: Arc::new(Outcomes::new(
                process.access_log.clone(),
                process.spans.clone(),
                worker,
                config.admin.is_some(),
            )),
            pools,
            idle: IdleTimers::default(),
            cache: process.cache.clone(),
            per_ip: Arc::clone(&process.per_ip),
            limits: Arc::clone(&process.limits),
            leases: Leases::default(),
            worker,
        })
    }

    /// The current snapshot for a short look; cheap, lock-free. Not to be held across awaits.
    pub(crate) fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// A snapshot of `config` on this worker's pools (unchanged endpoints keep theirs).
    /// Call on the worker's runtime.
    pub(crate) fn build_snapshot(&self, config: &Config) -> Result<Snapshot, String> {
        Snapshot::build(config, &self.pools, &self.limits)
    }

    /// Makes `snapshot` the one new requests load; requests in flight finish on theirs.
    pub(crate) fn install(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The current snapshot for one request's whole life.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// What the process did, summed over its workers, logged once at exit (the Prometheus
/// metrics show the same totals live).
pub(crate) fn log_summary(process: &Process, workers: &[Arc<Shared>]) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = Tally::default();
    for worker in workers {
        t.add(&worker.outcomes.tally);
    }
    let class = |i: usize| t.by_class[i].load(Relaxed);
    tracing::info!(
        requests = t.requests(),
        status_2xx = class(2),
        status_3xx = class(3),
        status_4xx = class(4),
        status_5xx = class(5),
        client_errors = t.client_errors.load(Relaxed),
        client_gone = t.client_gone.load(Relaxed),
        upstream_broke = t.upstream_broke.load(Relaxed),
        send_timeouts = t.send_timeouts.load(Relaxed),
        access_log_dropped = process.access_log.as_ref().map_or(0, |log| log.dropped()),
        h2_control_floods = process.counters.h2_control_floods.load(Relaxed),
        "requests since start"
    );
    if let Some(cache) = &process.cache {
        let (bytes, entries) = cache.memory_use();
        let s = &cache.stats;
        tracing::info!(
            hits = s.hits.load(Relaxed),
            misses = s.misses.load(Relaxed),
            stale = s.stale.load(Relaxed),
            coalesced = s.coalesced.load(Relaxed),
            revalidated = s.revalidated.load(Relaxed),
            stored = s.stored.load(Relaxed),
            shared_hits = s.shared_hits.load(Relaxed),
            shared_errors = cache.shared_errors(),
            memory_bytes = bytes,
            memory_entries = entries,
            fetching = cache.in_flight(),
            "cache since start"
        );
    }
    let mut seen = Vec::new();
    for worker in workers {
        tracing::debug!(worker = worker.worker, pools = worker.pools.len(), "live upstream pools");
        let snapshot = worker.snapshot();
        for group in &snapshot.groups {
            for pool in group.pools() {
                if seen.iter().any(|p| Arc::ptr_eq(p, pool)) {
                    continue; // shared by the workers: once
                }
                seen.push(Arc::clone(pool));
                let stats = pool.stats();
                let (idle, open) = pool.counts();
                tracing::info!(
                    worker = worker.worker,
                    upstream = %group.name,
                    endpoint = %pool.label(),
                    created = stats.created.load(Relaxed),
                    reused = stats.reused.load(Relaxed),
                    connect_failures = stats.connect_failures.load(Relaxed),
                    idle,
                    open,
                    "upstream pool since start"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(pool_b: &str, extra: &str) -> Config {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"a\"\n[[route]]\npath_prefix = \"/b\"\nupstream = \"b\"\n\
             [upstream.a]\nendpoints = [\"127.0.0.1:1\"{extra}]\n[upstream.b]\nendpoints = [\"127.0.0.1:2\"]\npool = {{ {pool_b} }}\n"
        );
        sluice_config::parse(&text, Path::new("sluice.toml")).expect("valid")
    }

    #[tokio::test]
    async fn a_new_snapshot_keeps_the_pools_of_unchanged_endpoints() {
        let registry = PoolRegistry::default();
        let limits = Limits::default();
        let old = Snapshot::build(&config("max_connections = 8", ""), &registry, &limits).expect("old");
        let new =
            Snapshot::build(&config("max_connections = 9", ", \"127.0.0.1:3\""), &registry, &limits).expect("new");
        let pools = |s: &Snapshot, group: usize| s.groups[group].pools().cloned().collect::<Vec<_>>();
        assert!(
            Arc::ptr_eq(&pools(&old, 0)[0], &pools(&new, 0)[0]),
            "unchanged endpoint: same pool, warm connections kept"
        );
        assert!(!Arc::ptr_eq(&pools(&old, 1)[0], &pools(&new, 1)[0]), "changed pool settings: a new pool");
        assert_eq!(registry.len(), 4);
        drop(old);
        assert_eq!(registry.len(), 3, "the pool only the old snapshot used is gone with it");
    }
}
