//! Real redis-server and memcached processes for the cache tests, each on a free
//! port of its own, started by the test and killed (by their PID) when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::WAIT;

/// A running store process.
pub struct Store {
    child: Child,
    pub port: u16,
}

impl Store {
    /// redis-server without persistence, ready to accept connections.
    pub fn redis() -> Store {
        Store::start("redis", "Ready to accept connections", |port| {
            let mut command = Command::new("redis-server");
            command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            command
        })
    }

    /// redis-server again on `port` (after `kill`: a restart that keeps the address).
    pub fn restart_redis(&mut self) {
        let port = self.port;
        let started = Store::start_on("redis", "Ready to accept connections", Some(port), |port| {
            let mut command = Command::new("redis-server");
            command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            command
        });
        // The old one was killed and waited for; dropping it signals nothing.
        drop(std::mem::replace(self, started));
    }

    /// memcached on TCP only, ready to accept connections.
    pub fn memcached() -> Store {
        Store::start("memcached", "server listening", |port| {
            let mut command = Command::new("memcached");
            command.args(["-vv", "-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0", "-m", "64"]);
            if running_as_root() {
                command.args(["-u", "root"]);
            }
            command
        })
    }

    /// Starts the store on a free port, trying again on another when that one was
    /// taken in between; waits for its readiness line (no polling).
    pub fn start(name: &str, ready: &'static str, command: impl Fn(u16) -> Command) -> Store {
        Store::start_on(name, ready, None, command)
    }

    /// `start` on `port` when given (tried five times: it was just freed), else on a free one.
    fn start_on(name: &str, ready: &'static str, port: Option<u16>, command: impl Fn(u16) -> Command) -> Store {
        for _ in 0..5 {
            let port = port.unwrap_or_else(|| {
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
            });
            let mut child = command(port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name} (scripts/test.sh installs it): {e}"));
            let (tx, rx) = mpsc::channel();
            for output in [child.stdout.take().map(read_box), child.stderr.take().map(read_box)].into_iter().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(output).lines().map_while(Result::ok) {
                        let _ = tx.send(line);
                    }
                });
            }
            drop(tx);
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) if line.contains(ready) => {
                        // Keep draining its output so it never blocks on a full pipe.
                        std::thread::spawn(move || for _ in rx {});
                        return Store { child, port };
                    }
                    Ok(_) => continue,
                    Err(_) => break, // exited (port taken) or never ready
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{name} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process now (SIGKILL to its PID) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One inline command (Redis, or memcached's text protocol) and the reply's first
    /// read: enough for the short replies the tests look at.
    pub fn command(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.write_all(format!("{command}\r\n").as_bytes()).expect("write");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut reply = [0u8; 4096];
        let n = stream.read(&mut reply).expect("read");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_box<R: std::io::Read + Send + 'static>(read: R) -> Box<dyn std::io::Read + Send> {
    Box::new(read)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
