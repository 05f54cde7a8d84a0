//! Report formats: JSON shape per DESIGN.md, CSV quoting, Markdown factor table,
//! self-contained HTML with one bar per model, and the model-card, CodeCarbon and
//! Impact Framework exports.

use std::path::Path;

use inferwatt_collector::factors_file::FactorsFile;
use inferwatt_collector::indicators::{
    compute_with, ComputeOptions, EnergyRow, GpuSourceRow, Period, Report, ReportInput, SiteRow,
    UsageRow,
};
use inferwatt_collector::report::{
    codecarbon_csv, hf_model_card, impact_framework_manifest, render, Format,
};

const H0: i64 = 1_704_067_200_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;

fn row(model: &str, active_j: f64) -> EnergyRow {
    EnergyRow {
        site: "paris".into(),
        host: "h1".into(),
        gpu_uuid: "GPU-A".into(),
        gpu_name: "NVIDIA H100 80GB HBM3".into(),
        model: model.into(),
        server: "vllm".into(),
        hour_start_ns: H0,
        active_j,
        idle_j: 1.0e5,
        host_j: 5.0e4,
        gpu_seconds: 1200.0,
        tenancy: Default::default(),
    }
}

const TRICKY: &str = "org/model, \"v2\"";

fn report() -> Report {
    let input = ReportInput {
        period: Period {
            from_ns: H0,
            to_ns: H0 + HOUR_NS,
        },
        energy: vec![row("llama", 3.6e6), row(TRICKY, 1.8e6), row("_idle", 0.0)],
        usage: vec![UsageRow {
            site: "paris".into(),
            model: "llama".into(),
            server: "vllm".into(),
            hour_start_ns: H0,
            requests: 10,
            input_tokens: 100,
            output_tokens: 2000,
            tenancy: Default::default(),
        }],
        sources: vec![GpuSourceRow {
            site: "paris".into(),
            source: "counter".into(),
            energy_j: 5.7e6,
            seconds: 3600.0,
        }],
        splits: vec![],
        sites: vec![SiteRow {
            site: "paris".into(),
            country: "FR".into(),
            zone: "FR".into(),
            pue: 1.2,
            wue_l_per_kwh: 0.3,
        }],
        gaps: vec![],
        folded_points: 0,
        idle_policies: Vec::new(),
        grain_ns: 3_600_000_000_000,
        notes: Vec::new(),
        input_digest: "sha256:feed".into(),
    };
    let f = FactorsFile::parse("[sites.paris]\nintensity_g_per_kwh = 50.0\nintensity_source = \"RTE éCO2mix 2024 <avg>\"\n", "f.toml")
        .expect("parse")
        .resolve(&input, "f.toml", Path::new("."))
        .expect("resolve");
    compute_with(
        &input,
        &f,
        &ComputeOptions {
            generated_at_ns: Some(H0 + 2 * HOUR_NS),
            ..Default::default()
        },
    )
}

const INDICATOR_KEYS: [&str; 10] = [
    "gpu_hours",
    "energy_kwh",
    "emissions_kgco2e",
    "water_l",
    "requests",
    "input_tokens",
    "output_tokens",
    "per_1k_output_tokens",
    "per_request",
    "sci_gco2e_per_1k_tokens",
];

fn check_indicators(v: &serde_json::Value, at: &str) {
    for k in INDICATOR_KEYS {
        assert!(v.get(k).is_some(), "{at}: no '{k}'");
    }
    for k in ["gpu_active", "gpu_idle", "host", "it", "facility"] {
        assert!(v["energy_kwh"][k].is_number(), "{at}: energy_kwh.{k}");
    }
    for k in ["location", "market", "embodied"] {
        assert!(
            v["emissions_kgco2e"][k].is_number(),
            "{at}: emissions_kgco2e.{k}"
        );
    }
    for k in ["onsite", "offsite"] {
        assert!(v["water_l"][k].is_number(), "{at}: water_l.{k}");
    }
    for k in [
        "energy_wh_accelerator",
        "energy_wh_full",
        "emissions_gco2e",
        "water_ml",
    ] {
        assert!(
            v["per_1k_output_tokens"].get(k).is_some(),
            "{at}: per_1k_output_tokens.{k}"
        );
    }
    for k in ["energy_wh_full", "emissions_gco2e", "water_ml"] {
        assert!(v["per_request"].get(k).is_some(), "{at}: per_request.{k}");
    }
}

#[test]
fn json_has_every_design_key() {
    let r = report();
    let text = render(&r, Format::Json).expect("json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["schema"], "inferwatt.report/v1");
    assert_eq!(v["period"]["from"], "2024-01-01T00:00:00Z");
    assert_eq!(v["period"]["to"], "2024-01-01T01:00:00Z");
    assert_eq!(v["generated_at"], "2024-01-01T02:00:00Z");
    assert!(v["methodology"]["version"].is_string());
    assert!(v["methodology"]["idle_policy"].is_string());
    let factors = v["methodology"]["factors"].as_array().expect("factors");
    assert!(!factors.is_empty());
    for f in factors {
        for k in ["site", "name", "value", "unit", "source", "year"] {
            assert!(f.get(k).is_some(), "factor without '{k}': {f}");
        }
    }
    check_indicators(&v["totals"], "totals");
    for m in v["by_model"].as_array().expect("by_model") {
        assert!(m["model"].is_string());
        check_indicators(m, "by_model");
    }
    for s in v["by_site"].as_array().expect("by_site") {
        for k in ["site", "country", "zone"] {
            assert!(s[k].is_string(), "by_site.{k}");
        }
        check_indicators(s, "by_site");
    }
    for c in v["by_country"].as_array().expect("by_country") {
        assert!(c["country"].is_string());
        check_indicators(c, "by_country");
    }
    let dq = &v["data_quality"];
    assert!(dq.get("coverage").is_some());
    for k in ["counter", "integrated", "gap"] {
        assert!(dq["energy_share_by_source"].get(k).is_some(), "source {k}");
    }
    assert!(dq["gaps"].is_array());
    assert_eq!(v["input_digest"], "sha256:feed");
    // The tricky model has energy but no tokens: its intensities are null, not 0.
    let tricky = v["by_model"]
        .as_array()
        .expect("by_model")
        .iter()
        .find(|m| m["model"] == TRICKY)
        .expect("row");
    assert!(tricky["per_1k_output_tokens"]["energy_wh_accelerator"].is_null());
}

#[test]
fn csv_is_one_quoted_row_per_group() {
    let r = report();
    let text = render(&r, Format::Csv).expect("csv");
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("group,key,country,zone,gpu_hours,energy_kwh.gpu_active"));
    // total + models + sites + countries.
    assert_eq!(
        lines.len(),
        1 + 1 + r.by_model.len() + r.by_site.len() + r.by_country.len()
    );
    assert!(text.contains("model,\"org/model, \"\"v2\"\"\","), "{text}");
    let llama = lines
        .iter()
        .find(|l| l.starts_with("model,llama,"))
        .expect("llama row");
    let cols = llama.split(',').count();
    assert_eq!(cols, lines[0].split(',').count());
    // An intensity without tokens is an empty field.
    let idle = lines
        .iter()
        .find(|l| l.starts_with("model,_idle,"))
        .expect("_idle row");
    assert!(idle.contains(",,"));
}

#[test]
fn markdown_lists_factors_with_sources() {
    let r = report();
    let md = render(&r, Format::Markdown).expect("md");
    assert!(md.contains("| site | name | value | unit | source | year |"));
    assert!(md.contains("| paris | grid_intensity | 50 | gCO2e/kWh | RTE éCO2mix 2024 <avg> |"));
    assert!(md.contains("## By model"));
    assert!(md.contains("org/model, \"v2\""));
}

#[test]
fn html_is_self_contained_with_one_bar_per_model() {
    let r = report();
    let html = render(&r, Format::Html).expect("html");
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script") && !html.contains("<link"));
    assert!(html.contains("<style>"));
    let first_svg = html.split("<svg").nth(1).expect("an <svg>");
    let first_svg = first_svg.split("</svg>").next().expect("closed svg");
    assert_eq!(
        first_svg.matches("<rect class=\"bar\"").count(),
        r.by_model.len()
    );
    assert_eq!(html.matches("<svg").count(), 3);
    // Escaped text, not markup.
    assert!(html.contains("RTE éCO2mix 2024 &lt;avg&gt;"));
    assert!(html.contains("org/model, &quot;v2&quot;"));
}

#[test]
fn hf_model_card_block() {
    let r = report();
    let card = hf_model_card(&r, "llama");
    let grams = r
        .by_model
        .iter()
        .find(|m| m.model == "llama")
        .expect("llama")
        .indicators
        .emissions_kgco2e
        .location
        * 1000.0;
    assert!(card.starts_with("---\nco2_eq_emissions:\n"));
    assert!(card.contains(&format!("  emissions: {grams}\n")));
    assert!(card.contains("  training_type: \"inference\"\n"));
    assert!(card.contains("  geographical_location: \"FRA (FR)\"\n"));
    assert!(card.contains("  hardware_used: \"1 x NVIDIA H100 80GB HBM3\"\n"));
    assert!(card.contains("  source: \"inferwatt"));
}

#[test]
fn codecarbon_csv_has_the_3x_header() {
    let r = report();
    let text = codecarbon_csv(&r);
    let header = text.split("\r\n").next().expect("header");
    assert_eq!(
        header,
        "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,\
cpu_utilization_percent,ram_utilization_percent,ram_used_gb,cpu_power,gpu_power,ram_power,\
cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,country_name,country_iso_code,\
region,cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,cpu_model,\
gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,on_cloud,pue,wue"
    );
    let llama = text
        .split("\r\n")
        .find(|l| l.contains(",llama,"))
        .expect("llama row");
    let l = &r
        .by_model
        .iter()
        .find(|m| m.model == "llama")
        .expect("llama")
        .indicators;
    assert!(llama.starts_with("2024-01-01T01:00:00,inferwatt,sha256:feed,llama,3600,"));
    assert!(llama.contains(&format!(",{},", l.emissions_kgco2e.location)));
    assert!(llama.contains(&format!(",{},", l.energy_kwh.facility)));
    assert_eq!(
        text.split("\r\n").filter(|x| !x.is_empty()).count(),
        1 + r.by_model.len()
    );
}

#[test]
fn impact_framework_manifest_shape() {
    let r = report();
    let y = impact_framework_manifest(&r);
    for want in ["name: ", "\ndescription: ", "\ninitialize:\n  plugins: {}\n", "\ntree:\n  children:\n", "    \"llama\":\n      inputs:\n        - timestamp: \"2024-01-01T00:00:00Z\"\n          duration: 3600\n"] {
        assert!(y.contains(want), "'{want}' missing:\n{y}");
    }
    let l = &r
        .by_model
        .iter()
        .find(|m| m.model == "llama")
        .expect("llama")
        .indicators;
    assert!(y.contains(&format!("          energy: {}\n", l.energy_kwh.facility)));
    assert!(y.contains("          output-tokens: 2000\n"));
    assert!(y.contains("\"org/model, \\\"v2\\\"\":"));
}

#[test]
fn format_names_parse_and_unknown_is_an_error() {
    assert_eq!("md".parse::<Format>().expect("md"), Format::Markdown);
    assert_eq!("HTML".parse::<Format>().expect("html"), Format::Html);
    let e = "pdf".parse::<Format>().expect_err("unknown");
    assert!(e.to_string().contains("'pdf'"));
}
