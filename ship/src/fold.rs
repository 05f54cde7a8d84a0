//! Folding: merges the points of one series (measurement + tag set) into one coarser
//! point when the spool overflows. Energy is additive, so no joule is lost: additive
//! fields are summed, everything else keeps the latest value, and the result counts how
//! many original points it stands for in `folded_points`.

use std::collections::HashMap;

use inferwatt_core::lineproto::{FieldValue, Point};

/// Fields whose values add up across consecutive intervals of one series: energies,
/// counts, lengths (`interval_s`), a model's GPU time (`gpu_s`, at most `interval_s`, so
/// its sum is at most theirs) and the wall-clock steps (`clock_step_s`, wall − monotonic
/// length).
pub const ADDITIVE_FIELDS: &[&str] = &[
    "energy_j",
    "active_j",
    "idle_j",
    "host_j",
    "cpu_j",
    "dram_j",
    "requests",
    "input_tokens",
    "output_tokens",
    "interval_s",
    "gpu_s",
    "clock_step_s",
];

/// The integer field a folded point carries: how many original points it stands for.
pub const FOLDED_POINTS_FIELD: &str = "folded_points";

/// Merges points per series (measurement + tag set, tag order ignored).
///
/// Additive fields ([`ADDITIVE_FIELDS`]) are summed; any other field keeps the value of
/// the latest point that has it (latest timestamp); a point with the timestamp of an
/// earlier one of its series is a re-send (an agent's state re-delivered after a kill)
/// and is dropped, not summed, as the collector would keep the first;
/// the timestamp is the latest of the group; `folded_points` is the number of original
/// points (a point already folded counts for its own `folded_points`). Output is ordered
/// by timestamp, then series key, so the fold of the same input is always the same.
pub fn fold_points(points: Vec<Point>) -> Vec<Point> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Point>> = HashMap::new();
    for p in points {
        let key = p.series_key();
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(p);
    }
    let mut out: Vec<(String, Point)> = order
        .into_iter()
        .filter_map(|key| {
            let group = groups.remove(&key)?;
            Some((key, merge_series(group)))
        })
        .collect();
    out.sort_by(|(ka, a), (kb, b)| a.timestamp.cmp(&b.timestamp).then_with(|| ka.cmp(kb)));
    out.into_iter().map(|(_, p)| p).collect()
}

/// Merges points of one series (see [`fold_points`]); `group` must not be empty.
fn merge_series(mut group: Vec<Point>) -> Point {
    // Stable sort: points with equal timestamps keep their spool order.
    group.sort_by_key(|p| p.timestamp);
    let mut count: i64 = 0;
    let mut merged: Option<Point> = None;
    let mut last_ts: Option<i64> = None;
    for mut p in group {
        if p.timestamp.is_some() && p.timestamp == last_ts {
            continue;
        }
        last_ts = p.timestamp;
        count = count.saturating_add(folded_count(&p));
        p.fields.retain(|(k, _)| k != FOLDED_POINTS_FIELD);
        let Some(acc) = merged.as_mut() else {
            merged = Some(p);
            continue;
        };
        acc.timestamp = match (acc.timestamp, p.timestamp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        merge_fields(&mut acc.fields, p.fields, |k| ADDITIVE_FIELDS.contains(&k));
    }
    let mut point = merged.unwrap_or_else(|| Point::new(""));
    point
        .fields
        .push((FOLDED_POINTS_FIELD.to_string(), FieldValue::Int(count)));
    point
}

/// Merges the fields of a later point of the same series into `acc`: a field for which
/// `additive` holds is summed (a value that is not a number replaces it), any other
/// takes the later value, and a field `acc` lacks is appended.
pub(crate) fn merge_fields(
    acc: &mut Vec<(String, FieldValue)>,
    later: Vec<(String, FieldValue)>,
    additive: impl Fn(&str) -> bool,
) {
    for (key, value) in later {
        match acc.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) if additive(&key) => *old = add(old, &value).unwrap_or(value),
            Some((_, old)) => *old = value,
            None => acc.push((key, value)),
        }
    }
}

/// How many original points `p` stands for.
fn folded_count(p: &Point) -> i64 {
    match p.field_value(FOLDED_POINTS_FIELD) {
        Some(FieldValue::Int(n)) if *n > 0 => *n,
        Some(FieldValue::UInt(n)) if *n > 0 => i64::try_from(*n).unwrap_or(i64::MAX),
        _ => 1,
    }
}

/// The sum of two numeric values: integers stay integers (saturating), any float makes a
/// float; `None` when either is not a number (the caller then keeps the newer value).
fn add(a: &FieldValue, b: &FieldValue) -> Option<FieldValue> {
    Some(match (a, b) {
        (FieldValue::Int(x), FieldValue::Int(y)) => FieldValue::Int(x.saturating_add(*y)),
        (FieldValue::UInt(x), FieldValue::UInt(y)) => FieldValue::UInt(x.saturating_add(*y)),
        _ => FieldValue::Float(a.as_f64()? + b.as_f64()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(idx: &str, ts: i64, energy: f64, counter: u64, source: &str) -> Point {
        Point::new("gpu")
            .tag("host", "h")
            .tag("gpu_index", idx)
            .float("energy_j", energy)
            .float("power_w", energy)
            .uint("energy_counter_mj", counter)
            .float("interval_s", 1.0)
            .string("source", source)
            .at(ts)
    }

    #[test]
    fn sums_additive_fields_and_keeps_the_latest_of_the_rest() {
        let pts = vec![
            gpu("0", 3, 30.0, 300, "gap"),
            gpu("0", 1, 10.0, 100, "counter"),
            gpu("1", 2, 5.0, 50, "counter"),
            gpu("0", 2, 20.0, 200, "integrated"),
        ];
        let out = fold_points(pts);
        assert_eq!(out.len(), 2);
        let g1 = &out[0];
        assert_eq!(g1.tag_value("gpu_index"), Some("1"));
        assert_eq!(
            g1.field_value(FOLDED_POINTS_FIELD),
            Some(&FieldValue::Int(1))
        );
        let g0 = &out[1];
        assert_eq!(g0.timestamp, Some(3));
        assert_eq!(g0.field_f64("energy_j"), Some(60.0));
        assert_eq!(g0.field_f64("interval_s"), Some(3.0));
        assert_eq!(g0.field_f64("power_w"), Some(30.0));
        assert_eq!(
            g0.field_value("energy_counter_mj"),
            Some(&FieldValue::UInt(300))
        );
        assert_eq!(
            g0.field_value("source"),
            Some(&FieldValue::Str("gap".into()))
        );
        assert_eq!(
            g0.field_value(FOLDED_POINTS_FIELD),
            Some(&FieldValue::Int(3))
        );
    }

    #[test]
    fn refolding_counts_the_original_points_and_keeps_integers_integral() {
        let usage = |ts: i64, n: i64| {
            Point::new("model_usage")
                .tag("model", "m")
                .int("requests", n)
                .uint("output_tokens", 10)
                .at(ts)
        };
        let once = fold_points(vec![usage(1, 2), usage(2, 3)]);
        let twice = fold_points(once.into_iter().chain([usage(3, 4)]).collect());
        assert_eq!(twice.len(), 1);
        assert_eq!(twice[0].field_value("requests"), Some(&FieldValue::Int(9)));
        assert_eq!(
            twice[0].field_value("output_tokens"),
            Some(&FieldValue::UInt(30))
        );
        assert_eq!(
            twice[0].field_value(FOLDED_POINTS_FIELD),
            Some(&FieldValue::Int(3))
        );
        assert_eq!(twice[0].timestamp, Some(3));
    }

    #[test]
    fn a_re_sent_point_in_the_fold_counts_once_as_at_the_collector() {
        let p = |ts: i64, j: f64| {
            Point::new("gpu")
                .tag("gpu_uuid", "a")
                .float("energy_j", j)
                .float("interval_s", 1.0)
                .at(ts)
        };
        // The interval at 2 spooled twice (before a kill and from the state after it);
        // a different value under the same key is what the collector drops as well.
        let out = fold_points(vec![
            p(1, 10.0),
            p(2, 20.0),
            p(2, 20.0),
            p(2, 99.0),
            p(3, 30.0),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field_f64("energy_j"), Some(60.0));
        assert_eq!(out[0].field_f64("interval_s"), Some(3.0));
        assert_eq!(
            out[0].field_value(FOLDED_POINTS_FIELD),
            Some(&FieldValue::Int(3))
        );
        // Points without a timestamp are never taken for re-sends.
        let untimed = Point::new("gpu")
            .tag("gpu_uuid", "a")
            .float("energy_j", 1.0);
        let out = fold_points(vec![untimed.clone(), untimed]);
        assert_eq!(out[0].field_f64("energy_j"), Some(2.0));
    }

    #[test]
    fn gpu_time_and_clock_steps_add_up_like_the_intervals() {
        let row = |ts: i64, gpu_s: f64| {
            Point::new("model_energy")
                .tag("model", "m")
                .float("active_j", 1.0)
                .float("interval_s", 1.0)
                .float("gpu_s", gpu_s)
                .at(ts)
        };
        let out = fold_points(vec![
            row(1, 0.25),
            row(2, 1.0).float("clock_step_s", 0.5),
            row(3, 0.5).float("clock_step_s", -0.25),
        ]);
        assert_eq!(out[0].field_f64("gpu_s"), Some(1.75));
        assert_eq!(out[0].field_f64("interval_s"), Some(3.0));
        assert_eq!(out[0].field_f64("clock_step_s"), Some(0.25));
    }

    #[test]
    fn tag_sets_are_never_merged_across() {
        let a = Point::new("m").tag("a", "1").float("energy_j", 1.0).at(1);
        let b = Point::new("m")
            .tag("a", "1")
            .tag("b", "2")
            .float("energy_j", 1.0)
            .at(1);
        let c = Point::new("n").tag("a", "1").float("energy_j", 1.0).at(1);
        assert_eq!(fold_points(vec![a, b, c]).len(), 3);
    }
}
