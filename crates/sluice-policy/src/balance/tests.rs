use std::time::{Duration, Instant};

use super::*;

/// A deterministic random source (xorshift64*), so the statistics are reproducible.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.max(1);
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn idle(_: usize) -> Load {
    Load { outstanding: 0, latency: 0.01, healthy: true, weight_factor: 1.0 }
}

fn shares(balancer: &Balancer, picks: usize, load: impl Fn(usize) -> Load) -> Vec<f64> {
    let mut random = rng(7);
    let mut counts = vec![0usize; balancer.len()];
    for i in 0..picks {
        counts[balancer.pick(&load, Some(stable_hash(&i.to_le_bytes())), &mut random)] += 1;
    }
    counts.iter().map(|c| *c as f64 / picks as f64).collect()
}

#[test]
fn smooth_round_robin_spreads_a_heavy_endpoint_instead_of_bursting() {
    let b = Balancer::new(Algorithm::RoundRobin, &[5, 1, 1], &["a", "b", "c"]);
    let mut random = rng(1);
    let picks: Vec<usize> = (0..7).map(|_| b.pick(idle, None, &mut random)).collect();
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0], "nginx's sequence a a b a c a a");
    let s = shares(&b, 7_000, idle);
    assert!((s[0] - 5.0 / 7.0).abs() < 1e-9 && (s[1] - 1.0 / 7.0).abs() < 1e-9);
}

#[test]
fn weights_hold_within_tolerance_for_every_algorithm_on_idle_endpoints() {
    for algorithm in [Algorithm::RoundRobin, Algorithm::Random, Algorithm::ConsistentHash] {
        let b = Balancer::new(algorithm, &[3, 1], &["10.0.0.1:80", "10.0.0.2:80"]);
        let s = shares(&b, 40_000, idle);
        assert!((s[0] - 0.75).abs() < 0.02, "{algorithm:?}: {s:?}");
    }
}

#[test]
fn least_request_keeps_a_busy_endpoints_share_low() {
    let b = Balancer::new(Algorithm::LeastRequest, &[1, 1, 1], &["a", "b", "c"]);
    // Endpoint 2 has 10 requests outstanding (it is slow); the others 1.
    let s = shares(&b, 30_000, |i| Load {
        outstanding: if i == 2 { 10 } else { 1 },
        latency: 0.0,
        healthy: true,
        weight_factor: 1.0,
    });
    // With two choices it is picked only when both draws land on it: never, as they
    // are distinct.
    assert!(s[2] < 0.01, "{s:?}");
    assert!((s[0] - 0.5).abs() < 0.03, "{s:?}");
}

#[test]
fn ewma_prefers_the_fast_endpoint_and_weighs_outstanding_requests() {
    let b = Balancer::new(Algorithm::Ewma, &[1, 1], &["a", "b"]);
    let s = shares(&b, 10_000, |i| Load {
        outstanding: 0,
        latency: if i == 0 { 0.001 } else { 0.010 },
        healthy: true,
        weight_factor: 1.0,
    });
    assert!(s[0] > 0.99, "{s:?}");
    // Ten times faster but 20 requests queued on it: the slower, idle one wins.
    let s = shares(&b, 10_000, |i| Load {
        outstanding: if i == 0 { 20 } else { 0 },
        latency: if i == 0 { 0.001 } else { 0.010 },
        healthy: true,
        weight_factor: 1.0,
    });
    assert!(s[1] > 0.99, "{s:?}");
}

#[test]
fn a_backend_that_fails_fast_is_penalised_not_rewarded() {
    let start = Instant::now();
    let (mut healthy, mut failing) = (PeakEwma::new(start), PeakEwma::new(start));
    // 200 requests each over a second: the healthy one answers in 5 ms, the failing
    // one fails in 0.1 ms.
    for i in 0..200u32 {
        let now = start + Duration::from_millis(5 * u64::from(i));
        healthy.observe(Duration::from_millis(5), now);
        failing.observe_failure(now);
    }
    // It loses every two-choice comparison, even against a healthy endpoint with two
    // requests outstanding (cost × 3).
    assert!(failing.get() > 3.0 * healthy.get(), "failing {} vs healthy {}", failing.get(), healthy.get());
    // One failure in a healthy stream barely moves the estimate.
    let mut mostly_fine = healthy;
    mostly_fine.observe_failure(start + Duration::from_secs(2));
    let moved = mostly_fine.get() - healthy.get();
    assert!(moved > 0.0 && moved < 0.005, "one failure moved it {moved} s");
}

#[test]
fn peak_ewma_rises_at_once_and_decays_gradually() {
    let start = Instant::now();
    let mut e = PeakEwma::new(start);
    e.observe(Duration::from_millis(200), start);
    assert!((e.get() - 0.2).abs() < 1e-9, "a slow response is taken at once");
    e.observe(Duration::from_millis(1), start + ewma::DECAY);
    assert!((e.get() - (0.2 * (-1.0f64).exp() + 0.001 * (1.0 - (-1.0f64).exp()))).abs() < 1e-6);
}

#[test]
fn consistent_hash_sends_a_key_to_one_endpoint_always() {
    let names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
    let b = Balancer::new(Algorithm::ConsistentHash, &[1, 1, 1], &names);
    let again = Balancer::new(Algorithm::ConsistentHash, &[1, 1, 1], &names);
    let mut random = rng(3);
    for user in 0..1_000u32 {
        let key = Some(stable_hash(format!("user-{user}").as_bytes()));
        let first = b.pick(idle, key, &mut random);
        assert_eq!(b.pick(idle, key, &mut random), first);
        assert_eq!(again.pick(idle, key, &mut random), first, "another instance agrees");
    }
}

/// Keys whose endpoint changed between two tables, as a share of all keys.
fn moved(before: &[&str], after: &[&str], keys: u32) -> f64 {
    let a = Maglev::new(before, &vec![1; before.len()]);
    let b = Maglev::new(after, &vec![1; after.len()]);
    let changed = (0..keys)
        .filter(|k| {
            let key = stable_hash(&k.to_le_bytes());
            before[a.lookup(key)] != after[b.lookup(key)]
        })
        .count();
    changed as f64 / f64::from(keys)
}

#[test]
fn adding_or_removing_one_of_n_endpoints_moves_about_one_nth_of_the_keys() {
    let names: Vec<String> = (1..=11).map(|i| format!("10.0.0.{i}:8080")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    for n in [3usize, 5, 10] {
        let before = &all[..n];
        let grown = &all[..n + 1];
        let added = moved(before, grown, 100_000);
        let ideal = 1.0 / (n + 1) as f64;
        assert!(added >= ideal * 0.8 && added <= ideal * 1.25, "adding to {n}: {added:.3} moved, ideal {ideal:.3}");
        let mut shrunk = before.to_vec();
        shrunk.remove(n / 2);
        let removed = moved(before, &shrunk, 100_000);
        let ideal = 1.0 / n as f64;
        assert!(removed >= ideal * 0.8 && removed <= ideal * 1.25, "removing of {n}: {removed:.3}, ideal {ideal:.3}");
    }
}

#[test]
fn failover_order_starts_at_the_choice_and_visits_every_endpoint_once() {
    let b = Balancer::new(Algorithm::Random, &[1, 1, 1], &["a", "b", "c"]);
    assert_eq!(b.order(1).collect::<Vec<_>>(), vec![1, 2, 0]);
    let single = Balancer::new(Algorithm::LeastRequest, &[1], &["a"]);
    assert_eq!(single.pick(idle, None, &mut rng(1)), 0);
}

#[test]
fn unhealthy_endpoints_are_skipped_by_every_algorithm_unless_none_is_healthy() {
    let names = ["a", "b", "c"];
    let down = |i: usize| Load { outstanding: 0, latency: 0.01, healthy: i != 1, weight_factor: 1.0 };
    for algorithm in
        [Algorithm::RoundRobin, Algorithm::LeastRequest, Algorithm::Ewma, Algorithm::ConsistentHash, Algorithm::Random]
    {
        let b = Balancer::new(algorithm, &[1, 1, 1], &names);
        let s = shares(&b, 3_000, down);
        assert_eq!(s[1], 0.0, "{algorithm:?} never picks the unhealthy one: {s:?}");
        assert!(s[0] > 0.3 && s[2] > 0.3, "{algorithm:?}: {s:?}");
        let panic = shares(&b, 3_000, |_| Load { outstanding: 0, latency: 0.01, healthy: false, weight_factor: 1.0 });
        assert!(panic.iter().all(|s| *s > 0.2), "{algorithm:?}: with none healthy, all are used: {panic:?}");
    }
}

#[test]
fn consistent_hash_keeps_the_keys_of_healthy_endpoints_in_place_when_one_is_down() {
    let names = ["a", "b", "c"];
    let b = Balancer::new(Algorithm::ConsistentHash, &[1, 1, 1], &names);
    let mut random = rng(5);
    for k in 0..2_000u32 {
        let key = Some(stable_hash(&k.to_le_bytes()));
        let before = b.pick(idle, key, &mut random);
        let after =
            b.pick(|i| Load { outstanding: 0, latency: 0.01, healthy: i != 2, weight_factor: 1.0 }, key, &mut random);
        if before != 2 {
            assert_eq!(after, before, "key {k} moved though its endpoint is healthy");
        } else {
            assert_ne!(after, 2);
        }
    }
}

#[test]
fn a_slow_starting_endpoint_gets_its_ramped_share_of_traffic() {
    let ramping =
        |i: usize| Load { outstanding: 0, latency: 0.01, healthy: true, weight_factor: if i == 2 { 0.1 } else { 1.0 } };
    for algorithm in [Algorithm::RoundRobin, Algorithm::Random, Algorithm::LeastRequest] {
        let b = Balancer::new(algorithm, &[1, 1, 1], &["a", "b", "c"]);
        let s = shares(&b, 21_000, ramping);
        // Weights 1 : 1 : 0.1 give the third 0.1 / 2.1 of the draws (4.8%).
        assert!(s[2] < 0.06 && s[2] > 0.0, "{algorithm:?}: {s:?}");
    }
}
