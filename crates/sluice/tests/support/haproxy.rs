//! A real HAProxy (Debian's package) in TCP mode in front of sluice instances, as an
//! L4 balancer would be: round robin, health checks every 100 ms, a refused connect
//! tried again on another server (`option redispatch`). Started by the test, on a
//! free port, killed by its PID when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, WAIT};

pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Haproxy {
    /// Balances TCP connections over `servers`.
    pub fn tcp(servers: &[SocketAddr]) -> Haproxy {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            let dir = TempDir::new();
            let mut config = format!(
                "global\n  maxconn 4096\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
                 retries 3\n  option redispatch 1\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
                 backend be\n  balance roundrobin\n  default-server check inter 100ms fall 1 rise 2\n"
            );
            for (i, server) in servers.iter().enumerate() {
                config.push_str(&format!("  server s{i} {server}\n"));
            }
            let path = dir.path.join("haproxy.cfg");
            std::fs::write(&path, config).expect("haproxy config");
            let mut child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start haproxy (scripts/test.sh installs it): {e}"));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + WAIT;
            loop {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Haproxy { child, addr, _dir: dir };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break; // exited (the port was taken in between): another port
                }
                std::thread::sleep(Duration::from_millis(20)); // polling another process's listener
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("haproxy did not start");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
