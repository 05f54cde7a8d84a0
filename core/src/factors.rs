//! Factor types and the built-in factor tables, each value with its source
//! (METHODOLOGY.md §4–§6, `shared/data/README.md`):
//!
//! - [`Factor`]: a factor as a report prints it (name, value, unit, source, year);
//! - grid carbon intensity by Electricity Maps zone and by Ember country ([`grid`]);
//! - hourly carbon-intensity series imported from CSV ([`hourly`]);
//! - embodied emissions per GPU ([`embodied_default`]) and PUE / water references
//!   ([`pue_reference`], [`wue_reference`], [`ewif_reference`]).
//!
//! Pure lookups over data compiled into the crate: no I/O.

pub mod grid;
pub mod hourly;

pub use crate::time::{parse_iso8601_utc, year_of, year_start_unix_s};
pub use grid::{
    builtin_attributions, check_builtin_tables, country_intensity, grid_intensity,
    normalize_country, zone_country, zone_intensity, GridIntensity,
};
pub use hourly::{parse_hourly_csv, HourlyIntensity};

/// Why a factor table or factor file is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FactorError {
    /// A built-in table failed to load: a packaging bug, caught by the crate's tests.
    #[error("built-in factor table '{file}' is invalid: {message}; regenerate it with 'python3 tools/build-factor-tables.py'")]
    BuiltinTable { file: &'static str, message: String },
    /// The hourly CSV has no header line.
    #[error("hourly intensity CSV is empty; expected a header line 'datetime,zone,g_per_kwh' then one row per hour and zone")]
    HourlyCsvEmpty,
    /// The header lacks a required column.
    #[error("hourly intensity CSV line 1: no {wanted} column (accepted headers: {accepted}); found {found}")]
    HourlyCsvMissingColumn {
        wanted: &'static str,
        accepted: &'static str,
        found: String,
    },
    /// A value in a data row cannot be used.
    #[error("hourly intensity CSV line {line}, column '{column}': {message}")]
    HourlyCsvValue {
        line: usize,
        column: String,
        message: String,
    },
}

/// A factor as a report prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Factor {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub source: String,
    pub year: Option<i32>,
}

/// A default embodied footprint for one GPU model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbodiedDefault {
    /// The GPU name pattern that matched (e.g. "H100").
    pub gpu_model_pattern: &'static str,
    /// Cradle-to-gate kgCO2e per GPU.
    pub kg_co2e: f64,
    /// Where the figure comes from; says "assumption" when it was carried over from
    /// another GPU model.
    pub source: &'static str,
    pub year: i32,
}

impl EmbodiedDefault {
    pub fn to_factor(&self) -> Factor {
        Factor {
            name: "embodied_per_gpu".to_owned(),
            value: self.kg_co2e,
            unit: "kgCO2e".to_owned(),
            source: self.source.to_owned(),
            year: Some(self.year),
        }
    }
}

/// NVIDIA HGX H100 product carbon footprint, cradle-to-gate, per 8-GPU board (kgCO2e).
pub const HGX_H100_BOARD_KG: f64 = 1312.0;
/// GPUs on an HGX H100 board.
pub const HGX_H100_GPUS: u32 = 8;
/// Per-GPU share of [`HGX_H100_BOARD_KG`]: 164 kgCO2e.
pub const H100_PER_GPU_KG: f64 = HGX_H100_BOARD_KG / HGX_H100_GPUS as f64;
const H100_PCF_YEAR: i32 = 2024;

const H100_SOURCE: &str = "NVIDIA HGX H100 product carbon footprint, cradle-to-gate: \
    1,312 kgCO2e per 8-GPU board / 8 GPUs";
const H100_PCIE_SOURCE: &str = "assumption: HGX H100 (SXM) per-GPU figure applied to an \
    H100 PCIe/NVL card (NVIDIA HGX H100 product carbon footprint, 1,312 kgCO2e per 8-GPU board / 8)";
const H200_SOURCE: &str = "assumption: no H200 footprint published; HGX H100 per-GPU figure \
    used (NVIDIA HGX H100 product carbon footprint, 1,312 kgCO2e per 8-GPU board / 8)";
const H800_SOURCE: &str = "assumption: no H800 footprint published; HGX H100 per-GPU figure \
    used (NVIDIA HGX H100 product carbon footprint, 1,312 kgCO2e per 8-GPU board / 8)";

/// The default embodied footprint for a GPU, matched on whole words of its NVML name
/// ("NVIDIA H100 80GB HBM3" → H100; "NVIDIA GH200 480GB" is not an H200). H100 PCIe/NVL,
/// H200 and H800 reuse the H100 figure with the assumption stated in `source`.
/// Unknown GPUs → `None` (the report then asks for a configured figure).
pub fn embodied_default(gpu_name: &str) -> Option<EmbodiedDefault> {
    let words: Vec<String> = gpu_name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    let (pattern, source) = if has("H100") {
        if has("PCIE") || has("NVL") {
            ("H100", H100_PCIE_SOURCE)
        } else {
            ("H100", H100_SOURCE)
        }
    } else if has("H200") {
        ("H200", H200_SOURCE)
    } else if has("H800") {
        ("H800", H800_SOURCE)
    } else {
        return None;
    };
    Some(EmbodiedDefault {
        gpu_model_pattern: pattern,
        kg_co2e: H100_PER_GPU_KG,
        source,
        year: H100_PCF_YEAR,
    })
}

/// One reference factor: canonical name, aliases, value, source, year.
struct Reference {
    name: &'static str,
    aliases: &'static [&'static str],
    value: f64,
    source: &'static str,
    year: Option<i32>,
}

const LI_ET_AL: &str = "Li, Yang, Islam, Ren, \"Making AI Less Thirsty\" (arXiv 2304.03271), \
    US average";

const PUE_REFERENCES: &[Reference] = &[
    Reference {
        name: "uptime-2024",
        aliases: &["uptime", "industry", "industry-average"],
        value: 1.56,
        source: "Uptime Institute global survey, industry average 2024",
        year: Some(2024),
    },
    Reference {
        name: "uptime-2023",
        aliases: &[],
        value: 1.58,
        source: "Uptime Institute global survey, industry average 2023",
        year: Some(2023),
    },
    Reference {
        name: "google-2024",
        aliases: &["google"],
        value: 1.09,
        source: "Google data centre fleet average 2024",
        year: Some(2024),
    },
    Reference {
        name: "google-2023",
        aliases: &[],
        value: 1.10,
        source: "Google data centre fleet average 2023",
        year: Some(2023),
    },
    Reference {
        name: "meta-2023",
        aliases: &["meta"],
        value: 1.08,
        source: "Meta data centre fleet average 2023",
        year: Some(2023),
    },
    Reference {
        name: "microsoft",
        aliases: &["azure"],
        value: 1.16,
        source: "Microsoft data centres, about 1.16 (as cited in inferwatt METHODOLOGY §4)",
        year: None,
    },
    Reference {
        name: "aws",
        aliases: &["amazon"],
        value: 1.15,
        source: "AWS data centres (as cited in inferwatt METHODOLOGY §4)",
        year: None,
    },
    Reference {
        name: "us-average-li",
        aliases: &["li-et-al", "us-average"],
        value: 1.17,
        source: "Li, Yang, Islam, Ren, \"Making AI Less Thirsty\" (arXiv 2304.03271), \
            US average [derived]",
        year: None,
    },
];

const WUE_REFERENCES: &[Reference] = &[Reference {
    name: "us-average-li",
    aliases: &["li-et-al", "us-average"],
    value: 0.55,
    source: LI_ET_AL,
    year: None,
}];

// 3.142 L/kWh is Li et al.'s US EWIF, not an approximation of π.
#[allow(clippy::approx_constant)]
const EWIF_REFERENCES: &[Reference] = &[Reference {
    name: "us-average-li",
    aliases: &["li-et-al", "us-average"],
    value: 3.142,
    source: LI_ET_AL,
    year: None,
}];

fn normalize_name(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn find_reference(table: &[Reference], name: &str, factor: &str, unit: &str) -> Option<Factor> {
    let wanted = normalize_name(name);
    table
        .iter()
        .find(|r| r.name == wanted || r.aliases.contains(&wanted.as_str()))
        .map(|r| Factor {
            name: factor.to_owned(),
            value: r.value,
            unit: unit.to_owned(),
            source: r.source.to_owned(),
            year: r.year,
        })
}

/// §4 PUE references by name: "uptime-2024" (alias "uptime", "industry"), "uptime-2023",
/// "google-2024" ("google"), "google-2023", "meta-2023" ("meta"), "microsoft", "aws",
/// "us-average-li" (the 1.17 of Li et al.). Case, spaces and underscores are ignored.
pub fn pue_reference(name: &str) -> Option<Factor> {
    find_reference(PUE_REFERENCES, name, "pue", "ratio")
}

/// The canonical names [`pue_reference`] knows.
pub fn pue_reference_names() -> impl Iterator<Item = &'static str> {
    PUE_REFERENCES.iter().map(|r| r.name)
}

/// §6 on-site water usage effectiveness references: "us-average-li" (0.55 L/kWh).
pub fn wue_reference(name: &str) -> Option<Factor> {
    find_reference(WUE_REFERENCES, name, "wue", "L/kWh")
}

/// §6 off-site electricity water intensity references: "us-average-li" (3.142 L/kWh).
pub fn ewif_reference(name: &str) -> Option<Factor> {
    find_reference(EWIF_REFERENCES, name, "ewif", "L/kWh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_are_unique_across_names_and_aliases() {
        for table in [PUE_REFERENCES, WUE_REFERENCES, EWIF_REFERENCES] {
            let mut seen = std::collections::HashSet::new();
            for r in table {
                assert!(seen.insert(r.name), "duplicate {}", r.name);
                for a in r.aliases {
                    assert!(seen.insert(a), "duplicate alias {a}");
                }
            }
        }
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name(" Industry Average "), "industry-average");
        assert_eq!(normalize_name("US_Average_Li"), "us-average-li");
    }
}
