//! Active health checks: a task per group on each worker GETs the configured path from
//! every endpoint every interval (over a connection of its own, closed after), and
//! flips an endpoint's state after `unhealthy_threshold` failures or
//! `healthy_threshold` passes in a row. Transitions are logged once per endpoint for
//! the process (every worker checks, and flips, on its own). The task ends with the
//! group (a new snapshot that drops the group stops its checks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use sluice_config::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::Dialer;

/// Each endpoint's active health: healthy until checks say otherwise.
pub(crate) struct ActiveHealth {
    healthy: Vec<AtomicBool>,
    /// Set when checks pass again after failing: a passive ejection then ends too (the
    /// checks are the stronger evidence). Taken by the balancer.
    recovered: Vec<AtomicBool>,
}

impl ActiveHealth {
    pub(crate) fn healthy(&self, index: usize) -> bool {
        self.healthy.get(index).is_none_or(|h| h.load(Ordering::Relaxed))
    }

    /// Whether endpoint `index` recovered since the last call.
    pub(crate) fn take_recovered(&self, index: usize) -> bool {
        self.recovered.get(index).is_some_and(|r| r.swap(false, Ordering::Relaxed))
    }
}

/// Starts the checks of a group; the returned state is read by the balancer. `http2`:
/// the group's endpoints speak HTTP/2 (h2c with prior knowledge, or h2 by ALPN).
pub(crate) fn start(group: Arc<str>, dialers: Vec<Dialer>, check: HealthCheck, http2: bool) -> Arc<ActiveHealth> {
    let flags = || dialers.iter().map(|_| AtomicBool::new(false)).collect();
    let health =
        Arc::new(ActiveHealth { healthy: dialers.iter().map(|_| AtomicBool::new(true)).collect(), recovered: flags() });
    tokio::spawn(run(group, dialers, check, http2, Arc::downgrade(&health)));
    health
}

async fn run(group: Arc<str>, dialers: Vec<Dialer>, check: HealthCheck, http2: bool, health: Weak<ActiveHealth>) {
    // Per endpoint: checks in a row that disagree with its current state.
    let mut streaks = vec![0usize; dialers.len()];
    let mut failing = vec![false; dialers.len()];
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(health) = health.upgrade() else { return };
        for (i, dialer) in dialers.iter().enumerate() {
            let probing = async {
                if http2 {
                    probe_http2(dialer, &check).await
                } else {
                    probe(dialer, &check).await
                }
            };
            let result = tokio::time::timeout(check.timeout, probing).await;
            let passed = matches!(result, Ok(Ok(status)) if expected(&check, status));
            // A check that agrees with the current state ends any streak against it.
            if passed != failing[i] {
                streaks[i] = 0;
            } else {
                streaks[i] += 1;
            }
            let threshold = if failing[i] { check.healthy_threshold } else { check.unhealthy_threshold };
            if streaks[i] >= threshold {
                failing[i] = !failing[i];
                streaks[i] = 0;
                health.healthy[i].store(!failing[i], Ordering::Relaxed);
                health.recovered[i].store(!failing[i], Ordering::Relaxed);
                let why = match &result {
                    Ok(Ok(status)) => format!("status {status}"),
                    Ok(Err(e)) => e.clone(),
                    Err(_) => "timed out".to_string(),
                };
                if !first_to_say(&group, &dialer.label, failing[i]) {
                    continue;
                }
                if failing[i] {
                    tracing::warn!(upstream = %group, endpoint = %dialer.label, last = %why, "health check: endpoint unhealthy; no requests until it passes again");
                } else {
                    tracing::info!(upstream = %group, endpoint = %dialer.label, "health check: endpoint healthy again");
                }
            }
        }
    }
}

/// Whether this worker is the first to see endpoint `label` of `group` become
/// `failing`: the process logs each transition once, not once per worker.
fn first_to_say(group: &str, label: &str, failing: bool) -> bool {
    static SAID: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, bool>>> =
        std::sync::OnceLock::new();
    let mut said = SAID.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{group}\n{label}");
    // An endpoint starts healthy: its first "healthy again" is not news either.
    let before = said.get(&key).copied().unwrap_or(false);
    said.insert(key, failing);
    before != failing
}

fn expected(check: &HealthCheck, status: u16) -> bool {
    if check.expected_statuses.is_empty() {
        (200..400).contains(&status)
    } else {
        check.expected_statuses.contains(&status)
    }
}

/// One check over HTTP/2: connect, handshake, GET the path, take the status.
async fn probe_http2(dialer: &Dialer, check: &HealthCheck) -> Result<u16, String> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = dialer.dial().await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let uri = format!("http://{}{}", dialer.endpoint, check.path);
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "sluice-health-check")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string());
    driver.abort(); // the connection closes with the check
    Ok(response?.status().as_u16())
}

/// One check: connect, GET the path, read the status line.
async fn probe(dialer: &Dialer, check: &HealthCheck) -> Result<u16, String> {
    let mut stream = dialer.dial().await.map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n",
        check.path, dialer.endpoint
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {:?}", line.lines().next().unwrap_or("")))
}
