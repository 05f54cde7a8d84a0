//! Typed rows and rollups: reads the numeric fields of the five wire measurements
//! (`gpu`, `model_energy`, `model_usage`, `host_energy`, `site`) out of a point, stores them
//! in the `*_raw` tables and adds them to the hourly and daily `*_rollup` buckets, in the
//! transaction that stores the point: summed per bucket row in memory over the batch
//! ([`Rollups`]), then written once per row. Other measurements are kept in `points` only.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use inferwatt_core::lineproto::{FieldValue, Point};
use inferwatt_core::schema;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{params, OptionalExtension, ToSql, Transaction};

use super::{StoreError, LEVELS};

/// The numeric content of a point of a wire measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    Gpu {
        source: String,
        energy_j: f64,
        interval_s: f64,
    },
    ModelEnergy {
        active_j: f64,
        idle_j: f64,
        host_j: f64,
        interval_s: f64,
        /// The point's own `gpu_s` field, when it carries one.
        gpu_s: Option<f64>,
        /// The split method the agent recorded (`method`), when the point carries one.
        method: Option<String>,
    },
    ModelUsage {
        requests: i64,
        input_tokens: i64,
        output_tokens: i64,
        interval_s: f64,
    },
    HostEnergy {
        source: String,
        cpu_j: f64,
        dram_j: f64,
        interval_s: f64,
    },
    Site {
        pue: Option<f64>,
        wue_l_per_kwh: Option<f64>,
        /// `resident` or `separate`, as the agent ran it; `None` when not said.
        idle_policy: Option<String>,
        interval_s: f64,
    },
    /// Another measurement: stored generically only.
    Other,
}

impl Typed {
    /// The interval the point covers, in seconds (0 for other measurements).
    pub fn interval_s(&self) -> f64 {
        match self {
            Typed::Gpu { interval_s, .. }
            | Typed::ModelEnergy { interval_s, .. }
            | Typed::ModelUsage { interval_s, .. }
            | Typed::HostEnergy { interval_s, .. }
            | Typed::Site { interval_s, .. } => *interval_s,
            Typed::Other => 0.0,
        }
    }
}

/// The bucket (start, in ns) of width `width_ns` that holds interval end `ts`: bucket `b`
/// holds `(b, b + width]`.
pub fn bucket_of(ts: i64, width_ns: i64) -> i64 {
    ts.saturating_sub(1).div_euclid(width_ns) * width_ns
}

fn float(p: &Point, key: &str) -> Result<Option<f64>, String> {
    match p.field_value(key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(format!(
                "field '{key}' of '{}' must be a finite number",
                p.measurement
            )),
        },
    }
}

fn count(p: &Point, key: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "field '{key}' of '{}' must be a non-negative integer count",
            p.measurement
        )
    };
    match p.field_value(key) {
        None => Ok(0),
        Some(FieldValue::Int(i)) if *i >= 0 => Ok(*i),
        Some(FieldValue::UInt(u)) => i64::try_from(*u).map_err(|_| bad()),
        Some(FieldValue::Float(f)) if *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e18 => Ok(*f as i64),
        Some(_) => Err(bad()),
    }
}

fn text(p: &Point, key: &str) -> Result<String, String> {
    match p.field_value(key) {
        None => Ok("unknown".into()),
        Some(FieldValue::Str(s)) => Ok(s.clone()),
        Some(_) => Err(format!(
            "field '{key}' of '{}' must be a string",
            p.measurement
        )),
    }
}

/// Checks a point against `inferwatt_core::validate`'s bounds and reads its typed
/// content; an error names the field and what it must be. A missing numeric field counts
/// as 0 (a missing `source` as `unknown`).
pub fn classify(p: &Point) -> Result<Typed, String> {
    inferwatt_core::validate::check_point(p).map_err(|r| r.0)?;
    let f = |k: &str| float(p, k).map(|v| v.unwrap_or(0.0));
    let interval = || f("interval_s");
    Ok(match p.measurement.as_str() {
        schema::GPU => Typed::Gpu {
            source: text(p, "source")?,
            energy_j: f("energy_j")?,
            interval_s: interval()?,
        },
        schema::MODEL_ENERGY => Typed::ModelEnergy {
            active_j: f("active_j")?,
            idle_j: f("idle_j")?,
            host_j: f("host_j")?,
            interval_s: interval()?,
            gpu_s: match float(p, schema::GPU_SECONDS_FIELD)? {
                Some(g) if g < 0.0 => {
                    return Err(format!(
                        "field 'gpu_s' of '{}' must not be negative",
                        p.measurement
                    ))
                }
                g => g,
            },
            method: match p.field_value("method") {
                None => None,
                Some(_) => {
                    let m = text(p, "method")?;
                    let ok = !m.is_empty()
                        && m.len() <= 32
                        && m.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                    if !ok {
                        return Err(format!(
                            "field 'method' of '{}' must be a split method such as power_model or sm_util (lowercase letters and '_', at most 32)",
                            p.measurement
                        ));
                    }
                    Some(m)
                }
            },
        },
        schema::MODEL_USAGE => Typed::ModelUsage {
            requests: count(p, "requests")?,
            input_tokens: count(p, "input_tokens")?,
            output_tokens: count(p, "output_tokens")?,
            interval_s: interval()?,
        },
        schema::HOST_ENERGY => Typed::HostEnergy {
            source: text(p, "source")?,
            cpu_j: f("cpu_j")?,
            dram_j: f("dram_j")?,
            interval_s: interval()?,
        },
        schema::SITE => Typed::Site {
            pue: float(p, "pue")?,
            wue_l_per_kwh: float(p, "wue_l_per_kwh")?,
            idle_policy: match p.field_value("idle_policy") {
                None => None,
                Some(FieldValue::Str(s)) if s == "resident" || s == "separate" => Some(s.clone()),
                Some(_) => {
                    return Err(format!(
                        "field 'idle_policy' of '{}' must be \"resident\" or \"separate\"",
                        p.measurement
                    ))
                }
            },
            interval_s: interval()?,
        },
        _ => Typed::Other,
    })
}

/// The longest interval a point may cover (366 days, `inferwatt_core::validate`): longer
/// ones are refused, and spreading one would write a bucket row per hour it claims.
pub use inferwatt_core::validate::MAX_INTERVAL_S;

/// The interval `(ts - interval, ts]` of a point, in ns (0 for an instant).
pub fn interval_ns(interval_s: f64) -> i64 {
    (interval_s.clamp(0.0, MAX_INTERVAL_S) * 1e9).round() as i64
}

/// The buckets of width `width_ns` that the interval `(ts - iv_ns, ts]` overlaps, each with
/// the nanoseconds of the interval inside it, in time order. An instant (`iv_ns` 0) lies
/// wholly in the bucket holding `ts`. The overlaps sum to `iv_ns` exactly.
pub fn parts(ts: i64, iv_ns: i64, width_ns: i64) -> Vec<(i64, i64)> {
    let last = bucket_of(ts, width_ns);
    if iv_ns <= 0 {
        return vec![(last, 0)];
    }
    let start = ts.saturating_sub(iv_ns);
    let first = start.div_euclid(width_ns) * width_ns;
    let mut out = Vec::new();
    let mut b = first;
    while b <= last {
        let lo = start.max(b);
        let hi = ts.min(b.saturating_add(width_ns));
        if hi > lo {
            out.push((b, hi - lo));
        }
        b = b.saturating_add(width_ns);
    }
    out
}

/// Splits `value` over parts of an interval pro rata to their nanoseconds, so that the parts
/// add up to `value` (to the last float rounding): each part is the difference of two
/// cumulative shares. An instant keeps the whole value in its one part.
pub fn split_value(value: f64, parts: &[(i64, i64)]) -> Vec<f64> {
    let total: i64 = parts.iter().map(|p| p.1).sum();
    if total <= 0 || parts.len() == 1 {
        return std::iter::once(value)
            .chain(std::iter::repeat_n(0.0, parts.len().saturating_sub(1)))
            .collect();
    }
    let mut out = Vec::with_capacity(parts.len());
    let (mut cum, mut prev) = (0i64, 0.0);
    for (i, (_, ns)) in parts.iter().enumerate() {
        cum += ns;
        let at = if i + 1 == parts.len() {
            value
        } else {
            value * (cum as f64 / total as f64)
        };
        out.push(at - prev);
        prev = at;
    }
    out
}

/// Splits an integer count over parts pro rata to their nanoseconds, with whole numbers that
/// add up to `count` exactly (each part is the difference of two rounded cumulative shares).
pub fn split_count(count: i64, parts: &[(i64, i64)]) -> Vec<i64> {
    let total: i128 = parts.iter().map(|p| i128::from(p.1)).sum();
    if total <= 0 || parts.len() == 1 {
        return std::iter::once(count)
            .chain(std::iter::repeat_n(0, parts.len().saturating_sub(1)))
            .collect();
    }
    let mut out = Vec::with_capacity(parts.len());
    let (mut cum, mut prev) = (0i128, 0i128);
    for (_, ns) in parts {
        cum += i128::from(*ns);
        // round(count × cum / total), exact in i128.
        let at = (i128::from(count) * cum * 2 + total).div_euclid(2 * total);
        out.push((at - prev) as i64);
        prev = at;
    }
    out
}

/// A rollup column that SQLite keeps as an integer, added as SQLite adds: a sum that
/// overflows `i64` goes on as a float. So a batch's rows summed here store exactly what
/// one upsert per row stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SqlInt {
    Int(i64),
    Real(f64),
}

impl SqlInt {
    fn add(self, v: i64) -> SqlInt {
        match self {
            SqlInt::Int(a) => a
                .checked_add(v)
                .map_or(SqlInt::Real(a as f64 + v as f64), SqlInt::Int),
            SqlInt::Real(a) => SqlInt::Real(a + v as f64),
        }
    }
}

impl ToSql for SqlInt {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            SqlInt::Int(i) => ToSqlOutput::from(i),
            SqlInt::Real(f) => ToSqlOutput::from(f),
        })
    }
}

impl FromSql for SqlInt {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Integer(i) => Ok(SqlInt::Int(i)),
            ValueRef::Real(f) => Ok(SqlInt::Real(f)),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// A rollup table whose columns are sums: its key column after (level, bucket,
/// series_id), if any; its float sums (the amounts, then `interval_s`); its integer sums
/// (the counts, then `points`).
struct SumTable {
    table: &'static str,
    key: Option<&'static str>,
    reals: &'static [&'static str],
    ints: &'static [&'static str],
}

const GPU_ROLLUP: SumTable = SumTable {
    table: "gpu_rollup",
    key: Some("source"),
    reals: &["energy_j", "interval_s"],
    ints: &["points"],
};
const SPLIT_ROLLUP: SumTable = SumTable {
    table: "model_split_rollup",
    key: Some("method"),
    reals: &["energy_j", "interval_s"],
    ints: &["points"],
};
const MODEL_ENERGY_ROLLUP: SumTable = SumTable {
    table: "model_energy_rollup",
    key: None,
    reals: &["active_j", "idle_j", "host_j", "gpu_s", "interval_s"],
    ints: &["points"],
};
const MODEL_USAGE_ROLLUP: SumTable = SumTable {
    table: "model_usage_rollup",
    key: None,
    reals: &["interval_s"],
    ints: &["requests", "input_tokens", "output_tokens", "points"],
};
const HOST_ENERGY_ROLLUP: SumTable = SumTable {
    table: "host_energy_rollup",
    key: Some("source"),
    reals: &["cpu_j", "dram_j", "interval_s"],
    ints: &["points"],
};

/// A rollup row's key: (level, bucket, series_id, key column or "").
type RollupKey = (i64, i64, i64, String);

/// A rollup row's sums so far: the stored row's (read once, when the batch first touches
/// it) plus this batch's parts, added in the batch's order.
#[derive(Debug, Clone, PartialEq)]
struct Sums {
    reals: Vec<f64>,
    ints: Vec<SqlInt>,
}

/// The rows of one [`SumTable`] that a batch touches.
struct SumRows {
    spec: &'static SumTable,
    /// Reads the stored row of a key.
    select: String,
    /// Writes a key's final sums.
    upsert: String,
    rows: BTreeMap<RollupKey, Sums>,
}

impl SumRows {
    fn new(spec: &'static SumTable) -> SumRows {
        let key_cols: Vec<&str> = ["level", "bucket", "series_id"]
            .into_iter()
            .chain(spec.key)
            .collect();
        let cols: Vec<&str> = spec.reals.iter().chain(spec.ints).copied().collect();
        let filter = key_cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let all: Vec<&str> = key_cols.iter().chain(&cols).copied().collect();
        let marks = (1..=all.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let set = cols
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        SumRows {
            spec,
            select: format!(
                "SELECT {} FROM {} WHERE {filter}",
                cols.join(", "),
                spec.table
            ),
            upsert: format!(
                "INSERT INTO {} ({}) VALUES ({marks}) ON CONFLICT ({}) DO UPDATE SET {set}",
                spec.table,
                all.join(", "),
                key_cols.join(", ")
            ),
            rows: BTreeMap::new(),
        }
    }

    /// Adds one part of a row to the bucket row `key`: its float and integer amounts, in
    /// the order of [`SumTable::reals`] and [`SumTable::ints`].
    fn add(
        &mut self,
        tx: &Transaction<'_>,
        key: RollupKey,
        reals: &[f64],
        ints: &[i64],
    ) -> Result<(), StoreError> {
        let sums = match self.rows.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let stored = stored_sums(self.spec, &self.select, tx, e.key())?;
                match stored {
                    Some(s) => e.insert(s),
                    // A new row holds the first part as it is.
                    None => {
                        e.insert(Sums {
                            reals: reals.to_vec(),
                            ints: ints.iter().map(|&i| SqlInt::Int(i)).collect(),
                        });
                        return Ok(());
                    }
                }
            }
        };
        for (s, v) in sums.reals.iter_mut().zip(reals) {
            *s += v;
        }
        for (s, v) in sums.ints.iter_mut().zip(ints) {
            *s = s.add(*v);
        }
        Ok(())
    }

    /// Writes every touched row, in key order.
    fn flush(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let mut up = tx.prepare_cached(&self.upsert)?;
        for (key, sums) in &self.rows {
            up.raw_bind_parameter(1, key.0)?;
            up.raw_bind_parameter(2, key.1)?;
            up.raw_bind_parameter(3, key.2)?;
            let mut i = 4;
            if self.spec.key.is_some() {
                up.raw_bind_parameter(4, &key.3)?;
                i = 5;
            }
            for v in &sums.reals {
                up.raw_bind_parameter(i, v)?;
                i += 1;
            }
            for v in &sums.ints {
                up.raw_bind_parameter(i, v)?;
                i += 1;
            }
            up.raw_execute()?;
        }
        Ok(())
    }

    /// Spreads a row's amounts over the buckets of every level that its interval
    /// `(ts - interval_s, ts]` covers, pro rata to time: `amounts` as values, `counts` as
    /// whole numbers; each part also adds its seconds and, in the last part, the point.
    #[allow(clippy::too_many_arguments)]
    fn spread(
        &mut self,
        tx: &Transaction<'_>,
        series_id: i64,
        key: &str,
        ts: i64,
        interval_s: f64,
        amounts: &[f64],
        counts: &[i64],
    ) -> Result<(), StoreError> {
        let iv = interval_ns(interval_s);
        let mut reals = Vec::with_capacity(amounts.len() + 1);
        let mut ints = Vec::with_capacity(counts.len() + 1);
        for (width, level) in LEVELS {
            let ps = parts(ts, iv, width);
            if let [(b, _)] = ps[..] {
                // One bucket holds it all (what the split below gives for one part).
                reals.clear();
                reals.extend_from_slice(amounts);
                reals.push(interval_s);
                ints.clear();
                ints.extend_from_slice(counts);
                ints.push(1);
                self.add(tx, (level, b, series_id, key.to_owned()), &reals, &ints)?;
                continue;
            }
            let a: Vec<Vec<f64>> = amounts.iter().map(|v| split_value(*v, &ps)).collect();
            let c: Vec<Vec<i64>> = counts.iter().map(|v| split_count(*v, &ps)).collect();
            let n = ps.len();
            for (i, (b, ns)) in ps.iter().enumerate() {
                let secs = if n == 1 { interval_s } else { *ns as f64 / 1e9 };
                reals.clear();
                reals.extend(a.iter().map(|v| v[i]));
                reals.push(secs);
                ints.clear();
                ints.extend(c.iter().map(|v| v[i]));
                ints.push(point_mark(i, n));
                self.add(tx, (level, *b, series_id, key.to_owned()), &reals, &ints)?;
            }
        }
        Ok(())
    }
}

/// The stored sums of `key` in `spec`'s table (`select` reads them), if the row exists.
fn stored_sums(
    spec: &SumTable,
    select: &str,
    tx: &Transaction<'_>,
    key: &RollupKey,
) -> Result<Option<Sums>, StoreError> {
    let mut q = tx.prepare_cached(select)?;
    q.raw_bind_parameter(1, key.0)?;
    q.raw_bind_parameter(2, key.1)?;
    q.raw_bind_parameter(3, key.2)?;
    if spec.key.is_some() {
        q.raw_bind_parameter(4, &key.3)?;
    }
    let mut rows = q.raw_query();
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let n = spec.reals.len();
    let reals = (0..n).map(|i| r.get(i)).collect::<Result<_, _>>()?;
    let ints = (0..spec.ints.len())
        .map(|i| r.get(n + i))
        .collect::<Result<_, _>>()?;
    Ok(Some(Sums { reals, ints }))
}

/// The raw tables, as (insert up to `VALUES`, columns), in the order of the indexes below.
const RAW_TABLES: [(&str, usize); 6] = [
    ("INSERT INTO gpu_raw (ts, series_id, source, energy_j, interval_s) VALUES", 5),
    ("INSERT INTO model_split_raw (ts, series_id, method, energy_j, interval_s) VALUES", 5),
    ("INSERT INTO model_energy_raw (ts, series_id, active_j, idle_j, host_j, interval_s, gpu_s) VALUES", 7),
    ("INSERT INTO model_usage_raw (ts, series_id, requests, input_tokens, output_tokens, interval_s) VALUES", 6),
    ("INSERT INTO host_energy_raw (ts, series_id, source, cpu_j, dram_j, interval_s) VALUES", 6),
    ("INSERT INTO site_raw (ts, series_id, pue, wue_l_per_kwh, interval_s, idle_policy) VALUES", 6),
];
const GPU_RAW: usize = 0;
const SPLIT_RAW: usize = 1;
const MODEL_ENERGY_RAW: usize = 2;
const MODEL_USAGE_RAW: usize = 3;
const HOST_ENERGY_RAW: usize = 4;
const SITE_RAW: usize = 5;

/// Raw rows one statement inserts (a multi-row `VALUES`): one statement per row cost
/// a bind, step and reset each.
const RAW_CHUNK: usize = 64;

/// The pending rows of one raw table, inserted [`RAW_CHUNK`] at a time.
struct RawRows {
    head: &'static str,
    width: usize,
    /// The insert of a full chunk.
    full: String,
    values: Vec<Value>,
}

impl RawRows {
    fn new(head: &'static str, width: usize) -> RawRows {
        RawRows {
            head,
            width,
            full: raw_insert(head, width, RAW_CHUNK),
            values: Vec::with_capacity(width * RAW_CHUNK),
        }
    }

    /// Adds a row (its `width` values in column order), inserting a full chunk.
    fn push<const N: usize>(
        &mut self,
        tx: &Transaction<'_>,
        row: [Value; N],
    ) -> Result<(), StoreError> {
        debug_assert_eq!(N, self.width);
        self.values.extend(row);
        if self.values.len() >= self.width * RAW_CHUNK {
            self.insert(tx)?;
        }
        Ok(())
    }

    /// Inserts the pending rows.
    fn insert(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let rows = self.values.len() / self.width;
        if rows == 0 {
            return Ok(());
        }
        let mut q = if rows == RAW_CHUNK {
            tx.prepare_cached(&self.full)?
        } else {
            tx.prepare_cached(&raw_insert(self.head, self.width, rows))?
        };
        for (i, v) in self.values.iter().enumerate() {
            q.raw_bind_parameter(i + 1, v)?;
        }
        q.raw_execute()?;
        self.values.clear();
        Ok(())
    }
}

/// `head` followed by `rows` groups of `width` parameters.
fn raw_insert(head: &str, width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(", "));
    format!("{head} {}", vec![group.as_str(); rows].join(", "))
}

/// The latest site row (by timestamp) of a bucket, and how many rows it saw.
#[derive(Debug, Clone, PartialEq)]
struct SiteState {
    ts: i64,
    pue: Option<f64>,
    wue_l_per_kwh: Option<f64>,
    idle_policy: Option<String>,
    points: SqlInt,
}

/// The rollups a batch adds, summed per bucket row in memory and written once per row
/// when the batch ends ([`Rollups::flush`]), in the write's transaction. Only rows whose
/// point was newly stored are added (the caller skips duplicates), and each bucket row
/// starts from its stored value and adds the batch's parts in the batch's order, so the
/// stored sums are the very numbers one upsert per point produced.
pub struct Rollups {
    /// The raw rows, indexed by `GPU_RAW` ... `SITE_RAW`.
    raw: [RawRows; 6],
    gpu: SumRows,
    split: SumRows,
    model_energy: SumRows,
    model_usage: SumRows,
    host_energy: SumRows,
    site: BTreeMap<(i64, i64, i64), SiteState>,
}

impl Default for Rollups {
    fn default() -> Self {
        Rollups::new()
    }
}

impl Rollups {
    /// Nothing added yet.
    pub fn new() -> Rollups {
        Rollups {
            raw: RAW_TABLES.map(|(head, width)| RawRows::new(head, width)),
            gpu: SumRows::new(&GPU_ROLLUP),
            split: SumRows::new(&SPLIT_ROLLUP),
            model_energy: SumRows::new(&MODEL_ENERGY_ROLLUP),
            model_usage: SumRows::new(&MODEL_USAGE_ROLLUP),
            host_energy: SumRows::new(&HOST_ENERGY_ROLLUP),
            site: BTreeMap::new(),
        }
    }

    /// Stores the typed row of a newly inserted point and adds its interval to the rollup
    /// buckets it covers, pro rata to time (raw rows keep the point as sent). `gpu_s` is
    /// the GPU time of a `model_energy` row (see [`super::Store::write`]).
    pub fn insert(
        &mut self,
        tx: &Transaction<'_>,
        series_id: i64,
        ts: i64,
        t: &Typed,
        gpu_s: f64,
    ) -> Result<(), StoreError> {
        match t {
            Typed::Gpu {
                source,
                energy_j,
                interval_s,
            } => {
                self.raw[GPU_RAW].push(
                    tx,
                    [
                        ts.into(),
                        series_id.into(),
                        source.clone().into(),
                        (*energy_j).into(),
                        (*interval_s).into(),
                    ],
                )?;
                self.gpu
                    .spread(tx, series_id, source, ts, *interval_s, &[*energy_j], &[])?;
            }
            Typed::ModelEnergy {
                active_j,
                idle_j,
                host_j,
                interval_s,
                method,
                ..
            } => {
                if let Some(method) = method {
                    let energy_j = active_j + idle_j;
                    self.raw[SPLIT_RAW].push(
                        tx,
                        [
                            ts.into(),
                            series_id.into(),
                            method.clone().into(),
                            energy_j.into(),
                            (*interval_s).into(),
                        ],
                    )?;
                    self.split
                        .spread(tx, series_id, method, ts, *interval_s, &[energy_j], &[])?;
                }
                self.raw[MODEL_ENERGY_RAW].push(
                    tx,
                    [
                        ts.into(),
                        series_id.into(),
                        (*active_j).into(),
                        (*idle_j).into(),
                        (*host_j).into(),
                        (*interval_s).into(),
                        gpu_s.into(),
                    ],
                )?;
                self.model_energy.spread(
                    tx,
                    series_id,
                    "",
                    ts,
                    *interval_s,
                    &[*active_j, *idle_j, *host_j, gpu_s],
                    &[],
                )?;
            }
            Typed::ModelUsage {
                requests,
                input_tokens,
                output_tokens,
                interval_s,
            } => {
                self.raw[MODEL_USAGE_RAW].push(
                    tx,
                    [
                        ts.into(),
                        series_id.into(),
                        (*requests).into(),
                        (*input_tokens).into(),
                        (*output_tokens).into(),
                        (*interval_s).into(),
                    ],
                )?;
                self.model_usage.spread(
                    tx,
                    series_id,
                    "",
                    ts,
                    *interval_s,
                    &[],
                    &[*requests, *input_tokens, *output_tokens],
                )?;
            }
            Typed::HostEnergy {
                source,
                cpu_j,
                dram_j,
                interval_s,
            } => {
                self.raw[HOST_ENERGY_RAW].push(
                    tx,
                    [
                        ts.into(),
                        series_id.into(),
                        source.clone().into(),
                        (*cpu_j).into(),
                        (*dram_j).into(),
                        (*interval_s).into(),
                    ],
                )?;
                self.host_energy.spread(
                    tx,
                    series_id,
                    source,
                    ts,
                    *interval_s,
                    &[*cpu_j, *dram_j],
                    &[],
                )?;
            }
            Typed::Site {
                pue,
                wue_l_per_kwh,
                idle_policy,
                interval_s,
            } => {
                self.raw[SITE_RAW].push(
                    tx,
                    [
                        ts.into(),
                        series_id.into(),
                        (*pue).into(),
                        (*wue_l_per_kwh).into(),
                        (*interval_s).into(),
                        idle_policy.clone().into(),
                    ],
                )?;
                // Site metadata is a state, not an amount: the bucket of its timestamp keeps
                // the latest one.
                for (width, level) in LEVELS {
                    let key = (level, bucket_of(ts, width), series_id);
                    let row = SiteState {
                        ts,
                        pue: *pue,
                        wue_l_per_kwh: *wue_l_per_kwh,
                        idle_policy: idle_policy.clone(),
                        points: SqlInt::Int(1),
                    };
                    match self.site.entry(key) {
                        Entry::Occupied(mut e) => e.get_mut().update(row),
                        Entry::Vacant(e) => {
                            let k = *e.key();
                            match stored_site(tx, k)? {
                                Some(mut s) => {
                                    s.update(row);
                                    e.insert(s);
                                }
                                None => {
                                    e.insert(row);
                                }
                            }
                        }
                    }
                }
            }
            Typed::Other => {}
        }
        Ok(())
    }

    /// Inserts the raw rows still pending and writes every bucket row the batch
    /// touched, once each.
    pub fn flush(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        for r in &mut self.raw {
            r.insert(tx)?;
        }
        for t in [
            &self.gpu,
            &self.split,
            &self.model_energy,
            &self.model_usage,
            &self.host_energy,
        ] {
            t.flush(tx)?;
        }
        let mut up = tx.prepare_cached(
            "INSERT INTO site_rollup (level, bucket, series_id, ts, pue, wue_l_per_kwh, idle_policy, points)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (level, bucket, series_id) DO UPDATE SET
               ts = excluded.ts, pue = excluded.pue, wue_l_per_kwh = excluded.wue_l_per_kwh,
               idle_policy = excluded.idle_policy, points = excluded.points",
        )?;
        for ((level, bucket, series_id), s) in &self.site {
            up.execute(params![
                level,
                bucket,
                series_id,
                s.ts,
                s.pue,
                s.wue_l_per_kwh,
                s.idle_policy,
                s.points
            ])?;
        }
        Ok(())
    }
}

impl SiteState {
    /// Takes in a later row of the same bucket: its values when it is later than the
    /// latest so far; one more point either way.
    fn update(&mut self, row: SiteState) {
        if row.ts > self.ts {
            self.pue = row.pue;
            self.wue_l_per_kwh = row.wue_l_per_kwh;
            self.idle_policy = row.idle_policy;
        }
        self.ts = self.ts.max(row.ts);
        self.points = self.points.add(1);
    }
}

/// The stored site bucket row of (level, bucket, series_id), if any.
fn stored_site(
    tx: &Transaction<'_>,
    (level, bucket, series_id): (i64, i64, i64),
) -> Result<Option<SiteState>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT ts, pue, wue_l_per_kwh, idle_policy, points FROM site_rollup
             WHERE level = ?1 AND bucket = ?2 AND series_id = ?3",
        )?
        .query_row(params![level, bucket, series_id], |r| {
            Ok(SiteState {
                ts: r.get(0)?,
                pue: r.get(1)?,
                wue_l_per_kwh: r.get(2)?,
                idle_policy: r.get(3)?,
                points: r.get(4)?,
            })
        })
        .optional()?)
}

/// Records the `folded_points` count of a newly inserted point folded by the agent's
/// spool (a non-negative integer field; other values are not a fold count and ignored).
pub fn insert_folded(
    tx: &Transaction<'_>,
    series_id: i64,
    ts: i64,
    p: &Point,
) -> Result<(), StoreError> {
    let n = match p.field_value("folded_points") {
        Some(FieldValue::Int(i)) if *i > 0 => *i,
        Some(FieldValue::UInt(u)) => i64::try_from(*u).unwrap_or(i64::MAX),
        _ => return Ok(()),
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO folded_raw (ts, series_id, folded_points) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![ts, series_id, n])?;
    Ok(())
}

/// A point spread over `n` buckets counts once, in the bucket of its end (the last part).
fn point_mark(i: usize, n: usize) -> i64 {
    i64::from(i + 1 == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HOUR_NS;

    #[test]
    fn interval_end_on_the_hour_belongs_to_the_hour_before() {
        assert_eq!(bucket_of(HOUR_NS, HOUR_NS), 0);
        assert_eq!(bucket_of(HOUR_NS + 1, HOUR_NS), HOUR_NS);
        assert_eq!(bucket_of(1, HOUR_NS), 0);
        assert_eq!(bucket_of(0, HOUR_NS), -HOUR_NS);
    }

    #[test]
    fn wrong_field_types_are_named() {
        let p = Point::new("gpu")
            .string("energy_j", "x")
            .float("interval_s", 1.0)
            .at(1);
        assert!(classify(&p).expect_err("refused").contains("'energy_j'"));
        let p = Point::new("model_usage")
            .float("requests", 1.5)
            .float("interval_s", 1.0)
            .at(1);
        assert!(classify(&p).expect_err("refused").contains("'requests'"));
        let p = Point::new("other").string("energy_j", "x").at(1);
        assert_eq!(classify(&p), Ok(Typed::Other));
    }
}
