//! CSV imports users bring: CodeCarbon `emissions.csv` and nvidia-smi CSV logs, turned
//! into wire points (`gpu` with `source = "integrated"`, and for CodeCarbon
//! `model_energy`) for one `--site` and `--host`. A file is converted whole before
//! anything is stored; any unknown column, unit or bad value is an error naming the
//! column and line, and then nothing is stored.
//!
//! CodeCarbon (one row per run or per measurement): CodeCarbon multiplies every energy it
//! measures by its configured `pue` before it adds it to `cpu_energy`, `gpu_energy` and
//! `ram_energy` (`EmissionsTracker._do_measurements` in CodeCarbon 3.x), so each is
//! divided by the row's `pue` first: the report applies the site's PUE once. The GPU
//! energy is split equally over the row's `gpu_count` GPUs (`codecarbon:<run_id>:<i>`),
//! each a `gpu` point and a `model_energy` point (`active_j` = its GPU energy, `host_j` =
//! its share of `cpu_energy` + `ram_energy`, `gpu_s` = `duration`: one model per GPU);
//! a row with `gpu_count` 0 and no GPU energy is one `model_energy` point with the host
//! energy and no GPU time. Model = `project_name`, server = `codecarbon:<experiment_id>`,
//! ending at `timestamp` (read as UTC when it has no offset), lasting `duration` seconds.
//! What is lost: CodeCarbon's own emissions and water (reports recompute them from
//! factors), its country/region (the site's factors decide), per-GPU differences (the
//! row has one total), and the idle/active split (all GPU energy counts as active).
//!
//! nvidia-smi (`--query-gpu=timestamp,index,uuid,name,power.draw,… --format=csv`, with
//! or without units): power is integrated per GPU by the trapezoid rule between
//! consecutive rows of that GPU, each pair giving one `gpu` point at the later time.

use std::collections::BTreeMap;

use inferwatt_core::lineproto::Point;
use inferwatt_core::schema::{self, EnergySource};

/// Why a CSV file cannot be imported. Lines are 1-based, counting the header.
#[derive(Debug, thiserror::Error)]
pub enum CsvImportError {
    #[error("line {line}: column '{column}' is not a known {format} column; export with the documented columns (known: {known})")]
    UnknownColumn {
        line: usize,
        column: String,
        format: &'static str,
        known: String,
    },
    #[error("line {line}: column '{column}' has unit '{unit}'; use '{want}'")]
    UnknownUnit {
        line: usize,
        column: String,
        unit: String,
        want: &'static str,
    },
    #[error("line 1: required column '{column}' is missing; add it to the export")]
    MissingColumn { column: &'static str },
    #[error("line {line}: column '{column}' value '{value}' {problem}")]
    BadValue {
        line: usize,
        column: String,
        value: String,
        problem: &'static str,
    },
    #[error("line {line}: {found} fields, the header has {want}; check the quoting")]
    FieldCount {
        line: usize,
        found: usize,
        want: usize,
    },
    #[error("line {line}: {problem}")]
    Quote { line: usize, problem: String },
    #[error("the file is empty; expected a header line")]
    Empty,
}

/// A CSV import format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvFormat {
    CodeCarbon,
    NvidiaSmi,
}

/// One line's cells, trimmed (`inferwatt_core::csv::split_line`); `line` names it in
/// the error of an unclosed quote.
fn split_line(line: &str, n: usize) -> Result<Vec<String>, CsvImportError> {
    inferwatt_core::csv::split_line(line)
        .map(|cells| cells.into_iter().map(|f| f.trim().to_owned()).collect())
        .map_err(|problem| CsvImportError::Quote { line: n, problem })
}

/// Header and records with their line numbers.
type Table = (Vec<String>, Vec<(usize, Vec<String>)>);

fn table(text: &str) -> Result<Table, CsvImportError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (hn, header) = lines.next().ok_or(CsvImportError::Empty)?;
    let header = split_line(header.trim_start_matches('\u{feff}'), hn)?;
    let mut rows = Vec::new();
    for (n, l) in lines {
        let f = split_line(l, n)?;
        if f.len() != header.len() {
            return Err(CsvImportError::FieldCount {
                line: n,
                found: f.len(),
                want: header.len(),
            });
        }
        rows.push((n, f));
    }
    Ok((header, rows))
}

fn number(line: usize, column: &str, value: &str) -> Result<f64, CsvImportError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| CsvImportError::BadValue {
            line,
            column: column.to_owned(),
            value: value.to_owned(),
            problem: "is not a number",
        })
}

/// Columns CodeCarbon writes besides the 3.x `EmissionsData` fields that the export
/// writes too ([`crate::report::exports::CODECARBON_COLUMNS`]): the trailing `wue` of
/// 3.1 and later, and `gpu_utilization_percent` of some 3.x versions.
const CODECARBON_EXTRA_COLUMNS: &[&str] = &["wue", "gpu_utilization_percent"];

fn codecarbon_column(c: &str) -> bool {
    crate::report::exports::CODECARBON_COLUMNS.contains(&c) || CODECARBON_EXTRA_COLUMNS.contains(&c)
}

/// Converts a CodeCarbon `emissions.csv` into points (see the module doc).
pub fn codecarbon_points(text: &str, site: &str, host: &str) -> Result<Vec<Point>, CsvImportError> {
    let (header, rows) = table(text)?;
    for c in &header {
        if !codecarbon_column(c) {
            return Err(CsvImportError::UnknownColumn {
                line: 1,
                column: c.clone(),
                format: "CodeCarbon",
                known: crate::report::exports::CODECARBON_COLUMNS
                    .iter()
                    .chain(CODECARBON_EXTRA_COLUMNS)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(CsvImportError::MissingColumn { column: name })
    };
    let (ts_i, dur_i, gpu_i) = (col("timestamp")?, col("duration")?, col("gpu_energy")?);
    let project_i = col("project_name")?;
    let opt = |name: &str| header.iter().position(|h| h == name);
    let (exp_i, run_i, cpu_i, ram_i, model_i) = (
        opt("experiment_id"),
        opt("run_id"),
        opt("cpu_energy"),
        opt("ram_energy"),
        opt("gpu_model"),
    );
    let (pue_i, count_i) = (opt("pue"), opt("gpu_count"));
    let mut out = Vec::new();
    for (n, f) in &rows {
        let get = |i: Option<usize>| i.and_then(|i| f.get(i)).map(String::as_str).unwrap_or("");
        let stamp = &f[ts_i];
        let with_tz = if stamp.ends_with('Z') || stamp.contains('+') {
            stamp.clone()
        } else {
            format!("{stamp}Z")
        };
        let end_ns = inferwatt_core::time::parse_time_arg(&with_tz).map_err(|_| {
            CsvImportError::BadValue {
                line: *n,
                column: "timestamp".into(),
                value: stamp.clone(),
                problem: "is not an ISO 8601 time like 2024-01-15T10:00:00",
            }
        })?;
        let duration = number(*n, "duration", &f[dur_i])?;
        let kwh = |i: Option<usize>, name: &str| -> Result<f64, CsvImportError> {
            match get(i) {
                "" => Ok(0.0),
                v => number(*n, name, v).map(|v| v * 3.6e6),
            }
        };
        // CodeCarbon's energies include its PUE (see the module doc).
        let pue = match get(pue_i) {
            "" => 1.0,
            v => match number(*n, "pue", v)? {
                p if p >= 1.0 => p,
                _ => {
                    return Err(CsvImportError::BadValue {
                        line: *n,
                        column: "pue".into(),
                        value: v.to_owned(),
                        problem: "is below 1; CodeCarbon's PUE is ≥ 1 (1.0 when not configured)",
                    })
                }
            },
        };
        let gpu_count = match get(count_i) {
            "" => None,
            v => match number(*n, "gpu_count", v)? {
                c if c >= 0.0 && c.fract() == 0.0 && c <= 4096.0 => Some(c as u32),
                _ => {
                    return Err(CsvImportError::BadValue {
                        line: *n,
                        column: "gpu_count".into(),
                        value: v.to_owned(),
                        problem: "is not a whole number of GPUs (0 to 4096)",
                    })
                }
            },
        };
        let gpu_j = kwh(Some(gpu_i), "gpu_energy")? / pue;
        let host_j = (kwh(cpu_i, "cpu_energy")? + kwh(ram_i, "ram_energy")?) / pue;
        if duration < 0.0 || gpu_j < 0.0 || host_j < 0.0 {
            return Err(CsvImportError::BadValue {
                line: *n,
                column: "duration/gpu_energy".into(),
                value: format!("{duration}/{gpu_j}"),
                problem: "must not be negative",
            });
        }
        let run = match get(run_i) {
            "" => "run",
            r => r,
        };
        let gpu_name = match get(model_i) {
            "" => "unknown",
            m => m,
        };
        let project = &f[project_i];
        let model = if project.is_empty() {
            "codecarbon"
        } else {
            project
        };
        // GPUs of the row: its gpu_count, at least one when it has GPU energy.
        let gpus = match gpu_count {
            Some(0) if gpu_j == 0.0 => 0,
            Some(c) => c.max(1),
            None => 1,
        };
        let model_point = |gpu_uuid: &str, active_j: f64, host_j: f64, gpu_s: f64| {
            Point::new(schema::MODEL_ENERGY)
                .tag("site", site)
                .tag("host", host)
                .tag("gpu_uuid", gpu_uuid)
                .tag("model", model)
                .tag("server", format!("codecarbon:{}", get(exp_i)))
                .float("active_j", active_j)
                .float("idle_j", 0.0)
                .float("host_j", host_j)
                .float("interval_s", duration)
                .float(schema::GPU_SECONDS_FIELD, gpu_s)
                .string("method", "equal")
                .at(end_ns)
        };
        if gpus == 0 {
            out.push(model_point(&format!("codecarbon:{run}"), 0.0, host_j, 0.0));
            continue;
        }
        for i in 0..gpus {
            let gpu_uuid = if gpus == 1 {
                format!("codecarbon:{run}")
            } else {
                format!("codecarbon:{run}:{i}")
            };
            let share = 1.0 / f64::from(gpus);
            out.push(
                Point::new(schema::GPU)
                    .tag("site", site)
                    .tag("host", host)
                    .tag("gpu_uuid", &gpu_uuid)
                    .tag("gpu_index", i.to_string())
                    .tag("gpu_name", gpu_name)
                    .float("energy_j", gpu_j * share)
                    .float("interval_s", duration)
                    .string("source", EnergySource::Integrated.as_str())
                    .at(end_ns),
            );
            out.push(model_point(
                &gpu_uuid,
                gpu_j * share,
                host_j * share,
                duration,
            ));
        }
    }
    Ok(out)
}

/// nvidia-smi columns (name before any ` [unit]`) and the unit each must have.
const SMI_COLUMNS: &[(&str, Option<&str>)] = &[
    ("timestamp", None),
    ("index", None),
    ("uuid", None),
    ("name", None),
    ("power.draw", Some("W")),
    ("power.draw.average", Some("W")),
    ("power.draw.instant", Some("W")),
    ("utilization.gpu", Some("%")),
    ("utilization.memory", Some("%")),
    ("memory.used", Some("MiB")),
    ("memory.total", Some("MiB")),
    ("temperature.gpu", None),
    ("pci.bus_id", None),
];

/// One nvidia-smi row of a GPU: (time ns, watts, index, name, line).
type Sample = (i64, f64, String, String, usize);

/// `2024/01/15 10:00:00.123` (nvidia-smi, UTC assumed) → ns.
fn smi_time(line: usize, v: &str) -> Result<i64, CsvImportError> {
    let iso = v.replacen('/', "-", 2).replacen(' ', "T", 1);
    inferwatt_core::time::parse_time_arg(&format!("{iso}Z")).map_err(|_| CsvImportError::BadValue {
        line,
        column: "timestamp".into(),
        value: v.to_owned(),
        problem: "is not an nvidia-smi time like 2024/01/15 10:00:00.123",
    })
}

/// Converts an nvidia-smi CSV log into `gpu` points (see the module doc).
pub fn nvidia_smi_points(text: &str, site: &str, host: &str) -> Result<Vec<Point>, CsvImportError> {
    let (header, rows) = table(text)?;
    let mut names = Vec::new();
    for h in &header {
        let (name, unit) = match h.split_once(" [") {
            Some((n, u)) => (n.trim(), Some(u.trim_end_matches(']').trim())),
            None => (h.as_str(), None),
        };
        let Some((_, want)) = SMI_COLUMNS.iter().find(|(c, _)| *c == name) else {
            return Err(CsvImportError::UnknownColumn {
                line: 1,
                column: h.clone(),
                format: "nvidia-smi",
                known: SMI_COLUMNS
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let (Some(unit), Some(want)) = (unit, want) {
            if unit != *want {
                return Err(CsvImportError::UnknownUnit {
                    line: 1,
                    column: h.clone(),
                    unit: unit.to_owned(),
                    want,
                });
            }
        }
        names.push(name.to_owned());
    }
    let col = |name: &'static str| {
        names
            .iter()
            .position(|h| h == name)
            .ok_or(CsvImportError::MissingColumn { column: name })
    };
    let (ts_i, uuid_i) = (col("timestamp")?, col("uuid")?);
    let power_i = col("power.draw")
        .or_else(|_| col("power.draw.average"))
        .or_else(|_| col("power.draw.instant"))
        .map_err(|_| CsvImportError::MissingColumn {
            column: "power.draw",
        })?;
    let index_i = names.iter().position(|h| h == "index");
    let name_i = names.iter().position(|h| h == "name");
    // Per GPU: (time, watts, index, name, line), in file order.
    let mut per_gpu: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for (n, f) in &rows {
        let ts = smi_time(*n, &f[ts_i])?;
        let raw = f[power_i].as_str();
        let value = match raw.split_once(' ') {
            Some((v, unit)) if unit.trim() == "W" => v,
            Some((_, unit)) => {
                return Err(CsvImportError::UnknownUnit {
                    line: *n,
                    column: header[power_i].clone(),
                    unit: unit.trim().to_owned(),
                    want: "W",
                })
            }
            None => raw,
        };
        let watts = number(*n, &header[power_i], value)?;
        let get = |i: Option<usize>| {
            i.map(|i| f[i].clone())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        per_gpu.entry(f[uuid_i].clone()).or_default().push((
            ts,
            watts,
            get(index_i),
            get(name_i),
            *n,
        ));
    }
    let mut out = Vec::new();
    for (uuid, samples) in per_gpu {
        for pair in samples.windows(2) {
            let (t0, p0, ..) = &pair[0];
            let (t1, p1, index, name, line) = &pair[1];
            if t1 <= t0 {
                return Err(CsvImportError::BadValue {
                    line: *line,
                    column: "timestamp".into(),
                    value: crate::indicators::rfc3339(*t1),
                    problem: "is not after the previous row of this GPU; sort the log by time",
                });
            }
            let dt = (t1 - t0) as f64 / 1e9;
            out.push(
                Point::new(schema::GPU)
                    .tag("site", site)
                    .tag("host", host)
                    .tag("gpu_uuid", &uuid)
                    .tag("gpu_index", index)
                    .tag("gpu_name", name)
                    .float("energy_j", (p0 + p1) / 2.0 * dt)
                    .float("power_w", *p1)
                    .float("interval_s", dt)
                    .string("source", EnergySource::Integrated.as_str())
                    .at(*t1),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_split() {
        assert_eq!(
            split_line(r#"a, "b,c" ,"d""e""#, 1).expect("cells"),
            vec!["a", "b,c", "d\"e"]
        );
        let e = split_line(r#"a,"b"#, 7).expect_err("unclosed").to_string();
        assert!(e.starts_with("line 7:"), "{e}");
    }
}
