//! JSON format: the report as `inferwatt.report/v1` (DESIGN.md "Report JSON").

use super::ReportError;
use crate::indicators::Report;

/// Pretty-printed JSON; intensities without tokens or requests are `null`.
pub fn render(report: &Report) -> Result<String, ReportError> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}
