//! Per-site PUE/WUE time series (`pue_wue_csv` in the factors file): each hour's energy
//! uses that hour's PUE and WUE (hand arithmetic), the report lists the series with its
//! file, and a bad CSV is refused naming the factors file, the CSV, the line and column.

use std::path::Path;

use inferwatt_collector::factors_file::{FactorsFile, PueWueSeries};
use inferwatt_collector::indicators::{compute, EnergyRow, Period, ReportInput, SiteRow};

const H0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z
const HOUR_NS: i64 = 3_600_000_000_000;
const KWH: f64 = 3_600_000.0;

fn row(hour: i64, it_kwh: f64) -> EnergyRow {
    EnergyRow {
        site: "paris".into(),
        host: "paris-host".into(),
        gpu_uuid: "GPU-A".into(),
        gpu_name: "NVIDIA H100 80GB HBM3".into(),
        model: "llama".into(),
        server: "vllm".into(),
        hour_start_ns: H0 + hour * HOUR_NS,
        // Split across active, idle and host to check the series applies to all of IT.
        active_j: it_kwh * 0.5 * KWH,
        idle_j: it_kwh * 0.25 * KWH,
        host_j: it_kwh * 0.25 * KWH,
        gpu_seconds: 3600.0,
        tenancy: Default::default(),
    }
}

fn input(energy: Vec<EnergyRow>) -> ReportInput {
    ReportInput {
        period: Period {
            from_ns: H0,
            to_ns: H0 + 4 * HOUR_NS,
        },
        energy,
        usage: Vec::new(),
        sources: Vec::new(),
        splits: Vec::new(),
        sites: vec![SiteRow {
            site: "paris".into(),
            country: "FR".into(),
            zone: "FR".into(),
            pue: 1.0,
            wue_l_per_kwh: 0.0,
        }],
        gaps: Vec::new(),
        folded_points: 0,
        idle_policies: Vec::new(),
        grain_ns: 3_600_000_000_000,
        notes: Vec::new(),
        input_digest: "sha256:test".into(),
    }
}

const FACTORS: &str = r#"
[sites.paris]
pue = 1.1
wue_l_per_kwh = 0.2
ewif_l_per_kwh = 3.0
intensity_g_per_kwh = 100.0
pue_wue_csv = "pue.csv"
"#;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

/// Writes `factors.toml` and `pue.csv` into a fresh folder and resolves `inp` there.
fn resolve_in(
    csv: &str,
    inp: &ReportInput,
) -> (
    tempfile::TempDir,
    Result<inferwatt_collector::factors::ResolvedFactors, String>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pue.csv"), csv).expect("write csv");
    let out = FactorsFile::parse(FACTORS, "factors.toml")
        .expect("parse factors")
        .resolve(inp, "factors.toml", dir.path())
        .map_err(|e| e.to_string());
    (dir, out)
}

#[test]
fn each_hour_uses_its_pue_and_wue() {
    // Rows out of order; 00:00 is before the first row (constants 1.1 / 0.2), 01:00 has
    // its own row (1.5 / 0.8), 03:00 has none and keeps 02:00's (1.25 / 2.0).
    let csv = "datetime,pue,wue_l_per_kwh\n\
               2024-01-01T02:00:00Z,1.25,2.0\n\
               \n\
               2024-01-01T01:00:00Z,1.5,0.8\n";
    let inp = input(vec![row(0, 1.0), row(1, 2.0), row(3, 4.0)]);
    let (_dir, f) = resolve_in(csv, &inp);
    let f = f.expect("resolve");
    let r = compute(&inp, &f, &[]);
    let t = &r.totals;

    // IT 1 + 2 + 4 = 7 kWh.
    close(t.energy_kwh.it, 7.0);
    // Facility = 1×1.1 + 2×1.5 + 4×1.25 = 1.1 + 3.0 + 5.0 = 9.1 kWh.
    close(t.energy_kwh.facility, 9.1);
    // On-site water = 1×0.2 + 2×0.8 + 4×2.0 = 0.2 + 1.6 + 8.0 = 9.8 L.
    close(t.water_l.onsite, 9.8);
    // Off-site water = facility × EWIF = 9.1 × 3.0 = 27.3 L.
    close(t.water_l.offsite, 27.3);
    // Location-based = 9.1 kWh × 100 g/kWh = 910 g; market (nothing covered) the same.
    close(t.emissions_kgco2e.location, 0.91);
    close(t.emissions_kgco2e.market, 0.91);

    // The series is listed with its file: energy-weighted means 9.1/7 = 1.3, 9.8/7 = 1.4.
    let factor = |name: &str| {
        r.methodology
            .factors
            .iter()
            .find(|x| x.site == "paris" && x.name == name)
            .unwrap_or_else(|| panic!("factor '{name}' missing"))
    };
    let pue = factor("pue");
    close(pue.value, 1.3);
    assert_eq!(pue.unit, "ratio");
    assert!(pue.source.contains("time series '"), "{}", pue.source);
    assert!(pue.source.contains("pue.csv' (2 rows)"), "{}", pue.source);
    let wue = factor("wue");
    close(wue.value, 1.4);
    assert_eq!(wue.unit, "L/kWh");
    assert!(wue.source.contains("pue.csv"), "{}", wue.source);
    // The constants stay listed, as the fallback before the first row.
    close(factor("pue_fallback").value, 1.1);
    close(factor("wue_fallback").value, 0.2);
    let pues = r
        .methodology
        .factors
        .iter()
        .filter(|x| x.site == "paris" && x.name == "pue")
        .count();
    assert_eq!(pues, 1, "one 'pue' factor per site");
}

#[test]
fn two_hours_with_different_pue_sum_exactly() {
    let csv = "datetime,pue,wue_l_per_kwh\n\
               2024-01-01T00:00:00Z,1.2,0.5\n\
               2024-01-01T01:00:00Z,1.6,1.5\n";
    let inp = input(vec![row(0, 3.0), row(1, 5.0)]);
    let (_dir, f) = resolve_in(csv, &inp);
    let r = compute(&inp, &f.expect("resolve"), &[]);
    // 3×1.2 + 5×1.6 = 3.6 + 8.0 = 11.6 kWh; water 3×0.5 + 5×1.5 = 1.5 + 7.5 = 9.0 L.
    close(r.totals.energy_kwh.facility, 11.6);
    close(r.totals.water_l.onsite, 9.0);
    close(r.totals.water_l.offsite, 11.6 * 3.0);
}

#[test]
fn series_lookup_holds_until_next_row() {
    let s = PueWueSeries::parse(
        "pue,datetime,wue_l_per_kwh\n1.3,2024-01-01 05:00:00,0.1\n1.4,2024-01-02T00:00:00+00:00,0.2\n",
    )
    .expect("parse");
    let t5 = 1_704_085_200; // 2024-01-01T05:00:00Z
    assert_eq!(s.len(), 2);
    assert_eq!(s.at(t5 - 1), None);
    assert_eq!(s.at(t5), Some((1.3, 0.1)));
    assert_eq!(s.at(t5 + 10 * 3600), Some((1.3, 0.1)));
    assert_eq!(s.at(t5 + 19 * 3600), Some((1.4, 0.2)));
    assert_eq!(s.at(t5 + 1000 * 3600), Some((1.4, 0.2)));
}

#[test]
fn bad_csv_names_file_line_and_column() {
    let inp = input(vec![row(0, 1.0)]);
    let h = "datetime,pue,wue_l_per_kwh\n";
    let ok = "2024-01-01T00:00:00Z,1.2,0.5\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{h}{ok}2024-01-01T01:00:00Z,abc,0.5\n"),
            vec!["line 3", "column 'pue'", "'abc' is not a number"],
        ),
        (
            format!("{h}2024-01-01T00:00:00Z,0.9,0.5\n"),
            vec!["line 2", "column 'pue'", "'0.9'", "≥ 1"],
        ),
        (
            "datetime,pue,wue\n".to_owned(),
            vec!["line 1", "column 'wue'", "not a known column"],
        ),
        (
            format!("{h}{ok}\n2024-01-01T01:00:00Z,1.2,-1\n"),
            vec!["line 4", "column 'wue_l_per_kwh'", "'-1'", "negative"],
        ),
        (
            format!("{h}2024-13-01T00:00:00Z,1.2,0.5\n"),
            vec!["line 2", "column 'datetime'", "2024-13-01", "ISO 8601"],
        ),
        (
            format!("{h}2024-01-01T00:30:00Z,1.2,0.5\n"),
            vec!["line 2", "column 'datetime'", "not on the hour"],
        ),
        (
            format!("{h}{ok}{ok}"),
            vec!["line 3", "column 'datetime'", "already given on line 2"],
        ),
        (
            format!("{h}2024-01-01T00:00:00Z,1.2\n"),
            vec!["line 2", "2 cells"],
        ),
        (
            "datetime,pue\n".to_owned(),
            vec!["line 1", "lacks a column", "wue_l_per_kwh"],
        ),
        (h.to_owned(), vec!["line 1", "no rows"]),
    ];
    for (csv, wants) in cases {
        let (_dir, r) = resolve_in(&csv, &inp);
        let e = r.expect_err("bad CSV must fail");
        for w in ["factors.toml", "sites.paris.pue_wue_csv", "pue.csv"]
            .iter()
            .chain(wants.iter())
        {
            assert!(e.contains(w), "'{w}' missing from: {e}");
        }
    }
}

#[test]
fn missing_csv_names_path_and_key() {
    let inp = input(vec![row(0, 1.0)]);
    let e = FactorsFile::parse(FACTORS, "factors.toml")
        .expect("parse")
        .resolve(&inp, "factors.toml", Path::new("/nonexistent-inferwatt"))
        .expect_err("missing CSV must fail")
        .to_string();
    for w in [
        "factors.toml",
        "sites.paris.pue_wue_csv",
        "/nonexistent-inferwatt/pue.csv",
    ] {
        assert!(e.contains(w), "'{w}' missing from: {e}");
    }
}
