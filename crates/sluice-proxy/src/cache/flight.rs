//! Request coalescing: the first miss for a key leads (goes to the origin); misses
//! for the same key while it is out follow (wait, bounded, for what it lands). A key
//! whose response was not storable is remembered for a while ("hit-for-pass"), so its
//! traffic is not serialised behind one request at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::Entry;
use super::Cache;

/// How long a key whose response could not be stored goes to the origin uncoalesced.
const PASS_FOR: Duration = Duration::from_secs(10);

/// The pass keys' bytes at most: keys come from client URLs (up to 16 KiB each), so the
/// map is bounded by size and evicts (moka: TinyLFU, no lock held across the map).
const PASS_BYTES: u64 = 16 * 1024 * 1024;

/// What a leader's request came to.
#[derive(Clone)]
pub(crate) enum Landing {
    Pending,
    Stored(Arc<Entry>),
    /// Not storable, or the request failed: followers go to the origin themselves.
    NotStored,
}

/// The keys being fetched now, and the keys not to coalesce.
pub(crate) struct Flights {
    out: Mutex<HashMap<Arc<str>, watch::Receiver<Landing>>>,
    passes: moka::sync::Cache<Arc<str>, ()>,
}

impl Default for Flights {
    fn default() -> Self {
        let passes = moka::sync::Cache::builder()
            .max_capacity(PASS_BYTES)
            .weigher(|key: &Arc<str>, _: &()| u32::try_from(key.len() + 64).unwrap_or(u32::MAX))
            .time_to_live(PASS_FOR)
            .build();
        Flights { out: Mutex::default(), passes }
    }
}

/// Which part a request plays for its key.
pub(crate) enum Join {
    Lead(Lead),
    Follow(watch::Receiver<Landing>),
    /// The key's responses are not storable lately: go alone.
    Pass,
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        if self.passing(key) {
            return Join::Pass;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(landing) = out.get(key) {
            return Join::Follow(landing.clone());
        }
        let (tx, rx) = watch::channel(Landing::Pending);
        let key: Arc<str> = Arc::from(key);
        out.insert(Arc::clone(&key), rx);
        Join::Lead(Lead { flights: Arc::clone(self), key, tx, landed: false, across: None })
    }

    fn passing(&self, key: &str) -> bool {
        self.passes.contains_key(key)
    }

    fn pass(&self, key: &Arc<str>) {
        self.passes.insert(Arc::clone(key), ());
    }

    /// The key is storable again (a stored response): coalesce it again.
    pub(crate) fn unpass(&self, key: &str) {
        self.passes.invalidate(key);
    }

    /// Keys out now (for tests and metrics).
    pub(crate) fn out(&self) -> usize {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The leading request of a key; dropped without landing, it lands NotStored (its
/// request failed or was cancelled) and the followers go to the origin themselves.
/// A lead that holds the cross-instance lock frees it the same way: the other
/// instances' waiters go on at once, never at the end of the lock's hold.
pub(crate) struct Lead {
    flights: Arc<Flights>,
    key: Arc<str>,
    tx: watch::Sender<Landing>,
    landed: bool,
    /// The cache whose cross-instance lock of this key the lead holds.
    across: Option<Arc<Cache>>,
}

impl Lead {
    /// This lead holds the cross-instance lock of its key.
    pub(crate) fn hold_across(&mut self, cache: &Arc<Cache>) {
        self.across = Some(Arc::clone(cache));
    }

    /// The response was stored: followers serve it (and the shared tier's write
    /// frees the cross-instance lock, once the entry is there to be found).
    pub(crate) fn stored(mut self, entry: Arc<Entry>) {
        self.across = None;
        self.flights.unpass(&self.key);
        self.land(Landing::Stored(entry));
    }

    /// The response may not be stored: followers go alone, and so does the key for a
    /// while, on every instance.
    pub(crate) fn not_storable(mut self) {
        self.flights.pass(&self.key);
        self.release_across(true);
        self.land(Landing::NotStored);
    }

    fn release_across(&mut self, pass: bool) {
        let Some(cache) = self.across.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let key = Arc::clone(&self.key);
        runtime.spawn(async move { cache.unlock_across(&key, pass).await });
    }

    fn land(&mut self, landing: Landing) {
        self.landed = true;
        self.flights.out.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
        let _ = self.tx.send(landing);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.landed {
            self.release_across(false);
            self.land(Landing::NotStored);
        }
    }
}

/// Waits for the leader as long as its fetch takes (bounded by the route's timeout to
/// the response head, and by read_timeout and max_object while its body is stored);
/// None when it failed or was not storable. No wait of its own: a follower that gave
/// up on a leader slower than a fixed wait would go to the origin with all the others
/// at once (a stampede) after having waited for nothing.
pub(crate) async fn follow(mut landing: watch::Receiver<Landing>) -> Option<Arc<Entry>> {
    let landed = landing.wait_for(|l| !matches!(l, Landing::Pending)).await;
    match landed {
        Ok(landing) => match &*landing {
            Landing::Stored(entry) => Some(Arc::clone(entry)),
            _ => None,
        },
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_map_is_bounded_in_bytes_whatever_the_clients_send() {
        let flights = Arc::new(Flights::default());
        let long = "k".repeat(16 * 1024);
        // 80 MiB of 16 KiB keys, as URLs a client chooses.
        for i in 0..5_000 {
            flights.pass(&Arc::from(format!("{i:08}{long}")));
        }
        flights.passes.run_pending_tasks();
        assert!(flights.passes.weighted_size() <= PASS_BYTES, "{} bytes", flights.passes.weighted_size());
        assert!(flights.passes.entry_count() < 5_000);
        let recent: Arc<str> = Arc::from("GET /recent");
        flights.pass(&recent);
        assert!(matches!(flights.join("GET /recent"), Join::Pass));
        flights.unpass("GET /recent");
        assert!(matches!(flights.join("GET /recent"), Join::Lead(_)));
    }
}
