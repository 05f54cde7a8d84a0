//! The whole path on the simulated fleet: agent (simulated driver, three model servers
//! replaying real request traces) → durable shipping → collector (embedded SQLite) →
//! report. The collector is stopped for 30 s mid-run and restarted, then the agent is
//! killed with SIGKILL and restarted: what the collector stores
//! equals what the agent measured (0 J lost, 0 J doubled), per-GPU energy matches the
//! simulator's ground truth, per-model energy in the report matches ground truth
//! within 2%, the agent's downtime is `_unattributed`, every joule of host energy the
//! agent read from RAPL (a powercap tree the test advances at a known power) reaches the
//! report's totals (models' shares + the resident remainder), and every indicator equals
//! an independent computation from the factors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use inferwatt_collector::store::Store;
use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::Fleet;
use inferwatt_tests::harness::{self, Proc};
use nvml_sim::Scenario;
use serde_json::Value;

const PUE: f64 = 1.2;
const WUE: f64 = 0.5;
const EWIF: f64 = 3.1;
const INTENSITY: f64 = 350.0;

fn field(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

fn stored_gpu_energy(db: &Path) -> (f64, i64) {
    let Ok(store) = Store::open(db) else {
        return (0.0, 0);
    };
    let rows = store.sum_gpu_energy(0, i64::MAX).unwrap_or_default();
    (
        rows.iter().map(|r| r.energy_j).sum(),
        rows.iter().map(|r| r.points).sum(),
    )
}

#[test]
fn fleet_through_an_outage_to_a_report_that_matches_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let site = "fra1";
    let host = "gpu-host-1";
    // Collector with a token bound to this site and host.
    let c = harness::Collector::prepare(root, site, host).expect("collector");
    let (db, port, token) = (c.db.clone(), c.port, c.token.clone());
    let mut coll = c.start();

    // The fleet is already running when the agent starts.
    let epoch = harness::now_unix_ms() - 500;
    let fleet = Fleet::start(root, epoch, 120.0, 30.0);
    let sim = Scenario::from_json(&fleet.scenario.to_string()).expect("scenario");
    let lp = root.join("intervals.lp");
    let powercap = root.join("powercap");
    let rapl = harness::fake_powercap(&powercap, 120.0, 15.0);
    let agent_config = root.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "[site]\nname = \"{site}\"\nhost = \"{host}\"\ncountry = \"DE\"\nzone = \"DE\"\npue = {PUE}\nwue_l_per_kwh = {WUE}\n\
             [nvml]\nlibrary = \"{lib}\"\n[prometheus]\nenabled = false\n[server_metrics]\ninterval_s = 1.0\n[host]\nrapl = true\npowercap_root = \"{powercap}\"\n\
             [state]\ndir = \"{state}\"\n[file]\npath = \"{lp}\"\n\
             [ship]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{token}\"\nflush_interval_s = 0.5\nbackoff_max_s = 3.0\n",
            lib = harness::sim_library().display(),
            state = root.join("state").display(),
            lp = lp.display(),
            powercap = powercap.display(),
        ),
    )
    .expect("agent config");
    let start_agent = || {
        Proc::spawn(
            "inferwatt-agent",
            Command::new(harness::bin("inferwatt-agent"))
                .args(["run", "--config"])
                .arg(&agent_config)
                .env("FAKE_NVML_SCENARIO", &fleet.scenario_path),
        )
    };
    let mut agent = start_agent();
    let gpu_points = || {
        harness::read_points(&lp)
            .iter()
            .filter(|p| p.measurement == "gpu")
            .count()
    };

    harness::wait_for("10 s of intervals", Duration::from_secs(40), || {
        (gpu_points() >= 20).then_some(())
    });
    coll.signal("TERM");
    std::thread::sleep(Duration::from_secs(30)); // the outage itself
    let mut coll = c.start();
    harness::wait_for("40 s of intervals", Duration::from_secs(60), || {
        (gpu_points() >= 80).then_some(())
    });
    // The agent killed: its spool replays after the restart, and the energy of its
    // downtime is `_unattributed`.
    agent.signal("KILL");
    std::thread::sleep(Duration::from_secs(3)); // the downtime itself
    let mut agent = start_agent();
    harness::wait_for("50 s of intervals", Duration::from_secs(60), || {
        (gpu_points() >= 100).then_some(())
    });

    // Everything the agent measured reaches the collector, once.
    let measured = |points: &[Point]| -> (f64, i64) {
        let g: Vec<&Point> = points.iter().filter(|p| p.measurement == "gpu").collect();
        (g.iter().map(|p| field(p, "energy_j")).sum(), g.len() as i64)
    };
    agent.signal("TERM");
    let points = harness::read_points(&lp);
    let (file_j, file_n) = measured(&points);
    let (stored_j, stored_n) = harness::wait_for(
        "the spool to drain into the collector",
        Duration::from_secs(60),
        || {
            let (j, n) = stored_gpu_energy(&db);
            (n >= file_n).then_some((j, n))
        },
    );
    assert_eq!(stored_n, file_n, "every interval stored exactly once");
    assert!(
        (stored_j - file_j).abs() <= 1e-6 * file_j,
        "stored {stored_j} J vs measured {file_j} J"
    );
    coll.signal("TERM");

    // Per-GPU: the agent's intervals against ground truth.
    let epoch_ns = epoch * 1_000_000;
    let mut by_gpu: BTreeMap<String, Vec<(f64, f64, f64, bool)>> = BTreeMap::new();
    let mut gap_j = 0.0;
    for p in points.iter().filter(|p| p.measurement == "gpu") {
        let end = (p.timestamp.expect("ts") - epoch_ns) as f64 / 1e9;
        let gap = p.field_value("source").and_then(|v| v.as_str()) == Some("gap");
        if gap {
            gap_j += field(p, "energy_j");
        }
        by_gpu
            .entry(p.tag_value("gpu_uuid").expect("uuid").to_string())
            .or_default()
            .push((end - field(p, "interval_s"), end, field(p, "energy_j"), gap));
    }
    assert!(gap_j > 0.0, "the agent's downtime shows as gap intervals");
    let models: BTreeMap<u32, &str> = fleet.models().into_iter().collect();
    let mut expected_model_j: BTreeMap<&str, f64> = BTreeMap::new();
    for (uuid, rows) in &by_gpu {
        let (from, to) = (rows[0].0, rows[rows.len() - 1].1);
        let truth = sim.truth(from, to);
        let t = truth
            .gpus
            .iter()
            .find(|g| &g.uuid == uuid)
            .expect("gpu truth");
        let got: f64 = rows.iter().map(|r| r.2).sum();
        assert!(
            (got - t.energy_j).abs() / t.energy_j < 0.005,
            "{uuid}: {got} J vs truth {} J",
            t.energy_j
        );
        // Ground truth per model, idle following active per interval (resident policy);
        // the downtime is not any model's.
        for (a, b, _, _) in rows.iter().filter(|r| !r.3) {
            let tw = sim.truth(*a, *b);
            let g = tw.gpus.iter().find(|g| &g.uuid == uuid).expect("gpu truth");
            let total: f64 = g.processes.iter().map(|p| p.active_j).sum();
            for p in &g.processes {
                let share = if total > 0.0 {
                    p.active_j / total
                } else {
                    1.0 / g.processes.len() as f64
                };
                *expected_model_j.entry(models[&p.pid]).or_default() +=
                    p.active_j + g.idle_j * share;
            }
        }
    }

    // The report, with factors an auditor sets explicitly.
    let factors = root.join("factors.toml");
    std::fs::write(
        &factors,
        format!("[sites.{site}]\npue = {PUE}\nwue_l_per_kwh = {WUE}\newif_l_per_kwh = {EWIF}\nintensity_g_per_kwh = {INTENSITY}\n"),
    )
    .expect("factors");
    let report = harness::report_json(&db, &["--factors".as_ref(), factors.as_os_str()]);
    assert_eq!(report["schema"], "inferwatt.report/v1");

    // Usage the agent measured, per model.
    let mut output_tokens: BTreeMap<String, f64> = BTreeMap::new();
    let mut requests: BTreeMap<String, f64> = BTreeMap::new();
    let mut agent_model_j: BTreeMap<String, f64> = BTreeMap::new();
    let mut agent_model_host_j = 0.0;
    let mut agent_by_method: BTreeMap<String, f64> = BTreeMap::new();
    let rapl_j: f64 = points
        .iter()
        .filter(|p| p.measurement == "host_energy")
        .map(|p| field(p, "cpu_j") + field(p, "dram_j"))
        .sum();
    for p in &points {
        let model = p.tag_value("model").unwrap_or_default().to_string();
        match p.measurement.as_str() {
            "model_usage" => {
                *output_tokens.entry(model.clone()).or_default() += field(p, "output_tokens");
                *requests.entry(model).or_default() += field(p, "requests");
            }
            "model_energy" => {
                *agent_model_j.entry(model).or_default() +=
                    field(p, "active_j") + field(p, "idle_j");
                agent_model_host_j += field(p, "host_j");
                let method = p
                    .field_value("method")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                *agent_by_method.entry(method).or_default() +=
                    field(p, "active_j") + field(p, "idle_j");
            }
            _ => {}
        }
    }
    // The report's data quality gives the share of energy each split method split, the
    // same shares as the agent's rows (nothing `unrecorded`: this store kept them all).
    let agent_total: f64 = agent_by_method.values().sum();
    let shares = report["data_quality"]["energy_share_by_split_method"]
        .as_object()
        .expect("energy_share_by_split_method");
    assert_eq!(
        shares.keys().collect::<Vec<_>>(),
        agent_by_method.keys().collect::<Vec<_>>(),
        "{shares:?}"
    );
    for (m, j) in &agent_by_method {
        let got = shares[m].as_f64().expect("share");
        assert!(
            (got - j / agent_total).abs() < 1e-6,
            "{m}: report share {got} vs agent {}",
            j / agent_total
        );
    }
    println!("split methods: {shares:?}");

    let by_model = report["by_model"].as_array().expect("by_model");
    for (model, want_j) in &expected_model_j {
        let row = by_model
            .iter()
            .find(|r| r["model"] == *model)
            .unwrap_or_else(|| panic!("report lacks model {model}: {by_model:?}"));
        let e = &row["energy_kwh"];
        let active = e["gpu_active"].as_f64().expect("gpu_active");
        let idle = e["gpu_idle"].as_f64().expect("gpu_idle");
        let host = e["host"].as_f64().expect("host");
        let it = e["it"].as_f64().expect("it");
        let got_j = (active + idle) * 3.6e6;
        assert!(
            (got_j - want_j).abs() / want_j < 0.02,
            "{model}: report {got_j} J vs truth {want_j} J"
        );
        // The report carries exactly the GPU energy the agent attributed.
        assert!(
            (got_j - agent_model_j[*model]).abs() <= 1e-6 * agent_model_j[*model],
            "{model}: report {got_j} J vs agent {} J",
            agent_model_j[*model]
        );

        // Every indicator, recomputed here from the factors.
        let close = |got: &Value, want: f64, what: &str| {
            let got = got
                .as_f64()
                .unwrap_or_else(|| panic!("{model} {what} is {got}"));
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1e-12),
                "{model} {what}: {got} vs {want}"
            );
        };
        close(&e["it"], active + idle + host, "energy_kwh.it");
        close(&e["facility"], it * PUE, "energy_kwh.facility");
        close(
            &row["emissions_kgco2e"]["location"],
            it * PUE * INTENSITY / 1000.0,
            "emissions.location",
        );
        close(&row["water_l"]["onsite"], it * WUE, "water_l.onsite");
        close(
            &row["water_l"]["offsite"],
            it * PUE * EWIF,
            "water_l.offsite",
        );
        let tokens = output_tokens.get(*model).copied().unwrap_or(0.0);
        assert_eq!(
            row["output_tokens"].as_f64().unwrap_or(-1.0),
            tokens,
            "{model} output tokens"
        );
        let per_1k = &row["per_1k_output_tokens"];
        if tokens > 0.0 {
            close(
                &per_1k["energy_wh_accelerator"],
                (active + idle) * 1000.0 / (tokens / 1000.0),
                "Wh/1k tokens (accelerator)",
            );
            close(
                &per_1k["energy_wh_full"],
                it * PUE * 1000.0 / (tokens / 1000.0),
                "Wh/1k tokens (full)",
            );
        } else {
            // llama.cpp exposes no counters here: no tokens, so no intensity — not 0.
            assert!(
                per_1k["energy_wh_accelerator"].is_null(),
                "{model}: {per_1k}"
            );
        }
    }
    assert!(
        output_tokens.values().any(|t| *t > 0.0),
        "the servers' token counters were scraped"
    );
    // The agent's downtime is in the report, as `_unattributed`, never dropped.
    let unattributed = by_model
        .iter()
        .find(|r| r["model"] == "_unattributed")
        .expect("an _unattributed row for the agent's downtime");
    let e = &unattributed["energy_kwh"];
    let got_j =
        (e["gpu_active"].as_f64().unwrap_or(0.0) + e["gpu_idle"].as_f64().unwrap_or(0.0)) * 3.6e6;
    assert!(
        (got_j - gap_j).abs() <= 1e-6 * gap_j,
        "_unattributed {got_j} J vs downtime {gap_j} J"
    );

    // Host energy: everything RAPL measured (135 W here) is in the report's total, the
    // agent's per-model shares plus the remainder charged to the models (resident).
    rapl.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(rapl_j > 0.0, "the agent read the powercap counters");
    assert!(
        agent_model_host_j < rapl_j,
        "the agent gave models part of it"
    );
    let total_host = report["totals"]["energy_kwh"]["host"]
        .as_f64()
        .expect("host")
        * 3.6e6;
    assert!(
        (total_host - rapl_j).abs() <= 1e-6 * rapl_j,
        "report host {total_host} J vs RAPL {rapl_j} J"
    );
    let models_host: f64 = by_model
        .iter()
        .map(|r| r["energy_kwh"]["host"].as_f64().unwrap_or(0.0) * 3.6e6)
        .sum();
    assert!(
        (models_host - rapl_j).abs() <= 1e-6 * rapl_j,
        "models' host {models_host} J vs RAPL {rapl_j} J"
    );
    assert_eq!(report["methodology"]["idle_policy"], "resident");
    drop(fleet);
}
