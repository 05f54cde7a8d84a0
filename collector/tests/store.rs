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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the points and the period, the rollup-backed sums equal the sums of the
    /// raw points with `from < ts <= to`.
    #[test]
    fn rollups_sum_to_raw(
        offsets in proptest::collection::vec((0i64..3 * DAY_NS, 0u32..1000, 0usize..3), 1..120),
        a in 0i64..4 * DAY_NS,
        b in 0i64..4 * DAY_NS,
        edges in proptest::bool::ANY,
    ) {
        let store = Store::open_in_memory().expect("store");
        let models = ["llama", "mistral", "_idle"];
        let mut points = Vec::new();
        for (off, e, m) in &offsets {
            // Half the cases land exactly on hour boundaries, where off-by-one errors live.
            let ts = T0 + if edges { off / HOUR_NS * HOUR_NS } else { *off };
            points.push(model_energy("h1", models[*m], ts, f64::from(*e) * 0.37));
            points.push(gpu(ts, f64::from(*e), if e % 2 == 0 { "counter" } else { "integrated" }));
            points.push(usage(ts, i64::from(*e)));
        }
        store.write(&points, None).expect("write");
        let (from, to) = (T0 + a.min(b) - HOUR_NS, T0 + a.max(b));
        let inside: Vec<&Point> = {
            // Deduplicated like the store: first point per (series, ts) wins.
            let mut seen = std::collections::HashSet::new();
            points
                .iter()
                .filter(|p| seen.insert((p.series_key(), p.timestamp)))
                .filter(|p| p.timestamp.is_some_and(|t| t > from && t <= to))
                .collect()
        };

        let rows = store.sum_model_energy(from, to).expect("query");
        for m in models {
            let want: f64 = inside.iter().filter(|p| p.measurement == "model_energy" && p.tag_value("model") == Some(m))
                .map(|p| p.field_f64("active_j").unwrap_or(0.0)).sum();
            let got: f64 = rows.iter().filter(|r| r.model == m).map(|r| r.active_j).sum();
            prop_assert!(close(want, got), "model {m}: raw {want} vs store {got}");
        }
        let n: i64 = rows.iter().map(|r| r.points).sum();
        prop_assert_eq!(n as usize, inside.iter().filter(|p| p.measurement == "model_energy").count());

        let rows = store.sum_gpu_energy(from, to).expect("query");
        for source in ["counter", "integrated"] {
            let want: f64 = inside.iter().filter(|p| p.measurement == "gpu" && p.field_value("source").and_then(|v| v.as_str()) == Some(source))
                .map(|p| p.field_f64("energy_j").unwrap_or(0.0)).sum();
            let got: f64 = rows.iter().filter(|r| r.source == source).map(|r| r.energy_j).sum();
            prop_assert!(close(want, got), "source {source}: raw {want} vs store {got}");
        }
        let gpu_hours: f64 = rows.iter().map(|r| r.gpu_hours()).sum();
        let want_hours = inside.iter().filter(|p| p.measurement == "gpu").count() as f64 * 2.0 / 3600.0;
        prop_assert!(close(want_hours, gpu_hours));

        let rows = store.sum_model_usage(from, to).expect("query");
        let want: f64 = inside.iter().filter(|p| p.measurement == "model_usage").map(|p| p.field_f64("output_tokens").unwrap_or(0.0)).sum();
        let got: i64 = rows.iter().map(|r| r.output_tokens).sum();
        prop_assert_eq!(want as i64, got);
    }
}

#[test]
fn retried_batch_is_stored_once_and_first_value_wins() {
    let store = Store::open_in_memory().expect("store");
    let batch = vec![
        model_energy("h1", "llama", T0 + 1, 10.0),
        model_energy("h1", "llama", T0 + 2, 20.0),
    ];
    let first = store.write(&batch, None).expect("write");
    assert_eq!((first.written, first.duplicates), (2, 0));
    let again = store.write(&batch, None).expect("write");
    assert_eq!(
        (again.written, again.duplicates, again.conflicts),
        (0, 2, 0)
    );
    let changed = store
        .write(&[model_energy("h1", "llama", T0 + 1, 99.0)], None)
        .expect("write");
    assert_eq!(
        (changed.written, changed.duplicates, changed.conflicts),
        (0, 1, 1)
    );
    assert!(changed.first_conflict.is_some());
    let rows = store.sum_model_energy(T0, T0 + 10).expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].active_j, 30.0);
    assert_eq!(store.count_points().expect("count"), 2);
}

#[test]
fn a_bad_point_stores_nothing_of_its_batch() {
    let store = Store::open_in_memory().expect("store");
    let bad = Point::new("gpu")
        .tag("site", "s1")
        .tag("host", "h1")
        .string("energy_j", "lots")
        .at(T0);
    let err = store
        .write(&[model_energy("h1", "llama", T0 + 1, 10.0), bad], None)
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
            .write(&[model_energy("h1", "llama", T0 + 1, 10.0)], None)
            .expect("write");
        store.add_token("ab", "s1", "h1", 5).expect("token");
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.count_points().expect("count"), 1);
    assert_eq!(
        store.find_token("ab").expect("find").map(|t| t.host),
        Some("h1".into())
    );
    assert_eq!(
        store.sum_model_energy(T0, T0 + 1).expect("query")[0].active_j,
        10.0
    );
}

#[test]
fn retention_drops_old_raw_rows_but_rollups_keep_their_sums() {
    let store = Store::open_in_memory().expect("store");
    let old = T0 + 3 * HOUR_NS + 5;
    let recent = T0 + 10 * DAY_NS;
    store
        .write(
            &[
                model_energy("h1", "llama", old, 10.0),
                model_energy("h1", "llama", recent, 1.0),
            ],
            None,
        )
        .expect("write");
    let out = store.apply_retention(recent, 2, 0).expect("retention");
    assert_eq!(out.raw_deleted, 1);
    assert_eq!(store.count_points().expect("count"), 1);
    // The whole day is read from the daily rollup.
    let rows = store.sum_model_energy(T0, T0 + DAY_NS).expect("query");
    assert_eq!(rows[0].active_j, 10.0);
    // Points older than the horizon are refused, since their duplicates can no longer be seen.
    let o = store
        .write(
            &[model_energy("h1", "llama", old, 10.0)],
            Some(recent - 2 * DAY_NS),
        )
        .expect("write");
    assert_eq!((o.written, o.expired), (0, 1));
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
        .write(
            &[
                site(T0 + 10, 1.5),
                site(T0 + 2 * HOUR_NS, 1.3),
                site(T0 + 5, 1.9),
            ],
            None,
        )
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
        store.write(&batch, None).expect("write");
    }
    let tail = T0 + 365 * DAY_NS;
    for step in 0..(2 * HOUR_NS / 10_000_000_000) {
        let ts = tail - HOUR_NS + step * 10_000_000_000 + 3;
        let batch: Vec<Point> = series.iter().map(|s| point(s, ts)).collect();
        store.write(&batch, None).expect("write");
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
