//! Folding: merges the points of one series (measurement + tag set) into one coarser
//! point when the spool overflows. Energy is additive, so no joule is lost: additive
//! fields are summed, everything else keeps the latest value, and the result counts how
//! many original points it stands for in `folded_points`.

use std::collections::HashMap;

use inferwatt_core::lineproto::{FieldValue, Point};

/// Fields whose values add up across consecutive intervals of one series.
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
];

/// The integer field a folded point carries: how many original points it stands for.
pub const FOLDED_POINTS_FIELD: &str = "folded_points";

/// Merges points per series (measurement + tag set, tag order ignored).
///
/// Additive fields ([`ADDITIVE_FIELDS`]) are summed; any other field keeps the value of
/// the latest point that has it (latest timestamp; on a tie, the later one in `points`);
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
    for p in group {
        count = count.saturating_add(folded_count(&p));
        let Some(acc) = merged.as_mut() else {
            let mut first = p;
            first.fields.retain(|(k, _)| k != FOLDED_POINTS_FIELD);
            merged = Some(first);
            continue;
        };
        acc.timestamp = match (acc.timestamp, p.timestamp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (key, value) in p.fields {
            if key == FOLDED_POINTS_FIELD {
                continue;
            }
            match acc.fields.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) if ADDITIVE_FIELDS.contains(&key.as_str()) => {
                    *old = add(old, &value).unwrap_or(value);
                }
                Some((_, old)) => *old = value,
                None => acc.fields.push((key, value)),
            }
        }
    }
    let mut point = merged.unwrap_or_else(|| Point::new(""));
    point
        .fields
        .push((FOLDED_POINTS_FIELD.to_string(), FieldValue::Int(count)));
    point
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
