//! The shared tier: a store every sluice instance reads and writes (Redis, or
//! memcached), so that N instances behind a TCP balancer share what any of them
//! fetched. Entries go in as `Entry::encode` bytes and expire by their own lifetime.
//!
//! A shared tier is never in a request's way for longer than its `timeout`: every
//! operation is bounded, and after a failure the tier is skipped for a second (the
//! `Gate`), so an outage costs one timeout a second, not one per request. Failures are
//! counted and logged at most every 10 s; clients see memory-only caching.

mod memcached;
mod redis;

pub(crate) use crate::cache::spread::Heard;
pub(crate) use crate::gate::{Gate, TierResult};

use std::time::Duration;

use bytes::Bytes;
use sluice_config::SharedTierConfig;

/// The cross-instance fetch lock of a key, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Across {
    /// Nobody fetches it (taking the lock: now this instance does).
    Free,
    /// Another instance fetches it: its entry will appear, or the lock will change.
    Fetching,
    /// Its last response could not be stored: each instance goes to the origin alone.
    Pass,
}

pub(crate) enum SharedTier {
    Redis(Box<redis::RedisTier>),
    Memcached(Box<memcached::MemcachedTier>),
}

impl SharedTier {
    /// `max_object` bounds what is read back: an entry is never larger than the largest
    /// body stored plus room for its head, whatever the server says.
    pub(crate) fn new(config: &SharedTierConfig, max_object: u64) -> Result<SharedTier, String> {
        match config {
            SharedTierConfig::Redis { link, timeout, prefix, coalesce_lock } => {
                Ok(SharedTier::Redis(Box::new(redis::RedisTier::new(link, *timeout, prefix, *coalesce_lock)?)))
            }
            SharedTierConfig::Memcached { address, timeout, prefix } => Ok(SharedTier::Memcached(Box::new(
                memcached::MemcachedTier::new(address, *timeout, prefix, max_object),
            ))),
        }
    }

    fn gate(&self) -> &Gate {
        match self {
            SharedTier::Redis(tier) => &tier.gate,
            SharedTier::Memcached(tier) => &tier.gate,
        }
    }

    /// Failed operations since start (timeouts, refused connections, errors).
    pub(crate) fn errors(&self) -> u64 {
        self.gate().errors()
    }

    /// The stored value of `key`; None on a miss, and when the tier is unavailable.
    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        let gate = self.gate();
        if !gate.open() {
            return None;
        }
        let got = match self {
            SharedTier::Redis(tier) => gate.bounded(tier.get(key)).await,
            SharedTier::Memcached(tier) => gate.bounded(tier.get(key)).await,
        };
        got.flatten()
    }

    /// Stores `value` under `key` for `ttl`, listed under `tags`.
    pub(crate) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String]) {
        let gate = self.gate();
        if !gate.open() {
            return;
        }
        if ttl.is_zero() {
            return self.unlock(key, false).await; // nothing will appear: free the waiters
        }
        match self {
            SharedTier::Redis(tier) => gate.bounded(tier.put(key, value, ttl, tags)).await,
            SharedTier::Memcached(tier) => gate.bounded(tier.put(key, value, ttl)).await,
        };
    }

    /// Removes `keys`; how many were there (as far as the tier tells). Invalidations
    /// are tried even while the gate skips the tier after a failure (bounded all the
    /// same): a purge that is lost leaves stale entries, a skipped read costs a miss.
    pub(crate) async fn remove(&self, keys: &[String]) -> usize {
        let gate = self.gate();
        let removed = match self {
            SharedTier::Redis(tier) => gate.bounded(tier.remove(keys)).await,
            SharedTier::Memcached(tier) => gate.bounded(tier.remove(keys)).await,
        };
        removed.unwrap_or(0)
    }

    /// Removes the keys for `host` under `path_prefix`.
    pub(crate) async fn purge_prefix(&self, host: &str, path_prefix: &str) -> usize {
        let removed = match self {
            SharedTier::Redis(tier) => tier.gate.bounded_long(tier.purge_prefix(host, path_prefix)).await,
            SharedTier::Memcached(tier) => tier.gate.bounded(tier.purge_everything()).await,
        };
        removed.unwrap_or(0)
    }

    /// Removes the keys tagged with any of `tags`.
    pub(crate) async fn purge_tags(&self, tags: &[String]) -> usize {
        let removed = match self {
            SharedTier::Redis(tier) => tier.gate.bounded_long(tier.purge_tags(tags)).await,
            SharedTier::Memcached(tier) => tier.gate.bounded(tier.purge_everything()).await,
        };
        removed.unwrap_or(0)
    }

    /// Sends an invalidation to the other instances' memory tiers.
    /// (Tried even while the gate skips the tier, as `remove`.) A message that could
    /// not be sent is logged: instances that were listening keep the entry in memory
    /// until it expires or they lose their subscription.
    pub(crate) async fn publish(&self, message: Vec<u8>) {
        let gate = self.gate();
        let sent = match self {
            SharedTier::Redis(tier) => gate.bounded(tier.publish(message)).await,
            SharedTier::Memcached(tier) => gate.bounded(tier.publish(message)).await,
        };
        if sent.is_none() {
            tracing::warn!("a cache invalidation could not be sent to the other instances (the shared tier failed)");
        }
    }

    /// Hears the other instances' invalidations until that fails; logs why (at most
    /// every 10 s, as the gate does).
    pub(crate) async fn listen(&self, sender: u64, heard: &mut (dyn FnMut(Heard) + Send)) {
        let failed = match self {
            SharedTier::Redis(tier) => tier.listen(sender, heard).await,
            SharedTier::Memcached(tier) => tier.listen(sender, heard).await,
        };
        if let Err(error) = failed {
            let gate = self.gate();
            // Counted and logged by the gate, as a failed operation.
            gate.bounded(async { Err::<(), _>(format!("listening for invalidations: {error}")) }).await;
        }
    }

    /// Takes the cross-instance fetch lock of `key` for `hold` (`Free`: this instance
    /// fetches). Always `Free` without a lock (memcached, or not configured), and when
    /// the tier is unavailable.
    pub(crate) async fn lock(&self, key: &str, hold: Duration) -> Across {
        match self {
            SharedTier::Redis(tier) if tier.coalesce_lock && tier.gate.open() => {
                tier.gate.bounded(tier.lock(key, hold)).await.unwrap_or(Across::Free)
            }
            _ => Across::Free,
        }
    }

    pub(crate) fn locks(&self) -> bool {
        matches!(self, SharedTier::Redis(tier) if tier.coalesce_lock)
    }

    /// Frees the fetch lock of `key` (with `pass`: other instances go alone a while).
    pub(crate) async fn unlock(&self, key: &str, pass: bool) {
        if let SharedTier::Redis(tier) = self {
            // Tried even while the gate skips the tier: other instances wait on it.
            if tier.coalesce_lock {
                tier.gate.bounded(tier.unlock(key, pass)).await;
            }
        }
    }

    /// The stored value of `key`, else its fetch lock's state (Free when unavailable:
    /// a waiter then goes on alone).
    pub(crate) async fn poll(&self, key: &str) -> (Option<Bytes>, Across) {
        match self {
            SharedTier::Redis(tier) if tier.gate.open() => {
                tier.gate.bounded(tier.poll(key)).await.unwrap_or((None, Across::Free))
            }
            _ => (None, Across::Free),
        }
    }
}

/// A key's bytes as a printable, bounded, stable name: two FNV-1a 64-bit hashes with
/// different offsets, in hex (memcached keys allow no spaces and at most 250 bytes;
/// the entry itself names its key, so a collision reads as a miss).
pub(crate) fn digest(key: &str) -> String {
    let fnv =
        |offset: u64| key.bytes().fold(offset, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142))
}
