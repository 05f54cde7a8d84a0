//! `inferwatt-agent check` on the simulated driver, on a MIG GPU: it names the GPUs,
//! the MIG instances, each process's model and the rule that found it, which NVML calls
//! work, and one interval's points — where MIG energy is split by instance size. With no
//! `[site]` factors configured, `check` warns about each, the site point leaves them
//! unset on the wire, and the collector's report uses the cited references and says so.

use std::process::Command;

use inferwatt_core::lineproto::{decode, Precision};
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness;
use serde_json::json;

#[test]
fn check_explains_a_mig_gpu_and_splits_by_instance_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = model_process(
        "vllm",
        &["serve", "Qwen/Qwen2.5-1.5B-Instruct"],
        None,
        None,
        1.0,
    );
    let large = model_process(
        "/usr/local/bin/text-generation-launcher",
        &[
            "--model-id",
            "mistralai/Mistral-7B-Instruct-v0.3",
            "--port",
            "8080",
        ],
        None,
        None,
        1.0,
    );
    let scenario = json!({
        "epoch_unix_ms": harness::now_unix_ms() - 5000,
        "gpus": [{
            "uuid": "GPU-aa000000-0000-4000-8000-00000000a100",
            "name": "NVIDIA A100-SXM4-80GB",
            "idle_w": 60.0, "max_w": 400.0,
            "memory_total_bytes": 85_899_345_920u64,
            "energy_counter": true,
            "power_reading": "average_1s",
            "mig": {"instances": [
                {"gi_id": 1, "ci_id": 0, "slices": 3, "uuid": "MIG-11111111-1111-4111-8111-111111111111"},
                {"gi_id": 2, "ci_id": 0, "slices": 4, "uuid": "MIG-22222222-2222-4222-8222-222222222222"}
            ]},
            "processes": [
                {"pid": small.pid(), "used_memory_bytes": 4_000_000_000u64, "start_s": 0.0, "mig_gi": 1},
                {"pid": large.pid(), "used_memory_bytes": 16_000_000_000u64, "start_s": 0.0, "mig_gi": 2}
            ],
            "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [
                {"pid": small.pid(), "sm_util": 30.0, "weight": 1.0},
                {"pid": large.pid(), "sm_util": 50.0, "weight": 1.0}
            ]}]
        }]
    });
    let path = dir.path().join("scenario.json");
    std::fs::write(&path, scenario.to_string()).expect("scenario");
    let out = Command::new(harness::bin("inferwatt-agent"))
        .arg("check")
        .env("INFERWATT_NVML_LIB", harness::sim_library())
        .env("FAKE_NVML_SCENARIO", &path)
        .env_remove("INFERWATT_AGENT_CONFIG")
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "GPUs: 1",
        "NVIDIA A100-SXM4-80GB",
        "MIG on: MIG-11111111-1111-4111-8111-111111111111 (3 slices), MIG-22222222-2222-4222-8222-222222222222 (4 slices)",
        "nvmlDeviceGetTotalEnergyConsumption (mJ)",
        "model 'Qwen/Qwen2.5-1.5B-Instruct' (server vllm)",
        "model 'mistralai/Mistral-7B-Instruct-v0.3' (server tgi)",
        "One interval (1 s) would ship:",
    ] {
        assert!(text.contains(needle), "check output lacks {needle:?}:\n{text}");
    }
    // The shipped interval: MIG energy split by instance size, 3 : 4.
    let body = text.split("would ship:\n").nth(1).expect("points");
    let points = decode(body.as_bytes(), Precision::Nanoseconds, 0).expect("valid line protocol");
    let active = |model: &str| {
        points
            .iter()
            .find(|p| p.measurement == "model_energy" && p.tag_value("model") == Some(model))
            .map(|p| {
                assert_eq!(
                    p.field_value("method").and_then(|v| v.as_str()),
                    Some("mig")
                );
                p.field_f64("active_j").expect("active_j") + p.field_f64("idle_j").expect("idle_j")
            })
            .unwrap_or_else(|| panic!("no model_energy for {model}:\n{body}"))
    };
    // Unset is not 1.0: no `pue` on the wire, a warning here, a cited default there.
    for needle in [
        "warning: PUE not configured (site.pue): 1.56 from Uptime Institute",
        "warning: WUE not configured (site.wue_l_per_kwh): 0.55",
        "warning: EWIF not configured (site.ewif_l_per_kwh): 3.142",
    ] {
        assert!(
            text.contains(needle),
            "check output lacks {needle:?}:\n{text}"
        );
    }
    let site = points
        .iter()
        .find(|p| p.measurement == "site")
        .unwrap_or_else(|| panic!("no site point:\n{body}"));
    assert!(
        site.field_value("pue").is_none() && site.field_value("wue_l_per_kwh").is_none(),
        "unset factors are left off the wire: {site:?}"
    );
    let lp = dir.path().join("interval.lp");
    std::fs::write(&lp, body).expect("write interval");
    let db = dir.path().join("c.db");
    let import = Command::new(harness::bin("inferwatt-collector"))
        .args(["import", "--db"])
        .arg(&db)
        .arg(&lp)
        .output()
        .expect("import");
    assert!(
        import.status.success(),
        "import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let report = Command::new(harness::bin("inferwatt-collector"))
        .args([
            "report",
            "--format",
            "json",
            "--from",
            "2020-01-01T00:00:00Z",
            "--db",
        ])
        .arg(&db)
        .output()
        .expect("report");
    assert!(
        report.status.success(),
        "report: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report JSON");
    let factor = |name: &str| {
        report["methodology"]["factors"]
            .as_array()
            .expect("factors")
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} factor: {report}"))
    };
    let pue = factor("pue");
    assert_eq!(pue["value"], 1.56, "{pue}");
    assert!(
        pue["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("default (no PUE configured): Uptime Institute"),
        "{pue}"
    );
    assert_eq!(factor("wue")["value"], 0.55);
    let warnings = report["data_quality"]["warnings"].to_string();
    for needle in [
        "site 'default': PUE not configured, industry average 1.56 (Uptime Institute",
        "site 'default': WUE not configured, 0.55 L/kWh",
    ] {
        assert!(
            warnings.contains(needle),
            "warnings lack {needle:?}: {warnings}"
        );
    }

    let (s, l) = (
        active("Qwen/Qwen2.5-1.5B-Instruct"),
        active("mistralai/Mistral-7B-Instruct-v0.3"),
    );
    assert!(
        s > 0.0 && ((s / l) - 0.75).abs() < 1e-9,
        "3:4 split, got {s} J : {l} J"
    );
}
