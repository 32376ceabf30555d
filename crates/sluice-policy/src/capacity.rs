//! How many parallel calls a machine can hold, from its limits and a configuration:
//! the arithmetic behind `sluice doctor`, apart from reading /proc.
//!
//! Per-connection memory: sluice holds an idle keep-alive client connection in
//! `SLUICE_BYTES_PER_CONNECTION` (measured, docs/BENCHMARKS.md); the kernel adds its
//! socket, file and epoll structures, `KERNEL_BYTES_PER_SOCKET` for an idle socket (a
//! busy one holds buffers too, so this is the ceiling for idle connections, not busy ones).

/// sluice's own memory per idle keep-alive client connection (0.85 KiB measured).
pub const SLUICE_BYTES_PER_CONNECTION: u64 = 870;
/// The kernel's memory per idle TCP socket (struct sock, file, dentry, epoll item).
pub const KERNEL_BYTES_PER_SOCKET: u64 = 4096;
/// Descriptors kept for everything but connections (listeners, epoll, files, logs).
pub const RESERVED_FDS: u64 = 64;

/// What the machine allows; None where it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub nofile_soft: Option<u64>,
    pub nofile_hard: Option<u64>,
    pub file_max: Option<u64>,
    pub nr_open: Option<u64>,
    pub somaxconn: Option<u64>,
    pub syn_backlog: Option<u64>,
    pub port_range: Option<(u64, u64)>,
    pub tw_reuse: Option<u64>,
    pub mem_available: Option<u64>,
}

/// What the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `server.max_connections`.
    pub max_connections: u64,
    /// Upstream connections at most, over every endpoint.
    pub upstream_connections: u64,
    /// The most connections planned to one upstream address.
    pub per_upstream_address: u64,
    /// The largest listener backlog.
    pub backlog: u64,
}

/// What bounds the client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `server.max_connections` itself: the machine allows more.
    MaxConnections,
    FileDescriptors,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Descriptors sluice will have (its soft limit is raised to the hard one at start).
    pub fd_budget: Option<u64>,
    /// Client connections the descriptors allow, after the upstream connections.
    pub clients_by_fds: Option<u64>,
    /// Idle client connections the available memory allows.
    pub clients_by_memory: Option<u64>,
    /// Client connections this machine holds with this config, and why not more.
    pub clients: u64,
    pub binding: Binding,
    /// Outbound connections one upstream address can take (the local port range).
    pub ports_per_upstream_address: Option<u64>,
    /// The backlog the kernel really gives a listener (somaxconn caps it).
    pub effective_backlog: Option<u64>,
    /// What cannot be met: empty when the config fits the machine.
    pub shortfalls: Vec<String>,
}

pub fn estimate(limits: &Limits, plan: &Plan) -> Estimate {
    let hard = limits.nofile_hard.or(limits.nofile_soft);
    let fd_budget = hard.map(|hard| limits.file_max.map_or(hard, |system| hard.min(system)));
    let clients_by_fds = fd_budget.map(|fds| fds.saturating_sub(RESERVED_FDS + plan.upstream_connections));
    let per_client = SLUICE_BYTES_PER_CONNECTION + KERNEL_BYTES_PER_SOCKET;
    let upstream_memory = plan.upstream_connections * KERNEL_BYTES_PER_SOCKET;
    let clients_by_memory = limits.mem_available.map(|bytes| bytes.saturating_sub(upstream_memory) / per_client);
    let mut clients = plan.max_connections;
    let mut binding = Binding::MaxConnections;
    for (allowed, why) in [(clients_by_fds, Binding::FileDescriptors), (clients_by_memory, Binding::Memory)] {
        if let Some(allowed) = allowed {
            if allowed < clients {
                clients = allowed;
                binding = why;
            }
        }
    }
    let ports_per_upstream_address = limits.port_range.map(|(low, high)| high.saturating_sub(low) + 1);
    let effective_backlog = limits.somaxconn.map(|cap| plan.backlog.min(cap));
    let mut shortfalls = Vec::new();
    if clients < plan.max_connections {
        let what = match binding {
            Binding::FileDescriptors => "file descriptors",
            Binding::Memory => "memory",
            Binding::MaxConnections => "nothing",
        };
        shortfalls.push(format!(
            "server.max_connections = {} cannot be met: {what} allow {clients} client connections",
            plan.max_connections
        ));
    }
    if let Some(ports) = ports_per_upstream_address {
        if plan.per_upstream_address > ports {
            shortfalls.push(format!(
                "an upstream address may be given {} connections, but the local port range has {ports} ports",
                plan.per_upstream_address
            ));
        }
    }
    Estimate {
        fd_budget,
        clients_by_fds,
        clients_by_memory,
        clients,
        binding,
        ports_per_upstream_address,
        effective_backlog,
        shortfalls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            nofile_soft: Some(1024),
            nofile_hard: Some(20_000),
            file_max: Some(1_000_000),
            nr_open: Some(1_048_576),
            somaxconn: Some(4096),
            syn_backlog: Some(4096),
            port_range: Some((32768, 60999)),
            tw_reuse: Some(2),
            mem_available: Some(24 << 30),
        }
    }

    fn plan(max_connections: u64) -> Plan {
        Plan { max_connections, upstream_connections: 512, per_upstream_address: 256, backlog: 8192 }
    }

    #[test]
    fn descriptors_bind_before_memory_on_a_machine_with_a_low_hard_limit() {
        let e = estimate(&limits(), &plan(100_000));
        assert_eq!(e.fd_budget, Some(20_000), "the soft limit is raised to the hard one");
        assert_eq!(e.clients_by_fds, Some(20_000 - 64 - 512));
        assert_eq!((e.clients, e.binding), (19_424, Binding::FileDescriptors));
        assert_eq!(e.shortfalls.len(), 1);
        assert_eq!(e.ports_per_upstream_address, Some(28_232));
        assert_eq!(e.effective_backlog, Some(4096), "somaxconn caps the backlog");
    }

    #[test]
    fn a_config_within_the_limits_has_no_shortfall() {
        let e = estimate(&limits(), &plan(10_000));
        assert_eq!((e.clients, e.binding), (10_000, Binding::MaxConnections));
        assert!(e.shortfalls.is_empty());
    }

    #[test]
    fn memory_binds_when_it_is_short_and_ports_are_checked() {
        let mut small = limits();
        small.nofile_hard = Some(10_000_000);
        small.file_max = None;
        small.mem_available = Some(100 << 20);
        small.port_range = Some((60_000, 60_099));
        let e = estimate(&small, &plan(1_000_000));
        assert_eq!(e.binding, Binding::Memory);
        assert_eq!(e.clients, ((100 << 20) - 512 * 4096) / (870 + 4096));
        assert_eq!(e.shortfalls.len(), 2, "{:?}", e.shortfalls);
    }

    #[test]
    fn what_could_not_be_read_does_not_bind() {
        let e = estimate(&Limits::default(), &plan(10_000));
        assert_eq!((e.clients, e.binding, e.fd_budget), (10_000, Binding::MaxConnections, None));
    }
}
