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

/// A VictoriaMetrics from `bin` on a free port, data under `dir`, and its base URL.
fn start_vm(bin: &Path, dir: &Path) -> (Guard, String) {
    let vm_port = free_port();
    let vm = Guard(
        Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg("-search.latencyOffset=0s")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .spawn()
            .expect("start victoria-metrics"),
    );
    (vm, format!("http://127.0.0.1:{vm_port}"))
}

/// The collector (`serve`, no auth) with the `[forward]` keys `forward`, and its base URL.
fn start_collector(dir: &Path, forward: &str) -> (Guard, String) {
    let port = free_port();
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nauth = \"none\"\ndb_path = {:?}\n\
             [forward]\n{forward}\nspool_dir = {:?}\nflush_interval_s = 0.1\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\n",
            dir.join("c.db").display().to_string(),
            dir.join("spool").display().to_string(),
        ),
    )
    .expect("config");
    let collector = Guard(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start collector"),
    );
    (collector, format!("http://127.0.0.1:{port}"))
}

/// Twenty 1-s intervals of one GPU, its model and the model's usage, ten minutes ago.
fn batches() -> Vec<Vec<Point>> {
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
    batches
}

/// Writes every batch to the collector, then the first one again (stored once, so
/// forwarded once).
async fn post_all(http: &reqwest::Client, base: &str, batches: &[Vec<Point>]) {
    for batch in batches.iter().chain(batches.first()) {
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
}

/// VictoriaMetrics from `vm_bin`, the collector forwarding to it with the `[forward]`
/// keys `forward(vm_url)`, and [`batches`] written to the collector (the first twice):
/// the servers' guards, a client, VictoriaMetrics' URL and the batches.
async fn forward_batches(
    vm_bin: &Path,
    dir: &Path,
    forward: impl Fn(&str) -> String,
) -> ((Guard, Guard), reqwest::Client, String, Vec<Vec<Point>>) {
    let (vm_guard, vm) = start_vm(vm_bin, dir);
    let (collector, base) = start_collector(dir, &forward(&vm));
    let http = reqwest::Client::new();
    wait_healthy(&http, &format!("{vm}/health"), "victoria-metrics").await;
    wait_healthy(&http, &format!("{base}/healthz"), "collector").await;
    let batches = batches();
    post_all(&http, &base, &batches).await;
    ((vm_guard, collector), http, vm, batches)
}

#[tokio::test]
async fn every_accepted_point_reaches_victoriametrics() {
    assert!(
        Path::new(VM_BIN).exists(),
        "{VM_BIN} is missing: install victoria-metrics (the test needs a real one)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_servers, http, vm, batches) = forward_batches(Path::new(VM_BIN), dir.path(), |vm| {
        format!("url = \"{vm}\"")
    })
    .await;

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

/// Debian trixie's VictoriaMetrics (OTLP ingest), unpacked by
/// `scripts/fetch-trixie-victoria-metrics.sh target/trixie-vm` (`.ci/run` runs it).
fn vm_with_otlp() -> std::path::PathBuf {
    let path = std::env::var_os("INFERWATT_VM_OTLP_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/trixie-vm/usr/bin/victoria-metrics")
        });
    assert!(
        path.exists(),
        "no VictoriaMetrics with OTLP at {}: run scripts/fetch-trixie-victoria-metrics.sh target/trixie-vm (as .ci/run does) or set INFERWATT_VM_OTLP_BIN",
        path.display()
    );
    path
}

/// The last value of metric `name` per value of label `by`, summed over its other
/// series (the cumulative totals).
async fn sums(http: &reqwest::Client, vm: &str, name: &str, by: &str) -> BTreeMap<String, f64> {
    let _ = http.get(format!("{vm}/internal/force_flush")).send().await;
    let mut out = BTreeMap::new();
    for ((n, labels), samples) in exported(http, vm).await {
        if n == name {
            let key = labels
                .iter()
                .find(|(k, _)| k == by)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            *out.entry(key).or_default() += samples.values().last().copied().unwrap_or(0.0);
        }
    }
    out
}

#[tokio::test]
async fn forwarded_as_otlp_every_interval_arrives_once_in_the_cumulative_sums() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_servers, http, vm, batches) = forward_batches(&vm_with_otlp(), dir.path(), |vm| {
        format!("format = \"otlp\"\nurl = \"{vm}/opentelemetry/v1/metrics\"")
    })
    .await;

    let all: Vec<Point> = batches.into_iter().flatten().collect();
    let total = |m: &str, fields: &[&str]| -> f64 {
        all.iter()
            .filter(|p| p.measurement == m)
            .flat_map(|p| {
                fields
                    .iter()
                    .map(|f| p.field_f64(f).unwrap_or(0.0))
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    let want = [
        ("hw.energy", "hw.id", "GPU-1", total("gpu", &["energy_j"])),
        (
            "inferwatt.model.energy",
            "inferwatt.model",
            "m",
            total("model_energy", &["active_j", "idle_j", "host_j"]),
        ),
        (
            "inferwatt.model.requests",
            "inferwatt.model",
            "m",
            total("model_usage", &["requests"]),
        ),
    ];
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut ok = true;
        let mut seen = Vec::new();
        for (name, by, key, value) in want {
            let got = sums(&http, &vm, name, by)
                .await
                .get(key)
                .copied()
                .unwrap_or(0.0);
            ok &= (got - value).abs() <= 1e-9 * value;
            seen.push((name, got, value));
        }
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OTLP read back vs sent: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The resource: host and site as OTLP resource attributes.
    let labels: Vec<Vec<(String, String)>> = exported(&http, &vm)
        .await
        .into_iter()
        .filter(|((n, _), _)| n == "hw.energy")
        .map(|((_, l), _)| l)
        .collect();
    assert!(
        labels
            .iter()
            .all(|l| l.contains(&("host.name".into(), "h1".into()))
                && l.contains(&("inferwatt.site".into(), "s1".into()))
                && l.contains(&("hw.type".into(), "gpu".into()))),
        "{labels:?}"
    );
}
