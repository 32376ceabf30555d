//! The concurrency models (`server.model`), as a user sees them: per-core workers are
//! threads of their own that each accept and serve (the access log names the worker),
//! an upstream's connection cap holds across workers, and work-stealing still serves.
//! (The whole suite runs in both models: scripts/test.sh sets SLUICE_TEST_MODEL.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::upstream::{full, Upstream};
use support::{simple_config, with_access_log, Sluice};

fn config(model: &str, workers: usize, upstream: &Upstream, extra: &str) -> String {
    let base = simple_config(&[upstream.addr], extra);
    with_access_log(&format!("[server]\nmodel = \"{model}\"\nworker_threads = {workers}\n\n{base}"))
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// `n` requests, each on a connection of its own, all at once; their statuses.
async fn one_request_per_connection(sluice: &Sluice, n: usize) -> Vec<u16> {
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let addr = sluice.addr;
            tokio::spawn(async move { support::client::get_once(addr, &format!("/r{i}")).await.0.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("request"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_workers_are_threads_that_each_accept_and_serve() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config("per-core", 2, &upstream, ""));
    let names = thread_names(sluice.pid());
    for worker in ["sluice-worker-0", "sluice-worker-1"] {
        assert!(names.iter().any(|n| n == worker), "a thread named {worker}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("tokio-r")), "no work-stealing pool: {names:?}");
    let statuses = one_request_per_connection(&sluice, 64).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let records = sluice.records(64);
    let served_by = |w: u64| records.iter().filter(|r| r["worker"] == w).count();
    // SO_REUSEPORT spreads connections by their addresses: 64 connections all landing
    // on one of two workers has a chance of 2^-63.
    assert!(served_by(0) > 0 && served_by(1) > 0, "both workers served: {} and {}", served_by(0), served_by(1));
    assert_eq!(served_by(0) + served_by(1), 64);
    assert!(sluice.log().contains("model=\"per-core\" workers=2"), "the model is logged at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_connection_cap_holds_across_per_core_workers() {
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let upstream = {
        let (active, peak) = (Arc::clone(&active), Arc::clone(&peak));
        Upstream::start(move |_: Request<Incoming>| {
            let (active, peak) = (Arc::clone(&active), Arc::clone(&peak));
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await; // each request takes this long
                active.fetch_sub(1, Ordering::SeqCst);
                Response::new(full("slow"))
            }
        })
        .await
    };
    let pool = "pool = { max_connections = 2 }\nqueue_timeout = \"5s\"";
    let sluice = Sluice::start(&config("per-core", 2, &upstream, pool));
    let statuses = one_request_per_connection(&sluice, 16).await;
    assert!(statuses.iter().all(|s| *s == 200), "every request waited for a connection and got one: {statuses:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 2, "at most 2 requests at the upstream at once, for both workers together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stealing_serves_on_tokios_pool() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&config("work-stealing", 2, &upstream, ""));
    let statuses = one_request_per_connection(&sluice, 16).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let names = thread_names(sluice.pid());
    assert!(names.iter().any(|n| n.starts_with("tokio-r")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("sluice-worker")), "{names:?}");
    assert!(sluice.records(16).iter().all(|r| r["worker"] == 0));
}
