//! Time series of a period for the web page's charts (`GET /api/v1/series`): facility
//! energy, location-based emissions and water per bucket, per model or per site.
//!
//! No arithmetic of its own: the period's hourly rows come from
//! [`reporting::report_input`], the factors are resolved once for the whole period exactly
//! as a report resolves them, and each bucket is [`indicators::compute_with`] over that
//! bucket's energy rows — so a series summed over its buckets equals the report's figure
//! for the same period, model or site. Buckets are whole multiples of an hour (rows are
//! hourly), aligned to the Unix epoch; a bucket holds the rows whose hour starts in it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::indicators::{self, ComputeOptions, GroupBy, Indicators, ReportInput};
use crate::reporting::{self, FactorsChoice, ReportRequest, ReportingError};
use crate::store::{ReportStore, DAY_NS, HOUR_NS};

/// The series schema identifier.
pub const SERIES_SCHEMA: &str = "inferwatt.series/v1";
/// Most buckets one answer may hold.
pub const MAX_BUCKETS: i64 = 5_000;
/// Widest bucket, seconds (ten years of 366 days): bucket arithmetic stays far from
/// overflow.
pub const MAX_STEP_S: i64 = 3_660 * 86_400;
/// Default bucket width, seconds.
pub const DEFAULT_STEP_S: i64 = 3_600;

/// Why a series cannot be produced. Each message names the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error(transparent)]
    Reporting(#[from] ReportingError),
    #[error("step '{0}' is not a whole number of minutes up to ten years; give step=60, 300, 3600, 86400, ...")]
    BadStep(String),
    #[error("group '{0}' is not known for a series; use group=model or group=site")]
    BadGroup(String),
    #[error("step {step_s} s over this period makes {buckets} buckets, more than {max}; give a larger step or a shorter period")]
    TooManyBuckets { step_s: i64, buckets: i64, max: i64 },
}

/// What a series is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesGroup {
    Model,
    Site,
}

impl SeriesGroup {
    /// Parses `group=` (`model` default when empty).
    pub fn parse(value: &str) -> Result<SeriesGroup, SeriesError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "model" => Ok(SeriesGroup::Model),
            "site" => Ok(SeriesGroup::Site),
            _ => Err(SeriesError::BadGroup(value.to_owned())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SeriesGroup::Model => "model",
            SeriesGroup::Site => "site",
        }
    }
}

/// Parses `step=` in seconds (default [`DEFAULT_STEP_S`] when empty).
pub fn parse_step(value: &str) -> Result<i64, SeriesError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(DEFAULT_STEP_S);
    }
    match v.parse::<i64>() {
        Ok(s) if (60..=MAX_STEP_S).contains(&s) && s % 60 == 0 => Ok(s),
        _ => Err(SeriesError::BadStep(value.to_owned())),
    }
}

/// A series request: bounds as the report takes them (`None`: the stored data's edges),
/// bucket width and split.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRequest {
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    pub step_s: i64,
    pub group: SeriesGroup,
}

/// `inferwatt.series/v1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub schema: &'static str,
    pub period: indicators::PeriodOut,
    pub step_s: i64,
    pub group: &'static str,
    /// Start of each bucket, Unix seconds.
    pub bucket_starts: Vec<i64>,
    /// One line per model or site with energy in the period, most energy first.
    pub series: Vec<SeriesLine>,
}

/// One model's or site's values per bucket (same length as `bucket_starts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesLine {
    pub key: String,
    /// Facility energy (IT × PUE), kWh.
    pub energy_kwh: Vec<f64>,
    /// Location-based emissions, kgCO2e.
    pub emissions_kgco2e: Vec<f64>,
    /// Water consumption, on-site + off-site, litres.
    pub water_l: Vec<f64>,
}

/// Computes the series of `input` with `factors` (resolved over the same input); the
/// input's rows move into their buckets.
pub fn compute_series(
    mut input: ReportInput,
    factors: &crate::factors::ResolvedFactors,
    step_s: i64,
    group: SeriesGroup,
) -> Result<Series, SeriesError> {
    let step_ns = step_s.saturating_mul(1_000_000_000);
    let start = input.period.from_ns.div_euclid(step_ns) * step_ns;
    let span = input.period.to_ns.saturating_sub(start).max(1);
    let buckets = (span + step_ns - 1) / step_ns;
    if buckets > MAX_BUCKETS {
        return Err(SeriesError::TooManyBuckets {
            step_s,
            buckets,
            max: MAX_BUCKETS,
        });
    }
    let n = usize::try_from(buckets).unwrap_or(0);

    let mut rows: Vec<Vec<indicators::EnergyRow>> = vec![Vec::new(); n];
    for r in std::mem::take(&mut input.energy) {
        let i = (r.hour_start_ns - start).div_euclid(step_ns);
        if let Some(b) = usize::try_from(i).ok().and_then(|i| rows.get_mut(i)) {
            b.push(r);
        }
    }
    let opts = ComputeOptions {
        group: vec![match group {
            SeriesGroup::Model => GroupBy::Model,
            SeriesGroup::Site => GroupBy::Site,
        }],
        min_count: 0,
        generated_at_ns: Some(0),
    };
    let mut lines: BTreeMap<String, SeriesLine> = BTreeMap::new();
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for (i, energy) in rows.into_iter().enumerate() {
        if energy.is_empty() {
            continue;
        }
        let sub = ReportInput {
            period: input.period,
            energy,
            usage: Vec::new(),
            sources: Vec::new(),
            splits: Vec::new(),
            sites: input.sites.clone(),
            gaps: Vec::new(),
            folded_points: 0,
            idle_policies: input.idle_policies.clone(),
            grain_ns: input.grain_ns,
            notes: Vec::new(),
            input_digest: String::new(),
        };
        let report = indicators::compute_with(&sub, factors, &opts);
        let values: Vec<(String, Indicators)> = match group {
            SeriesGroup::Model => report
                .by_model
                .into_iter()
                .map(|m| (m.model, m.indicators))
                .collect(),
            SeriesGroup::Site => report
                .by_site
                .into_iter()
                .map(|s| (s.site, s.indicators))
                .collect(),
        };
        for (key, ind) in values {
            let line = lines.entry(key.clone()).or_insert_with(|| SeriesLine {
                key: key.clone(),
                energy_kwh: vec![0.0; n],
                emissions_kgco2e: vec![0.0; n],
                water_l: vec![0.0; n],
            });
            line.energy_kwh[i] = ind.energy_kwh.facility;
            line.emissions_kgco2e[i] = ind.emissions_kgco2e.location;
            line.water_l[i] = ind.water_l.onsite + ind.water_l.offsite;
            *totals.entry(key).or_default() += ind.energy_kwh.facility;
        }
    }
    let mut series: Vec<SeriesLine> = lines
        .into_values()
        .filter(|l| totals.get(&l.key).copied().unwrap_or(0.0) > 0.0)
        .collect();
    series.sort_by(|a, b| {
        let (ta, tb) = (totals[&a.key], totals[&b.key]);
        tb.total_cmp(&ta).then_with(|| a.key.cmp(&b.key))
    });
    Ok(Series {
        schema: SERIES_SCHEMA,
        period: indicators::PeriodOut {
            from: indicators::rfc3339(input.period.from_ns),
            to: indicators::rfc3339(input.period.to_ns),
        },
        step_s,
        group: group.name(),
        bucket_starts: (0..buckets)
            .map(|i| (start + i * step_ns).div_euclid(1_000_000_000))
            .collect(),
        series,
    })
}

/// The bucket width rows are read in for a step: days when they divide it and no factor
/// changes within a day, hours when they divide it, else minutes (raw rows only, so
/// minute steps show the raw retention's recent data).
pub fn grain_for(step_s: i64, report_grain_ns: i64) -> i64 {
    let step_ns = step_s.saturating_mul(1_000_000_000);
    if step_ns % DAY_NS == 0 && report_grain_ns != HOUR_NS {
        DAY_NS
    } else if step_ns % HOUR_NS == 0 {
        HOUR_NS
    } else {
        60_000_000_000
    }
}

/// Reads the period from the store, resolves `factors` and computes the series.
pub fn build_series(
    store: &dyn ReportStore,
    req: &SeriesRequest,
    factors: &FactorsChoice,
) -> Result<Series, SeriesError> {
    let period = reporting::resolve_period(
        store,
        &ReportRequest {
            from_ns: req.from_ns,
            to_ns: req.to_ns,
            ..ReportRequest::default()
        },
    )?;
    let input = reporting::report_input(
        store,
        period,
        grain_for(req.step_s, reporting::report_grain(factors)),
        &factors.file.idle_policy,
    )?;
    let resolved = factors
        .file
        .resolve(&input, &factors.name, &factors.base_dir)
        .map_err(ReportingError::from)?;
    compute_series(input, &resolved, req.step_s, req.group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_whole_minutes() {
        assert_eq!(parse_step("").expect("default"), 3_600);
        assert_eq!(parse_step("86400").expect("day"), 86_400);
        assert_eq!(parse_step("60").expect("minute"), 60);
        for bad in ["30", "90", "-3600", "0", "hour", "9223372036854774000"] {
            let e = parse_step(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn groups_parse_and_unknown_is_named() {
        assert_eq!(SeriesGroup::parse("").expect("default"), SeriesGroup::Model);
        assert_eq!(SeriesGroup::parse("Site").expect("site"), SeriesGroup::Site);
        let e = SeriesGroup::parse("country").expect_err("bad").to_string();
        assert!(e.contains("'country'") && e.contains("group=site"), "{e}");
    }
}
