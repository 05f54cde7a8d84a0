//! Built-in yearly grid carbon intensity: Electricity Maps by grid zone (ODbL 1.0) and
//! Ember by country or region (CC BY-SA 4.0). The tables are `core/data/*.json`, derived
//! by `tools/build-factor-tables.py` from `shared/data/grid-intensity/`, compiled in with
//! `include_str!` and parsed once on first use.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::{Factor, FactorError};

const EM_FILE: &str = "core/data/grid-intensity-electricity-maps.json";
const EMBER_FILE: &str = "core/data/grid-intensity-ember.json";
const EM_JSON: &str = include_str!("../../data/grid-intensity-electricity-maps.json");
const EMBER_JSON: &str = include_str!("../../data/grid-intensity-ember.json");

/// A yearly grid intensity and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct GridIntensity {
    /// The table's key: an Electricity Maps zone ("US-CAL-CISO") or an Ember country
    /// (ISO alpha-3, "USA") or region ("World").
    pub zone_or_country: String,
    pub g_per_kwh: f64,
    pub year: i32,
    /// e.g. "Electricity Maps yearly 2024 (ODbL 1.0)".
    pub source: &'static str,
}

impl GridIntensity {
    /// The intensity as a report factor (`grid_intensity`, gCO2e/kWh).
    pub fn to_factor(&self) -> Factor {
        Factor {
            name: "grid_intensity".to_owned(),
            value: self.g_per_kwh,
            unit: "gCO2e/kWh".to_owned(),
            source: format!("{}, {}", self.source, self.zone_or_country),
            year: Some(self.year),
        }
    }
}

/// `core/data/grid-intensity-electricity-maps.json`.
#[derive(Deserialize)]
struct EmFile {
    attribution: String,
    datasets: BTreeMap<i32, String>,
    zones: BTreeMap<String, Row>,
}

/// `core/data/grid-intensity-ember.json`.
#[derive(Deserialize)]
struct EmberFile {
    attribution: String,
    datasets: BTreeMap<i32, String>,
    countries: BTreeMap<String, Row>,
}

/// One loaded table: attribution, dataset label per year, rows by key.
struct Table {
    attribution: String,
    datasets: BTreeMap<i32, String>,
    rows: BTreeMap<String, Row>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    #[serde(default)]
    alpha2: Option<String>,
    g_per_kwh: BTreeMap<i32, f64>,
}

struct Tables {
    em: Table,
    ember: Table,
    /// Upper-cased alpha-3, alpha-2, key and name → Ember key.
    ember_index: HashMap<String, String>,
}

static TABLES: OnceLock<Result<Tables, FactorError>> = OnceLock::new();

fn check_rows(file: &'static str, table: &Table) -> Result<(), FactorError> {
    for (key, row) in &table.rows {
        if row.g_per_kwh.is_empty() {
            return Err(FactorError::BuiltinTable {
                file,
                message: format!("'{key}' has no values"),
            });
        }
        for (year, value) in &row.g_per_kwh {
            if !(value.is_finite() && *value >= 0.0) {
                return Err(FactorError::BuiltinTable {
                    file,
                    message: format!("'{key}' {year} has intensity '{value}'"),
                });
            }
            if !table.datasets.contains_key(year) {
                return Err(FactorError::BuiltinTable {
                    file,
                    message: format!("'{key}' has year '{year}' with no dataset label"),
                });
            }
        }
    }
    Ok(())
}

fn load() -> Result<Tables, FactorError> {
    let em: EmFile = serde_json::from_str(EM_JSON).map_err(|e| FactorError::BuiltinTable {
        file: EM_FILE,
        message: e.to_string(),
    })?;
    let em = Table {
        attribution: em.attribution,
        datasets: em.datasets,
        rows: em.zones,
    };
    let ember: EmberFile =
        serde_json::from_str(EMBER_JSON).map_err(|e| FactorError::BuiltinTable {
            file: EMBER_FILE,
            message: e.to_string(),
        })?;
    let ember = Table {
        attribution: ember.attribution,
        datasets: ember.datasets,
        rows: ember.countries,
    };
    check_rows(EM_FILE, &em)?;
    check_rows(EMBER_FILE, &ember)?;
    let mut ember_index = HashMap::new();
    // Names first, then codes, so a code always wins over a colliding name.
    for (key, row) in &ember.rows {
        ember_index.insert(row.name.to_uppercase(), key.clone());
    }
    for (key, row) in &ember.rows {
        ember_index.insert(key.to_uppercase(), key.clone());
        if let Some(alpha2) = &row.alpha2 {
            ember_index.insert(alpha2.to_uppercase(), key.clone());
        }
    }
    Ok(Tables {
        em,
        ember,
        ember_index,
    })
}

fn tables() -> Option<&'static Tables> {
    TABLES.get_or_init(load).as_ref().ok()
}

/// Loads the built-in tables and reports whether they are usable (an `inferwatt-agent
/// check` line; the lookups return `None` if they are not).
pub fn check_builtin_tables() -> Result<(), FactorError> {
    match TABLES.get_or_init(load) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    }
}

/// The attribution lines the built-in tables require wherever their values are shown
/// (Electricity Maps under ODbL 1.0, Ember under CC BY-SA 4.0).
pub fn builtin_attributions() -> Vec<&'static str> {
    tables()
        .map(|t| vec![t.em.attribution.as_str(), t.ember.attribution.as_str()])
        .unwrap_or_default()
}

/// The newest value at or before `year` (any year when `None`).
fn pick(key: &str, row: &Row, table: &'static Table, year: Option<i32>) -> Option<GridIntensity> {
    let (year, value) = match year {
        Some(y) => row.g_per_kwh.range(..=y).next_back()?,
        None => row.g_per_kwh.iter().next_back()?,
    };
    Some(GridIntensity {
        zone_or_country: key.to_owned(),
        g_per_kwh: *value,
        year: *year,
        source: table.datasets.get(year)?.as_str(),
    })
}

/// Electricity Maps yearly intensity of a grid zone ("US-CAL-CISO", "FR", "DE"; case
/// ignored): the newest year ≤ `year` (the newest when `None`). Unknown zone → `None`.
pub fn zone_intensity(zone: &str, year: Option<i32>) -> Option<GridIntensity> {
    let t = tables()?;
    let key = zone.trim().to_ascii_uppercase();
    let (key, row) = t.em.rows.get_key_value(&key)?;
    pick(key, row, &t.em, year)
}

/// Ember yearly intensity of a country by ISO 3166-1 alpha-2 or alpha-3 code ("US",
/// "USA", "FRA"), or of a region by its name ("World", "EU", "G20"); case ignored. The
/// newest year ≤ `year` (the newest when `None`); Ember has one year per country.
pub fn country_intensity(code: &str, year: Option<i32>) -> Option<GridIntensity> {
    let t = tables()?;
    let key = t.ember_index.get(&code.trim().to_uppercase())?;
    let (key, row) = t.ember.rows.get_key_value(key)?;
    pick(key, row, &t.ember, year)
}

/// A zone first ([`zone_intensity`]), then a country or region ([`country_intensity`]).
pub fn grid_intensity(zone_or_country: &str, year: Option<i32>) -> Option<GridIntensity> {
    zone_intensity(zone_or_country, year).or_else(|| country_intensity(zone_or_country, year))
}

/// One form for a country: the ISO 3166-1 alpha-3 code of an alpha-2 or alpha-3 code (or
/// an English name) the built-in country table knows ("US", "us", "USA" → "USA"); any
/// other value upper-cased and trimmed. So "US" and "USA" are one country in a report.
pub fn normalize_country(code: &str) -> String {
    let up = code.trim().to_uppercase();
    tables()
        .and_then(|t| t.ember_index.get(&up))
        .filter(|k| k.len() == 3 && k.chars().all(|c| c.is_ascii_alphabetic()))
        .map(|k| k.to_uppercase())
        .unwrap_or(up)
}

/// The ISO 3166-1 alpha-2 country of an Electricity Maps zone: its first part
/// ("US-CAL-CISO" → "US", "DK-DK1" → "DK", "XK" → "XK"). `None` when the first part is
/// not two letters.
pub fn zone_country(zone: &str) -> Option<String> {
    let prefix = zone.trim().split('-').next()?;
    (prefix.len() == 2 && prefix.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| prefix.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_have_one_form() {
        assert_eq!(normalize_country("US"), "USA");
        assert_eq!(normalize_country(" usa "), "USA");
        assert_eq!(normalize_country("FR"), "FRA");
        assert_eq!(normalize_country("DEU"), "DEU");
        assert_eq!(normalize_country("MARS"), "MARS");
        assert_eq!(normalize_country(""), "");
    }

    #[test]
    fn builtin_tables_load() {
        assert_eq!(check_builtin_tables(), Ok(()));
        assert_eq!(builtin_attributions().len(), 2);
    }

    #[test]
    fn bad_rows_are_rejected_with_the_key() {
        let table = Table {
            attribution: String::new(),
            datasets: BTreeMap::from([(2024, "x".to_owned())]),
            rows: BTreeMap::from([(
                "ZZ".to_owned(),
                Row {
                    name: "Nowhere".to_owned(),
                    alpha2: None,
                    g_per_kwh: BTreeMap::from([(2023, 10.0)]),
                },
            )]),
        };
        let err = check_rows(EM_FILE, &table).expect_err("2023 has no label");
        assert!(err.to_string().contains("'ZZ' has year '2023'"));
    }
}
