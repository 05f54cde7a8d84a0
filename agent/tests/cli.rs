//! The agent's command line as a newcomer meets it: no NVML library, bad configs,
//! `--version`, the example config. Each error is one line with a non-zero exit code.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_inferwatt-agent"))
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn without_nvml_check_says_which_library_it_tried_and_how_to_point_elsewhere() {
    let out = agent()
        .arg("check")
        .env("INFERWATT_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .output()
        .expect("run agent");
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 means NVML is not available"
    );
    let err = stderr_of(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("'/nonexistent/libnvidia-ml.so.1'"), "{err}");
    assert!(err.contains("INFERWATT_NVML_LIB"), "{err}");
    assert!(err.contains("[nvml]"), "{err}");
}

#[test]
fn a_bad_config_is_one_line_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, key) in [
        ("[sampling]\ninterval_s = 0\n", "sampling.interval_s"),
        ("[site]\npue = 0.5\n", "site.pue"),
        ("[site]\nnmae = \"x\"\n", "nmae"),
        ("[prometheus]\nlisten = \"not an address\"\n", "listen"),
        (
            "[[identify.rules]]\ncmdline_regex = \"(\"\nmodel = \"x\"\n",
            "identify.rules",
        ),
    ] {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write config");
        let out = agent()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run agent");
        assert_eq!(out.status.code(), Some(2), "bad config exits 2: {text}");
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "one line for {text:?}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains(key), "names '{key}': {err}");
    }
    let out = agent()
        .args(["run", "--config", "/nonexistent/agent.toml"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("cannot read config file '/nonexistent/agent.toml'"));
}

#[test]
fn version_and_example_config() {
    let out = agent().arg("--version").output().expect("run agent");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("inferwatt-agent "));
    let out = agent().arg("example-config").output().expect("run agent");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    inferwatt_agent::config::Config::parse(&text, "example").expect("the printed example parses");
}
