//! `sluice doctor` on this machine: its figures against the real values in /proc, and
//! its verdict on a config the machine cannot hold.

mod support;

use support::{sluice_command, TempDir};

/// Runs `sluice doctor` (with `config`, under `nofile` if given): its output and success.
fn doctor(config: Option<&str>, nofile: Option<u64>) -> (String, bool) {
    let dir = TempDir::new();
    let mut command = sluice_command(nofile);
    command.arg("doctor");
    if let Some(text) = config {
        let path = dir.path.join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        command.arg("--config").arg(path);
    }
    let output = command.output().expect("run sluice doctor");
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.success())
}

/// The value column of the line for `name`.
fn value<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in:\n{report}"))
}

fn proc(path: &str) -> String {
    std::fs::read_to_string(path).expect("readable").split_whitespace().collect::<Vec<_>>().join("-")
}

#[test]
fn the_reported_limits_are_this_machines() {
    let (report, ok) = doctor(None, None);
    assert!(ok, "the defaults fit this machine:\n{report}");
    assert_eq!(value(&report, "fs.file-max"), proc("/proc/sys/fs/file-max"));
    assert_eq!(value(&report, "fs.nr_open"), proc("/proc/sys/fs/nr_open"));
    assert_eq!(value(&report, "net.core.somaxconn"), proc("/proc/sys/net/core/somaxconn"));
    assert_eq!(value(&report, "net.ipv4.tcp_max_syn_backlog"), proc("/proc/sys/net/ipv4/tcp_max_syn_backlog"));
    assert_eq!(value(&report, "net.ipv4.ip_local_port_range"), proc("/proc/sys/net/ipv4/ip_local_port_range"));
    assert_eq!(value(&report, "net.ipv4.tcp_tw_reuse"), proc("/proc/sys/net/ipv4/tcp_tw_reuse"));
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).expect("line").split_whitespace().collect();
    assert_eq!(value(&report, "nofile.hard"), open_files[4], "the hard limit it inherited");
    let (low, high) = {
        let range = proc("/proc/sys/net/ipv4/ip_local_port_range");
        let (low, high) = range.split_once('-').expect("range");
        (low.parse::<u64>().expect("low"), high.parse::<u64>().expect("high"))
    };
    assert_eq!(value(&report, "ports_per_upstream_address"), (high - low + 1).to_string());
    assert!(report.contains("sysctl -w net.core.somaxconn="), "how to raise each limit");
}

#[test]
fn a_config_the_descriptors_cannot_hold_fails_and_names_them() {
    let config =
        "[server]\nmax_connections = 5000\n[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n\
                  [upstream.u]\nendpoints = [\"127.0.0.1:9\", \"127.0.0.1:10\"]\npool = { max_connections = 100 }\n";
    let (report, ok) = doctor(Some(config), Some(2_000));
    assert!(!ok, "exit code 1:\n{report}");
    assert_eq!(value(&report, "nofile.hard"), "2000");
    assert_eq!(value(&report, "upstream_connections"), "200");
    assert_eq!(value(&report, "clients_by_fds"), (2_000 - 64 - 200).to_string());
    assert!(report.contains("binding: file descriptors"), "{report}");
    assert!(
        report.contains("problem: server.max_connections = 5000 cannot be met: file descriptors allow 1736"),
        "{report}"
    );
    let (report, ok) = doctor(Some(&config.replace("5000", "1000")), Some(2_000));
    assert!(ok, "1,000 fit in 2,000 descriptors:\n{report}");
}
