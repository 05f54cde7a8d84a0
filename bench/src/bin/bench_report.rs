//! Report latency over a year: a SQLite store filled (through `Store::write`, the ingest
//! path) with 365 days of hourly intervals for 64 GPUs (8 hosts × 8) each running 8
//! models, then the median of `--runs` timings of `reporting::build_report` in process,
//! of the web page's series call over the year (one-day step), and of the release
//! `inferwatt-collector report` CLI (JSON to a file) with its peak RSS. Prints one JSON
//! object.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use inferwatt_bench::{procstat, spawn};
use inferwatt_collector::reporting::{self, FactorsChoice, ReportRequest};
use inferwatt_collector::store::Store;
use inferwatt_collector::web::series::{self, SeriesGroup, SeriesRequest};
use inferwatt_core::schema::{
    EnergySource, GpuInterval, ModelEnergy, ModelUsage, Origin, SiteInfo, SplitMethod,
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Days of hourly data.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Timed runs of each report path (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Store file to fill (kept); default a temporary one.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2025-01-01T00:00:00Z: a past year, as a report over a year is.
const T0: i64 = 1_735_689_600 * 1_000_000_000;
const HOSTS: u32 = 8;
const GPUS_PER_HOST: u32 = 8;
const MODELS: u32 = 8;

fn day_points(day: i64) -> Vec<inferwatt_core::lineproto::Point> {
    let mut out = Vec::new();
    for h in 0..HOSTS {
        let o = Origin {
            site: format!("site-{}", h % 2),
            host: format!("gpu-host-{h}"),
        };
        if day == 0 {
            out.push(
                SiteInfo {
                    country: if h % 2 == 0 { "DEU" } else { "FRA" }.into(),
                    zone: if h % 2 == 0 { "DE" } else { "FR" }.into(),
                    pue: Some(1.2),
                    wue_l_per_kwh: Some(0.5),
                    idle_policy: Some("resident".into()),
                    interval_s: 3600.0,
                    end_ns: T0 + 1,
                }
                .to_point(&o),
            );
        }
        for hour in 0..24 {
            let end_ns = T0 + (day * 24 + hour + 1) * HOUR_NS;
            for g in 0..GPUS_PER_HOST {
                let uuid = format!("GPU-{h}-{g}");
                out.push(
                    GpuInterval {
                        gpu_uuid: uuid.clone(),
                        gpu_index: g,
                        gpu_name: "NVIDIA H100 80GB HBM3".into(),
                        energy_j: 3600.0 * 400.0,
                        power_w: Some(400.0),
                        util_pct: Some(50.0),
                        mem_used_bytes: Some(70_000_000_000),
                        energy_counter_mj: None,
                        interval_s: 3600.0,
                        source: EnergySource::Counter,
                        clock_step_s: None,
                        end_ns,
                    }
                    .to_point(&o),
                );
                for m in 0..MODELS {
                    out.push(
                        ModelEnergy {
                            gpu_uuid: uuid.clone(),
                            model: format!("model-{m}"),
                            server: "vllm".into(),
                            active_j: 3600.0 * 330.0 / MODELS as f64,
                            idle_j: 3600.0 * 70.0 / MODELS as f64,
                            host_j: 3600.0 * 10.0 / MODELS as f64,
                            interval_s: 3600.0,
                            method: SplitMethod::SmUtil,
                            end_ns,
                            pod: None,
                        }
                        .to_point(&o),
                    );
                }
            }
            for m in 0..MODELS {
                out.push(
                    ModelUsage {
                        model: format!("model-{m}"),
                        server: "vllm".into(),
                        requests: 1000,
                        input_tokens: 1_000_000,
                        output_tokens: 250_000,
                        interval_s: 3600.0,
                        end_ns,
                        pod: None,
                    }
                    .to_point(&o),
                );
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| tmp.path().join("year.db"));
    let store = Store::open(&db)?;
    let fill_started = Instant::now();
    let mut points = 0usize;
    if store.count_points()? == 0 {
        for day in 0..args.days {
            let batch = day_points(day);
            points += batch.len();
            store.write(&batch)?;
        }
    }
    let fill_s = fill_started.elapsed().as_secs_f64();

    let req = ReportRequest {
        from_ns: Some(T0),
        to_ns: Some(T0 + args.days * 24 * HOUR_NS),
        ..ReportRequest::default()
    };
    let mut lib_s = Vec::new();
    let mut requests = 0;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let report = reporting::build_report(&store, &req, &FactorsChoice::builtin())?;
        lib_s.push(started.elapsed().as_secs_f64());
        requests = report.totals.requests;
    }
    let expected = (args.days * 24) as u64 * (HOSTS * MODELS) as u64 * 1000;
    if requests != expected {
        bail!("the report counted {requests} requests, the store holds {expected}");
    }
    drop(store);

    // The web page's series call over the same year (its step for a year: one day).
    let store = Store::open(&db)?;
    let mut series_s = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let s = series::build_series(
            &store,
            &SeriesRequest {
                from_ns: req.from_ns,
                to_ns: req.to_ns,
                step_s: 86_400,
                group: SeriesGroup::Model,
            },
            &FactorsChoice::builtin(),
        )?;
        series_s.push(started.elapsed().as_secs_f64());
        if s.bucket_starts.len() as i64 != args.days {
            bail!(
                "the series has {} buckets, want {}",
                s.bucket_starts.len(),
                args.days
            );
        }
    }
    drop(store);

    let cli = spawn::sibling("inferwatt-collector")?;
    let out_file = tmp.path().join("report.json");
    let mut cli_s = Vec::new();
    let mut cli_rss_kib = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let mut child = Command::new(&cli)
            .args(["report", "--format", "json", "--db"])
            .arg(&db)
            .arg("--out")
            .arg(&out_file)
            .spawn()?;
        // Peak RSS: the child's VmHWM, polled until it exits (monotonic, so the last
        // reading is the peak up to 2 ms before the end).
        let mut peak = 0;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
                peak = peak.max(procstat::parse_vmhwm_kib(&text).unwrap_or(0));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        cli_s.push(started.elapsed().as_secs_f64());
        cli_rss_kib.push(peak as f64);
        if !status.success() {
            bail!("'inferwatt-collector report --db {}' failed", db.display());
        }
    }
    let db_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    let result = json!({
        "bench": "report",
        "days": args.days,
        "gpus": HOSTS * GPUS_PER_HOST,
        "models": MODELS,
        "points_written": points,
        "fill_s": fill_s,
        "db_bytes": db_bytes,
        "runs": args.runs,
        "build_report_median_s": median(lib_s.clone()),
        "build_report_s": lib_s,
        "cli_report_median_s": median(cli_s.clone()),
        "cli_report_s": cli_s,
        "cli_report_peak_rss_mib_max": cli_rss_kib.iter().copied().fold(0.0, f64::max) / 1024.0,
        "series_day_step_median_s": median(series_s.clone()),
        "series_day_step_s": series_s,
    });
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    println!("{text}");
    Ok(())
}
