//! Coarse shipping (`[ship] interval_s`): the agent samples every 0.5 s (its file sink
//! keeps every interval) and ships 5-s windows to a real collector. It is killed with
//! SIGKILL in the middle of a window and restarted. What the collector stores is
//! about one point per GPU per window, not per interval, and equals the full-rate file
//! sink to the float rounding: per GPU energy, per model energy and GPU time (`gpu_s`,
//! computed per interval before folding), the downtime as a `gap`, and the report's
//! totals. Nothing is lost or doubled by the kill.

use std::collections::BTreeMap;
use std::time::Duration;

use inferwatt_collector::store::Store;
use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, FileAgent};
use nvml_sim::Scenario;
use serde_json::{json, Value};

const GPU_SHARED: &str = "GPU-c0000000-0000-4000-8000-000000000001";
const GPU_SINGLE: &str = "GPU-c0000000-0000-4000-8000-000000000002";
const MAX_W: f64 = 700.0;
const WINDOW_S: f64 = 5.0;

fn field(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: collector {got} vs file sink {want}"
    );
}

/// Per (GPU, model): the model's GPU time in each interval of the file sink by the
/// collector's rule, computed here independently: the interval × the row's share of the
/// GPU energy of the model rows of the same GPU and timestamp, equal shares when none.
fn gpu_seconds_per_interval(points: &[Point]) -> BTreeMap<(String, String), f64> {
    let mut groups: BTreeMap<(String, i64), Vec<&Point>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "model_energy") {
        let gpu = p.tag_value("gpu_uuid").unwrap_or("").to_string();
        groups
            .entry((gpu, p.timestamp.expect("ts")))
            .or_default()
            .push(p);
    }
    let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((gpu, _), rows) in groups {
        let gpu_j = |p: &Point| (field(p, "active_j") + field(p, "idle_j")).max(0.0);
        let sum: f64 = rows.iter().map(|p| gpu_j(p)).sum();
        for p in &rows {
            let share = if sum > 0.0 {
                gpu_j(p) / sum
            } else {
                1.0 / rows.len() as f64
            };
            let model = p.tag_value("model").unwrap_or("").to_string();
            *out.entry((gpu.clone(), model)).or_default() += field(p, "interval_s") * share;
        }
    }
    out
}

#[test]
fn coarse_windows_keep_every_joule_through_a_kill_mid_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let (site, host) = ("ams1", "gpu-host-7");
    let c = harness::Collector::prepare(root, site, host).expect("collector");
    let mut coll = c.start();

    let llama = model_process(
        "vllm",
        &["serve", "meta-llama/Llama-3.1-8B"],
        None,
        None,
        1.0,
    );
    let qwen = model_process(
        "vllm",
        &["serve", "Qwen/Qwen2.5-7B-Instruct"],
        None,
        None,
        1.0,
    );
    let mistral = model_process("vllm", &["serve", "mistralai/Mistral-7B"], None, None, 1.0);
    let gb = 1_000_000_000u64;
    let epoch = harness::now_unix_ms() - 500;
    let gpu = |uuid: &str, counter: u64, procs: Value, phases: Value| {
        json!({
            "uuid": uuid, "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": MAX_W, "memory_total_bytes": 85_899_345_920u64,
            "energy_counter": true, "initial_counter_mj": counter,
            "power_reading": "average_1s",
            "processes": procs, "phases": phases,
        })
    };
    let (l, q, m) = (llama.pid(), qwen.pid(), mistral.pid());
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [
            gpu(GPU_SHARED, 412_337_001,
                json!([{"pid": l, "used_memory_bytes": 30 * gb, "start_s": 0.0},
                       {"pid": q, "used_memory_bytes": 20 * gb, "start_s": 0.0}]),
                json!([
                    {"start_s": 0.0, "end_s": 9.0, "procs": [
                        {"pid": l, "sm_util": 50.0, "weight": 1.0},
                        {"pid": q, "sm_util": 20.0, "weight": 1.0, "burst": {"period_s": 0.4, "duty": 0.5}}]},
                    {"start_s": 9.0, "end_s": 600.0, "procs": [
                        {"pid": l, "sm_util": 15.0, "weight": 1.0, "burst": {"period_s": 0.3, "duty": 0.6}},
                        {"pid": q, "sm_util": 55.0, "weight": 1.0}]}
                ])),
            gpu(GPU_SINGLE, 98_112_450,
                json!([{"pid": m, "used_memory_bytes": 6 * gb, "start_s": 0.0}]),
                json!([{"start_s": 0.0, "end_s": 600.0, "procs": [{"pid": m, "sm_util": 60.0, "weight": 1.0}]}])),
        ]
    });
    let sim = Scenario::from_json(&scenario.to_string()).expect("scenario");
    let agent = FileAgent::prepare(
        root,
        &scenario,
        &format!(
            "[site]\nname = \"{site}\"\nhost = \"{host}\"\ncountry = \"NL\"\nzone = \"NL\"\n\
             [sampling]\ninterval_s = 0.5\nsplit = \"sm_util\"\n\
             [server_metrics]\ndiscover = false\n[host]\nrapl = false\n\
             [ship]\nurl = \"{url}\"\ntoken = \"{token}\"\ninterval_s = {WINDOW_S}\n\
             flush_interval_s = 0.2\nbackoff_max_s = 1.0\nshutdown_flush_s = 10.0\n",
            url = c.url(),
            token = c.token,
        ),
    );
    let gpu_points = || {
        agent
            .points()
            .iter()
            .filter(|p| p.measurement == "gpu")
            .count()
    };

    let mut first = agent.spawn();
    harness::wait_for("8 s of intervals", Duration::from_secs(30), || {
        (gpu_points() >= 2 * 16).then_some(())
    });
    // Mid-window: 2 to 3 s into a 5-s window of UTC time.
    harness::wait_for("the middle of a window", Duration::from_secs(6), || {
        (harness::now_unix_ms().rem_euclid(5000) >= 2000
            && harness::now_unix_ms().rem_euclid(5000) < 3000)
            .then_some(())
    });
    first.signal("KILL");
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent.state.join("state.json")).expect("state file"))
            .expect("state JSON");
    assert!(
        state["ship_open"].as_str().is_some_and(|s| !s.is_empty()),
        "the state holds the open window's points: {state}"
    );
    let before = gpu_points();
    std::thread::sleep(Duration::from_secs(2)); // the downtime itself
    let mut second = agent.spawn();
    harness::wait_for("10 s more of intervals", Duration::from_secs(30), || {
        (gpu_points() >= before + 2 * 20).then_some(())
    });
    // The open window is spooled before the shipper's final flush, which sends it.
    second.signal("TERM");
    coll.signal("TERM");

    let points = agent.points();
    let store = Store::open(&c.db).expect("store");
    let stored_gpus = store.sum_gpu_energy(0, i64::MAX).expect("gpu sums");
    let epoch_ns = epoch * 1_000_000;
    let mut file_gap_j = 0.0;
    for uuid in [GPU_SHARED, GPU_SINGLE] {
        let fine: Vec<&Point> = points
            .iter()
            .filter(|p| p.measurement == "gpu" && p.tag_value("gpu_uuid") == Some(uuid))
            .collect();
        let file_j: f64 = fine.iter().map(|p| field(p, "energy_j")).sum();
        let rows: Vec<_> = stored_gpus.iter().filter(|r| r.gpu_uuid == uuid).collect();
        let stored_j: f64 = rows.iter().map(|r| r.energy_j).sum();
        let stored_n: i64 = rows.iter().map(|r| r.points).sum();
        // Conservation: the collector holds exactly what the agent measured.
        close(stored_j, file_j, &format!("{uuid} energy"));
        // Coarse: one point per window (plus the partial window at the kill and the
        // restart's downtime interval, each shipped on its own), not one per interval.
        let first_ts = fine[0].timestamp.expect("ts") as f64 / 1e9;
        let last_ts = fine[fine.len() - 1].timestamp.expect("ts") as f64 / 1e9;
        let windows = ((last_ts - first_ts) / WINDOW_S).ceil() as i64 + 1;
        println!(
            "{uuid}: {} intervals in the file, {stored_n} points stored, {windows} windows",
            fine.len()
        );
        assert!(
            stored_n <= windows + 2,
            "{uuid}: {stored_n} stored points for {windows} windows"
        );
        assert!(
            fine.len() as i64 >= 4 * stored_n,
            "{uuid}: {stored_n} stored points for {} intervals",
            fine.len()
        );
        // The file sink against ground truth: only the run's two ends can lag (100-ms
        // counter updates); a lost or doubled interval would be ~150 J.
        let start_s =
            (fine[0].timestamp.expect("ts") - epoch_ns) as f64 / 1e9 - field(fine[0], "interval_s");
        let end_s = (fine[fine.len() - 1].timestamp.expect("ts") - epoch_ns) as f64 / 1e9;
        let truth = sim.truth(start_s, end_s);
        let t = truth
            .gpus
            .iter()
            .find(|g| g.uuid == uuid)
            .expect("gpu truth");
        assert!(
            (file_j - t.energy_j).abs() <= 2.0 * 0.1 * MAX_W,
            "{uuid}: measured {file_j} J vs truth {} J",
            t.energy_j
        );
        // The downtime reaches the collector as a gap, not folded into a counter window.
        let gaps: Vec<&&Point> = fine
            .iter()
            .filter(|p| p.field_value("source").and_then(|v| v.as_str()) == Some("gap"))
            .collect();
        assert_eq!(gaps.len(), 1, "{uuid}: one downtime interval in the file");
        let gap_j = field(gaps[0], "energy_j");
        file_gap_j += gap_j;
        let stored_gaps: Vec<_> = store
            .gap_points(0, i64::MAX)
            .expect("gap points")
            .into_iter()
            .filter(|g| g.gpu_uuid == uuid)
            .collect();
        assert_eq!(stored_gaps.len(), 1, "{uuid}: {stored_gaps:?}");
        close(
            stored_gaps[0].energy_j,
            gap_j,
            &format!("{uuid} gap energy"),
        );
    }
    assert_eq!(
        store.sum_folded_points(0, i64::MAX).expect("folded"),
        0,
        "window folding is not spool-overflow folding"
    );

    // Per model: energy and GPU time (computed per interval, before folding).
    let want_gpu_s = gpu_seconds_per_interval(&points);
    let mut file_model_j: BTreeMap<(String, String), f64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "model_energy") {
        let key = (
            p.tag_value("gpu_uuid").unwrap_or("").to_string(),
            p.tag_value("model").unwrap_or("").to_string(),
        );
        *file_model_j.entry(key).or_default() += field(p, "active_j") + field(p, "idle_j");
    }
    let stored_models = store.sum_model_energy(0, i64::MAX).expect("model sums");
    assert_eq!(stored_models.len(), file_model_j.len(), "{stored_models:?}");
    for r in &stored_models {
        let key = (r.gpu_uuid.clone(), r.model.clone());
        close(
            r.active_j + r.idle_j,
            file_model_j[&key],
            &format!("{key:?} energy"),
        );
        close(r.gpu_s, want_gpu_s[&key], &format!("{key:?} gpu_s"));
    }
    let shared_s: Vec<f64> = stored_models
        .iter()
        .filter(|r| r.gpu_uuid == GPU_SHARED && !r.model.starts_with('_'))
        .map(|r| r.gpu_s)
        .collect();
    assert!(
        shared_s.len() == 2 && (shared_s[0] - shared_s[1]).abs() > 1.0,
        "the shared GPU's time is split by energy, not equally: {shared_s:?}"
    );

    // The report: the GPU energy the file sink measured, the downtime as _unattributed.
    let report = harness::report_json(&c.db, &[]);
    let by_model = report["by_model"].as_array().expect("by_model");
    let gpu_j = |r: &Value| {
        let e = &r["energy_kwh"];
        (e["gpu_active"].as_f64().unwrap_or(0.0) + e["gpu_idle"].as_f64().unwrap_or(0.0)) * 3.6e6
    };
    let file_total: f64 = file_model_j.values().sum();
    let report_total: f64 = by_model.iter().map(gpu_j).sum();
    assert!(
        (report_total - file_total).abs() <= 1e-6 * file_total,
        "report {report_total} J vs file sink {file_total} J"
    );
    let unattributed = by_model
        .iter()
        .find(|r| r["model"] == "_unattributed")
        .expect("an _unattributed row for the downtime");
    assert!(
        (gpu_j(unattributed) - file_gap_j).abs() <= 1e-6 * file_gap_j,
        "_unattributed {} J vs downtime {file_gap_j} J",
        gpu_j(unattributed)
    );
    drop((llama, qwen, mistral));
}
