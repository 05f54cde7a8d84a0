//! `[forward]` against a real VictoriaMetrics: points written to the real collector
//! binary (`serve`) are stored and forwarded after the commit; every numeric field of
//! every point reads back through VictoriaMetrics' `/api/v1/export`
//! (series `measurement_field`), with its value and millisecond timestamp.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inferwatt_core::lineproto::{FieldValue, Point};
use inferwatt_core::schema::{
    EnergySource, GpuInterval, ModelEnergy, ModelUsage, Origin, SplitMethod,
};

const BIN: &str = env!("CARGO_BIN_EXE_inferwatt-collector");
const VM_BIN: &str = "/usr/bin/victoria-metrics";
const LIMIT: Duration = Duration::from_secs(60);

/// Kills and reaps a child process when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
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

async fn wait_healthy(http: &reqwest::Client, url: &str, what: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not become healthy at {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (metric name, sorted labels) → timestamp ms → value.
type Series = BTreeMap<(String, Vec<(String, String)>), BTreeMap<i64, f64>>;

fn expected(points: &[Point]) -> Series {
    let mut out = Series::new();
    for p in points {
        for (field, value) in &p.fields {
            if matches!(value, FieldValue::Str(_) | FieldValue::Bool(_)) {
                continue;
            }
            let mut labels = p.tags.clone();
            labels.sort();
            let ts = p.timestamp.expect("timestamp") / 1_000_000;
            out.entry((format!("{}_{field}", p.measurement), labels))
                .or_default()
                .insert(ts, value.as_f64().expect("numeric"));
        }
    }
    out
}

async fn exported(http: &reqwest::Client, base: &str) -> Series {
    let body = match http
        .get(format!("{base}/api/v1/export"))
        .query(&[("match[]", "{__name__=~\".+\"}")])
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut out = Series::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        let metric = v["metric"].as_object().expect("metric");
        let name = metric["__name__"].as_str().expect("name").to_owned();
        let mut labels: Vec<(String, String)> = metric
            .iter()
            .filter(|(k, _)| *k != "__name__" && *k != "db")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        labels.sort();
        let entry = out.entry((name, labels)).or_default();
        let stamps = v["timestamps"].as_array().expect("timestamps");
        for (t, x) in stamps.iter().zip(v["values"].as_array().expect("values")) {
            entry.insert(t.as_i64().expect("ms"), x.as_f64().expect("value"));
        }
    }
    out
}

#[tokio::test]
async fn every_accepted_point_reaches_victoriametrics() {
    assert!(
        Path::new(VM_BIN).exists(),
        "{VM_BIN} is missing: install victoria-metrics (the test needs a real one)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let vm_port = free_port();
    let _vm = Guard(
        Command::new(VM_BIN)
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg("-search.latencyOffset=0s")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .spawn()
            .expect("start victoria-metrics"),
    );
    let vm = format!("http://127.0.0.1:{vm_port}");
    let port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nauth = \"none\"\ndb_path = {:?}\n\
             [forward]\nurl = \"{vm}\"\nspool_dir = {:?}\nflush_interval_s = 0.1\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\n",
            dir.path().join("c.db").display().to_string(),
            dir.path().join("spool").display().to_string(),
        ),
    )
    .expect("config");
    let _collector = Guard(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start collector"),
    );
    let http = reqwest::Client::new();
    wait_healthy(&http, &format!("{vm}/health"), "victoria-metrics").await;
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &format!("{base}/healthz"), "collector").await;

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let start_ns = (now_ms - 600_000) * 1_000_000;
    let o = Origin {
        site: "s1".into(),
        host: "h1".into(),
    };
    let mut batches: Vec<Vec<Point>> = Vec::new();
    for i in 0..20 {
        let end_ns = start_ns + i * 1_000_000_000;
        batches.push(vec![
            GpuInterval {
                gpu_uuid: "GPU-1".into(),
                gpu_index: 0,
                gpu_name: "H100".into(),
                energy_j: 300.0 + i as f64,
                power_w: Some(300.0),
                util_pct: Some(50.0),
                mem_used_bytes: Some(1 << 30),
                energy_counter_mj: Some(1_000_000 + i as u64 * 300_000),
                interval_s: 1.0,
                source: EnergySource::Counter,
                clock_step_s: None,
                end_ns,
            }
            .to_point(&o),
            ModelEnergy {
                gpu_uuid: "GPU-1".into(),
                model: "m".into(),
                server: "vllm".into(),
                active_j: 250.0 + i as f64,
                idle_j: 50.0,
                host_j: 5.5,
                interval_s: 1.0,
                method: SplitMethod::SmUtil,
                end_ns,
                pod: None,
            }
            .to_point(&o),
            ModelUsage {
                model: "m".into(),
                server: "vllm".into(),
                requests: i as u64,
                input_tokens: 10 * i as u64,
                output_tokens: 100 * i as u64,
                interval_s: 1.0,
                end_ns,
                pod: None,
            }
            .to_point(&o),
        ]);
    }
    for batch in &batches {
        let body: String = batch
            .iter()
            .map(|p| p.to_line().expect("encode") + "\n")
            .collect();
        let resp = http
            .post(format!("{base}/api/v2/write?org=o&bucket=b"))
            .body(body)
            .send()
            .await
            .expect("write");
        assert_eq!(resp.status().as_u16(), 204);
    }
    // A re-sent batch is stored once here and still arrives once there.
    let again: String = batches[0]
        .iter()
        .map(|p| p.to_line().expect("encode") + "\n")
        .collect();
    http.post(format!("{base}/api/v2/write"))
        .body(again)
        .send()
        .await
        .expect("re-send");

    let all: Vec<Point> = batches.into_iter().flatten().collect();
    let want = expected(&all);
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = exported(&http, &vm).await;
        // Only our series are compared (VictoriaMetrics may hold others of its own).
        if want.iter().all(|(k, v)| got.get(k) == Some(v)) {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            panic!(
                "VictoriaMetrics has {} series, want {}; differing: {missing:?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
