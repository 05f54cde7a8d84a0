//! Report queries: sums per series over a period `(from_ns, to_ns]`, read from the daily
//! rollups for whole UTC days, the hourly rollups for whole hours, and the raw rows for
//! the partial edges. Rows are per series (and per `source` where it is a field); the
//! report groups them further.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::rollup;
use super::{Store, StoreError, DAY_NS, HOUR_NS, LEVELS};
use crate::input::Tenancy;

/// A piece of a period: `(lo, hi]` read from raw rows, or whole buckets `[lo, hi)` of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment {
    Raw { lo: i64, hi: i64 },
    Rollup { level: i64, lo: i64, hi: i64 },
}

/// Splits `(from, to]` into whole buckets of the coarsest level that fits, then finer
/// levels, then raw edges.
#[cfg(test)]
pub(crate) fn segments(from: i64, to: i64) -> Vec<Segment> {
    let mut out = Vec::new();
    split(from, to, &LEVELS, &mut out);
    out
}

fn split(from: i64, to: i64, levels: &[(i64, i64)], out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let Some(((width, level), rest)) = levels.split_first() else {
        out.push(Segment::Raw { lo: from, hi: to });
        return;
    };
    // First bucket starting at or after `from`, last bucket ending at or before `to`.
    let a = from.div_euclid(*width) * width
        + if from.rem_euclid(*width) == 0 {
            0
        } else {
            *width
        };
    let b = to.div_euclid(*width) * width;
    if a < b {
        split(from, a, rest, out);
        out.push(Segment::Rollup {
            level: *level,
            lo: a,
            hi: b,
        });
        split(b, to, rest, out);
    } else {
        split(from, to, rest, out);
    }
}

/// Sums of `gpu` points of one GPU and energy `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub gpu_name: String,
    /// `counter`, `integrated`, `gap` (or `unknown` when the point had none).
    pub source: String,
    pub energy_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

impl GpuEnergyRow {
    /// GPU-hours covered: the sum of `interval_s` / 3600.
    pub fn gpu_hours(&self) -> f64 {
        self.interval_s / 3600.0
    }
}

/// Sums of `model_energy` points of one (site, host, gpu_uuid, model, server).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub model: String,
    pub server: String,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    pub interval_s: f64,
    /// The model's share of the GPU's time, seconds (see `Store::write`).
    pub gpu_s: f64,
    pub points: i64,
}

/// Sums of `model_usage` points of one (site, host, model, server).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUsageRow {
    pub site: String,
    pub host: String,
    pub model: String,
    pub server: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub interval_s: f64,
    pub points: i64,
}

/// Sums of `host_energy` points of one (site, host, source).
#[derive(Debug, Clone, PartialEq)]
pub struct HostEnergyRow {
    pub site: String,
    pub host: String,
    pub source: String,
    pub cpu_j: f64,
    pub dram_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

/// The latest `site` point of a site at or before the end of a period.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    pub site: String,
    pub country: String,
    pub zone: String,
    pub pue: Option<f64>,
    pub wue_l_per_kwh: Option<f64>,
    /// Timestamp of that point.
    pub ts: i64,
}

/// Sums (and point count) per (series id, group key, bucket start).
type Sums = HashMap<(i64, String, i64), ([f64; MAX_COLS], i64)>;

/// Most summed columns of a [`Table`] (sums are fixed arrays, not one allocation each).
const MAX_COLS: usize = 5;

/// One typed measurement as the queries read it: its raw and rollup tables, the column
/// read as the group key (`''` for none) and the summed columns.
pub(crate) struct Table {
    pub raw: &'static str,
    pub rollup: &'static str,
    pub key: &'static str,
    pub cols: &'static [&'static str],
}

pub(crate) const GPU_T: Table = Table {
    raw: "gpu_raw",
    rollup: "gpu_rollup",
    key: "source",
    cols: &["energy_j", "interval_s"],
};
pub(crate) const MODEL_T: Table = Table {
    raw: "model_energy_raw",
    rollup: "model_energy_rollup",
    key: "''",
    cols: &["active_j", "idle_j", "host_j", "interval_s", "gpu_s"],
};
pub(crate) const SPLIT_T: Table = Table {
    raw: "model_split_raw",
    rollup: "model_split_rollup",
    key: "method",
    cols: &["energy_j", "interval_s"],
};
pub(crate) const USAGE_T: Table = Table {
    raw: "model_usage_raw",
    rollup: "model_usage_rollup",
    key: "''",
    cols: &["requests", "input_tokens", "output_tokens", "interval_s"],
};
pub(crate) const HOST_T: Table = Table {
    raw: "host_energy_raw",
    rollup: "host_energy_rollup",
    key: "source",
    cols: &["cpu_j", "dram_j", "interval_s"],
};

/// The grain of calendar years (UTC): buckets start on 1 January, as many days long as
/// the year. Reports whose factors only change with the year read it.
pub const YEAR_GRAIN: i64 = i64::MAX;

/// The start (ns) of the calendar year holding `ns`.
pub(crate) fn year_start_ns(ns: i64) -> i64 {
    use inferwatt_core::factors::{year_of, year_start_unix_s};
    year_start_unix_s(year_of(ns.div_euclid(1_000_000_000))).saturating_mul(1_000_000_000)
}

/// The start (ns) of the calendar year after the one holding `ns`.
pub(crate) fn next_year_start_ns(ns: i64) -> i64 {
    use inferwatt_core::factors::{year_of, year_start_unix_s};
    year_start_unix_s(year_of(ns.div_euclid(1_000_000_000)).saturating_add(1))
        .saturating_mul(1_000_000_000)
}

/// The longest interval stored, ns: raw rows ending up to this long after a period can
/// still overlap it.
fn max_interval_ns(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'max_interval_ns'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Sums per (series, key, bucket) of the part of every stored interval inside
/// `(from, to]`. `grain_ns` is the width of the output buckets: 0 sums the whole period
/// into bucket 0 and [`YEAR_GRAIN`] into calendar years (both summed in SQL); [`DAY_NS`]
/// and [`HOUR_NS`] read whole buckets from the rollups (days and hours, or hours only);
/// ragged edges come from raw rows; a finer grain (minutes) reads raw rows only. Raw rows are clipped to the piece read and split over the output buckets
/// pro rata to time, as the rollups were when stored — so any grain sums to the same
/// totals, and a sum over a period holds exactly the energy of the time it covers.
pub(crate) fn bucket_sums(
    conn: &Connection,
    t: &Table,
    from: i64,
    to: i64,
    grain_ns: i64,
) -> Result<Sums, StoreError> {
    let cols = t.cols.join(", ");
    let n = t.cols.len().min(MAX_COLS);
    let mut acc: Sums = HashMap::new();
    let levels: &[(i64, i64)] = if grain_ns == 0 || grain_ns >= DAY_NS {
        &LEVELS
    } else if grain_ns >= HOUR_NS {
        &LEVELS[1..]
    } else {
        &[]
    };
    let out_bucket = |b: i64| match grain_ns {
        0 => 0,
        YEAR_GRAIN => year_start_ns(b),
        g => b.div_euclid(g) * g,
    };
    // Totals and calendar years sum in SQL (one row per series and piece); finer grains
    // read every bucket row.
    let aggregate = grain_ns == 0 || grain_ns == YEAR_GRAIN;
    let max_iv = max_interval_ns(conn)?;
    let mut segs = Vec::new();
    split(from, to, levels, &mut segs);
    for seg in segs {
        match seg {
            Segment::Rollup { level, lo, hi } if aggregate => {
                let sums = t
                    .cols
                    .iter()
                    .map(|c| format!("SUM({c})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT series_id, {key}, {sums}, SUM(points) FROM {table}
                     WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY series_id, {key}",
                    key = t.key,
                    table = t.rollup
                ))?;
                // Pieces of the segment within one calendar year (one piece for totals).
                let mut pieces = Vec::new();
                let mut a = lo;
                while a < hi {
                    let b = if grain_ns == YEAR_GRAIN {
                        next_year_start_ns(a).min(hi)
                    } else {
                        hi
                    };
                    pieces.push((a, b));
                    a = b;
                }
                for (a, b) in pieces {
                    let mut rows = stmt.query(params![level, a, b])?;
                    while let Some(r) = rows.next()? {
                        let id: i64 = r.get(0)?;
                        let key: String = r.get(1)?;
                        let e = acc
                            .entry((id, key, out_bucket(a)))
                            .or_insert(([0.0; MAX_COLS], 0));
                        for (i, v) in e.0.iter_mut().enumerate().take(n) {
                            *v += r.get::<_, Option<f64>>(2 + i)?.unwrap_or(0.0);
                        }
                        e.1 += r.get::<_, Option<i64>>(2 + n)?.unwrap_or(0);
                    }
                }
            }
            Segment::Rollup { level, lo, hi } => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT series_id, {key}, bucket, {cols}, points FROM {table}
                     WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3",
                    key = t.key,
                    table = t.rollup
                ))?;
                let mut rows = stmt.query(params![level, lo, hi])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let key: String = r.get(1)?;
                    let b: i64 = r.get(2)?;
                    let e = acc
                        .entry((id, key, out_bucket(b)))
                        .or_insert(([0.0; MAX_COLS], 0));
                    for (i, v) in e.0.iter_mut().enumerate().take(n) {
                        *v += r.get::<_, f64>(3 + i)?;
                    }
                    e.1 += r.get::<_, i64>(3 + n)?;
                }
            }
            Segment::Raw { lo, hi } => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT series_id, {key}, ts, interval_s, {cols} FROM {table}
                     WHERE ts > ?1 AND ts <= ?2",
                    key = t.key,
                    table = t.raw
                ))?;
                let mut rows = stmt.query(params![lo, hi.saturating_add(max_iv)])?;
                let mut vals = vec![0.0; n];
                while let Some(r) = rows.next()? {
                    let ts: i64 = r.get(2)?;
                    let iv = rollup::interval_ns(r.get(3)?);
                    let (start, end) = (ts.saturating_sub(iv), ts);
                    if iv > 0 && (end <= lo || start >= hi) || iv == 0 && !(lo < ts && ts <= hi) {
                        continue;
                    }
                    for (i, v) in vals.iter_mut().enumerate() {
                        *v = r.get::<_, f64>(4 + i)?;
                    }
                    let id: i64 = r.get(0)?;
                    let key: String = r.get(1)?;
                    // The pieces of the row's interval inside (lo, hi], by output bucket.
                    let pieces: Vec<(i64, f64)> = if iv == 0 {
                        vec![(out_bucket(ts - 1), 1.0)]
                    } else {
                        let (a, b) = (start.max(lo), end.min(hi));
                        let width = if grain_ns == 0 || grain_ns == YEAR_GRAIN {
                            i64::MAX / 4
                        } else {
                            grain_ns
                        };
                        rollup::parts(b, b - a, width)
                            .into_iter()
                            .map(|(bk, ns)| (out_bucket(bk.max(a)), ns as f64 / iv as f64))
                            .collect()
                    };
                    let counted = lo < ts && ts <= hi;
                    let last = pieces.len().saturating_sub(1);
                    for (k, (bk, frac)) in pieces.into_iter().enumerate() {
                        let e = acc
                            .entry((id, key.clone(), bk))
                            .or_insert(([0.0; MAX_COLS], 0));
                        for (i, v) in e.0.iter_mut().enumerate().take(n) {
                            *v += vals[i] * frac;
                        }
                        e.1 += i64::from(counted && k == last);
                    }
                }
            }
        }
    }
    Ok(acc)
}

/// Sums (and point count) per (series id, group key) over a whole period.
type PeriodSums = HashMap<(i64, String), ([f64; MAX_COLS], i64)>;

/// Period totals per (series id, key): [`bucket_sums`] with grain 0.
fn sum_segments(
    conn: &Connection,
    t: &Table,
    from: i64,
    to: i64,
) -> Result<PeriodSums, StoreError> {
    Ok(bucket_sums(conn, t, from, to, 0)?
        .into_iter()
        .map(|((id, key, _), v)| ((id, key), v))
        .collect())
}

/// Tag columns of a series.
/// A series' tag columns (site, host, gpu_uuid, gpu_name, model, server, country, zone)
/// and its Kubernetes tags (namespace, workload_kind, workload) from the tag set.
fn series_tags(conn: &Connection, id: i64) -> Result<[String; 11], StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT site, host, gpu_uuid, gpu_name, model, server, country, zone,
                COALESCE(json_extract(tags, '$.namespace'), ''),
                COALESCE(json_extract(tags, '$.workload_kind'), ''),
                COALESCE(json_extract(tags, '$.workload'), '')
         FROM series WHERE id = ?1",
    )?;
    Ok(stmt.query_row([id], |r| {
        Ok([
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
        ])
    })?)
}

/// The [`Tenancy`] of a series' tags ([`series_tags`]).
fn tenancy_of(t: &[String; 11]) -> Tenancy {
    Tenancy {
        namespace: t[8].clone(),
        workload_kind: t[9].clone(),
        workload: t[10].clone(),
    }
}

impl Store {
    /// `gpu` energy and interval sums per GPU and `source` over `(from_ns, to_ns]`.
    pub fn sum_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<GpuEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments(&conn, &GPU_T, from_ns, to_ns)?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, source), (v, points)) in acc {
            let [energy_j, interval_s] = [v[0], v[1]];
            let [site, host, gpu_uuid, gpu_name, ..] = series_tags(&conn, id)?;
            out.push(GpuEnergyRow {
                site,
                host,
                gpu_uuid,
                gpu_name,
                source,
                energy_j,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, &a.source).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                &b.source,
            ))
        });
        Ok(out)
    }

    /// `model_energy` sums per (site, host, gpu_uuid, model, server) over `(from_ns, to_ns]`.
    pub fn sum_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<ModelEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments(&conn, &MODEL_T, from_ns, to_ns)?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, _), (v, points)) in acc {
            let [active_j, idle_j, host_j, interval_s, gpu_s] = [v[0], v[1], v[2], v[3], v[4]];
            let [site, host, gpu_uuid, _, model, server, ..] = series_tags(&conn, id)?;
            out.push(ModelEnergyRow {
                site,
                host,
                gpu_uuid,
                model,
                server,
                active_j,
                idle_j,
                host_j,
                interval_s,
                gpu_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, &a.model, &a.server).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                &b.model,
                &b.server,
            ))
        });
        Ok(out)
    }

    /// GPU energy of `model_energy` rows per (site, split method) over `(from_ns, to_ns]`
    /// (rows stored before schema v3 carry none).
    pub fn sum_split_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<SplitRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments(&conn, &SPLIT_T, from_ns, to_ns)?;
        let mut by: std::collections::BTreeMap<(String, String), f64> = Default::default();
        for ((id, method), (v, _points)) in acc {
            let [site, ..] = series_tags(&conn, id)?;
            *by.entry((site, method)).or_default() += v[0];
        }
        Ok(by
            .into_iter()
            .map(|((site, method), energy_j)| SplitRow {
                site,
                method,
                energy_j,
            })
            .collect())
    }

    /// `model_usage` sums per (site, host, model, server) over `(from_ns, to_ns]`.
    pub fn sum_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<ModelUsageRow>, StoreError> {
        let conn = self.lock()?;
        // Counts are clipped pro rata at ragged edges (rollups hold whole numbers), then
        // rounded.
        let acc = sum_segments(&conn, &USAGE_T, from_ns, to_ns)?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, _), (v, points)) in acc {
            let [requests, input_tokens, output_tokens, interval_s] = [v[0], v[1], v[2], v[3]];
            let [site, host, _, _, model, server, ..] = series_tags(&conn, id)?;
            out.push(ModelUsageRow {
                site,
                host,
                model,
                server,
                requests: requests.round() as i64,
                input_tokens: input_tokens.round() as i64,
                output_tokens: output_tokens.round() as i64,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.model, &a.server).cmp(&(&b.site, &b.host, &b.model, &b.server))
        });
        Ok(out)
    }

    /// `host_energy` sums per (site, host, source) over `(from_ns, to_ns]`.
    pub fn sum_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<HostEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments(&conn, &HOST_T, from_ns, to_ns)?;
        // Two series of one host (other tags) fold into one row per (site, host, source).
        let mut folded: HashMap<(String, String, String), HostEnergyRow> = HashMap::new();
        for ((id, source), (v, points)) in acc {
            let [cpu_j, dram_j, interval_s] = [v[0], v[1], v[2]];
            let [site, host, ..] = series_tags(&conn, id)?;
            let e = folded
                .entry((site.clone(), host.clone(), source.clone()))
                .or_insert(HostEnergyRow {
                    site,
                    host,
                    source,
                    cpu_j: 0.0,
                    dram_j: 0.0,
                    interval_s: 0.0,
                    points: 0,
                });
            e.cpu_j += cpu_j;
            e.dram_j += dram_j;
            e.interval_s += interval_s;
            e.points += points;
        }
        let mut out: Vec<HostEnergyRow> = folded.into_values().collect();
        out.sort_by(|a, b| (&a.site, &a.host, &a.source).cmp(&(&b.site, &b.host, &b.source)));
        Ok(out)
    }

    /// The latest `site` point of each site with a timestamp at or before `to_ns` (from raw
    /// rows while kept, else from the rollups' latest point per bucket).
    pub fn latest_sites(&self, to_ns: i64) -> Result<Vec<SiteRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.site, s.country, s.zone, x.pue, x.wue_l_per_kwh, MAX(x.ts)
             FROM (SELECT series_id, ts, pue, wue_l_per_kwh FROM site_raw WHERE ts <= ?1
                   UNION ALL
                   SELECT series_id, ts, pue, wue_l_per_kwh FROM site_rollup WHERE level = 3600 AND ts <= ?1) x
             JOIN series s ON s.id = x.series_id
             GROUP BY s.site ORDER BY s.site",
        )?;
        let rows = stmt.query_map([to_ns], |r| {
            Ok(SiteRow {
                site: r.get(0)?,
                country: r.get(1)?,
                zone: r.get(2)?,
                pue: r.get(3)?,
                wue_l_per_kwh: r.get(4)?,
                ts: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// GPU energy split by one method at one site.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRow {
    pub site: String,
    pub method: String,
    pub energy_j: f64,
}

/// `model_energy` sums of one (site, host, gpu_uuid, model, server, tenancy) in one
/// bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketModelEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub model: String,
    pub server: String,
    /// Namespace and workload on Kubernetes (empty off it).
    pub tenancy: Tenancy,
    /// Start `b` of the bucket, which holds the time `(b, b + grain]`.
    pub bucket_ns: i64,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    pub interval_s: f64,
    pub gpu_s: f64,
}

/// `gpu` sums of one GPU in one bucket, all `source`s together.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketGpuRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub gpu_name: String,
    pub bucket_ns: i64,
    pub energy_j: f64,
    pub interval_s: f64,
}

/// `model_usage` sums of one (site, host, model, server) in one bucket (counts clipped pro
/// rata at ragged edges, so not always whole).
#[derive(Debug, Clone, PartialEq)]
pub struct BucketUsageRow {
    pub site: String,
    pub host: String,
    pub model: String,
    pub server: String,
    /// Namespace and workload on Kubernetes (empty off it).
    pub tenancy: Tenancy,
    pub bucket_ns: i64,
    pub requests: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
}

/// `host_energy` sums (CPU + DRAM) of one host in one bucket, all sources together.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketHostRow {
    pub site: String,
    pub host: String,
    pub bucket_ns: i64,
    pub energy_j: f64,
}

/// The idle policy one host's agent reported in a period (`None`: its site points did not
/// say, as agents before schema v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePolicyRow {
    pub site: String,
    pub host: String,
    pub policy: Option<String>,
}

/// One raw `gpu` point with `source = "gap"`.
#[derive(Debug, Clone, PartialEq)]
pub struct GapPointRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    /// Interval end.
    pub ts: i64,
    pub interval_s: f64,
    pub energy_j: f64,
}

/// Tag columns of series, read once per id.
struct TagCache<'c> {
    conn: &'c Connection,
    tags: HashMap<i64, [String; 11]>,
}

impl<'c> TagCache<'c> {
    fn new(conn: &'c Connection) -> Self {
        TagCache {
            conn,
            tags: HashMap::new(),
        }
    }

    fn get(&mut self, id: i64) -> Result<&[String; 11], StoreError> {
        if !self.tags.contains_key(&id) {
            let t = series_tags(self.conn, id)?;
            self.tags.insert(id, t);
        }
        self.tags.get(&id).ok_or(StoreError::Poisoned)
    }
}

/// Maps series ids to the index of their key (`key_of` their tag columns) in a list of
/// distinct keys, sorted, so series that differ only in other tags fold together and
/// rows sort by integers.
fn canonical<K: Ord + Clone>(
    cache: &mut TagCache<'_>,
    ids: impl Iterator<Item = i64>,
    key_of: impl Fn(&[String; 11]) -> K,
) -> Result<(HashMap<i64, usize>, Vec<K>), StoreError> {
    let mut ids: Vec<i64> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    let mut by_key: std::collections::BTreeMap<K, Vec<i64>> = std::collections::BTreeMap::new();
    for id in ids {
        by_key.entry(key_of(cache.get(id)?)).or_default().push(id);
    }
    let mut canon = HashMap::new();
    let mut keys = Vec::with_capacity(by_key.len());
    for (i, (k, ids)) in by_key.into_iter().enumerate() {
        for id in ids {
            canon.insert(id, i);
        }
        keys.push(k);
    }
    Ok((canon, keys))
}

impl Store {
    /// `model_energy` sums per (site, host, gpu_uuid, model, server, bucket of `grain_ns`)
    /// over `(from_ns, to_ns]` (grains as the store's `bucket_sums`: 0, calendar years, days, hours, minutes), sorted by those keys.
    pub fn bucket_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketModelEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = bucket_sums(&conn, &MODEL_T, from_ns, to_ns, grain_ns)?;
        // Two series of one (GPU, model, server) (other tags) fold into one row: each
        // series maps to the index of its (site, host, gpu_uuid, model, server), and rows
        // are summed and sorted by (that index, bucket) — integers, not strings.
        let mut cache = TagCache::new(&conn);
        let (canon, keys) = canonical(&mut cache, acc.keys().map(|k| k.0), |t| {
            (
                [
                    t[0].clone(),
                    t[1].clone(),
                    t[2].clone(),
                    t[4].clone(),
                    t[5].clone(),
                ],
                tenancy_of(t),
            )
        })?;
        let mut folded: HashMap<(usize, i64), [f64; 5]> = HashMap::with_capacity(acc.len());
        for ((id, _, bucket), (v, _)) in acc {
            let e = folded.entry((canon[&id], bucket)).or_default();
            for (x, y) in e.iter_mut().zip(&v) {
                *x += y;
            }
        }
        let mut rows: Vec<((usize, i64), [f64; 5])> = folded.into_iter().collect();
        rows.sort_unstable_by_key(|(k, _)| *k);
        Ok(rows
            .into_iter()
            .map(|((k, bucket), v)| {
                let ([site, host, gpu_uuid, model, server], tenancy) = &keys[k];
                BucketModelEnergyRow {
                    site: site.clone(),
                    host: host.clone(),
                    gpu_uuid: gpu_uuid.clone(),
                    model: model.clone(),
                    server: server.clone(),
                    tenancy: tenancy.clone(),
                    bucket_ns: bucket,
                    active_j: v[0],
                    idle_j: v[1],
                    host_j: v[2],
                    interval_s: v[3],
                    gpu_s: v[4],
                }
            })
            .collect())
    }

    /// `gpu` sums per (site, host, gpu_uuid, bucket), every `source` together, sorted. Two
    /// series of one GPU (e.g. another `gpu_name` or `gpu_index` tag) fold into one row,
    /// keeping the first name in series order.
    pub fn bucket_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketGpuRow>, StoreError> {
        let conn = self.lock()?;
        let acc = bucket_sums(&conn, &GPU_T, from_ns, to_ns, grain_ns)?;
        let mut ids: Vec<_> = acc.into_iter().collect();
        ids.sort_by_key(|a| (a.0 .0, a.0 .2));
        let mut cache = TagCache::new(&conn);
        let mut folded: HashMap<(String, String, String, i64), BucketGpuRow> = HashMap::new();
        for ((id, _, bucket), (v, _)) in ids {
            let [site, host, gpu_uuid, gpu_name, ..] = cache.get(id)?;
            let e = folded
                .entry((site.clone(), host.clone(), gpu_uuid.clone(), bucket))
                .or_insert_with(|| BucketGpuRow {
                    site: site.clone(),
                    host: host.clone(),
                    gpu_uuid: gpu_uuid.clone(),
                    gpu_name: gpu_name.clone(),
                    bucket_ns: bucket,
                    energy_j: 0.0,
                    interval_s: 0.0,
                });
            e.energy_j += v[0];
            e.interval_s += v[1];
        }
        let mut out: Vec<BucketGpuRow> = folded.into_values().collect();
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, a.bucket_ns).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                b.bucket_ns,
            ))
        });
        Ok(out)
    }

    /// `model_usage` sums per (site, host, model, server, bucket), sorted.
    pub fn bucket_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketUsageRow>, StoreError> {
        let conn = self.lock()?;
        let acc = bucket_sums(&conn, &USAGE_T, from_ns, to_ns, grain_ns)?;
        let mut cache = TagCache::new(&conn);
        type Key = (String, String, String, String, Tenancy, i64);
        let mut folded: HashMap<Key, BucketUsageRow> = HashMap::new();
        for ((id, _, bucket), (v, _)) in acc {
            let t = cache.get(id)?;
            let tenancy = tenancy_of(t);
            let [site, host, _, _, model, server, ..] = t;
            let e = folded
                .entry((
                    site.clone(),
                    host.clone(),
                    model.clone(),
                    server.clone(),
                    tenancy.clone(),
                    bucket,
                ))
                .or_insert_with(|| BucketUsageRow {
                    site: site.clone(),
                    host: host.clone(),
                    model: model.clone(),
                    server: server.clone(),
                    tenancy,
                    bucket_ns: bucket,
                    requests: 0.0,
                    input_tokens: 0.0,
                    output_tokens: 0.0,
                });
            e.requests += v[0];
            e.input_tokens += v[1];
            e.output_tokens += v[2];
        }
        let mut out: Vec<BucketUsageRow> = folded.into_values().collect();
        out.sort_by(|a, b| {
            (
                &a.site,
                &a.host,
                &a.model,
                &a.server,
                &a.tenancy,
                a.bucket_ns,
            )
                .cmp(&(
                    &b.site,
                    &b.host,
                    &b.model,
                    &b.server,
                    &b.tenancy,
                    b.bucket_ns,
                ))
        });
        Ok(out)
    }

    /// `host_energy` sums (CPU + DRAM, every source) per (site, host, bucket), sorted.
    pub fn bucket_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketHostRow>, StoreError> {
        let conn = self.lock()?;
        let acc = bucket_sums(&conn, &HOST_T, from_ns, to_ns, grain_ns)?;
        let mut cache = TagCache::new(&conn);
        let mut folded: HashMap<(String, String, i64), f64> = HashMap::new();
        for ((id, _, bucket), (v, _)) in acc {
            let [site, host, ..] = cache.get(id)?;
            *folded
                .entry((site.clone(), host.clone(), bucket))
                .or_default() += v[0] + v[1];
        }
        let mut out: Vec<BucketHostRow> = folded
            .into_iter()
            .map(|((site, host, bucket_ns), energy_j)| BucketHostRow {
                site,
                host,
                bucket_ns,
                energy_j,
            })
            .collect();
        out.sort_by(|a, b| (&a.site, &a.host, a.bucket_ns).cmp(&(&b.site, &b.host, b.bucket_ns)));
        Ok(out)
    }

    /// The idle policies each host's agent reported in `(from_ns, to_ns]` (raw rows while
    /// kept, else the hourly rollups' latest row per hour), sorted; a host that reported
    /// two policies in the period has two rows.
    pub fn idle_policies(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<IdlePolicyRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT s.site, s.host, x.idle_policy
             FROM (SELECT series_id, idle_policy FROM site_raw WHERE ts > ?1 AND ts <= ?2
                   UNION ALL
                   SELECT series_id, idle_policy FROM site_rollup
                   WHERE level = 3600 AND ts > ?1 AND ts <= ?2) x
             JOIN series s ON s.id = x.series_id
             ORDER BY s.site, s.host, x.idle_policy",
        )?;
        let rows = stmt.query_map(params![from_ns, to_ns], |r| {
            Ok(IdlePolicyRow {
                site: r.get(0)?,
                host: r.get(1)?,
                policy: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Raw `gpu` points with `source = "gap"` in `(from_ns, to_ns]`, by time. Only raw
    /// rows are read: gaps older than the raw retention are no longer listed one by one
    /// (their energy still counts in the rollups).
    pub fn gap_points(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GapPointRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.site, s.host, s.gpu_uuid, g.ts, g.interval_s, g.energy_j
             FROM gpu_raw g JOIN series s ON s.id = g.series_id
             WHERE g.ts > ?1 AND g.ts <= ?2 AND g.source = 'gap'
             ORDER BY g.ts, s.site, s.host, s.gpu_uuid",
        )?;
        let rows = stmt.query_map(params![from_ns, to_ns], |r| {
            Ok(GapPointRow {
                site: r.get(0)?,
                host: r.get(1)?,
                gpu_uuid: r.get(2)?,
                ts: r.get(3)?,
                interval_s: r.get(4)?,
                energy_j: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Σ of the integer field `folded_points` (what the agent's spool adds to a point
    /// folded from several, see `inferwatt_ship::fold`) over stored points in
    /// `(from_ns, to_ns]`. Read from the raw points, so folds older than the raw
    /// retention no longer count.
    pub fn sum_folded_points(&self, from_ns: i64, to_ns: i64) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: Option<i64> = conn.query_row(
            "SELECT SUM(folded_points) FROM folded_raw WHERE ts > ?1 AND ts <= ?2",
            params![from_ns, to_ns],
            |r| r.get(0),
        )?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_use_days_then_hours_then_raw() {
        let from = DAY_NS - HOUR_NS - 5;
        let to = 3 * DAY_NS + 2 * HOUR_NS + 7;
        assert_eq!(
            segments(from, to),
            vec![
                Segment::Raw {
                    lo: from,
                    hi: DAY_NS - HOUR_NS
                },
                Segment::Rollup {
                    level: 3600,
                    lo: DAY_NS - HOUR_NS,
                    hi: DAY_NS
                },
                Segment::Rollup {
                    level: 86400,
                    lo: DAY_NS,
                    hi: 3 * DAY_NS
                },
                Segment::Rollup {
                    level: 3600,
                    lo: 3 * DAY_NS,
                    hi: 3 * DAY_NS + 2 * HOUR_NS
                },
                Segment::Raw {
                    lo: 3 * DAY_NS + 2 * HOUR_NS,
                    hi: to
                },
            ]
        );
    }

    #[test]
    fn short_period_is_raw_only() {
        assert_eq!(segments(10, 20), vec![Segment::Raw { lo: 10, hi: 20 }]);
        assert_eq!(segments(20, 10), vec![]);
        assert_eq!(
            segments(0, HOUR_NS),
            vec![Segment::Rollup {
                level: 3600,
                lo: 0,
                hi: HOUR_NS
            }]
        );
    }
}
