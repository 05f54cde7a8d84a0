//! Against a real VictoriaMetrics: points shipped through its `/api/v2/write` read back
//! through `/api/v1/export` (series named `measurement_field`), every one with its value.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use inferwatt_core::lineproto::{FieldValue, Point};
use inferwatt_ship::Shipper;
use tokio::sync::watch;

const VM_BIN: &str = "/usr/bin/victoria-metrics";
const LIMIT: Duration = Duration::from_secs(60);

/// Kills and reaps the server when the test ends, however it ends.
struct VmGuard(Child);

impl Drop for VmGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_vm(data: &Path, port: u16) -> VmGuard {
    assert!(
        Path::new(VM_BIN).exists(),
        "{VM_BIN} is missing: run 'apt-get install victoria-metrics' (the test needs a real VictoriaMetrics)"
    );
    let child = Command::new(VM_BIN)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", data.display()))
        .arg("-search.latencyOffset=0s")
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start victoria-metrics");
    VmGuard(child)
}

/// (metric name, sorted labels without VictoriaMetrics' own) → timestamp ms → value.
type Series = BTreeMap<(String, Vec<(String, String)>), BTreeMap<i64, f64>>;

fn expected(points: &[Point]) -> Series {
    let mut out = Series::new();
    for p in points {
        for (field, value) in &p.fields {
            let v = match value {
                FieldValue::Float(_) | FieldValue::Int(_) | FieldValue::UInt(_) => {
                    value.as_f64().expect("numeric")
                }
                FieldValue::Str(_) | FieldValue::Bool(_) => continue,
            };
            let key = (format!("{}_{field}", p.measurement), p.tags.clone());
            let ts = p.timestamp.expect("timestamp") / 1_000_000;
            out.entry(key).or_default().insert(ts, v);
        }
    }
    out
}

fn parse_export(body: &str) -> Series {
    let mut out = Series::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        let metric = v["metric"].as_object().expect("metric");
        let name = metric["__name__"].as_str().expect("name").to_string();
        let mut labels: Vec<(String, String)> = metric
            .iter()
            .filter(|(k, _)| *k != "__name__" && *k != "db")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        labels.sort();
        let values = v["values"].as_array().expect("values");
        let stamps = v["timestamps"].as_array().expect("timestamps");
        let entry = out.entry((name, labels)).or_default();
        for (t, x) in stamps.iter().zip(values) {
            entry.insert(t.as_i64().expect("ms"), x.as_f64().expect("value"));
        }
    }
    out
}

#[tokio::test]
async fn points_shipped_to_victoriametrics_read_back_with_their_values() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _vm = start_vm(data.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + LIMIT;
    loop {
        let up = http.get(format!("{base}/health")).send().await;
        if up.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "victoria-metrics did not become healthy on {base}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Recent, millisecond-aligned timestamps (VictoriaMetrics keeps milliseconds).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let start_ns = (now_ms - 120_000) * 1_000_000;
    let mut points = Vec::new();
    for i in 0..10 {
        for mut p in interval("h1", i) {
            p.timestamp = Some(start_ns + i * 1_000_000_000);
            points.push(p);
        }
    }
    let spool = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&base, spool.path());
    cfg.batch_max_points = 7;
    let (shipper, handle) = Shipper::open(cfg).expect("open");
    for chunk in points.chunks(3) {
        handle.enqueue(chunk).expect("enqueue");
    }
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    wait_until(LIMIT, "spool drained to VictoriaMetrics", || {
        handle.stats().spool_batches == 0
    })
    .await;
    let stats = handle.stats();
    assert_eq!(
        (stats.sent_points_total, stats.rejected_batches_total),
        (30, 0)
    );
    tx.send(true).expect("shutdown");
    task.await.expect("run ends");

    let want = expected(&points);
    let start_s = now_ms / 1000 - 3600;
    let end_s = now_ms / 1000 + 3600;
    let mut have = Series::new();
    while Instant::now() < deadline {
        let resp = http
            .get(format!("{base}/api/v1/export"))
            .query(&[
                (
                    "match[]",
                    r#"{__name__=~"gpu_.+|model_usage_.+"}"#.to_string(),
                ),
                ("start", start_s.to_string()),
                ("end", end_s.to_string()),
            ])
            .send()
            .await
            .expect("export request");
        assert!(resp.status().is_success(), "export: HTTP {}", resp.status());
        have = parse_export(&resp.text().await.expect("export body"));
        if mismatch(&want, &have).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(why) = mismatch(&want, &have) {
        panic!("VictoriaMetrics does not hold the shipped points: {why}");
    }
}

/// The first difference between what was shipped and what VictoriaMetrics exports, if
/// any. VictoriaMetrics keeps about 12 significant digits; it also exports string
/// fields as series of zeros, which are not compared.
fn mismatch(want: &Series, have: &Series) -> Option<String> {
    for (key, points) in want {
        let Some(got) = have.get(key) else {
            return Some(format!("series {key:?} is missing"));
        };
        if got.keys().ne(points.keys()) {
            return Some(format!(
                "{key:?}: timestamps {:?}, want {:?}",
                got.keys(),
                points.keys()
            ));
        }
        for (ts, v) in points {
            let g = got[ts];
            if (g - v).abs() > 1e-9 * v.abs().max(1.0) {
                return Some(format!("{key:?} at {ts}: {g}, want {v}"));
            }
        }
    }
    let extra: Vec<_> = have
        .keys()
        .filter(|k| !want.contains_key(*k) && !k.0.ends_with("_source"))
        .collect();
    (!extra.is_empty()).then(|| format!("unexpected series {extra:?}"))
}
