//! Hot reload: a new configuration becomes every worker's snapshot at once, or none's.
//! Each worker builds its snapshot on its own runtime, on its own pool registry (an
//! unchanged endpoint keeps its pool and warm connections); only when every worker has
//! built one are they installed. Requests in flight finish on the snapshot they
//! loaded; connections stay open. Settings fixed at start (listeners, workers and the
//! model, the cache's storage, the access log, the admin listener) are reported and
//! left as they are.

use std::sync::{Arc, Mutex};

use sluice_config::Config;

use crate::runtime::Shared;

/// Swaps the configuration of a running server.
pub struct Reloader {
    workers: Vec<(tokio::runtime::Handle, Arc<Shared>)>,
    /// The configuration running now (the admin listener's `/config` shows it).
    current: Arc<Mutex<Config>>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// Settings that changed but need a restart (not applied).
    pub needs_restart: Vec<&'static str>,
}

impl Reloader {
    pub(super) fn new(workers: Vec<(tokio::runtime::Handle, Arc<Shared>)>, current: Config) -> Reloader {
        Reloader { workers, current: Arc::new(Mutex::new(current)) }
    }

    /// The configuration running now, as it changes.
    pub fn current(&self) -> Arc<Mutex<Config>> {
        Arc::clone(&self.current)
    }

    /// Applies `config` to every worker, or (on an error, which names what failed) to none.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, String> {
        let config = Arc::new(config);
        let mut builds = Vec::with_capacity(self.workers.len());
        for (runtime, shared) in &self.workers {
            let (shared, config) = (Arc::clone(shared), Arc::clone(&config));
            builds.push(runtime.spawn(async move { shared.build_snapshot(&config) }));
        }
        let mut snapshots = Vec::with_capacity(builds.len());
        for build in builds {
            let built = build.await.map_err(|e| format!("a worker could not build the configuration: {e}"))?;
            snapshots.push(built?);
        }
        for ((_, shared), snapshot) in self.workers.iter().zip(snapshots) {
            shared.install(snapshot);
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let needs_restart = fixed_at_start(&current, &config);
        *current = Config::clone(&config);
        Ok(Reloaded { needs_restart })
    }
}

/// The settings that differ between `old` and `new` but only take effect at start.
fn fixed_at_start(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("listener", old.listeners != new.listeners);
    check("server.worker_threads", old.server.worker_threads != new.server.worker_threads);
    check("server.model", old.server.model != new.server.model);
    check("server.upstream_pools", old.server.upstream_pools != new.server.upstream_pools);
    check("server.max_connections", old.server.max_connections != new.server.max_connections);
    check("server.dns_ttl", old.server.dns_ttl != new.server.dns_ttl);
    check("access_log", old.access_log != new.access_log);
    check("cache", old.cache != new.cache);
    check("admin", old.admin != new.admin);
    changed
}
