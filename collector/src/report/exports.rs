//! Exports in formats users' tools already read: a Hugging Face model card
//! `co2_eq_emissions` block, a CodeCarbon 3.x `emissions.csv`, and a Green Software
//! Foundation Impact Framework manifest. Hand-written YAML/CSV, values from the report.

use super::csv::record;
use crate::indicators::{Indicators, Report};

/// A YAML double-quoted scalar.
fn yq(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where a model ran: `country (zone)` of each site with energy for it.
fn locations(report: &Report, model: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for h in report.hardware.iter().filter(|h| h.model == model) {
        if let Some(s) = report.by_site.iter().find(|s| s.site == h.site) {
            let l = format!("{} ({})", s.country, s.zone);
            if !v.contains(&l) {
                v.push(l);
            }
        } else if let Some(g) = report.geography.sites.iter().find(|s| s.site == h.site) {
            let l = format!("{} ({})", g.country, g.zone);
            if !v.contains(&l) {
                v.push(l);
            }
        }
    }
    v
}

/// `N x GPU name` for each GPU model that served `model` (or all models when `None`).
fn hardware(report: &Report, model: Option<&str>) -> (u64, Vec<String>) {
    let mut names: Vec<(String, u64)> = Vec::new();
    for h in report
        .hardware
        .iter()
        .filter(|h| model.is_none_or(|m| h.model == m))
    {
        match names.iter_mut().find(|(n, _)| *n == h.gpu_name) {
            Some((_, c)) => *c += h.gpus,
            None => names.push((h.gpu_name.clone(), h.gpus)),
        }
    }
    let total = names.iter().map(|(_, c)| c).sum();
    (
        total,
        names
            .into_iter()
            .map(|(n, c)| format!("{c} x {n}"))
            .collect(),
    )
}

fn model_indicators<'a>(report: &'a Report, model: &str) -> Option<&'a Indicators> {
    report
        .by_model
        .iter()
        .find(|m| m.model == model)
        .map(|m| &m.indicators)
}

/// A Hugging Face model card `co2_eq_emissions` block (YAML front-matter) for `model`:
/// location-based operational emissions in grams over the report's period. The card's
/// `training_type` is "inference": these are serving emissions, not training.
pub fn hf_model_card(report: &Report, model: &str) -> String {
    let grams = model_indicators(report, model)
        .map(|i| i.emissions_kgco2e.location * 1000.0)
        .unwrap_or(0.0);
    let (_, hw) = hardware(report, Some(model));
    format!(
        "---\nco2_eq_emissions:\n  emissions: {grams}\n  source: {}\n  training_type: \"inference\"\n  geographical_location: {}\n  hardware_used: {}\n---\n",
        yq(&format!(
            "inferwatt {} (measured GPU and host energy x PUE x location-based grid intensity; GHG Protocol Scope 2), period {} to {}, input digest {}",
            report.methodology.version, report.period.from, report.period.to, report.input_digest
        )),
        yq(&locations(report, model).join(", ")),
        yq(&hw.join(", ")),
    )
}

/// CodeCarbon 3.x `emissions.csv` header (`EmissionsData` field order).
pub const CODECARBON_COLUMNS: [&str; 36] = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "on_cloud",
    "pue",
];

/// The report as CodeCarbon `emissions.csv` (3.x columns), one row per model:
/// `experiment_id` = model, `run_id` = input digest, `duration` = period seconds,
/// `emissions` = location-based kgCO2e, `gpu_energy` = GPU active + idle kWh,
/// `cpu_energy` = host kWh (RAPL package + DRAM, so `ram_energy` is left empty),
/// `energy_consumed` = facility kWh (IT × PUE, what the emissions apply to),
/// `water_consumed` = on-site L (as CodeCarbon's WUE water, but on IT energy),
/// powers = mean W over the period. Unknown machine fields are empty, never 0.
/// The trailing `wue` column of CodeCarbon ≥ 3.1 is added as the site WUE when one site.
pub fn codecarbon_csv(report: &Report) -> String {
    let mut header: Vec<&str> = CODECARBON_COLUMNS.to_vec();
    header.push("wue");
    let mut out = record(&header);
    let duration_s = report.period_seconds;
    let timestamp = report.period.to.trim_end_matches('Z');
    let timestamp = timestamp.split('.').next().unwrap_or(timestamp);
    let wue = report
        .methodology
        .factors
        .iter()
        .filter(|f| f.name == "wue")
        .map(|f| f.value)
        .collect::<Vec<_>>();
    let wue = if wue.len() == 1 {
        wue[0].to_string()
    } else {
        String::new()
    };
    for m in &report.by_model {
        let i = &m.indicators;
        let mean_w = |kwh: f64| {
            if duration_s > 0.0 {
                (kwh * 3_600_000.0 / duration_s).to_string()
            } else {
                String::new()
            }
        };
        let (gpus, hw) = hardware(report, Some(&m.model));
        let locs = locations(report, &m.model);
        let countries: Vec<String> = locs
            .iter()
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        let pue = if i.energy_kwh.it > 0.0 {
            (i.energy_kwh.facility / i.energy_kwh.it).to_string()
        } else {
            String::new()
        };
        let rate = if duration_s > 0.0 {
            (i.emissions_kgco2e.location / duration_s).to_string()
        } else {
            String::new()
        };
        let row: Vec<String> = vec![
            timestamp.to_owned(),
            "inferwatt".to_owned(),
            report.input_digest.clone(),
            m.model.clone(),
            duration_s.to_string(),
            i.emissions_kgco2e.location.to_string(),
            rate,
            String::new(),
            String::new(),
            String::new(),
            mean_w(i.energy_kwh.host),
            mean_w(i.energy_kwh.gpu_active + i.energy_kwh.gpu_idle),
            String::new(),
            i.energy_kwh.host.to_string(),
            (i.energy_kwh.gpu_active + i.energy_kwh.gpu_idle).to_string(),
            String::new(),
            i.energy_kwh.facility.to_string(),
            i.water_l.onsite.to_string(),
            countries.join(";"),
            countries.join(";"),
            locs.join(";"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            gpus.to_string(),
            hw.join(";"),
            String::new(),
            String::new(),
            String::new(),
            "process".to_owned(),
            "N".to_owned(),
            pue,
            wue.clone(),
        ];
        out.push_str(&record(&row));
    }
    out
}

/// A Green Software Foundation Impact Framework manifest (`name`, `description`, `tags`,
/// `initialize.plugins`, `tree.children`): one child per model whose single input
/// observation covers the report's period, with IF's parameter names — `energy` (facility
/// kWh), `carbon-operational` and `carbon-embodied` (gCO2e, location-based), `carbon`
/// (their sum), `requests`, and `output-tokens` as functional units. No plugin is
/// configured: the values are measured; add IF plugins (e.g. `sci`) to derive more.
pub fn impact_framework_manifest(report: &Report) -> String {
    let mut s = format!(
        "name: {}\ndescription: {}\ntags:\n  kind: inference\ninitialize:\n  plugins: {{}}\ntree:\n  children:\n",
        yq(&format!("inferwatt {} to {}", report.period.from, report.period.to)),
        yq(&format!(
            "Measured inference footprint per model ({}; idle policy {}; input digest {}). Location-based operational carbon; market-based not included.",
            report.methodology.version, report.methodology.idle_policy, report.input_digest
        )),
    );
    for m in &report.by_model {
        let i = &m.indicators;
        let op = i.emissions_kgco2e.location * 1000.0;
        let emb = i.emissions_kgco2e.embodied * 1000.0;
        s.push_str(&format!(
            "    {}:\n      inputs:\n        - timestamp: {}\n          duration: {}\n          energy: {}\n          carbon-operational: {}\n          carbon-embodied: {}\n          carbon: {}\n          water-onsite-l: {}\n          water-offsite-l: {}\n          requests: {}\n          output-tokens: {}\n",
            yq(&m.model),
            yq(&report.period.from),
            report.period_seconds,
            i.energy_kwh.facility,
            op,
            emb,
            op + emb,
            i.water_l.onsite,
            i.water_l.offsite,
            i.requests,
            i.output_tokens,
        ));
    }
    s
}
