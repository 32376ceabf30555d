//! Hot reload: a new configuration becomes every worker's snapshot at once, or none's.
//! Each worker builds its snapshot on its own runtime, on its own pool registry (an
//! unchanged endpoint keeps its pool and warm connections); listeners the new file adds
//! are bound on every worker first. Only when all of that has worked are the snapshots
//! installed, the new listeners started and the removed ones closed. Requests in
//! flight finish on the snapshot they loaded; connections stay open (a removed
//! listener's connections too). Settings fixed at start (workers and the model, the
//! cache's storage, the access log, the admin listener, a listener changed in place)
//! are reported and left as they are.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sluice_config::{Config, ListenerConfig};
use tokio::sync::Semaphore;

use super::worker::Accepting;
use super::{accept_loop, bind_listener, BoundListener, Sharing};
use crate::runtime::Shared;

/// A worker as a reload reaches it.
pub(super) struct WorkerHandle {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) shared: Arc<Shared>,
    pub(super) listeners: Arc<Mutex<Vec<Accepting>>>,
}

/// Swaps the configuration of a running server.
pub struct Reloader {
    workers: Vec<WorkerHandle>,
    limit: Arc<Semaphore>,
    /// The configuration running now (the admin listener's `/config` shows it): a
    /// reload's file, with the settings fixed at start as they still are.
    current: Arc<Mutex<Config>>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// Settings that changed but need a restart (not applied).
    pub needs_restart: Vec<&'static str>,
    /// Listeners opened (their bound addresses) and closed.
    pub opened: Vec<SocketAddr>,
    pub closed: Vec<SocketAddr>,
}

impl Reloader {
    pub(super) fn new(workers: Vec<WorkerHandle>, limit: Arc<Semaphore>, current: Config) -> Reloader {
        Reloader { workers, limit, current: Arc::new(Mutex::new(current)) }
    }

    /// The configuration running now, as it changes.
    pub fn current(&self) -> Arc<Mutex<Config>> {
        Arc::clone(&self.current)
    }

    /// Applies `config` to every worker, or (on an error, which names what failed) to none.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, String> {
        let old = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (added, removed, in_place) = listener_changes(&old.listeners, &config.listeners);
        let bound = self.bind(&added, old.server.http2_stream_window).await?;
        let config = Arc::new(config);
        let mut builds = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (shared, config) = (Arc::clone(&worker.shared), Arc::clone(&config));
            builds.push(worker.runtime.spawn(async move { shared.build_snapshot(&config) }));
        }
        let mut snapshots = Vec::with_capacity(builds.len());
        for build in builds {
            let built = build.await.map_err(|e| format!("a worker could not build the configuration: {e}"))?;
            snapshots.push(built?);
        }
        // Everything is ready: from here on nothing fails.
        for (worker, snapshot) in self.workers.iter().zip(snapshots) {
            worker.shared.install(snapshot);
        }
        let opened = self.start(&added, bound);
        let closed = self.close(&removed).await;
        let mut needs_restart = fixed_at_start(&old, &config);
        if in_place {
            needs_restart.push("listener (changed in place: same address, other settings)");
        }
        // What runs keeps the values fixed at start: a file that puts them back is no
        // change (it was reported as one needing a restart), and /config tells the truth.
        let mut running = Config::clone(&config);
        keep_fixed(&old, &mut running);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = running;
        Ok(Reloaded { needs_restart, opened, closed })
    }

    /// Binds each added listener on every worker (on its runtime): the first worker's
    /// resolved address (port 0) is the others' too. `stream_window`: the running one
    /// (a change takes a restart).
    async fn bind(&self, added: &[ListenerConfig], stream_window: u32) -> Result<Vec<Vec<BoundListener>>, String> {
        let several = self.workers.len() > 1;
        let mut per_worker: Vec<Vec<BoundListener>> = self.workers.iter().map(|_| Vec::new()).collect();
        for listener in added {
            let mut address = listener.address;
            for (i, worker) in self.workers.iter().enumerate() {
                let config = listener.clone();
                let sharing = match (several, i) {
                    (false, _) => Sharing::Alone,
                    (true, 0) => Sharing::FirstOfProcess,
                    (true, _) => Sharing::JoinProcess,
                };
                let bound = worker
                    .runtime
                    .spawn(async move { bind_listener(&config, address, sharing, stream_window) })
                    .await
                    .map_err(|e| format!("listener {}: {e}", listener.address))?
                    .map_err(|e| format!("listener {}: {e}", listener.address))?;
                if i == 0 {
                    address = bound.listener.local_addr().map_err(|e| format!("listener {}: {e}", listener.address))?;
                }
                per_worker[i].push(bound);
            }
        }
        Ok(per_worker)
    }

    /// Starts accepting on the bound listeners; their addresses.
    fn start(&self, added: &[ListenerConfig], bound: Vec<Vec<BoundListener>>) -> Vec<SocketAddr> {
        let mut opened = Vec::new();
        for (worker, listeners) in self.workers.iter().zip(bound) {
            let mut accepting = worker.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for (config, listener) in added.iter().zip(listeners) {
                let address = listener.listener.local_addr().ok();
                if let Some(address) = address.filter(|a| !opened.contains(a)) {
                    tracing::info!(%address, "listener opened by a reload");
                    opened.push(address);
                }
                let (shared, limit) = (Arc::clone(&worker.shared), Arc::clone(&self.limit));
                let task = worker.runtime.spawn(accept_loop(listener, shared, limit));
                accepting.push(Accepting { config: config.clone(), address, task });
            }
        }
        opened
    }

    /// Stops accepting on the removed listeners and waits until their sockets are
    /// closed (their open connections go on).
    async fn close(&self, removed: &[ListenerConfig]) -> Vec<SocketAddr> {
        let mut closed = Vec::new();
        let mut stopping = Vec::new();
        for worker in &self.workers {
            let mut accepting = worker.listeners.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, kept): (Vec<_>, Vec<_>) = accepting.drain(..).partition(|l| removed.contains(&l.config));
            *accepting = kept;
            for listener in gone {
                listener.task.abort();
                if let Some(address) = listener.address.filter(|a| !closed.contains(a)) {
                    tracing::info!(%address, "listener closed by a reload");
                    closed.push(address);
                }
                stopping.push(listener.task);
            }
        }
        // An aborted task drops its listener (closing the socket) when it next runs.
        for task in stopping {
            let _ = task.await;
        }
        closed
    }
}

/// Listeners added and removed; a listener whose address stays but whose settings change
/// is neither (it would have to be closed before its replacement could bind): `true`
/// then, for the restart report.
fn listener_changes(
    old: &[ListenerConfig],
    new: &[ListenerConfig],
) -> (Vec<ListenerConfig>, Vec<ListenerConfig>, bool) {
    // Port-0 listeners never share an address: each gets a port of its own.
    let same_address = |a: &ListenerConfig, list: &[ListenerConfig]| {
        a.address.port() != 0 && list.iter().any(|b| b.address == a.address)
    };
    let added: Vec<_> = new.iter().filter(|l| !old.contains(l)).cloned().collect();
    let removed: Vec<_> = old.iter().filter(|l| !new.contains(l)).cloned().collect();
    let in_place = added.iter().any(|l| same_address(l, &removed));
    let added = added.into_iter().filter(|l| !same_address(l, &removed)).collect();
    let removed = removed.into_iter().filter(|l| !same_address(l, new)).collect();
    (added, removed, in_place)
}

/// Puts the running values of the settings fixed at start (and of listeners changed in
/// place) into `new`, the config a reload applied.
fn keep_fixed(running: &Config, new: &mut Config) {
    let (from, to) = (&running.server, &mut new.server);
    to.worker_threads = from.worker_threads;
    to.model = from.model;
    to.upstream_pools = from.upstream_pools;
    to.max_connections = from.max_connections;
    to.http2_stream_window = from.http2_stream_window;
    to.dns_ttl = from.dns_ttl;
    to.config_watch = from.config_watch;
    new.access_log.clone_from(&running.access_log);
    new.cache.clone_from(&running.cache);
    new.admin.clone_from(&running.admin);
    new.tracing.clone_from(&running.tracing);
    for listener in &mut new.listeners {
        let same_address = running.listeners.iter().find(|l| l.address == listener.address && l.address.port() != 0);
        if let Some(old) = same_address {
            listener.clone_from(old);
        }
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
    check("server.worker_threads", old.server.worker_threads != new.server.worker_threads);
    check("server.model", old.server.model != new.server.model);
    check("server.upstream_pools", old.server.upstream_pools != new.server.upstream_pools);
    check("server.max_connections", old.server.max_connections != new.server.max_connections);
    check("server.http2_stream_window", old.server.http2_stream_window != new.server.http2_stream_window);
    check("server.dns_ttl", old.server.dns_ttl != new.server.dns_ttl);
    check("server.config_watch", old.server.config_watch != new.server.config_watch);
    check("access_log", old.access_log != new.access_log);
    check("cache", old.cache != new.cache);
    check("admin", old.admin != new.admin);
    check("tracing", old.tracing != new.tracing);
    changed
}

#[cfg(test)]
mod tests {
    use sluice_config::ListenerProtocol;

    use super::*;

    fn listener(address: &str, backlog: u32) -> ListenerConfig {
        ListenerConfig {
            address: address.parse().expect("address"),
            protocol: ListenerProtocol::Auto,
            reuse_port: false,
            backlog,
            tls: None,
        }
    }

    #[test]
    fn listeners_are_added_removed_or_changed_in_place() {
        let old = [listener("127.0.0.1:8080", 4096), listener("127.0.0.1:8081", 4096)];
        let new = [listener("127.0.0.1:8080", 4096), listener("127.0.0.1:8082", 4096)];
        let (added, removed, in_place) = listener_changes(&old, &new);
        assert_eq!((added, removed, in_place), (vec![new[1].clone()], vec![old[1].clone()], false));
        let changed = [listener("127.0.0.1:8080", 100), listener("127.0.0.1:8081", 4096)];
        let (added, removed, in_place) = listener_changes(&old, &changed);
        assert!(added.is_empty() && removed.is_empty() && in_place, "same address, other settings: a restart");
        let ephemeral = [listener("127.0.0.1:0", 4096), listener("127.0.0.1:0", 1000)];
        let (added, removed, _) = listener_changes(&ephemeral[..1], &ephemeral);
        assert_eq!((added.len(), removed.len()), (1, 0), "port-0 listeners never collide");
    }
}
