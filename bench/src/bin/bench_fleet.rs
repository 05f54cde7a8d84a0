//! The fleet bench (issue "Fleets"): `--hosts` simulated hosts × 8 GPUs × 4 model
//! processes (8 models per host), `--hours` of `--interval-s` intervals — 50 points per
//! host-interval, 72 M points for the defaults (1,000 hosts, 24 h, 60 s) — written through
//! `--collectors` release collectors (`[store] backend = "victoriametrics"`, token auth)
//! into one VictoriaMetrics (`/usr/bin/victoria-metrics`, `-dedup.minScrapeInterval=1ms`),
//! by `--senders` threads, each generating and encoding its own hosts' points. Then the
//! period's report is asked of the first collector (`GET /api/v1/report`) and timed, and
//! its GPU energy is checked against the sum of what was sent.
//!
//! Prints one JSON object: points, seconds, points/s, VictoriaMetrics' data bytes per
//! point and series count, the report's seconds, and the sent-versus-reported energy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use inferwatt_bench::spawn::{self, Proc};
use inferwatt_bench::{http, payload};
use inferwatt_core::lineproto::encode;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Simulated hosts (8 GPUs, 4 model processes per GPU each).
    #[arg(long, default_value_t = 1_000)]
    hosts: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24)]
    hours: usize,
    /// Shipped interval, seconds (the agent's `[ship] interval_s`).
    #[arg(long, default_value_t = 60)]
    interval_s: u64,
    /// Points per write request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Collectors the writes are spread over.
    #[arg(long, default_value_t = 2)]
    collectors: usize,
    /// Sending threads (each one generates and encodes its own hosts).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// The VictoriaMetrics binary.
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Keep VictoriaMetrics' data here (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn wait_healthy(url: &str) -> anyhow::Result<()> {
    spawn::wait_for(url, Duration::from_secs(60), || {
        http::get(url).ok().filter(|r| r.status == 200).map(|_| ())
    })?;
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn query(base: &str, q: &str, at_ns: i64) -> anyhow::Result<Value> {
    let mut enc = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    let r = http::get(&format!(
        "{base}/api/v1/query?query={enc}&time={}",
        at_ns / 1_000_000_000
    ))?;
    if r.status != 200 {
        bail!("query '{q}' answered {}: {}", r.status, r.body);
    }
    Ok(serde_json::from_str(&r.body)?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let vm_data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| root.join("vm-data"));

    let vm_port = spawn::free_port()?;
    let vm_base = format!("http://127.0.0.1:{vm_port}");
    let _vm = Proc::spawn(
        "victoria-metrics",
        Command::new(&args.victoria_metrics)
            .arg(format!("-storageDataPath={}", vm_data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg("-retentionPeriod=100y")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .with_context(|| {
        format!(
            "install VictoriaMetrics ('{}')",
            args.victoria_metrics.display()
        )
    })?;
    wait_healthy(&format!("{vm_base}/health"))?;

    let token = "iw_benchmark_token_0123456789abcdef";
    let mut collectors = Vec::new();
    let mut ports = Vec::new();
    for i in 0..args.collectors.max(1) {
        let port = spawn::free_port()?;
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nmax_concurrent_writes = 16\n\n[store]\nbackend = \"victoriametrics\"\nwrite_url = \"{vm_base}/api/v2/write\"\nquery_url = \"{vm_base}/prometheus\"\ntimeout_s = 600.0\n\n[[tokens]]\nsha256 = \"{hash}\"\nsite = \"{site}\"\nhost = \"*\"\n",
            hash = inferwatt_collector::ingest::auth::hash_token(token),
            site = payload::SITE,
        );
        let path = root.join(format!("collector-{i}.toml"));
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(root.join(format!("collector-{i}.log")))?;
        collectors.push(Proc::spawn(
            "inferwatt-collector",
            Command::new(spawn::sibling("inferwatt-collector")?)
                .args(["serve", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log),
        )?);
        wait_healthy(&format!("http://127.0.0.1:{port}/healthz"))?;
        ports.push(port);
    }

    // A past UTC day (hour-aligned), so the report's period holds all of it.
    let hour_ns = 3_600_000_000_000i64;
    let iv_ns = args.interval_s as i64 * 1_000_000_000;
    let intervals = (args.hours as i64 * hour_ns / iv_ns) as usize;
    let start_ns = (spawn::now_unix_ms() * 1_000_000 / hour_ns - args.hours as i64 - 2) * hour_ns;
    let end_ns = start_ns + args.hours as i64 * hour_ns;

    let sent_points = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for t in 0..args.senders.max(1) {
        let (hosts, batch, senders) = (args.hosts, args.batch, args.senders.max(1));
        let port = ports[t % ports.len()];
        let sent = sent_points.clone();
        let interval_s = args.interval_s as f64;
        threads.push(std::thread::spawn(move || -> anyhow::Result<f64> {
            let url = format!(
                "http://127.0.0.1:{port}/api/v2/write?org=bench&bucket=inferwatt&precision=ns"
            );
            let auth = format!("Token {token}");
            let headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Authorization", auth.as_str()),
            ];
            let mut energy = 0.0;
            let mut buf = Vec::with_capacity(batch + 64);
            let flush = |buf: &mut Vec<inferwatt_core::lineproto::Point>| -> anyhow::Result<()> {
                if buf.is_empty() {
                    return Ok(());
                }
                let body = encode(buf)?;
                loop {
                    let r = http::request("POST", &url, &headers, body.as_bytes())?;
                    match r.status {
                        204 => break,
                        429 | 503 => std::thread::sleep(Duration::from_millis(200)),
                        s => bail!("'{url}' answered {s} to a write: {}", r.body),
                    }
                }
                sent.fetch_add(buf.len(), Ordering::Relaxed);
                buf.clear();
                Ok(())
            };
            for k in 0..intervals {
                let end = start_ns + (k as i64 + 1) * iv_ns;
                for h in (t..hosts).step_by(senders) {
                    for p in payload::host_interval_of(h, end, k, interval_s) {
                        if p.measurement == "gpu" {
                            energy += p.field_f64("energy_j").unwrap_or(0.0);
                        }
                        buf.push(p);
                    }
                    if buf.len() >= batch {
                        flush(&mut buf)?;
                    }
                }
            }
            flush(&mut buf)?;
            Ok(energy)
        }));
    }
    let mut sent_energy_j = 0.0;
    for th in threads {
        sent_energy_j += th
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let points = sent_points.load(Ordering::Relaxed);
    let flush = http::get(&format!("{vm_base}/internal/force_flush"))?;
    if flush.status != 200 {
        bail!("force_flush answered {}", flush.status);
    }

    let report_started = Instant::now();
    let url = format!(
        "http://127.0.0.1:{}/api/v1/report?from={}&to={}&format=json",
        ports[0],
        start_ns / 1_000_000_000,
        end_ns / 1_000_000_000
    );
    let r = http::get(&url)?;
    let report_s = report_started.elapsed().as_secs_f64();
    if r.status != 200 {
        bail!("report answered {}: {}", r.status, r.body);
    }
    let report: Value = serde_json::from_str(&r.body)?;
    let e = &report["totals"]["energy_kwh"];
    let reported_j =
        (e["gpu_active"].as_f64().unwrap_or(0.0) + e["gpu_idle"].as_f64().unwrap_or(0.0)) * 3.6e6;

    let window = format!("{}s", (end_ns - start_ns) / 1_000_000_000);
    let series = query(
        &vm_base,
        &format!("count(last_over_time({{__name__=~\".+\"}}[{window}]))"),
        end_ns,
    )?;
    let series = series["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    let samples = query(
        &vm_base,
        &format!("sum(count_over_time({{__name__=~\".+\"}}[{window}]))"),
        end_ns,
    );
    let samples = samples
        .ok()
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    for c in &mut collectors {
        c.terminate();
    }
    // Let VictoriaMetrics merge what it buffered before its size is read.
    std::thread::sleep(Duration::from_secs(5));
    let data_bytes = dir_size(&vm_data);
    let vm_version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "victoria-metrics"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let result = json!({
        "bench": "fleet",
        "hosts": args.hosts,
        "gpus": args.hosts * 8,
        "hours": args.hours,
        "interval_s": args.interval_s,
        "collectors": args.collectors,
        "senders": args.senders,
        "batch": args.batch,
        "points": points,
        "ingest": {
            "seconds": ingest_s,
            "points_per_s": points as f64 / ingest_s,
        },
        "victoria_metrics": {
            "version": vm_version,
            "series": series,
            "samples": samples,
            "data_bytes": data_bytes,
            "bytes_per_point": data_bytes as f64 / points.max(1) as f64,
        },
        "report": {
            "seconds": report_s,
            "gpu_energy_j": reported_j,
            "sent_gpu_energy_j": sent_energy_j,
            "relative_difference": (reported_j - sent_energy_j).abs() / sent_energy_j.max(1e-12),
        },
    });
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    println!("{text}");
    Ok(())
}
