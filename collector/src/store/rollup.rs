//! Typed rows and rollups: reads the numeric fields of the five wire measurements
//! (`gpu`, `model_energy`, `model_usage`, `host_energy`, `site`) out of a point, stores them
//! in the `*_raw` tables and adds them to the hourly and daily `*_rollup` buckets, in the
//! transaction that stores the point. Other measurements are kept in `points` only.

use inferwatt_core::lineproto::{FieldValue, Point};
use inferwatt_core::schema;
use rusqlite::{params, Transaction};

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

/// Stores the typed row of a newly inserted point and adds its interval to the rollup
/// buckets it covers, pro rata to time (raw rows keep the point as sent). `gpu_s` is the
/// A table of (key, energy, seconds) rows, raw and rolled up: `gpu_*` by measurement
/// path (`source`), `model_split_*` by split method (`method`).
struct KeyedRows {
    /// The raw insert (ts, series_id, key, energy_j, interval_s).
    raw: &'static str,
    /// The rollup upsert (level, bucket, series_id, key, energy_j, interval_s, points).
    rollup: &'static str,
}

const GPU_ROWS: KeyedRows = KeyedRows {
    raw: "INSERT INTO gpu_raw (ts, series_id, source, energy_j, interval_s) VALUES (?1, ?2, ?3, ?4, ?5)",
    rollup: "INSERT INTO gpu_rollup (level, bucket, series_id, source, energy_j, interval_s, points)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (level, bucket, series_id, source) DO UPDATE SET
           energy_j = energy_j + excluded.energy_j,
           interval_s = interval_s + excluded.interval_s,
           points = points + excluded.points",
};

const SPLIT_ROWS: KeyedRows = KeyedRows {
    raw: "INSERT INTO model_split_raw (ts, series_id, method, energy_j, interval_s) VALUES (?1, ?2, ?3, ?4, ?5)",
    rollup: "INSERT INTO model_split_rollup (level, bucket, series_id, method, energy_j, interval_s, points)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (level, bucket, series_id, method) DO UPDATE SET
           energy_j = energy_j + excluded.energy_j,
           interval_s = interval_s + excluded.interval_s,
           points = points + excluded.points",
};

/// Stores one keyed row and spreads it over the rollup buckets its interval covers.
fn insert_keyed(
    tx: &Transaction<'_>,
    t: &KeyedRows,
    ts: i64,
    series_id: i64,
    key: &str,
    energy_j: f64,
    interval_s: f64,
) -> Result<(), StoreError> {
    tx.prepare_cached(t.raw)?
        .execute(params![ts, series_id, key, energy_j, interval_s])?;
    let mut up = tx.prepare_cached(t.rollup)?;
    for (width, level) in LEVELS {
        let ps = parts(ts, interval_ns(interval_s), width);
        let e = split_value(energy_j, &ps);
        let n = ps.len();
        for (i, (b, ns)) in ps.iter().enumerate() {
            let secs = if n == 1 { interval_s } else { *ns as f64 / 1e9 };
            up.execute(params![
                level,
                b,
                series_id,
                key,
                e[i],
                secs,
                point_mark(i, n)
            ])?;
        }
    }
    Ok(())
}

/// GPU time of a `model_energy` row (see [`super::Store::write`]).
pub fn insert_typed(
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
        } => insert_keyed(tx, &GPU_ROWS, ts, series_id, source, *energy_j, *interval_s)?,
        Typed::ModelEnergy {
            active_j,
            idle_j,
            host_j,
            interval_s,
            method,
            ..
        } => {
            if let Some(method) = method {
                insert_keyed(
                    tx,
                    &SPLIT_ROWS,
                    ts,
                    series_id,
                    method,
                    active_j + idle_j,
                    *interval_s,
                )?;
            }
            tx.prepare_cached(
                "INSERT INTO model_energy_raw (ts, series_id, active_j, idle_j, host_j, interval_s, gpu_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![ts, series_id, active_j, idle_j, host_j, interval_s, gpu_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO model_energy_rollup (level, bucket, series_id, active_j, idle_j, host_j, interval_s, gpu_s, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   active_j = active_j + excluded.active_j,
                   idle_j = idle_j + excluded.idle_j,
                   host_j = host_j + excluded.host_j,
                   interval_s = interval_s + excluded.interval_s,
                   gpu_s = gpu_s + excluded.gpu_s,
                   points = points + excluded.points",
            )?;
            for (width, level) in LEVELS {
                let ps = parts(ts, interval_ns(*interval_s), width);
                let (a, i_, h, g) = (
                    split_value(*active_j, &ps),
                    split_value(*idle_j, &ps),
                    split_value(*host_j, &ps),
                    split_value(gpu_s, &ps),
                );
                let n = ps.len();
                for (i, (b, ns)) in ps.iter().enumerate() {
                    let secs = if n == 1 {
                        *interval_s
                    } else {
                        *ns as f64 / 1e9
                    };
                    up.execute(params![
                        level,
                        b,
                        series_id,
                        a[i],
                        i_[i],
                        h[i],
                        secs,
                        g[i],
                        point_mark(i, n)
                    ])?;
                }
            }
        }
        Typed::ModelUsage {
            requests,
            input_tokens,
            output_tokens,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO model_usage_raw (ts, series_id, requests, input_tokens, output_tokens, interval_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![ts, series_id, requests, input_tokens, output_tokens, interval_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO model_usage_rollup (level, bucket, series_id, requests, input_tokens, output_tokens, interval_s, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   requests = requests + excluded.requests,
                   input_tokens = input_tokens + excluded.input_tokens,
                   output_tokens = output_tokens + excluded.output_tokens,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + excluded.points",
            )?;
            for (width, level) in LEVELS {
                let ps = parts(ts, interval_ns(*interval_s), width);
                let (r, inp, out) = (
                    split_count(*requests, &ps),
                    split_count(*input_tokens, &ps),
                    split_count(*output_tokens, &ps),
                );
                let n = ps.len();
                for (i, (b, ns)) in ps.iter().enumerate() {
                    let secs = if n == 1 {
                        *interval_s
                    } else {
                        *ns as f64 / 1e9
                    };
                    up.execute(params![
                        level,
                        b,
                        series_id,
                        r[i],
                        inp[i],
                        out[i],
                        secs,
                        point_mark(i, n)
                    ])?;
                }
            }
        }
        Typed::HostEnergy {
            source,
            cpu_j,
            dram_j,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO host_energy_raw (ts, series_id, source, cpu_j, dram_j, interval_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![ts, series_id, source, cpu_j, dram_j, interval_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO host_energy_rollup (level, bucket, series_id, source, cpu_j, dram_j, interval_s, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (level, bucket, series_id, source) DO UPDATE SET
                   cpu_j = cpu_j + excluded.cpu_j,
                   dram_j = dram_j + excluded.dram_j,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + excluded.points",
            )?;
            for (width, level) in LEVELS {
                let ps = parts(ts, interval_ns(*interval_s), width);
                let (c, d) = (split_value(*cpu_j, &ps), split_value(*dram_j, &ps));
                let n = ps.len();
                for (i, (b, ns)) in ps.iter().enumerate() {
                    let secs = if n == 1 {
                        *interval_s
                    } else {
                        *ns as f64 / 1e9
                    };
                    up.execute(params![
                        level,
                        b,
                        series_id,
                        source,
                        c[i],
                        d[i],
                        secs,
                        point_mark(i, n)
                    ])?;
                }
            }
        }
        Typed::Site {
            pue,
            wue_l_per_kwh,
            idle_policy,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO site_raw (ts, series_id, pue, wue_l_per_kwh, interval_s, idle_policy) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![ts, series_id, pue, wue_l_per_kwh, interval_s, idle_policy])?;
            // Site metadata is a state, not an amount: the bucket of its timestamp keeps the
            // latest one.
            let mut up = tx.prepare_cached(
                "INSERT INTO site_rollup (level, bucket, series_id, ts, pue, wue_l_per_kwh, idle_policy, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   pue = CASE WHEN excluded.ts > ts THEN excluded.pue ELSE pue END,
                   wue_l_per_kwh = CASE WHEN excluded.ts > ts THEN excluded.wue_l_per_kwh ELSE wue_l_per_kwh END,
                   idle_policy = CASE WHEN excluded.ts > ts THEN excluded.idle_policy ELSE idle_policy END,
                   ts = MAX(ts, excluded.ts),
                   points = points + 1",
            )?;
            for (width, level) in LEVELS {
                up.execute(params![
                    level,
                    bucket_of(ts, width),
                    series_id,
                    ts,
                    pue,
                    wue_l_per_kwh,
                    idle_policy
                ])?;
            }
        }
        Typed::Other => {}
    }
    Ok(())
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
