//! Maglev consistent hashing (Eisenbud et al., NSDI 2016; Envoy's `MAGLEV`): each
//! endpoint fills slots of a prime-sized table in its own pseudo-random permutation,
//! in turns proportional to its weight; a key's hash picks a slot. Lookups are one index;
//! when one of N endpoints is added or removed, about 1/N of the keys move.

use super::stable_hash;

/// Slots in the table (a prime; Envoy's default). Memory: 4 bytes a slot.
pub const TABLE_SIZE: usize = 65_537;

#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// The table for endpoints named `names` with `weights` (same length, weights ≥ 1).
    pub fn new(names: &[&str], weights: &[u32]) -> Maglev {
        let m = TABLE_SIZE as u64;
        let n = names.len();
        if n == 0 {
            return Maglev { table: Vec::new() };
        }
        let offsets: Vec<u64> = names.iter().map(|name| stable_hash(name.as_bytes()) % m).collect();
        let skips: Vec<u64> =
            names.iter().map(|name| stable_hash(format!("skip:{name}").as_bytes()) % (m - 1) + 1).collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; TABLE_SIZE];
        let mut filled = 0;
        while filled < TABLE_SIZE {
            for i in 0..n {
                for _ in 0..weights.get(i).copied().unwrap_or(1).max(1) {
                    loop {
                        let slot = ((offsets[i] + next[i] * skips[i]) % m) as usize;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            table[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == TABLE_SIZE {
                        return Maglev { table };
                    }
                }
            }
        }
        Maglev { table }
    }

    /// The endpoint for a key's hash.
    pub fn lookup(&self, key: u64) -> usize {
        self.table.get((key % TABLE_SIZE as u64) as usize).map_or(0, |i| *i as usize)
    }

    /// The endpoint for a key's hash among the `eligible` ones: the key's slot, or the
    /// next slot of an eligible endpoint (so keys of eligible endpoints never move).
    pub fn lookup_eligible(&self, key: u64, eligible: impl Fn(usize) -> bool) -> usize {
        let start = (key % TABLE_SIZE as u64) as usize;
        (0..self.table.len())
            .map(|step| self.table[(start + step) % self.table.len()] as usize)
            .find(|i| eligible(*i))
            .unwrap_or_else(|| self.lookup(key))
    }
}
