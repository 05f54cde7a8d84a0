//! The factors file (`--factors FILE`, and the collector config's `[factors]` section) as
//! written: per-site PUE, water, grid-intensity and market-based overrides, embodied
//! figures, the idle-policy label and the methodology version, and the PUE/WUE time
//! series CSV it may name ([`PueWueSeries`]). Parsing and checking the format only; what
//! the values become for a report is [`crate::factors`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use inferwatt_core::factors::parse_iso8601_utc;
use inferwatt_core::footprint::{self, FuelMix};
use serde::{Deserialize, Serialize};

/// The methodology version a report states when the file does not name one.
pub const DEFAULT_METHODOLOGY_VERSION: &str = "inferwatt-methodology/1";
/// Default equipment lifetime for embodied emissions (METHODOLOGY §5).
pub const DEFAULT_LIFETIME_YEARS: f64 = 4.0;

/// Why a factors file cannot be used. Each message names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum FactorsFileError {
    #[error("cannot read factors file '{file}': {source}; check the path given to --factors")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("factors file '{file}': {message}")]
    Parse { file: String, message: String },
    #[error("factors file '{file}', key '{key}': {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
    #[error("factors file '{file}', key 'sites.{site}.zone': site '{site}' has grid zone '{zone}' and country '{country}', neither in the built-in intensity tables; set 'sites.{site}.intensity_g_per_kwh', or a known 'zone' (e.g. 'US-CAL-CISO') or 'country' (e.g. 'USA')")]
    UnknownZone {
        file: String,
        site: String,
        zone: String,
        country: String,
    },
    #[error(
        "factors file '{file}', key '{key}': cannot read hourly intensity CSV '{csv}': {reason}"
    )]
    HourlyCsv {
        file: String,
        key: String,
        csv: String,
        reason: String,
    },
    #[error("factors file '{file}', key '{key}': cannot read PUE/WUE CSV '{csv}': {reason}; check the path (relative to the factors file's folder)")]
    PueWueCsvRead {
        file: String,
        key: String,
        csv: String,
        reason: String,
    },
    #[error("factors file '{file}', key '{key}': PUE/WUE CSV '{csv}', {fault}")]
    PueWueCsv {
        file: String,
        key: String,
        csv: String,
        fault: Box<PueWueCsvFault>,
    },
}

/// The factors file as written (TOML). Also the collector config's `[factors]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FactorsFile {
    /// Methodology version printed in reports.
    #[serde(default = "default_methodology_version")]
    pub methodology_version: String,
    /// Label of the agents' idle allocation policy (`resident` or `separate`), printed in
    /// reports; the attribution itself happens in the agent.
    #[serde(default = "default_idle_policy")]
    pub idle_policy: String,
    /// Values applied to every site unless its own table overrides them.
    #[serde(default)]
    pub defaults: SiteFactors,
    /// Per-site tables, keyed by the site name the agents report.
    #[serde(default)]
    pub sites: BTreeMap<String, SiteFactors>,
}

fn default_methodology_version() -> String {
    DEFAULT_METHODOLOGY_VERSION.to_owned()
}

fn default_idle_policy() -> String {
    "resident".to_owned()
}

/// Factors of one site (every field optional: unset falls back, see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFactors {
    /// Electricity Maps grid zone (e.g. "US-CAL-CISO"), overriding the agent's.
    pub zone: Option<String>,
    /// Country (ISO alpha-2 or alpha-3), overriding the agent's.
    pub country: Option<String>,
    /// Power usage effectiveness (≥ 1), or a reference name in `pue_reference`.
    pub pue: Option<f64>,
    /// Year the `pue` was measured or published (printed with it).
    pub pue_year: Option<i32>,
    /// Name of a PUE reference ("uptime-2024", "google-2024", ...), used when `pue` is unset.
    pub pue_reference: Option<String>,
    /// On-site water usage effectiveness, L/kWh of IT energy.
    pub wue_l_per_kwh: Option<f64>,
    /// Year of `wue_l_per_kwh`.
    pub wue_year: Option<i32>,
    /// Off-site electricity water intensity, L/kWh of facility energy.
    pub ewif_l_per_kwh: Option<f64>,
    /// Year of `ewif_l_per_kwh`.
    pub ewif_year: Option<i32>,
    /// Generation shares by fuel, to derive EWIF when `ewif_l_per_kwh` is unset.
    pub fuel_mix: Option<FuelMixFile>,
    /// Grid carbon intensity override, gCO2e/kWh (location-based).
    pub intensity_g_per_kwh: Option<f64>,
    /// Source to print for `intensity_g_per_kwh`.
    pub intensity_source: Option<String>,
    /// With `intensity_g_per_kwh`: the year of that value (printed with it). Without it:
    /// the year of the built-in table to use (newest ≤ this year) for all data; when unset,
    /// each year of data gets its own year's table (or the newest earlier one, stated).
    pub intensity_year: Option<i32>,
    /// Hourly intensity CSV (`datetime,zone,g_per_kwh` or an Electricity Maps export),
    /// relative to the factors file.
    pub hourly_intensity_csv: Option<PathBuf>,
    /// PUE and WUE time series, relative to the factors file: a CSV with the header
    /// `datetime,pue,wue_l_per_kwh`, ISO 8601 UTC times on the hour (hourly or coarser);
    /// each row holds until the next, hours before the first use the constant `pue` /
    /// `wue_l_per_kwh` (else the agent's, else the reference).
    pub pue_wue_csv: Option<PathBuf>,
    /// Share of consumption covered by contractual instruments (0..=1).
    pub covered_share: Option<f64>,
    /// Emission factor of the instruments, gCO2e/kWh (0 for renewable PPAs).
    pub instrument_g_per_kwh: Option<f64>,
    /// Residual-mix factor for the uncovered share, gCO2e/kWh.
    pub residual_mix_g_per_kwh: Option<f64>,
    /// Year of `residual_mix_g_per_kwh`.
    pub residual_mix_year: Option<i32>,
    /// Embodied kgCO2e per GPU, by NVML GPU name, overriding the built-in figures.
    #[serde(default)]
    pub gpu_embodied_kg: BTreeMap<String, f64>,
    /// Server embodied kgCO2e (without GPUs) per GPU it holds.
    pub server_embodied_kg_per_gpu: Option<f64>,
    /// Equipment lifetime in years (default 4).
    pub lifetime_years: Option<f64>,
}

/// Fuel shares (0..=1, summing to 1) as written in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FuelMixFile {
    #[serde(default)]
    pub coal: f64,
    #[serde(default)]
    pub gas: f64,
    #[serde(default)]
    pub nuclear: f64,
    #[serde(default)]
    pub oil: f64,
    #[serde(default)]
    pub other: f64,
    #[serde(default)]
    pub solar: f64,
    #[serde(default)]
    pub wind: f64,
    #[serde(default)]
    pub hydro: f64,
}

impl From<FuelMixFile> for FuelMix {
    fn from(m: FuelMixFile) -> Self {
        FuelMix {
            coal: m.coal,
            gas: m.gas,
            nuclear: m.nuclear,
            oil: m.oil,
            other: m.other,
            solar: m.solar,
            wind: m.wind,
            hydro: m.hydro,
        }
    }
}

/// A per-site PUE/WUE time series (`pue_wue_csv`): rows sorted by time, each holding
/// from its timestamp until the next row's (the last one indefinitely).
#[derive(Debug, Clone, PartialEq)]
pub struct PueWueSeries {
    /// (start unix seconds, PUE, WUE L/kWh), sorted, unique starts.
    points: Vec<(i64, f64, f64)>,
}

/// Where and why a PUE/WUE CSV is wrong (1-based line, the column's header name).
#[derive(Debug, Clone, PartialEq)]
pub struct PueWueCsvFault {
    pub line: usize,
    pub column: String,
    pub reason: String,
}

impl std::fmt::Display for PueWueCsvFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column '{}': {}",
            self.line, self.column, self.reason
        )
    }
}

const PUE_WUE_HEADER: &str = "datetime,pue,wue_l_per_kwh";

impl PueWueSeries {
    /// (PUE, WUE) in force at `unix_s`; `None` before the first row.
    pub fn at(&self, unix_s: i64) -> Option<(f64, f64)> {
        let idx = self.points.partition_point(|(t, _, _)| *t <= unix_s);
        let (_, pue, wue) = *self.points.get(idx.checked_sub(1)?)?;
        Some((pue, wue))
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Parses `datetime,pue,wue_l_per_kwh` CSV text (columns in any order, each once; a
    /// blank line is skipped). Times are ISO 8601 (no offset = UTC) on the hour; PUE ≥ 1,
    /// WUE ≥ 0; rows in any order, a time given twice is an error.
    pub fn parse(text: &str) -> Result<Self, PueWueCsvFault> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let fault = |line: usize, column: &str, reason: String| PueWueCsvFault {
            line,
            column: column.to_owned(),
            reason,
        };
        let (header_line, header) = lines.next().ok_or_else(|| {
            fault(
                1,
                "header",
                format!("the file is empty; write the header '{PUE_WUE_HEADER}' then one row per hour or longer step"),
            )
        })?;
        // Cells by the one CSV reader (`inferwatt_core::csv`), trimmed.
        let cells = |n: usize, l: &str| -> Result<Vec<String>, PueWueCsvFault> {
            inferwatt_core::csv::split_line(l)
                .map(|c| c.into_iter().map(|c| c.trim().to_owned()).collect())
                .map_err(|reason| fault(n, "line", reason))
        };
        let headers = cells(header_line, header)?;
        let mut cols = [None::<usize>; 3];
        for (i, h) in headers.iter().enumerate() {
            let slot = match h.to_lowercase().as_str() {
                "datetime" => 0,
                "pue" => 1,
                "wue_l_per_kwh" => 2,
                _ => {
                    return Err(fault(
                        header_line,
                        h,
                        format!("'{h}' is not a known column; the header is '{PUE_WUE_HEADER}'"),
                    ))
                }
            };
            if cols[slot].replace(i).is_some() {
                return Err(fault(
                    header_line,
                    h,
                    format!("column '{h}' is given twice; the header is '{PUE_WUE_HEADER}'"),
                ));
            }
        }
        let [Some(dt_col), Some(pue_col), Some(wue_col)] = cols else {
            return Err(fault(
                header_line,
                "header",
                format!(
                    "the header '{}' lacks a column; it is '{PUE_WUE_HEADER}'",
                    header.trim()
                ),
            ));
        };

        let mut rows: BTreeMap<i64, (f64, f64, usize)> = BTreeMap::new();
        for (line, text) in lines {
            let row = cells(line, text)?;
            if row.len() != headers.len() {
                return Err(fault(
                    line,
                    "row",
                    format!(
                        "the row has {} cells but the header has {}; give every row '{PUE_WUE_HEADER}'",
                        row.len(),
                        headers.len()
                    ),
                ));
            }
            let raw_time = row[dt_col].as_str();
            let start = parse_iso8601_utc(raw_time).map_err(|why| {
                fault(
                    line,
                    &headers[dt_col],
                    format!("'{raw_time}' is not an ISO 8601 time ({why}); write it as '2024-01-01T00:00:00Z'"),
                )
            })?;
            if start.rem_euclid(3600) != 0 {
                return Err(fault(
                    line,
                    &headers[dt_col],
                    format!("'{raw_time}' is not on the hour (UTC); the series is hourly or coarser, write times as '2024-01-01T05:00:00Z'"),
                ));
            }
            let number = |col: usize, what: &str| -> Result<f64, PueWueCsvFault> {
                let raw = row[col].as_str();
                raw.parse::<f64>().map_err(|_| {
                    fault(
                        line,
                        &headers[col],
                        format!("'{raw}' is not a number; write the {what} as e.g. '1.2'"),
                    )
                })
            };
            let place = |col: usize| format!("line {line}, column '{}'", headers[col]);
            let pue = footprint::check_pue(&place(pue_col), number(pue_col, "PUE")?)
                .map_err(|e| fault(line, &headers[pue_col], e.to_string()))?;
            let wue =
                footprint::check_non_negative(&place(wue_col), number(wue_col, "WUE in L/kWh")?)
                    .map_err(|e| fault(line, &headers[wue_col], e.to_string()))?;
            if let Some((_, _, first)) = rows.insert(start, (pue, wue, line)) {
                return Err(fault(
                    line,
                    &headers[dt_col],
                    format!(
                        "'{raw_time}' was already given on line {first}; keep one row per time"
                    ),
                ));
            }
        }
        if rows.is_empty() {
            return Err(fault(
                header_line,
                "header",
                "the file has a header but no rows; add one row per hour or longer step".to_owned(),
            ));
        }
        Ok(PueWueSeries {
            points: rows.into_iter().map(|(t, (p, w, _))| (t, p, w)).collect(),
        })
    }
}

impl FactorsFile {
    /// Reads and parses a factors file.
    pub fn load(path: &Path) -> Result<Self, FactorsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FactorsFileError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Whether a site (or the defaults) has a factor that changes within a day: an
    /// hourly intensity CSV or a PUE/WUE series. Reports then read hourly buckets.
    pub fn has_hourly_series(&self) -> bool {
        std::iter::once(&self.defaults)
            .chain(self.sites.values())
            .any(|s| s.hourly_intensity_csv.is_some() || s.pue_wue_csv.is_some())
    }

    /// Parses TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, FactorsFileError> {
        toml::from_str(text).map_err(|e| FactorsFileError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }
}
