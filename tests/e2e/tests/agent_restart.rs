//! The agent killed with SIGKILL and restarted: what the GPU's counter advanced while
//! it was down appears as `_unattributed` (a `gap` interval), and the per-GPU total over
//! the whole run equals the simulator's ground truth — nothing lost, nothing doubled.

use std::process::Command;
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::harness::{self, Proc};
use nvml_sim::Scenario;
use serde_json::json;

fn gpu_intervals(points: &[Point]) -> usize {
    points.iter().filter(|p| p.measurement == "gpu").count()
}

#[test]
fn energy_while_the_agent_was_down_is_unattributed_not_lost() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let model = Proc::spawn(
        "vllm",
        Command::new(harness::bin("fake-inference-server"))
            .arg0("vllm")
            .args(["serve", "mistralai/Mistral-7B-Instruct-v0.3"]),
    );
    // The scenario is already running when the agent starts.
    let epoch = harness::now_unix_ms() - 1000;
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [{
            "uuid": "GPU-7f000000-0000-4000-8000-000000000001",
            "name": "NVIDIA A100-SXM4-80GB",
            "idle_w": 60.0, "max_w": 400.0,
            "memory_total_bytes": 85_899_345_920u64,
            "energy_counter": true,
            "initial_counter_mj": 5_000_000u64,
            "power_reading": "average_1s",
            "processes": [{"pid": model.pid(), "used_memory_bytes": 20_000_000_000u64, "start_s": 0.0}],
            "phases": [
                {"start_s": 0.0, "end_s": 7.0, "procs": [{"pid": model.pid(), "sm_util": 80.0, "weight": 1.0}]},
                {"start_s": 7.0, "end_s": 100.0, "procs": [{"pid": model.pid(), "sm_util": 35.0, "weight": 1.0, "burst": {"period_s": 0.5, "duty": 0.4}}]}
            ]
        }]
    });
    let scenario_path = root.join("scenario.json");
    std::fs::write(&scenario_path, scenario.to_string()).expect("write scenario");
    let sim = Scenario::from_json(&scenario.to_string()).expect("scenario");
    let out = root.join("intervals.lp");
    let config_path = root.join("agent.toml");
    std::fs::write(
        &config_path,
        format!(
            "[nvml]\nlibrary = \"{}\"\n[prometheus]\nenabled = false\n[server_metrics]\ndiscover = false\n[host]\nrapl = false\n[state]\ndir = \"{}\"\n[file]\npath = \"{}\"\n",
            harness::sim_library().display(),
            root.join("state").display(),
            out.display()
        ),
    )
    .expect("config");
    let agent = || {
        Proc::spawn(
            "inferwatt-agent",
            Command::new(harness::bin("inferwatt-agent"))
                .args(["run", "--config"])
                .arg(&config_path)
                .env("FAKE_NVML_SCENARIO", &scenario_path),
        )
    };

    let mut first = agent();
    harness::wait_for("5 intervals", Duration::from_secs(30), || {
        (gpu_intervals(&harness::read_points(&out)) >= 5).then_some(())
    });
    first.signal("KILL");
    // The worst moment for a kill: after the state was saved, before the interval
    // reached the file. Recreate it: cut the last interval (the state's write-ahead
    // copy) off the file; the restarted agent must write it, once.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("state").join("state.json")).expect("state file"),
    )
    .expect("state JSON");
    let pending = state["pending"]
        .as_str()
        .expect("the state holds the last interval")
        .to_string();
    let text = std::fs::read_to_string(&out).expect("file sink");
    assert!(
        text.ends_with(&pending),
        "the state's last interval is the file's tail"
    );
    std::fs::write(&out, &text[..text.len() - pending.len()]).expect("cut the tail");
    let before = gpu_intervals(&harness::read_points(&out));
    std::thread::sleep(Duration::from_secs(4)); // the downtime itself, not a wait for a condition
    let mut second = agent();
    harness::wait_for("6 more intervals", Duration::from_secs(30), || {
        (gpu_intervals(&harness::read_points(&out)) >= before + 7).then_some(())
    });
    second.signal("TERM");
    assert_eq!(
        std::fs::read_to_string(&out)
            .expect("file sink")
            .matches(&pending)
            .count(),
        1,
        "the interval a kill kept from the file is written once on restart"
    );

    let points = harness::read_points(&out);
    let epoch_ns = epoch * 1_000_000;
    let gpus: Vec<&Point> = points.iter().filter(|p| p.measurement == "gpu").collect();
    let start_s = |p: &Point| {
        (p.timestamp.expect("ts") - epoch_ns) as f64 / 1e9
            - p.field_f64("interval_s").expect("interval_s")
    };
    let end_s = |p: &Point| (p.timestamp.expect("ts") - epoch_ns) as f64 / 1e9;

    let gaps: Vec<&&Point> = gpus
        .iter()
        .filter(|p| p.field_value("source").and_then(|v| v.as_str()) == Some("gap"))
        .collect();
    assert_eq!(gaps.len(), 1, "one gap interval for the downtime");
    let gap = gaps[0];
    assert!(
        f64_field(gap, "interval_s") >= 4.0,
        "the gap spans the downtime"
    );
    let gap_truth = sim.truth(start_s(gap), end_s(gap)).gpus[0].energy_j;
    let gap_j = f64_field(gap, "energy_j");
    // NVML's counter updates every 100 ms, so each end of one interval may lag by up to
    // 100 ms of power (≤ 400 W here); over consecutive intervals the lags telescope.
    assert!(
        (gap_j - gap_truth).abs() <= 2.0 * 0.1 * 400.0,
        "gap {gap_j} J vs truth {gap_truth} J"
    );
    let unattributed: f64 = points
        .iter()
        .filter(|p| {
            p.measurement == "model_energy" && p.tag_value("model") == Some("_unattributed")
        })
        .map(|p| f64_field(p, "active_j") + f64_field(p, "idle_j"))
        .sum();
    assert_eq!(
        unattributed, gap_j,
        "the downtime's energy is _unattributed"
    );

    // Intervals tile the run: each starts where the previous ended.
    for w in gpus.windows(2) {
        assert!(
            (start_s(w[1]) - end_s(w[0])).abs() < 1e-6,
            "intervals must tile: {} then {}",
            end_s(w[0]),
            start_s(w[1])
        );
    }
    let measured: f64 = gpus.iter().map(|p| f64_field(p, "energy_j")).sum();
    let truth = sim
        .truth(start_s(gpus[0]), end_s(gpus[gpus.len() - 1]))
        .gpus[0]
        .energy_j;
    // Only the run's two ends can lag (100-ms counter updates); a lost or doubled
    // interval would be ~280 J.
    assert!(
        (measured - truth).abs() <= 2.0 * 0.1 * 400.0,
        "whole run: measured {measured} J vs truth {truth} J"
    );
}

fn f64_field(p: &Point, k: &str) -> f64 {
    p.field_f64(k)
        .unwrap_or_else(|| panic!("{} lacks {k}", p.measurement))
}

/// Requests and tokens a server completed while the agent was down are counted after
/// the restart (the counter baselines persist with the agent's state), so the file's
/// totals equal the server's. The server replays a trace that is quiet for its first
/// 6 s (so the agent's first scrape reads 0) and serves 40 requests of 3 + 7 tokens
/// from 6 s to 16 s; the agent is killed at about 8 s and restarted at about 12 s.
#[test]
fn tokens_served_while_the_agent_was_down_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mut trace =
        String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n2026-12-01 00:00:00.0000000,0,0\n");
    for i in 0..40 {
        let t = 6.0 + 0.25 * f64::from(i);
        trace.push_str(&format!("2026-12-01 00:00:{t:010.7},3,7\n"));
    }
    let trace_path = root.join("trace.csv");
    std::fs::write(&trace_path, trace).expect("trace");
    let port = harness::free_port();
    let model = inferwatt_tests::fleet::model_process(
        "vllm",
        &["serve", "mistralai/Mistral-7B-Instruct-v0.3"],
        Some(port),
        Some(&trace_path),
        1.0,
    );
    let served_from = std::time::Instant::now();
    let scenario = json!({
        "epoch_unix_ms": harness::now_unix_ms(),
        "gpus": [{
            "uuid": "GPU-7f000000-0000-4000-8000-000000000002",
            "name": "NVIDIA A100-SXM4-80GB",
            "idle_w": 60.0, "max_w": 400.0, "memory_total_bytes": 85_899_345_920u64,
            "processes": [{"pid": model.pid(), "used_memory_bytes": 20_000_000_000u64, "start_s": 0.0}],
            "phases": [{"start_s": 0.0, "end_s": 600.0, "procs": [{"pid": model.pid(), "sm_util": 50.0, "weight": 1.0}]}]
        }]
    });
    let agent = harness::FileAgent::prepare(
        root,
        &scenario,
        "[server_metrics]\ndiscover = true\ninterval_s = 1.0\n[host]\nrapl = false\n",
    );
    let sleep_until = |s: f64| {
        let at = served_from + Duration::from_secs_f64(s);
        if let Some(d) = at.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(d);
        }
    };
    let tokens = |points: &[Point], field: &str| -> f64 {
        points
            .iter()
            .filter(|p| p.measurement == "model_usage")
            .map(|p| p.field_f64(field).unwrap_or(0.0))
            .sum()
    };
    let mut first = agent.spawn();
    sleep_until(8.0);
    first.signal("KILL");
    let before = tokens(&agent.points(), "output_tokens");
    assert!(
        before < 280.0,
        "the kill came before the trace ended ({before} tokens)"
    );
    sleep_until(12.0);
    let mut second = agent.spawn();
    harness::wait_for("all 280 output tokens", Duration::from_secs(30), || {
        (tokens(&agent.points(), "output_tokens") >= 280.0).then_some(())
    });
    // A little longer: nothing may be counted twice either.
    std::thread::sleep(Duration::from_secs(2));
    second.signal("TERM");
    let points = agent.points();
    assert_eq!(tokens(&points, "output_tokens"), 280.0, "output tokens");
    assert_eq!(tokens(&points, "input_tokens"), 120.0, "input tokens");
    assert_eq!(tokens(&points, "requests"), 40.0, "requests");
}

/// The static power a GPU showed with no process is kept across a restart: the restarted
/// agent, on a GPU that is never idle again, uses the 70 W it measured before instead of
/// the lowest power it can see itself (the busy GPU's ~380 W).
#[test]
fn the_measured_static_power_survives_a_restart() {
    use inferwatt_tests::fleet::model_process;
    use inferwatt_tests::harness::FileAgent;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_process(
        "vllm",
        &["serve", "Qwen/Qwen2.5-7B-Instruct"],
        None,
        None,
        1.0,
    );
    let epoch = harness::now_unix_ms();
    // Idle for the first 13 s, then busy for good.
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [{
            "uuid": "GPU-5e000000-0000-4000-8000-000000000001", "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
            "processes": [{"pid": model.pid(), "used_memory_bytes": 20_000_000_000u64, "start_s": 13.0}],
            "phases": [{"start_s": 13.0, "end_s": 600.0, "procs": [
                {"pid": model.pid(), "sm_util": 50.0, "weight": 1.0}
            ]}]
        }]
    });
    let agent = FileAgent::prepare(
        dir.path(),
        &scenario,
        "[sampling]\ninterval_s = 0.5\nsplit = \"sm_util\"\n[server_metrics]\ndiscover = false\n[host]\nrapl = false\n",
    );
    let mut first = agent.spawn();
    while harness::now_unix_ms() < epoch + 12_500 {
        std::thread::sleep(Duration::from_millis(200));
    }
    first.signal("TERM");
    let before = agent.points().len();
    let mut second = agent.spawn();
    let restart_ms = harness::now_unix_ms();
    while harness::now_unix_ms() < restart_ms.max(epoch + 14_000) + 5_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    second.signal("TERM");
    // The restarted agent's intervals on the busy GPU: idle energy over their length.
    let pts = agent.points();
    let (mut idle_j, mut secs) = (0.0, 0.0);
    for p in &pts[before..] {
        let busy = p
            .timestamp
            .is_some_and(|t| t > (epoch + 14_000) * 1_000_000);
        if p.measurement == "model_energy"
            && busy
            && p.tag_value("model") == Some("Qwen/Qwen2.5-7B-Instruct")
        {
            idle_j += f64_field(p, "idle_j");
            secs += f64_field(p, "interval_s");
        }
    }
    assert!(
        secs > 2.0,
        "only {secs} s of busy intervals after the restart"
    );
    let static_w = idle_j / secs;
    assert!(
        (static_w - 70.0).abs() < 1.5,
        "the restarted agent used {static_w:.1} W of static power, not the 70 W measured before"
    );
    drop(model);
}
