//! Crash safety: a shipper dropped without running (as after SIGKILL) leaves a spool the
//! next open replays in order; a torn final record is cut off and counted; acknowledged
//! batches are not sent again.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use inferwatt_ship::Shipper;
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(20);

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read spool dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Runs a shipper on `dir` until its spool is empty, then stops it.
async fn drain(url: &str, dir: &Path) -> inferwatt_ship::ShipStats {
    let (shipper, handle) = Shipper::open(config(url, dir)).expect("open");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "spool drained", || handle.stats().spool_batches == 0).await;
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
    handle.stats()
}

#[tokio::test]
async fn batches_spooled_before_a_crash_replay_in_order() {
    let srv = server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    {
        let (shipper, handle) = Shipper::open(config(&srv.url, dir.path())).expect("open");
        for i in 0..4 {
            let pts = interval("h1", i);
            expected.extend(lines(&pts));
            handle.enqueue(&pts).expect("enqueue");
        }
        // Never run: the process "dies" here.
        drop((shipper, handle));
    }
    let (_, reopened) = Shipper::open(config(&srv.url, dir.path())).expect("reopen");
    assert_eq!(reopened.stats().spool_batches, 4);
    drop(reopened);
    drain(&srv.url, dir.path()).await;
    assert_eq!(srv.state.accepted_lines(), expected);
}

#[tokio::test]
async fn a_torn_final_record_is_cut_off_and_counted_earlier_ones_intact() {
    let srv = server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    {
        let (_, handle) = Shipper::open(config(&srv.url, dir.path())).expect("open");
        for i in 0..3 {
            let pts = interval("h1", i);
            if i < 2 {
                expected.extend(lines(&pts));
            }
            handle.enqueue(&pts).expect("enqueue");
        }
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1, "{segs:?}");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .expect("open segment");
    let len = file.metadata().expect("metadata").len();
    file.set_len(len - 20).expect("tear the last record");
    drop(file);

    let (shipper, handle) = Shipper::open(config(&srv.url, dir.path())).expect("reopen");
    let stats = handle.stats();
    assert_eq!((stats.spool_batches, stats.torn_records_total), (2, 1));
    // Appending after the cut works: the new batch follows the intact ones.
    let late = interval("h1", 9);
    expected.extend(lines(&late));
    handle.enqueue(&late).expect("enqueue after recovery");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "spool drained", || handle.stats().spool_batches == 0).await;
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");
    assert_eq!(srv.state.accepted_lines(), expected);
}

#[tokio::test]
async fn a_corrupt_byte_inside_the_last_record_is_detected_by_its_crc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "http://127.0.0.1:9";
    {
        let (_, handle) = Shipper::open(config(url, dir.path())).expect("open");
        for i in 0..2 {
            handle.enqueue(&interval("h1", i)).expect("enqueue");
        }
    }
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).expect("read");
    let n = bytes.len();
    bytes[n - 5] ^= 0x20;
    std::fs::write(seg, bytes).expect("write");
    let (_, handle) = Shipper::open(config(url, dir.path())).expect("reopen");
    let stats = handle.stats();
    assert_eq!((stats.spool_batches, stats.torn_records_total), (1, 1));
}

#[tokio::test]
async fn acknowledged_batches_are_not_sent_again_after_a_restart() {
    let first = server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_, handle) = Shipper::open(config(&first.url, dir.path())).expect("open");
        for i in 0..3 {
            handle.enqueue(&interval("h1", i)).expect("enqueue");
        }
    }
    let stats = drain(&first.url, dir.path()).await;
    assert_eq!(stats.sent_points_total, 9);

    let second = server(vec![]).await;
    let late = interval("h1", 3);
    {
        let (_, handle) = Shipper::open(config(&second.url, dir.path())).expect("reopen");
        assert_eq!(handle.stats().spool_batches, 0);
        handle.enqueue(&late).expect("enqueue");
    }
    drain(&second.url, dir.path()).await;
    assert_eq!(second.state.accepted_lines(), lines(&late));
}
