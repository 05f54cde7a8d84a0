//! MIG with GPM on the simulated driver: two H100s cut into a 3-slice and a 4-slice
//! instance, the small one lightly loaded and the large one heavily, utilisations
//! redrawn every 1.5–3 s. With GPM (`nvmlGpmMigSampleGet`, SM utilisation per instance)
//! the split follows each instance's measured activity (`mig_gpm`) and each model's active
//! energy is within 2% of ground truth; the same GPU without GPM splits by instance size
//! (`mig`) and is far off (printed beside it). Conservation is exact in every interval.

use std::collections::BTreeMap;
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, FileAgent};
use nvml_sim::Scenario;
use serde_json::{json, Value};

const GPM: &str = "GPU-9a000000-0000-4000-8000-000000000001";
const NO_GPM: &str = "GPU-9a000000-0000-4000-8000-000000000002";
const RUN_S: f64 = 40.0;
const FROM_S: f64 = 10.0;
const TO_S: f64 = 38.0;

fn f(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

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

    // Conservation in every interval.
    let mut by_interval: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "model_energy") {
        *by_interval
            .entry((
                p.tag_value("gpu_uuid").unwrap_or("").into(),
                p.timestamp.unwrap_or(0),
            ))
            .or_default() += f(p, "active_j") + f(p, "idle_j");
    }
    for g in points.iter().filter(|p| p.measurement == "gpu") {
        let key = (
            g.tag_value("gpu_uuid").unwrap_or("").to_string(),
            g.timestamp.unwrap_or(0),
        );
        let e = f(g, "energy_j");
        let m = by_interval.get(&key).copied().unwrap_or(0.0);
        assert!((m - e).abs() <= 1e-9 * e.max(1.0), "{key:?}: {m} vs {e}");
    }

    let check = |uuid: &str, models: [(u32, &str); 2]| -> (Vec<(String, f64)>, Vec<String>) {
        let mut got: BTreeMap<String, f64> = BTreeMap::new();
        let mut methods: Vec<String> = Vec::new();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for p in &points {
            if p.measurement != "model_energy" || p.tag_value("gpu_uuid") != Some(uuid) {
                continue;
            }
            let end = p.timestamp.expect("ts");
            if end <= from_ns || end > to_ns {
                continue;
            }
            lo = lo.min(end - (f(p, "interval_s") * 1e9).round() as i64);
            hi = hi.max(end);
            *got.entry(p.tag_value("model").unwrap_or("").into())
                .or_default() += f(p, "active_j");
            let m = p
                .field_value("method")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        let truth = sim
            .truth_unix_ms(lo / 1_000_000, hi / 1_000_000)
            .expect("truth");
        let g = truth.gpus.iter().find(|g| g.uuid == uuid).expect("gpu");
        let errs = models
            .iter()
            .map(|(pid, model)| {
                let t = g
                    .processes
                    .iter()
                    .find(|p| p.pid == *pid)
                    .expect("pid")
                    .active_j;
                (
                    model.to_string(),
                    (got.get(*model).copied().unwrap_or(0.0) - t) / t,
                )
            })
            .collect();
        (errs, methods)
    };
    let (gpm, gpm_methods) = check(GPM, [(a1.pid(), "gpm/small"), (b1.pid(), "gpm/large")]);
    let (slices, slice_methods) = check(
        NO_GPM,
        [(a2.pid(), "slices/small"), (b2.pid(), "slices/large")],
    );
    let show = |e: &[(String, f64)]| {
        e.iter()
            .map(|(m, x)| format!("{m} {:+.2}%", 100.0 * x))
            .collect::<Vec<_>>()
            .join(", ")
    };
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
