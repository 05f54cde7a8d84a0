//! The shipper against a scripted local write endpoint: order, encoding, auth, retries,
//! rejections, timeouts, Retry-After and shutdown.

mod common;

use std::time::Duration;

use common::*;
use inferwatt_ship::{Shipper, DEAD_LETTER_FILE};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn delivers_batches_in_order_gzipped_with_the_token() {
    let srv = server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (shipper, handle) = Shipper::open(config(&srv.url, dir.path())).expect("open");
    let mut expected = Vec::new();
    for i in 0..3 {
        let pts = interval("h1", i);
        expected.extend(lines(&pts));
        handle.enqueue(&pts).expect("enqueue");
    }
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    for i in 3..6 {
        let pts = interval("h1", i);
        expected.extend(lines(&pts));
        handle.enqueue(&pts).expect("enqueue");
    }
    let want = expected.len();
    wait_until(LIMIT, "all lines", || {
        srv.state.accepted_lines().len() >= want
    })
    .await;
    assert_eq!(srv.state.accepted_lines(), expected);
    for r in srv.state.requests() {
        assert_eq!(r.auth.as_deref(), Some("Token secret-token"));
        assert_eq!(r.encoding.as_deref(), Some("gzip"));
        assert_eq!(r.content_type.as_deref(), Some("text/plain; charset=utf-8"));
        assert_eq!(r.query, "org=acme&bucket=energy&precision=ns");
    }
    let stats = handle.stats();
    assert_eq!(stats.sent_points_total, want as u64);
    assert_eq!((stats.spool_batches, stats.spool_bytes), (0, 0));
    assert!(stats.last_success_unix_s.is_some());
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn unavailable_server_then_success_delivers_everything_once_in_order() {
    let srv = server(vec![
        Reply::Status(503),
        Reply::Status(500),
        Reply::Status(503),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&srv.url, dir.path());
    cfg.batch_max_points = 3;
    let (shipper, handle) = Shipper::open(cfg).expect("open");
    let mut expected = Vec::new();
    for i in 0..4 {
        let pts = interval("h1", i);
        expected.extend(lines(&pts));
        handle.enqueue(&pts).expect("enqueue");
    }
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "spool drained", || handle.stats().spool_batches == 0).await;
    assert_eq!(srv.state.accepted_lines(), expected);
    let stats = handle.stats();
    assert_eq!(stats.send_failures_total, 3);
    assert_eq!(stats.rejected_batches_total, 0);
    // Every failed request carried the first batch again: order is kept across retries.
    let firsts: Vec<String> = srv
        .state
        .requests()
        .iter()
        .map(|r| r.lines[0].clone())
        .collect();
    assert_eq!(
        firsts[..4],
        [
            expected[0].clone(),
            expected[0].clone(),
            expected[0].clone(),
            expected[0].clone()
        ]
    );
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn rejected_batch_goes_to_the_dead_letter_file_and_later_batches_still_go() {
    let srv = server(vec![]).await;
    *srv.state.reject_marker.lock().expect("lock") = Some("host=bad".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&srv.url, dir.path());
    cfg.batch_max_points = 3;
    let (shipper, handle) = Shipper::open(cfg).expect("open");
    let mut expected = Vec::new();
    let bad = interval("bad", 2);
    for i in 0..5 {
        let pts = if i == 2 {
            bad.clone()
        } else {
            interval("h1", i)
        };
        if i != 2 {
            expected.extend(lines(&pts));
        }
        handle.enqueue(&pts).expect("enqueue");
    }
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "spool drained", || handle.stats().spool_batches == 0).await;
    assert_eq!(srv.state.accepted_lines(), expected);
    let stats = handle.stats();
    assert_eq!(
        (stats.rejected_batches_total, stats.rejected_points_total),
        (1, 3)
    );
    assert_eq!(stats.send_failures_total, 0, "a rejection is not retried");
    let dead = std::fs::read_to_string(dir.path().join(DEAD_LETTER_FILE)).expect("dead letter");
    assert!(dead.starts_with("# rejected at "), "{dead}");
    assert!(
        dead.contains("HTTP 400: unable to parse 'host=bad'"),
        "{dead}"
    );
    let kept: Vec<&str> = dead.lines().skip(1).collect();
    assert_eq!(kept, lines(&bad));
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn a_timed_out_write_is_retried() {
    let srv = server(vec![Reply::Delay(Duration::from_secs(3))]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&srv.url, dir.path());
    cfg.timeout_s = 0.3;
    let (shipper, handle) = Shipper::open(cfg).expect("open");
    let pts = interval("h1", 0);
    handle.enqueue(&pts).expect("enqueue");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "delivered after the timeout", || {
        handle.stats().spool_batches == 0
    })
    .await;
    assert_eq!(srv.state.accepted_lines(), lines(&pts));
    assert_eq!(handle.stats().send_failures_total, 1);
    let reqs = srv.state.requests();
    assert!(reqs[0].timed_out && reqs.len() == 2, "{reqs:?}");
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn retry_after_is_honoured_over_a_shorter_backoff() {
    let srv = server(vec![Reply::RetryAfter(429, 1)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (shipper, handle) = Shipper::open(config(&srv.url, dir.path())).expect("open");
    handle.enqueue(&interval("h1", 0)).expect("enqueue");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "delivered", || handle.stats().spool_batches == 0).await;
    let reqs = srv.state.requests();
    assert_eq!(reqs.len(), 2);
    let waited = reqs[1].at - reqs[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, not after Retry-After: 1"
    );
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn auth_failures_are_retried_not_dead_lettered() {
    let srv = server(vec![Reply::Status(401), Reply::Status(403)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (shipper, handle) = Shipper::open(config(&srv.url, dir.path())).expect("open");
    let pts = interval("h1", 0);
    handle.enqueue(&pts).expect("enqueue");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "delivered", || handle.stats().spool_batches == 0).await;
    assert_eq!(srv.state.accepted_lines(), lines(&pts));
    let stats = handle.stats();
    assert_eq!(
        (stats.send_failures_total, stats.rejected_batches_total),
        (2, 0)
    );
    assert!(!dir.path().join(DEAD_LETTER_FILE).exists());
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
}

#[tokio::test]
async fn shutdown_with_the_server_down_leaves_the_batches_on_disk() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (shipper, handle) = Shipper::open(config(&url, dir.path())).expect("open");
    for i in 0..3 {
        handle.enqueue(&interval("h1", i)).expect("enqueue");
    }
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "a failed attempt", || {
        handle.stats().send_failures_total > 0
    })
    .await;
    tx.send(true).expect("shutdown");
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("run ends within the shutdown deadline")
        .expect("run ends");
    drop(handle);
    let (_, again) = Shipper::open(config(&url, dir.path())).expect("reopen");
    assert_eq!(again.stats().spool_batches, 3);
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config("http://127.0.0.1:1", dir.path());
    cfg.ca_file = Some(dir.path().join("missing.pem"));
    let err = Shipper::open(cfg).expect_err("missing CA file").to_string();
    assert!(
        err.contains("'ship.ca_file'") && err.contains("missing.pem"),
        "{err}"
    );
    let cfg = config("127.0.0.1:8086", dir.path());
    let err = Shipper::open(cfg).expect_err("no scheme").to_string();
    assert!(err.contains("'ship.url': '127.0.0.1:8086'"), "{err}");
}
