//! Host names of endpoints, resolved off the workers and cached: an answer is used for
//! `ttl` (getaddrinfo does not give the record's own TTL, so the time is configured, as
//! nginx's `resolver valid=`); a stale answer is still used while one background lookup
//! refreshes it, and a failed refresh keeps the last good answer (logged), so a DNS
//! outage does not take healthy upstreams down. Lookups run on tokio's bounded blocking
//! pool (`lookup_host`), never on a worker.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pool::BoxFuture;

/// Resolves a name; the seam that lets tests count and fail lookups.
pub(crate) trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (getaddrinfo on the blocking pool).
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_string();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

struct Entry {
    addrs: Vec<SocketAddr>,
    fetched: tokio::time::Instant,
    refreshing: bool,
}

/// Cached answers, shared by every pool of the process.
pub(crate) struct DnsCache {
    resolver: Arc<dyn Resolve>,
    ttl: Duration,
    entries: Mutex<HashMap<(String, u16), Entry>>,
}

impl DnsCache {
    pub(crate) fn new(resolver: Arc<dyn Resolve>, ttl: Duration) -> Arc<Self> {
        Arc::new(DnsCache { resolver, ttl, entries: Mutex::new(HashMap::new()) })
    }

    /// The addresses of `host:port`: an IP literal as is; a name from the cache, fresh
    /// or (while a refresh runs) stale; resolved now only the first time.
    pub(crate) async fn lookup(self: &Arc<Self>, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_string(), port);
        let stale = {
            let mut entries = self.lock();
            match entries.get_mut(&key) {
                Some(entry) if entry.fetched.elapsed() < self.ttl => return Ok(entry.addrs.clone()),
                Some(entry) => {
                    let first = !entry.refreshing;
                    entry.refreshing = true;
                    Some((entry.addrs.clone(), first))
                }
                None => None,
            }
        };
        match stale {
            Some((addrs, start_refresh)) => {
                if start_refresh {
                    let cache = Arc::clone(self);
                    tokio::spawn(async move { cache.refresh(key).await });
                }
                Ok(addrs)
            }
            None => {
                let addrs = self.resolver.resolve(host, port).await?;
                self.store(key, addrs.clone());
                Ok(addrs)
            }
        }
    }

    /// Whether the name `host:port` still resolves to `addr`, from the cache (no
    /// lookup); None when it was never resolved. Pools drop connections to addresses no
    /// longer in the answer.
    pub(crate) fn still_resolves(&self, host: &str, port: u16, addr: SocketAddr) -> Option<bool> {
        let entries = self.lock();
        let entry = entries.iter().find(|((h, p), _)| h == host && *p == port).map(|(_, e)| e)?;
        Some(entry.addrs.contains(&addr))
    }

    async fn refresh(&self, key: (String, u16)) {
        match self.resolver.resolve(&key.0, key.1).await {
            Ok(addrs) if !addrs.is_empty() => self.store(key, addrs),
            outcome => {
                let why = outcome.err().map_or("no addresses".to_string(), |e| e.to_string());
                tracing::warn!(host = %key.0, error = %why, "DNS refresh failed; keeping the last answer");
                let mut entries = self.lock();
                if let Some(entry) = entries.get_mut(&key) {
                    // Try again after another ttl, not on every request.
                    entry.fetched = tokio::time::Instant::now();
                    entry.refreshing = false;
                }
            }
        }
    }

    fn store(&self, key: (String, u16), addrs: Vec<SocketAddr>) {
        let entry = Entry { addrs, fetched: tokio::time::Instant::now(), refreshing: false };
        self.lock().insert(key, entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// Answers 10.0.0.N for the Nth lookup; fails while `down`.
    #[derive(Default)]
    struct Counting {
        lookups: AtomicUsize,
        down: AtomicBool,
    }

    impl Resolve for Arc<Counting> {
        fn resolve(&self, _: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
            let n = self.lookups.fetch_add(1, Ordering::SeqCst) + 1;
            let down = self.down.load(Ordering::SeqCst);
            Box::pin(async move {
                if down {
                    return Err(io::Error::other("SERVFAIL"));
                }
                Ok(vec![SocketAddr::from(([10, 0, 0, n as u8], port))])
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_the_ttl_refreshed_in_the_background_and_kept_when_refresh_fails() {
        let resolver = Arc::new(Counting::default());
        let cache = DnsCache::new(Arc::new(Arc::clone(&resolver)), Duration::from_secs(30));
        let first = cache.lookup("api.internal", 80).await.expect("resolved");
        assert_eq!(first, vec![SocketAddr::from(([10, 0, 0, 1], 80))]);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cache.lookup("api.internal", 80).await.expect("cached"), first);
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "within the ttl: no lookup");

        // Past the ttl: the stale answer at once, one refresh in the background.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.lookup("api.internal", 80).await.expect("stale"), first);
        assert_eq!(cache.lookup("api.internal", 80).await.expect("stale"), first);
        tokio::task::yield_now().await;
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 2, "one refresh, not one per request");
        let second = cache.lookup("api.internal", 80).await.expect("refreshed");
        assert_eq!(second, vec![SocketAddr::from(([10, 0, 0, 2], 80))]);

        // The resolver fails: the last good answer stays.
        resolver.down.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(cache.lookup("api.internal", 80).await.expect("stale"), second);
        tokio::task::yield_now().await;
        assert_eq!(cache.lookup("api.internal", 80).await.expect("kept"), second);
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 3);

        // IP literals never reach the resolver.
        let literal = cache.lookup("127.0.0.1", 9).await.expect("literal");
        assert_eq!(literal, vec![SocketAddr::from(([127, 0, 0, 1], 9))]);
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 3);
    }
}
