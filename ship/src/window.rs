//! Coarse shipping windows (`[ship] interval_s`): the agent samples at full rate and
//! ships each window of UTC time as one point per series.
//!
//! Windows are aligned to multiples of the window length since the Unix epoch; the
//! length divides an hour, so no window straddles one. A sampled interval (one tick's
//! points, whose timestamps are interval ends) belongs to the window whose end is the
//! first multiple at or after its latest timestamp: the points of one tick are read
//! milliseconds apart and are never split between two windows. Within a window, points
//! of one series (measurement + tag set) are folded: additive fields
//! ([`ADDITIVE_FIELDS`]) summed, every other field the value of the latest tick. Every
//! folded point of a window carries the same timestamp, the latest timestamp of all the
//! window's points, so the collector sees one interval end per GPU per window. Unlike a
//! spool-overflow fold ([`crate::fold_points`]), no `folded_points` field is added (that
//! field reports a data-quality event); a point that already carries one keeps summing it.
//!
//! Pure: no clock, no I/O. The agent persists [`ShipWindow::snapshot`] in its state file.

use std::collections::HashMap;

use inferwatt_core::lineproto::Point;

use crate::fold::{merge_fields, ADDITIVE_FIELDS, FOLDED_POINTS_FIELD};

/// The open window and the accumulator of its folded points.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipWindow {
    interval_ns: i64,
    open: Option<Open>,
}

#[derive(Debug, Clone, PartialEq)]
struct Open {
    /// End of the window (a multiple of `interval_ns`).
    end_ns: i64,
    /// Latest timestamp of any point pushed into it.
    latest_ns: i64,
    /// One folded point per series, in first-seen order, and its series key.
    points: Vec<(String, Point)>,
    index: HashMap<String, usize>,
}

impl ShipWindow {
    /// Windows of `interval_s` seconds (rounded to the nanosecond, at least 1 ns).
    pub fn new(interval_s: f64) -> ShipWindow {
        ShipWindow {
            interval_ns: ((interval_s * 1e9).round() as i64).max(1),
            open: None,
        }
    }

    /// The window length in nanoseconds.
    pub fn interval_ns(&self) -> i64 {
        self.interval_ns
    }

    /// The end of the window an interval ending at `ts_ns` belongs to: the first
    /// multiple of the window length at or after it.
    pub fn window_end(&self, ts_ns: i64) -> i64 {
        let n = self.interval_ns;
        ts_ns.div_euclid(n) * n + if ts_ns.rem_euclid(n) == 0 { 0 } else { n }
    }

    /// Whether no point is waiting in an open window.
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }

    /// Adds one sampled interval's points. When they belong to a later window than the
    /// open one, the open window is closed and returned folded (empty otherwise). Points
    /// of an earlier window (a wall clock stepped back) join the open one.
    pub fn push(&mut self, points: Vec<Point>) -> Vec<Point> {
        let Some(latest) = points.iter().filter_map(|p| p.timestamp).max() else {
            return Vec::new();
        };
        let end = self.window_end(latest);
        let closed = match &self.open {
            Some(open) if open.end_ns < end => self.flush(),
            _ => Vec::new(),
        };
        let open = self.open.get_or_insert_with(|| Open {
            end_ns: end,
            latest_ns: latest,
            points: Vec::new(),
            index: HashMap::new(),
        });
        open.latest_ns = open.latest_ns.max(latest);
        for p in points {
            let key = p.series_key();
            match open.index.get(&key) {
                Some(&i) => {
                    let acc = &mut open.points[i].1;
                    merge_fields(&mut acc.fields, p.fields, |k| {
                        ADDITIVE_FIELDS.contains(&k) || k == FOLDED_POINTS_FIELD
                    });
                }
                None => {
                    open.index.insert(key.clone(), open.points.len());
                    open.points.push((key, p));
                }
            }
        }
        closed
    }

    /// Adds one interval that must not be folded with its neighbours (the agent's
    /// downtime, whose `gap` label a fold would lose): the open window is closed, then
    /// these points form a window of their own, closed at once. Returns both, the open
    /// window's points first.
    pub fn push_alone(&mut self, points: Vec<Point>) -> Vec<Point> {
        let mut out = self.flush();
        let closed = self.push(points);
        debug_assert!(closed.is_empty());
        out.extend(self.flush());
        out
    }

    /// Closes the open window and returns its folded points (for shutdown).
    pub fn flush(&mut self) -> Vec<Point> {
        let out = self.snapshot();
        self.open = None;
        out
    }

    /// The open window's folded points, as [`ShipWindow::flush`] would return them,
    /// without closing it: what the agent's state keeps, and spools after a restart.
    /// Sorted by series key, so the same window always encodes to the same bytes.
    pub fn snapshot(&self) -> Vec<Point> {
        let Some(open) = &self.open else {
            return Vec::new();
        };
        let mut pts: Vec<&(String, Point)> = open.points.iter().collect();
        pts.sort_by(|a, b| a.0.cmp(&b.0));
        pts.into_iter()
            .map(|(_, p)| {
                let mut p = p.clone();
                p.timestamp = Some(open.latest_ns);
                p
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferwatt_core::lineproto::FieldValue;

    const S: i64 = 1_000_000_000;
    /// 2026-12-01T00:00:00Z.
    const T0: i64 = 1_796_083_200 * S;

    fn gpu(uuid: &str, ts: i64, energy_j: f64, power_w: f64) -> Point {
        gpu_from(uuid, ts, energy_j, power_w, "counter")
    }

    fn gpu_from(uuid: &str, ts: i64, energy_j: f64, power_w: f64, source: &str) -> Point {
        Point::new("gpu")
            .tag("host", "h")
            .tag("gpu_uuid", uuid)
            .float("energy_j", energy_j)
            .float("power_w", power_w)
            .float("interval_s", 1.0)
            .string("source", source)
            .at(ts)
    }

    fn model(uuid: &str, name: &str, ts: i64, active_j: f64, gpu_s: f64) -> Point {
        Point::new("model_energy")
            .tag("host", "h")
            .tag("gpu_uuid", uuid)
            .tag("model", name)
            .float("active_j", active_j)
            .float("idle_j", 1.0)
            .float("interval_s", 1.0)
            .float("gpu_s", gpu_s)
            .string("method", "sm_util")
            .at(ts)
    }

    #[test]
    fn windows_end_on_multiples_of_their_length_since_the_epoch() {
        let w = ShipWindow::new(60.0);
        assert_eq!(w.window_end(T0), T0, "a multiple ends its own window");
        assert_eq!(w.window_end(T0 + 1), T0 + 60 * S);
        assert_eq!(w.window_end(T0 + 60 * S - 1), T0 + 60 * S);
        assert_eq!(w.window_end(T0 + 60 * S), T0 + 60 * S);
        assert_eq!(w.window_end(T0 + 60 * S + 1), T0 + 120 * S);
        let half = ShipWindow::new(0.5);
        assert_eq!(half.interval_ns(), S / 2);
        assert_eq!(half.window_end(T0 + S / 4), T0 + S / 2);
    }

    #[test]
    fn a_window_closes_when_an_interval_of_a_later_one_arrives() {
        let mut w = ShipWindow::new(5.0);
        for k in 1..=5 {
            let ts = T0 + k * S - S / 3; // ends at 0.67, 1.67, … 4.67 s
            assert!(
                w.push(vec![gpu("a", ts, 10.0, 10.0)]).is_empty(),
                "tick {k}"
            );
        }
        // 5.67 s is in the window ending at 10 s: the first one closes.
        let closed = w.push(vec![gpu("a", T0 + 6 * S - S / 3, 10.0, 10.0)]);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].timestamp, Some(T0 + 5 * S - S / 3));
        assert_eq!(closed[0].field_f64("energy_j"), Some(50.0));
        assert_eq!(closed[0].field_f64("interval_s"), Some(5.0));
        assert!(!w.is_empty());
        let rest = w.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].field_f64("energy_j"), Some(10.0));
        assert!(w.is_empty());
        assert!(w.flush().is_empty());
    }

    #[test]
    fn every_point_of_a_window_has_its_latest_timestamp() {
        let mut w = ShipWindow::new(10.0);
        // GPU b's last interval ends later than a's; a model appears only early on.
        w.push(vec![
            gpu("a", T0 + S, 1.0, 1.0),
            gpu("b", T0 + S + 7, 1.0, 1.0),
            model("a", "early", T0 + S, 1.0, 1.0),
        ]);
        w.push(vec![
            gpu("a", T0 + 2 * S, 1.0, 1.0),
            gpu("b", T0 + 2 * S + 9, 1.0, 1.0),
        ]);
        let out = w.flush();
        assert_eq!(out.len(), 3);
        for p in &out {
            assert_eq!(p.timestamp, Some(T0 + 2 * S + 9), "{p:?}");
            assert!(p.field_value(FOLDED_POINTS_FIELD).is_none(), "{p:?}");
        }
    }

    #[test]
    fn additive_sums_are_those_of_the_intervals_and_the_rest_is_the_latest() {
        let mut w = ShipWindow::new(60.0);
        let energies = [0.1, 0.2, 0.3, 1e-7, 123.456_789, 7.0];
        let mut want_j = 0.0;
        let mut want_gpu_s = 0.0;
        for (k, e) in energies.iter().enumerate() {
            let ts = T0 + (k as i64 + 1) * S;
            let share = 0.25 + 0.1 * k as f64;
            want_j += e;
            want_gpu_s += share;
            w.push(vec![
                gpu("a", ts, *e, 100.0 + k as f64),
                model("a", "m", ts, *e, share),
            ]);
        }
        let out = w.flush();
        let g = out.iter().find(|p| p.measurement == "gpu").expect("gpu");
        let m = out
            .iter()
            .find(|p| p.measurement == "model_energy")
            .expect("model");
        // Exactly the sum, in the order the intervals came: nothing lost to the fold.
        assert_eq!(g.field_f64("energy_j"), Some(want_j));
        assert_eq!(m.field_f64("active_j"), Some(want_j));
        assert_eq!(m.field_f64("gpu_s"), Some(want_gpu_s));
        assert_eq!(m.field_f64("interval_s"), Some(6.0));
        assert!(m.field_f64("gpu_s") <= m.field_f64("interval_s"));
        assert_eq!(g.field_f64("power_w"), Some(105.0), "latest, not summed");
        assert_eq!(
            m.field_value("method"),
            Some(&FieldValue::Str("sm_util".into()))
        );
    }

    #[test]
    fn integers_stay_integers_and_folded_points_keep_summing_without_being_added() {
        let usage = |ts: i64, n: i64| {
            Point::new("model_usage")
                .tag("model", "m")
                .int("requests", n)
                .int("output_tokens", 10 * n)
                .at(ts)
        };
        let mut w = ShipWindow::new(60.0);
        w.push(vec![usage(T0 + S, 2)]);
        w.push(vec![usage(T0 + 2 * S, 3).int(FOLDED_POINTS_FIELD, 4)]);
        w.push(vec![usage(T0 + 3 * S, 1).int(FOLDED_POINTS_FIELD, 2)]);
        let out = w.flush();
        assert_eq!(out[0].field_value("requests"), Some(&FieldValue::Int(6)));
        assert_eq!(
            out[0].field_value("output_tokens"),
            Some(&FieldValue::Int(60))
        );
        assert_eq!(
            out[0].field_value(FOLDED_POINTS_FIELD),
            Some(&FieldValue::Int(6))
        );
    }

    #[test]
    fn series_are_kept_apart_and_the_output_is_sorted_by_series() {
        let mut w = ShipWindow::new(60.0);
        w.push(vec![
            model("b", "m", T0 + S, 1.0, 0.5),
            model("a", "m", T0 + S, 1.0, 0.5),
            model("a", "n", T0 + S, 1.0, 0.5),
            gpu("a", T0 + S, 1.0, 1.0),
        ]);
        let out = w.flush();
        let keys: Vec<String> = out.iter().map(Point::series_key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_clock_stepped_back_stays_in_the_open_window() {
        let mut w = ShipWindow::new(60.0);
        w.push(vec![gpu("a", T0 + 30 * S, 1.0, 1.0)]);
        assert!(w.push(vec![gpu("a", T0 - 30 * S, 1.0, 1.0)]).is_empty());
        let out = w.flush();
        assert_eq!(out[0].field_f64("energy_j"), Some(2.0));
        assert_eq!(out[0].timestamp, Some(T0 + 30 * S));
    }

    #[test]
    fn an_interval_alone_closes_the_open_window_and_keeps_its_own_timestamp() {
        let mut w = ShipWindow::new(60.0);
        w.push(vec![gpu("a", T0 + S, 1.0, 1.0)]);
        let gap = gpu_from("a", T0 + 2 * S, 40.0, 1.0, "gap");
        let out = w.push_alone(vec![gap]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].timestamp, Some(T0 + S));
        assert_eq!(out[0].field_f64("energy_j"), Some(1.0));
        assert_eq!(out[1].timestamp, Some(T0 + 2 * S));
        assert_eq!(
            out[1].field_value("source"),
            Some(&FieldValue::Str("gap".into()))
        );
        assert!(w.is_empty());
        // The rest of that window comes later and gets a later timestamp.
        w.push(vec![gpu("a", T0 + 3 * S, 1.0, 1.0)]);
        assert_eq!(w.flush()[0].timestamp, Some(T0 + 3 * S));
    }

    #[test]
    fn the_snapshot_restored_from_text_is_what_a_flush_ships() {
        use inferwatt_core::lineproto::{decode, encode, Precision};
        let mut w = ShipWindow::new(60.0);
        w.push(vec![
            gpu("a", T0 + S, 0.1, 1.0),
            model("a", "m", T0 + S, 0.1, 0.3),
        ]);
        w.push(vec![
            gpu("a", T0 + 2 * S, 0.2, 1.0),
            model("a", "m", T0 + 2 * S, 0.2, 0.6),
        ]);
        let saved = encode(&w.snapshot()).expect("encode");
        let restored = decode(saved.as_bytes(), Precision::Nanoseconds, 0).expect("decode");
        let flushed = w.flush();
        assert_eq!(
            restored, flushed,
            "the state's copy is the window as shipped"
        );
        assert_eq!(encode(&flushed).expect("encode"), saved, "byte for byte");
    }
}
