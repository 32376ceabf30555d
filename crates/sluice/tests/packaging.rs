//! What ships beside the binary: the systemd unit and the container file agree with the
//! binary's commands, and `--help` lists every command.

mod support;

use support::sluice_command;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_systemd_unit_checks_runs_reloads_and_raises_the_descriptor_limit() {
    let unit = repo_file("dist/sluice.service");
    assert!(setting(&unit, "ExecStartPre").ends_with("sluice check --config /etc/sluice/sluice.toml"));
    assert!(setting(&unit, "ExecStart").ends_with("sluice run --config /etc/sluice/sluice.toml"));
    assert_eq!(setting(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID", "systemctl reload is a hot reload");
    assert_eq!(setting(&unit, "KillSignal"), "SIGTERM", "systemctl stop drains");
    let nofile: u64 = setting(&unit, "LimitNOFILE").parse().expect("a number");
    assert!(nofile >= 65_536, "LimitNOFILE={nofile}");
}

#[test]
fn the_container_file_builds_the_dist_profile_and_runs_the_example_config() {
    let file = repo_file("dist/Containerfile");
    assert!(file.contains("cargo build --profile dist --bin sluice"));
    assert!(file.contains("CMD [\"run\", \"--config\", \"/etc/sluice/sluice.toml\"]"));
    assert!(file.contains("USER sluice"), "not root");
    // The config the image ships is valid.
    let output = sluice_command(None)
        .args(["check", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sluice.toml"))
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn help_lists_every_command() {
    let output = sluice_command(None).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "check", "demo", "doctor", "bench", "lab"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} in:\n{help}");
    }
}
