//! MIG with GPM on the simulated driver: two H100s cut into a 3-slice and a 4-slice
//! instance, the small one lightly loaded and the large one heavily, utilisations
//! redrawn every 1.5–3 s. With GPM (`nvmlGpmMigSampleGet`, SM utilisation per instance)
//! the split follows each instance's measured activity (`mig_gpm`) and each model's active
//! energy is within 2% of ground truth; the same GPU without GPM splits by instance size
//! (`mig`) and is far off (printed beside it). Conservation is exact in every interval.

use std::time::Duration;

use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, FileAgent};
use inferwatt_tests::split::{assert_conserved, errors, lcg, show, window};
use nvml_sim::Scenario;
use serde_json::{json, Value};

const GPM: &str = "GPU-9a000000-0000-4000-8000-000000000001";
const NO_GPM: &str = "GPU-9a000000-0000-4000-8000-000000000002";
const RUN_S: f64 = 40.0;
const FROM_S: f64 = 10.0;
const TO_S: f64 = 38.0;

fn gpu(uuid: &str, gpm: bool, small: u32, large: u32, n: u32) -> Value {
    let mut seed = 17;
    let mut phases = Vec::new();
    let mut t = 0.0;
    while t < 600.0 {
        let len = 1.5 + 1.5 * lcg(&mut seed);
        // Percent of the whole GPU: the 3-slice instance can reach 42.9%, the 4-slice 57%.
        let (a, b) = (3.0 + 12.0 * lcg(&mut seed), 25.0 + 30.0 * lcg(&mut seed));
        phases.push(json!({"start_s": t, "end_s": t + len, "procs": [
            {"pid": small, "sm_util": a, "weight": 1.0},
            {"pid": large, "sm_util": b, "weight": 1.0}
        ]}));
        t += len;
    }
    json!({
        "uuid": uuid, "name": "NVIDIA H100 80GB HBM3",
        "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
        "gpm": gpm,
        "mig": {"instances": [
            {"gi_id": 1, "ci_id": 0, "slices": 3, "uuid": format!("MIG-9a{n}11111-1111-4111-8111-111111111111")},
            {"gi_id": 2, "ci_id": 0, "slices": 4, "uuid": format!("MIG-9a{n}22222-2222-4222-8222-222222222222")}
        ]},
        "processes": [
            {"pid": small, "used_memory_bytes": 10_000_000_000u64, "start_s": 0.0, "mig_gi": 1},
            {"pid": large, "used_memory_bytes": 30_000_000_000u64, "start_s": 0.0, "mig_gi": 2}
        ],
        "phases": phases,
    })
}

#[test]
fn gpm_splits_mig_instances_by_measured_activity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = |m: &'static str| model_process("vllm", &["serve", m], None, None, 1.0);
    let (a1, b1, a2, b2) = (
        serve("gpm/small"),
        serve("gpm/large"),
        serve("slices/small"),
        serve("slices/large"),
    );
    let epoch = harness::now_unix_ms() - 5_000;
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [gpu(GPM, true, a1.pid(), b1.pid(), 1), gpu(NO_GPM, false, a2.pid(), b2.pid(), 2)]
    });
    let agent = FileAgent::prepare(
        dir.path(),
        &scenario,
        "[sampling]\ninterval_s = 0.5\n[sampling.idle_power_w]\n\"NVIDIA H100 80GB HBM3\" = 70.0\n[server_metrics]\ndiscover = false\n[host]\nrapl = false\n",
    );
    let mut run = agent.spawn();
    let end_ms = epoch + (RUN_S * 1000.0) as i64;
    while harness::now_unix_ms() < end_ms {
        std::thread::sleep(Duration::from_millis(250));
        assert!(run.is_running(), "the agent exited early");
    }
    run.signal("TERM");
    let points = agent.points();
    let sim = Scenario::from_json(&scenario.to_string()).expect("scenario");
    let (from_ns, to_ns) = (
        (epoch + (FROM_S * 1000.0) as i64) * 1_000_000,
        (epoch + (TO_S * 1000.0) as i64) * 1_000_000,
    );

    assert!(assert_conserved(&points) > 50);
    let (w1, w2) = (
        window(&points, GPM, from_ns, to_ns),
        window(&points, NO_GPM, from_ns, to_ns),
    );
    let gpm = errors(
        &sim,
        GPM,
        &[(a1.pid(), "gpm/small"), (b1.pid(), "gpm/large")],
        &w1,
    );
    let slices = errors(
        &sim,
        NO_GPM,
        &[(a2.pid(), "slices/small"), (b2.pid(), "slices/large")],
        &w2,
    );
    let (gpm_methods, slice_methods) = (w1.methods, w2.methods);
    println!("MIG, active energy vs ground truth:");
    println!("  with GPM     {}   methods {gpm_methods:?}", show(&gpm));
    println!(
        "  without GPM  {}   methods {slice_methods:?}",
        show(&slices)
    );
    assert_eq!(gpm_methods, vec!["mig_gpm".to_string()]);
    assert_eq!(slice_methods, vec!["mig".to_string()]);
    for (m, e) in &gpm {
        assert!(e.abs() < 0.02, "{m}: {:+.2}%", 100.0 * e);
    }
    assert!(
        slices.iter().any(|(_, e)| e.abs() > 0.2),
        "the instance-size split should be far off here: {slices:?}"
    );
    drop((a1, b1, a2, b2));
}
