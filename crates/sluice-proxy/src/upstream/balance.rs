//! A group's balancer (`sluice_policy::balance`) and what it learns from outcome
//! records: per endpoint, the requests outstanding, a peak-EWMA latency, and passive
//! health (ejection after failures in a row, `sluice_policy::health`). A request
//! counts as outstanding from the moment it takes a connection until its record ends
//! (the response's last byte, or its failure), and its record tells the latency of the
//! response head, or that it failed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::outcome::series::{bucket_of, BUCKET_COUNT};

use http::Request;
use sluice_config::{Balance, HashKey, OutlierSettings};
use sluice_policy::balance::{stable_hash, Algorithm, Balancer, Load, PeakEwma};
use sluice_policy::health::{Outlier, OutlierRules, Verdict};

use super::active::ActiveHealth;
use crate::outcome::{Feedback, Outcome};

/// The passive health of a group's endpoints (`sluice_policy::health`), fed by the
/// records of their requests.
pub(crate) struct GroupHealth {
    group: Arc<str>,
    labels: Vec<Arc<str>>,
    /// None: ejection is off (`consecutive_failures = 0`).
    rules: Option<OutlierRules>,
    outliers: Mutex<Vec<Outlier>>,
    /// Set when an endpoint is ejected: until then nobody needs the clock or the lock.
    maybe_ejected: AtomicBool,
    /// When panic mode was last logged, rate-limiting it.
    panic_logged: Mutex<Option<Instant>>,
    /// Active checks' verdicts, when configured.
    active: Option<Arc<ActiveHealth>>,
    /// An endpoint back in rotation ramps up over this long (zero: off).
    slow_start: Duration,
    /// The group's recent response-head latencies, kept only for `hedge_after = "p95"`.
    recent: Option<Mutex<Recent>>,
}

/// The last `RECENT` head latencies (µs) and their p95, recomputed every 32.
struct Recent {
    ring: Vec<u32>,
    next: usize,
    since: usize,
    p95: Option<Duration>,
}

const RECENT: usize = 256;

impl GroupHealth {
    pub(crate) fn new(
        group: Arc<str>,
        labels: Vec<Arc<str>>,
        settings: &OutlierSettings,
        active: Option<Arc<ActiveHealth>>,
        slow_start: Duration,
        track_latency: bool,
    ) -> Arc<Self> {
        let rules = (settings.consecutive_failures > 0).then_some(OutlierRules {
            consecutive_failures: settings.consecutive_failures,
            base_ejection: settings.base_ejection,
            max_ejected_percent: settings.max_ejected_percent,
        });
        Arc::new(GroupHealth {
            outliers: Mutex::new(vec![Outlier::default(); labels.len()]),
            group,
            labels,
            rules,
            maybe_ejected: AtomicBool::new(false),
            panic_logged: Mutex::new(None),
            active,
            slow_start,
            recent: track_latency
                .then(|| Mutex::new(Recent { ring: Vec::with_capacity(RECENT), next: 0, since: 0, p95: None })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Outlier>> {
        self.outliers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn healthy(&self, index: usize) -> bool {
        if let Some(active) = &self.active {
            if !active.healthy(index) {
                return false;
            }
            if active.take_recovered(index) {
                // Checks pass again: any passive ejection ends, and slow start counts from now.
                self.lock()[index].reinstate(Instant::now());
            }
        }
        if !self.maybe_ejected.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        let outliers = self.lock();
        if outliers.iter().all(|o| !o.is_ejected(now)) {
            self.maybe_ejected.store(false, Ordering::Relaxed);
        }
        !outliers[index].is_ejected(now)
    }

    /// Slow start: the share of its weight endpoint `index` has, back in rotation since
    /// `back` ago: 10% at once, growing linearly to all of it over `slow_start`.
    fn weight_factor(&self, index: usize) -> f64 {
        if self.slow_start.is_zero() {
            return 1.0;
        }
        let now = Instant::now();
        let Some(back) = self.lock()[index].back_since(now) else { return 1.0 };
        let ramp = now.duration_since(back).as_secs_f64() / self.slow_start.as_secs_f64();
        ramp.clamp(0.1, 1.0)
    }

    /// A successful response head took `latency` (for the group's p95).
    fn observe_latency(&self, latency: Duration) {
        let Some(recent) = &self.recent else { return };
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.ring.len() < RECENT {
            recent.ring.push(micros);
        } else {
            let at = recent.next;
            recent.ring[at] = micros;
        }
        recent.next = (recent.next + 1) % RECENT;
        recent.since += 1;
        if recent.since >= 32 {
            recent.since = 0;
            let mut sorted = recent.ring.clone();
            let at = (sorted.len() * 95 / 100).min(sorted.len() - 1);
            let (_, p95, _) = sorted.select_nth_unstable(at);
            recent.p95 = Some(Duration::from_micros(u64::from(*p95)));
        }
    }

    /// The group's recent p95 head latency; None before 32 responses.
    pub(crate) fn p95(&self) -> Option<Duration> {
        self.recent.as_ref()?.lock().unwrap_or_else(|p| p.into_inner()).p95
    }

    /// How a request to endpoint `index` went, for ejection.
    fn record(&self, index: usize, failed: bool) {
        let Some(rules) = &self.rules else { return };
        let mut outliers = self.lock();
        if !failed {
            outliers[index].success();
            return;
        }
        let now = Instant::now();
        let ejected_now = outliers.iter().filter(|o| o.is_ejected(now)).count();
        let group = outliers.len();
        if let Verdict::Ejected(time) = outliers[index].failure(now, rules, ejected_now, group) {
            if let Some(active) = &self.active {
                active.take_recovered(index); // a recovery before this ejection does not end it
            }
            self.maybe_ejected.store(true, Ordering::Relaxed);
            tracing::warn!(
                upstream = %self.group,
                endpoint = %self.labels[index],
                ejected_for = ?time,
                consecutive_failures = rules.consecutive_failures,
                "endpoint ejected after failing requests in a row; the others take its share"
            );
        }
    }

    /// Logs (at most every 10 s) that every endpoint is unhealthy and all are used anyway.
    fn note_panic(&self) {
        let mut last = self.panic_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(upstream = %self.group, "panic mode: every endpoint is ejected or unhealthy; trying them all rather than failing every request");
        }
    }
}

/// One endpoint as the balancer sees it.
pub(crate) struct EndpointLoad {
    outstanding: AtomicU32,
    /// Response head times of this worker's requests to the endpoint, per bucket, since
    /// start (the status page's per-endpoint p50 and p99 of the last minute). Kept by
    /// the worker that owns this load: no cache line shared with another core.
    latency_counts: [AtomicU64; BUCKET_COUNT],
    /// Peak-EWMA latency, kept only for `ewma` groups (the only algorithm that reads it).
    latency: Option<Mutex<PeakEwma>>,
    health: Arc<GroupHealth>,
    index: usize,
}

impl EndpointLoad {
    pub(crate) fn new(health: &Arc<GroupHealth>, index: usize, ewma: bool) -> Arc<Self> {
        Arc::new(EndpointLoad {
            outstanding: AtomicU32::new(0),
            latency_counts: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: ewma.then(|| Mutex::new(PeakEwma::new(Instant::now()))),
            health: Arc::clone(health),
            index,
        })
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed) as usize
    }

    /// Response head times since start, per bucket of the request series.
    pub(crate) fn latency_counts(&self) -> [u64; BUCKET_COUNT] {
        std::array::from_fn(|i| self.latency_counts[i].load(Ordering::Relaxed))
    }

    /// The endpoint's load now (its latency 0 where it is not kept).
    pub(crate) fn load(&self) -> Load {
        let latency = self.latency.as_ref().map_or(0.0, |ewma| ewma.lock().unwrap_or_else(|p| p.into_inner()).get());
        Load {
            outstanding: self.outstanding.load(Ordering::Relaxed),
            latency,
            healthy: self.health.healthy(self.index),
            weight_factor: self.health.weight_factor(self.index),
        }
    }

    /// A request now uses this endpoint; its record will call `finished`.
    pub(crate) fn begin(self: &Arc<Self>, outcome: &mut Outcome) {
        if let Some(previous) = outcome.upstream_trace.feedback.take() {
            if std::ptr::addr_eq(Arc::as_ptr(&previous), Arc::as_ptr(self)) {
                // Another connection to the same endpoint (a stale pooled one): one request.
                outcome.upstream_trace.feedback = Some(previous);
                return;
            }
            previous.attempt_failed(); // the connect failed; the request moved on
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        outcome.upstream_trace.feedback = Some(Arc::clone(self) as Arc<dyn Feedback>);
    }

    /// The request ended. `latency`: the response head's time, or Err for a failure
    /// (counted as slow), or None (nothing learnt); `broken`: for ejection, whether the
    /// endpoint failed it (None: neither way).
    fn end(&self, latency: Option<Result<Duration, ()>>, broken: Option<bool>) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(Ok(latency)) = latency {
            self.health.observe_latency(latency);
            self.latency_counts[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(latency), Some(ewma)) = (latency, &self.latency) {
            let mut ewma = ewma.lock().unwrap_or_else(|p| p.into_inner());
            match latency {
                Ok(latency) => ewma.observe(latency, Instant::now()),
                Err(()) => ewma.observe_failure(Instant::now()),
            }
        }
        if let Some(broken) = broken {
            self.health.record(self.index, broken);
        }
    }
}

impl Feedback for EndpointLoad {
    fn finished(&self, outcome: &Outcome) {
        // What sluice decided locally, or the client caused, says nothing of the endpoint.
        let local = outcome.error.is_some_and(|e| {
            e.starts_with("client_")
                || e == "upstream_queue_timeout"
                || e == "upstream_paced"
                || e == "upstream_overloaded"
        });
        let broken = outcome.status >= 500 || outcome.error.is_some_and(|e| e.starts_with("upstream_"));
        match (local, broken, outcome.status, outcome.upstream_head) {
            (true, ..) => self.end(None, None),
            (false, true, ..) => self.end(Some(Err(())), Some(true)),
            // Overloaded, not broken: slow for the balancer, no step towards ejection.
            (false, false, 429, _) => self.end(Some(Err(())), None),
            (false, false, _, Some(head)) => self.end(Some(Ok(head)), Some(false)),
            // Ended before the upstream answered, for the client's reasons.
            (false, false, _, None) => self.end(None, None),
        }
    }

    fn attempt_failed(&self) {
        self.end(Some(Err(())), Some(true));
    }

    fn cancelled(&self) {
        self.end(None, None);
    }
}

/// A hedged copy's hold on an endpoint: outstanding while it runs; it becomes the
/// record's feedback if it wins, and ends neutrally (a cancelled race) if it loses.
pub(crate) struct Hedge(Option<Arc<EndpointLoad>>);

impl EndpointLoad {
    pub(crate) fn begin_hedge(self: &Arc<Self>) -> Hedge {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Hedge(Some(Arc::clone(self)))
    }
}

impl Hedge {
    /// The hedged copy won: the record now reports to its endpoint, and the first
    /// attempt's endpoint is told its request was cancelled.
    pub(crate) fn won(mut self, outcome: &mut Outcome) {
        if let Some(load) = self.0.take() {
            if let Some(first) = outcome.upstream_trace.feedback.replace(load as Arc<dyn Feedback>) {
                first.cancelled();
            }
        }
    }
}

impl Drop for Hedge {
    fn drop(&mut self) {
        if let Some(load) = self.0.take() {
            load.cancelled();
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

/// Picks the first endpoint to try. Each endpoint's load is read once per pick (the
/// balancer may look at it several times), into this thread's scratch space.
pub(crate) fn pick(balancer: &Balancer, loads: &[Arc<EndpointLoad>], key: Option<u64>) -> usize {
    if loads.len() <= 1 {
        return 0;
    }
    SCRATCH.with(|scratch| {
        let mut seen = scratch.borrow_mut();
        seen.clear();
        seen.extend(loads.iter().map(|l| l.load()));
        if seen.iter().all(|l| !l.healthy) {
            if let Some(first) = loads.first() {
                first.health.note_panic();
            }
        }
        balancer.pick(|i| seen[i], key, &mut random)
    })
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
    static SCRATCH: std::cell::RefCell<Vec<Load>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-thread xorshift64*: balancing needs speed and spread, not secrecy.
pub(crate) fn random() -> u64 {
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
