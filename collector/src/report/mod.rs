//! Report formats: one file per format, each a pure function of a computed
//! [`Report`] (no arithmetic here beyond unit display).
//! [`render`] picks the format; the exports users' tools already read (Hugging Face model
//! card, CodeCarbon `emissions.csv`, Impact Framework manifest) live in [`exports`].

pub mod csv;
pub mod exports;
pub mod html;
pub mod json;
pub mod markdown;

pub use exports::{codecarbon_csv, hf_model_card, impact_framework_manifest};

use crate::indicators::Report;

/// Why a report cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot serialise the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown report format '{0}'; use one of: json, csv, markdown (md), html")]
    UnknownFormat(String),
}

/// A report output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Markdown,
    Html,
}

impl std::str::FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "markdown" | "md" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            _ => Err(ReportError::UnknownFormat(s.to_owned())),
        }
    }
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> Result<String, ReportError> {
    match format {
        Format::Json => json::render(report),
        Format::Csv => Ok(csv::render(report)),
        Format::Markdown => Ok(markdown::render(report)),
        Format::Html => Ok(html::render(report)),
    }
}

/// A number for people: up to 6 significant digits, no exponent for ordinary magnitudes.
pub(crate) fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if v.is_nan() {
        // Unknown (a site of unknown grid intensity): the JSON's null.
        return "n/a".to_owned();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let digits = 6 - 1 - v.abs().log10().floor() as i32;
    let s = if digits > 0 {
        format!("{:.*}", digits.min(12) as usize, v)
    } else {
        format!("{:.0}", v)
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// An optional intensity: the number, or "n/a".
pub(crate) fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "n/a".to_owned())
}
