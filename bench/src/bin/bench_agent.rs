//! Agent overhead and accuracy, with CodeCarbon and Zeus beside it: 32 simulated model
//! servers on 8 simulated H100s (bursty trace), the release agent sampling them at
//! `--interval-s` for `--minutes` (file sink, Prometheus endpoint scraped every 15 s),
//! CPU time and peak RSS from /proc over the steady state, and cumulative energy per GPU
//! and per model against the simulator's ground truth. With `--peers`, CodeCarbon and
//! Zeus watch the same GPUs over the same window. Prints one JSON object.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use inferwatt_bench::fleet;
use inferwatt_bench::procstat::{self, Usage};
use inferwatt_bench::spawn::{self, Proc};
use inferwatt_core::lineproto::{decode, Point, Precision};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Minutes of steady-state measurement.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// The agent's sampling interval, seconds (1.0 = 1 Hz, 0.1 = 10 Hz).
    #[arg(long, default_value_t = 1.0)]
    interval_s: f64,
    /// Also run CodeCarbon and Zeus (bench/peers/*.py) over the same window.
    #[arg(long)]
    peers: bool,
    /// Python with codecarbon and zeus installed.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Work in this directory (kept: scenario, agent config, log and intervals) instead of
    /// a temporary one.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The agent's split of active energy: `power_model` (its default) or `sm_util`.
    #[arg(long, default_value = "power_model")]
    split: String,
}

/// A peer monitor: its process, its stdin (closing it ends the measurement), its stdout.
struct Peer {
    tool: &'static str,
    proc: Proc,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

fn start_peer(
    tool: &'static str,
    args: &Args,
    env_dir: &Path,
    scenario: &Path,
) -> anyhow::Result<Peer> {
    let script = spawn::repo_root().join(format!("bench/peers/{tool}_peer.py"));
    let path = format!(
        "{}:{}",
        env_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(&args.python)
        .arg(&script)
        .env("PATH", path)
        .env("LD_LIBRARY_PATH", env_dir)
        .env("FAKE_NVML_SCENARIO", scenario)
        .env("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
        .current_dir(env_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start '{}' with '{}'",
                script.display(),
                args.python.display()
            )
        })?;
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().context("peer stdout")?);
    Ok(Peer {
        tool,
        proc: Proc::from_child(tool, child),
        stdin,
        stdout,
    })
}

/// The first line of a peer's stdout that `want` accepts (libraries print other lines
/// there); empty at end of output.
fn read_line(
    r: &mut BufReader<std::process::ChildStdout>,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(String::new());
        }
        if want(line.trim()) {
            return Ok(line.trim().to_string());
        }
    }
}

fn points(path: &Path) -> anyhow::Result<Vec<Point>> {
    let body = std::fs::read(path).unwrap_or_default();
    let end = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(decode(&body[..end], Precision::Nanoseconds, 0)?)
}

fn num(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

fn rel_err_pct(measured: f64, truth: f64) -> f64 {
    if truth == 0.0 {
        0.0
    } else {
        100.0 * (measured - truth) / truth
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ticks = procstat::clock_ticks()?;
    let tmp = tempfile::tempdir()?;
    let root = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let root = root.as_path();
    let seconds = args.minutes * 60.0;

    // 32 model servers: real processes under vLLM command lines.
    let server_bin = spawn::sibling("fake-inference-server")?;
    let mut servers = Vec::new();
    for i in 0..fleet::GPUS * fleet::PROCS_PER_GPU {
        let mut cmd = Command::new(&server_bin);
        cmd.arg0("vllm").args(["serve", &fleet::model_of(i)]);
        servers.push(Proc::spawn("fake-inference-server", &mut cmd)?);
    }
    let pids: Vec<u32> = servers.iter().map(Proc::pid).collect();
    let pid_model: BTreeMap<u32, String> = pids
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, fleet::model_of(i)))
        .collect();
    // The scenario starts 10 s in the past, so the agent's first interval already lies
    // inside it (before t=0 the simulated counter stands still).
    let epoch = spawn::now_unix_ms() - 10_000;
    let scenario = fleet::scenario(epoch, &pids, seconds + 120.0);
    let scenario_path = root.join("scenario.json");
    std::fs::write(&scenario_path, serde_json::to_vec_pretty(&scenario)?)?;
    let sim = nvml_sim::Scenario::from_json(&scenario.to_string())?;

    // The release agent.
    let sim_lib = spawn::sibling("libnvml_sim.so")?;
    let out_path = root.join("intervals.lp");
    let state = root.join("state");
    std::fs::create_dir_all(&state)?;
    let prom_port = spawn::free_port()?;
    let config = format!(
        "[site]\nname = \"bench\"\nhost = \"bench-host\"\ncountry = \"DEU\"\nzone = \"DE\"\npue = 1.2\nwue_l_per_kwh = 0.5\newif_l_per_kwh = 3.1\n\n\
         [sampling]\ninterval_s = {interval}\nidle_policy = \"separate\"\nsplit = \"{split}\"\n\n[sampling.idle_power_w]\n\"{gpu}\" = {idle}\n\n\
         [nvml]\nlibrary = \"{lib}\"\n\n[prometheus]\nlisten = \"127.0.0.1:{prom_port}\"\n\n[host]\nrapl = false\n\n\
         [state]\ndir = \"{state}\"\n\n[file]\npath = \"{out}\"\n",
        interval = args.interval_s,
        split = args.split,
        gpu = fleet::GPU_NAME,
        idle = fleet::IDLE_W,
        lib = sim_lib.display(),
        state = state.display(),
        out = out_path.display(),
    );
    let config_path = root.join("agent.toml");
    std::fs::write(&config_path, config)?;
    let agent_log = std::fs::File::create(root.join("agent.log"))?;
    let mut agent = Proc::spawn(
        "inferwatt-agent",
        Command::new(spawn::sibling("inferwatt-agent")?)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("FAKE_NVML_SCENARIO", &scenario_path)
            .env("INFERWATT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(agent_log),
    )?;

    // Peers, on the same simulated driver.
    let mut peers = Vec::new();
    if args.peers {
        let env_dir = root.join("peer-env");
        std::fs::create_dir_all(&env_dir)?;
        std::os::unix::fs::symlink(&sim_lib, env_dir.join("libnvidia-ml.so.1"))?;
        let stub = env_dir.join("nvidia-smi");
        std::fs::write(
            &stub,
            "#!/bin/sh\necho 'NVIDIA-SMI stub (inferwatt benchmark)'\nexit 0\n",
        )?;
        Command::new("chmod").arg("755").arg(&stub).status()?;
        for tool in ["codecarbon", "zeus"] {
            let mut p = start_peer(tool, &args, &env_dir, &scenario_path)?;
            let line = read_line(&mut p.stdout, |l| l == "READY")?;
            if line != "READY" {
                bail!("{tool} did not start (said '{line}'); run bench/peers/{tool}_peer.py by hand to see why");
            }
            peers.push(p);
        }
    }

    // Warm-up: the agent has written its first intervals.
    spawn::wait_for(
        "the agent's first intervals",
        Duration::from_secs(60),
        || {
            points(&out_path)
                .ok()
                .filter(|p| p.iter().any(|p| p.measurement == "gpu"))
                .map(|_| ())
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let uptime_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let a0 = procstat::usage(agent.pid(), ticks)?;
    let p0: Vec<Usage> = peers
        .iter()
        .map(|p| procstat::usage(p.proc.pid(), ticks))
        .collect::<Result<_, _>>()?;
    let metrics_url = format!("http://127.0.0.1:{prom_port}/metrics");
    let mut scrapes = 0u32;
    while started.elapsed().as_secs_f64() < seconds {
        if inferwatt_bench::http::get(&metrics_url).is_ok_and(|r| r.status == 200) {
            scrapes += 1;
        }
        let left = seconds - started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs_f64(left.clamp(0.0, 15.0)));
    }
    let wall = started.elapsed().as_secs_f64();
    let a1 = procstat::usage(agent.pid(), ticks)?;
    let p1: Vec<Usage> = peers
        .iter()
        .map(|p| procstat::usage(p.proc.pid(), ticks))
        .collect::<Result<_, _>>()?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // Peers stop and report.
    let mut peer_results = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        drop(p.stdin.take());
        let line = read_line(&mut p.stdout, |l| l.starts_with('{'))?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} printed '{line}' instead of its JSON result", p.tool))?;
        let from = v["start_unix_ms"].as_f64().unwrap_or(0.0) as i64;
        let to = v["end_unix_ms"].as_f64().unwrap_or(0.0) as i64;
        let truth: f64 = sim
            .truth_unix_ms(from, to)?
            .gpus
            .iter()
            .map(|g| g.energy_j)
            .sum();
        let measured = v["gpu_energy_j"].as_f64().unwrap_or(f64::NAN);
        peer_results.push(json!({
            "tool": p.tool,
            "version": v["version"],
            "gpus_seen": v["gpu_count"],
            "cpu_pct_one_core": procstat::cpu_pct_of_one_core(p0[i], p1[i], wall),
            "peak_rss_mib": p1[i].peak_rss_kib as f64 / 1024.0,
            "window_s": (to - from) as f64 / 1000.0,
            "gpu_energy_j": measured,
            "truth_gpu_energy_j": truth,
            "gpu_energy_err_pct": rel_err_pct(measured, truth),
        }));
        let _ = p.proc.child.wait();
    }
    agent.terminate();

    // Accuracy, cumulative: per GPU, the energy of all its intervals against the truth
    // over the window they cover (first interval start to last interval end); per model,
    // its active energy against its processes' true active energy over the same windows.
    let pts = points(&out_path)?;
    let mut windows: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut gpu_meas: BTreeMap<String, f64> = BTreeMap::new();
    let mut covered_s: BTreeMap<String, f64> = BTreeMap::new();
    let mut model_meas: BTreeMap<String, f64> = BTreeMap::new();
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut intervals = 0usize;
    for p in &pts {
        let Some(end_ns) = p.timestamp else { continue };
        match p.measurement.as_str() {
            "gpu" => {
                intervals += 1;
                let uuid = p.tag_value("gpu_uuid").unwrap_or_default().to_string();
                let from_ms = (end_ns as f64 / 1e6 - num(p, "interval_s") * 1000.0).round() as i64;
                let to_ms = (end_ns as f64 / 1e6).round() as i64;
                let w = windows.entry(uuid.clone()).or_insert((from_ms, to_ms));
                *w = (w.0.min(from_ms), w.1.max(to_ms));
                *gpu_meas.entry(uuid.clone()).or_default() += num(p, "energy_j");
                *covered_s.entry(uuid).or_default() += num(p, "interval_s");
                if let Some(inferwatt_core::lineproto::FieldValue::Str(s)) =
                    p.fields.iter().find(|(k, _)| k == "source").map(|(_, v)| v)
                {
                    *sources.entry(s.clone()).or_default() += 1;
                }
            }
            "model_energy" => {
                let m = p.tag_value("model").unwrap_or_default().to_string();
                *model_meas.entry(m).or_default() += num(p, "active_j");
            }
            _ => {}
        }
    }
    let mut gpu_truth: BTreeMap<String, f64> = BTreeMap::new();
    let mut model_truth: BTreeMap<String, f64> = BTreeMap::new();
    let mut window_s: BTreeMap<String, f64> = BTreeMap::new();
    for (uuid, (from_ms, to_ms)) in &windows {
        let t = sim.truth_unix_ms(*from_ms, *to_ms)?;
        let g = t
            .gpus
            .iter()
            .find(|g| &g.uuid == uuid)
            .context("the agent reported a GPU the scenario lacks")?;
        gpu_truth.insert(uuid.clone(), g.energy_j);
        window_s.insert(uuid.clone(), (to_ms - from_ms) as f64 / 1000.0);
        for pr in &g.processes {
            if let Some(m) = pid_model.get(&pr.pid) {
                *model_truth.entry(m.clone()).or_default() += pr.active_j;
            }
        }
    }
    let coverage_min = covered_s
        .iter()
        .map(|(u, c)| c / window_s[u])
        .fold(f64::INFINITY, f64::min);
    if gpu_meas.is_empty() {
        bail!("the agent wrote no gpu intervals; see its log in a kept run");
    }
    let per_gpu_err: Vec<f64> = gpu_meas
        .iter()
        .map(|(u, m)| rel_err_pct(*m, gpu_truth[u]))
        .collect();
    let total_meas: f64 = gpu_meas.values().sum();
    let total_truth: f64 = gpu_truth.values().sum();
    let per_model_err: BTreeMap<&String, f64> = model_truth
        .iter()
        .map(|(m, t)| {
            (
                m,
                rel_err_pct(model_meas.get(m).copied().unwrap_or(0.0), *t),
            )
        })
        .collect();
    let max_abs = |v: &mut dyn Iterator<Item = f64>| v.map(f64::abs).fold(0.0, f64::max);

    let result = json!({
        "bench": "agent",
        "interval_s": args.interval_s,
        "split": args.split,
        "minutes": args.minutes,
        "gpus": fleet::GPUS,
        "processes": pids.len(),
        "wall_s": wall,
        "loadavg_start": uptime_before.trim(),
        "loadavg_end": load_after.trim(),
        "prometheus_scrapes": scrapes,
        "agent": {
            "cpu_pct_one_core": procstat::cpu_pct_of_one_core(a0, a1, wall),
            "cpu_s": a1.cpu_s - a0.cpu_s,
            "peak_rss_mib": a1.peak_rss_kib as f64 / 1024.0,
            "gpu_intervals": intervals,
            "min_interval_coverage": coverage_min,
            "interval_sources": sources,
            "gpu_energy_j": total_meas,
            "truth_gpu_energy_j": total_truth,
            "gpu_energy_err_pct": rel_err_pct(total_meas, total_truth),
            "max_abs_per_gpu_err_pct": max_abs(&mut per_gpu_err.iter().copied()),
            "max_abs_per_model_active_err_pct": max_abs(&mut per_model_err.values().copied()),
            "per_model_active_err_pct": per_model_err,
        },
        "peers": peer_results,
    });
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    std::io::stdout().write_all(text.as_bytes())?;
    println!();
    drop(servers);
    Ok(())
}
