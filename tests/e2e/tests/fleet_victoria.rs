//! Fleets on VictoriaMetrics: two agents on the simulated driver ship to two stateless
//! collectors (`[store] backend = "victoriametrics"`, tokens from the config) over one
//! real VictoriaMetrics (Debian's `victoria-metrics`, started here with
//! `-dedup.minScrapeInterval=1ms`). One collector is killed with SIGKILL mid-run and
//! restarted; the agents' spools re-send what it did not acknowledge.
//! - nothing acknowledged is lost and nothing re-sent is doubled: the GPU energy the
//!   report reads equals what the agents measured (their file sinks);
//! - the report through either collector (API and CLI) equals the report over SQLite of
//!   the same points (the file sinks imported) to 0.01 % per model;
//! - per-GPU energy within 0.5 % and per-model energy within 2 % of ground truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use inferwatt_collector::ingest::auth::hash_token;
use inferwatt_core::lineproto::Point;
use inferwatt_tests::fleet::model_process;
use inferwatt_tests::harness::{self, Proc};
use nvml_sim::Scenario;
use serde_json::{json, Value};

const VM_BIN: &str = "/usr/bin/victoria-metrics";
const SITE: &str = "fra1";
const RUN_S: f64 = 45.0;

fn field(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

fn start_vm(data: &Path, port: u16) -> Proc {
    assert!(
        Path::new(VM_BIN).exists(),
        "{VM_BIN} is missing: run 'apt-get install victoria-metrics' (the test needs a real VictoriaMetrics)"
    );
    let p = Proc::spawn(
        "victoria-metrics",
        Command::new(VM_BIN)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg("-search.latencyOffset=0s")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}/health");
    harness::wait_for("victoria-metrics /health", Duration::from_secs(30), || {
        harness::http_get(&url).filter(|(s, _)| *s == 200)
    });
    p
}

/// A stateless collector over VictoriaMetrics at `vm_port`, accepting `tokens`.
struct VmCollector {
    config: PathBuf,
    port: u16,
}

impl VmCollector {
    fn prepare(dir: &Path, name: &str, vm_port: u16, tokens: &[(&str, &str)]) -> VmCollector {
        let port = harness::free_port();
        let config = dir.join(format!("{name}.toml"));
        let mut text = format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [store]\nbackend = \"victoriametrics\"\n\
             write_url = \"http://127.0.0.1:{vm_port}/api/v2/write\"\n\
             query_url = \"http://127.0.0.1:{vm_port}/prometheus\"\n"
        );
        for (host, token) in tokens {
            text.push_str(&format!(
                "[[tokens]]\nsha256 = \"{}\"\nsite = \"{SITE}\"\nhost = \"{host}\"\n",
                hash_token(token)
            ));
        }
        std::fs::write(&config, text).expect("collector config");
        VmCollector { config, port }
    }

    fn start(&self) -> Proc {
        let p = Proc::spawn(
            "inferwatt-collector",
            Command::new(harness::bin("inferwatt-collector"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .stderr(Stdio::null()),
        );
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        harness::wait_for("the collector's /healthz", Duration::from_secs(20), || {
            harness::http_get(&url).filter(|(s, _)| *s == 200)
        });
        p
    }
}

fn report_cli(args: &[&str], extra: &[&Path]) -> Value {
    let mut cmd = Command::new(harness::bin("inferwatt-collector"));
    cmd.args(["report", "--format", "json"]).args(args);
    for p in extra {
        cmd.arg(p);
    }
    let out = cmd.output().expect("report");
    assert!(
        out.status.success(),
        "report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// GPU energy (active + idle) per model, J.
fn by_model(report: &Value) -> BTreeMap<String, f64> {
    report["by_model"]
        .as_array()
        .expect("by_model")
        .iter()
        .map(|r| {
            let e = &r["energy_kwh"];
            (
                r["model"].as_str().expect("model").to_owned(),
                (e["gpu_active"].as_f64().expect("active") + e["gpu_idle"].as_f64().expect("idle"))
                    * 3.6e6,
            )
        })
        .collect()
}

fn total_gpu_j(report: &Value) -> f64 {
    let e = &report["totals"]["energy_kwh"];
    (e["gpu_active"].as_f64().expect("active") + e["gpu_idle"].as_f64().expect("idle")) * 3.6e6
}

#[test]
fn two_collectors_over_victoriametrics_report_what_sqlite_and_ground_truth_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let vm_port = harness::free_port();
    let _vm = start_vm(&root.join("vm"), vm_port);

    // Two model servers on each of two GPUs.
    let serve = |m: &'static str| model_process("vllm", &["serve", m], None, None, 1.0);
    let servers = [serve("fleet/A"), serve("fleet/B"), serve("fleet/C")];
    let epoch = harness::now_unix_ms() - 3_000;
    let gb = 1_000_000_000u64;
    let gpu = |uuid: &str, procs: &[(&Proc, f64)]| {
        json!({
            "uuid": uuid, "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
            "processes": procs.iter().map(|(p, _)| json!({"pid": p.pid(), "used_memory_bytes": 20 * gb, "start_s": 0.0})).collect::<Vec<_>>(),
            "phases": [
                {"start_s": 0.0, "end_s": 20.0, "procs": procs.iter().map(|(p, u)| json!({"pid": p.pid(), "sm_util": u})).collect::<Vec<_>>()},
                {"start_s": 20.0, "end_s": 600.0, "procs": procs.iter().map(|(p, u)| json!({"pid": p.pid(), "sm_util": u * 0.5})).collect::<Vec<_>>()},
            ],
        })
    };
    let scenario = json!({
        "epoch_unix_ms": epoch,
        "gpus": [
            gpu("GPU-fv000000-0000-4000-8000-000000000001", &[(&servers[0], 60.0), (&servers[1], 20.0)]),
            gpu("GPU-fv000000-0000-4000-8000-000000000002", &[(&servers[2], 45.0)]),
        ]
    });

    // Collector A takes host h1, B takes h2; each accepts both tokens.
    let tokens = [
        ("h1", "token-h1-0123456789abcdef0123456789abcdef"),
        ("h2", "token-h2-0123456789abcdef0123456789abcdef"),
    ];
    let ca = VmCollector::prepare(root, "collector-a", vm_port, &tokens);
    let cb = VmCollector::prepare(root, "collector-b", vm_port, &tokens);
    let mut coll_a = ca.start();
    let mut coll_b = cb.start();

    let agent = |host: &str, token: &str, port: u16| {
        let sub = root.join(host);
        std::fs::create_dir_all(&sub).expect("dir");
        let sections = format!(
            "[site]\nname = \"{SITE}\"\nhost = \"{host}\"\ncountry = \"DE\"\nzone = \"DE\"\n\
             [sampling]\ninterval_s = 0.5\n[server_metrics]\ndiscover = false\n[host]\nrapl = false\n\
             [ship]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{token}\"\nflush_interval_s = 0.5\nbackoff_max_s = 2.0\n"
        );
        harness::FileAgent::prepare(&sub, &scenario, &sections)
    };
    let agents = [
        agent("h1", tokens[0].1, ca.port),
        agent("h2", tokens[1].1, cb.port),
    ];
    let mut runs: Vec<Proc> = agents.iter().map(|a| a.spawn()).collect();

    // Collector A killed mid-run, down for 5 s, restarted.
    std::thread::sleep(Duration::from_secs(15));
    coll_a.signal("KILL");
    std::thread::sleep(Duration::from_secs(5));
    let mut coll_a = ca.start();
    let end_ms = epoch + (RUN_S * 1000.0) as i64;
    while harness::now_unix_ms() < end_ms {
        std::thread::sleep(Duration::from_millis(250));
        for r in &mut runs {
            assert!(r.is_running(), "an agent exited early");
        }
    }
    for r in &mut runs {
        r.signal("TERM");
    }
    for r in &mut runs {
        harness::wait_for("the agent to stop", Duration::from_secs(20), || {
            (!r.is_running()).then_some(())
        });
    }

    let points: Vec<Vec<Point>> = agents.iter().map(|a| a.points()).collect();
    let measured_j: f64 = points
        .iter()
        .flatten()
        .filter(|p| p.measurement == "gpu")
        .map(|p| field(p, "energy_j"))
        .sum();
    assert!(measured_j > 0.0);
    let hour = 3_600_000_000_000i64;
    let first = points
        .iter()
        .flatten()
        .filter_map(|p| p.timestamp)
        .min()
        .expect("points");
    let from_ns = first.div_euclid(hour) * hour;
    let to_ns = harness::now_unix_ms() * 1_000_000 / hour * hour + 2 * hour;
    let (from, to) = (
        (from_ns / 1_000_000_000).to_string(),
        (to_ns / 1_000_000_000).to_string(),
    );

    // Everything the agents measured, through collector B's CLI (it reads VictoriaMetrics
    // from its config): once the spools drained, exactly the measured energy.
    let cli_b = || {
        report_cli(
            &["--from", &from, "--to", &to, "--config"],
            &[cb.config.as_path()],
        )
    };
    let vm_report = harness::wait_for(
        "the spools to drain into VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let r = cli_b();
            (rel(total_gpu_j(&r), measured_j) <= 1e-6).then_some(r)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let vm_report_late = cli_b();
    assert!(
        rel(total_gpu_j(&vm_report_late), measured_j) <= 1e-6,
        "nothing doubled by late re-sends: {} J vs measured {measured_j} J",
        total_gpu_j(&vm_report_late)
    );

    // Collector A's API gives the same report.
    let (status, body) = harness::http_get(&format!(
        "http://127.0.0.1:{}/api/v1/report?from={from}&to={to}&format=json",
        ca.port
    ))
    .expect("report API");
    assert_eq!(status, 200, "{body}");
    let api_a: Value = serde_json::from_str(&body).expect("report JSON");
    let (ma, mb) = (by_model(&api_a), by_model(&vm_report));
    assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
    for (m, j) in &ma {
        assert!(
            rel(*j, mb[m]) <= 1e-9,
            "{m}: collector A {j} J vs collector B {} J",
            mb[m]
        );
    }

    // The same points in SQLite: the file sinks imported.
    let db = root.join("sqlite.db");
    for a in &agents {
        let out = Command::new(harness::bin("inferwatt-collector"))
            .args(["import", "--db"])
            .arg(&db)
            .arg(&a.out)
            .output()
            .expect("import");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sqlite = report_cli(&["--from", &from, "--to", &to, "--db"], &[db.as_path()]);
    let ms = by_model(&sqlite);
    assert_eq!(ms.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
    for (m, j) in &ms {
        assert!(
            rel(*j, mb[m]) <= 1e-4,
            "{m}: SQLite {j} J vs VictoriaMetrics {} J",
            mb[m]
        );
    }
    for what in ["requests", "output_tokens"] {
        assert_eq!(
            sqlite["totals"][what], vm_report["totals"][what],
            "{what}: SQLite vs VictoriaMetrics"
        );
    }
    let gpu_hours = |r: &Value| r["totals"]["gpu_hours"].as_f64().expect("gpu_hours");
    assert!(rel(gpu_hours(&sqlite), gpu_hours(&vm_report)) <= 1e-4);

    // Ground truth, per GPU and per model (both hosts read the same simulated GPUs).
    let sim = Scenario::from_json(&scenario.to_string()).expect("scenario");
    let epoch_ns = epoch * 1_000_000;
    let names: BTreeMap<u32, &str> = [
        (servers[0].pid(), "fleet/A"),
        (servers[1].pid(), "fleet/B"),
        (servers[2].pid(), "fleet/C"),
    ]
    .into_iter()
    .collect();
    let mut want_model: BTreeMap<&str, f64> = BTreeMap::new();
    for pts in &points {
        let mut by_gpu: BTreeMap<&str, Vec<(f64, f64, f64, bool)>> = BTreeMap::new();
        for p in pts.iter().filter(|p| p.measurement == "gpu") {
            let end = (p.timestamp.expect("ts") - epoch_ns) as f64 / 1e9;
            let gap = p.field_value("source").and_then(|v| v.as_str()) == Some("gap");
            by_gpu
                .entry(p.tag_value("gpu_uuid").expect("uuid"))
                .or_default()
                .push((end - field(p, "interval_s"), end, field(p, "energy_j"), gap));
        }
        for (uuid, rows) in &by_gpu {
            let truth = sim.truth(rows[0].0, rows[rows.len() - 1].1);
            let t = truth.gpus.iter().find(|g| g.uuid == *uuid).expect("truth");
            let got: f64 = rows.iter().map(|r| r.2).sum();
            assert!(
                rel(got, t.energy_j) < 0.005,
                "{uuid}: {got} J vs truth {} J",
                t.energy_j
            );
            for (a, b, _, _) in rows.iter().filter(|r| !r.3) {
                let tw = sim.truth(*a, *b);
                let g = tw.gpus.iter().find(|g| g.uuid == *uuid).expect("truth");
                let total: f64 = g.processes.iter().map(|p| p.active_j).sum();
                for p in &g.processes {
                    let share = if total > 0.0 {
                        p.active_j / total
                    } else {
                        1.0 / g.processes.len() as f64
                    };
                    *want_model.entry(names[&p.pid]).or_default() += p.active_j + g.idle_j * share;
                }
            }
        }
    }
    for (m, want) in &want_model {
        let got = mb.get(*m).copied().unwrap_or(0.0);
        assert!(
            rel(got, *want) < 0.02,
            "{m}: report {got} J vs truth {want} J"
        );
    }
    coll_a.signal("TERM");
    coll_b.signal("TERM");
}
