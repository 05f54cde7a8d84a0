//! The collector's web page in headless Chromium: a real `inferwatt-collector serve` over
//! a database filled with known points (two sites, three models, three hours), loaded
//! with `?token=` (reports need a token here). From the DOM Chromium dumps after the
//! page's scripts ran: one SVG series per model and per site for energy, emissions and
//! water whose values equal hand arithmetic per hour, the indicator table's numbers,
//! `null` intensities shown as "—", the data-quality panel, the factors with their
//! source, and no JavaScript errors (neither in `#errors` nor in Chromium's console log).
//! Without a token the page shows the 401 and how to give one.
//!
//! Needs Chromium: `apt-get install -y chromium` (Debian), or set `CHROMIUM` to its path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use inferwatt_collector::ingest::auth::hash_token;
use inferwatt_collector::store::{Store, HOUR_NS};
use inferwatt_core::schema::{
    EnergySource, GpuInterval, ModelEnergy, ModelUsage, Origin, SiteInfo, SplitMethod,
};
use inferwatt_tests::harness::{self, Proc};

const TOKEN: &str = "iw_web_page_test_token_0123456789abcdef0123456789abcdef";
const STEP_S: i64 = 600;
const HOURS: i64 = 3;
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";

/// A site: name, host, GPU, country, zone, PUE, WUE (the agent's site point) and the
/// factors file's intensity (g/kWh) and EWIF (L/kWh).
struct Site {
    name: &'static str,
    host: &'static str,
    gpu: &'static str,
    country: &'static str,
    zone: &'static str,
    pue: f64,
    wue: f64,
    intensity: f64,
    ewif: f64,
}

const SITES: [Site; 2] = [
    Site {
        name: "fra1",
        host: "h1",
        gpu: "GPU-1",
        country: "FRA",
        zone: "FR",
        pue: 1.2,
        wue: 0.5,
        intensity: 100.0,
        ewif: 2.0,
    },
    Site {
        name: "nyc1",
        host: "h2",
        gpu: "GPU-2",
        country: "USA",
        zone: "US-NY-NYIS",
        pue: 1.5,
        wue: 1.0,
        intensity: 400.0,
        ewif: 3.0,
    },
];

/// A model on a site's GPU, per 600-s interval in hour `h` (0-based): active, idle and
/// host joules; requests and output tokens (`None`: no usage at all).
struct Load {
    site: usize,
    model: &'static str,
    energy: fn(i64) -> (f64, f64, f64),
    usage: Option<(u64, u64)>,
}

const LOADS: [Load; 4] = [
    Load {
        site: 0,
        model: "llama",
        energy: |h| (100_000.0 * (h + 1) as f64, 20_000.0, 5_000.0),
        usage: Some((10, 1_000)),
    },
    Load {
        site: 0,
        model: "mistral",
        energy: |_| (40_000.0, 10_000.0, 2_000.0),
        usage: Some((5, 200)),
    },
    Load {
        site: 1,
        model: "llama",
        energy: |_| (60_000.0, 10_000.0, 3_000.0),
        usage: Some((4, 400)),
    },
    Load {
        site: 1,
        model: "embed",
        energy: |h| (10_000.0 * (h + 1) as f64, 5_000.0, 0.0),
        usage: None,
    },
];

/// Writes `HOURS` hours of intervals from `t0` (an hour boundary) into the database.
fn fill(db: &Path, t0: i64) {
    let store = Store::open(db).expect("open store");
    for (i, s) in SITES.iter().enumerate() {
        let o = Origin {
            site: s.name.into(),
            host: s.host.into(),
        };
        let mut points = vec![SiteInfo {
            country: s.country.into(),
            zone: s.zone.into(),
            pue: Some(s.pue),
            wue_l_per_kwh: Some(s.wue),
            idle_policy: None,
            interval_s: 60.0,
            end_ns: t0 + 1,
        }
        .to_point(&o)];
        for k in 1..=HOURS * 3600 / STEP_S {
            let end_ns = t0 + k * STEP_S * 1_000_000_000;
            let h = (k - 1) * STEP_S / 3600;
            let mut gpu_j = 0.0;
            for l in LOADS.iter().filter(|l| l.site == i) {
                let (active, idle, host) = (l.energy)(h);
                gpu_j += active + idle;
                points.push(
                    ModelEnergy {
                        gpu_uuid: s.gpu.into(),
                        model: l.model.into(),
                        server: "vllm".into(),
                        active_j: active,
                        idle_j: idle,
                        host_j: host,
                        interval_s: STEP_S as f64,
                        method: SplitMethod::SmUtil,
                        end_ns,
                        pod: None,
                    }
                    .to_point(&o),
                );
                if let Some((requests, output_tokens)) = l.usage {
                    points.push(
                        ModelUsage {
                            model: l.model.into(),
                            server: "vllm".into(),
                            requests,
                            input_tokens: 2 * output_tokens,
                            output_tokens,
                            interval_s: STEP_S as f64,
                            end_ns,
                            pod: None,
                        }
                        .to_point(&o),
                    );
                }
            }
            points.push(
                GpuInterval {
                    gpu_uuid: s.gpu.into(),
                    gpu_index: 0,
                    gpu_name: GPU_NAME.into(),
                    energy_j: gpu_j,
                    power_w: Some(gpu_j / STEP_S as f64),
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
        }
        store.write(&points).expect("write points");
    }
    store
        .add_token(&hash_token(TOKEN), "fra1", "h1", t0)
        .expect("add token");
}

/// Expected (facility kWh, location kgCO2e, water L) of the loads `pick` selects, per hour.
fn expected(pick: impl Fn(&Load) -> bool) -> Vec<[f64; 3]> {
    (0..HOURS)
        .map(|h| {
            let mut out = [0.0; 3];
            for l in LOADS.iter().filter(|l| pick(l)) {
                let s = &SITES[l.site];
                let (a, i, ho) = (l.energy)(h);
                let it_kwh = (a + i + ho) * (3600 / STEP_S) as f64 / 3.6e6;
                let facility = it_kwh * s.pue;
                out[0] += facility;
                out[1] += facility * s.intensity / 1000.0;
                out[2] += it_kwh * s.wue + facility * s.ewif;
            }
            out
        })
        .collect()
}

/// Chromium's binary: `CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
/// Panics, naming the install command, when there is none.
fn chromium() -> PathBuf {
    const INSTALL: &str = "this test loads the web page in headless Chromium; install it with \
         'apt-get install -y chromium' (Debian) or set CHROMIUM=/path/to/chromium";
    if let Some(p) = std::env::var_os("CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CHROMIUM '{}' is not a file: {INSTALL}",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("Chromium not found (no 'chromium' or 'chromium-browser' on the PATH, CHROMIUM unset): {INSTALL}");
}

/// Loads `url` in headless Chromium; returns (DOM after scripts ran, Chromium's log).
fn dump_dom(url: &str, screenshot: Option<&Path>) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--window-size=1400,3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run chromium");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}): {log}",
        out.status
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

/// The attributes of every `<tag …>` start tag in `dom`.
fn elements(dom: &str, tag: &str) -> Vec<HashMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(pos) = rest.find(&open) {
        rest = &rest[pos + open.len()..];
        let mut attrs = HashMap::new();
        let bytes = rest.as_bytes();
        let mut i = 0;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'>' || bytes[i] == b'/' {
                break;
            }
            let start = i;
            while i < bytes.len() && !matches!(bytes[i], b'=' | b'>' | b' ') {
                i += 1;
            }
            let name = rest[start..i].to_owned();
            let mut value = String::new();
            if i < bytes.len() && bytes[i] == b'=' && bytes.get(i + 1) == Some(&b'"') {
                let vstart = i + 2;
                let vend = vstart + rest[vstart..].find('"').expect("closing quote");
                value = unescape(&rest[vstart..vend]);
                i = vend + 1;
            }
            attrs.insert(name, value);
        }
        out.push(attrs);
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The text right after the start tag that holds `marker` (up to the next tag).
fn text_after(dom: &str, marker: &str) -> String {
    let pos = dom
        .find(marker)
        .unwrap_or_else(|| panic!("'{marker}' not in the page's DOM"));
    let rest = &dom[pos..];
    let start = rest.find('>').expect("end of tag") + 1;
    let end = rest[start..].find('<').map_or(rest.len(), |e| start + e);
    unescape(&rest[start..end])
}

/// The inner HTML of the element whose start tag holds `marker` (up to `</tag>`).
fn inner(dom: &str, marker: &str, tag: &str) -> String {
    let pos = dom
        .find(marker)
        .unwrap_or_else(|| panic!("'{marker}' not in the page's DOM"));
    let rest = &dom[pos..];
    let start = rest.find('>').expect("end of tag") + 1;
    let end = rest[start..]
        .find(&format!("</{tag}>"))
        .expect("closing tag");
    rest[start..start + end].to_owned()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Console messages and errors in Chromium's log (`--enable-logging=stderr`), except the
/// lines in `allowed`.
fn console_problems(log: &str, allowed: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught") || l.contains("Refused to"))
        .filter(|l| !allowed.iter().any(|a| l.contains(a)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn web_page_draws_the_stored_data_in_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("inferwatt.db");
    // Three whole hours ending at the last whole hour: inside "last day" and "all".
    let now_ns = inferwatt_collector::now_ns();
    let t0 = now_ns.div_euclid(HOUR_NS) * HOUR_NS - HOURS * HOUR_NS;
    fill(&db, t0);

    let port = harness::free_port();
    let config = dir.path().join("collector.toml");
    let mut factors = String::new();
    for s in &SITES {
        factors.push_str(&format!(
            "[factors.sites.{}]\nintensity_g_per_kwh = {}\nintensity_source = \"web test grid {}\"\newif_l_per_kwh = {}\n",
            s.name, s.intensity, s.name, s.ewif
        ));
    }
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndb_path = \"{}\"\nreport_auth = \"token\"\n{factors}",
            db.display()
        ),
    )
    .expect("write config");
    let _collector = Proc::spawn(
        "inferwatt-collector",
        Command::new(harness::bin("inferwatt-collector"))
            .args(["serve", "--config"])
            .arg(&config),
    );
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_for("the collector's /healthz", Duration::from_secs(20), || {
        harness::http_get(&format!("{base}/healthz")).filter(|(status, _)| *status == 200)
    });
    eprintln!("chromium: {}", browser.display());

    if let Ok(shot) = std::env::var("INFERWATT_WEB_SCREENSHOT") {
        dump_dom(&format!("{base}/?token={TOKEN}"), Some(Path::new(&shot)));
        dump_dom(
            &format!("{base}/"),
            Some(Path::new(&format!("{shot}.401.png"))),
        );
    }

    // With the token.
    let (dom, log) = dump_dom(&format!("{base}/?token={TOKEN}"), None);
    let problems = console_problems(&log, &[]);
    assert!(
        problems.is_empty(),
        "console errors while loading the page:\n{}",
        problems.join("\n")
    );
    let errors = inner(&dom, "id=\"errors\"", "div");
    assert!(
        errors.trim().is_empty(),
        "the page reported errors: {errors}"
    );
    let status = elements(&dom, "div")
        .into_iter()
        .find(|a| a.get("id").map(String::as_str) == Some("status"))
        .expect("#status");
    assert_eq!(
        status.get("data-state").map(String::as_str),
        Some("ok"),
        "status: {}\n{dom}",
        text_after(&dom, "id=\"status\"")
    );

    // Charts: one series per model and per site, per metric, values per hour.
    let paths: Vec<_> = elements(&dom, "path")
        .into_iter()
        .filter(|a| a.get("class").map(String::as_str) == Some("series"))
        .collect();
    let metrics = ["energy_kwh", "emissions_kgco2e", "water_l"];
    let mut checks: Vec<(&str, &str, Vec<[f64; 3]>)> = Vec::new();
    for model in ["llama", "mistral", "embed"] {
        checks.push(("model", model, expected(|l| l.model == model)));
    }
    for (i, s) in SITES.iter().enumerate() {
        checks.push(("site", s.name, expected(|l| l.site == i)));
    }
    for (group, key, want) in &checks {
        for (m, metric) in metrics.iter().enumerate() {
            let found: Vec<_> = paths
                .iter()
                .filter(|a| {
                    a.get(&format!("data-{group}")).map(String::as_str) == Some(key)
                        && a.get("data-metric").map(String::as_str) == Some(metric)
                })
                .collect();
            assert_eq!(
                found.len(),
                1,
                "one {metric} series for {group} '{key}', found {}",
                found.len()
            );
            let values: Vec<f64> = found[0]["data-values"]
                .split(',')
                .map(|v| v.parse().expect("a number in data-values"))
                .collect();
            let want: Vec<f64> = want.iter().map(|w| w[m]).collect();
            // A recent period is drawn in minute buckets (the page picks the finest step
            // under its point limit): each hour's 60 buckets add up to the hour.
            assert_eq!(
                values.len(),
                want.len() * 60,
                "{group} '{key}' {metric}: minute buckets {values:?}, want hours {want:?}"
            );
            let hourly: Vec<f64> = values.chunks(60).map(|c| c.iter().sum()).collect();
            for (got, w) in hourly.iter().zip(&want) {
                assert!(
                    close(*got, *w),
                    "{group} '{key}' {metric}: {values:?}, want {want:?}"
                );
            }
            let d = &found[0]["d"];
            assert_eq!(
                d.matches('L').count() + 1,
                HOURS as usize * 60,
                "the line has a vertex per minute: {d}"
            );
        }
    }
    // Series only for models and sites with energy: 3 models + 2 sites, × 3 metrics.
    assert_eq!(paths.len(), 5 * 3, "series drawn: {paths:?}");

    // Indicator table per model.
    let cells = elements(&dom, "td");
    let row_value = |model: &str, col: &str| -> String {
        let marker = format!("<tr data-model=\"{model}\"");
        let row = inner(&dom, &marker, "tr");
        let rc = elements(&row, "td");
        let cell = rc
            .iter()
            .find(|a| a.get("data-col").map(String::as_str) == Some(col))
            .unwrap_or_else(|| panic!("no '{col}' cell in the row of '{model}'"));
        cell["data-value"].clone()
    };
    assert!(!cells.is_empty());
    for model in ["llama", "mistral", "embed"] {
        let want = expected(|l| l.model == model);
        let total: [f64; 3] = want
            .iter()
            .fold([0.0; 3], |a, w| [a[0] + w[0], a[1] + w[1], a[2] + w[2]]);
        let facility: f64 = row_value(model, "energy_kwh.facility")
            .parse()
            .expect("facility kWh");
        assert!(
            close(facility, total[0]),
            "{model}: facility {facility}, want {}",
            total[0]
        );
        let location: f64 = row_value(model, "emissions_kgco2e.location")
            .parse()
            .expect("location kg");
        assert!(close(location, total[1]), "{model}: location {location}");
        let water: f64 = row_value(model, "water_l.onsite")
            .parse::<f64>()
            .expect("onsite")
            + row_value(model, "water_l.offsite")
                .parse::<f64>()
                .expect("offsite");
        assert!(close(water, total[2]), "{model}: water {water}");
    }
    let intervals = (HOURS * 3600 / STEP_S) as u64;
    assert_eq!(row_value("llama", "requests"), (14 * intervals).to_string());
    assert_eq!(
        row_value("llama", "output_tokens"),
        (1400 * intervals).to_string()
    );
    // Wh per 1k output tokens, full boundary, of mistral: facility Wh / tokens × 1000.
    let mistral_wh: f64 = row_value("mistral", "per_1k_output_tokens.energy_wh_full")
        .parse()
        .expect("intensity");
    let mistral_kwh: f64 = expected(|l| l.model == "mistral")
        .iter()
        .map(|w| w[0])
        .sum();
    assert!(
        close(
            mistral_wh,
            mistral_kwh * 1000.0 / (200 * intervals) as f64 * 1000.0
        ),
        "mistral Wh/1k tokens {mistral_wh}"
    );
    // `embed` has no usage: its intensities are null, shown as "—".
    assert_eq!(
        row_value("embed", "per_1k_output_tokens.emissions_gco2e"),
        "null"
    );
    let embed_row = inner(&dom, "<tr data-model=\"embed\"", "tr");
    assert!(
        embed_row.contains("data-value=\"null\">—</td>"),
        "null shown as '—': {embed_row}"
    );

    // Data quality and factors.
    assert_eq!(text_after(&dom, "id=\"dq-counter\""), "100 %");
    assert_eq!(text_after(&dom, "id=\"dq-gpus\""), "2");
    assert!(dom.contains("id=\"dq-no-gaps\""), "no gaps expected");
    let factors_table = inner(&dom, "id=\"factors-table\"", "table");
    for s in &SITES {
        assert!(
            factors_table.contains(&format!("web test grid {}", s.name)),
            "factor source of {} missing: {factors_table}",
            s.name
        );
    }

    // The period picker, preset from the URL: the last day holds all of the data, in
    // 15-minute buckets from a day ago (the finest step under the page's 240 points).
    let (dom, log) = dump_dom(&format!("{base}/?token={TOKEN}&period=day"), None);
    let problems = console_problems(&log, &[]);
    assert!(
        problems.is_empty(),
        "console errors:\n{}",
        problems.join("\n")
    );
    let errors = inner(&dom, "id=\"errors\"", "div");
    assert!(
        errors.trim().is_empty(),
        "the page reported errors: {errors}"
    );
    let llama = elements(&dom, "path")
        .into_iter()
        .find(|a| {
            a.get("data-model").map(String::as_str) == Some("llama")
                && a.get("data-metric").map(String::as_str) == Some("energy_kwh")
        })
        .expect("llama's energy series for the last day");
    let values: Vec<f64> = llama["data-values"]
        .split(',')
        .map(|v| v.parse().expect("number"))
        .collect();
    assert!(
        (96..=97).contains(&values.len()),
        "15-minute buckets over a day: {values:?}"
    );
    let want: f64 = expected(|l| l.model == "llama").iter().map(|w| w[0]).sum();
    let got: f64 = values.iter().sum();
    assert!(
        (got - want).abs() <= 1e-9 * want,
        "last day: {got} kWh, want {want}"
    );

    // Without the token: the 401, said clearly, and no JavaScript error.
    let (dom, log) = dump_dom(&format!("{base}/"), None);
    let problems = console_problems(&log, &["status of 401"]);
    assert!(
        problems.is_empty(),
        "console errors on the 401 page:\n{}",
        problems.join("\n")
    );
    let errors = inner(&dom, "id=\"errors\"", "div");
    assert!(
        errors.trim().is_empty(),
        "the page reported errors: {errors}"
    );
    let status = text_after(&dom, "id=\"status\"");
    assert!(
        status.contains("401") && status.contains("?token="),
        "the 401 is explained: {status}"
    );
    assert!(
        !dom.contains("class=\"series\""),
        "no chart without authorisation"
    );
}
