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
        interval_s: f64,
    },
    /// Another measurement: stored generically only.
    Other,
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

/// Reads a point's typed content; an error names the field and what it must be. A missing
/// numeric field counts as 0 (a missing `source` as `unknown`).
pub fn classify(p: &Point) -> Result<Typed, String> {
    let f = |k: &str| float(p, k).map(|v| v.unwrap_or(0.0));
    Ok(match p.measurement.as_str() {
        schema::GPU => Typed::Gpu {
            source: text(p, "source")?,
            energy_j: f("energy_j")?,
            interval_s: f("interval_s")?,
        },
        schema::MODEL_ENERGY => Typed::ModelEnergy {
            active_j: f("active_j")?,
            idle_j: f("idle_j")?,
            host_j: f("host_j")?,
            interval_s: f("interval_s")?,
        },
        schema::MODEL_USAGE => Typed::ModelUsage {
            requests: count(p, "requests")?,
            input_tokens: count(p, "input_tokens")?,
            output_tokens: count(p, "output_tokens")?,
            interval_s: f("interval_s")?,
        },
        schema::HOST_ENERGY => Typed::HostEnergy {
            source: text(p, "source")?,
            cpu_j: f("cpu_j")?,
            dram_j: f("dram_j")?,
            interval_s: f("interval_s")?,
        },
        schema::SITE => Typed::Site {
            pue: float(p, "pue")?,
            wue_l_per_kwh: float(p, "wue_l_per_kwh")?,
            interval_s: f("interval_s")?,
        },
        _ => Typed::Other,
    })
}

/// Stores the typed row of a newly inserted point and adds it to its rollup buckets.
pub fn insert_typed(
    tx: &Transaction<'_>,
    series_id: i64,
    ts: i64,
    t: &Typed,
) -> Result<(), StoreError> {
    match t {
        Typed::Gpu {
            source,
            energy_j,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO gpu_raw (ts, series_id, source, energy_j, interval_s) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ts, series_id, source, energy_j, interval_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO gpu_rollup (level, bucket, series_id, source, energy_j, interval_s, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)
                 ON CONFLICT (level, bucket, series_id, source) DO UPDATE SET
                   energy_j = energy_j + excluded.energy_j,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + 1",
            )?;
            for (width, level) in LEVELS {
                up.execute(params![
                    level,
                    bucket_of(ts, width),
                    series_id,
                    source,
                    energy_j,
                    interval_s
                ])?;
            }
        }
        Typed::ModelEnergy {
            active_j,
            idle_j,
            host_j,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO model_energy_raw (ts, series_id, active_j, idle_j, host_j, interval_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![ts, series_id, active_j, idle_j, host_j, interval_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO model_energy_rollup (level, bucket, series_id, active_j, idle_j, host_j, interval_s, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   active_j = active_j + excluded.active_j,
                   idle_j = idle_j + excluded.idle_j,
                   host_j = host_j + excluded.host_j,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + 1",
            )?;
            for (width, level) in LEVELS {
                up.execute(params![
                    level,
                    bucket_of(ts, width),
                    series_id,
                    active_j,
                    idle_j,
                    host_j,
                    interval_s
                ])?;
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   requests = requests + excluded.requests,
                   input_tokens = input_tokens + excluded.input_tokens,
                   output_tokens = output_tokens + excluded.output_tokens,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + 1",
            )?;
            for (width, level) in LEVELS {
                up.execute(params![
                    level,
                    bucket_of(ts, width),
                    series_id,
                    requests,
                    input_tokens,
                    output_tokens,
                    interval_s
                ])?;
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
                 ON CONFLICT (level, bucket, series_id, source) DO UPDATE SET
                   cpu_j = cpu_j + excluded.cpu_j,
                   dram_j = dram_j + excluded.dram_j,
                   interval_s = interval_s + excluded.interval_s,
                   points = points + 1",
            )?;
            for (width, level) in LEVELS {
                up.execute(params![
                    level,
                    bucket_of(ts, width),
                    series_id,
                    source,
                    cpu_j,
                    dram_j,
                    interval_s
                ])?;
            }
        }
        Typed::Site {
            pue,
            wue_l_per_kwh,
            interval_s,
        } => {
            tx.prepare_cached(
                "INSERT INTO site_raw (ts, series_id, pue, wue_l_per_kwh, interval_s) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ts, series_id, pue, wue_l_per_kwh, interval_s])?;
            let mut up = tx.prepare_cached(
                "INSERT INTO site_rollup (level, bucket, series_id, ts, pue, wue_l_per_kwh, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)
                 ON CONFLICT (level, bucket, series_id) DO UPDATE SET
                   pue = CASE WHEN excluded.ts > ts THEN excluded.pue ELSE pue END,
                   wue_l_per_kwh = CASE WHEN excluded.ts > ts THEN excluded.wue_l_per_kwh ELSE wue_l_per_kwh END,
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
                    wue_l_per_kwh
                ])?;
            }
        }
        Typed::Other => {}
    }
    Ok(())
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
        let p = Point::new("gpu").string("energy_j", "x").at(1);
        assert!(classify(&p).expect_err("refused").contains("'energy_j'"));
        let p = Point::new("model_usage").float("requests", 1.5).at(1);
        assert!(classify(&p).expect_err("refused").contains("'requests'"));
        let p = Point::new("other").string("energy_j", "x").at(1);
        assert_eq!(classify(&p), Ok(Typed::Other));
    }
}
