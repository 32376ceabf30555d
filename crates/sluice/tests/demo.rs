//! `sluice demo`, the README's first command: with nothing installed it serves the demo
//! APIs through sluice, caches the catalog, and shows the status page.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};

use support::{client, sluice_command, WAIT};

/// The demo process, killed (by its PID) when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_balances_caches_and_shows_its_status_page() {
    let mut child = sluice_command(None)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut gateway, mut status_page): (Option<SocketAddr>, Option<String>) = (None, None);
    while status_page.is_none() {
        let line = rx.recv_timeout(WAIT).expect("the demo announces itself");
        if let Some(addr) = line.strip_prefix("sluice: listening on ") {
            gateway = Some(addr.parse().expect("address"));
        }
        if let Some(rest) = line.strip_prefix("live status page: http://") {
            status_page = rest.split('/').next().map(str::to_string);
        }
    }
    let gateway = gateway.expect("the gateway's address");
    let admin: SocketAddr = status_page.expect("status page").parse().expect("admin address");
    let (parts, body) = client::get_once(gateway, "/api/hello").await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"server\":\"demo-"), "a demo API answered");
    client::get_once(gateway, "/api/catalog").await;
    let (parts, _) = client::get_once(gateway, "/api/catalog").await;
    let cache_status = parts.headers.get("cache-status").expect("cache-status").to_str().expect("text");
    assert!(cache_status.starts_with("sluice; hit"), "{cache_status}");
    let (parts, page) = client::get_once(admin, "/").await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>sluice status</title>"));
    drop(demo);
}
