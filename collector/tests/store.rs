//! Store tests without HTTP: rollups sum to raw for any period, deduplication keeps the
//! first value, data survives reopening, retention and the latest site row.

use inferwatt_collector::store::{Store, DAY_NS, HOUR_NS};
use inferwatt_core::lineproto::Point;
use proptest::prelude::*;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000_000_000 / DAY_NS * DAY_NS;

fn model_energy(host: &str, model: &str, ts: i64, active: f64) -> Point {
    Point::new("model_energy")
        .tag("site", "s1")
        .tag("host", host)
        .tag("gpu_uuid", "GPU-0")
        .tag("model", model)
        .tag("server", "vllm")
        .float("active_j", active)
        .float("idle_j", active / 4.0)
        .float("host_j", 1.0)
        .float("interval_s", 1.0)
        .string("method", "sm_util")
        .at(ts)
}

fn gpu(ts: i64, energy: f64, source: &str) -> Point {
    Point::new("gpu")
        .tag("site", "s1")
        .tag("host", "h1")
        .tag("gpu_uuid", "GPU-0")
        .tag("gpu_index", "0")
        .tag("gpu_name", "H100")
        .float("energy_j", energy)
        .float("interval_s", 2.0)
        .string("source", source)
        .at(ts)
}

fn usage(ts: i64, requests: i64) -> Point {
    Point::new("model_usage")
        .tag("site", "s1")
        .tag("host", "h1")
        .tag("model", "llama")
        .tag("server", "vllm")
        .int("requests", requests)
        .int("input_tokens", requests * 10)
        .int("output_tokens", requests * 100)
        .float("interval_s", 1.0)
        .at(ts)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A point with an explicit interval.
fn with_interval(p: Point, interval_s: f64) -> Point {
    let mut p = p;
    for (k, v) in p.fields.iter_mut() {
        if k == "interval_s" {
            *v = inferwatt_core::lineproto::FieldValue::Float(interval_s);
        }
    }
    p
}

/// The share of the interval `(ts - iv, ts]` inside `(from, to]` (an instant: 1 inside, 0
/// outside).
fn overlap(ts: i64, interval_s: f64, from: i64, to: i64) -> f64 {
    let iv = (interval_s * 1e9).round() as i64;
    if iv == 0 {
        return f64::from(u8::from(ts > from && ts <= to));
    }
    let (a, b) = ((ts - iv).max(from), ts.min(to));
    if b <= a {
        0.0
    } else {
        (b - a) as f64 / iv as f64
    }
}

/// Intervals the store must spread: sub-second and agent ticks, a folded spool point, an
/// hourly import row and a 28-hour outage.
const INTERVALS: [f64; 6] = [0.5, 1.0, 2.0, 600.0, 5400.0, 28.0 * 3600.0];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the points, their intervals and the period, the store's sums over
    /// `(from, to]` hold exactly the part of each interval inside the period (pro rata to
    /// time), whether they come from daily or hourly rollups or clipped raw rows.
    #[test]
    fn sums_hold_the_energy_of_the_time_they_cover(
        offsets in proptest::collection::vec((0i64..3 * DAY_NS, 0u32..1000, 0usize..3, 0usize..6), 1..120),
        a in 0i64..4 * DAY_NS,
        b in 0i64..4 * DAY_NS,
        edges in proptest::bool::ANY,
    ) {
        let store = Store::open_in_memory().expect("store");
        let models = ["llama", "mistral", "_idle"];
        let mut points = Vec::new();
        for (off, e, m, iv) in &offsets {
            // Half the cases land exactly on hour boundaries, where off-by-one errors live.
            let ts = T0 + if edges { off / HOUR_NS * HOUR_NS } else { *off };
            let iv = INTERVALS[*iv];
            points.push(with_interval(model_energy("h1", models[*m], ts, f64::from(*e) * 0.37), iv));
            points.push(with_interval(gpu(ts, f64::from(*e), if e % 2 == 0 { "counter" } else { "integrated" }), iv));
            points.push(with_interval(usage(ts, i64::from(*e)), iv));
        }
        store.write(&points).expect("write");
        let (from, to) = (T0 + a.min(b) - HOUR_NS, T0 + a.max(b));
        let stored: Vec<&Point> = {
            // Deduplicated like the store: first point per (series, ts) wins.
            let mut seen = std::collections::HashSet::new();
            points
                .iter()
                .filter(|p| seen.insert((p.series_key(), p.timestamp)))
                .collect()
        };
        let share = |p: &Point| {
            overlap(p.timestamp.unwrap_or(0), p.field_f64("interval_s").unwrap_or(0.0), from, to)
        };

        let rows = store.sum_model_energy(from, to).expect("query");
        for m in models {
            let want: f64 = stored.iter().filter(|p| p.measurement == "model_energy" && p.tag_value("model") == Some(m))
                .map(|p| p.field_f64("active_j").unwrap_or(0.0) * share(p)).sum();
            let got: f64 = rows.iter().filter(|r| r.model == m).map(|r| r.active_j).sum();
            prop_assert!((want - got).abs() <= 1e-6 * want.abs().max(1.0), "model {m}: raw {want} vs store {got}");
        }
        let n: i64 = rows.iter().map(|r| r.points).sum();
        let ends_inside = |p: &&&Point| p.timestamp.is_some_and(|t| t > from && t <= to);
        prop_assert_eq!(n as usize, stored.iter().filter(|p| p.measurement == "model_energy").filter(ends_inside).count());

        let rows = store.sum_gpu_energy(from, to).expect("query");
        for source in ["counter", "integrated"] {
            let want: f64 = stored.iter().filter(|p| p.measurement == "gpu" && p.field_value("source").and_then(|v| v.as_str()) == Some(source))
                .map(|p| p.field_f64("energy_j").unwrap_or(0.0) * share(p)).sum();
            let got: f64 = rows.iter().filter(|r| r.source == source).map(|r| r.energy_j).sum();
            prop_assert!((want - got).abs() <= 1e-6 * want.abs().max(1.0), "source {source}: raw {want} vs store {got}");
        }

        // Counts are whole in the rollups and clipped at the ragged edges: within one per
        // point the period cuts.
        let rows = store.sum_model_usage(from, to).expect("query");
        let usage_points: Vec<&&Point> = stored.iter().filter(|p| p.measurement == "model_usage").collect();
        let want: f64 = usage_points.iter().map(|p| p.field_f64("output_tokens").unwrap_or(0.0) * share(p)).sum();
        let cut = usage_points.iter().filter(|p| { let s = share(p); s > 0.0 && s < 1.0 }).count() as f64;
        let got: i64 = rows.iter().map(|r| r.output_tokens).sum();
        prop_assert!((want - got as f64).abs() <= cut + 1.0, "tokens: raw {want} vs store {got} ({cut} cut)");
    }
}

/// A 28-hour `_unattributed` interval (agent downtime) lands in the 28 hours it covers,
/// each hour within 0.01% of its share, and in the two days it spans pro rata.
#[test]
fn a_28_hour_interval_spreads_over_its_28_hours() {
    let store = Store::open_in_memory().expect("store");
    let start = T0 + 20 * HOUR_NS;
    let end = start + 28 * HOUR_NS;
    let total = 28.0 * 3600.0 * 300.0;
    let p = Point::new("model_energy")
        .tag("site", "s1")
        .tag("host", "h1")
        .tag("gpu_uuid", "GPU-0")
        .tag("model", "_unattributed")
        .float("active_j", total)
        .float("idle_j", 0.0)
        .float("host_j", 0.0)
        .float("interval_s", 28.0 * 3600.0)
        .string("method", "none")
        .at(end);
    store.write(&[p]).expect("write");
    for h in 0..28 {
        let lo = start + h * HOUR_NS;
        let rows = store.sum_model_energy(lo, lo + HOUR_NS).expect("hour");
        let got = rows.iter().map(|r| r.active_j).sum::<f64>();
        let want = total / 28.0;
        assert!(
            (got - want).abs() <= 1e-4 * want,
            "hour {h}: {got} vs {want}"
        );
    }
    assert!(store
        .sum_model_energy(start - HOUR_NS, start)
        .expect("before")
        .iter()
        .all(|r| r.active_j == 0.0));
    // Day 0 holds 4 of its hours, day 1 all 24.
    let day0: f64 = store
        .sum_model_energy(T0, T0 + DAY_NS)
        .expect("day 0")
        .iter()
        .map(|r| r.active_j)
        .sum();
    let day1: f64 = store
        .sum_model_energy(T0 + DAY_NS, T0 + 2 * DAY_NS)
        .expect("day 1")
        .iter()
        .map(|r| r.active_j)
        .sum();
    assert!((day0 - total * 4.0 / 28.0).abs() <= 1e-6 * total, "{day0}");
    assert!((day1 - total * 24.0 / 28.0).abs() <= 1e-6 * total, "{day1}");
    // The point counts once, at its end.
    let rows = store.sum_model_energy(T0, T0 + 3 * DAY_NS).expect("all");
    assert_eq!(rows.iter().map(|r| r.points).sum::<i64>(), 1);
    assert!((rows[0].active_j - total).abs() <= 1e-6 * total);
}

/// An interval longer than 366 days, or negative, is refused with the field named.
#[test]
fn absurd_intervals_are_refused() {
    let store = Store::open_in_memory().expect("store");
    for iv in [-1.0, 400.0 * 86_400.0] {
        let e = store
            .write(&[with_interval(model_energy("h1", "llama", T0 + 1, 1.0), iv)])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("'interval_s'") && e.contains("366 days"), "{e}");
    }
    assert_eq!(store.count_points().expect("count"), 0);
}

#[test]
fn retried_batch_is_stored_once_and_first_value_wins() {
    let store = Store::open_in_memory().expect("store");
    let batch = vec![
        model_energy("h1", "llama", T0 + 1, 10.0),
        model_energy("h1", "llama", T0 + 2, 20.0),
    ];
    let first = store.write(&batch).expect("write");
    assert_eq!((first.written, first.duplicates), (2, 0));
    let again = store.write(&batch).expect("write");
    assert_eq!(
        (again.written, again.duplicates, again.conflicts),
        (0, 2, 0)
    );
    let changed = store
        .write(&[model_energy("h1", "llama", T0 + 1, 99.0)])
        .expect("write");
    assert_eq!(
        (changed.written, changed.duplicates, changed.conflicts),
        (0, 1, 1)
    );
    assert!(changed.first_conflict.is_some());
    let rows = store
        .sum_model_energy(T0 - HOUR_NS, T0 + 10)
        .expect("query");
    assert_eq!(rows.len(), 1);
    // Within float rounding: the 1-s intervals straddle T0, so the sum is a rollup part
    // plus a clipped raw part.
    assert!(close(rows[0].active_j, 30.0), "{}", rows[0].active_j);
    assert_eq!(store.count_points().expect("count"), 2);
}

#[test]
fn a_bad_point_stores_nothing_of_its_batch() {
    let store = Store::open_in_memory().expect("store");
    let bad = Point::new("gpu")
        .tag("site", "s1")
        .tag("host", "h1")
        .string("energy_j", "lots")
        .float("interval_s", 1.0)
        .at(T0);
    let err = store
        .write(&[model_energy("h1", "llama", T0 + 1, 10.0), bad])
        .expect_err("refused");
    assert!(
        err.to_string().contains("point 1") && err.to_string().contains("'energy_j'"),
        "{err}"
    );
    assert_eq!(store.count_points().expect("count"), 0);
}

#[test]
fn reopening_keeps_data_and_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    {
        let store = Store::open(&path).expect("open");
        store
            .write(&[model_energy("h1", "llama", T0 + 1, 10.0)])
            .expect("write");
        store.add_token("ab", "s1", "h1", 5).expect("token");
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.count_points().expect("count"), 1);
    assert_eq!(
        store.find_token("ab").expect("find").map(|t| t.host),
        Some("h1".into())
    );
    assert!(close(
        store.sum_model_energy(T0 - HOUR_NS, T0 + 1).expect("query")[0].active_j,
        10.0
    ));
}

#[test]
fn retention_drops_old_raw_rows_but_rollups_keep_their_sums() {
    let store = Store::open_in_memory().expect("store");
    let old = T0 + 3 * HOUR_NS + 5;
    let recent = T0 + 10 * DAY_NS;
    store
        .write(&[
            model_energy("h1", "llama", old, 10.0),
            model_energy("h1", "llama", recent, 1.0),
        ])
        .expect("write");
    // Just stored: old by timestamp but not by ingest time, so kept (an import of last
    // year's data must stay deduplicable).
    let now = inferwatt_collector::now_ns();
    assert_eq!(
        store
            .apply_retention(now, 2, 0)
            .expect("retention")
            .raw_deleted,
        0
    );
    // Once the ingest time is past the horizon too, the old raw row goes.
    let later = now + 3 * DAY_NS;
    let out = store.apply_retention(later, 2, 0).expect("retention");
    assert_eq!(out.raw_deleted, 2, "{out:?}");
    // The whole day is read from the daily rollup.
    let rows = store.sum_model_energy(T0, T0 + DAY_NS).expect("query");
    assert_eq!(rows[0].active_j, 10.0);
    // Old data of any age is stored, never refused for its age.
    let o = store
        .write(&[model_energy("h1", "llama", old - 400 * DAY_NS, 10.0)])
        .expect("write");
    assert_eq!(o.written, 1);
    let out = store.apply_retention(recent, 2, 3).expect("retention");
    assert!(out.rollup_deleted >= 2, "{out:?}");
    assert!(store
        .sum_model_energy(T0, T0 + DAY_NS)
        .expect("query")
        .is_empty());
}

#[test]
fn latest_site_row_before_the_period_end() {
    let store = Store::open_in_memory().expect("store");
    let site = |ts: i64, pue: f64| {
        Point::new("site")
            .tag("site", "s1")
            .tag("host", "h1")
            .tag("country", "FR")
            .tag("zone", "FR")
            .float("pue", pue)
            .float("wue_l_per_kwh", 0.2)
            .float("interval_s", 1.0)
            .at(ts)
    };
    store
        .write(&[
            site(T0 + 10, 1.5),
            site(T0 + 2 * HOUR_NS, 1.3),
            site(T0 + 5, 1.9),
        ])
        .expect("write");
    let rows = store.latest_sites(T0 + HOUR_NS).expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].pue, rows[0].ts), (Some(1.5), T0 + 10));
    assert_eq!(rows[0].country, "FR");
    // Once raw rows are gone the hourly rollup still knows each hour's latest row.
    store
        .apply_retention(T0 + 40 * DAY_NS, 1, 0)
        .expect("retention");
    let rows = store.latest_sites(T0 + 3 * HOUR_NS).expect("query");
    assert_eq!((rows[0].pue, rows[0].ts), (Some(1.3), T0 + 2 * HOUR_NS));
}

/// Scale: a year of 64 GPUs × 8 models (one point per series per day, so the daily
/// rollups hold what a year of any interval would hold) plus two days of 10-second raw
/// points at the period's ragged ends. Slow to fill in a debug build, so run it with
/// `cargo test --release -p inferwatt-collector --test store -- --ignored`.
#[test]
#[ignore = "scale check; run with --release --ignored"]
fn a_year_of_64_gpus_and_8_models_reports_in_well_under_a_second() {
    let store = Store::open_in_memory().expect("store");
    let series: Vec<(String, String)> = (0..64)
        .flat_map(|g| (0..8).map(move |m| (format!("GPU-{g}"), format!("model-{m}"))))
        .collect();
    let point = |(gpu, model): &(String, String), ts: i64| {
        Point::new("model_energy")
            .tag("site", "s1")
            .tag("host", format!("h{}", gpu.len()))
            .tag("gpu_uuid", gpu.as_str())
            .tag("model", model.as_str())
            .tag("server", "vllm")
            .float("active_j", 1.0)
            .float("idle_j", 0.5)
            .float("host_j", 0.25)
            .float("interval_s", 10.0)
            .at(ts)
    };
    for day in 0..365 {
        let batch: Vec<Point> = series
            .iter()
            .map(|s| point(s, T0 + day * DAY_NS + 7))
            .collect();
        store.write(&batch).expect("write");
    }
    let tail = T0 + 365 * DAY_NS;
    for step in 0..(2 * HOUR_NS / 10_000_000_000) {
        let ts = tail - HOUR_NS + step * 10_000_000_000 + 3;
        let batch: Vec<Point> = series.iter().map(|s| point(s, ts)).collect();
        store.write(&batch).expect("write");
    }
    let (from, to) = (T0 + HOUR_NS / 2, tail + HOUR_NS / 2);
    let started = Instant::now();
    let rows = store.sum_model_energy(from, to).expect("query");
    let took = started.elapsed();
    assert_eq!(rows.len(), 512);
    let points: i64 = rows.iter().map(|r| r.points).sum();
    assert_eq!(points, 512 * 364 + 512 * 540);
    assert!(
        took < Duration::from_millis(500),
        "a year's report query took {took:?}"
    );
}

/// Every row of every typed table (raw and rollup), in key order, as SQLite holds it.
fn typed_rows(path: &std::path::Path) -> Vec<(String, Vec<Vec<rusqlite::types::Value>>)> {
    let conn = rusqlite::Connection::open(path).expect("open");
    [
        "gpu_raw",
        "model_energy_raw",
        "model_split_raw",
        "model_usage_raw",
        "host_energy_raw",
        "site_raw",
        "gpu_rollup",
        "model_energy_rollup",
        "model_split_rollup",
        "model_usage_rollup",
        "host_energy_rollup",
        "site_rollup",
    ]
    .into_iter()
    .map(|t| {
        let mut q = conn
            .prepare(&format!("SELECT * FROM {t} ORDER BY 1, 2, 3, 4"))
            .expect("prepare");
        let n = q.column_count();
        let rows = q
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .expect("query")
            .collect::<Result<Vec<Vec<rusqlite::types::Value>>, _>>()
            .expect("rows");
        (t.to_string(), rows)
    })
    .collect()
}

fn site(ts: i64, pue: f64) -> Point {
    Point::new("site")
        .tag("site", "s1")
        .float("pue", pue)
        .float("interval_s", 1.0)
        .at(ts)
}

fn host_energy(ts: i64, cpu: f64) -> Point {
    Point::new("host_energy")
        .tag("site", "s1")
        .tag("host", "h1")
        .float("cpu_j", cpu)
        .float("dram_j", cpu / 3.0)
        .float("interval_s", 1.5)
        .string("source", "rapl")
        .at(ts)
}

/// Rollups are summed per bucket row within a batch: the rows stored must be the very
/// numbers (to the bit) that adding the points one write at a time stores, and a point
/// the deduplication skipped (in the batch or stored before) adds nothing. The raw rows,
/// inserted many to a statement, are the same too.
#[test]
fn a_batch_summed_in_memory_stores_the_rollups_of_one_write_per_point() {
    let mut points = Vec::new();
    for i in 0..120i64 {
        // Crossing an hour and a day boundary, values whose float sums depend on order.
        let ts = T0 + DAY_NS - 60 * 1_000_000_000 + i * 1_000_000_000 + 7;
        let x = 0.1 + i as f64 * 1.37;
        // With their own GPU time: without it, a row's share depends on the batch.
        points.push(model_energy("h1", "llama", ts, x).float("gpu_s", 0.75));
        points.push(model_energy("h1", "mistral", ts, x / 3.0).float("gpu_s", 0.25));
        points.push(gpu(
            ts,
            x * 7.3,
            if i % 3 == 0 { "counter" } else { "power" },
        ));
        points.push(usage(ts, i * 3 + 1));
        points.push(host_energy(ts, x / 7.0));
        // Site rows out of time order, so the latest is not the last.
        points.push(site(
            ts + if i % 2 == 0 { 30_000_000_000 } else { 0 },
            1.1 + i as f64 / 100.0,
        ));
    }
    // Duplicates: same value (a retry) and a different one (a conflict, ignored).
    let mut batch = points.clone();
    batch.push(points[3].clone());
    batch.push(model_energy(
        "h1",
        "llama",
        points[0].timestamp.expect("ts"),
        999.0,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, batched) = (dir.path().join("one.db"), dir.path().join("batch.db"));
    {
        let store = Store::open(&one).expect("open");
        // A point stored before the batch, then the batch one point per write.
        store.write(&points[..1]).expect("write");
        for p in &batch {
            store.write(std::slice::from_ref(p)).expect("write");
        }
        let store = Store::open(&batched).expect("open");
        store.write(&points[..1]).expect("write");
        let (head, tail) = batch.split_at(100);
        let a = store.write(head).expect("write");
        let b = store.write(tail).expect("write");
        assert_eq!(a.written + b.written, points.len() as u64 - 1);
        assert_eq!(
            (a.duplicates + b.duplicates, a.conflicts + b.conflicts),
            (3, 1)
        );
    }
    let (want, got) = (typed_rows(&one), typed_rows(&batched));
    for ((table, w), (_, g)) in want.iter().zip(&got) {
        assert!(!w.is_empty(), "{table} is empty");
        assert_eq!(w, g, "{table}");
    }
}

/// The series-id cache must never outlive a rolled-back write: a series first seen in a
/// write that failed gets a real id when it is written again.
#[test]
fn a_series_of_a_rolled_back_write_is_stored_with_a_real_id_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    let store = Store::open(&path).expect("open");
    store
        .write(&[model_energy("h1", "llama", T0 + 1, 1.0)])
        .expect("write");
    // Make the write fail after its new series was inserted.
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(&format!(
        "CREATE TRIGGER fail BEFORE INSERT ON gpu_raw WHEN NEW.ts = {} BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        T0 + 9
    ))
    .expect("trigger");
    let new_series = model_energy("h2", "llama", T0 + 2, 2.0);
    store
        .write(&[new_series.clone(), gpu(T0 + 9, 1.0, "counter")])
        .expect_err("the trigger fails the write");
    assert_eq!(store.count_points().expect("count"), 1);
    // Another writer takes the id the rolled-back series had.
    conn.execute_batch(
        "DROP TRIGGER fail; INSERT INTO series (series_key, measurement, tags) VALUES ('other', 'other', '{}');",
    )
    .expect("other writer");
    store.write(&[new_series]).expect("write");
    // Joined with `series`: every point's series exists and is its own.
    assert_eq!(store.count_measurement("model_energy").expect("count"), 2);
    let hosts: Vec<String> = conn
        .prepare("SELECT s.host FROM points p JOIN series s ON s.id = p.series_id ORDER BY p.ts")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(hosts, ["h1", "h2"]);
}

/// Retention prunes a series' points but keeps its `series` row, so a cached id stays
/// right when the series is written again.
#[test]
fn a_series_pruned_by_retention_is_written_again_under_its_id() {
    let store = Store::open_in_memory().expect("store");
    store
        .write(&[model_energy("h1", "llama", T0 + 1, 1.0)])
        .expect("write");
    let later = inferwatt_collector::now_ns() + 3 * DAY_NS;
    assert_eq!(
        store
            .apply_retention(later, 1, 0)
            .expect("retention")
            .raw_deleted,
        1
    );
    assert_eq!(store.count_points().expect("count"), 0);
    store
        .write(&[model_energy("h1", "llama", later, 2.0)])
        .expect("write");
    assert_eq!(store.count_measurement("model_energy").expect("count"), 1);
}
