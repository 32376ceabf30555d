//! Test support: the real `sluice` binary started on port 0 with a config written to a
//! temp folder, real upstream servers on 127.0.0.1:0 in the test process, and clients.
#![allow(dead_code)] // each test file uses a different part of this module

pub mod client;
pub mod haproxy;
pub mod raw;
pub mod redis_deployments;
pub mod stores;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The concurrency model the suite runs sluice in: `SLUICE_TEST_MODEL` (per-core or
/// work-stealing; scripts/test.sh runs the suite once in each), written into every
/// test's config that does not choose one itself.
fn with_test_model(path: &std::path::Path) {
    let Ok(model) = std::env::var("SLUICE_TEST_MODEL") else { return };
    let config = std::fs::read_to_string(path).expect("read config");
    if config.lines().any(|l| l.trim_start().starts_with("model")) {
        return;
    }
    let line = format!("model = \"{model}\"\n");
    let config = match config.find("[server]\n") {
        Some(at) => format!("{}{line}{}", &config[..at + 9], &config[at + 9..]),
        None => format!("[server]\n{line}{config}"),
    };
    std::fs::write(path, config).expect("write config");
}

/// A running `sluice run` process, killed when dropped.
pub struct Sluice {
    child: Child,
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    pub dir: TempDir,
    stderr: Arc<Mutex<String>>,
    stderr_grew: Arc<std::sync::Condvar>,
}

impl Sluice {
    /// Starts sluice with `config` (listeners on port 0) and waits until it listens.
    pub fn start(config: &str) -> Sluice {
        Self::start_with(config, None)
    }

    /// As `start`, under `prlimit --nofile=N:N` when `nofile` is given.
    pub fn start_with(config: &str, nofile: Option<u64>) -> Sluice {
        let dir = TempDir::new();
        let path = dir.path.join("sluice.toml");
        std::fs::write(&path, config).expect("write config");
        Self::start_file(dir, &path, nofile)
    }

    pub fn start_file(dir: TempDir, path: &std::path::Path, nofile: Option<u64>) -> Sluice {
        with_test_model(path);
        let mut command = sluice_command(nofile);
        command.arg("run").arg("--config").arg(path);
        command
            .env("RUST_LOG", "info,sluice_proxy=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command.spawn().expect("start sluice");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let grew = Arc::new(std::sync::Condvar::new());
        {
            let (log, grew) = (Arc::clone(&log), Arc::clone(&grew));
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut text = log.lock().expect("log");
                    text.push_str(&line);
                    text.push('\n');
                    grew.notify_all();
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let admin = Arc::new(Mutex::new(None));
        let admin_seen = Arc::clone(&admin);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The admin line comes first, so it is known once the listeners are.
                if let Some(addr) = line.strip_prefix("sluice: admin on ") {
                    *admin_seen.lock().expect("admin") = Some(addr.parse::<SocketAddr>().expect("address"));
                }
                if let Some(addr) = line.strip_prefix("sluice: listening on ") {
                    let _ = tx.send(Some(addr.parse::<SocketAddr>().expect("address")));
                }
                if line == "sluice: ready" {
                    let _ = tx.send(None); // every listener line came before it
                }
            }
        });
        let mut addrs = Vec::new();
        loop {
            match rx.recv_timeout(WAIT) {
                Ok(Some(addr)) => addrs.push(addr),
                Ok(None) => break,
                Err(_) => panic!("sluice did not start; stderr:\n{}", log.lock().expect("log")),
            }
        }
        assert!(!addrs.is_empty(), "sluice said it was ready without a listener");
        let admin = *admin.lock().expect("admin");
        Sluice { child, addr: addrs[0], addrs, admin, dir, stderr: log, stderr_grew: grew }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything sluice logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// Blocks until the log contains `needle` (or fails the test after `WAIT`).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let mut text = self.stderr.lock().expect("log");
        let deadline = std::time::Instant::now() + WAIT;
        while !text.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "log never showed {needle:?}:\n{text}");
            text = self.stderr_grew.wait_timeout(text, left).expect("log").0;
        }
        text.clone()
    }

    /// The access log's records (JSON lines in `dir/access.log`, see `with_access_log`),
    /// once there are at least `n`. Fails the test after `WAIT`.
    pub fn records(&self, n: usize) -> Vec<serde_json::Value> {
        let path = self.dir.path.join("access.log");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let complete: Vec<&str> = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
            if complete.len() >= n {
                return complete.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
            }
            assert!(std::time::Instant::now() < deadline, "wanted {n} access log lines, have:\n{text}");
            // The writer thread flushes when its queue empties; poll the file for that.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The one record whose request id is `id`, once it is there.
    pub fn record(&self, id: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let records = self.records(0);
            let found: Vec<_> = records.iter().filter(|r| r["request_id"] == id).collect();
            assert!(found.len() <= 1, "more than one record for {id}: {found:?}");
            if let Some(record) = found.first() {
                return (*record).clone();
            }
            assert!(std::time::Instant::now() < deadline, "no record for {id}: {records:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, as an init system would.
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success());
    }

    /// SIGKILL now (a crash, an OOM kill), and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "sluice did not exit");
            std::thread::sleep(Duration::from_millis(20)); // polling a process exit, not synchronising
        }
    }

    /// Resident and peak resident memory in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .expect("memory field")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("proc stat");
        let after_name = &stat[stat.rfind(')').expect("stat") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder removed when dropped.
/// The `sluice` binary, under `prlimit --nofile=N:N` when `nofile` is given.
pub fn sluice_command(nofile: Option<u64>) -> Command {
    let bin = env!("CARGO_BIN_EXE_sluice");
    match nofile {
        Some(n) => {
            let mut command = Command::new("prlimit");
            command.arg(format!("--nofile={n}:{n}")).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sluice-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Reads from `stream` until what arrived contains `needle`; fails on close or after `WAIT`.
pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, needle: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("bytes in time").expect("read");
        assert!(n > 0, "closed before {needle:?}: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

/// A config with one listener on port 0 and one upstream group `up` routed at `/`.
pub fn simple_config(endpoints: &[SocketAddr], upstream_extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"up\"\n\n[upstream.up]\nendpoints = [{}]\n{upstream_extra}\n",
        list.join(", ")
    )
}

/// `config` (without a `[server]` table) served by one worker: for tests that count
/// upstream connections, which per-core workers each open for themselves
/// (tests/models.rs covers several workers).
pub fn one_worker(config: &str) -> String {
    format!("[server]\nworker_threads = 1\n\n{config}")
}

/// A port on 127.0.0.1 with nothing listening (bound, then closed).
pub async fn dead_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// The admin listener's `/metrics` page (the config must have `[admin]`).
pub async fn metrics(sluice: &Sluice) -> String {
    let mut admin = client::h1(sluice.admin.expect("an [admin] listener")).await;
    let request = http::Request::get("/metrics").header("host", "admin").body(upstream::full("")).expect("request");
    String::from_utf8_lossy(&client::send1(&mut admin, request).await.1).into_owned()
}

/// `config` with the access log written as JSON lines to `access.log` beside it.
pub fn with_access_log(config: &str) -> String {
    format!("{config}\n[access_log]\npath = \"access.log\"\n")
}
