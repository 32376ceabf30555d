//! Upstream pools live here, outside any config snapshot, keyed by what makes a
//! connection: endpoint, protocol, pool settings and TLS settings. A snapshot's groups
//! hold their pools; a new snapshot built from a changed config (a reload) finds the
//! pools of unchanged endpoints here, warm connections and all. A pool that no
//! snapshot holds any more is dropped with the last of them (its connections close).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use sluice_config::{Endpoint, PoolSettings, UpstreamProtocol, UpstreamTls};

use super::dns::{DnsCache, SystemResolver};
use super::pool::cap::ConnectionCap;
use super::pool::EndpointPool;

/// What a pooled connection was made with: connections are shared only under one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) endpoint: Endpoint,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) settings: PoolSettings,
    pub(crate) tls: Option<UpstreamTls>,
}

/// Every live pool of a worker (or of the process, when workers share pools), and the
/// DNS answers they share.
pub(crate) struct PoolRegistry {
    pools: Mutex<HashMap<PoolKey, Weak<EndpointPool>>>,
    dns: Arc<DnsCache>,
    /// Connection caps shared with the other workers' registries, when pools are per worker.
    caps: Option<Arc<SharedCaps>>,
}

/// HTTP/1 connection caps for the whole process, one per pool key, which the workers'
/// own pools of that key draw on (`pool::cap`).
#[derive(Default)]
pub(crate) struct SharedCaps {
    caps: Mutex<HashMap<PoolKey, Weak<ConnectionCap>>>,
}

impl SharedCaps {
    fn get(&self, key: &PoolKey) -> Arc<ConnectionCap> {
        let mut caps = self.caps.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cap) = caps.get(key).and_then(Weak::upgrade) {
            return cap;
        }
        caps.retain(|_, cap| cap.strong_count() > 0);
        let cap = ConnectionCap::new(key.settings.max_connections);
        caps.insert(key.clone(), Arc::downgrade(&cap));
        cap
    }
}

impl Default for PoolRegistry {
    fn default() -> Self {
        PoolRegistry::new(sluice_config::defaults::DNS_TTL, None)
    }
}

impl PoolRegistry {
    /// Endpoint names are resolved again after `dns_ttl`.
    /// With `caps`, HTTP/1 pools share their connection cap with other registries' pools.
    pub(crate) fn new(dns_ttl: std::time::Duration, caps: Option<Arc<SharedCaps>>) -> Self {
        PoolRegistry { pools: Mutex::new(HashMap::new()), dns: DnsCache::new(Arc::new(SystemResolver), dns_ttl), caps }
    }

    /// The shared DNS cache.
    pub(crate) fn dns(&self) -> Arc<DnsCache> {
        Arc::clone(&self.dns)
    }

    /// The live pool for `key`, or a new one from `make`, given the connection cap it
    /// draws on (started at once).
    pub(crate) fn pool(
        &self,
        key: PoolKey,
        make: impl FnOnce(Arc<ConnectionCap>) -> Result<EndpointPool, String>,
    ) -> Result<Arc<EndpointPool>, String> {
        let mut pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return Ok(pool);
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let cap = match &self.caps {
            Some(caps) => caps.get(&key),
            None => ConnectionCap::new(key.settings.max_connections),
        };
        let pool = EndpointPool::spawn(make(cap)?);
        pools.insert(key, Arc::downgrade(&pool));
        Ok(pool)
    }

    /// Pools alive now.
    pub(crate) fn len(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.values().filter(|p| p.strong_count() > 0).count()
    }
}
