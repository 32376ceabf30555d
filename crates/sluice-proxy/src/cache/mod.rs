//! The response cache's storage: a memory tier (moka, bounded in bytes), an optional
//! shared tier (Redis or memcached) behind it, request coalescing, and purging. One
//! per process, shared by the workers. What may be stored and served is decided by
//! `sluice_policy::cache`; how a request goes through the cache is `proxy::cached`.

mod entry;
mod fill;
mod flight;
mod key;
mod memory;
mod shared;
mod spread;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use sluice_config::CacheConfig;
use sluice_policy::cache::Heuristic;

pub(crate) use entry::{date_field, unix_now, vary_values, Entry, Facts, TARGETED};
pub(crate) use fill::{CacheFill, FillTo};
pub(crate) use flight::{follow, Join, Landing, Lead};
pub(crate) use key::{authority as key_authority, extras as key_extras, primary as primary_key, url as key_url};

use flight::Flights;
use memory::MemoryTier;
pub(crate) use shared::Across;
use shared::SharedTier;
use spread::{Heard, Invalidation};

/// What the cache did, since start (the metrics of #12 read these).
#[derive(Default)]
pub(crate) struct CacheStats {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) shared_hits: AtomicU64,
}

pub(crate) struct Cache {
    pub(crate) config: CacheConfig,
    memory: MemoryTier,
    shared: Option<SharedTier>,
    flights: Arc<Flights>,
    pub(crate) stats: CacheStats,
    /// Work no client waits for (a body read into the cache after a HEAD or a 304, a
    /// stale-while-revalidate refresh) holds a permit: at most `BACKGROUND_TASKS` at
    /// once, and a drain waits for them (`Cache::drained`).
    background: Arc<tokio::sync::Semaphore>,
    /// Targeted cache-control fields (RFC 9213) in order of precedence.
    targeted: Vec<http::HeaderName>,
    /// This process among the instances sharing the tier (its own invalidations come
    /// back to it; they are not applied twice).
    sender: u64,
    /// Invalidations applied so far: an entry read from the shared tier goes into
    /// memory only if none was applied while it was read (it may be the purged one).
    invalidations: AtomicU64,
}

/// Background fetches and drains at once, at most; past it they are not started (the
/// upstream connection of a body nobody waits for is closed instead).
pub(crate) const BACKGROUND_TASKS: usize = 64;

impl Cache {
    /// The cache for `config`; an error names a shared-tier setting that cannot be used.
    pub(crate) fn new(config: &CacheConfig) -> Result<Arc<Cache>, String> {
        let shared = config.shared.as_ref().map(|tier| SharedTier::new(tier, config.max_object)).transpose()?;
        let listens = shared.is_some();
        let cache = Arc::new(Cache {
            memory: MemoryTier::new(config.memory),
            shared,
            flights: Arc::default(),
            stats: CacheStats::default(),
            config: config.clone(),
            background: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_TASKS)),
            targeted: config
                .targeted_field
                .iter()
                .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
                .chain([http::HeaderName::from_static("cdn-cache-control")])
                .collect(),
            sender: instance_id(),
            invalidations: AtomicU64::new(0),
        });
        if listens {
            spread::listen(&cache);
        }
        Ok(cache)
    }

    /// The targeted cache-control fields this cache obeys, in order of precedence.
    pub(crate) fn targeted_fields(&self) -> &[http::HeaderName] {
        &self.targeted
    }

    /// A permit for background work, if one is free.
    pub(crate) fn background_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.background).try_acquire_owned().ok()
    }

    /// Background work running now.
    pub(crate) fn background_running(&self) -> usize {
        BACKGROUND_TASKS - self.background.available_permits()
    }

    /// Resolves when no background work runs (for the drain at shutdown).
    pub(crate) async fn drained(&self) {
        let _all = self.background.acquire_many(BACKGROUND_TASKS as u32).await;
    }

    pub(crate) fn heuristic(&self) -> Option<Heuristic> {
        (self.config.heuristic_percent > 0)
            .then_some(Heuristic { percent: self.config.heuristic_percent, max: self.config.heuristic_max.as_secs() })
    }

    /// The stored variant of `key` for a request with `headers`: from memory, else from
    /// the shared tier (then kept in memory too).
    pub(crate) async fn lookup(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Entry>> {
        if let Some(entry) = self.memory.get(key, headers) {
            return Some(entry);
        }
        let shared = self.shared.as_ref()?;
        let before = self.invalidations.load(Ordering::Acquire);
        // Boxed here and below: a shared tier's futures are large, and a memory hit (the
        // common case) should not carry them in its own future.
        let value = Box::pin(shared.get(key)).await?;
        self.read_shared(key, value, headers, before)
    }

    /// An entry read from the shared tier, if it is the one asked for; kept in memory
    /// unless an invalidation was applied since `before`.
    fn read_shared(&self, key: &str, value: bytes::Bytes, headers: &HeaderMap, before: u64) -> Option<Arc<Entry>> {
        let entry = Entry::decode(value, self.heuristic(), &self.config.tag_header)?;
        if &*entry.key != key || !entry.matches(headers) {
            return None;
        }
        self.stats.shared_hits.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(entry);
        if self.invalidations.load(Ordering::Acquire) == before {
            self.memory.insert(Arc::clone(&entry));
        }
        Some(entry)
    }

    /// Stores `entry` in memory now and in the shared tier in the background.
    pub(crate) fn store(self: &Arc<Self>, entry: Arc<Entry>) {
        self.stats.stored.fetch_add(1, Ordering::Relaxed);
        self.memory.insert(Arc::clone(&entry));
        if self.shared.is_some() {
            let keep = sluice_policy::cache::keep_for(&entry.stored(unix_now()));
            let cache = Arc::clone(self);
            tokio::spawn(async move {
                if let Some(shared) = &cache.shared {
                    shared.put(&entry.key, entry.encode(), Duration::from_secs(keep), &entry.tags).await;
                }
            });
        }
    }

    /// Coalescing: whether this request leads, follows or passes for `key`.
    pub(crate) fn join(&self, key: &str) -> Join {
        self.flights.join(key)
    }

    /// The cross-instance fetch lock (Redis, when configured): `Free` when this
    /// instance should fetch `key`.
    pub(crate) async fn lock_across(&self, key: &str) -> Across {
        match &self.shared {
            Some(shared) => Box::pin(shared.lock(key, self.config.coalesce_wait)).await,
            None => Across::Free,
        }
    }

    pub(crate) fn locks_across(&self) -> bool {
        self.shared.as_ref().is_some_and(SharedTier::locks)
    }

    /// Frees the fetch lock of `key`; with `pass`, the other instances go to the
    /// origin on their own for a while.
    pub(crate) async fn unlock_across(&self, key: &str, pass: bool) {
        if let Some(shared) = &self.shared {
            Box::pin(shared.unlock(key, pass)).await;
        }
    }

    /// What another instance's fetch of `key` came to so far: its entry (the variant
    /// for `headers`), or the lock's state.
    pub(crate) async fn poll_across(&self, key: &str, headers: &HeaderMap) -> (Option<Arc<Entry>>, Across) {
        let Some(shared) = &self.shared else { return (None, Across::Free) };
        let before = self.invalidations.load(Ordering::Acquire);
        match Box::pin(shared.poll(key)).await {
            (Some(value), lock) => (self.read_shared(key, value, headers, before), lock),
            (None, lock) => (None, lock),
        }
    }

    /// Removes the entries of these exact keys, in both tiers and every instance's
    /// memory (no walk of the memory tier: this runs after every unsafe request on a
    /// cached route).
    pub(crate) async fn invalidate(&self, keys: &[String]) -> usize {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        let mut removed = keys.iter().filter(|key| self.memory.remove(key)).count();
        if let Some(shared) = &self.shared {
            removed = removed.max(Box::pin(shared.remove(keys)).await);
            // The keys are copied into a message only when there is someone to tell.
            self.tell_others(&Invalidation::Keys(keys.to_vec())).await;
        }
        removed
    }

    /// Removes every entry for `host` and `path_and_query`, in either scheme, whatever
    /// its key extras (headers, cookies): a purge of one URL.
    pub(crate) async fn purge_url(&self, host: &str, path_and_query: &str) -> usize {
        let urls: Vec<String> =
            ["http", "https"].iter().map(|scheme| key::url(&self.config, scheme, host, path_and_query)).collect();
        let extras = !self.config.key_headers.is_empty() || !self.config.key_cookies.is_empty();
        let invalidation = Invalidation::Urls { urls, extras };
        let mut removed = self.drop_from_memory(&invalidation);
        if let (Some(shared), Invalidation::Urls { urls, .. }) = (&self.shared, &invalidation) {
            removed = removed.max(Box::pin(shared.remove(urls)).await);
        }
        self.tell_others(&invalidation).await;
        removed
    }

    /// Removes the entries for `host` under `path_prefix`, in both tiers.
    pub(crate) async fn purge_prefix(&self, host: &str, path_prefix: &str) -> usize {
        let invalidation = Invalidation::Prefix { host: host.to_string(), path: path_prefix.to_string() };
        let mut removed = self.drop_from_memory(&invalidation);
        if let Some(shared) = &self.shared {
            removed = removed.max(Box::pin(shared.purge_prefix(host, path_prefix)).await);
        }
        self.tell_others(&invalidation).await;
        removed
    }

    /// Removes the entries tagged with any of `tags`, in both tiers.
    pub(crate) async fn purge_tags(&self, tags: &[String]) -> usize {
        let invalidation = Invalidation::Tags(tags.to_vec());
        let mut removed = self.drop_from_memory(&invalidation);
        if let Some(shared) = &self.shared {
            removed = removed.max(Box::pin(shared.purge_tags(tags)).await);
        }
        self.tell_others(&invalidation).await;
        removed
    }

    /// Applies an invalidation to this process's memory tier; how many keys went.
    fn drop_from_memory(&self, invalidation: &Invalidation) -> usize {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        match invalidation {
            Invalidation::Keys(keys) => keys.iter().filter(|key| self.memory.remove(key)).count(),
            Invalidation::Urls { urls, extras } => self.memory.purge_urls(urls, *extras),
            Invalidation::Prefix { host, path } => self.memory.purge_prefix(host, path),
            Invalidation::Tags(tags) => self.memory.purge_tags(tags),
        }
    }

    /// Sends an invalidation to the other instances sharing the tier (none without one).
    async fn tell_others(&self, invalidation: &Invalidation) {
        if let Some(shared) = &self.shared {
            Box::pin(shared.publish(spread::encode(self.sender, invalidation))).await;
        }
    }

    /// Listens for the other instances' invalidations and applies them to memory,
    /// until listening fails (the caller tries again).
    pub(crate) async fn hear_others(&self) {
        let Some(shared) = &self.shared else { return };
        let mut heard = |heard: Heard| match heard {
            Heard::Invalidation(invalidation) => {
                let dropped = self.drop_from_memory(&invalidation);
                tracing::debug!(?invalidation, dropped, "another instance's cache invalidation");
            }
            Heard::MaybeMissed => {
                self.invalidations.fetch_add(1, Ordering::AcqRel);
                self.memory.clear();
            }
        };
        shared.listen(self.sender, &mut heard).await;
    }

    /// Bytes and entries in the memory tier.
    pub(crate) fn memory_use(&self) -> (u64, u64) {
        (self.memory.bytes(), self.memory.len())
    }

    /// Shared tier failures since start.
    pub(crate) fn shared_errors(&self) -> u64 {
        self.shared.as_ref().map_or(0, SharedTier::errors)
    }

    /// Requests being fetched for the cache now.
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.out()
    }
}

/// A number that tells this process from the other instances: the process id and the
/// start time, hashed with a random key.
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}
