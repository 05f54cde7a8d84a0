//! Indicators against hand arithmetic from the inputs and factors, recomputation with
//! other factors, null intensities, data quality, geography, and factor-file errors.

use std::path::Path;

use inferwatt_collector::factors::ResolvedFactors;
use inferwatt_collector::factors_file::FactorsFile;
use inferwatt_collector::indicators::{
    compute, compute_with, ComputeOptions, EnergyRow, GapRow, GpuSourceRow, GroupBy, Indicators,
    Period, Report, ReportInput, SiteRow, SplitEnergyRow, UsageRow,
};

const H0: i64 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z
const HOUR_NS: i64 = 3_600_000_000_000;
const H100: &str = "NVIDIA H100 80GB HBM3";
const KWH: f64 = 3_600_000.0;

fn energy(
    site: &str,
    gpu: &str,
    model: &str,
    active_kwh: f64,
    idle_kwh: f64,
    host_kwh: f64,
    gpu_s: f64,
) -> EnergyRow {
    EnergyRow {
        site: site.into(),
        host: format!("{site}-host"),
        gpu_uuid: gpu.into(),
        gpu_name: H100.into(),
        model: model.into(),
        server: "vllm".into(),
        hour_start_ns: H0,
        active_j: active_kwh * KWH,
        idle_j: idle_kwh * KWH,
        host_j: host_kwh * KWH,
        gpu_seconds: gpu_s,
        tenancy: Default::default(),
    }
}

fn usage(site: &str, model: &str, requests: u64, input: u64, output: u64) -> UsageRow {
    UsageRow {
        site: site.into(),
        model: model.into(),
        server: "vllm".into(),
        hour_start_ns: H0,
        requests,
        input_tokens: input,
        output_tokens: output,
        tenancy: Default::default(),
    }
}

fn split(site: &str, method: &str, kwh: f64) -> SplitEnergyRow {
    SplitEnergyRow {
        site: site.into(),
        method: method.into(),
        energy_j: kwh * KWH,
    }
}

fn input() -> ReportInput {
    ReportInput {
        period: Period {
            from_ns: H0,
            to_ns: H0 + HOUR_NS,
        },
        energy: vec![
            energy("paris", "GPU-A", "llama", 1.0, 0.5, 0.2, 1800.0),
            energy("paris", "GPU-A", "_idle", 0.0, 0.1, 0.0, 600.0),
            energy("virginia", "GPU-B", "llama", 2.0, 0.0, 0.0, 3600.0),
            energy("virginia", "GPU-B", "mistral", 0.5, 0.0, 0.0, 900.0),
        ],
        usage: vec![
            usage("paris", "llama", 100, 5000, 20000),
            usage("virginia", "llama", 50, 1000, 10000),
        ],
        sources: vec![
            GpuSourceRow {
                site: "paris".into(),
                source: "counter".into(),
                energy_j: 6.0e6,
                seconds: 3600.0,
            },
            GpuSourceRow {
                site: "virginia".into(),
                source: "integrated".into(),
                energy_j: 3.0e6,
                seconds: 1800.0,
            },
            GpuSourceRow {
                site: "virginia".into(),
                source: "gap".into(),
                energy_j: 1.0e6,
                seconds: 1800.0,
            },
        ],
        // virginia's mistral row was stored before the store kept split methods.
        splits: vec![
            split("paris", "power_model", 1.5),
            split("paris", "none", 0.1),
            split("virginia", "sm_util", 2.0),
        ],
        sites: vec![
            SiteRow {
                site: "paris".into(),
                country: "FR".into(),
                zone: "FR".into(),
                pue: 1.0,
                wue_l_per_kwh: 0.0,
            },
            SiteRow {
                site: "virginia".into(),
                country: "US".into(),
                zone: "US-MIDA-PJM".into(),
                pue: 1.0,
                wue_l_per_kwh: 0.0,
            },
        ],
        gaps: vec![GapRow {
            site: "virginia".into(),
            host: "virginia-host".into(),
            gpu_uuid: "GPU-B".into(),
            from_ns: H0 + HOUR_NS / 2,
            to_ns: H0 + HOUR_NS,
            energy_j: 1.0e6,
        }],
        folded_points: 7,
        idle_policies: Vec::new(),
        grain_ns: 3_600_000_000_000,
        notes: Vec::new(),
        input_digest: "sha256:abc".into(),
    }
}

const FACTORS: &str = r#"
methodology_version = "test/1"
idle_policy = "resident"

[sites.paris]
pue = 1.2
wue_l_per_kwh = 0.5
ewif_l_per_kwh = 3.0
intensity_g_per_kwh = 50.0
covered_share = 0.5
instrument_g_per_kwh = 0.0
residual_mix_g_per_kwh = 100.0
server_embodied_kg_per_gpu = 712.5

[sites.paris.gpu_embodied_kg]
"NVIDIA H100 80GB HBM3" = 164.0

[sites.virginia]
pue = 1.5
wue_l_per_kwh = 1.0
ewif_l_per_kwh = 2.0
intensity_g_per_kwh = 400.0
residual_mix_g_per_kwh = 300.0
"#;

fn resolve(text: &str, input: &ReportInput) -> ResolvedFactors {
    FactorsFile::parse(text, "factors.toml")
        .expect("parse")
        .resolve(input, "factors.toml", Path::new("."))
        .expect("resolve")
}

fn report(text: &str) -> Report {
    let input = input();
    compute(&input, &resolve(text, &input), &[])
}

fn model<'a>(r: &'a Report, name: &str) -> &'a Indicators {
    &r.by_model
        .iter()
        .find(|m| m.model == name)
        .expect("model row")
        .indicators
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

fn close_opt(a: Option<f64>, b: f64) {
    close(a.expect("intensity present"), b);
}

#[test]
fn every_llama_indicator_matches_hand_arithmetic() {
    let r = report(FACTORS);
    let l = model(&r, "llama");
    // Paris: IT 1.7 kWh, PUE 1.2; Virginia: IT 2.0 kWh, PUE 1.5.
    let (it_p, it_v) = (1.0 + 0.5 + 0.2, 2.0);
    let (fac_p, fac_v) = (it_p * 1.2, it_v * 1.5);
    close(l.gpu_hours, (1800.0 + 3600.0) / 3600.0);
    close(l.energy_kwh.gpu_active, 3.0);
    close(l.energy_kwh.gpu_idle, 0.5);
    close(l.energy_kwh.host, 0.2);
    close(l.energy_kwh.it, it_p + it_v);
    close(l.energy_kwh.facility, fac_p + fac_v);
    let loc_g = fac_p * 50.0 + fac_v * 400.0;
    close(l.emissions_kgco2e.location, loc_g / 1000.0);
    // Market: Paris half covered at 0, half residual 100; Virginia all residual 300.
    let mkt_g = fac_p * (0.5 * 0.0 + 0.5 * 100.0) + fac_v * 300.0;
    close(l.emissions_kgco2e.market, mkt_g / 1000.0);
    // Embodied: Paris (164 + 712.5) kg over 4 years for 0.5 h; Virginia built-in 164 kg for 1 h.
    let life_h = 4.0 * 8760.0;
    let emb_g = (164.0 + 712.5) * 1000.0 * 0.5 / life_h + 164.0 * 1000.0 * 1.0 / life_h;
    close(l.emissions_kgco2e.embodied, emb_g / 1000.0);
    let on_l = it_p * 0.5 + it_v * 1.0;
    let off_l = fac_p * 3.0 + fac_v * 2.0;
    close(l.water_l.onsite, on_l);
    close(l.water_l.offsite, off_l);
    assert_eq!(
        (l.requests, l.input_tokens, l.output_tokens),
        (150, 6000, 30000)
    );
    let k = 30000.0 / 1000.0;
    close_opt(l.per_1k_output_tokens.energy_wh_accelerator, 3500.0 / k);
    close_opt(
        l.per_1k_output_tokens.energy_wh_full,
        (fac_p + fac_v) * 1000.0 / k,
    );
    close_opt(l.per_1k_output_tokens.emissions_gco2e, loc_g / k);
    close_opt(l.per_1k_output_tokens.water_ml, (on_l + off_l) * 1000.0 / k);
    close_opt(
        l.per_request.energy_wh_full,
        (fac_p + fac_v) * 1000.0 / 150.0,
    );
    close_opt(l.per_request.emissions_gco2e, loc_g / 150.0);
    close_opt(l.per_request.water_ml, (on_l + off_l) * 1000.0 / 150.0);
    close_opt(l.sci_gco2e_per_1k_tokens, (loc_g + emb_g) / k);
}

#[test]
fn totals_sites_and_countries_add_up_by_hand() {
    let r = report(FACTORS);
    // All rows: Paris IT 1.7 + 0.1 (_idle); Virginia 2.0 + 0.5.
    let (it_p, it_v) = (1.8, 2.5);
    close(r.totals.energy_kwh.it, it_p + it_v);
    close(r.totals.energy_kwh.facility, it_p * 1.2 + it_v * 1.5);
    close(
        r.totals.emissions_kgco2e.location,
        (it_p * 1.2 * 50.0 + it_v * 1.5 * 400.0) / 1000.0,
    );
    close(
        r.totals.gpu_hours,
        (1800.0 + 600.0 + 3600.0 + 900.0) / 3600.0,
    );
    assert_eq!(r.totals.requests, 150);
    let paris = r.by_site.iter().find(|s| s.site == "paris").expect("paris");
    // Countries in one form (ISO alpha-3), whatever the agent wrote.
    assert_eq!((paris.country.as_str(), paris.zone.as_str()), ("FRA", "FR"));
    close(paris.indicators.energy_kwh.facility, it_p * 1.2);
    close(paris.indicators.water_l.onsite, it_p * 0.5);
    let us = r
        .by_country
        .iter()
        .find(|c| c.country == "USA")
        .expect("USA");
    close(
        us.indicators.emissions_kgco2e.location,
        it_v * 1.5 * 400.0 / 1000.0,
    );
    assert_eq!(us.indicators.requests, 50);
    // Geography: facility-energy shares by country and zone.
    let fr = r
        .geography
        .energy_share_by_country
        .iter()
        .find(|s| s.key == "FRA")
        .expect("FRA");
    close_opt(fr.share, it_p * 1.2 / (it_p * 1.2 + it_v * 1.5));
    let pjm = r
        .geography
        .energy_share_by_zone
        .iter()
        .find(|s| s.key == "US-MIDA-PJM")
        .expect("zone");
    close_opt(pjm.share, it_v * 1.5 / (it_p * 1.2 + it_v * 1.5));
    assert_eq!(r.geography.sites.len(), 2);
}

#[test]
fn reserved_models_are_rows_and_intensities_without_usage_are_null() {
    let r = report(FACTORS);
    for reserved in ["_idle", "_unattributed"] {
        assert!(
            r.by_model.iter().any(|m| m.model == reserved),
            "{reserved} missing"
        );
    }
    close(model(&r, "_idle").energy_kwh.gpu_idle, 0.1);
    let m = model(&r, "mistral");
    assert!(m.per_1k_output_tokens.energy_wh_accelerator.is_none());
    assert!(m.per_request.energy_wh_full.is_none());
    assert!(m.sci_gco2e_per_1k_tokens.is_none());
    let json: serde_json::Value = serde_json::to_value(&r).expect("json");
    let row = json["by_model"]
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["model"] == "mistral")
        .expect("mistral");
    assert!(row["per_1k_output_tokens"]["energy_wh_accelerator"].is_null());
    assert!(row["per_request"]["water_ml"].is_null());
    assert!(row["sci_gco2e_per_1k_tokens"].is_null());
    assert!(row["energy_kwh"]["gpu_active"].as_f64().expect("number") > 0.0);
}

#[test]
fn other_factors_scale_emissions_and_water_exactly_and_leave_energy_alone() {
    let a = report(FACTORS);
    let doubled = FACTORS
        .replace("intensity_g_per_kwh = 50.0", "intensity_g_per_kwh = 100.0")
        .replace("intensity_g_per_kwh = 400.0", "intensity_g_per_kwh = 800.0")
        .replace(
            "residual_mix_g_per_kwh = 100.0",
            "residual_mix_g_per_kwh = 200.0",
        )
        .replace(
            "residual_mix_g_per_kwh = 300.0",
            "residual_mix_g_per_kwh = 600.0",
        )
        .replace("wue_l_per_kwh = 0.5", "wue_l_per_kwh = 1.5")
        .replace("wue_l_per_kwh = 1.0", "wue_l_per_kwh = 3.0")
        .replace("ewif_l_per_kwh = 3.0", "ewif_l_per_kwh = 9.0")
        .replace("ewif_l_per_kwh = 2.0", "ewif_l_per_kwh = 6.0");
    let b = report(&doubled);
    for (x, y) in [
        (&a.totals, &b.totals),
        (model(&a, "llama"), model(&b, "llama")),
    ] {
        assert_eq!(x.energy_kwh, y.energy_kwh);
        assert_eq!(x.gpu_hours, y.gpu_hours);
        close(
            y.emissions_kgco2e.location,
            2.0 * x.emissions_kgco2e.location,
        );
        close(y.emissions_kgco2e.market, 2.0 * x.emissions_kgco2e.market);
        close(y.emissions_kgco2e.embodied, x.emissions_kgco2e.embodied);
        close(y.water_l.onsite, 3.0 * x.water_l.onsite);
        close(y.water_l.offsite, 3.0 * x.water_l.offsite);
    }
    assert_eq!(a.input_digest, b.input_digest);
    assert_ne!(a.methodology.factors, b.methodology.factors);
}

#[test]
fn data_quality_coverage_sources_gaps() {
    let r = report(FACTORS);
    let dq = &r.data_quality;
    // Measured (non-gap) seconds 3600 + 1800 over 1 h × 2 GPUs.
    close_opt(dq.coverage, (3600.0 + 1800.0) / (3600.0 * 2.0));
    close_opt(dq.energy_share_by_source.counter, 6.0 / 10.0);
    close_opt(dq.energy_share_by_source.integrated, 3.0 / 10.0);
    close_opt(dq.energy_share_by_source.gap, 1.0 / 10.0);
    // Model GPU energy 4.1 kWh: 1.5 power_model, 2.0 sm_util, 0.1 none, 0.5 unrecorded.
    let m = &dq.energy_share_by_split_method;
    assert_eq!(m.len(), 4, "{m:?}");
    for (k, kwh) in [
        ("power_model", 1.5),
        ("sm_util", 2.0),
        ("none", 0.1),
        ("unrecorded", 0.5),
    ] {
        assert!((m[k] - kwh / 4.1).abs() < 1e-12, "{k}: {m:?}");
    }
    assert_eq!(dq.gaps.len(), 1);
    assert_eq!(dq.gaps[0].from, "2024-01-01T00:30:00Z");
    close(dq.gaps[0].energy_kwh, 1.0e6 / KWH);
    assert_eq!(dq.folded_points, 7);
    assert_eq!(r.period.from, "2024-01-01T00:00:00Z");
    assert_eq!(r.period.to, "2024-01-01T01:00:00Z");
}

#[test]
fn usage_by_country_suppresses_small_rows_into_other() {
    let mut inp = input();
    inp.usage.push(usage("paris", "tiny", 2, 10, 10));
    let f = resolve(FACTORS, &inp);
    let r = compute_with(
        &inp,
        &f,
        &ComputeOptions {
            min_count: 60,
            ..Default::default()
        },
    );
    let u = &r.usage_by_country;
    assert_eq!((u.min_count, u.suppressed_rows), (60, 2));
    let other = u
        .rows
        .iter()
        .find(|x| x.country == "other")
        .expect("other row");
    assert_eq!((other.requests, other.output_tokens), (50 + 2, 10000 + 10));
    assert!(u
        .rows
        .iter()
        .any(|x| x.country == "FRA" && x.model == "llama" && x.requests == 100));
    assert!(!u.rows.iter().any(|x| x.model == "tiny"));
    let all = compute_with(&inp, &f, &ComputeOptions::default());
    assert_eq!(all.usage_by_country.suppressed_rows, 0);
    assert_eq!(all.usage_by_country.rows.len(), 3);
}

#[test]
fn group_selection_limits_breakdowns() {
    let inp = input();
    let r = compute(&inp, &resolve(FACTORS, &inp), &[GroupBy::Model]);
    assert!(!r.by_model.is_empty());
    assert!(r.by_site.is_empty() && r.by_country.is_empty());
}

#[test]
fn hourly_intensity_csv_applies_to_its_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("fr.csv"),
        "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,80\n",
    )
    .expect("write csv");
    let text = FACTORS.replace(
        "server_embodied_kg_per_gpu = 712.5",
        "server_embodied_kg_per_gpu = 712.5\nhourly_intensity_csv = \"fr.csv\"",
    );
    let inp = input();
    let f = FactorsFile::parse(&text, "f.toml")
        .expect("parse")
        .resolve(&inp, "f.toml", dir.path())
        .expect("resolve");
    let r = compute(&inp, &f, &[]);
    let paris = r.by_site.iter().find(|s| s.site == "paris").expect("paris");
    close(
        paris.indicators.emissions_kgco2e.location,
        1.8 * 1.2 * 80.0 / 1000.0,
    );
    // Market-based keeps its own factors, never the hourly location series.
    close(
        paris.indicators.emissions_kgco2e.market,
        1.8 * 1.2 * 0.5 * 100.0 / 1000.0,
    );
}

#[test]
fn builtin_tables_by_zone_then_country() {
    let mut inp = input();
    inp.sites[1].zone = "NOT-A-ZONE".into();
    inp.sites[1].country = "USA".into();
    let f = resolve("[sites.paris]\npue = 1.1\n", &inp);
    // The table of the data's year (or the newest earlier one).
    let year = Some(inferwatt_core::factors::year_of(H0 / 1_000_000_000));
    let fr = inferwatt_core::factors::grid_intensity("FR", year).expect("FR in table");
    let usa = inferwatt_core::factors::grid_intensity("USA", year).expect("USA in table");
    assert_eq!(f.sites["paris"].grid_g_per_kwh, fr.g_per_kwh);
    assert_eq!(f.sites["virginia"].grid_g_per_kwh, usa.g_per_kwh);
    assert!(f
        .factors
        .iter()
        .any(|x| x.site == "virginia" && x.name == "grid_intensity" && x.source.contains("USA")));
    // Unset residual mix: flagged, and market falls back to the grid average.
    assert!(f
        .warnings
        .iter()
        .any(|w| w.contains("residual_mix_g_per_kwh")));
}

fn resolve_err(text: &str, inp: &ReportInput) -> String {
    match FactorsFile::parse(text, "bad.toml") {
        Err(e) => e.to_string(),
        Ok(f) => f
            .resolve(inp, "bad.toml", Path::new("."))
            .expect_err("must fail")
            .to_string(),
    }
}

#[test]
fn unknown_zone_and_country_name_site_zone_and_fix() {
    // Set in the factors file: the file's mistake, an error naming it.
    let e = resolve_err(
        "[sites.virginia]\nzone = \"XX-NOWHERE\"\ncountry = \"ZZZ\"\n",
        &input(),
    );
    for want in [
        "bad.toml",
        "virginia",
        "XX-NOWHERE",
        "ZZZ",
        "intensity_g_per_kwh",
    ] {
        assert!(e.contains(want), "{want} missing from: {e}");
    }
    // Reported by an agent: that site's emissions are null, with a warning naming the
    // site, zone and fix; the other site and every energy figure stand.
    let mut inp = input();
    inp.sites[1].zone = "XX-NOWHERE".into();
    inp.sites[1].country = "ZZZ".into();
    let f = resolve("", &inp);
    let w = f.warnings.join("\n");
    for want in [
        "virginia",
        "XX-NOWHERE",
        "ZZZ",
        "intensity_g_per_kwh",
        "null",
    ] {
        assert!(w.contains(want), "{want} missing from: {w}");
    }
    let r = compute(&inp, &f, &[]);
    let site = |name: &str| {
        r.by_site
            .iter()
            .find(|s| s.site == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let v = site("virginia");
    assert!(v.indicators.emissions_kgco2e.location.is_nan());
    assert!(v.indicators.energy_kwh.facility > 0.0);
    let p = site("paris");
    assert!(p.indicators.emissions_kgco2e.location > 0.0);
    close(
        r.totals.emissions_kgco2e.location,
        p.indicators.emissions_kgco2e.location,
    );
    let json = serde_json::to_value(&r).expect("json");
    let vj = json["by_site"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["site"] == "virginia")
        .expect("virginia")
        .clone();
    assert!(vj["emissions_kgco2e"]["location"].is_null(), "{vj}");
}

#[test]
fn bad_factor_files_name_file_key_and_reason() {
    let inp = input();
    let cases = [
        (
            "[sites.paris]\npeu = 1.2\n",
            vec!["bad.toml", "peu", "unknown field"],
        ),
        (
            "[sites.paris]\npue = 0.8\n",
            vec!["bad.toml", "sites.paris.pue", "0.8", "≥ 1"],
        ),
        (
            "[defaults]\nwue_l_per_kwh = -1.0\n",
            vec!["bad.toml", "defaults.wue_l_per_kwh", "negative"],
        ),
        (
            "[sites.paris]\ncovered_share = 1.5\n",
            vec!["bad.toml", "sites.paris.covered_share", "1.5"],
        ),
        (
            "[sites.paris]\nlifetime_years = 0.0\n",
            vec!["bad.toml", "sites.paris.lifetime_years"],
        ),
        (
            "[sites.paris.fuel_mix]\ncoal = 0.5\n",
            vec!["bad.toml", "sites.paris.fuel_mix", "sum"],
        ),
        (
            "[sites.paris]\npue_reference = \"moon\"\n",
            vec!["bad.toml", "pue_reference", "moon"],
        ),
        (
            "[sites.paris]\nhourly_intensity_csv = \"missing.csv\"\n",
            vec!["bad.toml", "hourly_intensity_csv", "missing.csv"],
        ),
        ("idle_policy = 3\n", vec!["bad.toml", "idle_policy"]),
    ];
    for (text, wants) in cases {
        let e = resolve_err(text, &inp);
        for w in wants {
            assert!(e.contains(w), "'{w}' missing from: {e}");
        }
    }
}

#[test]
fn defaults_apply_and_fuel_mix_derives_ewif() {
    let inp = input();
    let f = resolve(
        "[defaults]\npue = 1.3\nintensity_g_per_kwh = 10.0\n[defaults.fuel_mix]\ncoal = 0.5\nwind = 0.5\n[sites.virginia]\npue = 1.1\n",
        &inp,
    );
    assert_eq!(f.sites["paris"].pue, 1.3);
    assert_eq!(f.sites["virginia"].pue, 1.1);
    close(
        f.sites["paris"].ewif_l_per_kwh,
        0.5 * 450.0 * 3.785412 / 1000.0,
    );
    let pue = f
        .factors
        .iter()
        .find(|x| x.site == "paris" && x.name == "pue")
        .expect("pue factor");
    assert!(pue.source.contains("defaults.pue"), "{}", pue.source);
}

#[test]
fn li_et_al_water_per_request() {
    // 0.004 kWh IT per request, WUE 0.55, PUE 1.17, EWIF 3.142 → 2.20 + 14.71 = 16.9 mL.
    let mut inp = input();
    inp.energy = vec![energy("paris", "GPU-A", "gpt", 4.0, 0.0, 0.0, 3600.0)];
    inp.usage = vec![usage("paris", "gpt", 1000, 0, 1)];
    let f = resolve(
        "[sites.paris]\npue = 1.17\nwue_l_per_kwh = 0.55\newif_l_per_kwh = 3.142\nintensity_g_per_kwh = 0.0\n",
        &inp,
    );
    let r = compute(&inp, &f, &[]);
    let ml = model(&r, "gpt")
        .per_request
        .water_ml
        .expect("water per request");
    assert!((ml - 16.9).abs() < 0.01, "{ml}");
    close(model(&r, "gpt").water_l.onsite, 4.0 * 0.55);
}

#[test]
fn bloom_deployment_emissions() {
    // Luccioni et al.: 914 kWh, 230,768 requests, 394 g/kWh → 360.1 kgCO2e, 3.96 Wh/request.
    let mut inp = input();
    inp.energy = vec![energy("paris", "GPU-A", "bloom", 914.0, 0.0, 0.0, 3600.0)];
    inp.usage = vec![usage("paris", "bloom", 230_768, 0, 1)];
    let f = resolve(
        "[sites.paris]\npue = 1.0\nintensity_g_per_kwh = 394.0\n",
        &inp,
    );
    let r = compute(&inp, &f, &[]);
    let b = model(&r, "bloom");
    assert!((b.emissions_kgco2e.location - 360.1).abs() < 0.05);
    assert!((b.per_request.energy_wh_full.expect("per request") - 3.96).abs() < 0.005);
}
