//! Endpoint selection: which endpoint of a group serves a request, and in which order
//! the others are tried after it. Pure: the caller passes each endpoint's load, the
//! request's hash key and a random source, so every algorithm is tested as a function.
//!
//! - [`Algorithm::RoundRobin`]: smooth weighted round robin (nginx's): a heavy endpoint's
//!   turns are spread out, never sent in a burst.
//! - [`Algorithm::LeastRequest`]: the power of two random choices over outstanding
//!   requests per unit of weight (Envoy's and HAProxy's default style).
//! - [`Algorithm::Ewma`]: two random choices over peak-EWMA latency × (outstanding + 1)
//!   (linkerd's default); failed responses count as slow ones ([`ewma`]), so a backend
//!   that fails fast does not attract traffic.
//! - [`Algorithm::ConsistentHash`]: Maglev over a key from the request ([`maglev`]):
//!   adding or removing one of N endpoints moves about 1/N of the keys.
//! - [`Algorithm::Random`]: weighted random.

pub mod ewma;
pub mod maglev;
mod smooth;

use std::sync::Mutex;

pub use ewma::PeakEwma;
pub use maglev::Maglev;
use smooth::SmoothWeighted;

/// How a group spreads requests (`balance` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RoundRobin,
    LeastRequest,
    Ewma,
    ConsistentHash,
    Random,
}

/// What the balancer knows about one endpoint at the moment of a choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests sent to it and not yet finished.
    pub outstanding: u32,
    /// Its peak-EWMA latency in seconds (`ewma` only; anything for the others).
    pub latency: f64,
    /// Not ejected or failing health checks. When no endpoint is healthy, all are used.
    pub healthy: bool,
    /// Slow start: the share of its weight an endpoint back in rotation has so far, in
    /// (0, 1]; 1 otherwise. Consistent hashing ignores it (keys do not ramp).
    pub weight_factor: f64,
}

/// The balancer of one group of endpoints.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    weights: Vec<u32>,
    smooth: Mutex<SmoothWeighted>,
    maglev: Option<Maglev>,
}

impl Balancer {
    /// A balancer over endpoints with these `weights` (each at least 1) and `names`
    /// (stable across processes: consistent hashing places endpoints by name, so that
    /// every sluice instance maps a key to the same endpoint).
    pub fn new(algorithm: Algorithm, weights: &[u32], names: &[&str]) -> Balancer {
        let weights: Vec<u32> = weights.iter().map(|w| (*w).max(1)).collect();
        let maglev = (algorithm == Algorithm::ConsistentHash).then(|| Maglev::new(names, &weights));
        Balancer { algorithm, smooth: Mutex::new(SmoothWeighted::new(weights.len())), weights, maglev }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The endpoint to try first. `load(i)` is endpoint i's load now; `key` is the
    /// request's hash key (consistent hashing; without one, a random endpoint);
    /// `random` gives uniformly random 64-bit numbers.
    pub fn pick(&self, load: impl Fn(usize) -> Load, key: Option<u64>, random: &mut impl FnMut() -> u64) -> usize {
        let n = self.weights.len();
        if n <= 1 {
            return 0;
        }
        // Panic mode: with no healthy endpoint, every endpoint is eligible.
        let any_healthy = (0..n).any(|i| load(i).healthy);
        let eligible = |i: usize| !any_healthy || load(i).healthy;
        // The weight in effect: a slow-starting endpoint's share of its weight.
        let weight = |i: usize| f64::from(self.weights[i]) * load(i).weight_factor.clamp(0.01, 1.0);
        match self.algorithm {
            Algorithm::RoundRobin => {
                let whole = |i: usize| (weight(i) * 1000.0).round().max(1.0) as i64;
                self.smooth.lock().unwrap_or_else(|p| p.into_inner()).next(n, whole, eligible)
            }
            Algorithm::Random => self.weighted_random(random(), &eligible, &weight),
            Algorithm::LeastRequest => {
                self.two_choices(random, &eligible, &weight, |i| f64::from(load(i).outstanding) / weight(i))
            }
            Algorithm::Ewma => self.two_choices(random, &eligible, &weight, |i| {
                let l = load(i);
                l.latency * f64::from(l.outstanding + 1) / weight(i)
            }),
            Algorithm::ConsistentHash => match (&self.maglev, key) {
                (Some(maglev), Some(key)) => maglev.lookup_eligible(key, eligible),
                _ => self.weighted_random(random(), &eligible, &weight),
            },
        }
    }

    /// `first`, then the others in turn: the order a request tries endpoints in when
    /// connecting fails.
    pub fn order(&self, first: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.weights.len()).filter_map(move |i| self.nth_in_order(first, i))
    }

    /// The `i`th endpoint of `order(first)`, None past the last: a request keeps only
    /// where it is in the order, not a list of it.
    pub fn nth_in_order(&self, first: usize, i: usize) -> Option<usize> {
        let n = self.weights.len();
        (i < n).then(|| (first + i) % n)
    }

    /// An eligible endpoint drawn by weight.
    fn weighted_random(&self, r: u64, eligible: &impl Fn(usize) -> bool, weight: &impl Fn(usize) -> f64) -> usize {
        let n = self.weights.len();
        let total: f64 = (0..n).filter(|i| eligible(*i)).map(weight).sum();
        // 53 random bits as a fraction of the total.
        let mut point = (r >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut last = 0;
        for i in (0..n).filter(|i| eligible(*i)) {
            let w = weight(i);
            if point < w {
                return i;
            }
            point -= w;
            last = i;
        }
        last
    }

    /// Two distinct eligible endpoints drawn at random (by weight); the one of lower `cost`.
    fn two_choices(
        &self,
        random: &mut impl FnMut() -> u64,
        eligible: &impl Fn(usize) -> bool,
        weight: &impl Fn(usize) -> f64,
        cost: impl Fn(usize) -> f64,
    ) -> usize {
        let a = self.weighted_random(random(), eligible, weight);
        let mut b = self.weighted_random(random(), eligible, weight);
        if b == a {
            // Another draw among the other eligible ones, uniformly: two distinct
            // candidates whenever there are two.
            let others = (0..self.weights.len()).filter(|i| *i != a && eligible(*i)).count();
            if others == 0 {
                return a;
            }
            let nth = (random() % others as u64) as usize;
            b = (0..self.weights.len()).filter(|i| *i != a && eligible(*i)).nth(nth).unwrap_or(a);
        }
        if cost(b) < cost(a) {
            b
        } else {
            a
        }
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every process and release (std's is
/// not promised to be), so that every sluice instance maps a key to the same endpoint.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys; one round of a 64-bit finalizer fixes it.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests;
