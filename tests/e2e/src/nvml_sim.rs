//! Where the simulated NVIDIA driver (`libnvml_sim.so`, crate `inferwatt-nvml-sim`) is.
//!
//! Tests load it through nvml-wrapper (`INFERWATT_NVML_LIB`) or as `libnvidia-ml.so.1`
//! through `LD_LIBRARY_PATH`; the scenario goes in `nvml_sim::SCENARIO_ENV`.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILE: &str = "libnvml_sim.so";

/// The simulator's cdylib for this test run.
///
/// Prefers `target/<profile>/deps/libnvml_sim.so`, which cargo rebuilds with every test
/// build of a package depending on `inferwatt-nvml-sim`; then `target/<profile>/`; if
/// neither exists, runs `$CARGO build -p inferwatt-nvml-sim`. Panics with the fix if the
/// library cannot be had.
pub fn nvml_sim_library() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let exe_dir = exe.parent().expect("test executable has a directory");
    let profile_dir = if exe_dir.ends_with("deps") {
        exe_dir.parent().unwrap_or(exe_dir)
    } else {
        exe_dir
    };
    let candidates = [profile_dir.join("deps").join(FILE), profile_dir.join(FILE)];
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return found.clone();
    }
    build(profile_dir);
    let built = profile_dir.join(FILE);
    assert!(
        built.exists(),
        "'{}' is still missing after building: run `cargo build -p inferwatt-nvml-sim`",
        built.display()
    );
    built
}

fn build(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "inferwatt-nvml-sim"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run '{}': {e}", Path::new(&cargo).display()));
    assert!(
        status.success(),
        "`cargo build -p inferwatt-nvml-sim` failed ({status}): fix the build of tests/nvml-sim"
    );
}
