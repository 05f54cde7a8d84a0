//! Store → report: a store filled through `Store::write` with points built from
//! `inferwatt_core::schema` types gives hourly rows and indicators equal to hand
//! arithmetic; `--factors` changes emissions and water, not energy or the digest; the CLI
//! renders every format; `GET /api/v1/report` gives the CLI's bytes and honours
//! `report_auth`; gaps, folded points and GPU-only hours reach the report.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use inferwatt_collector::api::{app, AppState};
use inferwatt_collector::config::{Config, ReportAuth};
use inferwatt_collector::indicators::{compute, Period};
use inferwatt_collector::ingest::auth::{generate_token, hash_token};
use inferwatt_collector::reporting::{self, report_input, FactorsChoice, ReportRequest};
use inferwatt_collector::store::{Store, DAY_NS, HOUR_NS};
use inferwatt_core::lineproto::Point;
use inferwatt_core::schema::{
    EnergySource, GpuInterval, ModelEnergy, ModelUsage, Origin, SiteInfo, SplitMethod,
};
use tower::ServiceExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_inferwatt-collector");
/// An hour boundary (2027-01-15T08:00:00Z).
const T0: i64 = 1_800_000_000_000_000_000;
const STEP_S: i64 = 600;
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";
/// Fixed generation time so two renderings of one report are byte-identical.
const EPOCH: &str = "1800000000";

const FACTORS_A: &str = r#"
[sites.s1]
intensity_g_per_kwh = 100.0
ewif_l_per_kwh = 2.0
lifetime_years = 4.0
[sites.s1.gpu_embodied_kg]
"NVIDIA H100 80GB HBM3" = 1000.0
"#;

const FACTORS_B: &str = r#"
[sites.s1]
intensity_g_per_kwh = 300.0
ewif_l_per_kwh = 1.0
wue_l_per_kwh = 1.5
lifetime_years = 4.0
[sites.s1.gpu_embodied_kg]
"NVIDIA H100 80GB HBM3" = 1000.0
"#;

fn origin() -> Origin {
    Origin {
        site: "s1".into(),
        host: "h1".into(),
    }
}

/// Twelve 600-s intervals from T0 on one GPU (300 W): model `a` gets 130 kJ of GPU energy
/// (100 active + 30 idle, split `sm_util`) and 5 kJ host per interval, model `b` 50 kJ
/// (40 + 10, split `power_model`) and 2 kJ;
/// `a` serves 10 requests / 1,000 output tokens per interval, `b` 5 / 200. A site point
/// (PUE 1.2, WUE 0.5) precedes them.
fn fill(store: &Store) {
    let o = origin();
    let mut points = vec![SiteInfo {
        country: "FRA".into(),
        zone: "FR".into(),
        pue: Some(1.2),
        wue_l_per_kwh: Some(0.5),
        idle_policy: None,
        interval_s: 60.0,
        end_ns: T0 + 1,
    }
    .to_point(&o)];
    for i in 1..=12 {
        let end_ns = T0 + i * STEP_S * 1_000_000_000;
        points.push(
            GpuInterval {
                gpu_uuid: "GPU-1".into(),
                gpu_index: 0,
                gpu_name: GPU_NAME.into(),
                energy_j: 180_000.0,
                power_w: Some(300.0),
                util_pct: None,
                mem_used_bytes: None,
                energy_counter_mj: None,
                interval_s: STEP_S as f64,
                source: EnergySource::Counter,
                clock_step_s: None,
                end_ns,
            }
            .to_point(&o),
        );
        for (model, active, idle, host, req, out, method) in [
            (
                "a",
                100_000.0,
                30_000.0,
                5_000.0,
                10,
                1_000,
                SplitMethod::SmUtil,
            ),
            (
                "b",
                40_000.0,
                10_000.0,
                2_000.0,
                5,
                200,
                SplitMethod::PowerModel,
            ),
        ] {
            points.push(
                ModelEnergy {
                    gpu_uuid: "GPU-1".into(),
                    model: model.into(),
                    server: "vllm".into(),
                    active_j: active,
                    idle_j: idle,
                    host_j: host,
                    interval_s: STEP_S as f64,
                    method,
                    end_ns,
                    pod: None,
                }
                .to_point(&o),
            );
            points.push(
                ModelUsage {
                    model: model.into(),
                    server: "vllm".into(),
                    requests: req,
                    input_tokens: 3 * req,
                    output_tokens: out,
                    interval_s: STEP_S as f64,
                    end_ns,
                    pod: None,
                }
                .to_point(&o),
            );
        }
    }
    store.write(&points).expect("write");
}

/// `(T0 + 30 min, T0 + 2 h]`: three intervals of the first hour (raw edge), six of the
/// second (hourly rollup).
fn period() -> Period {
    Period {
        from_ns: T0 + HOUR_NS / 2,
        to_ns: T0 + 2 * HOUR_NS,
    }
}

fn factors(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("factors.toml");
    std::fs::write(&path, text).expect("write factors");
    (dir, path)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    assert!(close(got, want), "{what}: got {got}, want {want}");
}

#[test]
fn hourly_rows_split_gpu_time_by_energy_share() {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    let input = report_input(&store, period(), HOUR_NS, "resident").expect("input");
    let rows: Vec<(&str, i64, f64, f64, f64, f64)> = input
        .energy
        .iter()
        .map(|r| {
            assert_eq!((r.gpu_name.as_str(), r.server.as_str()), (GPU_NAME, "vllm"));
            (
                r.model.as_str(),
                (r.hour_start_ns - T0) / HOUR_NS,
                r.active_j,
                r.idle_j,
                r.host_j,
                r.gpu_seconds,
            )
        })
        .collect();
    // Hour 0: 3 intervals (1,800 GPU-s); hour 1: 6 intervals (3,600 GPU-s); shares 13/18
    // and 5/18 of the GPU energy.
    let want = [
        ("a", 0, 300_000.0, 90_000.0, 15_000.0, 1800.0 * 13.0 / 18.0),
        ("a", 1, 600_000.0, 180_000.0, 30_000.0, 3600.0 * 13.0 / 18.0),
        ("b", 0, 120_000.0, 30_000.0, 6_000.0, 1800.0 * 5.0 / 18.0),
        ("b", 1, 240_000.0, 60_000.0, 12_000.0, 3600.0 * 5.0 / 18.0),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (got, want) in rows.iter().zip(want) {
        assert_eq!((got.0, got.1), (want.0, want.1));
        assert_close(got.2, want.2, "active_j");
        assert_close(got.3, want.3, "idle_j");
        assert_close(got.4, want.4, "host_j");
        assert_close(got.5, want.5, "gpu_seconds");
    }
    let usage: Vec<(&str, i64, u64, u64, u64)> = input
        .usage
        .iter()
        .map(|u| {
            (
                u.model.as_str(),
                (u.hour_start_ns - T0) / HOUR_NS,
                u.requests,
                u.input_tokens,
                u.output_tokens,
            )
        })
        .collect();
    assert_eq!(
        usage,
        vec![
            ("a", 0, 30, 90, 3000),
            ("a", 1, 60, 180, 6000),
            ("b", 0, 15, 45, 600),
            ("b", 1, 30, 90, 1200)
        ]
    );
    assert_eq!(input.sources.len(), 1);
    assert_eq!(input.sources[0].source, "counter");
    assert_close(input.sources[0].energy_j, 9.0 * 180_000.0, "source energy");
    assert_close(input.sources[0].seconds, 9.0 * 600.0, "source seconds");
    assert_eq!(input.sites.len(), 1);
    assert_eq!(
        (input.sites[0].country.as_str(), input.sites[0].pue),
        ("FRA", 1.2)
    );
    assert!(input.gaps.is_empty());
    assert_eq!(input.folded_points, 0);
    assert_eq!(input.input_digest.len(), 64);
}

#[test]
fn data_quality_gives_the_share_of_energy_each_split_method_split() {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    // The period reads a raw edge (first hour) and a rollup (second hour).
    let input = report_input(&store, period(), HOUR_NS, "resident").expect("input");
    let f = FactorsChoice::builtin();
    let resolved = f
        .file
        .resolve(&input, &f.name, &f.base_dir)
        .expect("resolve");
    let report = compute(&input, &resolved, &[]);
    let m = &report.data_quality.energy_share_by_split_method;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_close(m["sm_util"], 130.0 / 180.0, "sm_util share");
    assert_close(m["power_model"], 50.0 / 180.0, "power_model share");
    // A method that is not a method name is refused with the field named; nothing stored.
    let mut bad = ModelEnergy {
        gpu_uuid: "GPU-1".into(),
        model: "c".into(),
        server: "vllm".into(),
        active_j: 1.0,
        idle_j: 0.0,
        host_j: 0.0,
        interval_s: 1.0,
        method: SplitMethod::SmUtil,
        end_ns: T0 + 3 * HOUR_NS,
        pod: None,
    }
    .to_point(&origin());
    for (k, v) in bad.fields.iter_mut() {
        if k == "method" {
            *v = inferwatt_core::lineproto::FieldValue::Str(
                "sm_util'); DROP TABLE series;--".into(),
            );
        }
    }
    let before = store.count_points().expect("count");
    let err = store.write(&[bad]).expect_err("refused").to_string();
    assert!(err.contains("field 'method'"), "{err}");
    assert_eq!(store.count_points().expect("count"), before);
}

#[test]
fn indicators_equal_hand_arithmetic() {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    let input = report_input(&store, period(), HOUR_NS, "resident").expect("input");
    let (_d, path) = factors(FACTORS_A);
    let f = FactorsChoice::load(&path).expect("factors");
    let resolved = f
        .file
        .resolve(&input, &f.name, &f.base_dir)
        .expect("resolve");
    let report = compute(&input, &resolved, &[]);
    let t = &report.totals;
    // 9 intervals: GPU 180 kJ + host 7 kJ each.
    let it_kwh = 9.0 * 187_000.0 / 3.6e6;
    let facility = it_kwh * 1.2;
    assert_close(t.energy_kwh.gpu_active, 9.0 * 140_000.0 / 3.6e6, "active");
    assert_close(t.energy_kwh.gpu_idle, 9.0 * 40_000.0 / 3.6e6, "idle");
    assert_close(t.energy_kwh.host, 9.0 * 7_000.0 / 3.6e6, "host");
    assert_close(t.energy_kwh.it, it_kwh, "it");
    assert_close(t.energy_kwh.facility, facility, "facility");
    assert_close(
        t.emissions_kgco2e.location,
        facility * 100.0 / 1000.0,
        "location",
    );
    assert_close(t.water_l.onsite, it_kwh * 0.5, "onsite water (agent's WUE)");
    assert_close(t.water_l.offsite, facility * 2.0, "offsite water");
    assert_close(t.gpu_hours, 1.5, "gpu hours");
    // Embodied: 1,000 kg over 4 × 8,760 h, for 1.5 GPU-hours.
    assert_close(
        t.emissions_kgco2e.embodied,
        1000.0 * 1.5 / (4.0 * 8760.0),
        "embodied",
    );
    assert_eq!((t.requests, t.output_tokens), (135, 10_800));
    let a = &report
        .by_model
        .iter()
        .find(|m| m.model == "a")
        .expect("model a")
        .indicators;
    let a_accel_wh = 9.0 * 130_000.0 / 3600.0;
    assert_close(
        a.per_1k_output_tokens
            .energy_wh_accelerator
            .expect("has tokens"),
        a_accel_wh / 9.0,
        "a Wh per 1k tokens",
    );
    assert_close(a.gpu_hours, 1.5 * 13.0 / 18.0, "a gpu hours");
    let a_facility_kwh = 9.0 * 135_000.0 / 3.6e6 * 1.2;
    assert_close(
        a.per_request.emissions_gco2e.expect("has requests"),
        a_facility_kwh * 100.0 / 90.0,
        "a g per request",
    );
}

#[test]
fn other_factors_change_emissions_and_water_not_energy_or_digest() {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    let (_da, a) = factors(FACTORS_A);
    let (_db, b) = factors(FACTORS_B);
    let req = ReportRequest {
        from_ns: Some(period().from_ns),
        to_ns: Some(period().to_ns),
        ..ReportRequest::default()
    };
    let ra = reporting::build_report(&store, &req, &FactorsChoice::load(&a).expect("a"))
        .expect("report a");
    let rb = reporting::build_report(&store, &req, &FactorsChoice::load(&b).expect("b"))
        .expect("report b");
    assert_eq!(ra.totals.energy_kwh, rb.totals.energy_kwh);
    assert_eq!(ra.input_digest, rb.input_digest);
    assert_close(
        rb.totals.emissions_kgco2e.location,
        3.0 * ra.totals.emissions_kgco2e.location,
        "intensity ×3",
    );
    assert_close(
        rb.totals.water_l.onsite,
        3.0 * ra.totals.water_l.onsite,
        "WUE ×3",
    );
    assert_close(
        rb.totals.water_l.offsite,
        0.5 * ra.totals.water_l.offsite,
        "EWIF ÷2",
    );
    // Other data gives another digest.
    let other = Store::open_in_memory().expect("store");
    fill(&other);
    other
        .write(&[ModelUsage {
            model: "a".into(),
            server: "vllm".into(),
            requests: 1,
            input_tokens: 0,
            output_tokens: 0,
            interval_s: 1.0,
            end_ns: T0 + HOUR_NS + 1,
            pod: None,
        }
        .to_point(&origin())])
        .expect("write");
    let rc = reporting::build_report(&other, &req, &FactorsChoice::load(&a).expect("a"))
        .expect("report c");
    assert_ne!(ra.input_digest, rc.input_digest);
}

#[test]
fn gaps_folded_points_and_gpu_only_hours_reach_the_report() {
    let store = Store::open_in_memory().expect("store");
    let o = origin();
    let gap_end = T0 + 2 * HOUR_NS + 600_000_000_000;
    let gpu = |end_ns: i64, source: EnergySource, energy_j: f64| {
        GpuInterval {
            gpu_uuid: "GPU-9".into(),
            gpu_index: 0,
            gpu_name: GPU_NAME.into(),
            energy_j,
            power_w: None,
            util_pct: None,
            mem_used_bytes: None,
            energy_counter_mj: None,
            interval_s: 600.0,
            source,
            clock_step_s: None,
            end_ns,
        }
        .to_point(&o)
    };
    let folded = Point::new("model_usage")
        .tag("site", "s1")
        .tag("host", "h1")
        .tag("model", "a")
        .tag("server", "vllm")
        .int("requests", 7)
        .float("interval_s", 70.0)
        .int("folded_points", 7)
        .at(T0 + 2 * HOUR_NS + 5);
    store
        .write(&[
            gpu(gap_end, EnergySource::Gap, 50_000.0),
            gpu(
                gap_end + 600_000_000_000,
                EnergySource::Integrated,
                90_000.0,
            ),
            folded,
        ])
        .expect("write");
    let input = report_input(
        &store,
        Period {
            from_ns: T0 + 2 * HOUR_NS,
            to_ns: T0 + 3 * HOUR_NS,
        },
        HOUR_NS,
        "resident",
    )
    .expect("input");
    assert_eq!(input.gaps.len(), 1);
    let g = &input.gaps[0];
    assert_eq!(
        (g.gpu_uuid.as_str(), g.from_ns, g.to_ns, g.energy_j),
        ("GPU-9", gap_end - 600_000_000_000, gap_end, 50_000.0)
    );
    assert_eq!(input.folded_points, 7);
    // No model rows: the GPU's energy is `_unattributed`, never dropped.
    assert_eq!(input.energy.len(), 1);
    let r = &input.energy[0];
    assert_eq!(r.model, "_unattributed");
    assert_close(r.active_j, 140_000.0, "gpu-only energy");
    assert_close(r.gpu_seconds, 1200.0, "gpu-only seconds");
}

#[test]
fn default_period_is_the_stored_data_in_whole_hours_and_empty_store_is_an_error() {
    let store = Store::open_in_memory().expect("store");
    let err = reporting::resolve_period(&store, &ReportRequest::default()).expect_err("empty");
    assert!(err.to_string().contains("no points"), "{err}");
    fill(&store);
    let p = reporting::resolve_period(&store, &ReportRequest::default()).expect("period");
    assert_eq!((p.from_ns, p.to_ns), (T0, T0 + 2 * HOUR_NS));
    let err = reporting::resolve_period(
        &store,
        &ReportRequest {
            from_ns: Some(T0 + HOUR_NS),
            to_ns: Some(T0),
            ..ReportRequest::default()
        },
    )
    .expect_err("reversed");
    assert!(err.to_string().contains("'to' must be after"), "{err}");
}

fn cli(args: &[&str], db: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--db")
        .arg(db)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run")
}

fn file_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    fill(&Store::open(&db).expect("store"));
    (dir, db)
}

#[test]
fn cli_renders_every_format_and_export() {
    let (dir, db) = file_db();
    let (_d, fa) = factors(FACTORS_A);
    let fa = fa.to_str().expect("utf-8");
    let out = cli(&["report", "--factors", fa], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["schema"], "inferwatt.report/v1");
    assert_eq!(v["period"]["from"], "2027-01-15T08:00:00Z");
    assert_eq!(v["generated_at"], "2027-01-15T08:00:00Z");
    assert_eq!(v["totals"]["requests"], 180);
    for (format, marker) in [
        ("csv", "group,key,"),
        ("md", "# inferwatt report"),
        ("markdown", "## Totals"),
        ("html", "<html"),
    ] {
        let out = cli(&["report", "--factors", fa, "--format", format], &db);
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{format}: {text}");
    }
    let file = dir.path().join("r.md");
    let out = cli(
        &[
            "report",
            "--factors",
            fa,
            "--from",
            "2027-01-15T08:30:00Z",
            "--to",
            "1800007200",
            "--group",
            "model",
            "--format",
            "md",
            "--out",
            file.to_str().expect("utf-8"),
        ],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let md = std::fs::read_to_string(&file).expect("out file");
    assert!(
        md.contains("2027-01-15T08:30:00Z") && md.contains("## By model"),
        "{md}"
    );

    let out = cli(
        &[
            "export",
            "--factors",
            fa,
            "--format",
            "hf-card",
            "--model",
            "a",
        ],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("co2_eq_emissions:"));
    let out = cli(&["export", "--factors", fa, "--format", "codecarbon"], &db);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("timestamp,"));
    let out = cli(
        &["export", "--factors", fa, "--format", "impact-framework"],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());

    // Failures: unknown model (1), bad time and bad group (2, usage).
    let out = cli(&["export", "--format", "hf-card", "--model", "zzz"], &db);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'zzz'"));
    let out = cli(&["report", "--from", "tomorrow"], &db);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'tomorrow'"));
    let out = cli(&["report", "--group", "planet"], &db);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["report", "--help"])
        .output()
        .expect("help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
}

#[test]
fn without_factors_an_unknown_zone_names_the_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let store = Store::open(&db).expect("store");
    let o = Origin {
        site: "mars1".into(),
        host: "h1".into(),
    };
    store
        .write(&[SiteInfo {
            country: "MARS".into(),
            zone: "OLYMPUS".into(),
            pue: Some(1.1),
            wue_l_per_kwh: Some(0.0),
            idle_policy: None,
            interval_s: 60.0,
            end_ns: T0 + 1,
        }
        .to_point(&o)])
        .expect("write");
    drop(store);
    // An agent's unknown zone does not blank the report: that site's emissions are null
    // and a warning names the site and the fix.
    let out = cli(&["report"], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("'mars1'") && text.contains("intensity_g_per_kwh"),
        "{text}"
    );
    // With the agents' zone known, the built-in table applies.
    let (_d, db2) = file_db();
    let out = cli(&["report"], &db2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(state: AppState, uri: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Token {t}"));
    }
    let resp = app(state)
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn api_report_gives_the_cli_bytes_and_honours_report_auth() {
    // Only this crate's reporting reads it; every test here sets the same value.
    std::env::set_var("SOURCE_DATE_EPOCH", EPOCH);
    let (dir, db) = file_db();
    // The same [factors] for both sides, through a config file the CLI reads too.
    let config_path = dir.path().join("collector.toml");
    std::fs::write(
        &config_path,
        format!(
            "db_path = {:?}\n[factors]\n{}",
            db.display().to_string(),
            FACTORS_A.replace("[sites.", "[factors.sites.")
        ),
    )
    .expect("write config");
    let config = Config::load(&config_path).expect("config");
    assert!(config.factors.is_some());
    let state = AppState::new(config.clone(), Arc::new(Store::open(&db).expect("store")));
    for (query, args, ct) in [
        ("", vec!["report"], "application/json"),
        (
            "?format=csv&group=model,site&from=2027-01-15T08:30:00Z&to=1800007200",
            vec![
                "report",
                "--format",
                "csv",
                "--group",
                "model,site",
                "--from",
                "2027-01-15T08:30:00Z",
                "--to",
                "1800007200",
            ],
            "text/csv",
        ),
        (
            "?format=html",
            vec!["report", "--format", "html"],
            "text/html",
        ),
        (
            "?format=md&min_count=100",
            vec!["report", "--format", "md", "--min-count", "100"],
            "text/markdown",
        ),
    ] {
        let (status, got_ct, body) =
            get(state.clone(), &format!("/api/v1/report{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert!(got_ct.starts_with(ct), "{query}: {got_ct}");
        let mut args = args;
        args.extend(["--config", config_path.to_str().expect("utf-8")]);
        let out = cli(&args, &db);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(body, String::from_utf8_lossy(&out.stdout), "{query}");
    }
    let (status, _, body) = get(state.clone(), "/api/v1/report?from=soon", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("'soon'"), "{body}");
    let (status, _, body) = get(state.clone(), "/api/v1/report?format=pdf", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("'pdf'"), "{body}");

    // report_auth = "token": 401 without a token, 200 with any valid one.
    let store = Arc::new(Store::open(&db).expect("store"));
    let token = generate_token().expect("token");
    store
        .add_token(&hash_token(&token), "s1", "h1", 0)
        .expect("token");
    let state = AppState::new(
        Config {
            report_auth: Some(ReportAuth::Token),
            ..config
        },
        store,
    );
    let (status, _, body) = get(state.clone(), "/api/v1/report", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = get(state.clone(), "/api/v1/report", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(state, "/api/v1/report", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Scale: a year of 64 GPUs × 8 models (one point per series per day, like the store's
/// scale test, so every day of the year has rollups; the hourly rows are 365 per series)
/// plus `gpu` and usage points, reported in full. Measured on the 2-core dev machine,
/// release: see the assertion message. Run with
/// `cargo test --release -p inferwatt-collector --test reporting -- --ignored`.
#[test]
#[ignore = "scale check; run with --release --ignored"]
fn a_year_of_64_gpus_and_8_models_reports_within_a_second() {
    let store = Store::open_in_memory().expect("store");
    let o = origin();
    for day in 0..365 {
        let end_ns = T0 + day * DAY_NS + 7;
        let mut batch = Vec::with_capacity(64 * 9 + 8);
        for g in 0..64 {
            batch.push(
                GpuInterval {
                    gpu_uuid: format!("GPU-{g}"),
                    gpu_index: g,
                    gpu_name: GPU_NAME.into(),
                    energy_j: 8.0 * 1.5,
                    power_w: None,
                    util_pct: None,
                    mem_used_bytes: None,
                    energy_counter_mj: None,
                    interval_s: 10.0,
                    source: EnergySource::Counter,
                    clock_step_s: None,
                    end_ns,
                }
                .to_point(&o),
            );
            for m in 0..8 {
                batch.push(
                    ModelEnergy {
                        gpu_uuid: format!("GPU-{g}"),
                        model: format!("model-{m}"),
                        server: "vllm".into(),
                        active_j: 1.0,
                        idle_j: 0.5,
                        host_j: 0.25,
                        interval_s: 10.0,
                        method: SplitMethod::SmUtil,
                        end_ns,
                        pod: None,
                    }
                    .to_point(&o),
                );
            }
        }
        for m in 0..8 {
            batch.push(
                ModelUsage {
                    model: format!("model-{m}"),
                    server: "vllm".into(),
                    requests: 10,
                    input_tokens: 100,
                    output_tokens: 1000,
                    interval_s: 10.0,
                    end_ns,
                    pod: None,
                }
                .to_point(&o),
            );
        }
        if day == 0 {
            batch.push(
                SiteInfo {
                    country: "FRA".into(),
                    zone: "FR".into(),
                    pue: Some(1.2),
                    wue_l_per_kwh: Some(0.5),
                    idle_policy: None,
                    interval_s: 10.0,
                    end_ns: T0 + 1,
                }
                .to_point(&o),
            );
        }
        store.write(&batch).expect("write");
    }
    let started = Instant::now();
    let report = reporting::build_report(
        &store,
        &ReportRequest {
            from_ns: Some(T0 - HOUR_NS / 2),
            to_ns: Some(T0 + 365 * DAY_NS),
            ..ReportRequest::default()
        },
        &FactorsChoice::builtin(),
    )
    .expect("report");
    let took = started.elapsed();
    assert_eq!(report.totals.requests, 365 * 80);
    assert_close(
        report.totals.energy_kwh.gpu_active,
        365.0 * 512.0 / 3.6e6,
        "active",
    );
    assert!(
        took < Duration::from_secs(1),
        "a year's report (512 series × 365 hourly rows) took {took:?}"
    );
    eprintln!("a year's report (64 GPUs × 8 models) took {took:?}");
}
