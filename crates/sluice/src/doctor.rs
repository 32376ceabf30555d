//! `sluice doctor`: what limits parallel calls on this machine. It reads the limits
//! (getrlimit, /proc/sys, /proc/meminfo; no root needed, and what cannot be read is
//! said), estimates the client and upstream connections this machine holds with a
//! configuration (`sluice_policy::capacity`), names the binding constraint, and prints
//! the commands that raise each limit. Exit code 1 when the configuration cannot be met.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use sluice_config::{Config, UpstreamProtocol};
use sluice_policy::capacity::{self, Binding, Limits, Plan};

pub fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, source) = match config {
        Some(path) => (sluice_config::load(path)?, path.display().to_string()),
        None => (sluice_config::parse(DEFAULTS, Path::new("defaults"))?, "the defaults".to_string()),
    };
    let (limits, unread) = read_limits();
    let plan = plan(&config);
    let estimate = capacity::estimate(&limits, &plan);
    print!("{}", report(&limits, &unread, &plan, &estimate, &source));
    Ok(if estimate.shortfalls.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The smallest valid file: every setting at its default.
const DEFAULTS: &str = "[[listener]]\naddress = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [\"127.0.0.1:9000\"]\n";

/// What the configuration asks of the machine.
fn plan(config: &Config) -> Plan {
    let workers = config.server.worker_threads as u64;
    let mut total = 0;
    let mut per_address = 0;
    for upstream in &config.upstreams {
        // An HTTP/1 endpoint's cap holds for the process; HTTP/2 pools are per worker.
        let per_endpoint = match upstream.protocol {
            UpstreamProtocol::Http1 => upstream.pool.max_connections as u64,
            UpstreamProtocol::Http2 => upstream.pool.max_connections as u64 * workers,
        };
        total += per_endpoint * upstream.endpoints.len() as u64;
        per_address = per_address.max(per_endpoint);
    }
    let backlog = config.listeners.iter().map(|l| u64::from(l.backlog)).max().unwrap_or(0);
    Plan {
        max_connections: config.server.max_connections as u64,
        upstream_connections: total,
        per_upstream_address: per_address,
        backlog,
    }
}

/// The machine's limits, and the sources that could not be read.
fn read_limits() -> (Limits, Vec<String>) {
    let mut unread = Vec::new();
    let mut number = |path: &str| -> Option<u64> {
        let value = std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok());
        if value.is_none() {
            unread.push(path.to_string());
        }
        value
    };
    let file_max = number("/proc/sys/fs/file-max");
    let nr_open = number("/proc/sys/fs/nr_open");
    let somaxconn = number("/proc/sys/net/core/somaxconn");
    let syn_backlog = number("/proc/sys/net/ipv4/tcp_max_syn_backlog");
    let tw_reuse = number("/proc/sys/net/ipv4/tcp_tw_reuse");
    let port_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|text| {
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??))
    });
    if port_range.is_none() {
        unread.push("/proc/sys/net/ipv4/ip_local_port_range".into());
    }
    let mem_available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    if mem_available.is_none() {
        unread.push("/proc/meminfo".into());
    }
    let (nofile_soft, nofile_hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => (Some(soft), Some(hard)),
        Err(_) => {
            unread.push("getrlimit(RLIMIT_NOFILE)".into());
            (None, None)
        }
    };
    let limits = Limits {
        nofile_soft,
        nofile_hard,
        file_max,
        nr_open,
        somaxconn,
        syn_backlog,
        port_range,
        tw_reuse,
        mem_available,
    };
    (limits, unread)
}

fn show(value: Option<u64>) -> String {
    value.map_or("unreadable".into(), |v| v.to_string())
}

fn report(limits: &Limits, unread: &[String], plan: &Plan, e: &capacity::Estimate, source: &str) -> String {
    let mut out = String::from("sluice doctor: what limits parallel calls on this machine\n\nlimits\n");
    let line = |out: &mut String, name: &str, value: String, note: &str| {
        let _ = writeln!(out, "  {name:<28} {value:<14} {note}");
    };
    line(
        &mut out,
        "nofile.soft",
        show(limits.nofile_soft),
        "RLIMIT_NOFILE now (sluice raises it to the hard limit at start)",
    );
    line(&mut out, "nofile.hard", show(limits.nofile_hard), "the most descriptors this process can have");
    line(&mut out, "fs.file-max", show(limits.file_max), "descriptors for the whole system");
    line(&mut out, "fs.nr_open", show(limits.nr_open), "the most a hard limit can be raised to");
    line(&mut out, "net.core.somaxconn", show(limits.somaxconn), "caps every listen backlog");
    line(&mut out, "net.ipv4.tcp_max_syn_backlog", show(limits.syn_backlog), "half-open connections queued");
    let ports = limits.port_range.map_or("unreadable".into(), |(low, high)| format!("{low}-{high}"));
    line(&mut out, "net.ipv4.ip_local_port_range", ports, "local ports for outbound connections");
    line(&mut out, "net.ipv4.tcp_tw_reuse", show(limits.tw_reuse), tw_reuse_meaning(limits.tw_reuse));
    line(&mut out, "memory.available_mib", show(limits.mem_available.map(|b| b >> 20)), "MemAvailable");
    if !unread.is_empty() {
        let _ = writeln!(out, "  could not read: {}", unread.join(", "));
    }
    let _ = writeln!(out, "\nestimate with {source}");
    line(&mut out, "max_connections", plan.max_connections.to_string(), "server.max_connections");
    line(
        &mut out,
        "upstream_connections",
        plan.upstream_connections.to_string(),
        "pools' max_connections over every endpoint",
    );
    line(&mut out, "fd_budget", show(e.fd_budget), "descriptors sluice will have");
    line(&mut out, "clients_by_fds", show(e.clients_by_fds), "after the upstream connections and 64 reserved");
    let per = format!(
        "idle connections: {} B in sluice + {} B in the kernel each",
        capacity::SLUICE_BYTES_PER_CONNECTION,
        capacity::KERNEL_BYTES_PER_SOCKET
    );
    line(&mut out, "clients_by_memory", show(e.clients_by_memory), &per);
    let binding = match e.binding {
        Binding::MaxConnections => "binding: server.max_connections (the machine allows more)",
        Binding::FileDescriptors => "binding: file descriptors",
        Binding::Memory => "binding: memory",
    };
    line(&mut out, "client_connections", e.clients.to_string(), binding);
    line(
        &mut out,
        "ports_per_upstream_address",
        show(e.ports_per_upstream_address),
        "outbound connections to one address:port",
    );
    let backlog = format!("listener backlog {} capped by somaxconn", plan.backlog);
    line(&mut out, "effective_backlog", show(e.effective_backlog), &backlog);
    if e.shortfalls.is_empty() {
        out.push_str("\nok: this machine can hold what the configuration asks for\n");
    } else {
        out.push('\n');
        for shortfall in &e.shortfalls {
            let _ = writeln!(out, "problem: {shortfall}");
        }
    }
    out.push_str(&raise(limits));
    out
}

/// What net.ipv4.tcp_tw_reuse's value means (2, the kernel's default, is loopback only).
fn tw_reuse_meaning(value: Option<u64>) -> &'static str {
    match value {
        Some(0) => "0: ports in TIME_WAIT are never reused for outbound connections",
        Some(1) => "1: ports in TIME_WAIT reused for outbound connections",
        Some(2) => "2: reused for loopback connections only (the kernel's default)",
        _ => "0 off, 1 on, 2 loopback only: ports in TIME_WAIT reused for outbound connections",
    }
}

/// How to raise each limit that is below what a busy proxy wants; a limit already at
/// or above it is said to be so (a suggestion must never lower a limit).
fn raise(limits: &Limits) -> String {
    let ports = limits.port_range.map(|(low, high)| high.saturating_sub(low));
    let advice: [(&str, Option<u64>, u64, &str); 7] = [
        (
            "descriptors (hard limit)",
            limits.nofile_hard,
            1_048_576,
            "LimitNOFILE=1048576 in the systemd unit, or `* hard nofile 1048576` in /etc/security/limits.conf",
        ),
        ("fs.nr_open", limits.nr_open, 1_048_576, "sysctl -w fs.nr_open=1048576"),
        ("fs.file-max", limits.file_max, 2_097_152, "sysctl -w fs.file-max=2097152"),
        ("net.core.somaxconn", limits.somaxconn, 8192, "sysctl -w net.core.somaxconn=8192"),
        ("tcp_max_syn_backlog", limits.syn_backlog, 8192, "sysctl -w net.ipv4.tcp_max_syn_backlog=8192"),
        ("ip_local_port_range", ports, 64_511, "sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\""),
        ("tcp_tw_reuse", limits.tw_reuse.map(|v| u64::from(v == 1)), 1, "sysctl -w net.ipv4.tcp_tw_reuse=1"),
    ];
    let mut out = String::from("\nto raise the limits (as root; persist sysctls in /etc/sysctl.d/90-sluice.conf):\n");
    for (name, now, wanted, how) in advice {
        let _ = match now {
            Some(now) if now >= wanted => writeln!(out, "  {name:<26} enough already"),
            _ => writeln!(out, "  {name:<26} {how}"),
        };
    }
    out
}

#[cfg(test)]
mod advice_tests {
    use super::*;

    fn limits(file_max: u64, tw_reuse: u64) -> Limits {
        Limits {
            nofile_soft: Some(1024),
            nofile_hard: Some(524_288),
            file_max: Some(file_max),
            nr_open: Some(1_048_576),
            somaxconn: Some(4096),
            syn_backlog: Some(8192),
            port_range: Some((32_768, 60_999)),
            tw_reuse: Some(tw_reuse),
            mem_available: Some(1 << 30),
        }
    }

    #[test]
    fn no_advice_lowers_a_limit_and_tw_reuse_2_is_loopback_only() {
        let high = raise(&limits(2_466_126, 2));
        assert!(!high.contains("fs.file-max=2097152"), "{high}");
        assert!(high.contains("fs.file-max                enough already"), "{high}");
        assert!(high.contains("fs.nr_open                 enough already"), "{high}");
        assert!(high.contains("sysctl -w net.core.somaxconn=8192"), "4096 is below: {high}");
        assert!(high.contains("sysctl -w net.ipv4.tcp_tw_reuse=1"), "2 reuses loopback only: {high}");
        let low = raise(&limits(65_536, 1));
        assert!(low.contains("sysctl -w fs.file-max=2097152"), "{low}");
        assert!(low.contains("tcp_tw_reuse               enough already"), "{low}");
        assert!(tw_reuse_meaning(Some(2)).contains("loopback connections only"));
    }
}
