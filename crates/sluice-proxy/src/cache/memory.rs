//! The memory tier: moka's concurrent cache (TinyLFU admission, LRU eviction), bounded
//! in bytes by weighing each key's variants. One per process, shared by the workers,
//! so that a response fetched on one worker is a hit on every other.

use std::sync::Arc;

use http::HeaderMap;

use super::entry::Entry;
use super::key;

/// Most variants kept for one key (Vary on a field with many values would otherwise
/// fill a key with copies).
const MAX_VARIANTS: usize = 8;

/// A key's stored variants (one when the response does not vary).
type Variants = Arc<[Arc<Entry>]>;

pub(crate) struct MemoryTier {
    entries: moka::sync::Cache<Arc<str>, Variants>,
}

impl MemoryTier {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Arc<str>, variants: &Variants| {
                let bytes: usize = variants.iter().map(|e| e.size()).sum();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build();
        MemoryTier { entries }
    }

    /// The variant of `key` that matches the request's headers.
    pub(crate) fn get(&self, key: &str, request: &HeaderMap) -> Option<Arc<Entry>> {
        let variants = self.entries.get(key)?;
        variants.iter().find(|e| e.matches(request)).cloned()
    }

    /// Stores `entry`, replacing the variant it is a new copy of.
    pub(crate) fn insert(&self, entry: Arc<Entry>) {
        let key = Arc::clone(&entry.key);
        let mut variants: Vec<Arc<Entry>> = match self.entries.get(&key) {
            // A response that varies on other names replaces every variant.
            Some(old) => old
                .iter()
                .filter(|e| !e.same_variant(&entry) && names(e) == names(&entry))
                .take(MAX_VARIANTS - 1)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        variants.insert(0, entry);
        self.entries.insert(key, variants.into());
    }

    /// Removes every variant of `key`; whether there was one.
    pub(crate) fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Removes the keys for `host` under `path_prefix`; how many.
    pub(crate) fn purge_prefix(&self, host: &str, path_prefix: &str) -> usize {
        self.purge_where(|key, _| key::under(key, host, path_prefix))
    }

    /// Removes the keys with a variant tagged with any of `tags`; how many.
    pub(crate) fn purge_tags(&self, tags: &[String]) -> usize {
        self.purge_where(|_, variants| variants.iter().any(|e| e.tags.iter().any(|t| tags.contains(t))))
    }

    /// Removes the keys whose URL part is one of `urls`; with key extras configured
    /// (`extras`), the keys that add them to it too (found by a walk of the tier).
    pub(crate) fn purge_urls(&self, urls: &[String], extras: bool) -> usize {
        let mut purged = urls.iter().filter(|url| self.remove(url)).count();
        if extras {
            purged +=
                self.purge_where(|key, _| key.split_once('\n').is_some_and(|(url, _)| urls.iter().any(|u| u == url)));
        }
        purged
    }

    fn purge_where(&self, doomed: impl Fn(&str, &Variants) -> bool) -> usize {
        let keys: Vec<Arc<Arc<str>>> =
            self.entries.iter().filter(|(key, variants)| doomed(key, variants)).map(|(key, _)| key).collect();
        for key in &keys {
            self.entries.invalidate(&**key);
        }
        keys.len()
    }

    /// Removes everything (after invalidations may have been missed).
    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Bytes held now (by the weigher), after pending maintenance.
    pub(crate) fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.entry_count()
    }
}

fn names(entry: &Entry) -> Vec<&str> {
    entry.vary.iter().map(|(n, _)| n.as_str()).collect()
}
