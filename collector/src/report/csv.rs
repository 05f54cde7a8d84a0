//! CSV format: one row per group (`total`, each model, site and country) with the
//! indicators flattened into columns (`energy_kwh.facility`, ...). RFC 4180: CRLF line
//! ends, fields with a comma, quote or line break quoted, quotes doubled. An intensity
//! without tokens or requests is an empty field.

use crate::indicators::{Indicators, Report};

/// The header, in column order.
pub const COLUMNS: [&str; 27] = [
    "group",
    "key",
    "country",
    "zone",
    "gpu_hours",
    "energy_kwh.gpu_active",
    "energy_kwh.gpu_idle",
    "energy_kwh.host",
    "energy_kwh.it",
    "energy_kwh.facility",
    "emissions_kgco2e.location",
    "emissions_kgco2e.market",
    "emissions_kgco2e.embodied",
    "water_l.onsite",
    "water_l.offsite",
    "requests",
    "input_tokens",
    "output_tokens",
    "per_1k_output_tokens.energy_wh_accelerator",
    "per_1k_output_tokens.energy_wh_full",
    "per_1k_output_tokens.emissions_gco2e",
    "per_1k_output_tokens.water_ml",
    "per_request.energy_wh_full",
    "per_request.emissions_gco2e",
    "per_request.water_ml",
    "sci_gco2e_per_1k_tokens",
    "input_digest",
];

/// A value, or an empty cell when unknown (NaN: a site of unknown grid intensity).
fn known(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        v.to_string()
    }
}

/// Quotes one field per RFC 4180 when it needs it.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Joins fields into one CRLF-terminated record.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn o(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn row(group: &str, key: &str, country: &str, zone: &str, i: &Indicators, digest: &str) -> String {
    record(&[
        group.to_owned(),
        key.to_owned(),
        country.to_owned(),
        zone.to_owned(),
        i.gpu_hours.to_string(),
        i.energy_kwh.gpu_active.to_string(),
        i.energy_kwh.gpu_idle.to_string(),
        i.energy_kwh.host.to_string(),
        i.energy_kwh.it.to_string(),
        i.energy_kwh.facility.to_string(),
        known(i.emissions_kgco2e.location),
        known(i.emissions_kgco2e.market),
        i.emissions_kgco2e.embodied.to_string(),
        i.water_l.onsite.to_string(),
        i.water_l.offsite.to_string(),
        i.requests.to_string(),
        i.input_tokens.to_string(),
        i.output_tokens.to_string(),
        o(i.per_1k_output_tokens.energy_wh_accelerator),
        o(i.per_1k_output_tokens.energy_wh_full),
        o(i.per_1k_output_tokens.emissions_gco2e),
        o(i.per_1k_output_tokens.water_ml),
        o(i.per_request.energy_wh_full),
        o(i.per_request.emissions_gco2e),
        o(i.per_request.water_ml),
        o(i.sci_gco2e_per_1k_tokens),
        digest.to_owned(),
    ])
}

/// The report as CSV.
pub fn render(r: &Report) -> String {
    let d = r.input_digest.as_str();
    let mut out = record(&COLUMNS);
    out.push_str(&row("total", "", "", "", &r.totals, d));
    for m in &r.by_model {
        out.push_str(&row("model", &m.model, "", "", &m.indicators, d));
    }
    for s in &r.by_site {
        out.push_str(&row("site", &s.site, &s.country, &s.zone, &s.indicators, d));
    }
    for c in &r.by_country {
        out.push_str(&row(
            "country",
            &c.country,
            &c.country,
            "",
            &c.indicators,
            d,
        ));
    }
    for n in &r.by_namespace {
        out.push_str(&row("namespace", &n.label(), "", "", &n.indicators, d));
    }
    for w in &r.by_workload {
        out.push_str(&row("workload", &w.label(), "", "", &w.indicators, d));
    }
    out
}
