//! Adaptive concurrency against a backend of known capacity: it serves 5 requests at
//! once, 20 ms each (250/s), queues the rest, and thrashes (every request slower) once
//! more than 10 are inside it. Offered 3× its capacity, sluice with
//! `[upstream.NAME.adaptive]` keeps goodput near the capacity and the admitted
//! requests' p99 near the unloaded one, refusing the excess at once; without it, the
//! backend collapses. Sheddable requests are refused before critical ones.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::client::{self, send1};
use support::upstream::{full, Upstream};
use support::Sluice;
use tokio::sync::Semaphore;

const CAPACITY: u32 = 5;
const SERVICE: Duration = Duration::from_millis(20);
const CAPACITY_PER_SECOND: f64 = CAPACITY as f64 / 0.020;

async fn backend() -> Upstream {
    let slots = Arc::new(Semaphore::new(CAPACITY as usize));
    let inside = Arc::new(AtomicU32::new(0));
    Upstream::start(move |_: Request<Incoming>| {
        let (slots, inside) = (Arc::clone(&slots), Arc::clone(&inside));
        async move {
            let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
            let thrash = 1.0 + 0.05 * f64::from(now_inside.saturating_sub(2 * CAPACITY));
            {
                let _slot = slots.acquire().await.expect("semaphore");
                tokio::time::sleep(SERVICE.mul_f64(thrash)).await; // the backend's work
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            Response::new(full("ok"))
        }
    })
    .await
}

fn config(upstream: SocketAddr, adaptive: bool) -> String {
    let limit = if adaptive { "[upstream.up.adaptive]\ninitial_limit = 20\n" } else { "" };
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[route]]\nupstream = \"up\"\ntimeout = \"3s\"\n\n\
         [upstream.up]\nendpoints = [\"{upstream}\"]\nqueue_timeout = \"2ms\"\n{limit}"
    )
}

/// Latencies of 200s, and counts of 503s and anything else, from `from` on.
#[derive(Default)]
struct Seen {
    ok: Vec<Duration>,
    shed: u64,
    other: u64,
}

/// `clients` connections, each sending a GET every `every` until `until`; what was
/// seen from `from` on. Offered rate: clients / every.
async fn offer(addr: SocketAddr, clients: usize, every: Duration, from: Instant, until: Instant) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    for i in 0..clients {
        let seen = Arc::clone(&seen);
        // Staggered: clients in step would arrive 75 at once every `every`.
        let first = start + every.mul_f64(i as f64 / clients as f64);
        tasks.push(tokio::spawn(async move {
            let mut conn = client::h1(addr).await;
            let mut tick = tokio::time::interval_at(first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while Instant::now() < until {
                tick.tick().await;
                let sent = Instant::now();
                let (parts, _) = send1(&mut conn, client::get("/")).await;
                if sent < from {
                    continue;
                }
                let mut seen = seen.lock().expect("lock");
                match parts.status {
                    StatusCode::OK => seen.ok.push(sent.elapsed()),
                    StatusCode::SERVICE_UNAVAILABLE => seen.shed += 1,
                    _ => seen.other += 1,
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    Arc::try_unwrap(seen).ok().expect("clients done").into_inner().expect("lock")
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// The unloaded p99: one client, one request at a time.
async fn unloaded_p99(addr: SocketAddr) -> Duration {
    let mut conn = client::h1(addr).await;
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let sent = Instant::now();
        assert_eq!(send1(&mut conn, client::get("/")).await.0.status, StatusCode::OK);
        latencies.push(sent.elapsed());
    }
    p99(&mut latencies)
}

/// 3× the capacity for 6 s (75 clients at 10/s), measured over the last 4.
async fn overload(sluice: &Sluice) -> (f64, Seen) {
    let start = Instant::now();
    let from = start + Duration::from_secs(2);
    let until = from + Duration::from_secs(4);
    let seen = offer(sluice.addr, 75, Duration::from_millis(100), from, until).await;
    let goodput = seen.ok.len() as f64 / until.saturating_duration_since(from).as_secs_f64();
    (goodput, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_adaptive_concurrency_goodput_holds_and_admitted_latency_stays_near_unloaded() {
    let upstream = backend().await;
    let sluice = Sluice::start(&config(upstream.addr, true));
    let unloaded = unloaded_p99(sluice.addr).await;
    let (goodput, mut seen) = overload(&sluice).await;
    let admitted_p99 = p99(&mut seen.ok);
    assert_eq!(seen.other, 0, "only 200 and 503");
    assert!(seen.shed > 0, "the excess was refused");
    eprintln!(
        "adaptive: goodput {goodput:.0}/s, admitted p99 {admitted_p99:?}, unloaded p99 {unloaded:?}, {} shed",
        seen.shed
    );
    assert!(
        goodput >= 0.9 * CAPACITY_PER_SECOND,
        "goodput {goodput:.0}/s of a capacity of {CAPACITY_PER_SECOND:.0}/s ({} shed)",
        seen.shed
    );
    assert!(
        admitted_p99 <= unloaded * 2,
        "admitted p99 {admitted_p99:?} against {unloaded:?} unloaded (goodput {goodput:.0}/s)"
    );
    let page = support::metrics(&sluice).await;
    assert!(page.contains("sluice_upstream_adaptive_limit{upstream=\"up\"}"), "{page}");
    let shed = page.lines().find(|l| l.starts_with("sluice_requests_shed_total{limit=\"adaptive\"}")).expect("series");
    assert!(!shed.ends_with(" 0"), "{shed}");
}

/// The contrast: the same load without the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_it_the_same_overload_collapses_the_backend() {
    let upstream = backend().await;
    let sluice = Sluice::start(&config(upstream.addr, false));
    let unloaded = unloaded_p99(sluice.addr).await;
    let (goodput, mut seen) = overload(&sluice).await;
    let admitted_p99 = p99(&mut seen.ok);
    eprintln!("without: goodput {goodput:.0}/s, admitted p99 {admitted_p99:?}, unloaded p99 {unloaded:?}");
    assert!(
        goodput < 0.5 * CAPACITY_PER_SECOND && admitted_p99 > unloaded * 10,
        "expected a collapse: goodput {goodput:.0}/s, p99 {admitted_p99:?} (unloaded {unloaded:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_sheddable_requests_are_refused_and_critical_ones_wait_their_turn() {
    let release = Arc::new(tokio::sync::Notify::new());
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overlapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (held, seen_released, seen_overlap) = (Arc::clone(&release), Arc::clone(&released), Arc::clone(&overlapped));
    let upstream = Upstream::start(move |request: Request<Incoming>| {
        let (held, released, overlapped) = (Arc::clone(&held), Arc::clone(&seen_released), Arc::clone(&seen_overlap));
        async move {
            match request.uri().path() {
                "/hold" => held.notified().await,
                // Reaching the upstream while /hold still holds the only place breaks the limit.
                _ if !released.load(Ordering::SeqCst) => overlapped.store(true, Ordering::SeqCst),
                _ => {}
            }
            Response::new(full("ok"))
        }
    })
    .await;
    // One worker, a limit of one: the held request fills it.
    let config = format!(
        "[server]\nworker_threads = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\npath_prefix = \"/batch\"\nupstream = \"up\"\npriority = \"sheddable\"\n\
         [[route]]\nupstream = \"up\"\npriority_header = \"x-priority\"\n\
         [upstream.up]\nendpoints = [\"{}\"]\nqueue_timeout = \"5s\"\n\
         [upstream.up.adaptive]\ninitial_limit = 1\nmin_limit = 1\nmax_limit = 1\n",
        upstream.addr
    );
    let sluice = Sluice::start(&support::with_access_log(&config));
    let addr = sluice.addr;
    let holder = tokio::spawn(async move { client::get_once(addr, "/hold").await.0.status });
    upstream.wait_accepted(1).await;
    // A sheddable route, and a request that says it is sheddable: refused at once.
    let started = Instant::now();
    let (batch, _) = client::get_once(sluice.addr, "/batch/x").await;
    let marked = Request::get("/x").header("host", "t").header("x-priority", "sheddable").body(full(""));
    let (said, _) = send1(&mut client::h1(sluice.addr).await, marked.expect("request")).await;
    assert_eq!((batch.status, said.status), (StatusCode::SERVICE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE));
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not after queue_timeout");
    assert_eq!(batch.headers["retry-after"], "1");
    let id = batch.headers["x-request-id"].to_str().expect("id").to_string();
    assert_eq!(sluice.record(&id)["limit"], "adaptive");
    // A critical request waits for the place (queue_timeout 5 s) and gets it once the
    // held one ends; it never reaches the upstream beside it.
    let critical = tokio::spawn(async move { client::get_once(addr, "/critical").await.0.status });
    released.store(true, Ordering::SeqCst);
    release.notify_one();
    assert_eq!(holder.await.expect("holder"), StatusCode::OK);
    assert_eq!(critical.await.expect("critical"), StatusCode::OK);
    assert!(!overlapped.load(Ordering::SeqCst), "the limit of one held for every request");
}
