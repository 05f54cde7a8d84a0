//! The agent on the simulated driver where real hosts differ from the happy path:
//! - a GPU whose per-process utilisation samples never arrive splits its active energy by the
//!   processes' memory (70 GB : 10 GB → 7 : 1), not equally;
//! - a GPU whose process query fails for a while books those intervals to
//!   `_unattributed` (who ran is unknown), never to `_idle`, and loses no joule.

use std::process::Command;
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, FileAgent, Proc};
use serde_json::json;

const GPU_MEM: &str = "GPU-fa000000-0000-4000-8000-000000000001";
const GPU_FAIL: &str = "GPU-fa000000-0000-4000-8000-000000000002";

fn f(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

#[test]
fn missing_samples_split_by_memory_and_a_failed_process_query_is_unattributed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let big = model_process(
        "vllm",
        &["serve", "meta-llama/Llama-3.1-70B-Instruct"],
        None,
        None,
        1.0,
    );
    let small = model_process(
        "vllm",
        &["serve", "Qwen/Qwen2.5-7B-Instruct"],
        None,
        None,
        1.0,
    );
    let solo = model_process(
        "vllm",
        &["serve", "mistralai/Mistral-7B-Instruct-v0.3"],
        None,
        None,
        1.0,
    );
    let gb = 1_000_000_000u64;
    let epoch = harness::now_unix_ms();
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [
            {
                "uuid": GPU_MEM, "name": "NVIDIA H100 80GB HBM3",
                "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
                "util_samples_lost": true,
                "processes": [
                    {"pid": big.pid(), "used_memory_bytes": 70 * gb, "start_s": 0.0},
                    {"pid": small.pid(), "used_memory_bytes": 10 * gb, "start_s": 0.0}
                ],
                "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [
                    {"pid": big.pid(), "sm_util": 40.0, "weight": 1.0},
                    {"pid": small.pid(), "sm_util": 40.0, "weight": 1.0}
                ]}]
            },
            {
                "uuid": GPU_FAIL, "name": "NVIDIA H100 80GB HBM3",
                "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
                "process_query_fails_s": [[0.0, 600.0]],
                "processes": [{"pid": solo.pid(), "used_memory_bytes": 20 * gb, "start_s": 0.0}],
                "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [
                    {"pid": solo.pid(), "sm_util": 60.0, "weight": 1.0}
                ]}]
            }
        ]
    });
    let agent = FileAgent::prepare(
        root,
        &scenario,
        "[site]\npue = 1.2\nwue_l_per_kwh = 0.3\newif_l_per_kwh = 3.0\n[sampling.idle_power_w]\n\"NVIDIA H100 80GB HBM3\" = 70.0\n[server_metrics]\ndiscover = false\n[host]\nrapl = false\n",
    );
    let mut run = agent.spawn();
    agent.wait_for_points("gpu", 8);
    run.signal("TERM");
    let points = agent.points();
    let rows = |uuid: &str| -> Vec<&Point> {
        points
            .iter()
            .filter(|p| p.measurement == "model_energy" && p.tag_value("gpu_uuid") == Some(uuid))
            .collect()
    };

    // Memory split, 7 : 1 of the active energy, in every interval.
    let by_model = |model: &str| -> f64 {
        rows(GPU_MEM)
            .iter()
            .filter(|p| p.tag_value("model") == Some(model))
            .map(|p| {
                assert_eq!(
                    p.field_value("method").and_then(|v| v.as_str()),
                    Some("memory"),
                    "{p:?}"
                );
                f(p, "active_j")
            })
            .sum()
    };
    let (b, s) = (
        by_model("meta-llama/Llama-3.1-70B-Instruct"),
        by_model("Qwen/Qwen2.5-7B-Instruct"),
    );
    assert!(
        b > 0.0 && (b / s - 7.0).abs() < 1e-6,
        "70:10 GB split, got {b} J : {s} J"
    );

    // Failed process query: every joule of that GPU is `_unattributed`, none `_idle`.
    let gpu_j: f64 = points
        .iter()
        .filter(|p| p.measurement == "gpu" && p.tag_value("gpu_uuid") == Some(GPU_FAIL))
        .map(|p| f(p, "energy_j"))
        .sum();
    let fail_rows = rows(GPU_FAIL);
    assert!(!fail_rows.is_empty());
    for p in &fail_rows {
        assert_eq!(p.tag_value("model"), Some("_unattributed"), "{p:?}");
    }
    let attributed: f64 = fail_rows
        .iter()
        .map(|p| f(p, "active_j") + f(p, "idle_j"))
        .sum();
    assert!(
        gpu_j > 0.0 && (attributed - gpu_j).abs() < 1e-6 * gpu_j,
        "{attributed} J vs {gpu_j} J"
    );
}

/// Host energy never exceeds what RAPL measured, whatever CPU the agent itself may use:
/// the agent runs pinned to one CPU (`taskset`, which `available_parallelism()` follows
/// as it follows a cgroup quota) while two GPU processes each keep a CPU busy. Splitting
/// by the agent's own CPU count charged each of them the whole host (2× RAPL).
#[test]
fn host_energy_charged_to_models_stays_within_rapl_under_a_cpu_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let burner = || {
        Proc::spawn(
            "burner",
            Command::new("sh").args(["-c", "while :; do :; done"]),
        )
    };
    let (a, b) = (burner(), burner());
    let powercap = root.join("powercap");
    let rapl = harness::fake_powercap(&powercap, 100.0, 0.0);
    let gb = 1_000_000_000u64;
    let scenario = json!({
        "epoch_unix_ms": harness::now_unix_ms(),
        "gpus": [{
            "uuid": GPU_MEM, "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
            "processes": [
                {"pid": a.pid(), "used_memory_bytes": 10 * gb, "start_s": 0.0},
                {"pid": b.pid(), "used_memory_bytes": 10 * gb, "start_s": 0.0}
            ],
            "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [
                {"pid": a.pid(), "sm_util": 50.0, "weight": 1.0},
                {"pid": b.pid(), "sm_util": 50.0, "weight": 1.0}
            ]}]
        }]
    });
    let agent = FileAgent::prepare(
        root,
        &scenario,
        &format!(
            "[server_metrics]\ndiscover = false\n[host]\nrapl = true\npowercap_root = \"{}\"\n",
            powercap.display()
        ),
    );
    let mut run = Proc::spawn(
        "inferwatt-agent",
        &mut agent.command(&["taskset", "-c", "0"]),
    );
    agent.wait_for_points("host_energy", 6);
    run.signal("TERM");
    rapl.store(false, std::sync::atomic::Ordering::Relaxed);
    let points = agent.points();
    let rapl_j: f64 = points
        .iter()
        .filter(|p| p.measurement == "host_energy")
        .map(|p| f(p, "cpu_j") + f(p, "dram_j"))
        .sum();
    let charged: f64 = points
        .iter()
        .filter(|p| p.measurement == "model_energy")
        .map(|p| f(p, "host_j"))
        .sum();
    assert!(
        charged <= rapl_j * (1.0 + 1e-9),
        "models charged {charged} J of host energy, RAPL measured {rapl_j} J"
    );
    // Two of the two CPUs busy with the GPU processes: most of the host is theirs.
    assert!(
        charged > 0.3 * rapl_j,
        "the busy GPU processes were charged {charged} J of {rapl_j} J"
    );
}

/// The agent's wall clock stepped 2 s back, then 2 s forward (libfaketime preloaded,
/// offsets changed at run time; the simulated GPU keeps true time as a real one does):
/// no interval is dropped, none is longer than the sampling interval, every counter
/// difference is booked, and the stepped intervals carry `clock_step_s`.
#[test]
fn wall_clock_steps_lose_no_energy_and_are_flagged() {
    let faketime = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libfaketime (Debian package faketime; .ci/run installs it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let model = model_process(
        "vllm",
        &["serve", "mistralai/Mistral-7B-Instruct-v0.3"],
        None,
        None,
        1.0,
    );
    let scenario = json!({
        "epoch_unix_ms": harness::now_unix_ms(),
        "gpus": [{
            "uuid": GPU_MEM, "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
            "processes": [{"pid": model.pid(), "used_memory_bytes": 20_000_000_000u64, "start_s": 0.0}],
            "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [
                {"pid": model.pid(), "sm_util": 60.0, "weight": 1.0}
            ]}]
        }]
    });
    let offset = root.join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset");
    let agent = FileAgent::prepare(
        root,
        &scenario,
        "[server_metrics]\ndiscover = false\n[host]\nrapl = false\n",
    );
    let mut run = Proc::spawn(
        "inferwatt-agent",
        agent
            .command(&[])
            .env("LD_PRELOAD", faketime)
            .env("FAKETIME_TIMESTAMP_FILE", &offset)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1"),
    );
    let gpu_points = || -> Vec<Point> {
        agent
            .points()
            .into_iter()
            .filter(|p| p.measurement == "gpu")
            .collect()
    };
    harness::wait_for("3 intervals", Duration::from_secs(30), || {
        (gpu_points().len() >= 3).then_some(())
    });
    std::fs::write(&offset, "-2\n").expect("step back");
    let n = gpu_points().len();
    harness::wait_for("3 more intervals", Duration::from_secs(30), || {
        (gpu_points().len() >= n + 3).then_some(())
    });
    std::fs::write(&offset, "+0\n").expect("step forward");
    let n = gpu_points().len();
    harness::wait_for("3 more intervals", Duration::from_secs(30), || {
        (gpu_points().len() >= n + 3).then_some(())
    });
    run.signal("TERM");

    let points = gpu_points();
    let steps: Vec<f64> = points
        .iter()
        .filter_map(|p| p.field_f64("clock_step_s"))
        .collect();
    assert!(
        steps.iter().any(|s| (s + 2.0).abs() < 0.2) && steps.iter().any(|s| (s - 2.0).abs() < 0.2),
        "a -2 s and a +2 s step flagged, got {steps:?}"
    );
    for p in &points {
        let dt = f(p, "interval_s");
        assert!(
            dt > 0.5 && dt < 1.5,
            "interval_s {dt} from the monotonic clock: {p:?}"
        );
    }
    // Every counter difference after the first interval is booked, none dropped.
    let counter = |p: &Point| p.field_f64("energy_counter_mj").expect("counter") / 1000.0;
    let booked: f64 = points[1..].iter().map(|p| f(p, "energy_j")).sum();
    let advanced = counter(&points[points.len() - 1]) - counter(&points[0]);
    assert!(
        (booked - advanced).abs() < 1e-6 * advanced.max(1.0),
        "booked {booked} J, the counter advanced {advanced} J"
    );
}
