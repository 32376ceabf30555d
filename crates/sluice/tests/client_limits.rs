//! Limits per client: open connections per address (`max_connections_per_ip`).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::client::{self, send1, send2};
use support::upstream::Upstream;
use support::{simple_config, Sluice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from the local address `from` (any port); None when it was
/// reset before connect() returned (sluice accepts and resets that fast).
async fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("address")).expect("bind");
    match socket.connect(to).await {
        Ok(stream) => Some(stream),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect: {e}"),
    }
}

/// Sends a GET on `stream` and reads what comes back until EOF or the response's end;
/// empty when sluice closed the connection without a response.
async fn exchange(stream: Option<TcpStream>) -> String {
    let Some(mut stream) = stream else { return String::new() };
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(support::WAIT, stream.read_to_end(&mut got)).await.expect("an answer or a close");
    if read.is_err() && got.is_empty() {
        return String::new(); // reset
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn refused_total(sluice: &Sluice) -> String {
    let page = support::metrics(sluice).await;
    page.lines().find(|l| l.starts_with("sluice_connections_refused_total{")).expect("the series").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_connection_limit_is_closed_at_once_and_others_are_not() {
    let upstream = Upstream::hello().await;
    let config = format!(
        "[server]\nmax_connections_per_ip = 3\n\n{}\n[admin]\naddress = \"127.0.0.1:0\"\n",
        simple_config(&[upstream.addr], "")
    );
    let sluice = Sluice::start(&config);
    // Three kept-alive connections from 127.0.0.1, two HTTP/1.1 and one HTTP/2, each
    // served (so each is surely counted before the next).
    let mut first = client::h1(sluice.addr).await;
    assert_eq!(send1(&mut first, client::get("/a")).await.0.status, 200);
    let mut second = client::h1(sluice.addr).await;
    assert_eq!(send1(&mut second, client::get("/b")).await.0.status, 200);
    let mut third = client::h2(sluice.addr).await;
    assert_eq!(send2(&mut third, client::get2("/c")).await.0.status, 200);
    // The fourth is closed without a response, and counted.
    let answer = exchange(connect_from("127.0.0.1", sluice.addr).await).await;
    assert!(answer.is_empty(), "no response for a client over its limit: {answer:?}");
    assert_eq!(refused_total(&sluice).await, "sluice_connections_refused_total{limit=\"ip_connections\"} 1");
    // Another client address is not limited by this one's connections.
    let other = exchange(connect_from("127.0.0.2", sluice.addr).await).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The open connections still work.
    assert_eq!(send1(&mut first, client::get("/a2")).await.0.status, 200);
    assert_eq!(send2(&mut third, client::get2("/c2")).await.0.status, 200);
    // Once one closes, its place is free again (sluice notices the close: polled).
    drop(second);
    let deadline = Instant::now() + support::WAIT;
    loop {
        let answer = exchange(connect_from("127.0.0.1", sluice.addr).await).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection's place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_many_connections_from_one_client_are_served() {
    let upstream = Upstream::hello().await;
    let sluice = Sluice::start(&simple_config(&[upstream.addr], ""));
    let mut held = Vec::new();
    for i in 0..50 {
        let mut conn = client::h1(sluice.addr).await;
        assert_eq!(send1(&mut conn, client::get(&format!("/{i}"))).await.0.status, 200);
        held.push(conn);
    }
}
