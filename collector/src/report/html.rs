//! HTML format: one self-contained page — inline CSS, inline SVG bar charts of energy,
//! emissions and water per model, the Markdown report's tables — with no external assets
//! and no JavaScript.

use super::{num, opt};
use crate::indicators::{Indicators, Report};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:.85em}\
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}\
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}\
.chart{margin:1em 0}.chart text{font-size:12px}";

/// One horizontal bar chart: a `<rect class="bar">` per model.
fn chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let row_h = 22.0;
    let height = 30.0 + row_h * bars.len() as f64;
    let mut s = format!(
        "<figure class=\"chart\"><figcaption>{} ({})</figcaption>\
         <svg width=\"640\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(unit),
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 10.0 + row_h * i as f64;
        let w = if max > 0.0 { 380.0 * v / max } else { 0.0 };
        s.push_str(&format!(
            "<text x=\"0\" y=\"{ty}\">{l}</text><rect class=\"bar\" x=\"180\" y=\"{y}\" width=\"{w:.2}\" height=\"16\" fill=\"#3a7d44\"><title>{l}: {n}</title></rect><text x=\"{tx:.2}\" y=\"{ty}\">{n}</text>",
            ty = y + 13.0,
            l = esc(label),
            n = num(*v),
            tx = 185.0 + w,
        ));
    }
    s.push_str("</svg></figure>\n");
    s
}

fn table(title: &str, key: &str, rows: &[(String, &Indicators)]) -> String {
    let mut s = format!(
        "<h2>{}</h2><table><tr><th>{}</th><th>GPU-h</th><th>facility kWh</th><th>IT kWh</th><th>location kgCO2e</th><th>market kgCO2e</th><th>embodied kgCO2e</th><th>water on-site L</th><th>water off-site L</th><th>requests</th><th>output tokens</th><th>Wh/1k tok (accel.)</th><th>Wh/1k tok (full)</th><th>gCO2e/1k tok</th><th>mL/1k tok</th><th>SCI gCO2e/1k tok</th></tr>\n",
        esc(title),
        esc(key)
    );
    for (k, i) in rows {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(k),
            num(i.gpu_hours),
            num(i.energy_kwh.facility),
            num(i.energy_kwh.it),
            num(i.emissions_kgco2e.location),
            num(i.emissions_kgco2e.market),
            num(i.emissions_kgco2e.embodied),
            num(i.water_l.onsite),
            num(i.water_l.offsite),
            i.requests,
            i.output_tokens,
            opt(i.per_1k_output_tokens.energy_wh_accelerator),
            opt(i.per_1k_output_tokens.energy_wh_full),
            opt(i.per_1k_output_tokens.emissions_gco2e),
            opt(i.per_1k_output_tokens.water_ml),
            opt(i.sci_gco2e_per_1k_tokens),
        ));
    }
    s.push_str("</table>\n");
    s
}

/// The report as a self-contained HTML page.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>inferwatt report {} to {}</title><style>{CSS}</style></head><body>\n\
         <h1>inferwatt report</h1><p>Period {} to {} (generated {}). Methodology {}, idle policy {}. Input digest <code>{}</code>. \
         Location-based and market-based emissions are never mixed; intensities and SCI use location-based; n/a: no tokens or requests.</p>\n",
        esc(&r.period.from),
        esc(&r.period.to),
        esc(&r.period.from),
        esc(&r.period.to),
        esc(&r.generated_at),
        esc(&r.methodology.version),
        esc(&r.methodology.idle_policy),
        esc(&r.input_digest),
    );
    let bars = |f: fn(&Indicators) -> f64| -> Vec<(String, f64)> {
        r.by_model
            .iter()
            .map(|m| (m.model.clone(), f(&m.indicators)))
            .collect()
    };
    s.push_str(&chart(
        "Facility energy per model",
        "kWh",
        &bars(|i| i.energy_kwh.facility),
    ));
    s.push_str(&chart(
        "Location-based emissions per model",
        "kgCO2e",
        &bars(|i| i.emissions_kgco2e.location),
    ));
    s.push_str(&chart(
        "Water (on-site + off-site) per model",
        "L",
        &bars(|i| i.water_l.onsite + i.water_l.offsite),
    ));
    s.push_str(&table("Totals", "scope", &[("all".to_owned(), &r.totals)]));
    let models: Vec<_> = r
        .by_model
        .iter()
        .map(|m| (m.model.clone(), &m.indicators))
        .collect();
    s.push_str(&table("By model", "model", &models));
    let sites: Vec<_> = r
        .by_site
        .iter()
        .map(|x| {
            (
                format!("{} ({}, {})", x.site, x.country, x.zone),
                &x.indicators,
            )
        })
        .collect();
    s.push_str(&table("By site", "site", &sites));
    let countries: Vec<_> = r
        .by_country
        .iter()
        .map(|c| (c.country.clone(), &c.indicators))
        .collect();
    s.push_str(&table("By country", "country", &countries));
    if !r.by_namespace.is_empty() {
        let rows: Vec<_> = r
            .by_namespace
            .iter()
            .map(|n| (n.label(), &n.indicators))
            .collect();
        s.push_str(&table("By namespace", "namespace", &rows));
    }
    if !r.by_workload.is_empty() {
        let rows: Vec<_> = r
            .by_workload
            .iter()
            .map(|w| (w.label(), &w.indicators))
            .collect();
        s.push_str(&table(
            "By workload (chargeback)",
            "namespace/kind/workload",
            &rows,
        ));
    }

    let dq = &r.data_quality;
    s.push_str(&format!(
        "<h2>Data quality</h2><p>Coverage {} over {} GPU(s); energy by path: counter {}, integrated {}, gap {}; model energy by split method: {}; {} gap(s); {} folded point(s).</p>\n",
        opt(dq.coverage),
        dq.gpus_seen,
        opt(dq.energy_share_by_source.counter),
        opt(dq.energy_share_by_source.integrated),
        opt(dq.energy_share_by_source.gap),
        esc(&super::markdown::split_methods(&dq.energy_share_by_split_method)),
        dq.gaps.len(),
        dq.folded_points
    ));
    if !dq.warnings.is_empty() {
        s.push_str("<ul>");
        for w in &dq.warnings {
            s.push_str(&format!("<li>{}</li>", esc(w)));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Factors</h2><table><tr><th>site</th><th>name</th><th>value</th><th>unit</th><th>source</th><th>year</th></tr>\n");
    for f in &r.methodology.factors {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&f.site),
            esc(&f.name),
            f.value,
            esc(&f.unit),
            esc(&f.source),
            f.year
                .map(|y| y.to_string())
                .unwrap_or_else(|| "n/a".to_owned())
        ));
    }
    s.push_str("</table></body></html>\n");
    s
}
