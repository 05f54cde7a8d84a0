//! End to end on the simulated driver: the real agent binary, unprivileged, samples two
//! simulated GPUs at 1 Hz for over 20 s while three models run (one GPU shared by two at
//! different SM utilisation, sub-second bursts, an idle phase, a counter reset, a
//! process that exits mid-run; the second GPU has no energy counter). The points it
//! writes are compared with the simulator's ground truth, and a real Prometheus
//! scrapes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, Proc};
use nvml_sim::Scenario;
use serde_json::json;

const VLLM_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const SGLANG_MODEL: &str = "Qwen/Qwen2.5-7B-Instruct";
const LLAMACPP_MODEL: &str = "mistral-7b-instruct-v0.2.Q4_K_M";
const EXITING_MODEL: &str = "microsoft/phi-2";

fn f(p: &Point, k: &str) -> f64 {
    p.field_f64(k)
        .unwrap_or_else(|| panic!("{} lacks field {k}", p.measurement))
}

fn tag<'a>(p: &'a Point, k: &str) -> &'a str {
    p.tag_value(k)
        .unwrap_or_else(|| panic!("{} lacks tag {k}", p.measurement))
}

#[test]
fn agent_attributes_every_joule_on_the_simulated_driver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let vllm_port = harness::free_port();
    let sglang_port = harness::free_port();
    let prom_port = harness::free_port();
    let trace = harness::shared_dir().join("data/traces/azure-llm-inference-2023-conv.csv");

    let vllm = model_process(
        "/usr/bin/python3",
        &[
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            VLLM_MODEL,
            "--gpu-memory-utilization",
            "0.45",
        ],
        Some(vllm_port),
        Some(&trace),
        20.0,
    );
    let sglang = model_process(
        "python3",
        &[
            "-m",
            "sglang.launch_server",
            "--model-path",
            SGLANG_MODEL,
            "--host",
            "127.0.0.1",
            "--enable-metrics",
        ],
        Some(sglang_port),
        Some(&trace),
        20.0,
    );
    let llamacpp = model_process(
        "/usr/local/bin/llama-server",
        &[
            "-m",
            &format!("/models/{LLAMACPP_MODEL}.gguf"),
            "-ngl",
            "99",
            "-c",
            "4096",
        ],
        None,
        None,
        1.0,
    );
    let mut exiting = model_process(
        "vllm",
        &["serve", EXITING_MODEL, "--dtype", "float16"],
        None,
        None,
        1.0,
    );

    // Utilisations never sum above 100% at any instant (bursts included): SM time is
    // shared by time-slicing, so no real GPU shows more.
    let epoch = harness::now_unix_ms() + 1500;
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [
            {
                "uuid": "GPU-0e8c2a51-7c4e-4b1f-9a50-000000000000",
                "name": "NVIDIA H100 80GB HBM3",
                "idle_w": 70.0, "max_w": 700.0,
                "memory_total_bytes": 85_899_345_920u64,
                "energy_counter": true,
                "initial_counter_mj": 987_654_321u64,
                "power_reading": "average_1s",
                "counter_resets_s": [13.0],
                "processes": [
                    {"pid": vllm.pid(), "used_memory_bytes": 38_000_000_000u64, "start_s": 0.0},
                    {"pid": sglang.pid(), "used_memory_bytes": 30_000_000_000u64, "start_s": 0.0}
                ],
                "phases": [
                    {"start_s": 0.0, "end_s": 8.0, "procs": [
                        {"pid": vllm.pid(), "sm_util": 40.0, "weight": 1.0, "burst": {"period_s": 0.4, "duty": 0.5}},
                        {"pid": sglang.pid(), "sm_util": 20.0, "weight": 1.0}
                    ]},
                    {"start_s": 8.0, "end_s": 12.0, "procs": []},
                    {"start_s": 12.0, "end_s": 60.0, "procs": [
                        {"pid": vllm.pid(), "sm_util": 30.0, "weight": 1.0},
                        {"pid": sglang.pid(), "sm_util": 42.0, "weight": 1.0, "burst": {"period_s": 0.3, "duty": 0.6}}
                    ]}
                ]
            },
            {
                "uuid": "GPU-51d3f0aa-2b7e-4c19-8d11-111111111111",
                "name": "Tesla V100-SXM2-32GB",
                "idle_w": 40.0, "max_w": 300.0,
                "memory_total_bytes": 34_359_738_368u64,
                "energy_counter": false,
                "power_reading": "average_1s",
                "processes": [
                    {"pid": llamacpp.pid(), "used_memory_bytes": 6_000_000_000u64, "start_s": 0.0},
                    {"pid": exiting.pid(), "used_memory_bytes": 9_000_000_000u64, "start_s": 0.0, "end_s": 10.0}
                ],
                "phases": [
                    {"start_s": 0.0, "end_s": 10.0, "procs": [
                        {"pid": llamacpp.pid(), "sm_util": 50.0, "weight": 1.0},
                        {"pid": exiting.pid(), "sm_util": 25.0, "weight": 1.0}
                    ]},
                    {"start_s": 10.0, "end_s": 60.0, "procs": [
                        {"pid": llamacpp.pid(), "sm_util": 70.0, "weight": 1.0}
                    ]}
                ]
            }
        ]
    });
    let scenario_path = root.join("scenario.json");
    std::fs::write(
        &scenario_path,
        serde_json::to_vec_pretty(&scenario).expect("json"),
    )
    .expect("write scenario");
    let sim = Scenario::from_json(&scenario.to_string()).expect("the scenario parses");
    let pid_models: BTreeMap<u32, &str> = [
        (vllm.pid(), VLLM_MODEL),
        (sglang.pid(), SGLANG_MODEL),
        (llamacpp.pid(), LLAMACPP_MODEL),
        (exiting.pid(), EXITING_MODEL),
    ]
    .into_iter()
    .collect();
    let residents = |uuid: &str, t: f64| -> Vec<&str> {
        if uuid.starts_with("GPU-0e8c") {
            vec![VLLM_MODEL, SGLANG_MODEL]
        } else if t < 10.0 {
            vec![LLAMACPP_MODEL, EXITING_MODEL]
        } else {
            vec![LLAMACPP_MODEL]
        }
    };

    let out_path = root.join("intervals.lp");
    let state_dir = root.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let agent_port = harness::free_port();
    let config = format!(
        r#"
[site]
name = "fra1"
host = "gpu-host-1"
country = "DE"
zone = "DE"
pue = 1.2
wue_l_per_kwh = 0.5
ewif_l_per_kwh = 3.1

[sampling]
interval_s = 1.0
idle_policy = "resident"

[sampling.idle_power_w]
"NVIDIA H100 80GB HBM3" = 70.0

[nvml]
library = "{lib}"

[prometheus]
listen = "127.0.0.1:{agent_port}"

[server_metrics]
interval_s = 1.0

[host]
rapl = false

[state]
dir = "{state}"

[file]
path = "{out}"
"#,
        lib = harness::sim_library().display(),
        state = state_dir.display(),
        out = out_path.display(),
    );
    let config_path = root.join("agent.toml");
    std::fs::write(&config_path, config).expect("write config");

    // Unprivileged: when the tests run as root, the agent runs as `nobody`.
    let mut cmd = Command::new(harness::bin("inferwatt-agent"));
    cmd.args(["run", "--config"])
        .arg(&config_path)
        .env("FAKE_NVML_SCENARIO", &scenario_path)
        .env("INFERWATT_LOG", "info");
    if harness::running_as_root() {
        use std::os::unix::process::CommandExt as _;
        for p in [root, state_dir.as_path()] {
            Command::new("chmod")
                .arg("777")
                .arg(p)
                .status()
                .expect("chmod");
        }
        cmd.uid(65534).gid(65534);
    }
    let mut agent = Proc::spawn("inferwatt-agent", &mut cmd);

    // A real Prometheus scrapes the agent.
    let prom_dir = root.join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prom dir");
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inferwatt-agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .expect("prometheus config");
    let prometheus_bin = which("prometheus");
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );

    // The process that exits mid-run: it leaves the GPU at scenario t=10 s (the
    // scenario's end_s) and the process itself ends a little later.
    let exit_at = epoch + 11_500;
    harness::wait_for("scenario t=11.5 s", Duration::from_secs(30), || {
        (harness::now_unix_ms() >= exit_at).then_some(())
    });
    exiting.signal("KILL");

    // ≥ 20 s of 1 Hz intervals on both GPUs (after the first reading).
    harness::wait_for("24 intervals per GPU", Duration::from_secs(60), || {
        assert!(agent.is_running(), "the agent exited early");
        let n = harness::read_points(&out_path)
            .iter()
            .filter(|p| p.measurement == "gpu")
            .count();
        (n >= 48).then_some(())
    });

    // Prometheus has scraped the agent and can query its metrics.
    let query = format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=sum%28inferwatt_model_energy_joules_total%29"
    );
    let scraped = harness::wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(30),
        || {
            let (status, body) = harness::http_get(&query)?;
            (status == 200 && body.contains("\"result\":[{")).then_some(body)
        },
    );
    assert!(scraped.contains("\"status\":\"success\""), "{scraped}");

    // promtool accepts the agent's exposition.
    let (_, metrics_text) = harness::http_get(&format!("http://127.0.0.1:{agent_port}/metrics"))
        .expect("agent /metrics");
    for name in [
        "inferwatt_gpu_energy_joules_total",
        "inferwatt_gpu_power_watts",
        "inferwatt_model_energy_joules_total",
        "inferwatt_model_emissions_grams_total",
        "inferwatt_model_water_liters_total",
        "inferwatt_model_requests_total",
        "inferwatt_model_output_tokens_total",
        "inferwatt_agent_samples_total",
    ] {
        assert!(
            metrics_text.contains(name),
            "/metrics lacks {name}:\n{metrics_text}"
        );
    }
    let promtool = std::process::Command::new(which("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.as_ref().expect("stdin");
        stdin
            .write_all(metrics_text.as_bytes())
            .expect("feed promtool");
    }
    let checked = promtool.wait_with_output().expect("promtool output");
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    agent.signal("TERM");
    drop((vllm, sglang, llamacpp));
    let points = harness::read_points(&out_path);
    let epoch_ns = epoch as i64 * 1_000_000;
    let to_s = |ns: i64| (ns - epoch_ns) as f64 / 1e9;

    // Intervals per GPU, and model rows keyed by (gpu, interval end).
    let mut gpu_rows: BTreeMap<String, Vec<(f64, f64, f64, String)>> = BTreeMap::new();
    let mut model_sum: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut model_rows: Vec<(String, String, f64, f64)> = Vec::new();
    for p in &points {
        match p.measurement.as_str() {
            "gpu" => {
                let end = p.timestamp.expect("timestamp");
                let start = to_s(end) - f(p, "interval_s");
                gpu_rows
                    .entry(tag(p, "gpu_uuid").to_string())
                    .or_default()
                    .push((
                        start,
                        to_s(end),
                        f(p, "energy_j"),
                        p.field_value("source")
                            .and_then(|v| v.as_str())
                            .expect("source")
                            .to_string(),
                    ));
            }
            "model_energy" => {
                let key = (
                    tag(p, "gpu_uuid").to_string(),
                    p.timestamp.expect("timestamp"),
                );
                let total = f(p, "active_j") + f(p, "idle_j");
                *model_sum.entry(key).or_default() += total;
                model_rows.push((
                    tag(p, "gpu_uuid").to_string(),
                    tag(p, "model").to_string(),
                    to_s(p.timestamp.expect("timestamp")),
                    total,
                ));
            }
            _ => {}
        }
    }
    assert_eq!(gpu_rows.len(), 2, "both GPUs sampled");

    for (uuid, rows) in &gpu_rows {
        // Conservation (METHODOLOGY §2.4) for every interval.
        for (_, end, e, _) in rows {
            let end_ns = epoch_ns + (end * 1e9).round() as i64;
            let attributed = model_sum
                .iter()
                .find(|((u, t), _)| u == uuid && (t - end_ns).abs() < 1000)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no model rows for {uuid} at {end}"));
            assert!(
                (attributed - e).abs() <= 1e-9 * e.max(1.0),
                "{uuid} at {end}: attributed {attributed} J of {e} J"
            );
        }
        // Per-GPU energy against ground truth over the sampled window, from the
        // scenario's start (readings before t=0 see a driver that has not started).
        let rows: Vec<_> = rows.iter().filter(|r| r.0 >= 0.0).cloned().collect();
        let rows = &rows;
        let from = rows.first().expect("rows").0;
        let to = rows.last().expect("rows").1;
        assert!(
            to - from >= 20.0,
            "at least 20 s sampled, got {}",
            to - from
        );
        let measured: f64 = rows.iter().map(|r| r.2).sum();
        let truth = sim.truth(from, to);
        let t = truth
            .gpus
            .iter()
            .find(|g| &g.uuid == uuid)
            .expect("truth for gpu");
        let err = (measured - t.energy_j).abs() / t.energy_j;
        let counter = uuid.starts_with("GPU-0e8c");
        let tolerance = if counter { 0.005 } else { 0.03 };
        if err > tolerance {
            for (a, b, e, src) in rows {
                let tw = sim.truth(*a, *b);
                let g = tw.gpus.iter().find(|g| &g.uuid == uuid).expect("gpu");
                eprintln!(
                    "{uuid} [{a:.3},{b:.3}] {src}: measured {e:.1} truth {:.1}",
                    g.energy_j
                );
            }
        }
        assert!(
            err <= tolerance,
            "{uuid}: measured {measured:.1} J, truth {:.1} J, error {:.3}% > {}%",
            t.energy_j,
            err * 100.0,
            tolerance * 100.0
        );
        let sources: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        if counter {
            // The counter reset at t=13 s falls back to integration for one interval.
            assert!(
                sources.contains(&"integrated"),
                "the reset interval is integrated: {sources:?}"
            );
            assert!(sources.iter().filter(|s| **s == "counter").count() >= rows.len() - 2);
        } else {
            assert!(
                sources.iter().all(|s| *s == "integrated"),
                "no counter → integrated: {sources:?}"
            );
        }

        // Per-model energy within 2% of ground truth split by the same rules: active
        // as the simulator's true per-process active energy, idle (resident policy) in
        // proportion to active energy in each interval, equally when none was active.
        let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
        for (start, end, _, _) in rows {
            let tw = sim.truth(*start, *end);
            let g = tw.gpus.iter().find(|g| &g.uuid == uuid).expect("gpu truth");
            let mut active: BTreeMap<&str, f64> = BTreeMap::new();
            for p in &g.processes {
                if p.active_j > 0.0 {
                    *active.entry(pid_models[&p.pid]).or_default() += p.active_j;
                }
            }
            let total_active: f64 = active.values().sum();
            if std::env::var("E2E_DEBUG").is_ok() {
                let got: Vec<(&String, f64)> = model_rows
                    .iter()
                    .filter(|(u, _, t, _)| u == uuid && (t - end).abs() < 1e-3)
                    .map(|r| (&r.1, r.3))
                    .collect();
                eprintln!(
                    "[{start:.2},{end:.2}] truth active {active:?} idle {:.1} | agent {got:?}",
                    g.idle_j
                );
            }
            if total_active > 0.0 {
                for (m, a) in &active {
                    *expected.entry(m).or_default() += a + g.idle_j * a / total_active;
                }
            } else {
                let resident: Vec<&str> = residents(uuid, *end);
                for m in &resident {
                    *expected.entry(m).or_default() += g.idle_j / resident.len() as f64;
                }
            }
        }
        for (model, want) in &expected {
            let got: f64 = model_rows
                .iter()
                .filter(|(u, m, t, _)| {
                    u == uuid && m == model && *t > from + 1e-6 && *t <= to + 1e-6
                })
                .map(|r| r.3)
                .sum();
            let err = (got - want).abs() / want;
            assert!(
                err <= 0.02,
                "{uuid} model {model}: attributed {got:.1} J, truth {want:.1} J, error {:.2}%",
                err * 100.0
            );
        }
        assert!(expected.len() >= 2, "models on {uuid}: {expected:?}");
    }

    // Requests and tokens reached the agent from the servers' /metrics.
    let usage: Vec<&Point> = points
        .iter()
        .filter(|p| p.measurement == "model_usage")
        .collect();
    let vllm_tokens: f64 = usage
        .iter()
        .filter(|p| tag(p, "model") == VLLM_MODEL)
        .map(|p| f(p, "output_tokens"))
        .sum();
    assert!(vllm_tokens > 0.0, "vLLM output tokens counted: {usage:?}");
    assert!(
        usage.iter().any(|p| tag(p, "model") == SGLANG_MODEL),
        "SGLang usage counted"
    );
}

fn which(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("'{name}' is not installed: apt-get install prometheus (it brings promtool too)");
}
