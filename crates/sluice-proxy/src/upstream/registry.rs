//! Upstream pools live here, outside any config snapshot, keyed by what makes a
//! connection: endpoint, protocol, pool settings and TLS settings. A snapshot's groups
//! hold their pools; a new snapshot built from a changed config (a reload) finds the
//! pools of unchanged endpoints here, warm connections and all. A pool that no
//! snapshot holds any more is dropped with the last of them (its connections close).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use sluice_config::{Endpoint, PoolSettings, UpstreamProtocol, UpstreamTls};

use super::dns::{DnsCache, SystemResolver};
use super::pool::EndpointPool;

/// What a pooled connection was made with: connections are shared only under one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) endpoint: Endpoint,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) settings: PoolSettings,
    pub(crate) tls: Option<UpstreamTls>,
}

/// Every live pool of the process, and the DNS answers they share.
pub(crate) struct PoolRegistry {
    pools: Mutex<HashMap<PoolKey, Weak<EndpointPool>>>,
    dns: Arc<DnsCache>,
}

impl Default for PoolRegistry {
    fn default() -> Self {
        PoolRegistry::new(sluice_config::defaults::DNS_TTL)
    }
}

impl PoolRegistry {
    /// Endpoint names are resolved again after `dns_ttl`.
    pub(crate) fn new(dns_ttl: std::time::Duration) -> Self {
        PoolRegistry { pools: Mutex::new(HashMap::new()), dns: DnsCache::new(Arc::new(SystemResolver), dns_ttl) }
    }

    /// The shared DNS cache.
    pub(crate) fn dns(&self) -> Arc<DnsCache> {
        Arc::clone(&self.dns)
    }

    /// The live pool for `key`, or a new one from `make` (started at once).
    pub(crate) fn pool(
        &self,
        key: PoolKey,
        make: impl FnOnce() -> Result<EndpointPool, String>,
    ) -> Result<Arc<EndpointPool>, String> {
        let mut pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return Ok(pool);
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let pool = EndpointPool::spawn(make()?);
        pools.insert(key, Arc::downgrade(&pool));
        Ok(pool)
    }

    /// Pools alive now.
    pub(crate) fn len(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.values().filter(|p| p.strong_count() > 0).count()
    }
}
