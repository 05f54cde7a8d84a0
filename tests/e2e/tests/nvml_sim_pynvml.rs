//! Python's pynvml (nvidia-ml-py) loads the simulator as `libnvidia-ml.so.1` through
//! `LD_LIBRARY_PATH` and reads the scenario's GPUs; what it saw is checked against the
//! scenario and the simulator's ground truth. Needs `python3` with `nvidia-ml-py`; fails,
//! never skips, without them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use inferwatt_tests::nvml_sim_library;
use nvml_sim::Scenario;
use serde_json::Value;

const DEAD_PID: u32 = 2_000_000_000;

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit in i64")
}

fn num(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {v}"))
}

#[test]
fn pynvml_reads_the_scenario() {
    let mut child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn `sleep`");
    let pid = child.id();
    let epoch_ms = now_ms() - 10_000;
    let json = format!(
        r#"{{"epoch_unix_ms": {epoch_ms}, "gpus": [
  {{"uuid": "GPU-11111111-2222-3333-4444-555555555555", "name": "NVIDIA H100 80GB HBM3",
    "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85899345920,
    "initial_counter_mj": 987654321,
    "processes": [{{"pid": {pid}, "used_memory_bytes": 30000000000}},
                  {{"pid": {DEAD_PID}, "used_memory_bytes": 1}}],
    "phases": [{{"start_s": 0, "end_s": 3600, "procs": [{{"pid": {pid}, "sm_util": 40.0}}]}}]}},
  {{"uuid": "GPU-old", "name": "Tesla P100-PCIE-16GB", "idle_w": 30.0, "max_w": 250.0,
    "memory_total_bytes": 17179869184, "energy_counter": false, "power_reading": "instant"}}
]}}"#
    );
    let scenario = Scenario::from_json(&json).expect("scenario is valid");
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario_path = dir.path().join("scenario.json");
    std::fs::write(&scenario_path, &json).expect("write scenario");
    std::os::unix::fs::symlink(nvml_sim_library(), dir.path().join("libnvidia-ml.so.1"))
        .expect("link libnvidia-ml.so.1");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pynvml_reads_scenario.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("1.0")
        .env("LD_LIBRARY_PATH", dir.path())
        .env(nvml_sim::SCENARIO_ENV, &scenario_path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and `python3 -m pip install nvidia-ml-py`")
        });
    let _ = child.kill();
    let _ = child.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}); if pynvml is missing, `python3 -m pip install nvidia-ml-py`. stderr:\n{stderr}",
        script.display(),
        out.status
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");

    assert_eq!(seen["driver_version"], "550.54.15");
    assert_eq!(seen["device_count"], 2);
    let devices = seen["devices"].as_array().expect("devices array");
    for (d, g) in devices.iter().zip(&scenario.gpus) {
        assert_eq!(d["name"], g.name.as_str());
        assert_eq!(d["uuid"], g.uuid.as_str());
    }

    // GPU 0: steady 70 + 630·0.4 W, so both power readings are exact.
    let d0 = &devices[0];
    assert_eq!(num(&d0["power_mw"]["value"], "power"), 70_000 + 252_000);
    let procs = d0["processes"].as_array().expect("processes array");
    assert_eq!(procs.len(), 1, "only the live pid is listed: {procs:?}");
    assert_eq!(num(&procs[0]["pid"], "pid"), i64::from(pid));
    assert_eq!(num(&procs[0]["used_memory_bytes"], "used"), 30_000_000_000);
    assert_eq!(num(&d0["memory"]["used"], "memory used"), 30_000_000_000);

    // Energy: Δcounter against the truth over the 100-ms boundaries the reads fell in.
    let reads = d0["energy_mj"].as_array().expect("two energy reads");
    let q = |t_unix: i64| (t_unix - epoch_ms).div_euclid(100) * 100 + epoch_ms;
    let (r1, r2) = (&reads[0], &reads[1]);
    let delta_mj = num(&r2["value"], "energy") - num(&r1["value"], "energy");
    let from = q(num(&r1["before_ms"], "t"));
    let to = q(num(&r2["before_ms"], "t"));
    let truth = scenario.truth_unix_ms(from, to).expect("epoch is set").gpus[0].energy_j;
    assert!(
        truth > 250.0,
        "window of about 1 s at 322 W, truth {truth} J"
    );
    let err = (delta_mj as f64 / 1000.0 - truth).abs() / truth;
    assert!(
        err < 0.01,
        "Δcounter {delta_mj} mJ vs truth {truth} J: {:.3}%",
        err * 100.0
    );
    let counter_at_start = 987_654_321 + 322_000 * (from - epoch_ms) / 1000;
    assert!(
        (num(&r1["value"], "energy") - counter_at_start).abs() <= 322 * 100,
        "counter {} vs about {counter_at_start}",
        r1["value"]
    );

    // GPU 1: no energy counter (pre-Volta), instant idle power, no processes.
    let d1 = &devices[1];
    assert_eq!(
        d1["energy_mj"][0]["value"]["code"], 3,
        "NVML_ERROR_NOT_SUPPORTED"
    );
    assert_eq!(num(&d1["power_mw"]["value"], "power"), 30_000);
    assert_eq!(d1["processes"].as_array().map(Vec::len), Some(0));
}
