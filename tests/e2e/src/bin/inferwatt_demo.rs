//! `inferwatt-demo`: the whole system on a simulated fleet, on any machine, no GPU.
//!
//! Starts the collector (embedded SQLite), the simulated NVIDIA driver with two GPUs,
//! three model servers (simulated, under real vLLM, SGLang and llama.cpp command lines,
//! replaying the Azure LLM inference traces through their `/metrics` counters) and the
//! agent shipping to the collector; runs for `--seconds`; then prints the report and
//! how the measured per-model energy compares with the simulator's ground truth.
//!
//! Usage: `cargo run -p inferwatt-tests --bin inferwatt-demo -- [--seconds N] [--dir DIR] [--keep]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use inferwatt_tests::fleet::Fleet;
use inferwatt_tests::harness::{self, Proc};

struct Args {
    seconds: f64,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 30.0,
        dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                a.seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| (5.0..=3600.0).contains(s))
                    .ok_or(format!("--seconds '{v}': give 5 to 3600"))?;
            }
            "--dir" => a.dir = Some(PathBuf::from(it.next().ok_or("--dir needs a path")?)),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!(
                    "inferwatt-demo: the simulated fleet end to end (simulated driver, model servers, agent, collector, report)\n\n\
                     Options:\n  --seconds N   how long the agent samples (default 30)\n  --dir DIR     keep the files there (default: a temporary directory)\n  --keep        keep the collector serving after the report, until Ctrl-C\n\n\
                     Example:\n  cargo run -p inferwatt-tests --bin inferwatt-demo -- --seconds 60 --dir /tmp/iw"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'; see --help")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    // Stopped with SIGTERM or Ctrl-C, the demo stops its collector, agent and servers.
    harness::stop_children_on_signal();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("inferwatt-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("inferwatt-demo: cannot create '{}': {e}", root.display());
        return ExitCode::from(1);
    }
    match run(&args, &root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferwatt-demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn step(msg: &str) {
    println!("==> {msg}");
}

fn run(args: &Args, root: &Path) -> Result<(), String> {
    let (site, host) = ("fra1", "gpu-host-1");
    let collector_bin = harness::bin("inferwatt-collector");
    step("creating a write token for the agent");
    let c = harness::Collector::prepare(root, site, host)?;
    let (db, port, token) = (c.db.clone(), c.port, c.token.clone());
    step(&format!(
        "starting the collector on 127.0.0.1:{port} (SQLite: {})",
        db.display()
    ));
    let _collector = c.start();

    step("starting three model servers on two simulated H100s (vLLM, SGLang, llama.cpp)");
    let epoch = harness::now_unix_ms() - 500;
    let fleet = Fleet::start(root, epoch, args.seconds, 30.0);
    let sim =
        nvml_sim::Scenario::from_json(&fleet.scenario.to_string()).map_err(|e| e.to_string())?;

    let metrics_port = harness::free_port();
    let lp = root.join("intervals.lp");
    let agent_config = root.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "[site]\nname = \"{site}\"\nhost = \"{host}\"\ncountry = \"DE\"\nzone = \"DE\"\npue = 1.2\nwue_l_per_kwh = 0.5\newif_l_per_kwh = 3.1\n\
             [nvml]\nlibrary = \"{lib}\"\n[prometheus]\nlisten = \"127.0.0.1:{metrics_port}\"\n[server_metrics]\ninterval_s = 1.0\n\
             [host]\nrapl = false\n[state]\ndir = \"{state}\"\n[file]\npath = \"{lp}\"\n\
             [ship]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{token}\"\nflush_interval_s = 1.0\n",
            lib = harness::sim_library().display(),
            state = root.join("agent-state").display(),
            lp = lp.display(),
        ),
    )
    .map_err(|e| e.to_string())?;

    step(&format!(
        "running the agent for {} s (metrics: http://127.0.0.1:{metrics_port}/metrics)",
        args.seconds
    ));
    let mut agent = Proc::spawn(
        "inferwatt-agent",
        Command::new(harness::bin("inferwatt-agent"))
            .args(["run", "--config"])
            .arg(&agent_config)
            .env("FAKE_NVML_SCENARIO", &fleet.scenario_path)
            .env("INFERWATT_LOG", "warn"),
    );
    let start = std::time::Instant::now();
    while start.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(250));
        if !agent.is_running() {
            return Err(
                "the agent exited early; run it by hand with the config in the demo directory"
                    .into(),
            );
        }
    }
    agent.signal("TERM");
    let gpu_points = std::fs::read_to_string(&lp)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("gpu,"))
        .count() as i64;
    harness::wait_for(
        "the agent's spool to drain",
        Duration::from_secs(30),
        || {
            let store = inferwatt_collector::store::Store::open(&db).ok()?;
            let n: i64 = store
                .sum_gpu_energy(0, i64::MAX)
                .ok()?
                .iter()
                .map(|r| r.points)
                .sum();
            (n >= gpu_points).then_some(())
        },
    );

    step("report (Markdown; HTML and JSON written beside it)");
    for (format, file) in [
        ("md", "report.md"),
        ("html", "report.html"),
        ("json", "report.json"),
    ] {
        let out = Command::new(&collector_bin)
            .args(["report", "--format", format, "--db"])
            .arg(&db)
            .arg("--out")
            .arg(root.join(file))
            .output()
            .map_err(|e| format!("report: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "report failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    print!(
        "{}",
        std::fs::read_to_string(root.join("report.md")).unwrap_or_default()
    );

    step("measured vs the simulator's ground truth");
    compare_with_truth(&lp, &sim, epoch, &fleet)?;
    println!("\nFiles: {}", root.display());
    println!("Report API: http://127.0.0.1:{port}/api/v1/report?format=html");
    if args.keep {
        println!("Serving until Ctrl-C.");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    drop(fleet);
    Ok(())
}

fn compare_with_truth(
    lp: &Path,
    sim: &nvml_sim::Scenario,
    epoch: i64,
    fleet: &Fleet,
) -> Result<(), String> {
    let text = std::fs::read(lp).map_err(|e| e.to_string())?;
    let points = inferwatt_core::lineproto::decode(
        &text,
        inferwatt_core::lineproto::Precision::Nanoseconds,
        0,
    )
    .map_err(|e| e.to_string())?;
    let models: BTreeMap<u32, &str> = fleet.models().into_iter().collect();
    let epoch_ns = epoch * 1_000_000;
    let mut measured: BTreeMap<String, f64> = BTreeMap::new();
    let mut truth: BTreeMap<String, f64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "model_energy") {
        let m = p.tag_value("model").unwrap_or_default().to_string();
        *measured.entry(m).or_default() +=
            p.field_f64("active_j").unwrap_or(0.0) + p.field_f64("idle_j").unwrap_or(0.0);
    }
    let mut gpu_measured = 0.0;
    let mut gpu_truth = 0.0;
    for p in points.iter().filter(|p| p.measurement == "gpu") {
        let end = (p.timestamp.unwrap_or(0) - epoch_ns) as f64 / 1e9;
        let start = end - p.field_f64("interval_s").unwrap_or(0.0);
        let uuid = p.tag_value("gpu_uuid").unwrap_or_default();
        gpu_measured += p.field_f64("energy_j").unwrap_or(0.0);
        let tw = sim.truth(start, end);
        let Some(g) = tw.gpus.iter().find(|g| g.uuid == uuid) else {
            continue;
        };
        gpu_truth += g.energy_j;
        let total: f64 = g.processes.iter().map(|p| p.active_j).sum();
        for pr in &g.processes {
            let share = if total > 0.0 {
                pr.active_j / total
            } else {
                1.0 / g.processes.len() as f64
            };
            if let Some(m) = models.get(&pr.pid) {
                *truth.entry(m.to_string()).or_default() += pr.active_j + g.idle_j * share;
            }
        }
    }
    println!("| | measured (J) | ground truth (J) | error |\n|---|---:|---:|---:|");
    println!(
        "| all GPUs | {gpu_measured:.1} | {gpu_truth:.1} | {:+.2}% |",
        100.0 * (gpu_measured - gpu_truth) / gpu_truth
    );
    for (m, t) in &truth {
        let got = measured.get(m).copied().unwrap_or(0.0);
        println!(
            "| {m} | {got:.1} | {t:.1} | {:+.2}% |",
            100.0 * (got - t) / t
        );
    }
    Ok(())
}
