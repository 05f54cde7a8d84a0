//! Collector ingest against VictoriaMetrics on the same payload: about `--points` points of
//! synthetic agent line protocol, `POST /api/v2/write` in batches of `--batch` (one
//! connection per request, sequential) to the release collector (token auth, SQLite
//! commit before 204) and to VictoriaMetrics (`/usr/bin/victoria-metrics`), points per
//! second each. Prints one JSON object.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use inferwatt_bench::spawn::{self, Proc};
use inferwatt_bench::{http, payload};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Points to send (rounded up to whole host intervals).
    #[arg(long, default_value_t = 500_000)]
    points: usize,
    /// Points per write request.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// The VictoriaMetrics binary.
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Sends every batch to `url`; returns (points, seconds).
fn send_all(
    url: &str,
    token: Option<&str>,
    batches: &[(usize, String)],
) -> anyhow::Result<(usize, f64)> {
    let auth = token.map(|t| format!("Token {t}"));
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let started = Instant::now();
    let mut n = 0;
    for (count, body) in batches {
        let r = http::request("POST", url, &headers, body.as_bytes())?;
        if r.status != 204 {
            bail!("'{url}' answered {} to a write: {}", r.status, r.body);
        }
        n += count;
    }
    Ok((n, started.elapsed().as_secs_f64()))
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let now_ns = spawn::now_unix_ms() * 1_000_000;
    let batches = payload::batches(args.points, args.batch, now_ns)?;
    let bytes: usize = batches.iter().map(|(_, b)| b.len()).sum();

    // The collector: a config-file token bound to the synthetic site, every host.
    let token = "iw_benchmark_token_0123456789abcdef";
    let port = spawn::free_port()?;
    let db = root.join("collector.db");
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndb_path = \"{db}\"\nraw_retention_days = 0\n\n[[tokens]]\nsha256 = \"{hash}\"\nsite = \"{site}\"\nhost = \"*\"\n",
        db = db.display(),
        hash = inferwatt_collector::ingest::auth::hash_token(token),
        site = payload::SITE,
    );
    let config_path = root.join("collector.toml");
    std::fs::write(&config_path, config)?;
    let collector_log = std::fs::File::create(root.join("collector.log"))?;
    let mut collector = Proc::spawn(
        "inferwatt-collector",
        Command::new(spawn::sibling("inferwatt-collector")?)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(collector_log),
    )?;
    wait_healthy(&format!("http://127.0.0.1:{port}/healthz"))?;
    let (n_c, s_c) = send_all(
        &format!("http://127.0.0.1:{port}/api/v2/write?org=bench&bucket=inferwatt&precision=ns"),
        Some(token),
        &batches,
    )?;
    collector.terminate();
    let stored = inferwatt_collector::store::Store::open(&db)?.count_points()?;

    let db_bytes: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();

    // VictoriaMetrics on the same payload.
    let vm_port = spawn::free_port()?;
    let vm_data = root.join("vm-data");
    let _vm = Proc::spawn(
        "victoria-metrics",
        Command::new(&args.victoria_metrics)
            .arg(format!("-storageDataPath={}", vm_data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .with_context(|| {
        format!(
            "install VictoriaMetrics ('{}')",
            args.victoria_metrics.display()
        )
    })?;
    wait_healthy(&format!("http://127.0.0.1:{vm_port}/health"))?;
    let (n_v, s_v) = send_all(
        &format!("http://127.0.0.1:{vm_port}/api/v2/write?org=bench&bucket=inferwatt&precision=ns"),
        None,
        &batches,
    )?;
    // The Debian package's version (the binary's -version flag prints nothing there).
    let vm_version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "victoria-metrics"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let result = json!({
        "bench": "ingest",
        "points": n_c,
        "batch": args.batch,
        "payload_bytes": bytes,
        "collector": {
            "seconds": s_c,
            "points_per_s": n_c as f64 / s_c,
            "stored_points": stored,
            "db_bytes": db_bytes,
        },
        "victoria_metrics": {
            "version": vm_version,
            "data_bytes": dir_size(&vm_data),
            "seconds": s_v,
            "points_per_s": n_v as f64 / s_v,
        },
        "ratio_collector_over_vm": (n_c as f64 / s_c) / (n_v as f64 / s_v),
    });
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    println!("{text}");
    Ok(())
}
