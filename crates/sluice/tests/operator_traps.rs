//! What an operator meets in the first hour (issue 22 §1), run as they would: a second
//! `sluice run` on an address already served, a config named without a folder, a
//! self-signed development certificate given as an upstream's CA.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{sluice_command, Sluice, TempDir};

fn config_on(address: &str, upstream: std::net::SocketAddr, listener_extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"{address}\"\n{listener_extra}\n[[route]]\nupstream = \"up\"\n\
         [upstream.up]\nendpoints = [\"{upstream}\"]\n"
    )
}

/// Runs `sluice run` with `config` until it exits (or 5 s: then it is stopped and
/// None is returned): its status and log.
fn run_briefly(config: &str) -> (Option<std::process::ExitStatus>, String) {
    let dir = TempDir::new();
    let path = dir.path.join("sluice.toml");
    std::fs::write(&path, config).expect("write");
    let mut child = sluice_command(None)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a process's exit
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    }
    (status, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sluice_on_a_served_address_fails_instead_of_taking_part_of_its_traffic() {
    let upstream = support::upstream::Upstream::hello().await;
    // The first instance, in the default model (an event loop per core, SO_REUSEPORT
    // between its own workers).
    let first = Sluice::start(&config_on("127.0.0.1:0", upstream.addr, ""));
    let taken = first.addr.to_string();
    let (status, log) = run_briefly(&config_on(&taken, upstream.addr, ""));
    let status = status.expect("the second sluice exits instead of serving");
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("in use"), "the log says the address is in use: {log}");
    // Every request still reaches the first one.
    for _ in 0..20 {
        let (parts, _) = support::client::get_once(first.addr, "/").await;
        assert_eq!(parts.status, http::StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_port_is_the_explicit_way_for_processes_to_share_an_address() {
    let upstream = support::upstream::Upstream::hello().await;
    let first = Sluice::start(&config_on("127.0.0.1:0", upstream.addr, "reuse_port = true"));
    let taken = first.addr.to_string();
    let second = Sluice::start(&config_on(&taken, upstream.addr, "reuse_port = true"));
    assert_eq!(second.addr, first.addr);
}

#[test]
fn relative_paths_are_read_from_the_config_files_folder_whatever_its_path_looks_like() {
    let dir = TempDir::new();
    std::fs::write(
        dir.path.join("ops.toml"),
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nupstream = \"up\"\n\
         [upstream.up]\nendpoints = [\"127.0.0.1:9\"]\n[access_log]\npath = \"access.json\"\n",
    )
    .expect("write");
    for (cwd, path) in [(&dir.path, "ops.toml".to_string()), (&dir.path, "./ops.toml".to_string())] {
        let output = sluice_command(None).current_dir(cwd).args(["check", "--config", &path]).output().expect("check");
        assert!(output.status.success(), "{path}: {}", String::from_utf8_lossy(&output.stderr));
    }
    // From another folder, the file's own folder still anchors the log's path.
    let elsewhere = TempDir::new();
    let relative = format!("../{}/ops.toml", dir.path.file_name().expect("name").to_string_lossy());
    let output = sluice_command(None)
        .current_dir(&elsewhere.path)
        .args(["check", "--config", &relative])
        .output()
        .expect("check");
    assert!(output.status.success(), "{relative}: {}", String::from_utf8_lossy(&output.stderr));
}
