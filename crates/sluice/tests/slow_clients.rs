//! Slow clients cannot take what other clients need. 2,000 connections trickle their
//! request heads, 500 stop in the middle of a request body and 500 never read their
//! responses, all at once, against one route whose upstream pool holds 64 connections.
//! Meanwhile ordinary clients on the same route keep getting 200 quickly, and no
//! request gets a 503 for want of a pooled connection.
//!
//! Alone in its test binary, so no other test shares the machine while it measures.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use support::client;
use support::upstream::{full, Upstream};
use support::{simple_config, Sluice, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

const SLOW_HEADERS: usize = 2_000;
const SLOW_BODIES: usize = 500;
const SLOW_READERS: usize = 500;
/// A response that fits the default 64 KiB response buffer but not a stalled socket.
const BIG: usize = 60 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_normal_ones() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (big_served_tx, mut big_served) = watch::channel(0usize);
    let served = Arc::new(AtomicUsize::new(0));
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let (tx, served) = (big_served_tx.clone(), Arc::clone(&served));
        async move {
            if req.uri().path() == "/big" {
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                tx.send_replace(n);
                return http::Response::new(full(vec![b'b'; BIG]));
            }
            http::Response::new(full("ok"))
        }
    })
    .await;
    let config = simple_config(&[upstream.addr], "pool = { max_connections = 64 }").replace(
        "[[listener]]",
        // One worker: connections opened = the pool's peak. (With several, a worker at the
        // shared cap may close another's long-idle connection to open its own; the pool
        // unit tests cover that.)
        "[server]\nworker_threads = 1\nheader_read_timeout = \"60s\"\nclient_body_timeout = \"60s\"\nsend_timeout = \"60s\"\n\n[[listener]]",
    );
    let sluice = Sluice::start(&config);

    let mut held = Vec::with_capacity(SLOW_HEADERS + SLOW_BODIES + SLOW_READERS);
    for _ in 0..SLOW_HEADERS {
        let mut s = TcpStream::connect(sluice.addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("partial head");
        held.push(s);
    }
    for _ in 0..SLOW_BODIES {
        let mut s = TcpStream::connect(sluice.addr).await.expect("connect");
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial").await.expect("partial body");
        held.push(s);
    }
    for _ in 0..SLOW_READERS {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small receive buffer");
        let mut s = socket.connect(sluice.addr).await.expect("connect");
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
        held.push(s); // never read
    }
    tokio::time::timeout(WAIT, big_served.wait_for(|&n| n >= SLOW_READERS))
        .await
        .expect("every slow reader's response was fetched")
        .expect("watch");

    let mut latencies = Vec::new();
    let mut statuses = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let addr = sluice.addr;
        workers.push(tokio::spawn(async move {
            let mut sender = client::h1(addr).await;
            let mut seen = Vec::new();
            for _ in 0..100 {
                let started = Instant::now();
                let (parts, _) = client::send1(&mut sender, client::get("/normal")).await;
                seen.push((parts.status.as_u16(), started.elapsed()));
            }
            seen
        }));
    }
    for worker in workers {
        for (status, latency) in worker.await.expect("worker") {
            statuses.push(status);
            latencies.push(latency);
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "normal clients among slow ones: {} requests, p50 {:?}, p99 {:?}, max {:?}; upstream connections opened: {}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99,
        latencies[latencies.len() - 1],
        upstream.accepted()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every normal request got 200: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(upstream.accepted() <= 64, "the pool cap held: {}", upstream.accepted());
    assert!(!sluice.log().contains("no connection to"), "no request waited out the pool");
    drop(held);
}
