//! Bodies stream through sluice with bounded memory: a 1 GiB upload and a 1 GiB
//! download barely move its peak resident memory.

mod support;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::client::{self, get, send1};
use support::upstream::{count_body, full, Upstream, ZeroBody};
use support::{simple_config, Sluice};

const GIB: u64 = 1 << 30;
/// Peak resident memory may grow by at most this much while 2 GiB pass through.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_gibibyte_each_way_streams_in_bounded_memory() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.uri().path() == "/download" {
            return Response::new(ZeroBody::new(GIB).boxed());
        }
        let received = count_body(req.into_body()).await;
        Response::new(full(received.to_string()))
    })
    .await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut conn = client::h1(sluice.addr).await;
    // Warm up so that buffers every request needs are already counted in the baseline.
    let (parts, _) = send1(&mut conn, get("/warm")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let (baseline, _) = sluice.memory_kib();

    let upload =
        Request::post("/upload").header("host", "localhost").body(ZeroBody::new(GIB).boxed()).expect("request");
    let (parts, body) = send1(&mut conn, upload).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, GIB.to_string(), "the upstream received every byte");

    conn.ready().await.expect("ready");
    let response = conn.send_request(get("/download")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(count_body(response.into_body()).await, GIB, "the client received every byte");

    let (_, peak) = sluice.memory_kib();
    assert!(peak < baseline + MAX_GROWTH_KIB, "peak RSS {peak} KiB vs {baseline} KiB before 2 GiB passed");
    eprintln!("resident memory: {baseline} KiB before, peak {peak} KiB after 2 GiB streamed");
}

/// Idle keep-alive connections hold no buffers: a few thousand of them barely move
/// sluice's resident memory. (The release-build figure is in docs/BENCHMARKS.md; this
/// debug build has larger futures, so the bound here is looser.)
#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_connections_hold_no_buffers() {
    const CONNECTIONS: usize = 2000;
    const MAX_KIB_PER_CONNECTION: f64 = 3.0; // a retained 4 KiB read buffer alone breaks this (measured 7.8)
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], "pool = { max_connections = 8 }"));
    let mut warm = client::h1(sluice.addr).await;
    for _ in 0..20 {
        send1(&mut warm, get("/warm")).await;
    }
    let (before, _) = sluice.memory_kib();
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut conn = client::h1(sluice.addr).await;
        let (parts, _) = send1(&mut conn, get("/")).await;
        assert_eq!(parts.status, StatusCode::OK);
        idle.push(conn);
    }
    let (after, _) = sluice.memory_kib();
    let per_connection = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    eprintln!("idle keep-alive connections: {per_connection:.2} KiB each ({before} KiB before, {after} KiB with {CONNECTIONS})");
    assert!(per_connection < MAX_KIB_PER_CONNECTION, "{per_connection:.2} KiB per idle connection");
    // They are still alive and served.
    let (parts, _) = send1(&mut idle[CONNECTIONS / 2], get("/still")).await;
    assert_eq!(parts.status, StatusCode::OK);
}
