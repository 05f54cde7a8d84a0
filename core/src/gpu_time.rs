//! A model's GPU time in an interval (`gpu_s`, [`GPU_SECONDS_FIELD`]): one rule for the
//! collector, which computes it for `model_energy` points that do not carry it, and the
//! agent, which computes it per sampled interval before it folds intervals into coarser
//! shipping windows (after the fold, an interval's shares are no longer in the batch).
//!
//! The rule: a point's own `gpu_s` when it carries one; else its `interval_s` × its share
//! of the GPU energy (`active_j + idle_j`) of the `model_energy` points of the same GPU
//! (`site`, `host`, `gpu_uuid`) and timestamp in the batch, equal shares when none of them
//! has energy. One interval's rows of a GPU share a timestamp, so their shares add up to
//! the GPU's time.

use std::collections::HashMap;

use crate::lineproto::{FieldValue, Point};
use crate::schema::{GPU_SECONDS_FIELD, MODEL_ENERGY};

/// The GPU time of each point of `points` (0 for points that are not `model_energy`), in
/// seconds, by the rule of this module. Missing numeric fields count as 0.
pub fn gpu_seconds(points: &[Point]) -> Vec<f64> {
    type Key<'a> = (&'a str, &'a str, &'a str, i64);
    // Per GPU interval: Σ GPU energy of its model rows and their number.
    let mut groups: HashMap<Key<'_>, (f64, usize)> = HashMap::new();
    for p in points.iter().filter(|p| p.measurement == MODEL_ENERGY) {
        let g = groups.entry(group_key(p)).or_default();
        g.0 += gpu_energy_j(p);
        g.1 += 1;
    }
    points
        .iter()
        .map(|p| {
            if p.measurement != MODEL_ENERGY {
                return 0.0;
            }
            if let Some(g) = p.field_f64(GPU_SECONDS_FIELD) {
                return g;
            }
            let (sum, n) = groups.get(&group_key(p)).copied().unwrap_or((0.0, 1));
            let share = if sum > 0.0 {
                gpu_energy_j(p) / sum
            } else {
                1.0 / n.max(1) as f64
            };
            p.field_f64("interval_s").unwrap_or(0.0) * share
        })
        .collect()
}

/// Adds `gpu_s` ([`gpu_seconds`]) to every `model_energy` point of one interval's batch
/// that does not carry it.
pub fn set_gpu_seconds(points: &mut [Point]) {
    let seconds = gpu_seconds(points);
    for (p, s) in points.iter_mut().zip(seconds) {
        if p.measurement == MODEL_ENERGY && p.field_value(GPU_SECONDS_FIELD).is_none() {
            p.fields
                .push((GPU_SECONDS_FIELD.to_string(), FieldValue::Float(s)));
        }
    }
}

fn group_key(p: &Point) -> (&str, &str, &str, i64) {
    (
        p.tag_value("site").unwrap_or(""),
        p.tag_value("host").unwrap_or(""),
        p.tag_value("gpu_uuid").unwrap_or(""),
        p.timestamp.unwrap_or(0),
    )
}

fn gpu_energy_j(p: &Point) -> f64 {
    (p.field_f64("active_j").unwrap_or(0.0) + p.field_f64("idle_j").unwrap_or(0.0)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(gpu: &str, model: &str, ts: i64, active_j: f64, idle_j: f64) -> Point {
        Point::new(MODEL_ENERGY)
            .tag("site", "s")
            .tag("host", "h")
            .tag("gpu_uuid", gpu)
            .tag("model", model)
            .float("active_j", active_j)
            .float("idle_j", idle_j)
            .float("interval_s", 2.0)
            .at(ts)
    }

    #[test]
    fn shares_of_the_gpu_energy_per_gpu_and_timestamp() {
        let pts = vec![
            row("a", "m", 1, 30.0, 10.0),
            row("a", "n", 1, 50.0, 10.0),
            row("a", "m", 2, 10.0, 0.0), // another interval: alone on its GPU
            row("b", "m", 1, 5.0, 5.0),  // another GPU
            Point::new("gpu")
                .tag("gpu_uuid", "a")
                .float("interval_s", 2.0)
                .at(1),
        ];
        assert_eq!(gpu_seconds(&pts), vec![0.8, 1.2, 2.0, 2.0, 0.0]);
    }

    #[test]
    fn equal_shares_without_energy_and_a_carried_value_wins() {
        let pts = vec![
            row("a", "m", 1, 0.0, 0.0),
            row("a", "n", 1, 0.0, 0.0),
            row("a", "o", 1, 0.0, 0.0).float(GPU_SECONDS_FIELD, 0.25),
        ];
        let s = gpu_seconds(&pts);
        assert_eq!(s[0], 2.0 / 3.0);
        assert_eq!(s[2], 0.25);
    }

    #[test]
    fn set_adds_the_field_once_and_never_above_the_interval() {
        let mut pts = vec![
            row("a", "m", 1, 1.0 / 3.0, 0.1),
            row("a", "n", 1, 2.0 / 7.0, 0.1),
            row("a", "o", 1, 1e-300, 0.0),
        ];
        set_gpu_seconds(&mut pts);
        set_gpu_seconds(&mut pts);
        let total: f64 = pts
            .iter()
            .map(|p| {
                assert_eq!(
                    p.fields
                        .iter()
                        .filter(|(k, _)| k == GPU_SECONDS_FIELD)
                        .count(),
                    1
                );
                let g = p.field_f64(GPU_SECONDS_FIELD).expect("gpu_s");
                assert!(g <= p.field_f64("interval_s").expect("interval_s"));
                g
            })
            .sum();
        assert!((total - 2.0).abs() < 1e-12, "{total}");
    }
}
