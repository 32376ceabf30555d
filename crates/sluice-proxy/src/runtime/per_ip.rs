//! Open client connections per client address, for `server.max_connections_per_ip`:
//! one table for the process (a client's connections spread over every worker), in
//! shards so that workers accepting at once rarely meet on a lock. Taken once per
//! connection, never per request.
//!
//! IPv6 clients are counted per /64: one host is usually given a whole /64, so a
//! count per address would let it open 2^64 × the limit.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

/// What one client is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.into()),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Connections open now per client.
#[derive(Default)]
pub(crate) struct PerIpConnections {
    shards: [Mutex<HashMap<ClientKey, u32>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

impl PerIpConnections {
    /// Counts a connection from `ip` unless it already has `limit` open.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<IpSlot> {
        let key = ClientKey::of(ip);
        let mut shard = self.shard(key);
        let open = shard.entry(key).or_insert(0);
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(IpSlot { table: Arc::clone(self), key })
    }

    /// Connections open now from `ip` (counted under its key).
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> u32 {
        let key = ClientKey::of(ip);
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    fn shard(&self, key: ClientKey) -> MutexGuard<'_, HashMap<ClientKey, u32>> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // Plain counts: a panic elsewhere leaves them consistent.
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's count, given back when the connection ends.
pub(crate) struct IpSlot {
    table: Arc<PerIpConnections>,
    key: ClientKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut shard = self.table.shard(self.key);
        if let Some(open) = shard.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&self.key); // the table holds only clients with connections
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_client_gets_its_limit_and_its_places_back() {
        let table = Arc::new(PerIpConnections::default());
        let held: Vec<_> = (0..3).map(|_| table.enter(ip("10.0.0.1"), 3).expect("within the limit")).collect();
        assert!(table.enter(ip("10.0.0.1"), 3).is_none(), "the fourth is refused");
        assert!(table.enter(ip("10.0.0.2"), 3).is_some(), "another client is not");
        drop(held);
        assert_eq!(table.open(ip("10.0.0.1")), 0);
        assert!(table.shards.iter().all(|s| s.lock().expect("lock").is_empty()), "nothing kept for gone clients");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let table = Arc::new(PerIpConnections::default());
        let _a = table.enter(ip("2001:db8:1:2::1"), 2).expect("first");
        let _b = table.enter(ip("2001:db8:1:2:ffff::9"), 2).expect("same /64, second");
        assert!(table.enter(ip("2001:db8:1:2::77"), 2).is_none(), "a third address in the /64 is refused");
        assert!(table.enter(ip("2001:db8:1:3::1"), 2).is_some(), "another /64 is not");
        let _c = table.enter(ip("192.0.2.1"), 1).expect("v4");
        assert!(table.enter(ip("::ffff:192.0.2.1"), 1).is_none(), "the same client over a dual-stack socket");
    }
}
