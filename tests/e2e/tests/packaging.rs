//! Packaging (`packaging/`): the systemd units pass `systemd-analyze verify` against the
//! binaries this build made and stay sandboxed, and every configuration file the
//! packages, images and manifests ship is accepted by the binary that reads it and
//! agrees with the unit or manifest around it. The .deb build and install, hadolint and
//! the Kubernetes schema checks run in `packaging/check.sh` (CI, as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use inferwatt_collector::config::Config as CollectorConfig;
use inferwatt_tests::harness;

fn packaging() -> PathBuf {
    harness::repo_root().join("packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The values of `key=` in a unit file, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("run systemd-analyze (Debian package 'systemd'; packaging/check.sh installs it)")
}

/// A copy of the packaged unit whose `ExecStart` runs the binary this build made, so
/// `verify` can check that the executable exists (the packaged path is /usr/bin).
fn unit_for_this_build(name: &str, dir: &Path) -> PathBuf {
    let unit = read(&packaging().join(format!("systemd/{name}.service")));
    let packaged = format!("ExecStart=/usr/bin/{name} ");
    assert!(
        unit.contains(&packaged),
        "{name}.service must start /usr/bin/{name}, where the .deb installs it"
    );
    let built = format!("ExecStart={} ", harness::bin(name).display());
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, unit.replace(&packaged, &built)).expect("write unit copy");
    path
}

#[test]
fn units_pass_systemd_analyze_verify_against_the_built_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["inferwatt-agent", "inferwatt-collector"] {
        let path = unit_for_this_build(name, dir.path());
        let out = systemd_analyze(&["verify", path.to_str().expect("utf-8 path")]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // verify exits 0 on unknown keys and only prints them: any output fails.
        assert!(
            out.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {name}.service: {text}"
        );
        let out = systemd_analyze(&[
            "security",
            "--offline=yes",
            "--threshold=20",
            path.to_str().expect("utf-8 path"),
        ]);
        assert!(
            out.status.success(),
            "{name}.service exposure is above 2.0:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn units_keep_the_sandbox_the_readme_promises() {
    for (name, user) in [
        ("inferwatt-agent", "inferwatt-agent"),
        ("inferwatt-collector", "inferwatt"),
    ] {
        let unit = read(&packaging().join(format!("systemd/{name}.service")));
        for (key, want) in [
            ("User", user),
            ("Group", user),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("DevicePolicy", "closed"),
            ("CapabilityBoundingSet", ""),
            ("SystemCallFilter", "@system-service"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("ProtectKernelTunables", "yes"),
        ] {
            assert!(
                unit_values(&unit, key).iter().any(|v| v == want),
                "{name}.service: expected '{key}={want}'"
            );
        }
        assert!(
            unit_values(&unit, "DynamicUser").iter().all(|v| v == "no"),
            "{name}.service: a fixed user from sysusers.d, not DynamicUser"
        );
        // The sysusers file creates exactly the unit's user.
        let sysusers = read(&packaging().join(format!("systemd/{name}.sysusers")));
        assert!(
            sysusers
                .lines()
                .any(|l| l.split_whitespace().take(2).eq(["u", user])),
            "{name}.sysusers must create user '{user}'"
        );
    }
    let agent = read(&packaging().join("systemd/inferwatt-agent.service"));
    let devices = unit_values(&agent, "DeviceAllow");
    for want in ["char-nvidia-frontend rw", "/dev/nvidiactl rw"] {
        assert!(
            devices.iter().any(|d| d == want),
            "agent unit must allow '{want}'"
        );
    }
    assert!(
        !devices.iter().any(|d| d.contains("nvidia-uvm")),
        "NVML needs no /dev/nvidia-uvm"
    );
}

/// Runs `inferwatt-agent check --config FILE` with no NVML library: exit 3 means the
/// file was accepted (then NVML was missing), exit 2 that it was rejected.
fn agent_accepts(config: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(harness::bin("inferwatt-agent"))
        .args(["check", "--config"])
        .arg(config)
        .env(
            "INFERWATT_NVML_LIB",
            dir.path().join("no-libnvidia-ml.so.1"),
        )
        .output()
        .expect("run inferwatt-agent");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{} was not accepted: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The string value of `key = "..."` inside `[table]` of a small TOML file.
fn toml_string(text: &str, table: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = t.to_string();
        } else if current == table {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

#[test]
fn agent_configs_are_accepted_and_match_the_units_state_directory() {
    let root = harness::repo_root();
    let unit = read(&packaging().join("systemd/inferwatt-agent.service"));
    assert_eq!(
        unit_values(&unit, "StateDirectory"),
        ["inferwatt-agent"],
        "agent unit StateDirectory"
    );
    let example = root.join("agent/inferwatt-agent.example.toml");
    agent_accepts(&example);
    assert_eq!(
        toml_string(&read(&example), "state", "dir").as_deref(),
        Some("/var/lib/inferwatt-agent"),
        "the .deb's agent.toml state dir must be the unit's StateDirectory"
    );
    let container = packaging().join("container/agent.toml");
    agent_accepts(&container);
    assert_eq!(
        toml_string(&read(&container), "prometheus", "listen").as_deref(),
        Some("0.0.0.0:9464"),
        "the image's agent must be scrapable from outside the container"
    );
}

#[test]
fn collector_configs_are_accepted_and_keep_the_database_in_the_state_directory() {
    let unit = read(&packaging().join("systemd/inferwatt-collector.service"));
    assert_eq!(unit_values(&unit, "StateDirectory"), ["inferwatt"]);
    let exec = unit_values(&unit, "ExecStart").concat();
    let deb_config = packaging().join("config/collector.toml");
    assert!(
        exec.ends_with("--config /etc/inferwatt/collector.toml"),
        "collector unit ExecStart '{exec}' must read the packaged config"
    );
    for (path, loopback) in [
        (deb_config, true),
        (packaging().join("kubernetes/collector.toml"), false),
    ] {
        let config = CollectorConfig::from_toml(&read(&path), &path)
            .unwrap_or_else(|e| panic!("{} rejected: {e}", path.display()));
        assert!(
            config.db_path.starts_with("/var/lib/inferwatt/"),
            "{}: db_path '{}' must be in /var/lib/inferwatt",
            path.display(),
            config.db_path.display()
        );
        assert_eq!(
            config.listen.ip().is_loopback(),
            loopback,
            "{}: listen '{}'",
            path.display(),
            config.listen
        );
        assert!(
            config.report_needs_token() || loopback,
            "{}: off loopback, reports must need a token",
            path.display()
        );
    }
}
