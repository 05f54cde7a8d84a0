//! Factor resolution: for the sites a report covers, the values of a [`FactorsFile`] (or
//! its defaults), what the agents reported, or cited references, into
//! [`ResolvedFactors`] — every value with its unit, source and year, as the report's
//! `methodology.factors` lists them.
//!
//! Resolution order per value: the site's table in the file, then the file's `[defaults]`,
//! then what the agent reported for the site ([`SiteRow`]), then a cited reference
//! (`inferwatt_core::factors`). Grid intensity: `intensity_g_per_kwh`, else the built-in
//! table of the data's year by zone, then by country; neither known → an error naming the
//! site. PUE and WUE are a per-site constant or a time series: `pue_wue_csv` (see
//! [`PueWueSeries`]) applies per hour, and hours before its first row use the constant
//! resolved as above.
//! No formula lives here: arithmetic is in `inferwatt_core::footprint`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use inferwatt_core::factors::{
    self, embodied_default, ewif_reference, grid_intensity, normalize_country, parse_hourly_csv,
    pue_reference, wue_reference, year_of, zone_country, HourlyIntensity,
};
use inferwatt_core::footprint::{self, MarketInputs};
use inferwatt_core::units::j_to_kwh;
use serde::{Deserialize, Serialize};

use crate::factors_file::{
    FactorsFile, FactorsFileError, PueWueSeries, SiteFactors, DEFAULT_LIFETIME_YEARS,
};
use crate::input::{ReportInput, SiteRow};

/// A factor as the report prints it: `{"site","name","value","unit","source","year"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFactor {
    pub site: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub source: String,
    pub year: Option<i32>,
}

impl ReportFactor {
    fn from_core(site: &str, f: factors::Factor) -> Self {
        ReportFactor {
            site: site.to_owned(),
            name: f.name,
            value: f.value,
            unit: f.unit,
            source: f.source,
            year: f.year,
        }
    }

    fn with_year(mut self, year: Option<i32>) -> Self {
        self.year = year;
        self
    }

    fn new(site: &str, name: &str, value: f64, unit: &str, source: String) -> Self {
        ReportFactor {
            site: site.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            source,
            year: None,
        }
    }
}

/// Every factor of one site, checked and ready for `indicators::compute`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSite {
    pub site: String,
    pub country: String,
    pub zone: String,
    /// Constant PUE; with `pue_wue`, only for hours before the series' first row.
    pub pue: f64,
    /// Constant on-site WUE, L/kWh; with `pue_wue`, as `pue`.
    pub wue_l_per_kwh: f64,
    pub ewif_l_per_kwh: f64,
    /// PUE/WUE series from `pue_wue_csv`; see [`ResolvedSite::pue_wue_at`].
    pub pue_wue: Option<PueWueSeries>,
    /// Yearly (or overridden) location-based intensity, gCO2e/kWh: the newest data
    /// year's; see `grid_by_year`.
    pub grid_g_per_kwh: f64,
    /// Location-based intensity per calendar year of the data (the built-in table of that
    /// year, or the newest earlier one); empty when overridden by the file.
    pub grid_by_year: BTreeMap<i32, f64>,
    /// Hourly series; an hour it lacks falls back to `grid_g_per_kwh`.
    pub hourly: Option<HourlyIntensity>,
    /// Market-based inputs (`grid_average_g_per_kwh` = `grid_g_per_kwh`).
    pub market: MarketInputs,
    /// Embodied kgCO2e per GPU by GPU name (names seen in the input); a GPU with no
    /// figure is absent (counted as 0 and listed in `warnings`).
    pub gpu_embodied_kg: BTreeMap<String, f64>,
    pub server_embodied_kg_per_gpu: f64,
    pub lifetime_years: f64,
}

impl ResolvedSite {
    /// The yearly intensity for data at `ns`: its year's, else the override/newest.
    fn yearly_at(&self, ns: i64) -> f64 {
        self.grid_by_year
            .get(&year_of(ns.div_euclid(1_000_000_000)))
            .copied()
            .unwrap_or(self.grid_g_per_kwh)
    }

    /// Location-based intensity at `hour_start_ns`: the hourly series, else the yearly value.
    pub fn intensity_at(&self, hour_start_ns: i64) -> f64 {
        self.intensity_over(hour_start_ns, 0)
    }

    /// Location-based intensity over the bucket `[start_ns, start_ns + width_ns)`: the
    /// hourly (or finer) series' time-weighted mean, seconds it lacks at the yearly value;
    /// without a series, the yearly value of the bucket's year. Width 0: the instant.
    pub fn intensity_over(&self, start_ns: i64, width_ns: i64) -> f64 {
        let yearly = self.yearly_at(start_ns);
        let from_s = start_ns.div_euclid(1_000_000_000);
        let to_s = start_ns.saturating_add(width_ns).div_euclid(1_000_000_000);
        self.hourly
            .as_ref()
            .and_then(|h| h.mean(&self.zone, from_s, to_s, yearly))
            .unwrap_or(yearly)
    }

    /// (PUE, WUE L/kWh) at `hour_start_ns`: the series' row in force, else the constants.
    pub fn pue_wue_at(&self, hour_start_ns: i64) -> (f64, f64) {
        let unix_s = hour_start_ns.div_euclid(1_000_000_000);
        self.pue_wue
            .as_ref()
            .and_then(|s| s.at(unix_s))
            .unwrap_or((self.pue, self.wue_l_per_kwh))
    }
}

/// Factors resolved for the sites of one report.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFactors {
    pub methodology_version: String,
    pub idle_policy: String,
    pub sites: BTreeMap<String, ResolvedSite>,
    /// Every resolved factor, as `methodology.factors` prints it.
    pub factors: Vec<ReportFactor>,
    /// Fallbacks the report must flag (market residual from grid average, unknown GPU).
    pub warnings: Vec<String>,
}

impl FactorsFile {
    /// Resolves the factors of every site in `input` (its `sites` and any site its energy
    /// rows name). `file` names the file in errors; `base_dir` is where relative
    /// `hourly_intensity_csv` paths start.
    pub fn resolve(
        &self,
        input: &ReportInput,
        file: &str,
        base_dir: &Path,
    ) -> Result<ResolvedFactors, FactorsFileError> {
        let mut site_rows: BTreeMap<&str, &SiteRow> = BTreeMap::new();
        for s in &input.sites {
            site_rows.insert(&s.site, s);
        }
        let mut names: BTreeSet<&str> = site_rows.keys().copied().collect();
        let mut gpus: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut it_kwh: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
        for r in &input.energy {
            names.insert(&r.site);
            if !r.gpu_uuid.is_empty() {
                gpus.entry(&r.site).or_default().insert(&r.gpu_name);
            }
            let kwh = footprint::it_energy_kwh(
                j_to_kwh(r.active_j),
                j_to_kwh(r.idle_j),
                j_to_kwh(r.host_j),
            );
            it_kwh
                .entry(&r.site)
                .or_default()
                .push((r.hour_start_ns, kwh));
        }
        for u in &input.usage {
            names.insert(&u.site);
        }
        let mut out = ResolvedFactors {
            methodology_version: self.methodology_version.clone(),
            idle_policy: self.idle_policy.clone(),
            sites: BTreeMap::new(),
            factors: Vec::new(),
            warnings: Vec::new(),
        };
        let empty = BTreeSet::new();
        let no_energy = Vec::new();
        for name in names {
            let ctx = Ctx {
                file,
                site: name,
                own: self.sites.get(name),
                defaults: &self.defaults,
            };
            let site = ctx.resolve(
                site_rows.get(name).copied(),
                gpus.get(name).unwrap_or(&empty),
                SiteEnergy {
                    it_kwh: it_kwh.get(name).unwrap_or(&no_energy),
                    from_ns: input.period.from_ns,
                },
                base_dir,
                &mut out,
            )?;
            out.sites.insert(name.to_owned(), site);
        }
        Ok(out)
    }
}

/// A site's IT energy rows (hour start ns, kWh) and the period start, to weight the
/// PUE/WUE series' mean printed in `methodology.factors`.
struct SiteEnergy<'a> {
    it_kwh: &'a [(i64, f64)],
    from_ns: i64,
}

struct Ctx<'a> {
    file: &'a str,
    site: &'a str,
    own: Option<&'a SiteFactors>,
    defaults: &'a SiteFactors,
}

impl<'a> Ctx<'a> {
    /// The site's value, else the default's, with the key it came from.
    fn pick<T: Clone>(&self, get: impl Fn(&SiteFactors) -> Option<T>) -> Option<(T, String)> {
        self.own
            .and_then(&get)
            .map(|v| (v, format!("sites.{}", self.site)))
            .or_else(|| get(self.defaults).map(|v| (v, "defaults".to_owned())))
    }

    /// A factor nobody configured: the cited `reference` as the report's factor `name`,
    /// its source marked as a default, and a warning naming the value used and `fix`.
    /// `what` is (label, name, words before the value, unit after it).
    fn cited_default(
        &self,
        site: &str,
        (label, name, before, unit): (&str, &str, &str, &str),
        reference: Option<factors::Factor>,
        fix: String,
        warnings: &mut Vec<String>,
    ) -> Result<ReportFactor, FactorsFileError> {
        let f = reference.ok_or_else(|| {
            self.invalid(
                fix.clone(),
                format!("no {label} set and the built-in reference is missing; set {fix}"),
            )
        })?;
        let mut rf = ReportFactor::from_core(site, f);
        out_warning(
            warnings,
            format!(
                "site '{site}': {label} not configured, {before}{}{unit} ({}) used; set {fix}",
                rf.value, rf.source
            ),
        );
        rf.source = format!("default (no {label} configured): {}", rf.source);
        rf.name = name.to_owned();
        Ok(rf)
    }

    fn invalid(&self, key: String, reason: String) -> FactorsFileError {
        FactorsFileError::Invalid {
            file: self.file.to_owned(),
            key,
            reason,
        }
    }

    fn check(&self, r: Result<f64, footprint::FootprintError>) -> Result<f64, FactorsFileError> {
        r.map_err(|e| {
            let key = match &e {
                footprint::FootprintError::PueBelowOne { key, .. }
                | footprint::FootprintError::Negative { key, .. }
                | footprint::FootprintError::ShareOutOfRange { key, .. }
                | footprint::FootprintError::LifetimeNotPositive { key, .. } => key.clone(),
                _ => format!("sites.{}", self.site),
            };
            self.invalid(key, e.to_string())
        })
    }

    fn resolve(
        &self,
        row: Option<&SiteRow>,
        gpu_names: &BTreeSet<&str>,
        energy: SiteEnergy<'_>,
        base_dir: &Path,
        out: &mut ResolvedFactors,
    ) -> Result<ResolvedSite, FactorsFileError> {
        let site = self.site;
        // A PUE/WUE series is read first: with one, the constants below are only the
        // fallback before its first row, and are named so.
        let pue_wue = self.pue_wue_series(base_dir)?;
        let (pue_name, wue_name) = if pue_wue.is_some() {
            ("pue_fallback", "wue_fallback")
        } else {
            ("pue", "wue")
        };
        let mut push = |f: ReportFactor| out.factors.push(f);

        // Geography.
        let zone = self
            .pick(|s| s.zone.clone())
            .map(|(z, _)| z)
            .or_else(|| row.map(|r| r.zone.clone()))
            .unwrap_or_default();
        let country = self
            .pick(|s| s.country.clone())
            .map(|(c, _)| c)
            .or_else(|| row.map(|r| r.country.clone()).filter(|c| !c.is_empty()))
            .or_else(|| zone_country(&zone))
            .map(|c| normalize_country(&c))
            .unwrap_or_default();

        // PUE.
        let pue = if let Some((v, key)) = self.pick(|s| s.pue) {
            let key = format!("{key}.pue");
            let v = self.check(footprint::check_pue(&key, v))?;
            push(
                ReportFactor::new(
                    site,
                    pue_name,
                    v,
                    "ratio",
                    format!("factors file '{}' ({key})", self.file),
                )
                .with_year(self.pick(|s| s.pue_year).map(|(y, _)| y)),
            );
            v
        } else if let Some((name, key)) = self.pick(|s| s.pue_reference.clone()) {
            let f = pue_reference(&name).ok_or_else(|| {
                self.invalid(
                    format!("{key}.pue_reference"),
                    format!(
                        "'{name}' is not a known PUE reference; use one of: {}",
                        factors::pue_reference_names()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            let v = f.value;
            let mut rf = ReportFactor::from_core(site, f);
            rf.name = pue_name.to_owned();
            push(rf);
            v
        } else if let Some(v) = row.map(|r| r.pue).filter(|p| p.is_finite() && *p >= 1.0) {
            push(ReportFactor::new(
                site,
                pue_name,
                v,
                "ratio",
                "site configuration reported by the agent".to_owned(),
            ));
            v
        } else {
            let rf = self.cited_default(
                site,
                ("PUE", pue_name, "industry average ", ""),
                pue_reference("uptime-2024"),
                format!("'sites.{site}.pue' in the factors file or [site] pue in the agent"),
                &mut out.warnings,
            )?;
            let v = rf.value;
            push(rf);
            v
        };

        // On-site water.
        let wue = if let Some((v, key)) = self.pick(|s| s.wue_l_per_kwh) {
            let key = format!("{key}.wue_l_per_kwh");
            let v = self.check(footprint::check_non_negative(&key, v))?;
            push(
                ReportFactor::new(
                    site,
                    wue_name,
                    v,
                    "L/kWh",
                    format!("factors file '{}' ({key})", self.file),
                )
                .with_year(self.pick(|s| s.wue_year).map(|(y, _)| y)),
            );
            v
        } else if let Some(v) = row
            .map(|r| r.wue_l_per_kwh)
            .filter(|w| w.is_finite() && *w >= 0.0)
        {
            push(ReportFactor::new(
                site,
                wue_name,
                v,
                "L/kWh",
                "site configuration reported by the agent".to_owned(),
            ));
            v
        } else {
            // Unset is not zero: the cited reference, with a warning.
            let rf = self.cited_default(
                site,
                ("WUE", wue_name, "", " L/kWh"),
                wue_reference("us-average-li"),
                format!("'sites.{site}.wue_l_per_kwh' in the factors file or [site] wue_l_per_kwh in the agent"),
                &mut out.warnings,
            )?;
            let v = rf.value;
            push(rf);
            v
        };

        // PUE/WUE series: its energy-weighted means over the period (IT energy for both,
        // so mean × IT energy gives the report's facility energy and on-site water).
        if let Some((series, csv)) = &pue_wue {
            let at = |ns: i64| {
                series
                    .at(ns.div_euclid(1_000_000_000))
                    .unwrap_or((pue, wue))
            };
            let total: f64 = energy.it_kwh.iter().map(|(_, e)| e).sum();
            let (mean_pue, mean_wue) = if total > 0.0 {
                let (p, w) = energy.it_kwh.iter().fold((0.0, 0.0), |(p, w), (h, e)| {
                    let (hp, hw) = at(*h);
                    (p + e * hp, w + e * hw)
                });
                (p / total, w / total)
            } else {
                at(energy.from_ns)
            };
            let source = |fallback: &str| {
                format!(
                    "time series '{csv}' ({} rows); energy-weighted mean over the period, hours before its first row at {fallback}",
                    series.len()
                )
            };
            push(ReportFactor::new(
                site,
                "pue",
                mean_pue,
                "ratio",
                source("pue_fallback"),
            ));
            push(ReportFactor::new(
                site,
                "wue",
                mean_wue,
                "L/kWh",
                source("wue_fallback"),
            ));
        }

        // Off-site water.
        let ewif = if let Some((v, key)) = self.pick(|s| s.ewif_l_per_kwh) {
            let key = format!("{key}.ewif_l_per_kwh");
            let v = self.check(footprint::check_non_negative(&key, v))?;
            push(
                ReportFactor::new(
                    site,
                    "ewif",
                    v,
                    "L/kWh",
                    format!("factors file '{}' ({key})", self.file),
                )
                .with_year(self.pick(|s| s.ewif_year).map(|(y, _)| y)),
            );
            v
        } else if let Some((mix, key)) = self.pick(|s| s.fuel_mix) {
            let v = footprint::ewif_from_mix(&mix.into())
                .map_err(|e| self.invalid(format!("{key}.fuel_mix"), e.to_string()))?;
            push(ReportFactor::new(
                site,
                "ewif",
                v,
                "L/kWh",
                format!(
                    "derived from fuel mix in factors file '{}' ({key}.fuel_mix), per-fuel gal/MWh of Li et al. (arXiv 2304.03271)",
                    self.file
                ),
            ));
            v
        } else {
            let rf = self.cited_default(
                site,
                ("EWIF", "ewif", "", " L/kWh"),
                ewif_reference("us-average-li"),
                format!("'sites.{site}.ewif_l_per_kwh' or 'fuel_mix' in the factors file"),
                &mut out.warnings,
            )?;
            let v = rf.value;
            push(rf);
            v
        };

        // Grid intensity: the file's override, else the built-in table of each year the
        // site has data in (or the year the file names), newest earlier year when the table
        // lacks it.
        let mut grid_by_year = BTreeMap::new();
        let grid = if let Some((v, key)) = self.pick(|s| s.intensity_g_per_kwh) {
            let key = format!("{key}.intensity_g_per_kwh");
            let v = self.check(footprint::check_non_negative(&key, v))?;
            let source = self
                .pick(|s| s.intensity_source.clone())
                .map(|(s, _)| s)
                .unwrap_or_else(|| format!("factors file '{}' ({key})", self.file));
            push(
                ReportFactor::new(site, "grid_intensity", v, "gCO2e/kWh", source)
                    .with_year(self.pick(|s| s.intensity_year).map(|(y, _)| y)),
            );
            v
        } else {
            let fixed = self.pick(|s| s.intensity_year).map(|(y, _)| y);
            let mut years: BTreeSet<i32> = energy
                .it_kwh
                .iter()
                .map(|(ns, _)| year_of(ns.div_euclid(1_000_000_000)))
                .collect();
            if years.is_empty() {
                years.insert(year_of(energy.from_ns.div_euclid(1_000_000_000)));
            }
            let lookup = |year: i32| {
                (!zone.is_empty())
                    .then(|| grid_intensity(&zone, Some(year)))
                    .flatten()
                    .or_else(|| {
                        (!country.is_empty())
                            .then(|| grid_intensity(&country, Some(year)))
                            .flatten()
                    })
                    // A year before the table's first: its oldest year, stated below.
                    .or_else(|| {
                        (!zone.is_empty())
                            .then(|| grid_intensity(&zone, None))
                            .flatten()
                            .or_else(|| {
                                (!country.is_empty())
                                    .then(|| grid_intensity(&country, None))
                                    .flatten()
                            })
                            .filter(|g| g.year > year)
                    })
            };
            let mut last = None;
            for data_year in years {
                let want = fixed.unwrap_or(data_year);
                let Some(g) = lookup(want) else {
                    // A zone or country the file set is the file's mistake: an error. One
                    // the agent reported (or left empty) is not: the site's emissions are
                    // unknown (null), the rest of the report stands, and it says so.
                    if self.pick(|s| s.zone.clone()).is_some()
                        || self.pick(|s| s.country.clone()).is_some()
                    {
                        return Err(FactorsFileError::UnknownZone {
                            file: self.file.to_owned(),
                            site: site.to_owned(),
                            zone: zone.clone(),
                            country: country.clone(),
                        });
                    }
                    push(ReportFactor::new(
                        site,
                        "grid_intensity",
                        f64::NAN,
                        "gCO2e/kWh",
                        format!("unknown: grid zone '{zone}' and country '{country}' are not in the built-in tables; set 'sites.{site}.intensity_g_per_kwh', 'zone' or 'country'"),
                    ));
                    out_warning(
                        &mut out.warnings,
                        format!("site '{site}': grid zone '{zone}' and country '{country}' are not in the built-in intensity tables, so its emissions are unknown (null) and left out of every total; set 'sites.{site}.intensity_g_per_kwh', or a known 'zone' or 'country' in the factors file (or the agent's [site])"),
                    );
                    grid_by_year.insert(data_year, f64::NAN);
                    last = Some(f64::NAN);
                    continue;
                };
                let mut rf = ReportFactor::from_core(site, g.to_factor());
                rf.source = if g.year == data_year {
                    format!("{} (for data of {data_year})", rf.source)
                } else if fixed.is_some() {
                    format!(
                        "{} (for data of {data_year}: the file's intensity_year {want})",
                        rf.source
                    )
                } else {
                    format!(
                        "{} (for data of {data_year}: the table has no {data_year}, {} used)",
                        rf.source, g.year
                    )
                };
                push(rf);
                grid_by_year.insert(data_year, g.g_per_kwh);
                last = Some(g.g_per_kwh);
            }
            last.unwrap_or_default()
        };

        // Hourly intensity.
        let hourly = match self.pick(|s| s.hourly_intensity_csv.clone()) {
            None => None,
            Some((path, key)) => {
                let key = format!("{key}.hourly_intensity_csv");
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(&path)
                };
                let csv_err = |reason: String| FactorsFileError::HourlyCsv {
                    file: self.file.to_owned(),
                    key: key.clone(),
                    csv: full.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(&full).map_err(|e| csv_err(e.to_string()))?;
                let h = parse_hourly_csv(&text).map_err(|e| csv_err(e.to_string()))?;
                if h.range(&zone).is_none() {
                    return Err(csv_err(format!(
                        "it has no rows for zone '{zone}' (zones present: {}); export the series for zone '{zone}'",
                        h.zones().collect::<Vec<_>>().join(", ")
                    )));
                }
                push(ReportFactor::new(
                    site,
                    "grid_intensity_hourly_rows",
                    h.len() as f64,
                    "rows",
                    format!(
                        "hourly intensity CSV '{}' for zone '{zone}'; hours it lacks use grid_intensity",
                        full.display()
                    ),
                ));
                Some(h)
            }
        };

        // Market-based.
        let covered = self.pick(|s| s.covered_share);
        let instrument = self.pick(|s| s.instrument_g_per_kwh);
        let residual = self.pick(|s| s.residual_mix_g_per_kwh);
        let market = MarketInputs {
            covered_share: covered.as_ref().map(|(v, _)| *v).unwrap_or(0.0),
            instrument_g_per_kwh: instrument.as_ref().map(|(v, _)| *v).unwrap_or(0.0),
            residual_mix_g_per_kwh: residual.as_ref().map(|(v, _)| *v),
            grid_average_g_per_kwh: grid,
        };
        let market_key = covered
            .as_ref()
            .or(instrument.as_ref())
            .or(residual.as_ref())
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| format!("sites.{site}"));
        // An unknown grid (NaN) is not the market inputs' fault: validate without it.
        MarketInputs {
            grid_average_g_per_kwh: if grid.is_nan() { 0.0 } else { grid },
            ..market
        }
        .validate(&market_key)
        .map_err(|e| {
            let key = match &e {
                footprint::FootprintError::Negative { key, .. }
                | footprint::FootprintError::ShareOutOfRange { key, .. } => key.clone(),
                _ => market_key.clone(),
            };
            self.invalid(key, e.to_string())
        })?;
        let file_src = |k: &str| format!("factors file '{}' ({k})", self.file);
        push(ReportFactor::new(
            site,
            "market_covered_share",
            market.covered_share,
            "share",
            covered
                .as_ref()
                .map(|(_, k)| file_src(&format!("{k}.covered_share")))
                .unwrap_or_else(|| "not configured: no contractual instruments".to_owned()),
        ));
        if market.covered_share > 0.0 {
            push(ReportFactor::new(
                site,
                "market_instrument_intensity",
                market.instrument_g_per_kwh,
                "gCO2e/kWh",
                instrument
                    .as_ref()
                    .map(|(_, k)| file_src(&format!("{k}.instrument_g_per_kwh")))
                    .unwrap_or_else(|| "default 0 (renewable instruments)".to_owned()),
            ));
        }
        match &residual {
            Some((v, k)) => push(
                ReportFactor::new(
                    site,
                    "market_residual_mix",
                    *v,
                    "gCO2e/kWh",
                    file_src(&format!("{k}.residual_mix_g_per_kwh")),
                )
                .with_year(self.pick(|s| s.residual_mix_year).map(|(y, _)| y)),
            ),
            None if market.covered_share < 1.0 => {
                push(ReportFactor::new(
                    site,
                    "market_residual_mix",
                    grid,
                    "gCO2e/kWh",
                    "flag: no residual mix configured, grid average used".to_owned(),
                ));
                out_warning(
                    &mut out.warnings,
                    format!("site '{site}': market-based emissions use the grid average for the uncovered share; set 'sites.{site}.residual_mix_g_per_kwh'"),
                );
            }
            None => {}
        }

        // Embodied.
        let lifetime_years = match self.pick(|s| s.lifetime_years) {
            Some((v, key)) => {
                let key = format!("{key}.lifetime_years");
                self.check(footprint::check_lifetime_hours(
                    &key,
                    footprint::years_to_hours(v),
                ))?;
                out.factors.push(ReportFactor::new(
                    site,
                    "lifetime",
                    v,
                    "years",
                    file_src(&key),
                ));
                v
            }
            None => {
                out.factors.push(ReportFactor::new(
                    site,
                    "lifetime",
                    DEFAULT_LIFETIME_YEARS,
                    "years",
                    "default (METHODOLOGY §5)".to_owned(),
                ));
                DEFAULT_LIFETIME_YEARS
            }
        };
        let server_kg = match self.pick(|s| s.server_embodied_kg_per_gpu) {
            Some((v, key)) => {
                let key = format!("{key}.server_embodied_kg_per_gpu");
                let v = self.check(footprint::check_non_negative(&key, v))?;
                out.factors.push(ReportFactor::new(
                    site,
                    "server_embodied_per_gpu",
                    v,
                    "kgCO2e",
                    file_src(&key),
                ));
                v
            }
            None => 0.0,
        };
        let mut gpu_embodied_kg = BTreeMap::new();
        for gpu in gpu_names {
            let configured = self
                .own
                .and_then(|s| {
                    s.gpu_embodied_kg
                        .get(*gpu)
                        .map(|v| (*v, format!("sites.{site}")))
                })
                .or_else(|| {
                    self.defaults
                        .gpu_embodied_kg
                        .get(*gpu)
                        .map(|v| (*v, "defaults".to_owned()))
                });
            if let Some((v, key)) = configured {
                let key = format!("{key}.gpu_embodied_kg.\"{gpu}\"");
                let v = self.check(footprint::check_non_negative(&key, v))?;
                out.factors.push(ReportFactor::new(
                    site,
                    "embodied_per_gpu",
                    v,
                    "kgCO2e",
                    format!("{} for GPU '{gpu}'", file_src(&key)),
                ));
                gpu_embodied_kg.insert((*gpu).to_owned(), v);
            } else if let Some(d) = embodied_default(gpu) {
                let mut rf = ReportFactor::from_core(site, d.to_factor());
                rf.source = format!("{} (GPU '{gpu}')", rf.source);
                out.factors.push(rf);
                gpu_embodied_kg.insert((*gpu).to_owned(), d.kg_co2e);
            } else {
                out_warning(
                    &mut out.warnings,
                    format!("site '{site}': no embodied figure for GPU '{gpu}', counted as 0; set 'sites.{site}.gpu_embodied_kg.\"{gpu}\"'"),
                );
            }
        }

        Ok(ResolvedSite {
            site: site.to_owned(),
            country,
            zone,
            pue,
            wue_l_per_kwh: wue,
            ewif_l_per_kwh: ewif,
            pue_wue: pue_wue.map(|(series, _)| series),
            grid_g_per_kwh: grid,
            grid_by_year,
            hourly,
            market,
            gpu_embodied_kg,
            server_embodied_kg_per_gpu: server_kg,
            lifetime_years,
        })
    }
}

impl Ctx<'_> {
    /// The site's `pue_wue_csv`, read and parsed, with the path it was read from.
    fn pue_wue_series(
        &self,
        base_dir: &Path,
    ) -> Result<Option<(PueWueSeries, String)>, FactorsFileError> {
        let Some((path, key)) = self.pick(|s| s.pue_wue_csv.clone()) else {
            return Ok(None);
        };
        let key = format!("{key}.pue_wue_csv");
        let full = if path.is_absolute() {
            path
        } else {
            base_dir.join(path)
        };
        let csv = full.display().to_string();
        let text = std::fs::read_to_string(&full).map_err(|e| FactorsFileError::PueWueCsvRead {
            file: self.file.to_owned(),
            key: key.clone(),
            csv: csv.clone(),
            reason: e.to_string(),
        })?;
        let series = PueWueSeries::parse(&text).map_err(|f| FactorsFileError::PueWueCsv {
            file: self.file.to_owned(),
            key,
            csv: csv.clone(),
            fault: Box::new(f),
        })?;
        Ok(Some((series, csv)))
    }
}

fn out_warning(warnings: &mut Vec<String>, w: String) {
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}
