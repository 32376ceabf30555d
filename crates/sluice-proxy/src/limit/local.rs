//! A rate limit's counts in this process: the `Bank` (one per policy, shared by the
//! workers: each key's GCRA state in one of 16 shards) and each worker's `Leases`
//! (admissions taken from the bank ahead, several at a time, so that a worker decides
//! most requests without the bank's lock).
//!
//! A lease is at most `burst ÷ (4 × workers)` admissions (1 to 64): the bank never
//! grants more than GCRA allows at the moment of the grant, so leases cannot admit more
//! than `rate × t + burst`; what a worker holds unused is at most that much below it,
//! and is given up after a second. A policy whose burst is below 4 × workers has leases
//! of one: each request asks the bank (one shard's lock, held for a map lookup).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_policy::rate::Gcra;

const SHARDS: usize = 16;
/// A lease unused this long is given up (its admissions go unused).
const LEASE_LIFE: Duration = Duration::from_secs(1);

/// What the bank (or a lease) decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Admitted; `remaining` more would be now, the bucket is full again after `until_full`.
    Admitted {
        remaining: u64,
        until_full: Duration,
    },
    Refused {
        retry_after: Duration,
    },
}

/// One policy's GCRA states, by key hash, for the whole process.
pub(crate) struct Bank {
    epoch: Instant,
    shards: [Mutex<Shard>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64>,
    /// Entries at the last sweep: the next one comes when the map has doubled.
    swept_at: usize,
}

impl Default for Bank {
    fn default() -> Self {
        Bank { epoch: Instant::now(), shards: Default::default(), hasher: Default::default() }
    }
}

impl Bank {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Takes up to `want` admissions for `key`: how many were granted (0: refused).
    pub(crate) fn take(&self, gcra: &Gcra, key: u64, want: u64) -> (u64, Taken) {
        let now = self.now();
        let mut shard = self.shard(key);
        let tat = shard.tats.get(&key).copied();
        let (granted, next) = gcra.take(tat, now, want);
        if granted == 0 {
            let retry_after = match gcra.decide(tat, now) {
                sluice_policy::rate::Decision::Refuse { retry_after } => retry_after,
                sluice_policy::rate::Decision::Admit { .. } => Duration::ZERO,
            };
            return (0, Taken::Refused { retry_after });
        }
        shard.tats.insert(key, next);
        if shard.tats.len() >= (2 * shard.swept_at).max(1024) {
            // Keys whose TAT has passed are as good as new: dropped, so that the map
            // holds only keys seen within their bucket's refill time.
            shard.tats.retain(|_, tat| !Gcra::is_spent(*tat, now));
            shard.swept_at = shard.tats.len();
        }
        (granted, Taken::Admitted { remaining: gcra.remaining(next, now), until_full: gcra.until_full(next, now) })
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // Plain numbers: a panic elsewhere leaves them consistent.
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One worker's admissions taken ahead from the banks, by (policy, key).
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<(usize, u64), Lease>>,
}

struct Lease {
    left: u64,
    /// What the bank said at the grant, for the RateLimit field.
    remaining: u64,
    until_full: Duration,
    granted: Instant,
}

impl Leases {
    /// One admission for `key` of the policy `policy` (its lease key; its bank and GCRA): from this
    /// worker's lease when it has one, else a new lease of up to `lease` from the bank.
    pub(crate) fn take(&self, policy: usize, bank: &Bank, gcra: &Gcra, key: u64, lease: u64) -> Taken {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(l) = held.get_mut(&(policy, key)) {
            if l.left > 0 && now.duration_since(l.granted) < LEASE_LIFE {
                l.left -= 1;
                return Taken::Admitted { remaining: l.remaining + l.left, until_full: l.until_full };
            }
        }
        let (granted, taken) = bank.take(gcra, key, lease);
        if let Taken::Admitted { remaining, until_full } = taken {
            if granted > 1 {
                let left = granted - 1;
                held.insert((policy, key), Lease { left, remaining, until_full, granted: now });
                return Taken::Admitted { remaining: remaining + left, until_full };
            }
            held.remove(&(policy, key));
        }
        if held.len() > 4096 {
            held.retain(|_, l| l.left > 0 && now.duration_since(l.granted) < LEASE_LIFE);
        }
        taken
    }
}

/// The lease size for a policy of `burst` shared by `workers`.
pub(crate) fn lease_size(burst: u64, workers: usize) -> u64 {
    (burst / (4 * workers.max(1) as u64)).clamp(1, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_never_admit_more_than_the_bank_allows() {
        // 100/s, burst 100, two workers: leases of 12.
        let gcra = Gcra::new(100, Duration::from_secs(1), 100);
        let bank = Bank::default();
        let workers = [Leases::default(), Leases::default()];
        let lease = lease_size(gcra.burst(), workers.len());
        assert_eq!(lease, 12);
        let mut admitted = 0;
        for i in 0..1_000 {
            if matches!(workers[i % 2].take(0, &bank, &gcra, 7, lease), Taken::Admitted { .. }) {
                admitted += 1;
            }
        }
        // All at once (no time passes to speak of): the burst, give or take what the
        // clock moved during the loop.
        assert!((100..=102).contains(&admitted), "{admitted}");
        let keys: usize = bank.shards.iter().map(|s| s.lock().expect("lock").tats.len()).sum();
        assert_eq!(keys, 1);
    }

    #[test]
    fn a_refusal_says_when_to_come_back() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 1);
        let bank = Bank::default();
        assert!(matches!(bank.take(&gcra, 1, 1), (1, Taken::Admitted { remaining: 0, .. })));
        match bank.take(&gcra, 1, 1) {
            (0, Taken::Refused { retry_after }) => {
                assert!(retry_after <= Duration::from_millis(100) && retry_after > Duration::from_millis(50))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(bank.take(&gcra, 2, 1), (1, _)), "another key has its own bucket");
    }
}
