//! Hourly (or finer) grid carbon-intensity series imported from CSV, for location-based
//! emissions with time-varying intensity (METHODOLOGY §5). Parses text the caller read;
//! no I/O here.
//!
//! Accepted headers (case ignored, `₂` read as `2`):
//! - inferwatt's own: `datetime,zone,g_per_kwh`;
//! - Electricity Maps' hourly export: `Datetime (UTC)`, `Zone id` (or `Zone Id`), and the
//!   lifecycle column `Carbon intensity gCO₂eq/kWh (LCA)` (or `(Life cycle)`); other
//!   columns are ignored. The lifecycle figure is used, as in the built-in yearly tables.
//!
//! Times are ISO 8601: `2024-01-01T00:00:00Z`, `2024-01-01 00:00:00` (read as UTC),
//! `2024-01-01T01:00:00+01:00`; fractions of a second are dropped.

use std::collections::BTreeMap;

use super::FactorError;
use crate::csv::split_line as split_csv_line;
use crate::time::parse_iso8601_utc;

/// Intensity series by zone. Each value holds from its timestamp until the next step
/// (the zone's smallest spacing between timestamps; one hour for a single row).
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyIntensity {
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// (start unix seconds, gCO2e/kWh), sorted, unique starts.
    points: Vec<(i64, f64)>,
    step_s: i64,
}

const DEFAULT_STEP_S: i64 = 3600;

impl HourlyIntensity {
    /// The intensity (gCO2e/kWh) in `zone` at `unix_s`: the value of the step that
    /// contains it. `None` for an unknown zone, before the first row, after the last step,
    /// or in a gap of the series (the caller then falls back to the yearly table).
    pub fn at(&self, zone: &str, unix_s: i64) -> Option<f64> {
        let series = self.series.get(&normalize_zone(zone))?;
        let idx = series.points.partition_point(|(t, _)| *t <= unix_s);
        let (start, value) = *series.points.get(idx.checked_sub(1)?)?;
        (unix_s.saturating_sub(start) < series.step_s).then_some(value)
    }

    /// The time-weighted mean intensity in `zone` over `[from_s, to_s)`: each step counts
    /// for the seconds of it inside the span (15-minute rows weigh a quarter of an hour
    /// each); seconds the series does not cover count at `fallback`. `None` when the series
    /// covers none of the span (or the zone is unknown).
    pub fn mean(&self, zone: &str, from_s: i64, to_s: i64, fallback: f64) -> Option<f64> {
        let series = self.series.get(&normalize_zone(zone))?;
        if to_s <= from_s {
            return self.at(zone, from_s);
        }
        let first = series
            .points
            .partition_point(|(t, _)| *t <= from_s)
            .saturating_sub(1);
        let (mut covered, mut weighted) = (0i64, 0.0);
        for (start, value) in series.points.iter().skip(first) {
            if *start >= to_s {
                break;
            }
            let a = (*start).max(from_s);
            let b = start.saturating_add(series.step_s).min(to_s);
            if b > a {
                covered += b - a;
                weighted += value * (b - a) as f64;
            }
        }
        if covered == 0 {
            return None;
        }
        let span = to_s - from_s;
        Some((weighted + fallback * (span - covered) as f64) / span as f64)
    }

    /// The zones present, upper-cased, sorted.
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The spacing of a zone's series in seconds (3600 for hourly data).
    pub fn step_s(&self, zone: &str) -> Option<i64> {
        self.series.get(&normalize_zone(zone)).map(|s| s.step_s)
    }

    /// First and last timestamps (unix seconds) of a zone's series.
    pub fn range(&self, zone: &str) -> Option<(i64, i64)> {
        let s = self.series.get(&normalize_zone(zone))?;
        Some((s.points.first()?.0, s.points.last()?.0))
    }

    /// Rows held, all zones together.
    pub fn len(&self) -> usize {
        self.series.values().map(|s| s.points.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn normalize_zone(zone: &str) -> String {
    zone.trim().to_uppercase()
}

fn normalize_header(h: &str) -> String {
    h.trim()
        .trim_matches('"')
        .replace('₂', "2")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

const DATETIME_HEADERS: &[&str] = &["datetime", "datetime (utc)", "datetime_utc", "timestamp"];
const ZONE_HEADERS: &[&str] = &["zone", "zone id", "zone_id"];
const INTENSITY_HEADERS: &[&str] = &[
    "g_per_kwh",
    "carbon intensity gco2eq/kwh (lca)",
    "carbon intensity gco2eq/kwh (life cycle)",
];

fn find_column(
    headers: &[String],
    accepted: &[&str],
    wanted: &'static str,
    accepted_text: &'static str,
) -> Result<usize, FactorError> {
    headers
        .iter()
        .position(|h| accepted.contains(&normalize_header(h).as_str()))
        .ok_or_else(|| FactorError::HourlyCsvMissingColumn {
            wanted,
            accepted: accepted_text,
            found: headers
                .iter()
                .map(|h| format!("'{}'", h.trim()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses an hourly carbon-intensity CSV (see the module docs for accepted headers and
/// times). Errors name the line and column. Rows may come in any order; a zone and time
/// given twice with different values is an error.
pub fn parse_hourly_csv(text: &str) -> Result<HourlyIntensity, FactorError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (header_line, header) = lines.next().ok_or(FactorError::HourlyCsvEmpty)?;
    let headers = split_csv_line(header).map_err(|message| FactorError::HourlyCsvValue {
        line: header_line,
        column: "header".to_owned(),
        message,
    })?;
    let dt_col = find_column(
        &headers,
        DATETIME_HEADERS,
        "time",
        "'datetime', 'Datetime (UTC)'",
    )?;
    let zone_col = find_column(&headers, ZONE_HEADERS, "zone", "'zone', 'Zone id'")?;
    let ci_col = find_column(
        &headers,
        INTENSITY_HEADERS,
        "lifecycle carbon-intensity",
        "'g_per_kwh', 'Carbon intensity gCO₂eq/kWh (LCA)', 'Carbon intensity gCO₂eq/kWh (Life cycle)'",
    )?;
    let column_name = |col: usize| {
        headers
            .get(col)
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    };

    // zone → start → (value, line)
    let mut rows: BTreeMap<String, BTreeMap<i64, (f64, usize)>> = BTreeMap::new();
    for (line, text) in lines {
        let cells = split_csv_line(text).map_err(|message| FactorError::HourlyCsvValue {
            line,
            column: "row".to_owned(),
            message,
        })?;
        let cell = |col: usize| -> Result<&str, FactorError> {
            cells
                .get(col)
                .map(|c| c.trim())
                .ok_or_else(|| FactorError::HourlyCsvValue {
                    line,
                    column: column_name(col),
                    message: format!(
                        "the row has {} cells but the header has {}; give every row all columns",
                        cells.len(),
                        headers.len()
                    ),
                })
        };
        let raw_time = cell(dt_col)?;
        let start = parse_iso8601_utc(raw_time).map_err(|why| FactorError::HourlyCsvValue {
            line,
            column: column_name(dt_col),
            message: format!(
                "'{raw_time}' is not an ISO 8601 time ({why}); write it as '2024-01-01T00:00:00Z'"
            ),
        })?;
        let zone = cell(zone_col)?;
        if zone.is_empty() {
            return Err(FactorError::HourlyCsvValue {
                line,
                column: column_name(zone_col),
                message: "the zone is empty; give the grid zone, e.g. 'US-CAL-CISO'".to_owned(),
            });
        }
        let raw_ci = cell(ci_col)?;
        let value = raw_ci
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| FactorError::HourlyCsvValue {
                line,
                column: column_name(ci_col),
                message: format!(
                    "'{raw_ci}' is not a carbon intensity; write gCO2e/kWh as a number ≥ 0, e.g. '245.5'"
                ),
            })?;
        let series = rows.entry(normalize_zone(zone)).or_default();
        if let Some((previous, previous_line)) = series.insert(start, (value, line)) {
            if previous != value {
                return Err(FactorError::HourlyCsvValue {
                    line,
                    column: column_name(dt_col),
                    message: format!(
                        "'{raw_time}' for zone '{zone}' was already given on line {previous_line} \
                         with '{previous}', now '{value}'; keep one row per zone and time"
                    ),
                });
            }
        }
    }

    let series = rows
        .into_iter()
        .map(|(zone, by_start)| {
            let points: Vec<(i64, f64)> = by_start.into_iter().map(|(t, (v, _))| (t, v)).collect();
            let step_s = points
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .min()
                .unwrap_or(DEFAULT_STEP_S);
            (zone, Series { points, step_s })
        })
        .collect();
    Ok(HourlyIntensity { series })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_minute_rows_are_time_weighted() {
        let csv = "datetime,zone,g_per_kwh\n\
                   2024-06-01T10:00:00Z,FR,100\n2024-06-01T10:15:00Z,FR,200\n\
                   2024-06-01T10:30:00Z,FR,300\n2024-06-01T10:45:00Z,FR,400\n";
        let h = parse_hourly_csv(csv).expect("csv");
        let t = parse_iso8601_utc("2024-06-01T10:00:00Z").expect("t");
        assert_eq!(h.mean("FR", t, t + 3600, 0.0), Some(250.0));
        // Half the hour uncovered: the fallback fills it.
        assert_eq!(h.mean("FR", t + 1800, t + 5400, 50.0), Some(200.0));
        assert_eq!(h.mean("FR", t + 7200, t + 10_800, 50.0), None);
    }
}
