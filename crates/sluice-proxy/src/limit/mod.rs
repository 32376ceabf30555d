//! Rate limits (`[rate_limit.NAME]`, attached to routes): GCRA per key
//! (`sluice_policy::rate`), counted in this process (`local`) or in Redis for every
//! instance (`redis`), with `on_store_error` when Redis does not answer in time.
//!
//! A policy's state outlives snapshots: the `RateRegistry` (one per process) keeps
//! each policy's bank and counters by name, and each Redis server's connection by URL,
//! so a reload that keeps a limit's name keeps its counts.

pub(crate) mod local;
mod redis;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};
use sluice_config::{MissingKey, RateKeyPart, RateLimitConfig, RateScope, StoreErrorPolicy};
use sluice_policy::balance::stable_hash;
use sluice_policy::rate::Gcra;

use crate::gate::Gate;
use local::{Bank, Leases, Taken};

/// What a policy has decided since start (kept across reloads, by name).
#[derive(Default)]
pub(crate) struct PolicyStats {
    pub(crate) admitted: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Decisions Redis did not make in time, so `on_store_error` did.
    pub(crate) store_fallbacks: AtomicU64,
}

/// A policy's state in this process.
#[derive(Default)]
pub(crate) struct PolicyState {
    bank: Bank,
    pub(crate) stats: PolicyStats,
}

/// One Redis server the global limits use, behind its gate.
pub(crate) struct Store {
    counts: redis::RedisCounts,
    pub(crate) gate: Gate,
}

/// The process's rate-limit state, by policy name and Redis URL.
#[derive(Default)]
pub(crate) struct RateRegistry {
    states: Mutex<HashMap<String, Arc<PolicyState>>>,
    stores: Mutex<HashMap<String, Arc<Store>>>,
}

impl RateRegistry {
    /// The policies of `configs`, on the states of the same names (made if new).
    pub(crate) fn policies(&self, configs: &[RateLimitConfig], workers: usize) -> Result<Vec<Arc<RatePolicy>>, String> {
        configs.iter().map(|config| self.policy(config, workers).map(Arc::new)).collect()
    }

    fn policy(&self, config: &RateLimitConfig, workers: usize) -> Result<RatePolicy, String> {
        let state =
            Arc::clone(self.states.lock().unwrap_or_else(|p| p.into_inner()).entry(config.name.clone()).or_default());
        let store = match &config.scope {
            RateScope::Local => None,
            RateScope::Global(link) => Some(self.store(link)?),
        };
        let gcra = Gcra::new(config.count, config.per, config.burst);
        let window = config.per.as_secs();
        let policy_field = HeaderValue::try_from(format!("\"{}\";q={};w={window}", config.name, config.count))
            .map_err(|_| format!("rate_limit.{}: the name cannot be sent in RateLimit-Policy", config.name))?;
        Ok(RatePolicy {
            name: Arc::from(config.name.as_str()),
            lease_key: Arc::as_ptr(&state) as usize,
            lease: local::lease_size(gcra.burst(), workers),
            gcra,
            parts: config.key.clone(),
            missing_key: config.missing_key,
            on_store_error: config.on_store_error,
            timeout: config.timeout,
            state,
            store,
            policy_field,
        })
    }

    fn store(&self, link: &sluice_config::RedisLink) -> Result<Arc<Store>, String> {
        let url = &link.url;
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(url) {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(Store {
            counts: redis::RedisCounts::new(link)?,
            gate: Gate::new("a global rate limit's Redis", Duration::from_millis(50), "limits apply on_store_error"),
        });
        stores.insert(url.to_string(), Arc::clone(&store));
        Ok(store)
    }

    /// Each policy's name and state, for metrics.
    pub(crate) fn states(&self) -> Vec<(String, Arc<PolicyState>)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = states.iter().map(|(name, state)| (name.clone(), Arc::clone(state))).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Redis failures since start, over every store.
    pub(crate) fn store_errors(&self) -> u64 {
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).values().map(|s| s.gate.errors()).sum()
    }
}

/// One rate limit, as a snapshot's routes use it.
pub(crate) struct RatePolicy {
    pub(crate) name: Arc<str>,
    /// What the workers' leases of it are kept under: its state's address, the same for
    /// as long as the state lives, whatever place a reload gives the limit in the file.
    lease_key: usize,
    gcra: Gcra,
    lease: u64,
    parts: Vec<RateKeyPart>,
    missing_key: MissingKey,
    on_store_error: StoreErrorPolicy,
    timeout: Duration,
    state: Arc<PolicyState>,
    store: Option<Arc<Store>>,
    /// `RateLimit-Policy`'s member for this limit.
    policy_field: HeaderValue,
}

/// What a request is counted by, and under which names.
pub(crate) struct Subject<'a> {
    pub(crate) headers: &'a HeaderMap,
    /// The client's address after `trusted_proxies`.
    pub(crate) client: IpAddr,
    pub(crate) route: &'a str,
    /// Who the route's `auth` says is calling, when it has one.
    pub(crate) identity: Option<&'a str>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the limit: 429.
    Rate,
    /// The key's header is missing and the policy refuses such requests: 400.
    MissingKey(String),
    /// Redis did not answer and the policy is `on_store_error = "closed"`: 503.
    StoreDown,
}

/// A refused request: why, when to come back, and the fields that say so.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) why: Refusal,
    pub(crate) retry_after: Duration,
    pub(crate) fields: RateFields,
}

/// `RateLimit-Policy` and `RateLimit` for a response (IETF httpapi draft: a member per
/// policy, `"name";q=COUNT;w=SECONDS` and `"name";r=REMAINING;t=SECONDS`).
#[derive(Debug, Default)]
pub(crate) struct RateFields {
    policy: BytesMut,
    state: BytesMut,
}

impl RateFields {
    fn add(&mut self, policy: &RatePolicy, remaining: u64, reset: Duration) {
        if !self.policy.is_empty() {
            self.policy.extend_from_slice(b", ");
            self.state.extend_from_slice(b", ");
        }
        self.policy.extend_from_slice(policy.policy_field.as_bytes());
        let state = format!("\"{}\";r={remaining};t={}", policy.name, seconds_up(reset));
        self.state.extend_from_slice(state.as_bytes());
    }

    /// Writes the fields into `headers` (none when no policy applied).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if self.policy.is_empty() {
            return;
        }
        let fields = [("ratelimit-policy", &self.policy), ("ratelimit", &self.state)];
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(http::HeaderName::from_static(name), value);
            }
        }
    }
}

/// Whole seconds, rounded up (a client told 0 would come back at once).
pub(crate) fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Applies `policies` in order to one request: the fields to send with its response, or
/// the first refusal. `leases`: this worker's.
pub(crate) async fn check(
    policies: &[Arc<RatePolicy>],
    subject: &Subject<'_>,
    leases: &Leases,
) -> Result<RateFields, Refused> {
    let mut fields = RateFields::default();
    for policy in policies {
        match policy.decide(subject, leases).await {
            Ok(Taken::Admitted { remaining, until_full }) => {
                policy.state.stats.admitted.fetch_add(1, Ordering::Relaxed);
                fields.add(policy, remaining, until_full);
            }
            Ok(Taken::Refused { retry_after }) => {
                policy.state.stats.refused.fetch_add(1, Ordering::Relaxed);
                fields.add(policy, 0, retry_after);
                return Err(Refused { why: Refusal::Rate, retry_after, fields });
            }
            Err(why) => {
                policy.state.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refused { why, retry_after: Duration::from_secs(1), fields });
            }
        }
    }
    Ok(fields)
}

impl RatePolicy {
    async fn decide(&self, subject: &Subject<'_>, leases: &Leases) -> Result<Taken, Refusal> {
        let key = self.key(subject)?;
        let Some(store) = &self.store else {
            return Ok(leases.take(self.lease_key, &self.state.bank, &self.gcra, key.local, self.lease));
        };
        let interval_us = self.gcra.interval().as_micros() as u64;
        let tolerance_us = interval_us * (self.gcra.burst() - 1);
        let decided = match store.gate.open() {
            true => store.gate.within(self.timeout, store.counts.decide(&key.global, interval_us, tolerance_us)).await,
            false => None,
        };
        if let Some(taken) = decided {
            return Ok(taken);
        }
        self.state.stats.store_fallbacks.fetch_add(1, Ordering::Relaxed);
        match self.on_store_error {
            StoreErrorPolicy::Local => {
                Ok(leases.take(self.lease_key, &self.state.bank, &self.gcra, key.local, self.lease))
            }
            StoreErrorPolicy::Open => Ok(Taken::Admitted { remaining: self.gcra.burst(), until_full: Duration::ZERO }),
            StoreErrorPolicy::Closed => Err(Refusal::StoreDown),
        }
    }

    /// The request's key under this policy: its parts joined, hashed (the local map's
    /// key) and named for Redis. A missing header is counted under one shared value, or
    /// refused.
    fn key(&self, subject: &Subject<'_>) -> Result<Key, Refusal> {
        let mut joined = Vec::with_capacity(64);
        for part in &self.parts {
            match part {
                RateKeyPart::ClientIp => crate::outcome::format::ip(&mut joined, subject.client),
                RateKeyPart::Route => joined.extend_from_slice(subject.route.as_bytes()),
                RateKeyPart::Identity => match subject.identity {
                    Some(identity) => joined.extend_from_slice(identity.as_bytes()),
                    None if self.missing_key == MissingKey::Refuse => {
                        return Err(Refusal::MissingKey("identity".into()))
                    }
                    None => joined.push(0),
                },
                RateKeyPart::Header(name) => match subject.headers.get(name.as_str()) {
                    Some(value) => joined.extend_from_slice(value.as_bytes()),
                    None if self.missing_key == MissingKey::Refuse => return Err(Refusal::MissingKey(name.clone())),
                    // A byte no header value holds: apart from any value sent.
                    None => joined.push(0),
                },
            }
            joined.push(0x1f);
        }
        // 128 bits in Redis (every instance computes the same), the first 64 locally.
        let first = stable_hash(&joined);
        joined.push(0xff);
        let second = stable_hash(&joined);
        Ok(Key { local: first, global: format!("sluice:rl:{}:{first:016x}{second:016x}", self.name) })
    }
}

struct Key {
    local: u64,
    global: String,
}
