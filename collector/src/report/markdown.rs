//! Markdown format: summary, tables by model, site and country, usage by country, data
//! quality, and the factor table with sources (so every number can be recomputed).

use super::{num, opt};
use crate::indicators::{Indicators, Report};

/// Escapes a table cell (`|` and line breaks).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

const HEAD: &str = "| GPU-h | GPU active kWh | GPU idle kWh | host kWh | IT kWh | facility kWh | location kgCO2e | market kgCO2e | embodied kgCO2e | water on-site L | water off-site L | requests | output tokens | Wh/1k tok (accel.) | Wh/1k tok (full) | gCO2e/1k tok | mL/1k tok | Wh/request (full) | SCI gCO2e/1k tok |";

fn cols(i: &Indicators) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        num(i.gpu_hours),
        num(i.energy_kwh.gpu_active),
        num(i.energy_kwh.gpu_idle),
        num(i.energy_kwh.host),
        num(i.energy_kwh.it),
        num(i.energy_kwh.facility),
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
        opt(i.per_request.energy_wh_full),
        opt(i.sci_gco2e_per_1k_tokens),
    )
}

fn table<'a>(
    out: &mut String,
    title: &str,
    key: &str,
    rows: impl Iterator<Item = (String, &'a Indicators)>,
) {
    out.push_str(&format!("\n## {title}\n\n| {key} {HEAD}\n|---"));
    out.push_str(&"|---".repeat(19));
    out.push_str("|\n");
    for (k, i) in rows {
        out.push_str(&format!("| {} {}\n", cell(&k), cols(i)));
    }
}

/// The report as Markdown.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "# inferwatt report\n\nPeriod {} to {} (generated {}). Methodology {}, idle policy `{}`. Input digest `{}`.\n\n\
         Emissions are GHG Protocol Scope 2 location-based and market-based, never mixed; \
         intensities and SCI use location-based emissions. \"n/a\": no tokens or requests.\n",
        r.period.from,
        r.period.to,
        r.generated_at,
        cell(&r.methodology.version),
        cell(&r.methodology.idle_policy),
        r.input_digest
    );
    table(
        &mut out,
        "Totals",
        "scope",
        std::iter::once(("all".to_owned(), &r.totals)),
    );
    table(
        &mut out,
        "By model",
        "model",
        r.by_model.iter().map(|m| (m.model.clone(), &m.indicators)),
    );
    table(
        &mut out,
        "By site",
        "site (country, zone)",
        r.by_site.iter().map(|s| {
            (
                format!("{} ({}, {})", s.site, s.country, s.zone),
                &s.indicators,
            )
        }),
    );
    table(
        &mut out,
        "By country",
        "country",
        r.by_country
            .iter()
            .map(|c| (c.country.clone(), &c.indicators)),
    );
    if !r.by_namespace.is_empty() {
        table(
            &mut out,
            "By namespace",
            "namespace",
            r.by_namespace.iter().map(|n| (n.label(), &n.indicators)),
        );
    }
    if !r.by_workload.is_empty() {
        table(
            &mut out,
            "By workload (chargeback)",
            "namespace/kind/workload",
            r.by_workload.iter().map(|w| (w.label(), &w.indicators)),
        );
    }

    out.push_str("\n## Geography\n\n| country | facility kWh | share |\n|---|---|---|\n");
    for s in &r.geography.energy_share_by_country {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell(&s.key),
            num(s.energy_kwh),
            opt(s.share)
        ));
    }
    out.push_str("\n| grid zone | facility kWh | share |\n|---|---|---|\n");
    for s in &r.geography.energy_share_by_zone {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell(&s.key),
            num(s.energy_kwh),
            opt(s.share)
        ));
    }

    out.push_str(&format!(
        "\n## Usage by country\n\nRows under {} requests merged into `other` ({} suppressed).\n\n| country | model | requests | input tokens | output tokens |\n|---|---|---|---|---|\n",
        r.usage_by_country.min_count, r.usage_by_country.suppressed_rows
    ));
    for u in &r.usage_by_country.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&u.country),
            cell(&u.model),
            u.requests,
            u.input_tokens,
            u.output_tokens
        ));
    }

    let dq = &r.data_quality;
    out.push_str(&format!(
        "\n## Data quality\n\n- Coverage: {} of {} GPU(s) × period measured\n- Energy by measurement path: counter {}, integrated {}, gap {}\n- Model energy by split method: {}\n- Folded points: {}\n- Gaps: {}\n",
        opt(dq.coverage),
        dq.gpus_seen,
        opt(dq.energy_share_by_source.counter),
        opt(dq.energy_share_by_source.integrated),
        opt(dq.energy_share_by_source.gap),
        split_methods(&dq.energy_share_by_split_method),
        dq.folded_points,
        dq.gaps.len()
    ));
    for g in &dq.gaps {
        out.push_str(&format!(
            "  - {} {} {}: {} to {}, {} kWh\n",
            cell(&g.site),
            cell(&g.host),
            cell(&g.gpu_uuid),
            g.from,
            g.to,
            num(g.energy_kwh)
        ));
    }
    for w in &dq.warnings {
        out.push_str(&format!("- Warning: {}\n", cell(w)));
    }

    out.push_str("\n## Factors\n\n| site | name | value | unit | source | year |\n|---|---|---|---|---|---|\n");
    for f in &r.methodology.factors {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&f.site),
            cell(&f.name),
            f.value,
            cell(&f.unit),
            cell(&f.source),
            f.year
                .map(|y| y.to_string())
                .unwrap_or_else(|| "n/a".to_owned())
        ));
    }
    out
}

/// `power_model 0.62, sm_util 0.38` (or `none recorded`).
pub(crate) fn split_methods(shares: &std::collections::BTreeMap<String, f64>) -> String {
    if shares.is_empty() {
        return "none recorded".to_string();
    }
    shares
        .iter()
        .map(|(m, s)| format!("{m} {}", opt(Some(*s))))
        .collect::<Vec<_>>()
        .join(", ")
}
