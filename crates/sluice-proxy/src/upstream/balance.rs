//! A group's balancer (`sluice_policy::balance`) and what it learns from outcome
//! records: per endpoint, the requests outstanding and a peak-EWMA latency. A request
//! counts as outstanding from the moment it takes a connection until its record ends
//! (the response's last byte, or its failure), and its record tells the latency of the
//! response head, or that it failed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Request;
use sluice_config::{Balance, HashKey};
use sluice_policy::balance::{stable_hash, Algorithm, Balancer, Load, PeakEwma};

use crate::outcome::{Feedback, Outcome};

/// One endpoint as the balancer sees it.
pub(crate) struct EndpointLoad {
    outstanding: AtomicU32,
    latency: Mutex<PeakEwma>,
}

impl EndpointLoad {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(EndpointLoad { outstanding: AtomicU32::new(0), latency: Mutex::new(PeakEwma::new(Instant::now())) })
    }

    pub(crate) fn load(&self) -> Load {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner()).get();
        Load { outstanding: self.outstanding.load(Ordering::Relaxed), latency }
    }

    /// A request now uses this endpoint; its record will call `finished`.
    pub(crate) fn begin(self: &Arc<Self>, outcome: &mut Outcome) {
        if let Some(previous) = outcome.upstream_trace.feedback.take() {
            if std::ptr::addr_eq(Arc::as_ptr(&previous), Arc::as_ptr(self)) {
                // Another connection to the same endpoint (a stale pooled one): one request.
                outcome.upstream_trace.feedback = Some(previous);
                return;
            }
            previous.finished(outcome); // a failed attempt on another endpoint
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        outcome.upstream_trace.feedback = Some(Arc::clone(self) as Arc<dyn Feedback>);
    }
}

impl Feedback for EndpointLoad {
    fn finished(&self, outcome: &Outcome) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        let failed = outcome.status == 429 || outcome.status >= 500 || outcome.upstream_head.is_none();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match outcome.upstream_head {
            Some(head) if !failed => latency.observe(head, Instant::now()),
            _ => latency.observe_failure(Instant::now()),
        }
    }
}

/// The policy's algorithm for a configured `balance`.
pub(crate) fn algorithm(balance: &Balance) -> Algorithm {
    match balance {
        Balance::RoundRobin => Algorithm::RoundRobin,
        Balance::LeastRequest => Algorithm::LeastRequest,
        Balance::Ewma => Algorithm::Ewma,
        Balance::ConsistentHash(_) => Algorithm::ConsistentHash,
        Balance::Random => Algorithm::Random,
    }
}

/// The hash of a request's key for `consistent_hash`; None when the request has no
/// such header or cookie (it then goes to a random endpoint).
pub(crate) fn hash_key<B>(key: &HashKey, request: &Request<B>, client: SocketAddr) -> Option<u64> {
    match key {
        HashKey::Header(name) => request.headers().get(name.as_str()).map(|v| stable_hash(v.as_bytes())),
        HashKey::Cookie(name) => request
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| stable_hash(value.as_bytes())),
        HashKey::ClientIp => Some(match client.ip() {
            std::net::IpAddr::V4(ip) => stable_hash(&ip.octets()),
            std::net::IpAddr::V6(ip) => stable_hash(&ip.octets()),
        }),
        HashKey::Path => Some(stable_hash(request.uri().path().as_bytes())),
    }
}

/// Picks the first endpoint to try.
pub(crate) fn pick(balancer: &Balancer, loads: &[Arc<EndpointLoad>], key: Option<u64>) -> usize {
    balancer.pick(|i| loads[i].load(), key, &mut random)
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Per-thread xorshift64*: balancing needs speed and spread, not secrecy.
fn random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish() | 1
}
