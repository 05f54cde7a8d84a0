//! Loads the built `libnvml_sim.so` through nvml-wrapper 0.13 — the agent's own NVML
//! path — and checks what it reads against the scenario and the model's ground truth.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nvml_sim::Scenario;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::Nvml;

/// A pid that cannot exist (above Linux's maximum `pid_max`, 2^22).
const DEAD_PID: u32 = 2_000_000_000;
/// How far in the past scenario t=0 lies when the test starts.
const AGE_MS: i64 = 20_000;

struct Fixture {
    nvml: Nvml,
    scenario: Scenario,
    epoch_ms: i64,
    child: Child,
    _dir: tempfile::TempDir,
}

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit in i64")
}

/// The cdylib cargo built for this test run: `target/<profile>/deps/libnvml_sim.so`, the
/// test executable's sibling (the copy in `target/<profile>/` is refreshed only by
/// `cargo build`, so it can be stale).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let lib = deps.join("libnvml_sim.so");
    assert!(
        lib.exists(),
        "'{}' is missing: run `cargo build -p inferwatt-nvml-sim`",
        lib.display()
    );
    lib
}

fn scenario_json(epoch_ms: i64, pid: u32) -> String {
    format!(
        r#"{{
  "epoch_unix_ms": {epoch_ms},
  "gpus": [
    {{"uuid": "GPU-00000000-1111-2222-3333-444444444444", "name": "NVIDIA H100 80GB HBM3",
      "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85899345920,
      "initial_counter_mj": 123456789,
      "processes": [
        {{"pid": {pid}, "used_memory_bytes": 40000000000}},
        {{"pid": {DEAD_PID}, "used_memory_bytes": 1000}},
        {{"pid": 1, "used_memory_bytes": 5, "start_s": 0.0, "end_s": 1.0}}
      ],
      "phases": [{{"start_s": 0.0, "end_s": 3600.0, "procs": [
        {{"pid": {pid}, "sm_util": 50.0}},
        {{"pid": {DEAD_PID}, "sm_util": 10.0, "weight": 0.5}}]}}]
    }},
    {{"uuid": "GPU-volta", "name": "Tesla V100-SXM2-16GB",
      "idle_w": 40.0, "max_w": 300.0, "memory_total_bytes": 17179869184,
      "energy_counter": false, "power_reading": "instant", "process_utilization": false,
      "processes": [{{"pid": {pid}, "used_memory_bytes": 1000000}}],
      "phases": [{{"start_s": 0.0, "end_s": 3600.0, "procs": [{{"pid": {pid}, "sm_util": 20.0}}]}}]
    }},
    {{"uuid": "GPU-mig", "name": "NVIDIA H100 80GB HBM3",
      "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 85899345920,
      "mig": {{"instances": [
        {{"gi_id": 1, "ci_id": 0, "slices": 3, "uuid": "MIG-aaaa"}},
        {{"gi_id": 2, "ci_id": 0, "slices": 4, "uuid": "MIG-bbbb"}}]}},
      "processes": [{{"pid": {pid}, "used_memory_bytes": 7000, "mig_gi": 2}}],
      "phases": [{{"start_s": 0.0, "end_s": 3600.0, "procs": [{{"pid": {pid}, "sm_util": 30.0}}]}}]
    }}
  ]
}}"#
    )
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let child = Command::new("sleep")
            .arg("120")
            .spawn()
            .expect("spawn `sleep`");
        let epoch_ms = now_ms() - AGE_MS;
        let json = scenario_json(epoch_ms, child.id());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("scenario.json");
        std::fs::write(&path, &json).expect("write scenario");
        let scenario = Scenario::from_json(&json).expect("scenario is valid");
        // Set before the first nvmlInit, while no other thread reads the environment.
        std::env::set_var(nvml_sim::SCENARIO_ENV, &path);
        let lib = library();
        let nvml = Nvml::builder()
            .lib_path(lib.as_os_str())
            .init()
            .expect("nvml init through the simulator");
        Fixture {
            nvml,
            scenario,
            epoch_ms,
            child,
            _dir: dir,
        }
    })
}

#[test]
fn system_and_identity() {
    let f = fixture();
    assert_eq!(f.nvml.sys_driver_version().expect("driver"), "550.54.15");
    assert_eq!(f.nvml.sys_cuda_driver_version().expect("cuda"), 12040);
    assert_eq!(f.nvml.device_count().expect("count"), 3);
    for (i, g) in f.scenario.gpus.iter().enumerate() {
        let d = f.nvml.device_by_index(i as u32).expect("device");
        assert_eq!(d.name().expect("name"), g.name);
        assert_eq!(d.uuid().expect("uuid"), g.uuid);
        assert_eq!(d.index().expect("index"), i as u32);
        let by_uuid = f.nvml.device_by_uuid(g.uuid.as_str()).expect("by uuid");
        assert_eq!(by_uuid.index().expect("index"), i as u32);
    }
    assert!(matches!(
        f.nvml.device_by_index(3),
        Err(NvmlError::InvalidArg)
    ));
    assert!(matches!(
        f.nvml.device_by_uuid("GPU-nope"),
        Err(NvmlError::NotFound)
    ));
    let d = f.nvml.device_by_index(0).expect("device");
    assert_eq!(d.temperature(TemperatureSensor::Gpu).expect("temp"), 45);
    assert_eq!(d.enforced_power_limit().expect("limit"), 700_000);
    assert_eq!(
        d.architecture().expect("arch").to_string().to_lowercase(),
        "hopper"
    );
}

#[test]
fn energy_counter_matches_the_model_and_truth() {
    let f = fixture();
    let g = &f.scenario.gpus[0];
    let d = f.nvml.device_by_index(0).expect("device");
    let read = || {
        let before = now_ms() - f.epoch_ms;
        let c = d.total_energy_consumption().expect("counter");
        let after = now_ms() - f.epoch_ms;
        (before, c, after)
    };
    let (b1, c1, a1) = read();
    assert!(
        (g.counter_mj(b1)..=g.counter_mj(a1)).contains(&c1),
        "counter {c1} outside the model's [{}, {}]",
        g.counter_mj(b1),
        g.counter_mj(a1)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (b2, c2, a2) = read();
    assert!((g.counter_mj(b2)..=g.counter_mj(a2)).contains(&c2));
    // Δcounter covers [q1, q2] with q the 100-ms boundaries at the two reads.
    let q = |t: i64| (t.div_euclid(100) * 100) as f64 / 1000.0;
    let lo = f.scenario.truth(q(a1), q(b2)).gpus[0].energy_j;
    let hi = f.scenario.truth(q(b1), q(a2)).gpus[0].energy_j;
    let delta_j = (c2 - c1) as f64 / 1000.0;
    assert!(
        delta_j >= lo - 0.002 && delta_j <= hi + 0.002,
        "Δcounter {delta_j} J outside truth [{lo}, {hi}] J"
    );
    // Power 70 + 630·(0.5 + 0.1·0.5) W, steady: both readings and both fields agree.
    let p_mw = 70_000 + 630_000 * 55 / 100;
    assert_eq!(d.power_usage().expect("power"), p_mw);
    let fields = d
        .field_values_for(&[FieldId(185), FieldId(186), FieldId(1)])
        .expect("field values");
    assert_eq!(fields.len(), 3);
    let fields: Vec<_> = fields
        .into_iter()
        .map(|r| r.expect("well-formed sample"))
        .collect();
    for (fv, want) in fields.iter().zip([185, 186]) {
        assert_eq!(fv.field.0, want);
        assert_eq!(
            fv.value.as_ref().expect("supported"),
            &SampleValue::U32(p_mw)
        );
    }
    assert!(matches!(fields[2].value, Err(NvmlError::NotSupported)));
}

#[test]
fn processes_memory_and_utilization() {
    let f = fixture();
    let pid = f.child.id();
    let d = f.nvml.device_by_index(0).expect("device");
    let procs = d.running_compute_processes().expect("processes");
    assert_eq!(procs.len(), 1, "dead and ended pids are hidden: {procs:?}");
    assert_eq!(procs[0].pid, pid);
    assert_eq!(
        procs[0].used_gpu_memory,
        UsedGpuMemory::Used(40_000_000_000)
    );
    assert_eq!(procs[0].gpu_instance_id, None);
    assert!(d.running_graphics_processes().expect("graphics").is_empty());
    let mem = d.memory_info().expect("memory");
    assert_eq!(mem.used, 40_000_000_000);
    assert_eq!(mem.total, 85_899_345_920);
    assert_eq!(mem.free, mem.total - mem.used);
    let util = d.utilization_rates().expect("utilization");
    assert_eq!((util.gpu, util.memory), (60, 30));

    let samples = d.process_utilization_stats(None).expect("samples");
    let pids: std::collections::BTreeSet<_> = samples.iter().map(|s| (s.pid, s.sm_util)).collect();
    assert_eq!(
        samples.len(),
        100,
        "10 s of 100-ms samples of the live pid {pid}: {pids:?}"
    );
    assert!(samples
        .iter()
        .all(|s| s.pid == pid && s.sm_util == 50 && s.mem_util == 25));
    let newest = samples
        .iter()
        .map(|s| s.timestamp)
        .max()
        .expect("non-empty");
    let now_us = u64::try_from(now_ms()).expect("positive") * 1000;
    assert!(
        newest <= now_us && newest + 200_000 > now_us,
        "{newest} vs {now_us}"
    );
    match d.process_utilization_stats(newest + 1_000_000) {
        Err(NvmlError::NotFound) => {}
        other => panic!("expected NotFound past the newest sample, got {other:?}"),
    }
}

#[test]
fn unsupported_where_the_scenario_says_so() {
    let f = fixture();
    let d = f.nvml.device_by_index(1).expect("device");
    assert!(matches!(
        d.total_energy_consumption(),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        d.process_utilization_stats(None),
        Err(NvmlError::NotSupported)
    ));
    // instant power: 40 + 260·0.2 W
    assert_eq!(d.power_usage().expect("power"), 92_000);
    assert_eq!(
        d.architecture().expect("arch").to_string().to_lowercase(),
        "volta"
    );
}

#[test]
fn mig_devices() {
    let f = fixture();
    let pid = f.child.id();
    let d = f.nvml.device_by_index(2).expect("device");
    assert_eq!(d.mig_mode().expect("mig mode").current, 1);
    assert_eq!(d.mig_device_count().expect("max count"), 7);
    assert!(!d.mig_is_mig_device_handle().expect("is mig"));
    assert!(matches!(
        d.process_utilization_stats(None),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        d.utilization_rates(),
        Err(NvmlError::NotSupported)
    ));
    assert!(
        d.total_energy_consumption().is_ok(),
        "energy is per physical GPU"
    );
    let parent_procs = d.running_compute_processes().expect("processes");
    assert_eq!(parent_procs.len(), 1);
    assert_eq!(parent_procs[0].gpu_instance_id, Some(2));

    let m0 = d.mig_device_by_index(0).expect("mig 0");
    let m1 = d.mig_device_by_index(1).expect("mig 1");
    assert!(matches!(d.mig_device_by_index(2), Err(NvmlError::NotFound)));
    assert!(m1.mig_is_mig_device_handle().expect("is mig"));
    assert_eq!(m0.uuid().expect("uuid"), "MIG-aaaa");
    assert_eq!(m1.uuid().expect("uuid"), "MIG-bbbb");
    assert!(m0.name().expect("name").contains("MIG 3g."));
    assert_eq!(
        m0.attributes()
            .expect("attributes")
            .gpu_instance_slice_count,
        3
    );
    assert_eq!(
        m1.attributes()
            .expect("attributes")
            .gpu_instance_slice_count,
        4
    );
    assert!(m0
        .running_compute_processes()
        .expect("processes")
        .is_empty());
    let procs = m1.running_compute_processes().expect("processes");
    assert_eq!((procs.len(), procs[0].pid), (1, pid));
    assert_eq!(m1.memory_info().expect("memory").used, 7000);
    assert!(matches!(m1.power_usage(), Err(NvmlError::NotSupported)));
    let parent = m1.mig_parent_device().expect("parent");
    assert_eq!(parent.uuid().expect("uuid"), "GPU-mig");
    let by_uuid = f.nvml.device_by_uuid("MIG-bbbb").expect("MIG by uuid");
    assert!(by_uuid.mig_is_mig_device_handle().expect("is mig"));
}
