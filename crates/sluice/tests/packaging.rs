//! What ships beside the binary: the systemd unit, the container file and the
//! Kubernetes manifests agree with the binary's commands and defaults, and `--help`
//! lists every command.

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
    assert_eq!(setting(&unit, "LogsDirectory"), "sluice", "ProtectSystem=strict leaves it /var/log/sluice to write");
    let nofile: u64 = setting(&unit, "LimitNOFILE").parse().expect("a number");
    assert!(nofile >= 65_536, "LimitNOFILE={nofile}");
}

#[test]
fn the_container_file_builds_the_dist_profile_and_runs_the_example_config() {
    let file = repo_file("dist/Containerfile");
    assert!(file.contains("cargo build --profile dist --bin sluice"));
    assert!(file.contains("CMD [\"run\", \"--config\", \"/etc/sluice/sluice.toml\"]"));
    assert!(file.contains("USER 10001"), "not root, and numeric for Kubernetes' runAsNonRoot");
    // The config the image ships is valid and reachable through a published port.
    assert!(file.contains("COPY dist/container.toml /etc/sluice/sluice.toml"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for config in ["dist/container.toml", "examples/sluice.toml"] {
        let output = sluice_command(None).args(["check", "--config"]).arg(root.join(config)).output().expect("run");
        assert!(output.status.success(), "{config}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let shipped = sluice_config::load(&root.join("dist/container.toml")).expect("container.toml");
    assert!(shipped.listeners.iter().all(|l| l.address.ip().is_unspecified()), "published ports reach it");
    // The build context is the source, not local builds or history.
    let ignored = repo_file(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == "target/") && ignored.lines().any(|l| l.trim() == ".git/"));
}

#[test]
fn help_lists_every_command() {
    let output = sluice_command(None).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "check", "demo", "doctor", "bench", "lab"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} in:\n{help}");
    }
}

/// `dist/kubernetes` rendered offline (`kubectl kustomize`), its field names checked
/// against the Kubernetes API's models (`scripts/k8s-check.py`, with the `kubernetes`
/// client's wheel that scripts/test.sh downloads): the documents as JSON.
fn kubernetes_manifests(deployment: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = support::TempDir::new();
    for entry in std::fs::read_dir(root.join("dist/kubernetes")).expect("dist/kubernetes") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path.join(path.file_name().expect("name"))).expect("copy");
    }
    if let Some(deployment) = deployment {
        std::fs::write(dir.path.join("deployment.yaml"), deployment).expect("write");
    }
    let rendered = std::process::Command::new("kubectl").arg("kustomize").arg(&dir.path).output().expect("kubectl");
    if !rendered.status.success() {
        return Err(format!("kubectl kustomize: {}", String::from_utf8_lossy(&rendered.stderr)));
    }
    let wheel = std::env::var("SLUICE_K8S_SCHEMA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target/k8s-schema/kubernetes-31.0.0-py2.py3-none-any.whl"));
    assert!(wheel.is_file(), "{} is missing: scripts/test.sh downloads it", wheel.display());
    let mut check = std::process::Command::new("python3")
        .arg(root.join("scripts/k8s-check.py"))
        .arg(&wheel)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), &rendered.stdout).expect("write");
    let checked = check.wait_with_output().expect("k8s-check");
    if !checked.status.success() {
        return Err(String::from_utf8_lossy(&checked.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&checked.stdout).expect("JSON"))
}

fn document<'a>(documents: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_manifests_parse_use_only_api_fields_and_agree_with_sluice() {
    let documents = kubernetes_manifests(None).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = documents.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // The ConfigMap's sluice.toml is valid, and read with sluice's own defaults.
    let toml = document(&documents, "ConfigMap")["data"]["sluice.toml"].as_str().expect("sluice.toml");
    let dir = support::TempDir::new();
    let path = dir.path.join("sluice.toml");
    std::fs::write(&path, toml).expect("write");
    let output = sluice_command(None).args(["check", "--config"]).arg(&path).output().expect("run");
    assert!(output.status.success(), "sluice check: {}", String::from_utf8_lossy(&output.stderr));
    let config = sluice_config::load(&path).expect("config");
    let admin = config.admin.as_ref().expect("an admin listener for the probes");
    assert!(admin.address.ip().is_unspecified(), "the kubelet reaches the admin port from outside the pod");
    assert!(config.server.config_watch.is_some(), "a ConfigMap change reloads without a restart");

    let deployment = document(&documents, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = |name: &str| {
        container["ports"].as_array().expect("ports").iter().find(|p| p["name"] == name).expect("port")["containerPort"]
            .as_u64()
            .expect("number")
    };
    assert_eq!(port("admin"), u64::from(admin.address.port()));
    assert_eq!(port("http"), u64::from(config.listeners[0].address.port()));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    // The preStop hook drains (SIGTERM to sluice) after a pause; the grace period is
    // above the pause and sluice's drain timeout together.
    let hook = container["lifecycle"]["preStop"]["exec"]["command"][2].as_str().expect("preStop command");
    assert!(hook.contains("kill -TERM 1"), "the preStop starts sluice's drain: {hook}");
    let pause: u64 =
        hook.strip_prefix("sleep ").and_then(|r| r.split(';').next()).and_then(|n| n.parse().ok()).expect("sleep N");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("grace");
    assert!(grace > pause + config.server.drain_timeout.as_secs(), "grace {grace} s vs {pause} s + the drain timeout");
    // The config is the mounted ConfigMap, as a folder (a subPath mount never updates).
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    let config_path = args.iter().skip_while(|a| **a != "--config").nth(1).expect("--config PATH");
    let mount =
        container["volumeMounts"].as_array().expect("mounts").iter().find(|m| m["name"] == "config").expect("mount");
    assert_eq!(std::path::Path::new(config_path).parent().expect("folder").to_str(), mount["mountPath"].as_str());
    assert!(mount.get("subPath").is_none(), "a subPath mount is never updated");
    let volume = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "config").expect("volume");
    assert_eq!(volume["configMap"]["name"], document(&documents, "ConfigMap")["metadata"]["name"]);
    assert!(config_path.ends_with("sluice.toml"));

    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &document(&documents, "Service")["spec"]["selector"],
        &document(&documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ] {
        for (key, value) in selector.as_object().expect("selector") {
            assert_eq!(&labels[key], value, "selects the pods by {key}");
        }
    }
    let hpa = document(&documents, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
    assert!(container["resources"]["requests"]["cpu"].is_string(), "the autoscaler scales on the CPU request");
}

#[test]
fn a_misspelt_kubernetes_field_is_caught_with_its_path() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deployment = std::fs::read_to_string(root.join("dist/kubernetes/deployment.yaml")).expect("read");
    let wrong = deployment.replace("terminationGracePeriodSeconds", "terminationGracePeriod");
    let error = kubernetes_manifests(Some(&wrong)).expect_err("an unknown field");
    assert!(
        error.contains("Deployment/sluice.spec.template.spec.terminationGracePeriod: not a field of V1PodSpec"),
        "{error}"
    );
}
