//! Kubernetes: the agent, on the simulated driver, reads the node's pods from a test
//! kubelet (an HTTP server answering `GET /pods` with the pod lists in
//! `agent/src/kube/testdata/`, written to the kubelet's format, behind a bearer token)
//! and a `/proc` tree laid out as a node's (`[host] proc_root`: cgroup paths of the
//! systemd and cgroupfs drivers, containerd and CRI-O). Each process's energy is tagged
//! with its pod, namespace, container and workload: a vLLM Deployment, a KServe predictor
//! named by its InferenceService (its command line says only `/mnt/models`), a
//! StatefulSet pod restarted with a new UID mid-run, and a process outside any pod,
//! which keeps no pod tags; the kubelet stops answering for a while and nothing is
//! untagged. The report grouped by namespace adds up to the same totals as by model.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inferwatt_core::lineproto::Point;
use inferwatt_tests::harness::{self, FileAgent};
use serde_json::{json, Value};

const TOKEN: &str = "node-agent-token";
const GPU_SHARED: &str = "GPU-d0000000-0000-4000-8000-000000000001";
const GPU_RESTART: &str = "GPU-d0000000-0000-4000-8000-000000000002";

const BEFORE: &str = include_str!("../../../agent/src/kube/testdata/kubelet-pods.json");
const AFTER: &str =
    include_str!("../../../agent/src/kube/testdata/kubelet-pods-after-restart.json");
/// The vLLM pod's IP in the test: another loopback address, where its server listens.
const VLLM_POD_IP: &str = "127.0.0.2";

/// A pod list with the vLLM pod at [`VLLM_POD_IP`] (the fixtures' addresses are a
/// cluster's, unreachable here).
fn with_vllm_ip(list: &str) -> &'static [u8] {
    let mut v: Value = serde_json::from_str(list).expect("fixture");
    for pod in v["items"].as_array_mut().expect("items") {
        if pod["metadata"]["name"] == "vllm-llama-8b-7d9f8b6c5d-x2k4p" {
            pod["status"]["podIP"] = json!(VLLM_POD_IP);
        }
    }
    Box::leak(v.to_string().into_bytes().into_boxed_slice())
}

/// The pids of the fake node and what `/proc` says of them.
const VLLM: u32 = 4101;
const KSERVE: u32 = 4102;
const SGLANG_OLD: u32 = 4103;
const OUTSIDE: u32 = 4104;
const SGLANG_NEW: u32 = 4105;
/// A process whose cgroup cannot be read, on the GPU the kubelet gave the StatefulSet.
const HIDDEN: u32 = 4106;

/// Seconds into the scenario when the StatefulSet's pod dies, when the kubelet lists its
/// replacement, and when the replacement's process appears on the GPU.
const DIES_S: f64 = 6.0;
const LISTED_S: f64 = 7.0;
const RESTARTS_S: f64 = 9.0;

fn proc_entry(root: &Path, pid: u32, argv: &[&str], cgroup: &str) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).expect("proc dir");
    let mut cmdline = argv.join("\0");
    cmdline.push('\0');
    std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
    let comm = Path::new(argv[0]).file_name().expect("name");
    std::fs::write(dir.join("comm"), format!("{}\n", comm.to_string_lossy())).expect("comm");
    std::fs::write(dir.join("environ"), "").expect("environ");
    std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
    std::fs::write(
        dir.join("stat"),
        format!(
            "{pid} ({}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 120 30 0 0 20 0 1 0 100 0 0\n",
            comm.to_string_lossy()
        ),
    )
    .expect("stat");
}

/// A kubelet serving `GET /pods` from `body`, 401 with a `v1.Status` without the token,
/// 503 while `body` is empty (a kubelet restarting).
fn start_kubelet(body: Arc<Mutex<&'static [u8]>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request = String::new();
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        authorized = line.trim_end().ends_with(&format!("Bearer {TOKEN}"));
                    }
                    request.push_str(&line);
                }
                let (status, payload): (&str, Vec<u8>) = if !request.starts_with("GET /pods ") {
                    ("404 Not Found", b"404 page not found".to_vec())
                } else if !authorized {
                    (
                        "401 Unauthorized",
                        br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.to_vec(),
                    )
                } else {
                    match body.lock().expect("body").to_vec() {
                        b if b.is_empty() => ("503 Service Unavailable", b"restarting".to_vec()),
                        b => ("200 OK", b),
                    }
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = s.write_all(&payload);
                let _ = s.flush();
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            });
        }
    });
    port
}

fn tags(p: &Point) -> BTreeMap<String, String> {
    ["namespace", "pod", "container", "workload", "workload_kind"]
        .iter()
        .filter_map(|k| Some((k.to_string(), p.tag_value(k)?.to_string())))
        .collect()
}

fn want(
    ns: &str,
    pod: &str,
    container: &str,
    workload: &str,
    kind: &str,
) -> BTreeMap<String, String> {
    [
        ("namespace", ns),
        ("pod", pod),
        ("container", container),
        ("workload", workload),
        ("workload_kind", kind),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn energy_is_tagged_with_pod_namespace_and_workload_through_a_pod_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let proc_root = root.join("proc");
    // The vLLM pod's server, at its pod IP (not the agent's loopback), counting requests.
    let vllm_port = harness::free_port();
    let mut server = Command::new(harness::bin("fake-inference-server"));
    {
        use std::os::unix::process::CommandExt as _;
        server
            .arg0("/usr/bin/python3")
            .args([
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                "meta-llama/Llama-3.1-8B-Instruct",
            ])
            .args(["--port", &vllm_port.to_string()])
            .env("FAKE_SERVER_HOST", VLLM_POD_IP)
            .env(
                "FAKE_SERVER_TRACE",
                harness::shared_dir().join("data/traces/azure-llm-inference-2023-conv.csv"),
            )
            .env("FAKE_SERVER_SPEEDUP", "30");
    }
    let _vllm_server = harness::Proc::spawn("fake vLLM", &mut server);
    // systemd driver, containerd; cgroup v2.
    proc_entry(
        &proc_root,
        VLLM,
        &["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", &vllm_port.to_string()],
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f4c2a4e_8c1b_4c55_9c2f_1f2e3d4c5b6a.slice/cri-containerd-ec8207a3dde607f7867f8f5390915018488b877761306ffd4ef099f9b3ee16a1.scope\n",
    );
    // cgroupfs driver, CRI-O; cgroup v1 (several controllers).
    proc_entry(
        &proc_root,
        KSERVE,
        &["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/mnt/models", "--port", "8080"],
        "12:memory:/kubepods/pod7a1d3c5e-2b4f-4a6c-9e8d-0f1a2b3c4d5e/crio-c54d3f6d2054ef1ec7e23898754d7afe360754494734f5eded5aae18f9614351\n11:cpu,cpuacct:/kubepods/pod7a1d3c5e-2b4f-4a6c-9e8d-0f1a2b3c4d5e/crio-c54d3f6d2054ef1ec7e23898754d7afe360754494734f5eded5aae18f9614351\n",
    );
    // The StatefulSet pod before and after its restart (new UID, new container).
    let sglang = [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "Qwen/Qwen2.5-7B-Instruct",
    ];
    proc_entry(
        &proc_root,
        SGLANG_OLD,
        &sglang,
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3e9b1f7a_6c2d_4e8f_a1b3_c5d7e9f0a2b4.slice/cri-containerd-590f2e806862d04ab8fbfd7396f894063cf43aaec919e35a1a1a5f63219a915f.scope\n",
    );
    proc_entry(
        &proc_root,
        SGLANG_NEW,
        &sglang,
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda2c4e6f8_1b3d_4f5a_9c7e_0d2f4a6b8c0e.slice/cri-containerd-2982b63783ca983e9e854e94a826cbbe50df07f90ffee1789279f7e85bc0f7af.scope\n",
    );
    // Not in any pod: a user's session on the node.
    proc_entry(
        &proc_root,
        OUTSIDE,
        &["python3", "train.py"],
        "0::/user.slice/user-1000.slice/session-3.scope\n",
    );
    proc_entry(&proc_root, HIDDEN, &["/opt/bin/custom-server"], "");
    std::fs::remove_file(proc_root.join(HIDDEN.to_string()).join("cgroup")).expect("rm cgroup");

    // The kubelet's PodResources: GPU_SHARED to the vLLM pod only (the KServe process
    // on it is a mismatch), GPU_RESTART to the StatefulSet (time-sliced replica id).
    let sock = root.join("pod-resources.sock");
    let assignments = root.join("assignments.json");
    std::fs::write(
        &assignments,
        json!([
            {"namespace": "inference", "pod": "vllm-llama-8b-7d9f8b6c5d-x2k4p", "containers": [
                {"name": "vllm", "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": [GPU_SHARED]}]}]},
            {"namespace": "inference", "pod": "sglang-qwen-0", "containers": [
                {"name": "sglang", "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": [format!("{GPU_RESTART}::1")]}]}]},
        ])
        .to_string(),
    )
    .expect("assignments");
    let mut grpc = Command::new("python3");
    grpc.arg(harness::repo_root().join("tests/e2e/podresources/server.py"))
        .arg(&sock)
        .arg(&assignments)
        .stdout(Stdio::null());
    let _pod_resources = harness::Proc::spawn("podresources", &mut grpc);
    harness::wait_for("the PodResources socket", Duration::from_secs(30), || {
        sock.exists().then_some(())
    });

    let body: Arc<Mutex<&'static [u8]>> = Arc::new(Mutex::new(with_vllm_ip(BEFORE)));
    let port = start_kubelet(body.clone());
    std::fs::write(root.join("token"), format!("{TOKEN}\n")).expect("token");

    let gb = 1_000_000_000u64;
    let gpu = |uuid: &str, procs: Value, phases: Value| {
        json!({
            "uuid": uuid, "name": "NVIDIA H100 80GB HBM3",
            "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85_899_345_920u64,
            "energy_counter": true, "power_reading": "average_1s",
            "processes": procs, "phases": phases,
        })
    };
    let scenario = |epoch: i64| {
        json!({
            "epoch_unix_ms": epoch,
            // The pids live only in the fake /proc tree.
            "check_alive": false,
            "gpus": [
                gpu(GPU_SHARED,
                    json!([{"pid": VLLM, "used_memory_bytes": 30 * gb, "start_s": 0.0},
                           {"pid": KSERVE, "used_memory_bytes": 20 * gb, "start_s": 0.0}]),
                    json!([{"start_s": 0.0, "end_s": 600.0, "procs": [
                        {"pid": VLLM, "sm_util": 50.0, "weight": 1.0},
                        {"pid": KSERVE, "sm_util": 25.0, "weight": 1.0}]}])),
                gpu(GPU_RESTART,
                    json!([{"pid": SGLANG_OLD, "used_memory_bytes": 20 * gb, "start_s": 0.0, "end_s": DIES_S},
                           {"pid": SGLANG_NEW, "used_memory_bytes": 20 * gb, "start_s": RESTARTS_S},
                           {"pid": OUTSIDE, "used_memory_bytes": 4 * gb, "start_s": 0.0},
                           {"pid": HIDDEN, "used_memory_bytes": 2 * gb, "start_s": 0.0}]),
                    json!([{"start_s": 0.0, "end_s": 600.0, "procs": [
                        {"pid": SGLANG_OLD, "sm_util": 40.0, "weight": 1.0},
                        {"pid": SGLANG_NEW, "sm_util": 40.0, "weight": 1.0},
                        {"pid": OUTSIDE, "sm_util": 10.0, "weight": 1.0},
                        {"pid": HIDDEN, "sm_util": 5.0, "weight": 1.0}]}])),
            ]
        })
    };
    let config = format!(
        "[site]\nname = \"fra1\"\nhost = \"gpu-node-a\"\ncountry = \"DE\"\nzone = \"DE\"\n\
         [sampling]\ninterval_s = 0.5\nsplit = \"sm_util\"\n\
         [server_metrics]\ninterval_s = 1.0\n\
         [host]\nrapl = false\nproc_root = \"{proc}\"\n\
         [kubernetes]\npods_url = \"http://127.0.0.1:${{KUBELET_PORT}}/pods\"\ntoken_file = \"{token}\"\nrefresh_s = 1.0\n\
         pod_resources_socket = \"{sock}\"\n",
        sock = sock.display(),
        proc = proc_root.display(),
        token = root.join("token").display(),
    );
    let agent = FileAgent::prepare(root, &scenario(harness::now_unix_ms()), &config);

    // `check` reads the pod list once and shows each process's pod and rule.
    let check = agent_check(&agent, port);
    assert!(
        check.contains("Kubernetes: 6 pods read from http://127.0.0.1:"),
        "{check}"
    );
    assert!(
        check.contains("model 'llama3' (server kserve)")
            && check.contains("serving.kserve.io/inferenceservice")
            && check.contains("pod: models/llama3-predictor-6b9c7d5f8-q7wzn container 'kserve-container', workload Deployment llama3-predictor"),
        "{check}"
    );
    // The kubelet's assignment: read, a mismatch named, an unreadable cgroup resolved.
    assert!(
        check.contains("the kubelet's GPU assignment read (PodResources)"),
        "{check}"
    );
    assert!(
        check.contains(&format!("kubelet: GPU {GPU_SHARED} is assigned by the kubelet to inference/vllm-llama-8b-7d9f8b6c5d-x2k4p/vllm, not to this process's pod models/llama3-predictor-6b9c7d5f8-q7wzn")),
        "{check}"
    );
    assert!(
        check.contains(&format!("kubelet: cgroup unreadable: pod inference/sglang-qwen-0 from the kubelet's assignment of GPU {GPU_RESTART}")),
        "{check}"
    );
    // A wrong token is an error that says what to grant, and tags nothing.
    std::fs::write(root.join("token"), "stale\n").expect("token");
    let denied = agent_check(&agent, port);
    assert!(
        denied.contains("cannot read the pod list") && denied.contains("401"),
        "{denied}"
    );
    // Only the kubelet's device assignment (its socket needs no token) still tags the
    // process whose cgroup is unreadable; no cgroup's pod is found without the list.
    assert_eq!(denied.matches("pod: ").count(), 1, "{denied}");
    assert!(
        denied.contains("pod: inference/sglang-qwen-0 container 'sglang'"),
        "{denied}"
    );
    std::fs::write(root.join("token"), format!("{TOKEN}\n")).expect("token");

    // The run's own scenario clock starts now.
    let epoch = harness::now_unix_ms() - 500;
    std::fs::write(&agent.scenario, scenario(epoch).to_string()).expect("scenario");
    let mut cmd = agent.command(&[]);
    cmd.env("KUBELET_PORT", port.to_string());
    let mut run = harness::Proc::spawn("inferwatt-agent", &mut cmd);
    // The kubelet lists the replacement pod a second after the old one died.
    let at = |s: f64| {
        Duration::from_millis((epoch + (s * 1000.0) as i64 - harness::now_unix_ms()).max(0) as u64)
    };
    // From 2 s to 5 s the kubelet does not answer: the last list read stays in use, so
    // every row keeps its pod (asserted below for all of them).
    std::thread::sleep(at(2.0));
    *body.lock().expect("body") = b"";
    std::thread::sleep(at(5.0));
    *body.lock().expect("body") = with_vllm_ip(BEFORE);
    std::thread::sleep(at(LISTED_S));
    *body.lock().expect("body") = with_vllm_ip(AFTER);
    std::thread::sleep(at(RESTARTS_S + 4.0));
    run.signal("TERM");

    let points = agent.points();
    let rows: Vec<&Point> = points
        .iter()
        .filter(|p| p.measurement == "model_energy")
        .collect();
    let end_s = |p: &Point| (p.timestamp.expect("ts") / 1_000_000 - epoch) as f64 / 1000.0;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for p in &rows {
        let model = p.tag_value("model").unwrap_or("");
        let t = tags(p);
        let expected = match model {
            "meta-llama/Llama-3.1-8B-Instruct" => want(
                "inference",
                "vllm-llama-8b-7d9f8b6c5d-x2k4p",
                "vllm",
                "vllm-llama-8b",
                "Deployment",
            ),
            "llama3" => {
                assert_eq!(p.tag_value("server"), Some("kserve"), "{p:?}");
                want(
                    "models",
                    "llama3-predictor-6b9c7d5f8-q7wzn",
                    "kserve-container",
                    "llama3-predictor",
                    "Deployment",
                )
            }
            "Qwen/Qwen2.5-7B-Instruct" => want(
                "inference",
                "sglang-qwen-0",
                "sglang",
                "sglang-qwen",
                "StatefulSet",
            ),
            // Tagged from the kubelet's assignment: its cgroup is unreadable, and the
            // StatefulSet's container is the GPU's only holder.
            "unknown:custom-server" => want(
                "inference",
                "sglang-qwen-0",
                "sglang",
                "sglang-qwen",
                "StatefulSet",
            ),
            m if m.starts_with("unknown:") || m.starts_with('_') => BTreeMap::new(),
            other => panic!("unexpected model '{other}': {p:?}"),
        };
        assert_eq!(t, expected, "{model} at {:.1} s", end_s(p));
        *seen.entry(model.to_string()).or_default() += 1;
        if model == "Qwen/Qwen2.5-7B-Instruct" && end_s(p) > RESTARTS_S + 0.6 {
            *seen.entry("qwen after the restart".into()).or_default() += 1;
        }
    }
    let models: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|p| p.tag_value("model")).collect();
    println!(
        "{} points, {} model rows, models {models:?}",
        points.len(),
        rows.len()
    );
    for m in [
        "meta-llama/Llama-3.1-8B-Instruct",
        "llama3",
        "unknown:custom-server",
        "Qwen/Qwen2.5-7B-Instruct",
        "qwen after the restart",
    ] {
        assert!(seen.get(m).copied().unwrap_or(0) >= 4, "{m}: {seen:?}");
    }
    assert!(
        rows.iter().any(|p| p
            .tag_value("model")
            .is_some_and(|m| m.starts_with("unknown:"))
            && tags(p).is_empty()),
        "the process outside any pod keeps its energy, untagged: {seen:?}"
    );

    // Usage: the vLLM pod's server was scraped at its pod IP, and its requests carry the
    // pod, so a tenant's tokens meet its energy.
    let usage: Vec<&Point> = points
        .iter()
        .filter(|p| {
            p.measurement == "model_usage"
                && p.tag_value("model") == Some("meta-llama/Llama-3.1-8B-Instruct")
        })
        .collect();
    let requests: f64 = usage
        .iter()
        .map(|p| p.field_f64("requests").unwrap_or(0.0))
        .sum();
    assert!(
        requests > 0.0,
        "no requests from the server at the pod's IP: {usage:?}"
    );
    for p in &usage {
        assert_eq!(
            tags(p),
            want(
                "inference",
                "vllm-llama-8b-7d9f8b6c5d-x2k4p",
                "vllm",
                "vllm-llama-8b",
                "Deployment"
            ),
            "{p:?}"
        );
    }

    // The report by namespace adds up to the one by model.
    let db = root.join("c.db");
    let import = Command::new(harness::bin("inferwatt-collector"))
        .args(["import", "--db"])
        .arg(&db)
        .arg(&agent.out)
        .output()
        .expect("import");
    assert!(
        import.status.success(),
        "import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let report = |group: &str| harness::report_json(&db, &["--group".as_ref(), group.as_ref()]);
    let by_model = report("model");
    let by_ns = report("namespace,workload");
    let it = |v: &Value| v["energy_kwh"]["it"].as_f64().expect("it energy");
    let total = it(&by_model["totals"]);
    assert!(total > 0.0);
    assert!((it(&by_ns["totals"]) - total).abs() <= 1e-9 * total);
    assert!(
        by_ns["by_model"].as_array().is_none_or(|a| a.is_empty()),
        "only what was asked"
    );
    let sum = |rows: &Value| -> f64 { rows.as_array().expect("rows").iter().map(it).sum() };
    for table in ["by_namespace", "by_workload"] {
        assert!(
            (sum(&by_ns[table]) - total).abs() <= 1e-9 * total,
            "{table} adds up to {} kWh, the model table to {total}",
            sum(&by_ns[table])
        );
    }
    assert!((sum(&by_model["by_model"]) - total).abs() <= 1e-9 * total);
    // The default report has the Kubernetes tables, since pods ran.
    assert!(report("")["by_workload"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let workloads: Vec<(String, String, String)> = by_ns["by_workload"]
        .as_array()
        .expect("by_workload")
        .iter()
        .map(|w| {
            (
                w["namespace"].as_str().unwrap_or("?").to_string(),
                w["workload_kind"].as_str().unwrap_or("?").to_string(),
                w["workload"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    for (ns, kind, name) in [
        ("inference", "Deployment", "vllm-llama-8b"),
        ("models", "Deployment", "llama3-predictor"),
        ("inference", "StatefulSet", "sglang-qwen"),
        ("", "", ""),
    ] {
        assert!(
            workloads.contains(&(ns.into(), kind.into(), name.into())),
            "{ns}/{kind}/{name} in {workloads:?}"
        );
    }
    let namespaces: Vec<&str> = by_ns["by_namespace"]
        .as_array()
        .expect("by_namespace")
        .iter()
        .filter_map(|n| n["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, vec!["", "inference", "models"]);
}

fn agent_check(agent: &FileAgent, port: u16) -> String {
    let out = Command::new(harness::bin("inferwatt-agent"))
        .args(["check", "--config"])
        .arg(&agent.config)
        .env("FAKE_NVML_SCENARIO", &agent.scenario)
        .env("KUBELET_PORT", port.to_string())
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
