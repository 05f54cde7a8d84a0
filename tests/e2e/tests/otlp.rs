//! OTLP export: the agent, on the simulated fleet, pushes its metrics over OTLP/HTTP
//! (protobuf) to a real receiver, Debian trixie's VictoriaMetrics 1.112
//! (`/opentelemetry/v1/metrics`; bookworm's 1.79 has no OTLP), unpacked by
//! `scripts/fetch-trixie-victoria-metrics.sh` (`.ci/run` runs it). The energy read back
//! (`hw.energy` per GPU, `inferwatt.model.energy` per model) equals the file sink's sums
//! after the agent's final push, though the receiver was down for the first pushes, and
//! the Prometheus endpoint scraped just before the stop is behind it by at most the last
//! intervals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use inferwatt_tests::fleet::Fleet;
use inferwatt_tests::harness::{self, Proc};
use serde_json::Value;

fn victoria_metrics_with_otlp() -> PathBuf {
    let path = std::env::var_os("INFERWATT_VM_OTLP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| harness::repo_root().join("target/trixie-vm/usr/bin/victoria-metrics"));
    assert!(
        path.exists(),
        "no VictoriaMetrics with OTLP at {}: run `scripts/fetch-trixie-victoria-metrics.sh {}` (as .ci/run does) or set INFERWATT_VM_OTLP_BIN",
        path.display(),
        harness::repo_root().join("target/trixie-vm").display()
    );
    path
}

/// Last value of every series of `name` in VictoriaMetrics, with its labels.
fn last_values(base: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let out = Command::new("curl")
        .args(["-s", "--fail", &format!("{base}/api/v1/export"), "-d"])
        .arg(format!("match[]={{__name__=\"{name}\"}}"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "export {name}: {:?}", out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("export line");
            let labels = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let values = v["values"].as_array().expect("values");
            (
                labels,
                values.last().and_then(Value::as_f64).expect("a value"),
            )
        })
        .collect()
}

/// Σ of a Prometheus counter per value of `label`, from the text exposition.
fn prometheus_sums(text: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
    {
        let (series, value) = line.rsplit_once(' ').expect("sample");
        let key = series
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        *out.entry(key).or_default() += value.parse::<f64>().expect("value");
    }
    out
}

#[test]
fn energy_pushed_over_otlp_reads_back_as_the_agent_measured_it() {
    let vm_bin = victoria_metrics_with_otlp();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let vm_port = harness::free_port();
    let base = format!("http://127.0.0.1:{vm_port}");
    let epoch = harness::now_unix_ms() - 500;
    let fleet = Fleet::start(root, epoch, 60.0, 30.0);
    let agent_port = harness::free_port();
    let lp = root.join("intervals.lp");
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"fra1\"\nhost = \"gpu-host-1\"\ncountry = \"DE\"\nzone = \"DE\"\n\
             [sampling]\ninterval_s = 0.5\n\
             [nvml]\nlibrary = \"{lib}\"\n[prometheus]\nlisten = \"127.0.0.1:{agent_port}\"\n\
             [host]\nrapl = false\n[state]\ndir = \"{state}\"\n[file]\npath = \"{lp}\"\n\
             [otlp]\nendpoint = \"{base}/opentelemetry/v1/metrics\"\ninterval_s = 1.0\n",
            lib = harness::sim_library().display(),
            state = root.join("state").display(),
            lp = lp.display(),
        ),
    )
    .expect("agent config");
    let mut agent = Proc::spawn(
        "inferwatt-agent",
        Command::new(harness::bin("inferwatt-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("FAKE_NVML_SCENARIO", &fleet.scenario_path),
    );
    // The receiver is down for the first pushes: they fail, are counted, and lose
    // nothing, since every push carries the totals since the agent started.
    std::thread::sleep(Duration::from_secs(3));
    let (_, early) =
        harness::http_get(&format!("http://127.0.0.1:{agent_port}/metrics")).expect("scrape");
    assert!(
        early
            .lines()
            .any(|l| l.starts_with("inferwatt_agent_otlp_failures_total ") && !l.ends_with(" 0")),
        "failed pushes are counted: {early}"
    );
    let _vm = Proc::spawn(
        "victoria-metrics",
        Command::new(&vm_bin)
            .arg(format!("-storageDataPath={}", root.join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    harness::wait_for("VictoriaMetrics", Duration::from_secs(20), || {
        harness::http_get(&format!("{base}/health")).filter(|(s, _)| *s == 200)
    });
    // Pushes arrive while the agent runs.
    harness::wait_for(
        "hw.energy in VictoriaMetrics",
        Duration::from_secs(30),
        || {
            let _ = harness::http_get(&format!("{base}/internal/force_flush"));
            (!last_values(&base, "hw.energy").is_empty()).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(4));
    let (status, scraped) =
        harness::http_get(&format!("http://127.0.0.1:{agent_port}/metrics")).expect("scrape");
    assert_eq!(status, 200);
    agent.signal("TERM");

    // The file sink: what the agent measured.
    let points = harness::read_points(&lp);
    let mut file_gpu: BTreeMap<String, f64> = BTreeMap::new();
    let mut file_model: BTreeMap<String, f64> = BTreeMap::new();
    for p in &points {
        let f = |k: &str| p.field_f64(k).unwrap_or(0.0);
        match p.measurement.as_str() {
            "gpu" => {
                *file_gpu
                    .entry(p.tag_value("gpu_uuid").unwrap_or("").into())
                    .or_default() += f("energy_j")
            }
            "model_energy" => {
                *file_model
                    .entry(p.tag_value("model").unwrap_or("").into())
                    .or_default() += f("active_j") + f("idle_j") + f("host_j")
            }
            _ => {}
        }
    }
    assert_eq!(file_gpu.len(), 2, "{file_gpu:?}");

    // hw.energy: per GPU (hw.id), summed over the measurement paths, semantic attributes;
    // the final push (sent before the agent exited) becomes searchable within seconds.
    let gpu_sums = || {
        let _ = harness::http_get(&format!("{base}/internal/force_flush"));
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, v) in last_values(&base, "hw.energy") {
            *sums.entry(labels["hw.id"].clone()).or_default() += v;
        }
        sums
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let got = gpu_sums();
        if file_gpu
            .iter()
            .all(|(k, want)| (got.get(k).copied().unwrap_or(0.0) - want).abs() <= 1e-9 * want)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut otlp_gpu: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in last_values(&base, "hw.energy") {
        assert_eq!(
            labels.get("hw.type").map(String::as_str),
            Some("gpu"),
            "{labels:?}"
        );
        assert_eq!(
            labels.get("host.name").map(String::as_str),
            Some("gpu-host-1"),
            "the resource's host: {labels:?}"
        );
        *otlp_gpu.entry(labels["hw.id"].clone()).or_default() += v;
    }
    let prom_gpu = prometheus_sums(&scraped, "inferwatt_gpu_energy_joules_total", "gpu_uuid");
    for (uuid, want) in &file_gpu {
        let got = otlp_gpu.get(uuid).copied().unwrap_or(0.0);
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{uuid}: OTLP {got} J vs file sink {want} J"
        );
        // The scrape came before the last intervals (at most ~1.5 s of 700 W).
        let prom = prom_gpu[uuid];
        assert!(
            prom <= got + 1e-6 && got - prom <= 700.0 * 2.0,
            "{uuid}: Prometheus {prom} J scraped before the stop, OTLP final {got} J"
        );
    }

    // inferwatt.model.energy: per model, every component.
    let mut otlp_model: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in last_values(&base, "inferwatt.model.energy") {
        *otlp_model
            .entry(labels.get("inferwatt.model").cloned().unwrap_or_default())
            .or_default() += v;
    }
    assert!(otlp_model.len() >= 3, "{otlp_model:?}");
    for (model, want) in &file_model {
        let got = otlp_model.get(model).copied().unwrap_or(0.0);
        assert!(
            (got - want).abs() <= 1e-9 * want.max(1.0),
            "{model}: OTLP {got} J vs file sink {want} J"
        );
    }
    // The Prometheus names are not what was pushed: OTLP carries its own.
    assert!(last_values(&base, "inferwatt_gpu_energy_joules_total").is_empty());
    drop(fleet);
}
