//! The runtime configuration: one immutable [`Snapshot`] built from a validated
//! `Config`, behind an `ArcSwap` so a reload can replace it while connections stay
//! open. A request loads the snapshot once and uses that one to its end.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use sluice_config::{Config, ServerSettings};
use sluice_policy::route::{HostPattern, RouteRule, Router};

use crate::server::Shutdown;
use crate::stats::Counters;
use crate::upstream::UpstreamGroup;

/// Everything a request needs from the configuration.
pub(crate) struct Snapshot {
    pub(crate) server: ServerSettings,
    pub(crate) router: Router<Route>,
}

/// Where a matched request goes.
pub(crate) struct Route {
    pub(crate) upstream: Arc<UpstreamGroup>,
    /// From sending upstream to the response head.
    pub(crate) timeout: Duration,
    /// Request bodies up to this size are read whole before the upstream is contacted.
    pub(crate) request_buffer: u64,
    /// Response bytes read ahead of a slow HTTP/1 client.
    pub(crate) response_buffer: u64,
    /// Larger request bodies get 413.
    pub(crate) max_request_body: u64,
    /// Bodies over request_buffer: streamed or spooled.
    pub(crate) large_request_bodies: sluice_config::LargeBodies,
    /// Upgrade protocols tunnelled (lower case).
    pub(crate) upgrades: Vec<String>,
}

impl Snapshot {
    /// Builds the snapshot and starts its upstream pools. Call inside a tokio runtime.
    fn build(config: &Config) -> Snapshot {
        let groups: Vec<Arc<UpstreamGroup>> =
            config.upstreams.iter().map(|u| Arc::new(UpstreamGroup::spawn(u))).collect();
        let rules = config
            .routes
            .iter()
            .map(|r| RouteRule {
                host: HostPattern::new(r.host.as_deref()),
                path_prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                target: Route {
                    upstream: Arc::clone(&groups[r.upstream]),
                    timeout: r.timeout,
                    request_buffer: r.request_buffer,
                    response_buffer: r.response_buffer,
                    max_request_body: r.max_request_body,
                    large_request_bodies: r.large_request_bodies,
                    upgrades: r.upgrades.clone(),
                },
            })
            .collect();
        Snapshot { server: config.server.clone(), router: Router::new(rules) }
    }
}

/// State shared by every connection of the process.
pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Set on SIGTERM/Ctrl-C; connections drain.
    pub(crate) shutdown: Shutdown,
    /// What went wrong, and whose fault it was.
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn new(config: &Config) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::build(config)),
            shutdown: Shutdown::default(),
            counters: Counters::default(),
        }
    }

    /// The current snapshot for a short look; cheap, lock-free. Not to be held across awaits.
    pub(crate) fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot for one request's whole life.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}
