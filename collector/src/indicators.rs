//! Indicators of a period (METHODOLOGY §8, DESIGN.md "Report JSON"): from the store's rows
//! for the period ([`ReportInput`]) and the resolved factors, the [`Report`] — totals, by
//! model, by site, by country, geography, usage by country and data quality — which
//! serialises exactly to `inferwatt.report/v1`.
//!
//! Every formula is `inferwatt_core::footprint`'s; this module only applies them per
//! hourly energy row (so an hourly intensity series and a PUE/WUE series can apply) and
//! sums. Conventions:
//! - intensities per 1,000 output tokens and per request use location-based emissions
//!   (operational, no embodied); SCI adds embodied; market-based never enters either;
//! - embodied per row = (GPU + server-per-GPU kg) over the lifetime, for the row's
//!   `gpu_seconds` (its model's share of GPU time, METHODOLOGY §5 `TiR × RR`);
//! - an intensity with no tokens or requests is `None` (JSON `null`), never 0 or ∞.

use std::collections::{BTreeMap, BTreeSet};

use inferwatt_core::footprint::{
    embodied_g, facility_energy_kwh, it_energy_kwh, location_emissions_g, market_emissions_g,
    per_1k, per_unit, water_l, years_to_hours,
};
use inferwatt_core::units::j_to_kwh;
use serde::Serialize;

use crate::factors::{ReportFactor, ResolvedFactors};
pub use crate::input::{
    EnergyRow, GapRow, GpuSourceRow, HostPolicy, Period, ReportInput, SiteRow, SplitEnergyRow,
    UsageRow,
};

/// The report schema identifier.
pub const REPORT_SCHEMA: &str = "inferwatt.report/v1";
/// Reserved model names that always appear as rows (never dropped).
pub const RESERVED_MODELS: [&str; 2] = ["_idle", "_unattributed"];

/// Which breakdowns a report carries. An empty selection means all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    Model,
    Site,
    Country,
    /// Kubernetes namespace (`by_namespace`).
    Namespace,
    /// Kubernetes workload within its namespace (`by_workload`, the chargeback table).
    Workload,
}

/// Options beyond the grouping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComputeOptions {
    pub group: Vec<GroupBy>,
    /// `usage_by_country` rows with fewer requests than this are merged into one `other`
    /// row (0: no suppression).
    pub min_count: u64,
    /// Report generation time (ns); `None` = now.
    pub generated_at_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: String,
    pub period: PeriodOut,
    pub generated_at: String,
    pub methodology: Methodology,
    pub totals: Indicators,
    pub by_model: Vec<ModelIndicators>,
    pub by_site: Vec<SiteIndicators>,
    pub by_country: Vec<CountryIndicators>,
    /// Per Kubernetes namespace; namespace `""` is the energy of no pod (idle GPUs,
    /// `_unattributed`, the host remainder, processes outside pods). Present when asked
    /// for, or by default when any row ran in a pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_namespace: Vec<NamespaceIndicators>,
    /// Per (namespace, workload kind, workload): what each tenant's workload used, the
    /// same rows as `by_namespace` split finer (present under the same rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_workload: Vec<WorkloadIndicators>,
    pub geography: Geography,
    pub usage_by_country: UsageByCountry,
    /// GPUs that served each model at each site (for model cards and CodeCarbon).
    pub hardware: Vec<HardwareRow>,
    pub data_quality: DataQuality,
    pub input_digest: String,
    /// Length of the period in seconds (not serialised; `period` carries it).
    #[serde(skip)]
    pub period_seconds: f64,
}

/// Distinct GPUs (by uuid) of one name that served `model` at `site`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HardwareRow {
    pub model: String,
    pub site: String,
    pub gpu_name: String,
    pub gpus: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodOut {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Methodology {
    pub version: String,
    /// The idle policy the agents ran (`resident`, `separate`), `mixed` when hosts differ
    /// (see `idle_policies`).
    pub idle_policy: String,
    /// Per host, the policy its unassigned host energy was charged by and its origin.
    pub idle_policies: Vec<HostPolicy>,
    pub factors: Vec<ReportFactor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct EnergyKwh {
    pub gpu_active: f64,
    pub gpu_idle: f64,
    pub host: f64,
    pub it: f64,
    pub facility: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct EmissionsKg {
    pub location: f64,
    pub market: f64,
    pub embodied: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct WaterL {
    pub onsite: f64,
    pub offsite: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Per1kOutputTokens {
    pub energy_wh_accelerator: Option<f64>,
    pub energy_wh_full: Option<f64>,
    pub emissions_gco2e: Option<f64>,
    pub water_ml: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PerRequest {
    pub energy_wh_full: Option<f64>,
    pub emissions_gco2e: Option<f64>,
    pub water_ml: Option<f64>,
}

/// DESIGN.md INDICATORS.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Indicators {
    pub gpu_hours: f64,
    pub energy_kwh: EnergyKwh,
    pub emissions_kgco2e: EmissionsKg,
    pub water_l: WaterL,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub per_1k_output_tokens: Per1kOutputTokens,
    pub per_request: PerRequest,
    pub sci_gco2e_per_1k_tokens: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelIndicators {
    pub model: String,
    #[serde(flatten)]
    pub indicators: Indicators,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteIndicators {
    pub site: String,
    pub country: String,
    pub zone: String,
    #[serde(flatten)]
    pub indicators: Indicators,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamespaceIndicators {
    pub namespace: String,
    #[serde(flatten)]
    pub indicators: Indicators,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadIndicators {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    #[serde(flatten)]
    pub indicators: Indicators,
}

impl NamespaceIndicators {
    /// How tables name the namespace (`(no pod)` for the energy of no pod).
    pub fn label(&self) -> String {
        if self.namespace.is_empty() {
            "(no pod)".to_owned()
        } else {
            self.namespace.clone()
        }
    }
}

impl WorkloadIndicators {
    /// How tables name the workload: `namespace/Kind/name`, `(no pod)` for no pod.
    pub fn label(&self) -> String {
        if self.namespace.is_empty() && self.workload.is_empty() {
            "(no pod)".to_owned()
        } else {
            format!(
                "{}/{}/{}",
                self.namespace, self.workload_kind, self.workload
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountryIndicators {
    pub country: String,
    #[serde(flatten)]
    pub indicators: Indicators,
}

/// METHODOLOGY §8 geographic spread: the sites, and facility-energy shares by country and
/// by grid zone (`None` shares when the period has no energy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Geography {
    pub sites: Vec<GeoSite>,
    pub energy_share_by_country: Vec<Share>,
    pub energy_share_by_zone: Vec<Share>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoSite {
    pub site: String,
    pub country: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub key: String,
    pub energy_kwh: f64,
    pub share: Option<f64>,
}

/// Requests and tokens per model per country; rows under `min_count` requests merged into
/// one row with country and model `other`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageByCountry {
    pub min_count: u64,
    pub suppressed_rows: u64,
    pub rows: Vec<UsageCountryRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageCountryRow {
    pub country: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Shares of GPU energy by measurement path; `None` when no energy was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SourceShares {
    pub counter: Option<f64>,
    pub integrated: Option<f64>,
    pub gap: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapOut {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub from: String,
    pub to: String,
    pub energy_kwh: f64,
}

/// Data quality. `coverage` = measured GPU-seconds (sources other than `gap`) /
/// (period seconds × distinct GPUs seen in energy rows and gaps); `None` with no GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataQuality {
    pub coverage: Option<f64>,
    pub energy_share_by_source: SourceShares,
    /// Shares of the models' GPU energy by the method that split it (`power_model`,
    /// `sm_util`, `memory`, `equal`, `mig`, `none`), and `unrecorded` for energy stored
    /// before the store kept the method; empty when no model energy was recorded.
    pub energy_share_by_split_method: BTreeMap<String, f64>,
    pub gaps: Vec<GapOut>,
    pub folded_points: u64,
    pub gpus_seen: u64,
    pub warnings: Vec<String>,
}

/// Distinct (host, GPU uuid) pairs.
type GpuSet<'a> = BTreeSet<(&'a str, &'a str)>;

/// Sums of one group, before intensities.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    gpu_seconds: f64,
    active_kwh: f64,
    idle_kwh: f64,
    host_kwh: f64,
    it_kwh: f64,
    facility_kwh: f64,
    location_g: f64,
    market_g: f64,
    embodied_g: f64,
    onsite_l: f64,
    offsite_l: f64,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// Facility energy of sites whose grid intensity (location) or market inputs are
    /// unknown: left out of the emission sums.
    location_unknown_kwh: f64,
    market_unknown_kwh: f64,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        self.location_unknown_kwh += o.location_unknown_kwh;
        self.market_unknown_kwh += o.market_unknown_kwh;
        self.gpu_seconds += o.gpu_seconds;
        self.active_kwh += o.active_kwh;
        self.idle_kwh += o.idle_kwh;
        self.host_kwh += o.host_kwh;
        self.it_kwh += o.it_kwh;
        self.facility_kwh += o.facility_kwh;
        self.location_g += o.location_g;
        self.market_g += o.market_g;
        self.embodied_g += o.embodied_g;
        self.onsite_l += o.onsite_l;
        self.offsite_l += o.offsite_l;
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
    }

    fn indicators(&self) -> Indicators {
        let out = self.output_tokens as f64;
        let req = self.requests as f64;
        let water_ml = (self.onsite_l + self.offsite_l) * 1000.0;
        let accel_wh = (self.active_kwh + self.idle_kwh) * 1000.0;
        let full_wh = self.facility_kwh * 1000.0;
        // Emissions of a group whose energy all sits at sites of unknown grid are unknown
        // (NaN, `null` in JSON); a group with some known energy sums the known part (the
        // report's warnings name the sites left out).
        let unknown = |u: f64| u > 0.0 && u >= self.facility_kwh * (1.0 - 1e-12);
        let loc_g = if unknown(self.location_unknown_kwh) {
            f64::NAN
        } else {
            self.location_g
        };
        let mkt_g = if unknown(self.market_unknown_kwh) {
            f64::NAN
        } else {
            self.market_g
        };
        Indicators {
            gpu_hours: self.gpu_seconds / 3600.0,
            energy_kwh: EnergyKwh {
                gpu_active: self.active_kwh,
                gpu_idle: self.idle_kwh,
                host: self.host_kwh,
                it: self.it_kwh,
                facility: self.facility_kwh,
            },
            emissions_kgco2e: EmissionsKg {
                location: loc_g / 1000.0,
                market: mkt_g / 1000.0,
                embodied: self.embodied_g / 1000.0,
            },
            water_l: WaterL {
                onsite: self.onsite_l,
                offsite: self.offsite_l,
            },
            requests: self.requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            per_1k_output_tokens: Per1kOutputTokens {
                energy_wh_accelerator: per_1k(accel_wh, out),
                energy_wh_full: per_1k(full_wh, out),
                emissions_gco2e: per_1k(loc_g, out),
                water_ml: per_1k(water_ml, out),
            },
            per_request: PerRequest {
                energy_wh_full: per_unit(full_wh, req),
                emissions_gco2e: per_unit(loc_g, req),
                water_ml: per_unit(water_ml, req),
            },
            sci_gco2e_per_1k_tokens: per_1k(loc_g + self.embodied_g, out),
        }
    }
}

/// Adds `a` to `map[key]`, copying the key only the first time it is seen.
fn add_to(map: &mut BTreeMap<String, Acc>, key: &str, a: &Acc) {
    match map.get_mut(key) {
        Some(e) => e.add(a),
        None => {
            map.insert(key.to_owned(), *a);
        }
    }
}

/// Computes the report with the default options for `group` (no suppression, now).
pub fn compute(input: &ReportInput, factors: &ResolvedFactors, group: &[GroupBy]) -> Report {
    compute_with(
        input,
        factors,
        &ComputeOptions {
            group: group.to_vec(),
            ..ComputeOptions::default()
        },
    )
}

/// Computes the report of one period.
pub fn compute_with(
    input: &ReportInput,
    factors: &ResolvedFactors,
    opts: &ComputeOptions,
) -> Report {
    let wants = |g: GroupBy| opts.group.is_empty() || opts.group.contains(&g);
    let mut warnings = factors.warnings.clone();
    for n in &input.notes {
        if !warnings.contains(n) {
            warnings.push(n.clone());
        }
    }
    for p in input.idle_policies.iter().filter(|p| p.from != "agent") {
        warnings.push(format!(
            "host '{}' at site '{}': idle policy '{}' from the {}; its unassigned host energy was charged by it",
            p.host, p.site, p.policy, p.from
        ));
    }
    let site_geo = |site: &str| -> (String, String) {
        match factors.sites.get(site) {
            Some(s) => (s.country.clone(), s.zone.clone()),
            None => {
                let row = input.sites.iter().find(|r| r.site == site);
                (
                    row.map(|r| r.country.clone()).unwrap_or_default(),
                    row.map(|r| r.zone.clone()).unwrap_or_default(),
                )
            }
        }
    };

    let mut totals = Acc::default();
    let mut by_model: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_site: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_tenancy: BTreeMap<crate::input::Tenancy, Acc> = BTreeMap::new();
    for m in RESERVED_MODELS {
        by_model.entry(m.to_owned()).or_default();
    }

    // A bucket's width for a time-weighted intensity; a calendar-year grain only happens
    // without an hourly series, where the width does not matter.
    let bucket_ns = if input.grain_ns == crate::store::YEAR_GRAIN {
        0
    } else {
        input.grain_ns
    };
    for r in &input.energy {
        let mut a = Acc {
            gpu_seconds: r.gpu_seconds,
            active_kwh: j_to_kwh(r.active_j),
            idle_kwh: j_to_kwh(r.idle_j),
            host_kwh: j_to_kwh(r.host_j),
            ..Acc::default()
        };
        a.it_kwh = it_energy_kwh(a.active_kwh, a.idle_kwh, a.host_kwh);
        match factors.sites.get(&r.site) {
            Some(s) => {
                let (pue, wue) = s.pue_wue_at(r.hour_start_ns);
                a.facility_kwh = facility_energy_kwh(a.it_kwh, pue);
                a.location_g = location_emissions_g(
                    a.facility_kwh,
                    s.intensity_over(r.hour_start_ns, bucket_ns),
                );
                a.market_g = market_emissions_g(a.facility_kwh, &s.market).grams;
                // An unknown grid (NaN): that energy's emissions are unknown, not 0.
                if !a.location_g.is_finite() {
                    a.location_unknown_kwh = a.facility_kwh;
                    a.location_g = 0.0;
                }
                if !a.market_g.is_finite() {
                    a.market_unknown_kwh = a.facility_kwh;
                    a.market_g = 0.0;
                }
                let w = water_l(a.it_kwh, pue, wue, s.ewif_l_per_kwh);
                a.onsite_l = w.onsite_l;
                a.offsite_l = w.offsite_l;
                let gpu_kg = s.gpu_embodied_kg.get(&r.gpu_name).copied().unwrap_or(0.0);
                a.embodied_g = embodied_g(
                    gpu_kg + s.server_embodied_kg_per_gpu,
                    years_to_hours(s.lifetime_years),
                    r.gpu_seconds / 3600.0,
                    1.0,
                );
            }
            None => {
                a.facility_kwh = a.it_kwh;
                let w = format!("site '{}' has no resolved factors: its facility energy equals IT energy and it has no emissions or water; resolve the factors over the same input", r.site);
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        totals.add(&a);
        add_to(&mut by_model, &r.model, &a);
        add_to(&mut by_site, &r.site, &a);
        by_tenancy.entry(r.tenancy.clone()).or_default().add(&a);
    }

    let mut usage_cm: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for u in &input.usage {
        let a = Acc {
            requests: u.requests,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            ..Acc::default()
        };
        totals.add(&a);
        by_model.entry(u.model.clone()).or_default().add(&a);
        by_site.entry(u.site.clone()).or_default().add(&a);
        by_tenancy.entry(u.tenancy.clone()).or_default().add(&a);
        let (country, _) = site_geo(&u.site);
        usage_cm
            .entry((country, u.model.clone()))
            .or_default()
            .add(&a);
    }
    for s in &input.sites {
        by_site.entry(s.site.clone()).or_default();
    }

    let mut by_country: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_zone: BTreeMap<String, Acc> = BTreeMap::new();
    let mut sites_out = Vec::new();
    let mut geo_sites = Vec::new();
    for (site, acc) in &by_site {
        let (country, zone) = site_geo(site);
        by_country.entry(country.clone()).or_default().add(acc);
        by_zone.entry(zone.clone()).or_default().add(acc);
        geo_sites.push(GeoSite {
            site: site.clone(),
            country: country.clone(),
            zone: zone.clone(),
        });
        sites_out.push(SiteIndicators {
            site: site.clone(),
            country,
            zone,
            indicators: acc.indicators(),
        });
    }
    let shares = |m: &BTreeMap<String, Acc>| -> Vec<Share> {
        m.iter()
            .map(|(k, a)| Share {
                key: k.clone(),
                energy_kwh: a.facility_kwh,
                share: per_unit(a.facility_kwh, totals.facility_kwh),
            })
            .collect()
    };
    let geography = Geography {
        sites: geo_sites,
        energy_share_by_country: shares(&by_country),
        energy_share_by_zone: shares(&by_zone),
    };

    // Usage by country, with small-count suppression.
    let mut rows = Vec::new();
    let mut other = UsageCountryRow {
        country: "other".to_owned(),
        model: "other".to_owned(),
        requests: 0,
        input_tokens: 0,
        output_tokens: 0,
    };
    let mut suppressed_rows = 0;
    for ((country, model), a) in &usage_cm {
        if a.requests < opts.min_count {
            suppressed_rows += 1;
            other.requests += a.requests;
            other.input_tokens += a.input_tokens;
            other.output_tokens += a.output_tokens;
        } else {
            rows.push(UsageCountryRow {
                country: country.clone(),
                model: model.clone(),
                requests: a.requests,
                input_tokens: a.input_tokens,
                output_tokens: a.output_tokens,
            });
        }
    }
    if suppressed_rows > 0 {
        rows.push(other);
    }

    // Data quality.
    let mut gpus: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    for r in input.energy.iter().filter(|r| !r.gpu_uuid.is_empty()) {
        gpus.insert((&r.site, &r.host, &r.gpu_uuid));
    }
    for g in &input.gaps {
        gpus.insert((&g.site, &g.host, &g.gpu_uuid));
    }
    let measured_s: f64 = input
        .sources
        .iter()
        .filter(|s| s.source != "gap")
        .map(|s| s.seconds)
        .sum();
    let period_s = (input.period.to_ns - input.period.from_ns) as f64 / 1e9;
    let coverage = per_unit(measured_s, period_s * gpus.len() as f64);
    let source_total: f64 = input.sources.iter().map(|s| s.energy_j).sum();
    let source_share = |name: &str| {
        per_unit(
            input
                .sources
                .iter()
                .filter(|s| s.source == name)
                .map(|s| s.energy_j)
                .sum(),
            source_total,
        )
    };
    for s in &input.sources {
        if !matches!(s.source.as_str(), "counter" | "integrated" | "gap") {
            let w = format!(
                "site '{}': unknown measurement path '{}' is not in energy_share_by_source",
                s.site, s.source
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    let model_gpu_j: f64 = input.energy.iter().map(|r| r.active_j + r.idle_j).sum();
    let mut energy_share_by_split_method: BTreeMap<String, f64> = BTreeMap::new();
    if model_gpu_j > 0.0 {
        let mut recorded = 0.0;
        for s in &input.splits {
            *energy_share_by_split_method
                .entry(s.method.clone())
                .or_default() += s.energy_j / model_gpu_j;
            recorded += s.energy_j;
        }
        let rest = (model_gpu_j - recorded) / model_gpu_j;
        if rest > 1e-9 {
            energy_share_by_split_method.insert("unrecorded".to_string(), rest);
        }
    }
    let data_quality = DataQuality {
        coverage,
        energy_share_by_split_method,
        energy_share_by_source: SourceShares {
            counter: source_share("counter"),
            integrated: source_share("integrated"),
            gap: source_share("gap"),
        },
        gaps: input
            .gaps
            .iter()
            .map(|g| GapOut {
                site: g.site.clone(),
                host: g.host.clone(),
                gpu_uuid: g.gpu_uuid.clone(),
                from: rfc3339(g.from_ns),
                to: rfc3339(g.to_ns),
                energy_kwh: j_to_kwh(g.energy_j),
            })
            .collect(),
        folded_points: input.folded_points,
        gpus_seen: gpus.len() as u64,
        warnings,
    };

    let mut hw: BTreeMap<(&str, &str, &str), GpuSet> = BTreeMap::new();
    for r in input.energy.iter().filter(|r| !r.gpu_uuid.is_empty()) {
        hw.entry((&r.model, &r.site, &r.gpu_name))
            .or_default()
            .insert((&r.host, &r.gpu_uuid));
    }
    let hardware = hw
        .into_iter()
        .map(|((model, site, gpu_name), set)| HardwareRow {
            model: model.to_owned(),
            site: site.to_owned(),
            gpu_name: gpu_name.to_owned(),
            gpus: set.len() as u64,
        })
        .collect();

    // Kubernetes tables: when asked for, or by default when anything ran in a pod.
    let in_pods = by_tenancy.keys().any(|t| !t.is_empty());
    let kube = |g: GroupBy| opts.group.contains(&g) || (opts.group.is_empty() && in_pods);
    let generated_at_ns = opts.generated_at_ns.unwrap_or_else(crate::now_ns);
    Report {
        schema: REPORT_SCHEMA.to_owned(),
        period: PeriodOut {
            from: rfc3339(input.period.from_ns),
            to: rfc3339(input.period.to_ns),
        },
        generated_at: rfc3339(generated_at_ns),
        methodology: Methodology {
            version: factors.methodology_version.clone(),
            idle_policy: idle_policy_summary(input, &factors.idle_policy),
            idle_policies: input.idle_policies.clone(),
            factors: factors.factors.clone(),
        },
        totals: totals.indicators(),
        by_model: if wants(GroupBy::Model) {
            by_model
                .iter()
                .map(|(m, a)| ModelIndicators {
                    model: m.clone(),
                    indicators: a.indicators(),
                })
                .collect()
        } else {
            Vec::new()
        },
        by_site: if wants(GroupBy::Site) {
            sites_out
        } else {
            Vec::new()
        },
        by_country: if wants(GroupBy::Country) {
            by_country
                .iter()
                .map(|(c, a)| CountryIndicators {
                    country: c.clone(),
                    indicators: a.indicators(),
                })
                .collect()
        } else {
            Vec::new()
        },
        by_namespace: if kube(GroupBy::Namespace) {
            let mut ns: BTreeMap<&str, Acc> = BTreeMap::new();
            for (t, a) in &by_tenancy {
                ns.entry(&t.namespace).or_default().add(a);
            }
            ns.into_iter()
                .map(|(n, a)| NamespaceIndicators {
                    namespace: n.to_owned(),
                    indicators: a.indicators(),
                })
                .collect()
        } else {
            Vec::new()
        },
        by_workload: if kube(GroupBy::Workload) {
            by_tenancy
                .iter()
                .map(|(t, a)| WorkloadIndicators {
                    namespace: t.namespace.clone(),
                    workload_kind: t.workload_kind.clone(),
                    workload: t.workload.clone(),
                    indicators: a.indicators(),
                })
                .collect()
        } else {
            Vec::new()
        },
        geography,
        usage_by_country: UsageByCountry {
            min_count: opts.min_count,
            suppressed_rows,
            rows,
        },
        hardware,
        data_quality,
        input_digest: input.input_digest.clone(),
        period_seconds: period_s,
    }
}

/// The report's one-word idle policy: the hosts' common policy, `mixed` when they differ,
/// `fallback` (the factors file's) when no host is known.
fn idle_policy_summary(input: &ReportInput, fallback: &str) -> String {
    let set: BTreeSet<&str> = input
        .idle_policies
        .iter()
        .map(|p| p.policy.as_str())
        .collect();
    match set.len() {
        0 => fallback.to_owned(),
        1 => set.into_iter().next().unwrap_or(fallback).to_owned(),
        _ => "mixed".to_owned(),
    }
}

/// RFC 3339 UTC time of `ns` (`inferwatt_core::time::rfc3339`).
pub use inferwatt_core::time::rfc3339;
