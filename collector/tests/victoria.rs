//! The VictoriaMetrics backend against a real VictoriaMetrics (Debian's
//! `victoria-metrics`, started by the test): the same points written to SQLite and through
//! the backend's write path give the same report input — per model, GPU, host, site and
//! hour to 0.01 % of energy, counts exactly — with intervals straddling hours, a
//! multi-hour gap interval, a series that starts mid-hour, a re-sent batch, unset PUE and
//! two idle policies; a dedup flag that would double or merge points is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inferwatt_collector::indicators::ReportInput;
use inferwatt_collector::input::Tenancy;
use inferwatt_collector::reporting::{self, FactorsChoice, ReportRequest};
use inferwatt_collector::store::victoria::{vm_points, VictoriaConfig};
use inferwatt_collector::store::{ReportStore, Store, VictoriaStore, HOUR_NS, YEAR_GRAIN};
use inferwatt_core::lineproto::{encode, Point};
use inferwatt_core::schema::{
    EnergySource, GpuInterval, HostEnergy, ModelEnergy, ModelUsage, Origin, PodTags, SiteInfo,
    SplitMethod,
};

const VM_BIN: &str = "/usr/bin/victoria-metrics";
/// 2026-11-02T00:00:00Z.
const T0: i64 = 1_794_096_000_000_000_000;
const S: i64 = 1_000_000_000;

struct Vm {
    child: Child,
    base: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_vm(data: &Path, dedup: Option<&str>) -> Vm {
    assert!(
        Path::new(VM_BIN).exists(),
        "{VM_BIN} is missing: run 'apt-get install victoria-metrics' (the test needs a real VictoriaMetrics)"
    );
    let port = free_port();
    let mut cmd = Command::new(VM_BIN);
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", data.display()))
        .arg("-search.latencyOffset=0s")
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=ERROR");
    if let Some(d) = dedup {
        cmd.arg(format!("-dedup.minScrapeInterval={d}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start victoria-metrics");
    let vm = Vm {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "victoria-metrics did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    vm
}

fn backend(vm: &Vm, rt: &tokio::runtime::Runtime) -> VictoriaStore {
    VictoriaStore::new(
        &VictoriaConfig {
            write_url: format!("{}/api/v2/write", vm.base),
            query_url: format!("{}/prometheus", vm.base),
            timeout_s: 30.0,
        },
        rt.handle().clone(),
    )
    .expect("backend")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A small fleet over about three hours: two sites, three hosts, two GPUs each, models
/// that come and go, 7-s intervals (so they straddle hour edges at odd offsets), one GPU
/// whose series starts at 00:41, a 2.5-h gap interval, usage, host energy and site points
/// (one site without PUE, the hosts under two idle policies).
fn fleet() -> Vec<Vec<Point>> {
    let mut batches = Vec::new();
    let hosts = [("fra1", "h1"), ("fra1", "h2"), ("iad1", "h3")];
    let mut lcg: u64 = 42;
    let mut rnd = move || {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (lcg >> 11) as f64 / (1u64 << 53) as f64
    };
    let step = 7 * S + 123_456_789;
    let mut end = T0 + 5 * S;
    while end < T0 + 3 * HOUR_NS {
        let mut batch = Vec::new();
        for (hi, (site, host)) in hosts.iter().enumerate() {
            let o = Origin {
                site: (*site).into(),
                host: (*host).into(),
            };
            for g in 0..2u32 {
                let uuid = format!("GPU-{host}-{g}");
                // GPU 1 of h2 starts at 00:41.
                if *host == "h2" && g == 1 && end < T0 + 41 * 60 * S {
                    continue;
                }
                let iv = step as f64 / 1e9;
                let e = iv * (200.0 + 400.0 * rnd());
                batch.push(
                    GpuInterval {
                        gpu_uuid: uuid.clone(),
                        gpu_index: g,
                        gpu_name: "NVIDIA H200".into(),
                        energy_j: e,
                        power_w: Some(e / iv),
                        util_pct: Some(50.0),
                        mem_used_bytes: Some(1 << 30),
                        energy_counter_mj: Some(1000),
                        interval_s: iv,
                        source: EnergySource::Counter,
                        clock_step_s: None,
                        end_ns: end,
                    }
                    .to_point(&o),
                );
                let models: &[&str] = if (end - T0) / HOUR_NS == 1 && hi == 0 {
                    &["llama", "mistral"]
                } else {
                    &["llama"]
                };
                let share = 1.0 / models.len() as f64;
                for m in models {
                    batch.push(
                        ModelEnergy {
                            gpu_uuid: uuid.clone(),
                            model: (*m).into(),
                            server: "vllm".into(),
                            active_j: e * share * 0.8,
                            idle_j: e * share * 0.2,
                            host_j: 3.0 * share,
                            interval_s: iv,
                            method: SplitMethod::SmUtil,
                            end_ns: end,
                            // On Kubernetes: its namespace and workload must come
                            // back as report keys from both stores.
                            pod: (*m == "mistral").then(|| PodTags {
                                namespace: "team-a".into(),
                                pod: "mistral-0".into(),
                                container: "vllm".into(),
                                workload: "mistral".into(),
                                workload_kind: "StatefulSet".into(),
                            }),
                        }
                        .to_point(&o),
                    );
                }
            }
            batch.push(
                ModelUsage {
                    model: "llama".into(),
                    server: "vllm".into(),
                    requests: (rnd() * 5.0) as u64,
                    input_tokens: (rnd() * 5000.0) as u64,
                    output_tokens: (rnd() * 800.0) as u64,
                    interval_s: step as f64 / 1e9,
                    end_ns: end,
                    pod: (hi == 0).then(|| PodTags {
                        namespace: "team-b".into(),
                        pod: "llama-7d9f-x2k4p".into(),
                        container: "vllm".into(),
                        workload: "llama".into(),
                        workload_kind: "Deployment".into(),
                    }),
                }
                .to_point(&o),
            );
            batch.push(
                HostEnergy {
                    cpu_j: 70.0 * step as f64 / 1e9,
                    dram_j: Some(10.0),
                    interval_s: step as f64 / 1e9,
                    source: "rapl".into(),
                    end_ns: end,
                }
                .to_point(&o),
            );
            batch.push(
                SiteInfo {
                    country: if *site == "fra1" { "DE" } else { "US" }.into(),
                    zone: if *site == "fra1" { "DE" } else { "US-MIDA-PJM" }.into(),
                    pue: (*site == "fra1").then_some(1.3),
                    wue_l_per_kwh: (*site == "fra1").then_some(0.4),
                    idle_policy: Some(
                        if *host == "h3" {
                            "separate"
                        } else {
                            "resident"
                        }
                        .into(),
                    ),
                    interval_s: step as f64 / 1e9,
                    end_ns: end,
                }
                .to_point(&o),
            );
        }
        batches.push(batch);
        end += step;
    }
    // A 2.5-h gap on h3's GPU 0, ending at 05:30 (after the regular run).
    let o = Origin {
        site: "iad1".into(),
        host: "h3".into(),
    };
    let gap_end = T0 + 5 * HOUR_NS + 30 * 60 * S;
    batches.push(vec![
        GpuInterval {
            gpu_uuid: "GPU-h3-0".into(),
            gpu_index: 0,
            gpu_name: "NVIDIA H200".into(),
            energy_j: 9.0e6,
            power_w: None,
            util_pct: None,
            mem_used_bytes: None,
            energy_counter_mj: None,
            interval_s: 9000.0,
            source: EnergySource::Gap,
            clock_step_s: None,
            end_ns: gap_end,
        }
        .to_point(&o),
        ModelEnergy {
            gpu_uuid: "GPU-h3-0".into(),
            model: "_unattributed".into(),
            server: String::new(),
            active_j: 9.0e6,
            idle_j: 0.0,
            host_j: 0.0,
            interval_s: 9000.0,
            method: SplitMethod::None,
            end_ns: gap_end,
            pod: None,
        }
        .to_point(&o),
    ]);
    batches
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-9)
}

type Key = (String, String, String, String, Tenancy, i64);

fn energy_by_row(input: &ReportInput) -> BTreeMap<Key, [f64; 4]> {
    let mut out: BTreeMap<Key, [f64; 4]> = BTreeMap::new();
    for r in &input.energy {
        let e = out
            .entry((
                r.site.clone(),
                r.host.clone(),
                r.gpu_uuid.clone(),
                r.model.clone(),
                r.tenancy.clone(),
                r.hour_start_ns,
            ))
            .or_default();
        e[0] += r.active_j;
        e[1] += r.idle_j;
        e[2] += r.host_j;
        e[3] += r.gpu_seconds;
    }
    out
}

/// The two inputs agree: every energy row to 0.01 % (of its own value, or 1e-6 of the
/// total for tiny rows), usage exactly, and the same sites, policies, sources and gaps.
fn assert_same(sqlite: &ReportInput, vm: &ReportInput, what: &str) {
    let a = energy_by_row(sqlite);
    let b = energy_by_row(vm);
    assert!(
        a.keys()
            .any(|k| k.4.namespace == "team-a" && k.4.workload == "mistral"),
        "{what}: the fleet's pod rows keep their namespace and workload"
    );
    let total: f64 = a.values().map(|v| v[0] + v[1] + v[2]).sum();
    assert!(total > 0.0, "{what}: no energy");
    let keys: std::collections::BTreeSet<&Key> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let x = a.get(k).copied().unwrap_or_default();
        let y = b.get(k).copied().unwrap_or_default();
        for i in 0..4 {
            let tol = 1e-4 * x[i].abs().max(y[i].abs()) + 1e-6 * total.max(1.0) * f64::from(i < 3);
            assert!(
                (x[i] - y[i]).abs() <= tol.max(1e-6),
                "{what}: row {k:?} column {i}: SQLite {} vs VictoriaMetrics {}",
                x[i],
                y[i]
            );
        }
    }
    let ea: f64 = a.values().map(|v| v[0] + v[1]).sum();
    let eb: f64 = b.values().map(|v| v[0] + v[1]).sum();
    assert!(rel(ea, eb) <= 1e-4, "{what}: GPU energy {ea} vs {eb}");
    let usage = |i: &ReportInput| {
        i.usage
            .iter()
            .map(|u| {
                (
                    (
                        u.site.clone(),
                        u.model.clone(),
                        u.tenancy.clone(),
                        u.hour_start_ns,
                    ),
                    (u.requests, u.input_tokens, u.output_tokens),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(usage(sqlite), usage(vm), "{what}: usage");
    let sites = |i: &ReportInput| {
        i.sites
            .iter()
            .map(|s| {
                (
                    s.site.clone(),
                    s.country.clone(),
                    s.zone.clone(),
                    format!("{:?}", s.pue),
                    format!("{:?}", s.wue_l_per_kwh),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sites(sqlite), sites(vm), "{what}: sites");
    let policies = |i: &ReportInput| {
        i.idle_policies
            .iter()
            .map(|p| (p.site.clone(), p.host.clone(), p.policy.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(policies(sqlite), policies(vm), "{what}: idle policies");
    let sources = |i: &ReportInput| {
        i.sources
            .iter()
            .map(|s| ((s.site.clone(), s.source.clone()), (s.energy_j, s.seconds)))
            .collect::<BTreeMap<_, _>>()
    };
    let (sa, sb) = (sources(sqlite), sources(vm));
    assert_eq!(
        sa.keys().collect::<Vec<_>>(),
        sb.keys().collect::<Vec<_>>(),
        "{what}: sources"
    );
    for (k, (e, s)) in &sa {
        let (e2, s2) = sb[k];
        assert!(
            rel(*e, e2) <= 1e-4 && rel(*s, s2) <= 1e-4,
            "{what}: source {k:?}: {e} J {s} s vs {e2} J {s2} s"
        );
    }
    let gaps = |i: &ReportInput| {
        i.gaps
            .iter()
            .map(|g| (g.gpu_uuid.clone(), (g.energy_j).round() as i64))
            .collect::<Vec<_>>()
    };
    assert_eq!(gaps(sqlite), gaps(vm), "{what}: gaps");
    let splits = |i: &ReportInput| {
        i.splits
            .iter()
            .map(|s| ((s.site.clone(), s.method.clone()), s.energy_j))
            .collect::<BTreeMap<_, _>>()
    };
    let (pa, pb) = (splits(sqlite), splits(vm));
    assert_eq!(
        pa.keys().collect::<Vec<_>>(),
        pb.keys().collect::<Vec<_>>(),
        "{what}: split methods"
    );
    for (k, e) in &pa {
        assert!(rel(*e, pb[k]) <= 1e-4, "{what}: split {k:?}");
    }
}

fn input(store: &dyn ReportStore, from: i64, to: i64, grain: i64) -> ReportInput {
    reporting::report_input(
        store,
        inferwatt_collector::indicators::Period {
            from_ns: from,
            to_ns: to,
        },
        grain,
        "resident",
    )
    .expect("report input")
}

#[test]
fn a_report_over_victoriametrics_equals_the_report_over_sqlite() {
    let data = tempfile::tempdir().expect("tempdir");
    let vm = start_vm(data.path(), Some("1ms"));
    let rt = runtime();
    let backend = backend(&vm, &rt);
    rt.block_on(backend.check_dedup()).expect("1ms is accepted");

    let sqlite = Store::open_in_memory().expect("store");
    let batches = fleet();
    for (i, batch) in batches.iter().enumerate() {
        sqlite.write(batch).expect("sqlite write");
        let body = encode(&vm_points(batch).expect("valid")).expect("encode");
        rt.block_on(backend.write(body.clone())).expect("vm write");
        // Every 50th batch is re-sent, as an agent does after a lost acknowledgement.
        if i % 50 == 0 {
            rt.block_on(backend.write(body)).expect("vm re-send");
            sqlite.write(batch).expect("sqlite re-send");
        }
    }
    force_flush(&vm.base, &rt);

    // The default period (the data's first and last hour) is the same.
    let all = ReportRequest {
        from_ns: None,
        to_ns: None,
        group: vec![],
        min_count: 0,
    };
    assert_eq!(
        reporting::resolve_period(&backend, &all).expect("period"),
        reporting::resolve_period(&sqlite, &all).expect("period"),
        "default period"
    );

    let whole = (T0, T0 + 6 * HOUR_NS);
    for (from, to, grain, what) in [
        (whole.0, whole.1, HOUR_NS, "six whole hours, hourly"),
        (whole.0, whole.1, YEAR_GRAIN, "six whole hours, by year"),
        (T0 + HOUR_NS, T0 + 2 * HOUR_NS, HOUR_NS, "one hour"),
    ] {
        let a = input(&sqlite, from, to, grain);
        let b = input(&backend, from, to, grain);
        assert_same(&a, &b, what);
    }

    // The web page's series (15-minute steps, per model) add up the same over both.
    for step_s in [900, 3600] {
        let req = inferwatt_collector::web::series::SeriesRequest {
            from_ns: Some(whole.0),
            to_ns: Some(whole.1),
            step_s,
            group: inferwatt_collector::web::series::SeriesGroup::Model,
        };
        let factors = FactorsChoice::builtin();
        let a = inferwatt_collector::web::series::build_series(&sqlite, &req, &factors)
            .expect("sqlite series");
        let b = inferwatt_collector::web::series::build_series(&backend, &req, &factors)
            .expect("vm series");
        assert_eq!(a.bucket_starts, b.bucket_starts, "series buckets");
        let lines = |s: &inferwatt_collector::web::series::Series| {
            s.series
                .iter()
                .map(|l| (l.key.clone(), l.energy_kwh.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let (la, lb) = (lines(&a), lines(&b));
        assert_eq!(la.keys().collect::<Vec<_>>(), lb.keys().collect::<Vec<_>>());
        for (k, va) in &la {
            let total: f64 = va.iter().sum();
            // Within an hour, an interval longer than the step (the 2.5-h gap, all
            // `_unattributed`) is counted at its end over VictoriaMetrics, where SQLite
            // spreads it over the minutes: only the totals compare for it.
            let spread = k.as_str() == "_unattributed" && step_s < 3600;
            for (i, (x, y)) in va.iter().zip(&lb[k]).enumerate().filter(|_| !spread) {
                // A 15-min bucket edge inside an interval: counted by its end (≤ one
                // 7-s interval per series and edge), so compare to the line's total.
                assert!(
                    (x - y).abs() <= 2e-3 * total,
                    "step {step_s}: {k} bucket {i}: SQLite {x} vs VictoriaMetrics {y}"
                );
            }
            let tb: f64 = lb[k].iter().sum();
            assert!(
                rel(total, tb) <= 1e-4,
                "step {step_s}: {k}: {total} vs {tb}"
            );
        }
    }

    // The whole report, computed by the same code over both.
    let factors = FactorsChoice::builtin();
    let req = ReportRequest {
        from_ns: Some(whole.0),
        to_ns: Some(whole.1),
        group: vec![],
        min_count: 0,
    };
    let a = reporting::build_report(&sqlite, &req, &factors).expect("sqlite report");
    let b = reporting::build_report(&backend, &req, &factors).expect("vm report");
    let ja = serde_json::to_value(&a).expect("json");
    let jb = serde_json::to_value(&b).expect("json");
    let ea = ja["totals"]["energy_kwh"]["facility"]
        .as_f64()
        .expect("energy");
    let eb = jb["totals"]["energy_kwh"]["facility"]
        .as_f64()
        .expect("energy");
    assert!(
        ea > 0.0 && rel(ea, eb) <= 1e-4,
        "report energy {ea} vs {eb}"
    );
}

#[test]
fn a_dedup_flag_that_would_double_or_merge_points_is_refused() {
    let rt = runtime();
    for (flag, expect) in [(None, "counted twice"), (Some("10s"), "merge distinct")] {
        let data = tempfile::tempdir().expect("tempdir");
        let vm = start_vm(data.path(), flag);
        let backend = backend(&vm, &rt);
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            match rt.block_on(backend.check_dedup()) {
                Err(e) if e.to_string().contains("cannot read") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => break e.to_string(),
                Ok(()) => panic!("dedup {flag:?} was accepted"),
            }
        };
        assert!(
            err.contains(expect) && err.contains("-dedup.minScrapeInterval=1ms"),
            "{flag:?}: {err}"
        );
    }
}

/// Makes what was written readable (VictoriaMetrics buffers new samples for a second).
fn force_flush(base: &str, rt: &tokio::runtime::Runtime) {
    let url = format!("{base}/internal/force_flush");
    rt.block_on(async {
        let r = reqwest::get(&url).await.expect("force_flush");
        assert!(r.status().is_success(), "force_flush: {}", r.status());
    });
}

/// Over the VictoriaMetrics backend, through the HTTP write API: a batch with one bad
/// point is refused whole with the line named and nothing reaches VictoriaMetrics; a
/// wrong token is 401; a good batch is 204 and readable; with VictoriaMetrics down the
/// write is 503 with `Retry-After` (nothing acknowledged), and the collector serves again
/// when it is back.
#[test]
fn the_write_api_over_victoriametrics_refuses_bad_input_and_acknowledges_only_stored_points() {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use http_body_util::BodyExt as _;
    use inferwatt_collector::api::{app, AppState};
    use inferwatt_collector::config::{Config, TokenConfig};
    use inferwatt_collector::ingest::auth::hash_token;
    use std::sync::Arc;
    use tower::ServiceExt as _;

    let data = tempfile::tempdir().expect("tempdir");
    let mut vm = start_vm(data.path(), Some("1ms"));
    let rt = runtime();
    let token = "iw_test_token_0123456789abcdef0123456789";
    let config = Config {
        tokens: vec![TokenConfig {
            sha256: hash_token(token),
            site: "s1".into(),
            host: "h1".into(),
        }],
        ..Config::default()
    };
    let state = rt.block_on(async {
        AppState::new(config, Arc::new(Store::open_in_memory().expect("store")))
            .with_victoria(Arc::new(backend(&vm, &rt)))
    });
    let send = |token: &str, body: String| -> (StatusCode, Option<String>, String) {
        rt.block_on(async {
            let req = Request::post("/api/v2/write?org=o&bucket=b&precision=ns")
                .header(header::AUTHORIZATION, format!("Token {token}"))
                .body(Body::from(body))
                .expect("request");
            let resp = app(state.clone()).oneshot(req).await.expect("infallible");
            let status = resp.status();
            let retry = resp
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, retry, String::from_utf8_lossy(&body).into_owned())
        })
    };
    let line = |i: i64, energy: &str| {
        format!(
            "gpu,site=s1,host=h1,gpu_uuid=GPU-0,gpu_name=H100 energy_j={energy},interval_s=1,source=\"counter\" {}\n",
            T0 + i * S
        )
    };
    let stored = |backend: &VictoriaStore| -> f64 {
        backend
            .sum_gpu_energy(T0 - HOUR_NS, T0 + HOUR_NS)
            .expect("sum")
            .iter()
            .map(|r| r.energy_j)
            .sum()
    };
    let reader = backend(&vm, &rt);

    // One bad point among good ones: 400 naming line 3, nothing stored.
    let body = format!("{}{}{}", line(1, "100"), line(2, "100"), line(3, "-5"));
    let (status, _, msg) = send(token, body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    assert!(msg.contains("line 3") && msg.contains("energy_j"), "{msg}");
    force_flush(&vm.base, &rt);
    assert_eq!(stored(&reader), 0.0, "a refused batch stored nothing");

    // A wrong token.
    let (status, _, _) = send("iw_wrong_token_0123456789abcdef012345678", line(1, "100"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A good batch, sent twice (a lost acknowledgement): stored once.
    let good = format!("{}{}", line(1, "100"), line(2, "50.5"));
    for _ in 0..2 {
        let (status, _, msg) = send(token, good.clone());
        assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");
    }
    force_flush(&vm.base, &rt);
    assert!(
        (stored(&reader) - 150.5).abs() < 1e-9,
        "{}",
        stored(&reader)
    );

    // VictoriaMetrics down: 503 and Retry-After, the agent keeps its spool.
    let _ = vm.child.kill();
    let _ = vm.child.wait();
    let (status, retry, msg) = send(token, line(4, "10"));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{msg}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(msg.contains("retry"), "{msg}");
}
