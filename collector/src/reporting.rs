//! From the store to a report: [`report_input`] reads a period's hourly rows out of the
//! store into an [`indicators::ReportInput`]; [`build_report`] resolves the factors and
//! computes it; [`render_report`] renders it. The CLI (`report`, `export`) and the API
//! (`GET /api/v1/report`) both go through these functions, so they give the same bytes.
//!
//! Rows are per hour so an hourly grid-intensity series can apply:
//! - energy: per (site, host, gpu_uuid, gpu_name, model, server, hour), whole hours from
//!   the hourly rollups and the partial edge hours from raw rows (`(b, b + 1 h]`
//!   convention). `gpu_name` comes from the GPU's `gpu` series (`unknown` without one).
//! - `gpu_seconds` of a row = the GPU's Σ `interval_s` in the hour (from its `gpu` points;
//!   without any, the longest Σ `interval_s` among its model rows) × the row's share of
//!   the GPU's energy in the hour, where the GPU's energy is the Σ of its model rows' GPU
//!   energy (active + idle) — equal to the `gpu` points' energy by the agent's
//!   conservation, and it keeps the shares summing to exactly 1. A GPU-hour whose model
//!   rows have no energy splits the time equally among them.
//! - A GPU-hour with `gpu` energy but no model row at all (e.g. an imported nvidia-smi
//!   log) becomes one `_unattributed` row holding that energy as active energy.
//! - usage: per (site, model, server, hour), summed over hosts.
//! - sources: GPU energy and seconds per (site, measurement path).
//! - sites: the latest `site` point at or before the period end of every site the period
//!   has rows for; a missing PUE or WUE is NaN, which the factors resolution treats as
//!   "not reported" (it then uses the factors file or a cited reference).
//! - gaps: the raw `gpu` points with `source = "gap"`: `[ts − interval_s, ts]`.
//! - folded_points: Σ of the `folded_points` field the agent's spool adds to folded points.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use inferwatt_core::schema::MODEL_UNATTRIBUTED;
use sha2::{Digest, Sha256};

use crate::factors_file::{FactorsFile, FactorsFileError};
use crate::indicators::{
    self, ComputeOptions, EnergyRow, GapRow, GpuSourceRow, GroupBy, HostPolicy, Period, Report,
    ReportInput, SiteRow, SplitEnergyRow, UsageRow,
};
use crate::report::{self, Format, ReportError};
use crate::store::rollup::bucket_of;
use crate::store::{ReportStore, StoreError, HOUR_NS, YEAR_GRAIN};

/// Why a report cannot be produced. Each message names the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ReportingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Factors(#[from] FactorsFileError),
    #[error(transparent)]
    Render(#[from] ReportError),
    #[error("{key} '{value}' is not a time; give RFC 3339 UTC like '2026-11-28T00:00:00Z' or Unix seconds like '1795824000'")]
    BadTime { key: &'static str, value: String },
    #[error("{key} '{value}' is outside the times data can have; give a time from 1970-01-01T00:00:00Z to 2199-12-31T23:59:59Z")]
    TimeOutOfRange { key: &'static str, value: String },
    #[error("group '{0}' is not known; use a comma-separated list of: model, site, country, namespace, workload")]
    BadGroup(String),
    #[error("the period from '{from}' to '{to}' is empty; 'to' must be after 'from'")]
    EmptyPeriod { from: String, to: String },
    #[error("min_count '{0}' is not a whole number of requests; give e.g. 10 (0: no suppression)")]
    BadMinCount(String),
    #[error("the database holds no points, so there is no default period; ingest data first or give both 'from' and 'to'")]
    NoData,
    #[error("model '{model}' has no energy or usage in the period; models present: {present}")]
    UnknownModel { model: String, present: String },
}

/// A canonical version tag for the digest's serialisation (bump it when that changes).
const DIGEST_VERSION: &str = "inferwatt.report-input/v2";

/// A GPU's energy below this (J) that no model row holds is float noise, not energy.
const NOISE_J: f64 = 1e-3;

/// The bucket width a report over `factors` reads: calendar years (the grid factor
/// changes with the data's year, nothing else does), unless a site has an hourly intensity
/// or PUE/WUE series (factors that change within a day), then hours.
pub fn report_grain(factors: &FactorsChoice) -> i64 {
    if factors.file.has_hourly_series() {
        HOUR_NS
    } else {
        YEAR_GRAIN
    }
}

/// Reads everything a report of `period` needs from the store, in buckets of `grain_ns`
/// ([`report_grain`]; a finer grain for the web page's minute series).
///
/// - energy: per (site, host, gpu_uuid, model, server, bucket) from the store's sums
///   (whole buckets from the rollups, ragged edges from raw rows clipped pro rata), with
///   `gpu_seconds` = Σ `gpu_s` and `gpu_name` from the GPU's `gpu` series.
/// - what a GPU's `gpu` points measured in a bucket beyond its model rows (a GPU-hour
///   with no model row, an imported nvidia-smi log) is one `_unattributed` row.
/// - host energy (`host_energy`, CPU + DRAM) beyond the models' `host_j` in a bucket is
///   charged by the host's idle policy as its agent reported it: `resident` → to the
///   host's models in that bucket pro rata to their GPU energy (`_idle` when none has
///   any), `separate` → an `_idle` row. A host that did not report its policy uses the
///   factors file's `idle_policy`, and the report says so.
/// - usage: per (site, model, server, bucket), summed over hosts.
/// - sources, sites, gaps, folded points as before (see `ReportInput`).
///
/// `input_digest` is the SHA-256 (hex) of a canonical serialisation of the returned rows
/// (see [`input_digest`]); factors are not part of it.
pub fn report_input(
    store: &dyn ReportStore,
    period: Period,
    grain_ns: i64,
    fallback_policy: &str,
) -> Result<ReportInput, ReportingError> {
    let (from, to) = (period.from_ns, period.to_ns);
    let models = store.bucket_model_energy(from, to, grain_ns)?;
    let gpus = store.bucket_gpu_energy(from, to, grain_ns)?;
    let hosts = store.bucket_host_energy(from, to, grain_ns)?;

    let mut gpu_name: HashMap<(&str, &str, &str), &str> = HashMap::new();
    for g in &gpus {
        gpu_name
            .entry((&g.site, &g.host, &g.gpu_uuid))
            .or_insert(&g.gpu_name);
    }
    let name_of = |site: &str, host: &str, uuid: &str| -> String {
        gpu_name
            .get(&(site, host, uuid))
            .map(|n| (*n).to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };

    let mut energy: Vec<EnergyRow> = Vec::with_capacity(models.len() + gpus.len());
    // Per GPU-bucket: Σ model GPU energy and GPU time.
    let mut per_gpu: HashMap<(&str, &str, &str, i64), (f64, f64)> = HashMap::new();
    for m in &models {
        let e = per_gpu
            .entry((&m.site, &m.host, &m.gpu_uuid, m.bucket_ns))
            .or_default();
        e.0 += m.active_j + m.idle_j;
        e.1 += m.gpu_s;
        energy.push(EnergyRow {
            site: m.site.clone(),
            host: m.host.clone(),
            gpu_uuid: m.gpu_uuid.clone(),
            gpu_name: name_of(&m.site, &m.host, &m.gpu_uuid),
            model: m.model.clone(),
            server: m.server.clone(),
            hour_start_ns: m.bucket_ns,
            active_j: m.active_j,
            idle_j: m.idle_j,
            host_j: m.host_j,
            gpu_seconds: m.gpu_s,
            tenancy: m.tenancy.clone(),
        });
    }
    for g in &gpus {
        let (rows_j, rows_s) = per_gpu
            .get(&(
                g.site.as_str(),
                g.host.as_str(),
                g.gpu_uuid.as_str(),
                g.bucket_ns,
            ))
            .copied()
            .unwrap_or((0.0, 0.0));
        let rest_j = g.energy_j - rows_j;
        let rest_s = (g.interval_s - rows_s).max(0.0);
        let had_rows = per_gpu.contains_key(&(
            g.site.as_str(),
            g.host.as_str(),
            g.gpu_uuid.as_str(),
            g.bucket_ns,
        ));
        let noise = NOISE_J.max(g.energy_j.abs() * 1e-9);
        if rest_j > noise || (!had_rows && (g.energy_j != 0.0 || g.interval_s > 0.0)) {
            energy.push(EnergyRow {
                site: g.site.clone(),
                host: g.host.clone(),
                gpu_uuid: g.gpu_uuid.clone(),
                gpu_name: g.gpu_name.clone(),
                model: MODEL_UNATTRIBUTED.to_owned(),
                server: String::new(),
                hour_start_ns: g.bucket_ns,
                active_j: rest_j.max(0.0),
                idle_j: 0.0,
                host_j: 0.0,
                gpu_seconds: if had_rows { 0.0 } else { rest_s },
                tenancy: Default::default(),
            });
        }
    }

    // Host energy the models were not given, by the host's idle policy.
    let policy_rows = store.idle_policies(from, to)?;
    let mut host_policies: BTreeMap<(String, String), BTreeSet<Option<String>>> = BTreeMap::new();
    for r in &policy_rows {
        host_policies
            .entry((r.site.clone(), r.host.clone()))
            .or_default()
            .insert(r.policy.clone());
    }
    let mut idle_policies: Vec<HostPolicy> = Vec::new();
    let mut policy_of: HashMap<(String, String), String> = HashMap::new();
    let mut host_keys: BTreeSet<(String, String)> = hosts
        .iter()
        .map(|h| (h.site.clone(), h.host.clone()))
        .collect();
    host_keys.extend(host_policies.keys().cloned());
    for key in &host_keys {
        let known: Vec<&String> = host_policies
            .get(key)
            .map(|set| set.iter().flatten().collect())
            .unwrap_or_default();
        let (policy, reported) = match known.as_slice() {
            [one] => ((*one).clone(), "agent".to_owned()),
            [] => (
                fallback_policy.to_owned(),
                "factors file (not reported by the agent)".to_owned(),
            ),
            _ => (
                "separate".to_owned(),
                format!(
                    "agent reported {} in the period; its unassigned host energy goes to _idle",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ),
        };
        policy_of.insert(key.clone(), policy.clone());
        idle_policies.push(HostPolicy {
            site: key.0.clone(),
            host: key.1.clone(),
            policy,
            from: reported,
        });
    }
    // Rows of each host-bucket, by index, for the resident split (hosts by number, so
    // no string is copied per row).
    let mut host_no: HashMap<(String, String), usize> = HashMap::new();
    for r in energy.iter() {
        if !host_no.contains_key(&(r.site.clone(), r.host.clone())) {
            let n = host_no.len();
            host_no.insert((r.site.clone(), r.host.clone()), n);
        }
    }
    let mut rows_of: HashMap<(usize, i64), Vec<usize>> = HashMap::new();
    let mut last: Option<(&str, &str, usize)> = None;
    for (i, r) in energy.iter().enumerate() {
        let n = match last {
            Some((s, h, n)) if s == r.site && h == r.host => n,
            _ => {
                let n = host_no[&(r.site.clone(), r.host.clone())];
                last = Some((&r.site, &r.host, n));
                n
            }
        };
        rows_of.entry((n, r.hour_start_ns)).or_default().push(i);
    }
    let mut host_excess: BTreeMap<(String, String), f64> = BTreeMap::new();
    for h in &hosts {
        let idx = host_no
            .get(&(h.site.clone(), h.host.clone()))
            .and_then(|n| rows_of.get(&(*n, h.bucket_ns)))
            .cloned()
            .unwrap_or_default();
        let given: f64 = idx.iter().map(|&i| energy[i].host_j).sum();
        let rest = h.energy_j - given;
        if rest < -NOISE_J.max(h.energy_j.abs() * 1e-9) {
            *host_excess
                .entry((h.site.clone(), h.host.clone()))
                .or_default() -= rest;
            continue;
        }
        if rest <= NOISE_J.max(h.energy_j.abs() * 1e-9) {
            continue;
        }
        let policy = policy_of
            .get(&(h.site.clone(), h.host.clone()))
            .map(String::as_str)
            .unwrap_or(fallback_policy);
        let weight: f64 = idx
            .iter()
            .filter(|&&i| !energy[i].model.starts_with('_'))
            .map(|&i| energy[i].active_j + energy[i].idle_j)
            .sum();
        if policy == "resident" && weight > 0.0 {
            for &i in &idx {
                let r = &mut energy[i];
                if !r.model.starts_with('_') {
                    r.host_j += rest * (r.active_j + r.idle_j) / weight;
                }
            }
        } else {
            energy.push(EnergyRow {
                site: h.site.clone(),
                host: h.host.clone(),
                gpu_uuid: String::new(),
                gpu_name: String::new(),
                model: inferwatt_core::schema::MODEL_IDLE.to_owned(),
                server: String::new(),
                hour_start_ns: h.bucket_ns,
                active_j: 0.0,
                idle_j: 0.0,
                host_j: rest,
                gpu_seconds: 0.0,
                tenancy: Default::default(),
            });
        }
    }
    let mut notes: Vec<String> = host_excess
        .into_iter()
        .map(|((site, host), j)| {
            format!(
                "host '{host}' at site '{site}': its models' host energy exceeds the host's measured energy by {:.6} kWh; the models' figures are kept",
                inferwatt_core::units::j_to_kwh(j)
            )
        })
        .collect();
    notes.sort();
    // Rows stay in the store's order (by GPU and model, then time) with the derived rows
    // after them; the digest sorts on its own.

    type UsageKey = (String, String, String, crate::input::Tenancy, i64);
    let mut usage_map: BTreeMap<UsageKey, [f64; 3]> = BTreeMap::new();
    for u in store.bucket_model_usage(from, to, grain_ns)? {
        let e = usage_map
            .entry((u.site, u.model, u.server, u.tenancy, u.bucket_ns))
            .or_default();
        e[0] += u.requests.max(0.0);
        e[1] += u.input_tokens.max(0.0);
        e[2] += u.output_tokens.max(0.0);
    }
    let usage: Vec<UsageRow> = usage_map
        .into_iter()
        .map(
            |((site, model, server, tenancy, hour), [r, i, o])| UsageRow {
                site,
                model,
                server,
                hour_start_ns: hour,
                requests: r.round() as u64,
                input_tokens: i.round() as u64,
                output_tokens: o.round() as u64,
                tenancy,
            },
        )
        .collect();

    let mut source_map: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for g in store.sum_gpu_energy(from, to)? {
        let e = source_map.entry((g.site, g.source)).or_default();
        e.0 += g.energy_j;
        e.1 += g.interval_s;
    }
    let sources: Vec<GpuSourceRow> = source_map
        .into_iter()
        .map(|((site, source), (energy_j, seconds))| GpuSourceRow {
            site,
            source,
            energy_j,
            seconds,
        })
        .collect();

    let splits: Vec<SplitEnergyRow> = store
        .sum_split_energy(from, to)?
        .into_iter()
        .map(|s| SplitEnergyRow {
            site: s.site,
            method: s.method,
            energy_j: s.energy_j,
        })
        .collect();

    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    wanted.extend(energy.iter().map(|r| r.site.as_str()));
    wanted.extend(usage.iter().map(|r| r.site.as_str()));
    wanted.extend(sources.iter().map(|r| r.site.as_str()));
    let wanted_sites: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
    let sites: Vec<SiteRow> = store
        .latest_sites(from, to, &wanted_sites)?
        .into_iter()
        .filter(|s| wanted.contains(s.site.as_str()) || s.ts > from)
        .map(|s| SiteRow {
            site: s.site,
            country: s.country,
            zone: s.zone,
            pue: s.pue.unwrap_or(f64::NAN),
            wue_l_per_kwh: s.wue_l_per_kwh.unwrap_or(f64::NAN),
        })
        .collect();

    let gaps: Vec<GapRow> = store
        .gap_points(from, to)?
        .into_iter()
        .map(|g| GapRow {
            from_ns: g.ts - (g.interval_s * 1e9).round() as i64,
            to_ns: g.ts,
            site: g.site,
            host: g.host,
            gpu_uuid: g.gpu_uuid,
            energy_j: g.energy_j,
        })
        .collect();
    let folded_points = store.sum_folded_points(from, to)?;

    let mut input = ReportInput {
        period,
        energy,
        usage,
        sources,
        splits,
        sites,
        gaps,
        folded_points,
        idle_policies,
        grain_ns,
        notes,
        input_digest: String::new(),
    };
    input.input_digest = input_digest(&input);
    Ok(input)
}

/// The canonical digest of `input`'s rows (see [`report_input`]); `input.input_digest`
/// itself is not part of it.
pub fn input_digest(input: &ReportInput) -> String {
    use serde_json::json;
    let h = std::cell::RefCell::new(Sha256::new());
    let line = |v: serde_json::Value| {
        let mut h = h.borrow_mut();
        h.update(v.to_string().as_bytes());
        h.update(b"\n");
    };
    let line_bytes = |b: &[u8]| h.borrow_mut().update(b);
    line(json!([DIGEST_VERSION]));
    line(json!(["period", input.period.from_ns, input.period.to_ns]));
    line(json!(["grain_ns", input.grain_ns]));
    // Energy rows sorted by their tags then time: the distinct tag tuples are ranked once
    // and the rows sorted by (rank, time), integers; each row serialised straight from a
    // tuple (the same JSON as a `json!` array, without building one).
    let mut ranks: BTreeMap<(&str, &str, &str, &str, &str, &str), usize> = BTreeMap::new();
    for r in &input.energy {
        ranks.insert(
            (
                &r.site,
                &r.host,
                &r.gpu_uuid,
                &r.gpu_name,
                &r.model,
                &r.server,
            ),
            0,
        );
    }
    for (i, v) in ranks.values_mut().enumerate() {
        *v = i;
    }
    let mut energy: Vec<(usize, i64, &EnergyRow)> = input
        .energy
        .iter()
        .map(|r| {
            let k = (
                r.site.as_str(),
                r.host.as_str(),
                r.gpu_uuid.as_str(),
                r.gpu_name.as_str(),
                r.model.as_str(),
                r.server.as_str(),
            );
            (ranks[&k], r.hour_start_ns, r)
        })
        .collect();
    energy.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| a.2.active_j.total_cmp(&b.2.active_j))
    });
    let mut buf = Vec::with_capacity(256);
    for (_, _, r) in energy {
        buf.clear();
        let row = (
            "energy",
            &r.site,
            &r.host,
            &r.gpu_uuid,
            &r.gpu_name,
            &r.model,
            &r.server,
            r.hour_start_ns,
            r.active_j,
            r.idle_j,
            r.host_j,
            r.gpu_seconds,
        );
        if serde_json::to_writer(&mut buf, &row).is_ok() {
            buf.push(b'\n');
            line_bytes(&buf);
        }
    }
    let mut usage: Vec<&UsageRow> = input.usage.iter().collect();
    usage.sort_by(|a, b| {
        (&a.site, &a.model, &a.server, a.hour_start_ns).cmp(&(
            &b.site,
            &b.model,
            &b.server,
            b.hour_start_ns,
        ))
    });
    for r in usage {
        line(json!([
            "usage",
            r.site,
            r.model,
            r.server,
            r.hour_start_ns,
            r.requests,
            r.input_tokens,
            r.output_tokens
        ]));
    }
    let mut sources: Vec<&GpuSourceRow> = input.sources.iter().collect();
    sources.sort_by(|a, b| (&a.site, &a.source).cmp(&(&b.site, &b.source)));
    for r in sources {
        line(json!(["source", r.site, r.source, r.energy_j, r.seconds]));
    }
    let mut splits: Vec<&SplitEnergyRow> = input.splits.iter().collect();
    splits.sort_by(|a, b| (&a.site, &a.method).cmp(&(&b.site, &b.method)));
    for r in splits {
        line(json!(["split", r.site, r.method, r.energy_j]));
    }
    let mut sites: Vec<&SiteRow> = input.sites.iter().collect();
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    for r in sites {
        // NaN (not reported) serialises as null.
        line(json!([
            "site",
            r.site,
            r.country,
            r.zone,
            r.pue,
            r.wue_l_per_kwh
        ]));
    }
    let mut gaps: Vec<&GapRow> = input.gaps.iter().collect();
    gaps.sort_by(|a, b| {
        (&a.site, &a.host, &a.gpu_uuid, a.from_ns, a.to_ns).cmp(&(
            &b.site,
            &b.host,
            &b.gpu_uuid,
            b.from_ns,
            b.to_ns,
        ))
    });
    for r in gaps {
        line(json!([
            "gap", r.site, r.host, r.gpu_uuid, r.from_ns, r.to_ns, r.energy_j
        ]));
    }
    line(json!(["folded_points", input.folded_points]));
    for p in &input.idle_policies {
        line(json!(["idle_policy", p.site, p.host, p.policy, p.from]));
    }
    hex::encode(h.into_inner().finalize())
}

/// Parses a time given as RFC 3339 UTC (`2026-11-28T00:00:00Z`, optional fraction, `Z` or
/// `+00:00`) or as Unix seconds (`1795824000`), between 1970 and 2200
/// (`inferwatt_core::time::parse_time_arg`); `key` names the option in errors.
pub fn parse_time(value: &str, key: &'static str) -> Result<i64, ReportingError> {
    use inferwatt_core::time::{parse_time_arg, TimeArgError};
    parse_time_arg(value).map_err(|e| match e {
        TimeArgError::NotATime => ReportingError::BadTime {
            key,
            value: value.to_owned(),
        },
        TimeArgError::OutOfRange => ReportingError::TimeOutOfRange {
            key,
            value: value.to_owned(),
        },
    })
}

/// Parses `--group`/`group=`: a comma-separated list of `model`, `site`, `country`
/// (empty: every breakdown).
pub fn parse_group(value: &str) -> Result<Vec<GroupBy>, ReportingError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let g = match part.to_ascii_lowercase().as_str() {
            "model" => GroupBy::Model,
            "site" => GroupBy::Site,
            "country" => GroupBy::Country,
            "namespace" => GroupBy::Namespace,
            "workload" => GroupBy::Workload,
            _ => return Err(ReportingError::BadGroup(part.to_owned())),
        };
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

/// The factors a report resolves with: a factors file (from `--factors`, the config's
/// `[factors]`, or none: the agents' reported PUE/WUE and built-in references), the name
/// errors give it, and where its relative `hourly_intensity_csv` paths start.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorsChoice {
    pub file: FactorsFile,
    pub name: String,
    pub base_dir: PathBuf,
}

impl FactorsChoice {
    /// No factors file: agents' site points, then built-in references.
    pub fn builtin() -> FactorsChoice {
        // An empty file: every serde default (methodology version, idle policy).
        let file = FactorsFile::parse("", "built-in").unwrap_or_default();
        FactorsChoice {
            file,
            name: "(none: agents' site points and built-in tables; give --factors FILE or a [factors] config section)".to_owned(),
            base_dir: PathBuf::from("."),
        }
    }

    /// A factors file on disk.
    pub fn load(path: &Path) -> Result<FactorsChoice, ReportingError> {
        Ok(FactorsChoice {
            file: FactorsFile::load(path)?,
            name: path.display().to_string(),
            base_dir: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        })
    }

    /// The config's `[factors]` section; `config_dir` is the config file's directory.
    pub fn from_config(file: FactorsFile, config_dir: &Path) -> FactorsChoice {
        FactorsChoice {
            file,
            name: "[factors] section of the collector config".to_owned(),
            base_dir: config_dir.to_path_buf(),
        }
    }
}

/// What to report: bounds (`None`: the edge of the stored data, rounded out to whole
/// hours), breakdowns and small-count suppression.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportRequest {
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    pub group: Vec<GroupBy>,
    pub min_count: u64,
}

/// The period of `req`: given bounds, else the stored data's first and last hour.
pub fn resolve_period(
    store: &dyn ReportStore,
    req: &ReportRequest,
) -> Result<Period, ReportingError> {
    let bounds = match (req.from_ns, req.to_ns) {
        (Some(f), Some(t)) => (f, t),
        _ => {
            let (min, max) = store.time_bounds()?.ok_or(ReportingError::NoData)?;
            (
                req.from_ns.unwrap_or_else(|| bucket_of(min, HOUR_NS)),
                req.to_ns
                    .unwrap_or_else(|| bucket_of(max, HOUR_NS).saturating_add(HOUR_NS)),
            )
        }
    };
    if bounds.0 >= bounds.1 {
        return Err(ReportingError::EmptyPeriod {
            from: indicators::rfc3339(bounds.0),
            to: indicators::rfc3339(bounds.1),
        });
    }
    Ok(Period {
        from_ns: bounds.0,
        to_ns: bounds.1,
    })
}

/// The report generation time: `SOURCE_DATE_EPOCH` (Unix seconds, the reproducible-builds
/// convention) when set, so two runs over the same data give the same bytes; else now.
pub fn generated_at_ns() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|s| s.checked_mul(1_000_000_000))
        .unwrap_or_else(crate::now_ns)
}

/// Reads the period, resolves the factors and computes the report.
pub fn build_report(
    store: &dyn ReportStore,
    req: &ReportRequest,
    factors: &FactorsChoice,
) -> Result<Report, ReportingError> {
    let period = resolve_period(store, req)?;
    let input = report_input(
        store,
        period,
        report_grain(factors),
        &factors.file.idle_policy,
    )?;
    let resolved = factors
        .file
        .resolve(&input, &factors.name, &factors.base_dir)?;
    Ok(indicators::compute_with(
        &input,
        &resolved,
        &ComputeOptions {
            group: req.group.clone(),
            min_count: req.min_count,
            generated_at_ns: Some(generated_at_ns()),
        },
    ))
}

/// The HTTP `Content-Type` of a report format.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
        Format::Markdown => "text/markdown; charset=utf-8",
        Format::Html => "text/html; charset=utf-8",
    }
}

/// [`build_report`] then [`report::render`]: the bytes the CLI writes and the API returns.
pub fn render_report(
    store: &dyn ReportStore,
    req: &ReportRequest,
    factors: &FactorsChoice,
    format: Format,
) -> Result<String, ReportingError> {
    let report = build_report(store, req, factors)?;
    Ok(report::render(&report, format)?)
}

/// An export users' tools read, of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Hugging Face model card `co2_eq_emissions` block (needs a model).
    HfCard,
    /// CodeCarbon 3.x `emissions.csv`.
    CodeCarbon,
    /// Green Software Foundation Impact Framework manifest.
    ImpactFramework,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hf-card" | "model-card" => Ok(ExportFormat::HfCard),
            "codecarbon" => Ok(ExportFormat::CodeCarbon),
            "impact-framework" | "if" => Ok(ExportFormat::ImpactFramework),
            _ => Err(format!(
                "export format '{s}' is not known; use hf-card, codecarbon or impact-framework"
            )),
        }
    }
}

/// Renders an export of `report`. `model` selects the model of a model card (required
/// there; it must have rows in the report).
pub fn render_export(
    report: &Report,
    format: ExportFormat,
    model: &str,
) -> Result<String, ReportingError> {
    if format == ExportFormat::HfCard && !report.by_model.iter().any(|m| m.model == model) {
        return Err(ReportingError::UnknownModel {
            model: model.to_owned(),
            present: report
                .by_model
                .iter()
                .map(|m| format!("'{}'", m.model))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(match format {
        ExportFormat::HfCard => report::hf_model_card(report, model),
        ExportFormat::CodeCarbon => report::codecarbon_csv(report),
        ExportFormat::ImpactFramework => report::impact_framework_manifest(report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_forms() {
        assert_eq!(
            parse_time("2024-01-01T00:00:00Z", "--from").expect("rfc3339"),
            1_704_067_200_000_000_000
        );
        assert_eq!(
            parse_time("1704067200", "--from").expect("unix"),
            1_704_067_200_000_000_000
        );
        assert_eq!(
            parse_time("2024-02-29T12:34:56.5+00:00", "--to").expect("fraction"),
            1_709_210_096_500_000_000
        );
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "yesterday",
            "",
        ] {
            let e = parse_time(bad, "--to").expect_err(bad).to_string();
            assert!(e.contains(&format!("'{bad}'")) && e.contains("--to"), "{e}");
        }
        // Round trip with the report's own formatter.
        let ns = 1_795_824_000_000_000_000;
        assert_eq!(
            parse_time(&indicators::rfc3339(ns), "--from").expect("rt"),
            ns
        );
    }

    #[test]
    fn groups_parse_and_unknown_is_named() {
        assert_eq!(
            parse_group("model, country").expect("ok"),
            vec![GroupBy::Model, GroupBy::Country]
        );
        assert!(parse_group("").expect("empty").is_empty());
        let e = parse_group("model,region").expect_err("bad").to_string();
        assert!(e.contains("'region'"), "{e}");
    }
}
