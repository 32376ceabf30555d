//! Redis as production runs it, from real redis-server processes started by the test:
//! a 3-primary Cluster made with `redis-cli --cluster create`, a primary with a replica
//! watched by a Sentinel, and a TLS-only server with an ACL user.

use std::process::Command;
use std::time::Instant;

use super::stores::Store;
use super::{TempDir, WAIT};

fn redis_server(dir: &TempDir, port: u16, extra: &[String]) -> Command {
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    command.args(["--dir", &dir.path.display().to_string()]);
    command.args(extra);
    command
}

/// Polls `check` (another process's state) until it holds, failing after `WAIT`.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Three primaries sharing the 16,384 slots, no replicas.
pub struct Cluster {
    pub nodes: Vec<Store>,
    _dir: TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = TempDir::new();
        let nodes: Vec<Store> = (0..3)
            .map(|_| {
                Store::start("redis-server (cluster node)", "Ready to accept connections", |port| {
                    let extra = [
                        "--cluster-enabled".to_string(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                    ];
                    redis_server(&dir, port, &extra)
                })
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(nodes.iter().map(|n| n.address()));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let made = create.output().expect("redis-cli (scripts/test.sh installs redis-tools)");
        assert!(made.status.success(), "cluster create: {}", String::from_utf8_lossy(&made.stdout));
        for node in &nodes {
            wait_until("cluster_state:ok", || node.command("CLUSTER INFO").contains("cluster_state:ok"));
        }
        Cluster { nodes, _dir: dir }
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(Store::address).collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// Keys matching `pattern` on each node (the count from KEYS' reply header).
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.nodes.iter().map(|node| array_length(&node.command(&format!("KEYS {pattern}")))).collect()
    }
}

/// The element count of a RESP array reply (`*N`), 0 for anything else.
pub fn array_length(reply: &str) -> usize {
    reply.strip_prefix('*').and_then(|r| r.split("\r\n").next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A primary, its replica, and one Sentinel (quorum 1) that fails over within seconds.
pub struct Sentinel {
    pub primary: Store,
    pub replica: Store,
    pub sentinel: Store,
    _dir: TempDir,
}

impl Sentinel {
    pub fn start() -> Sentinel {
        let dir = TempDir::new();
        let primary =
            Store::start("redis-server (primary)", "Ready to accept connections", |port| redis_server(&dir, port, &[]));
        let replica = Store::start("redis-server (replica)", "sync: Finished with success", |port| {
            redis_server(&dir, port, &["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()])
        });
        let sentinel = Store::start("redis-sentinel", "+monitor master", |port| {
            let config = dir.path.join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                primary.port
            );
            std::fs::write(&config, text).expect("sentinel config");
            let mut command = Command::new("redis-server");
            command.arg(&config).arg("--sentinel");
            command
        });
        Sentinel { primary, replica, sentinel, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("redis-sentinel://{}/mymaster", self.sentinel.address())
    }

    /// The port the Sentinel names as the primary's now.
    pub fn primary_port(&self) -> u16 {
        let reply = self.sentinel.command("SENTINEL get-master-addr-by-name mymaster");
        reply.split("\r\n").filter(|l| !l.starts_with(['*', '$'])).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0)
    }
}

/// A TLS-only redis-server (certificate and key PEM files given) with the default user
/// off and one ACL user, `app`, whose password is `password`.
pub fn tls_with_acl(dir: &TempDir, certificate: &str, key: &str, ca: &str, password: &str) -> Store {
    Store::start("redis-server (TLS)", "Ready to accept connections", |port| {
        let mut command = Command::new("redis-server");
        command.args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        command.args(["--dir", &dir.path.display().to_string()]);
        command.args(["--tls-cert-file", certificate, "--tls-key-file", key, "--tls-ca-cert-file", ca]);
        command.args(["--tls-auth-clients", "no"]);
        command.args(["--user", "default", "off"]);
        command.args(["--user", "app", "on", &format!(">{password}"), "~*", "&*", "+@all"]);
        command
    })
}
