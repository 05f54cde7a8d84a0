//! The power-aware split on the simulated driver (METHODOLOGY §2, `power_model`).
//!
//! One scenario, four H100s (static 70 W, 700 W peak), read by three agents at once:
//! `power_model` with the static power configured and without it, and `sm_util` (the old
//! split) with and without it, as the reference. Utilisations change every 1.5 to 3 s,
//! independently per process.
//! - GPU 1: power weights 1.6 and 0.6 → each model's active energy within 1% of ground
//!   truth with `power_model`, with and without the static power configured, while the SM
//!   share is off by tens of percent (printed beside it);
//! - GPU 2: equal weights → `power_model` no worse than the SM share;
//! - GPU 3: a constant mix → the split falls back to the SM share and says why (the state
//!   file and `check`);
//! - GPU 4: no process → its static power is measured, kept in the state, shown by `check`.
//!
//! Conservation is exact in every interval.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, FileAgent, Proc};
use inferwatt_tests::split::{assert_conserved, errors, lcg, show as show_errors, window};
use nvml_sim::Scenario;
use serde_json::{json, Value};

const GPU_UNEQUAL: &str = "GPU-pa000000-0000-4000-8000-000000000001";
const GPU_EQUAL: &str = "GPU-pa000000-0000-4000-8000-000000000002";
const GPU_CONSTANT: &str = "GPU-pa000000-0000-4000-8000-000000000003";
const GPU_EMPTY: &str = "GPU-pa000000-0000-4000-8000-000000000004";
/// Scenario seconds the agents run.
const RUN_S: f64 = 150.0;
/// Seconds compared with ground truth: after every window has filled.
const FROM_S: f64 = 40.0;
const TO_S: f64 = 148.0;

/// Per agent: each model's relative error, and the split methods its rows used.
type Outcome<'a> = BTreeMap<&'a str, (Vec<(String, f64)>, Vec<String>)>;

/// Phases of 1.5 to 3 s, each process's utilisation drawn independently from its range.
fn phases(procs: &[(u32, f64, (f64, f64))], seed: u64, vary: bool) -> Value {
    let mut seed = seed;
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < 600.0 {
        let len = 1.5 + 1.5 * lcg(&mut seed);
        let ps: Vec<Value> = procs
            .iter()
            .map(|&(pid, weight, (lo, hi))| {
                let u = if vary {
                    lo + (hi - lo) * lcg(&mut seed)
                } else {
                    0.5 * (lo + hi)
                };
                json!({"pid": pid, "sm_util": u, "weight": weight})
            })
            .collect();
        out.push(json!({"start_s": t, "end_s": t + len, "procs": ps}));
        t += len;
    }
    Value::Array(out)
}

fn gpu(uuid: &str, procs: &[(&Proc, f64, (f64, f64))], seed: u64, vary: bool) -> Value {
    let gb = 1_000_000_000u64;
    let ids: Vec<(u32, f64, (f64, f64))> =
        procs.iter().map(|(p, w, r)| (p.pid(), *w, *r)).collect();
    json!({
        "uuid": uuid, "name": "NVIDIA H100 80GB HBM3",
        "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
        "processes": ids.iter().map(|(pid, _, _)| json!({"pid": pid, "used_memory_bytes": 20 * gb, "start_s": 0.0})).collect::<Vec<_>>(),
        "phases": phases(&ids, seed, vary),
    })
}

#[test]
fn the_power_model_splits_by_learned_power_and_falls_back_where_it_cannot_tell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let serve = |m: &'static str| model_process("vllm", &["serve", m], None, None, 1.0);
    let (prefill, decode) = (serve("prefill-heavy/A"), serve("decode-heavy/B"));
    let (eq_a, eq_b) = (serve("equal/A"), serve("equal/B"));
    let (co_a, co_b) = (serve("constant/A"), serve("constant/B"));
    // The scenario started before the agents (its counters accrue from the epoch on).
    let epoch = harness::now_unix_ms() - 5_000;
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [
            // Σ load stays below 1 (no clipping): 0.40·1.6 + 0.55·0.6 = 0.97.
            gpu(GPU_UNEQUAL, &[(&prefill, 1.6, (5.0, 40.0)), (&decode, 0.6, (5.0, 55.0))], 11, true),
            gpu(GPU_EQUAL, &[(&eq_a, 1.0, (5.0, 45.0)), (&eq_b, 1.0, (5.0, 45.0))], 23, true),
            gpu(GPU_CONSTANT, &[(&co_a, 1.6, (25.0, 35.0)), (&co_b, 0.6, (35.0, 45.0))], 37, false),
            {
                "uuid": GPU_EMPTY, "name": "NVIDIA H100 80GB HBM3",
                "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
                "processes": [], "phases": []
            }
        ]
    });
    let common = "[sampling]\ninterval_s = 0.5\n{split}\n[sampling.power_model]\nwindow_s = 60.0\nmin_intervals = 20\n{idle}[server_metrics]\ndiscover = false\n[host]\nrapl = false\n";
    let idle = "[sampling.idle_power_w]\n\"NVIDIA H100 80GB HBM3\" = 70.0\n";
    let setups = [
        ("pm_idle", "split = \"power_model\"", idle),
        ("pm_noidle", "split = \"power_model\"", ""),
        ("sm", "split = \"sm_util\"", idle),
        ("sm_noidle", "split = \"sm_util\"", ""),
    ];
    let agents: Vec<(&str, FileAgent)> = setups
        .iter()
        .map(|(name, split, idle)| {
            let sub = root.join(name);
            std::fs::create_dir_all(&sub).expect("dir");
            let sections = common.replace("{split}", split).replace("{idle}", idle);
            (*name, FileAgent::prepare(&sub, &scenario, &sections))
        })
        .collect();
    let mut runs: Vec<Proc> = agents.iter().map(|(_, a)| a.spawn()).collect();
    let end_ms = epoch + (RUN_S * 1000.0) as i64;
    while harness::now_unix_ms() < end_ms {
        std::thread::sleep(Duration::from_millis(250));
        for r in &mut runs {
            assert!(r.is_running(), "an agent exited early");
        }
    }
    for r in &mut runs {
        r.signal("TERM");
    }
    let sim = Scenario::from_json(&scenario.to_string()).expect("scenario");
    let (from_ns, to_ns) = (
        (epoch + (FROM_S * 1000.0) as i64) * 1_000_000,
        (epoch + (TO_S * 1000.0) as i64) * 1_000_000,
    );
    let pts: BTreeMap<&str, Vec<Point>> = agents.iter().map(|(n, a)| (*n, a.points())).collect();
    for p in pts.values() {
        let n = assert_conserved(p);
        assert!(n > 100, "only {n} GPU intervals");
    }

    let report = |uuid: &str, models: &[(u32, &str)]| -> Outcome<'_> {
        pts.iter()
            .map(|(name, p)| {
                let w = window(p, uuid, from_ns, to_ns);
                (*name, (errors(&sim, uuid, models, &w), w.methods))
            })
            .collect()
    };
    let show = |title: &str, r: &Outcome<'_>| {
        println!("{title}");
        for (name, (errs, methods)) in r {
            println!("  {name:<10} {}   methods {methods:?}", show_errors(errs));
        }
    };
    let worst = |r: &Outcome<'_>, name: &str| -> f64 {
        r[name].0.iter().map(|(_, e)| e.abs()).fold(0.0, f64::max)
    };

    // Unequal power weights.
    let unequal = report(
        GPU_UNEQUAL,
        &[
            (prefill.pid(), "prefill-heavy/A"),
            (decode.pid(), "decode-heavy/B"),
        ],
    );
    show(
        "GPU 1, power weights 1.6 and 0.6 (active energy vs ground truth):",
        &unequal,
    );
    for (name, p) in &pts {
        let w = window(p, GPU_UNEQUAL, from_ns, to_ns);
        let secs = (w.span_ms.1 - w.span_ms.0) as f64 / 1000.0;
        println!(
            "  {name:<10} static power used: {:.2} W on average",
            w.idle_j / secs
        );
    }
    for name in ["pm_idle", "pm_noidle"] {
        split_by(&unequal[name].1, "power_model", name);
        assert!(
            worst(&unequal, name) < 0.01,
            "{name}: {:?}",
            unequal[name].0
        );
    }
    assert!(
        worst(&unequal, "sm") > 0.10 && worst(&unequal, "sm_noidle") > 0.10,
        "the SM share should be far off with unequal weights: {:?}",
        unequal["sm"].0
    );

    // Equal weights: no worse than the SM share (within rounding noise).
    let equal = report(
        GPU_EQUAL,
        &[(eq_a.pid(), "equal/A"), (eq_b.pid(), "equal/B")],
    );
    show("GPU 2, equal power weights:", &equal);
    for (name, reference) in [("pm_idle", "sm"), ("pm_noidle", "sm_noidle")] {
        assert!(
            worst(&equal, name) <= worst(&equal, reference) + 0.005,
            "{name}: {:?} vs {reference} {:?}",
            equal[name].0,
            equal[reference].0
        );
    }

    // Constant mix: falls back, says why.
    let constant = report(
        GPU_CONSTANT,
        &[(co_a.pid(), "constant/A"), (co_b.pid(), "constant/B")],
    );
    show("GPU 3, constant mix:", &constant);
    for name in ["pm_idle", "pm_noidle"] {
        split_by(&constant[name].1, "sm_util", name);
        let state = state_json(
            &agents
                .iter()
                .find(|(n, _)| *n == name)
                .expect("agent")
                .1
                .state,
        );
        assert_eq!(
            state["power_models"][GPU_CONSTANT]["reason"], "not_identified",
            "{name}: {}",
            state["power_models"][GPU_CONSTANT]
        );
        assert_eq!(state["power_models"][GPU_UNEQUAL]["method"], "power_model");
    }
    let noidle = &agents[1].1;
    let state = state_json(&noidle.state);
    // Without a configured static power, the fit's intercept is the GPU's real 70 W
    // (the lowest power seen on these never-idle GPUs is far above it).
    let est = state["power_models"][GPU_UNEQUAL]["static_w"]
        .as_f64()
        .expect("static_w");
    assert!(
        (est - 70.0).abs() < 2.0 && state["power_models"][GPU_UNEQUAL]["static_estimated"] == true,
        "estimated static power {est} W"
    );
    // The empty GPU's static power was measured and kept.
    let kept = state["idle_w"][GPU_EMPTY].as_f64().expect("idle_w kept");
    assert!((kept - 70.0).abs() < 0.5, "measured static power {kept} W");

    // `check` explains the split from the running agent's state.
    let out = Command::new(harness::bin("inferwatt-agent"))
        .args(["check", "--config"])
        .arg(&noidle.config)
        .env("FAKE_NVML_SCENARIO", &noidle.scenario)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Split: power_model",
        "split power_model",
        "prefill-heavy/A (vllm):",
        "estimated by the power model",
        "did not vary enough to tell the models apart",
        "measured with no process: 70.0 W",
    ] {
        assert!(text.contains(want), "check lacks '{want}'");
    }
    drop((prefill, decode, eq_a, eq_b, co_a, co_b));
}

/// The window's rows were split by `method`, apart from intervals that got no new
/// utilisation sample (two readings within one of the driver's 100-ms sample periods when
/// the agent's tick is late), which fall back to memory as the methodology says.
fn split_by(methods: &[String], method: &str, agent: &str) {
    assert!(
        methods.iter().any(|m| m == method) && methods.iter().all(|m| m == method || m == "memory"),
        "{agent}: methods {methods:?}, expected {method}"
    );
}

fn state_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("state.json"))
        .expect("json")
}
