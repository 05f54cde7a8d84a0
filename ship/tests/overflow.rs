//! Overflow: a tiny spool folds the oldest batches into coarser points; after delivery
//! the server holds exactly the energy, requests and tokens that were enqueued, per series.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use inferwatt_core::lineproto::{decode, FieldValue, Point, Precision};
use inferwatt_ship::{Shipper, FOLDED_POINTS_FIELD};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(30);

/// Per series: (sum of energy_j, sum of requests, sum of output_tokens, original points).
type Totals = BTreeMap<String, (f64, i64, i64, i64)>;

fn totals(points: &[Point]) -> Totals {
    let mut t = Totals::new();
    for p in points {
        let e = t.entry(p.series_key()).or_default();
        e.0 += p.field_f64("energy_j").unwrap_or(0.0);
        e.1 += p.field_f64("requests").unwrap_or(0.0) as i64;
        e.2 += p.field_f64("output_tokens").unwrap_or(0.0) as i64;
        e.3 += match p.field_value(FOLDED_POINTS_FIELD) {
            Some(FieldValue::Int(n)) => *n,
            _ => 1,
        };
    }
    t
}

fn received(lines: &[String]) -> Vec<Point> {
    let body = lines.join("\n");
    decode(body.as_bytes(), Precision::Nanoseconds, 0).expect("server received valid line protocol")
}

#[tokio::test]
async fn overflow_folds_the_oldest_and_conserves_every_joule() {
    // The server is down (503) until the spool has overflowed many times.
    let srv = server(vec![Reply::Status(503); 100_000]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&srv.url, dir.path());
    cfg.spool_max_bytes = 8192;
    cfg.batch_max_points = 3;
    cfg.backoff_min_s = 0.05;
    cfg.backoff_max_s = 0.05;
    let (shipper, handle) = Shipper::open(cfg).expect("open");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));

    let first = interval("h1", 0);
    handle.enqueue(&first).expect("enqueue");
    // Once attempted, the first batch may have reached the server: it must never be folded.
    wait_until(LIMIT, "a failed attempt", || {
        handle.stats().send_failures_total > 0
    })
    .await;
    let mut enqueued = first.clone();
    for i in 1..300 {
        let pts = interval("h1", i);
        enqueued.extend(pts.iter().cloned());
        handle
            .enqueue(&pts)
            .expect("enqueue never refused: folding makes room");
        let s = handle.stats();
        assert!(s.spool_bytes <= 8192, "spool over its bound: {s:?}");
    }
    let stats = handle.stats();
    assert!(
        stats.folded_batches_total > 0 && stats.folded_points_total > 0,
        "{stats:?}"
    );
    assert_eq!(stats.refused_enqueues_total, 0);

    srv.state.script.lock().expect("lock").clear();
    wait_until(LIMIT, "spool drained", || handle.stats().spool_batches == 0).await;
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");

    let accepted = srv.state.accepted_lines();
    assert_eq!(
        accepted[..3],
        lines(&first)[..],
        "the attempted batch is resent verbatim"
    );
    let got = received(&accepted);
    assert!(got
        .iter()
        .any(|p| p.field_value(FOLDED_POINTS_FIELD).is_some()));
    let (want, have) = (totals(&enqueued), totals(&got));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        have.keys().collect::<Vec<_>>()
    );
    for (series, w) in &want {
        let h = have[series];
        assert!(
            (w.0 - h.0).abs() <= 1e-9 * w.0.abs(),
            "{series}: energy {} != {}",
            h.0,
            w.0
        );
        assert_eq!(
            (w.1, w.2, w.3),
            (h.1, h.2, h.3),
            "{series}: requests, tokens, points"
        );
    }
    // Folded points keep the latest timestamp of their group, so the series stay ordered.
    for series in want.keys() {
        let ts: Vec<i64> = got
            .iter()
            .filter(|p| &p.series_key() == series)
            .filter_map(|p| p.timestamp)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{series}: {ts:?}");
        assert_eq!(ts.last(), Some(&(T0 + 299 * 1_000_000_000)));
    }
}

#[tokio::test]
async fn a_spool_that_cannot_fold_refuses_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config("http://127.0.0.1:9", dir.path());
    cfg.spool_max_bytes = 4096;
    let (_, handle) = Shipper::open(cfg).expect("open");
    // One batch larger than the whole spool can never fit.
    let huge: Vec<Point> = (0..100)
        .flat_map(|i| interval(&format!("h{i}"), 0))
        .collect();
    let err = handle.enqueue(&huge).expect_err("refused").to_string();
    assert!(err.contains("'ship.spool_max_bytes' = 4096"), "{err}");
    assert_eq!(handle.stats().refused_enqueues_total, 1);
    assert_eq!(handle.stats().spool_batches, 0);
}

#[tokio::test]
async fn a_fold_interrupted_before_its_deletions_shadows_what_it_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config("http://127.0.0.1:9", dir.path());
    cfg.spool_max_bytes = 8192;
    let before = {
        let (_, handle) = Shipper::open(cfg.clone()).expect("open");
        for i in 0..100 {
            handle.enqueue(&interval("h1", i)).expect("enqueue");
        }
        handle.stats()
    };
    assert!(before.folded_batches_total > 0);
    // Recreate a segment the fold covered, as if the crash came before its deletion.
    let fold = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find_map(|n| {
            let (a, b) = n.strip_suffix(".seg")?.split_once('-')?;
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (a < b).then_some((n, a))
        })
        .expect("a fold segment");
    let stale = dir.path().join(format!("{0:020}-{0:020}.seg", fold.1 + 1));
    std::fs::copy(dir.path().join(&fold.0), &stale).expect("copy");
    let (_, handle) = Shipper::open(cfg).expect("reopen");
    let after = handle.stats();
    assert!(!stale.exists(), "the shadowed segment is removed on open");
    assert_eq!(
        (after.spool_batches, after.spool_bytes),
        (before.spool_batches, before.spool_bytes)
    );
}
