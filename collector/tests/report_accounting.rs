//! Reports that add up (issue: every stored joule in the right hour): host (RAPL) energy
//! reaches every total under the agents' idle policy, the report states the policies the
//! agents ran, grid factors follow the data's year, 15-minute intensity rows are
//! time-weighted, "US" and "USA" are one country, and a long interval lands in the hours
//! it covers. Every test writes through `Store::write` and reads through
//! `reporting::build_report`, as the CLI and the API do.

use inferwatt_collector::reporting::{self, FactorsChoice, ReportRequest};
use inferwatt_collector::store::{Store, HOUR_NS};
use inferwatt_core::lineproto::Point;
use inferwatt_core::schema::{
    EnergySource, GpuInterval, HostEnergy, ModelEnergy, Origin, SiteInfo, SplitMethod,
};

/// 2024-06-01T00:00:00Z.
const T2024: i64 = 1_717_200_000_000_000_000;
/// 2025-06-01T00:00:00Z.
const T2025: i64 = 1_748_736_000_000_000_000;
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12),
        "{what}: got {a}, want {b}"
    );
}

fn site(o: &Origin, country: &str, zone: &str, policy: Option<&str>, end_ns: i64) -> Point {
    SiteInfo {
        country: country.into(),
        zone: zone.into(),
        pue: Some(1.25),
        wue_l_per_kwh: Some(0.0),
        idle_policy: policy.map(str::to_owned),
        interval_s: 60.0,
        end_ns,
    }
    .to_point(o)
}

/// One hour from `t0` on one GPU of `o`'s host, in six 600-s intervals: model `a` gets 100
/// kJ GPU + `host_j` per interval, model `b` 50 kJ GPU and nothing of the host; the host's
/// RAPL measures `rapl_j` per interval.
fn hour(o: &Origin, t0: i64, host_j: f64, rapl_j: f64) -> Vec<Point> {
    let mut out = Vec::new();
    for i in 1..=6 {
        let end_ns = t0 + i * 600_000_000_000;
        out.push(
            GpuInterval {
                gpu_uuid: format!("GPU-{}", o.host),
                gpu_index: 0,
                gpu_name: GPU_NAME.into(),
                energy_j: 150_000.0,
                power_w: None,
                util_pct: None,
                mem_used_bytes: None,
                energy_counter_mj: None,
                interval_s: 600.0,
                source: EnergySource::Counter,
                clock_step_s: None,
                end_ns,
            }
            .to_point(o),
        );
        for (model, active, host) in [("a", 100_000.0, host_j), ("b", 50_000.0, 0.0)] {
            out.push(
                ModelEnergy {
                    gpu_uuid: format!("GPU-{}", o.host),
                    model: model.into(),
                    server: "vllm".into(),
                    active_j: active,
                    idle_j: 0.0,
                    host_j: host,
                    interval_s: 600.0,
                    method: SplitMethod::SmUtil,
                    end_ns,
                    pod: None,
                }
                .to_point(o),
            );
        }
        out.push(
            HostEnergy {
                cpu_j: rapl_j * 0.75,
                dram_j: Some(rapl_j * 0.25),
                interval_s: 600.0,
                source: "rapl".into(),
                end_ns,
            }
            .to_point(o),
        );
    }
    out
}

fn report(store: &Store, from: i64, to: i64, factors: &FactorsChoice) -> serde_json::Value {
    let r = reporting::build_report(
        store,
        &ReportRequest {
            from_ns: Some(from),
            to_ns: Some(to),
            ..ReportRequest::default()
        },
        factors,
    )
    .expect("report");
    serde_json::to_value(&r).expect("json")
}

fn by_model<'a>(r: &'a serde_json::Value, model: &str) -> &'a serde_json::Value {
    r["by_model"]
        .as_array()
        .expect("by_model")
        .iter()
        .find(|m| m["model"] == model)
        .unwrap_or_else(|| panic!("model {model} in {}", r["by_model"]))
}

fn kwh(j: f64) -> f64 {
    j / 3.6e6
}

/// RAPL measured 10 kJ per interval, the agent gave model `a` 4 kJ of it: the other 6 kJ
/// is charged by the policy the agent reported, and the host total is RAPL's.
#[test]
fn host_energy_reaches_every_total_by_the_agents_policy() {
    for (policy, a_host, idle_host) in [
        // resident: to the host's models pro rata to GPU energy (a 2/3, b 1/3).
        ("resident", 6.0 * (4_000.0 + 6_000.0 * 2.0 / 3.0), 0.0),
        // separate: the remainder is `_idle`.
        ("separate", 6.0 * 4_000.0, 6.0 * 6_000.0),
    ] {
        let store = Store::open_in_memory().expect("store");
        let o = Origin {
            site: "s1".into(),
            host: "h1".into(),
        };
        let mut points = vec![site(&o, "FRA", "FR", Some(policy), T2025 + 1)];
        points.extend(hour(&o, T2025, 4_000.0, 10_000.0));
        store.write(&points).expect("write");
        let r = report(&store, T2025, T2025 + HOUR_NS, &FactorsChoice::builtin());
        let t = &r["totals"]["energy_kwh"];
        close(t["host"].as_f64().expect("host"), kwh(60_000.0), policy);
        close(
            t["it"].as_f64().expect("it"),
            kwh(6.0 * 150_000.0 + 60_000.0),
            policy,
        );
        close(
            t["facility"].as_f64().expect("facility"),
            1.25 * kwh(6.0 * 150_000.0 + 60_000.0),
            policy,
        );
        close(
            by_model(&r, "a")["energy_kwh"]["host"].as_f64().expect("a"),
            kwh(a_host),
            policy,
        );
        close(
            by_model(&r, "_idle")["energy_kwh"]["host"]
                .as_f64()
                .expect("_idle"),
            kwh(idle_host),
            policy,
        );
        let sum: f64 = r["by_model"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|m| m["energy_kwh"]["host"].as_f64().unwrap_or(0.0))
            .sum();
        close(sum, kwh(60_000.0), "models add up to RAPL");
        assert_eq!(r["methodology"]["idle_policy"], policy);
        assert_eq!(r["methodology"]["idle_policies"][0]["from"], "agent");
    }
}

/// Two hosts that ran different policies: the report says `mixed` and lists each; a host
/// whose agent did not say uses the factors file's label, with a warning.
#[test]
fn mixed_and_unreported_idle_policies_are_stated() {
    let store = Store::open_in_memory().expect("store");
    let mut points = Vec::new();
    for (host, policy) in [
        ("h1", Some("resident")),
        ("h2", Some("separate")),
        ("h3", None),
    ] {
        let o = Origin {
            site: "s1".into(),
            host: host.into(),
        };
        points.push(site(&o, "FRA", "FR", policy, T2025 + 1));
        points.extend(hour(&o, T2025, 0.0, 3_000.0));
    }
    store.write(&points).expect("write");
    let (dir, path) = {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "idle_policy = \"separate\"\n").expect("write");
        (dir, path)
    };
    let r = report(
        &store,
        T2025,
        T2025 + HOUR_NS,
        &FactorsChoice::load(&path).expect("factors"),
    );
    drop(dir);
    assert_eq!(r["methodology"]["idle_policy"], "mixed");
    let policies: Vec<(String, String, String)> = r["methodology"]["idle_policies"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| {
            (
                p["host"].as_str().unwrap_or_default().to_owned(),
                p["policy"].as_str().unwrap_or_default().to_owned(),
                p["from"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        policies[0],
        ("h1".into(), "resident".into(), "agent".into())
    );
    assert_eq!(
        policies[1],
        ("h2".into(), "separate".into(), "agent".into())
    );
    assert_eq!(policies[2].0, "h3");
    assert_eq!(policies[2].1, "separate");
    assert!(policies[2].2.contains("factors file"), "{policies:?}");
    let warnings = r["data_quality"]["warnings"].to_string();
    assert!(
        warnings.contains("host 'h3'") && warnings.contains("factors file"),
        "{warnings}"
    );
    // h1 resident: its 18 kJ went to its models; h2 and h3 separate: to `_idle`.
    close(
        by_model(&r, "_idle")["energy_kwh"]["host"]
            .as_f64()
            .expect("_idle"),
        kwh(2.0 * 18_000.0),
        "_idle host",
    );
    close(
        r["totals"]["energy_kwh"]["host"].as_f64().expect("host"),
        kwh(3.0 * 18_000.0),
        "all RAPL energy",
    );
}

/// A 2024 hour gets the 2024 table value and the report says 2024; a 2025 hour in the
/// same report gets 2025's. France: 33 g (2024), 31 g (2025) in the built-in table.
#[test]
fn grid_factor_follows_the_year_of_the_data() {
    let store = Store::open_in_memory().expect("store");
    let o = Origin {
        site: "s1".into(),
        host: "h1".into(),
    };
    let mut points = vec![site(&o, "FRA", "FR", Some("resident"), T2024 + 1)];
    points.extend(hour(&o, T2024, 0.0, 0.0));
    points.extend(hour(&o, T2025, 0.0, 0.0));
    store.write(&points).expect("write");
    let y2024 = inferwatt_core::factors::grid_intensity("FR", Some(2024)).expect("2024");
    let y2025 = inferwatt_core::factors::grid_intensity("FR", Some(2025)).expect("2025");
    assert_eq!((y2024.year, y2025.year), (2024, 2025));
    assert_ne!(y2024.g_per_kwh, y2025.g_per_kwh);

    let r = report(&store, T2024, T2024 + HOUR_NS, &FactorsChoice::builtin());
    let grid: Vec<&serde_json::Value> = r["methodology"]["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .filter(|f| f["name"] == "grid_intensity")
        .collect();
    assert_eq!(grid.len(), 1, "{grid:?}");
    assert_eq!(grid[0]["year"], 2024);
    assert_eq!(grid[0]["value"].as_f64(), Some(y2024.g_per_kwh));
    let facility = r["totals"]["energy_kwh"]["facility"].as_f64().expect("f");
    close(
        r["totals"]["emissions_kgco2e"]["location"]
            .as_f64()
            .expect("loc"),
        facility * y2024.g_per_kwh / 1000.0,
        "2024 emissions",
    );

    // Both years in one report: each hour at its year's value, both listed.
    let r = report(&store, T2024, T2025 + HOUR_NS, &FactorsChoice::builtin());
    let years: Vec<i64> = r["methodology"]["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .filter(|f| f["name"] == "grid_intensity")
        .map(|f| f["year"].as_i64().expect("year"))
        .collect();
    assert_eq!(years, vec![2024, 2025]);
    let per_hour = 1.25 * kwh(6.0 * 150_000.0);
    close(
        r["totals"]["emissions_kgco2e"]["location"]
            .as_f64()
            .expect("loc"),
        per_hour * (y2024.g_per_kwh + y2025.g_per_kwh) / 1000.0,
        "two years",
    );
}

/// An hourly-intensity CSV with 15-minute rows: the hour's emissions use the time-weighted
/// mean of its four rows, not the :00 row. The file's `*_year` keys reach the report.
#[test]
fn fifteen_minute_intensity_rows_are_time_weighted() {
    let store = Store::open_in_memory().expect("store");
    let o = Origin {
        site: "s1".into(),
        host: "h1".into(),
    };
    let mut points = vec![site(&o, "FRA", "FR", Some("resident"), T2025 + 1)];
    points.extend(hour(&o, T2025, 0.0, 0.0));
    store.write(&points).expect("write");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("fr.csv"),
        "datetime,zone,g_per_kwh\n\
         2025-06-01T00:00:00Z,FR,100\n2025-06-01T00:15:00Z,FR,200\n\
         2025-06-01T00:30:00Z,FR,300\n2025-06-01T00:45:00Z,FR,400\n",
    )
    .expect("csv");
    let path = dir.path().join("f.toml");
    std::fs::write(
        &path,
        "[sites.s1]\nhourly_intensity_csv = \"fr.csv\"\npue = 1.4\npue_year = 2023\n",
    )
    .expect("toml");
    let r = report(
        &store,
        T2025,
        T2025 + HOUR_NS,
        &FactorsChoice::load(&path).expect("factors"),
    );
    let facility = r["totals"]["energy_kwh"]["facility"].as_f64().expect("f");
    close(facility, 1.4 * kwh(6.0 * 150_000.0), "facility");
    close(
        r["totals"]["emissions_kgco2e"]["location"]
            .as_f64()
            .expect("loc"),
        facility * 250.0 / 1000.0,
        "time-weighted 250 g",
    );
    let pue = r["methodology"]["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .find(|f| f["name"] == "pue")
        .expect("pue");
    assert_eq!(pue["year"], 2023, "{pue}");
}

/// "US" from one agent and "USA" from another are one country.
#[test]
fn us_and_usa_are_one_country() {
    let store = Store::open_in_memory().expect("store");
    let mut points = Vec::new();
    for (s, country) in [("east", "US"), ("west", "USA")] {
        let o = Origin {
            site: s.into(),
            host: "h1".into(),
        };
        points.push(site(&o, country, "", Some("resident"), T2025 + 1));
        points.extend(hour(&o, T2025, 0.0, 0.0));
    }
    store.write(&points).expect("write");
    let r = report(&store, T2025, T2025 + HOUR_NS, &FactorsChoice::builtin());
    let countries: Vec<&str> = r["by_country"]
        .as_array()
        .expect("by_country")
        .iter()
        .map(|c| c["country"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(countries, vec!["USA"]);
}

/// A 28-hour `_unattributed` interval (the agent was down) is in the report of each day it
/// covers pro rata, at that day's share — not all in the hour it ended.
#[test]
fn a_28_hour_outage_lands_in_the_days_it_covers() {
    let store = Store::open_in_memory().expect("store");
    let o = Origin {
        site: "s1".into(),
        host: "h1".into(),
    };
    let day = 24 * HOUR_NS;
    let start = T2025 + 20 * HOUR_NS;
    let end = start + 28 * HOUR_NS;
    let total = 28.0 * 3600.0 * 200.0;
    let points = vec![
        site(&o, "FRA", "FR", Some("resident"), T2025 + 1),
        GpuInterval {
            gpu_uuid: "GPU-1".into(),
            gpu_index: 0,
            gpu_name: GPU_NAME.into(),
            energy_j: total,
            power_w: None,
            util_pct: None,
            mem_used_bytes: None,
            energy_counter_mj: None,
            interval_s: 28.0 * 3600.0,
            source: EnergySource::Gap,
            clock_step_s: None,
            end_ns: end,
        }
        .to_point(&o),
    ];
    store.write(&points).expect("write");
    let b = FactorsChoice::builtin();
    let first = report(&store, T2025, T2025 + day, &b);
    let second = report(&store, T2025 + day, T2025 + 2 * day, &b);
    let un = |r: &serde_json::Value| {
        by_model(r, "_unattributed")["energy_kwh"]["gpu_active"]
            .as_f64()
            .expect("kwh")
    };
    close(un(&first), kwh(total * 4.0 / 28.0), "day 1: 4 of 28 hours");
    close(
        un(&second),
        kwh(total * 24.0 / 28.0),
        "day 2: 24 of 28 hours",
    );
    close(
        first["totals"]["gpu_hours"].as_f64().expect("h")
            + second["totals"]["gpu_hours"].as_f64().expect("h"),
        28.0,
        "GPU-hours",
    );
}
