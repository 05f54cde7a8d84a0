//! Physical validation of wire points: the one table of bounds a point must meet before
//! anything of it is stored (the collector runs it on every write, HTTP or import).
//!
//! | what | bound |
//! |---|---|
//! | timestamp (every point) | 1970-01-01T00:00:00Z ≤ ts < 2200-01-01T00:00:00Z |
//! | field and tag keys (every point) | each at most once per point |
//! | float fields (every point) | finite |
//! | `interval_s` of `gpu`, `model_energy`, `model_usage`, `host_energy` | 0 < s ≤ 366 days |
//! | `interval_s` of `site` | 0 ≤ s ≤ 366 days (the first site point has no interval yet) |
//! | `gpu.energy_j`, `model_energy.active_j + idle_j` | 0 ≤ J ≤ 10 kW × `interval_s` |
//! | `gpu.power_w` | 0 ≤ W ≤ 10 kW |
//! | `gpu.util_pct` | 0 ≤ % ≤ 100 |
//! | `model_energy.host_j`, `host_energy.cpu_j`, `host_energy.dram_j` | 0 ≤ J ≤ 50 kW × `interval_s` |
//! | `model_energy.gpu_s` | 0 ≤ s ≤ `interval_s` |
//! | `model_usage` counts | whole, 0 ≤ n ≤ 10⁹ × `interval_s` |
//! | `site.pue` | 1 ≤ PUE ≤ 3 |
//! | `site.wue_l_per_kwh` | 0 ≤ L/kWh ≤ 20 |
//!
//! 10 kW per GPU is above any accelerator's board power (an H200 is 700 W, a GB200 board
//! 2.7 kW); 50 kW per host above any host's CPU and memory draw; 366 days bounds the
//! longest outage an agent can book as one `gap`; PUE 3 is above any data centre on
//! record (the Uptime Institute's 2024 survey average is 1.56). A measurement name not
//! in the wire schema is checked only for its timestamp, keys and finite floats.

use crate::lineproto::{FieldValue, Point};
use crate::schema;

/// First valid timestamp, ns (1970-01-01T00:00:00Z).
pub const MIN_TS_NS: i64 = 0;
/// First invalid timestamp, ns (2200-01-01T00:00:00Z).
pub const END_TS_NS: i64 = 7_258_118_400 * 1_000_000_000;
/// Longest interval a point may cover, seconds.
pub const MAX_INTERVAL_S: f64 = 366.0 * 86_400.0;
/// Most power one GPU can draw, W.
pub const MAX_GPU_W: f64 = 10_000.0;
/// Most power one host's CPUs and memory can draw, W.
pub const MAX_HOST_W: f64 = 50_000.0;
/// Most requests or tokens per second of one model on one host.
pub const MAX_COUNT_PER_S: f64 = 1e9;
/// PUE range.
pub const PUE_RANGE: (f64, f64) = (1.0, 3.0);
/// Largest on-site WUE, L/kWh.
pub const MAX_WUE: f64 = 20.0;

/// Why a point is refused: the field (or `timestamp`, a key) and the bound it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(msg: String) -> Result<T, Refusal> {
    Err(Refusal(msg))
}

fn float(p: &Point, key: &str) -> Option<f64> {
    p.field_value(key).and_then(FieldValue::as_f64)
}

fn range(p: &Point, key: &str, lo: f64, hi: f64, unit: &str) -> Result<(), Refusal> {
    match float(p, key) {
        Some(v) if !(lo..=hi).contains(&v) => refuse(format!(
            "field '{key}' of '{}' is {v}; it must be between {lo} and {hi} {unit}",
            p.measurement
        )),
        _ => Ok(()),
    }
}

/// Checks `p` against the table above; the refusal names the field and its bound.
pub fn check_point(p: &Point) -> Result<(), Refusal> {
    let m = p.measurement.as_str();
    match p.timestamp {
        Some(ts) if (MIN_TS_NS..END_TS_NS).contains(&ts) => {}
        Some(ts) => {
            return refuse(format!(
                "timestamp {ts} of '{m}' is outside 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z ({MIN_TS_NS} ≤ ns < {END_TS_NS}); check the write's 'precision'"
            ))
        }
        None => return refuse(format!("point of '{m}' has no timestamp")),
    }
    for (i, (k, v)) in p.fields.iter().enumerate() {
        if p.fields[..i].iter().any(|(k2, _)| k2 == k) {
            return refuse(format!(
                "field '{k}' of '{m}' is given twice; give each field once"
            ));
        }
        if let FieldValue::Float(f) = v {
            if !f.is_finite() {
                return refuse(format!("field '{k}' of '{m}' is {f}; it must be finite"));
            }
        }
    }
    for (i, (k, _)) in p.tags.iter().enumerate() {
        if p.tags[..i].iter().any(|(k2, _)| k2 == k) {
            return refuse(format!(
                "tag '{k}' of '{m}' is given twice; give each tag once"
            ));
        }
    }
    let known = [
        schema::GPU,
        schema::MODEL_ENERGY,
        schema::MODEL_USAGE,
        schema::HOST_ENERGY,
        schema::SITE,
    ];
    if !known.contains(&m) {
        return Ok(());
    }
    let interval = float(p, "interval_s").unwrap_or(0.0);
    if m == schema::SITE {
        range(p, "interval_s", 0.0, MAX_INTERVAL_S, "seconds")?;
    } else if !(interval > 0.0 && interval <= MAX_INTERVAL_S) {
        return refuse(format!(
            "field 'interval_s' of '{m}' is {interval}; it must be more than 0 and at most {MAX_INTERVAL_S} seconds (366 days)"
        ));
    }
    let gpu_max = MAX_GPU_W * interval;
    let host_max = MAX_HOST_W * interval;
    match m {
        schema::GPU => {
            range(p, "energy_j", 0.0, gpu_max, "J (10 kW × interval_s)")?;
            range(p, "power_w", 0.0, MAX_GPU_W, "W")?;
            range(p, "util_pct", 0.0, 100.0, "%")?;
        }
        schema::MODEL_ENERGY => {
            for k in ["active_j", "idle_j"] {
                range(p, k, 0.0, gpu_max, "J (10 kW × interval_s)")?;
            }
            let gpu_j = float(p, "active_j").unwrap_or(0.0) + float(p, "idle_j").unwrap_or(0.0);
            if gpu_j > gpu_max {
                return refuse(format!(
                    "fields 'active_j' + 'idle_j' of '{m}' are {gpu_j} J; together at most {gpu_max} J (10 kW × interval_s)"
                ));
            }
            range(p, "host_j", 0.0, host_max, "J (50 kW × interval_s)")?;
            range(
                p,
                schema::GPU_SECONDS_FIELD,
                0.0,
                interval,
                "seconds (interval_s)",
            )?;
        }
        schema::MODEL_USAGE => {
            let max = MAX_COUNT_PER_S * interval;
            for k in ["requests", "input_tokens", "output_tokens"] {
                let ok = match p.field_value(k) {
                    None => true,
                    Some(FieldValue::Int(i)) => *i >= 0 && (*i as f64) <= max,
                    Some(FieldValue::UInt(u)) => (*u as f64) <= max,
                    Some(FieldValue::Float(f)) => *f >= 0.0 && f.fract() == 0.0 && *f <= max,
                    Some(_) => false,
                };
                if !ok {
                    return refuse(format!(
                        "field '{k}' of '{m}' must be a whole count between 0 and {max} (10⁹ per second of interval_s)"
                    ));
                }
            }
        }
        schema::HOST_ENERGY => {
            for k in ["cpu_j", "dram_j"] {
                range(p, k, 0.0, host_max, "J (50 kW × interval_s)")?;
            }
        }
        schema::SITE => {
            range(p, "pue", PUE_RANGE.0, PUE_RANGE.1, "(PUE)")?;
            range(p, "wue_l_per_kwh", 0.0, MAX_WUE, "L/kWh")?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(energy: f64, interval: f64) -> Point {
        Point::new("gpu")
            .tag("site", "s")
            .float("energy_j", energy)
            .float("interval_s", interval)
            .at(1_700_000_000_000_000_000)
    }

    #[test]
    fn bounds_refuse_with_the_field_named() {
        assert!(check_point(&gpu(500.0, 1.0)).is_ok());
        for (p, needle) in [
            (gpu(-500.0, 1.0), "'energy_j'"),
            (gpu(1e30, 1.0), "'energy_j'"),
            (gpu(1.0, -1.0), "'interval_s'"),
            (gpu(1.0, 0.0), "'interval_s'"),
            (gpu(f64::NAN, 1.0), "finite"),
            (gpu(1.0, 1.0).at(-1), "timestamp"),
            (gpu(1.0, 1.0).at(i64::MIN), "timestamp"),
            (gpu(1.0, 1.0).at(END_TS_NS), "timestamp"),
            (gpu(1.0, 1.0).float("energy_j", 1000.0), "twice"),
            (Point::new("site").float("pue", -5.0).at(1), "'pue'"),
            (
                Point::new("model_usage")
                    .int("requests", -5)
                    .float("interval_s", 1.0)
                    .at(1),
                "'requests'",
            ),
            (
                Point::new("model_energy")
                    .float("active_j", 1.7e308)
                    .float("interval_s", 1.0)
                    .at(1),
                "'active_j'",
            ),
        ] {
            let e = check_point(&p).expect_err(needle).to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // Other measurements: only timestamp, keys and finite floats.
        assert!(check_point(&Point::new("other").float("x", -1.0).at(1)).is_ok());
    }
}
