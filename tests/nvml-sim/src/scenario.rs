//! The scenario file: what the simulated GPUs are and what runs on them.
//!
//! Owns the serde types of `FAKE_NVML_SCENARIO` JSON (documented in the crate README),
//! loading, defaults and validation. The physics that turns a scenario into power, energy
//! and utilisation lives in `model`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors while reading or checking a scenario file.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file could not be read.
    #[error("cannot read scenario file '{path}': {source}; give the path of an existing scenario JSON file")]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON did not parse into a scenario.
    #[error(
        "scenario '{origin}' is not valid: {source}; see tests/nvml-sim/README.md for the format"
    )]
    Parse {
        /// The file (or `<string>`).
        origin: String,
        /// The serde error, with line and column.
        source: serde_json::Error,
    },
    /// The JSON parsed but a value is out of range or inconsistent.
    #[error("scenario '{origin}': {key} = '{value}' is invalid: {fix}")]
    Invalid {
        /// The file (or `<string>`).
        origin: String,
        /// The JSON path of the offending key, e.g. `gpus[0].max_w`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What to change.
        fix: String,
    },
}

/// A whole scenario: the simulated machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Scenario t=0 in Unix milliseconds; `None`: the first `nvmlInit` in the process.
    #[serde(default)]
    pub epoch_unix_ms: Option<i64>,
    /// What `nvmlSystemGetDriverVersion` returns (keep < 580 for nvml-wrapper's v12 field ids).
    #[serde(default = "default_driver_version")]
    pub driver_version: String,
    /// What `nvmlSystemGetCudaDriverVersion` returns, e.g. 12040 for CUDA 12.4.
    #[serde(default = "default_cuda_driver_version")]
    pub cuda_driver_version: i32,
    /// List a process only while `/proc/<pid>` exists.
    #[serde(default = "default_true")]
    pub check_alive: bool,
    /// The GPUs, in NVML index order.
    pub gpus: Vec<Gpu>,
}

/// One physical GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// `GPU-…` identifier, unique in the scenario.
    pub uuid: String,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Power with nothing running, watts.
    pub idle_w: f64,
    /// Power at full load, watts.
    pub max_w: f64,
    /// Frame-buffer size in bytes.
    pub memory_total_bytes: u64,
    /// Whether `nvmlDeviceGetTotalEnergyConsumption` is supported (Volta+).
    #[serde(default = "default_true")]
    pub energy_counter: bool,
    /// Counter value at t=0, millijoules.
    #[serde(default)]
    pub initial_counter_mj: u64,
    /// What `nvmlDeviceGetPowerUsage` returns.
    #[serde(default)]
    pub power_reading: PowerReading,
    /// Scenario times (s) at which the energy counter restarts from 0.
    #[serde(default)]
    pub counter_resets_s: Vec<f64>,
    /// Whether `nvmlDeviceGetProcessUtilization` is supported.
    #[serde(default = "default_true")]
    pub process_utilization: bool,
    /// Supported, but no sample ever arrives (`NOT_FOUND` on every call), as when the
    /// driver's sample buffer misses the processes: the samples are missing, not zero.
    #[serde(default)]
    pub util_samples_lost: bool,
    /// Enforced power limit, watts; default `max_w`.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
    /// Constant GPU temperature, °C.
    #[serde(default = "default_temperature")]
    pub temperature_c: u32,
    /// Architecture name; default inferred from `name` (unknown if it cannot be).
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// MIG configuration; absent means MIG disabled.
    #[serde(default)]
    pub mig: Option<Mig>,
    /// GPU Performance Monitoring (`nvmlGpm*`, Hopper and newer): per-MIG-instance SM
    /// utilisation between two samples. Off by default (older drivers, non-Hopper).
    #[serde(default)]
    pub gpm: bool,
    /// Compute processes holding memory on this GPU.
    #[serde(default)]
    pub processes: Vec<Process>,
    /// Workload phases: per-process utilisation over time.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Scenario-time windows `[start_s, end_s)` in which the process queries
    /// (`nvmlDeviceGetComputeRunningProcesses*`) fail with `NVML_ERROR_UNKNOWN`, as a
    /// driver under stress or a container without the right capability does.
    #[serde(default)]
    pub process_query_fails_s: Vec<[f64; 2]>,
    /// Not implemented: replay of an nvidia-smi power CSV. Must be absent or null.
    #[serde(default)]
    pub power_trace: Option<PathBuf>,
}

/// Which power value `nvmlDeviceGetPowerUsage` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerReading {
    /// Mean power over the last second (Ampere, except GA100, and newer).
    #[default]
    #[serde(rename = "average_1s")]
    Average1s,
    /// Instantaneous power (older GPUs).
    Instant,
}

/// GPU architecture, as `nvmlDeviceGetArchitecture` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Kepler.
    Kepler,
    /// Maxwell.
    Maxwell,
    /// Pascal.
    Pascal,
    /// Volta.
    Volta,
    /// Turing.
    Turing,
    /// Ampere.
    Ampere,
    /// Ada Lovelace.
    Ada,
    /// Hopper.
    Hopper,
    /// Blackwell.
    Blackwell,
    /// Not known.
    Unknown,
}

impl Architecture {
    /// The `NVML_DEVICE_ARCH_*` value.
    pub fn nvml_value(self) -> u32 {
        match self {
            Architecture::Kepler => 2,
            Architecture::Maxwell => 3,
            Architecture::Pascal => 4,
            Architecture::Volta => 5,
            Architecture::Turing => 6,
            Architecture::Ampere => 7,
            Architecture::Ada => 8,
            Architecture::Hopper => 9,
            Architecture::Blackwell => 10,
            Architecture::Unknown => u32::MAX,
        }
    }

    /// Best guess from a marketing name; `Unknown` when nothing matches.
    pub fn from_name(name: &str) -> Architecture {
        let n = name.to_ascii_uppercase();
        let has = |k: &str| {
            n.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == k)
        };
        if has("B200") || has("B100") || has("GB200") || has("B300") {
            Architecture::Blackwell
        } else if has("H100") || has("H200") || has("H800") || has("H20") || has("GH200") {
            Architecture::Hopper
        } else if has("L4") || has("L40") || has("L40S") || n.contains("RTX 40") {
            Architecture::Ada
        } else if ["A100", "A800", "A10", "A10G", "A30", "A40", "A2", "A16"]
            .iter()
            .any(|k| has(k))
            || n.contains("RTX 30")
        {
            Architecture::Ampere
        } else if has("T4") || n.contains("RTX 20") {
            Architecture::Turing
        } else if has("V100") {
            Architecture::Volta
        } else if has("P100") || has("P40") || has("P4") {
            Architecture::Pascal
        } else {
            Architecture::Unknown
        }
    }
}

/// MIG (multi-instance GPU) configuration of one GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mig {
    /// The MIG devices, in MIG index order.
    pub instances: Vec<MigInstance>,
}

/// One MIG device (a GPU instance with one compute instance).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigInstance {
    /// GPU instance id.
    pub gi_id: u32,
    /// Compute instance id.
    #[serde(default)]
    pub ci_id: u32,
    /// Compute slices (1..=7).
    pub slices: u32,
    /// `MIG-…` identifier.
    pub uuid: String,
    /// Memory of this instance; default `memory_total_bytes / 8` times the memory slices
    /// of the matching A100/H100 profile (1→1, 2→2, 3→4, 4→4, 5–7→8).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// A compute process on a GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Real OS pid (tests spawn it) or any number with `check_alive: false`.
    pub pid: u32,
    /// GPU memory it holds while running, bytes.
    #[serde(default)]
    pub used_memory_bytes: u64,
    /// Scenario second at which it appears.
    #[serde(default)]
    pub start_s: f64,
    /// Scenario second at which it goes away; `None`: never.
    #[serde(default)]
    pub end_s: Option<f64>,
    /// GPU instance id it runs in (MIG only).
    #[serde(default)]
    pub mig_gi: Option<u32>,
}

/// A time span with constant per-process load settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Start, scenario seconds (inclusive).
    pub start_s: f64,
    /// End, scenario seconds (exclusive).
    pub end_s: f64,
    /// The load of each active process.
    #[serde(default)]
    pub procs: Vec<PhaseProc>,
}

/// One process's load in a phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseProc {
    /// Process id (declared in the GPU's `processes`).
    pub pid: u32,
    /// Mean SM utilisation, percent.
    pub sm_util: f64,
    /// Power weight: share of the dynamic range per 100% utilisation.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// On/off bursts instead of steady load.
    #[serde(default)]
    pub burst: Option<Burst>,
}

/// Bursty load: on for the first `duty` of each `period_s`, counted from the phase start.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Period, seconds (> 0).
    pub period_s: f64,
    /// Fraction of the period that is on, in (0, 1].
    pub duty: f64,
}

fn default_driver_version() -> String {
    "550.54.15".to_owned()
}
fn default_cuda_driver_version() -> i32 {
    12040
}
fn default_true() -> bool {
    true
}
fn default_temperature() -> u32 {
    45
}
fn default_weight() -> f64 {
    1.0
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a scenario from JSON text.
    pub fn from_json(s: &str) -> Result<Scenario, SimError> {
        Self::parse(s, "<string>")
    }

    /// Scenario t=0 in Unix milliseconds, if the file fixes it.
    pub fn epoch_unix_ms(&self) -> Option<i64> {
        self.epoch_unix_ms
    }

    fn parse(text: &str, origin: &str) -> Result<Scenario, SimError> {
        let scenario: Scenario = serde_json::from_str(text).map_err(|source| SimError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        scenario.validate(origin)?;
        Ok(scenario)
    }

    fn validate(&self, origin: &str) -> Result<(), SimError> {
        let bad = |key: String, value: String, fix: &str| SimError::Invalid {
            origin: origin.to_owned(),
            key,
            value,
            fix: fix.to_owned(),
        };
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        let mut uuids = HashSet::new();
        for (i, g) in self.gpus.iter().enumerate() {
            let k = |f: &str| format!("gpus[{i}].{f}");
            if g.uuid.is_empty() || g.uuid.len() >= 80 || !uuids.insert(g.uuid.clone()) {
                return Err(bad(
                    k("uuid"),
                    g.uuid.clone(),
                    "give each GPU a unique, non-empty uuid shorter than 80 bytes",
                ));
            }
            if g.name.is_empty() || g.name.len() >= 96 {
                return Err(bad(
                    k("name"),
                    g.name.clone(),
                    "use a non-empty name shorter than 96 bytes",
                ));
            }
            if !finite_nonneg(g.idle_w) {
                return Err(bad(
                    k("idle_w"),
                    g.idle_w.to_string(),
                    "use a finite number of watts >= 0",
                ));
            }
            if !(g.max_w.is_finite() && g.max_w >= g.idle_w) {
                return Err(bad(
                    k("max_w"),
                    g.max_w.to_string(),
                    "use a finite number of watts >= idle_w",
                ));
            }
            if let Some(p) = g.power_limit_w {
                if !(p.is_finite() && p > 0.0) {
                    return Err(bad(
                        k("power_limit_w"),
                        p.to_string(),
                        "use a positive number of watts",
                    ));
                }
            }
            let mut last = -1.0_f64;
            for (j, &r) in g.counter_resets_s.iter().enumerate() {
                if !(finite_nonneg(r) && r > last) {
                    return Err(bad(
                        k(&format!("counter_resets_s[{j}]")),
                        r.to_string(),
                        "list reset times >= 0 in strictly increasing order",
                    ));
                }
                last = r;
            }
            if let Some(trace) = &g.power_trace {
                return Err(bad(k("power_trace"), trace.display().to_string(), "power trace replay is not implemented by this simulator; remove the key or set it to null"));
            }
            let mut gis = HashSet::new();
            if let Some(mig) = &g.mig {
                if mig.instances.is_empty() || mig.instances.len() > 7 {
                    return Err(bad(
                        k("mig.instances"),
                        mig.instances.len().to_string(),
                        "list 1 to 7 MIG instances, or remove 'mig'",
                    ));
                }
                let mut slices = 0;
                for (j, m) in mig.instances.iter().enumerate() {
                    if !(1..=7).contains(&m.slices) {
                        return Err(bad(
                            k(&format!("mig.instances[{j}].slices")),
                            m.slices.to_string(),
                            "use 1 to 7 compute slices",
                        ));
                    }
                    slices += m.slices;
                    if !gis.insert(m.gi_id) {
                        return Err(bad(
                            k(&format!("mig.instances[{j}].gi_id")),
                            m.gi_id.to_string(),
                            "give each MIG instance its own gi_id",
                        ));
                    }
                    if m.uuid.is_empty() || m.uuid.len() >= 80 || !uuids.insert(m.uuid.clone()) {
                        return Err(bad(
                            k(&format!("mig.instances[{j}].uuid")),
                            m.uuid.clone(),
                            "give each MIG instance a unique, non-empty uuid",
                        ));
                    }
                }
                if slices > 7 {
                    return Err(bad(
                        k("mig.instances"),
                        slices.to_string(),
                        "the instances' slices must add up to at most 7",
                    ));
                }
            }
            let mut pids = HashSet::new();
            for (j, p) in g.processes.iter().enumerate() {
                let pk = |f: &str| k(&format!("processes[{j}].{f}"));
                if !pids.insert(p.pid) {
                    return Err(bad(
                        pk("pid"),
                        p.pid.to_string(),
                        "declare each pid once per GPU",
                    ));
                }
                if !finite_nonneg(p.start_s) {
                    return Err(bad(
                        pk("start_s"),
                        p.start_s.to_string(),
                        "use seconds >= 0",
                    ));
                }
                if let Some(e) = p.end_s {
                    if !(e.is_finite() && e > p.start_s) {
                        return Err(bad(
                            pk("end_s"),
                            e.to_string(),
                            "use seconds > start_s, or null for never",
                        ));
                    }
                }
                match (g.mig.is_some(), p.mig_gi) {
                    (true, Some(gi)) if gis.contains(&gi) => {}
                    (false, None) => {}
                    (true, v) => {
                        return Err(bad(
                            pk("mig_gi"),
                            format!("{v:?}"),
                            "under MIG, set mig_gi to the gi_id of one of the GPU's mig.instances",
                        ));
                    }
                    (false, Some(v)) => {
                        return Err(bad(
                            pk("mig_gi"),
                            v.to_string(),
                            "set mig_gi only on a GPU with 'mig'",
                        ));
                    }
                }
            }
            let mut prev_end = f64::NEG_INFINITY;
            for (j, ph) in g.phases.iter().enumerate() {
                let fk = |f: &str| k(&format!("phases[{j}].{f}"));
                if !(finite_nonneg(ph.start_s) && ph.start_s >= prev_end) {
                    return Err(bad(
                        fk("start_s"),
                        ph.start_s.to_string(),
                        "phases must start at >= 0, be in time order and not overlap",
                    ));
                }
                if !(ph.end_s.is_finite() && ph.end_s > ph.start_s) {
                    return Err(bad(
                        fk("end_s"),
                        ph.end_s.to_string(),
                        "use a finite end_s > start_s",
                    ));
                }
                prev_end = ph.end_s;
                let mut seen = HashSet::new();
                for (m, pp) in ph.procs.iter().enumerate() {
                    let ppk = |f: &str| fk(&format!("procs[{m}].{f}"));
                    if !pids.contains(&pp.pid) || !seen.insert(pp.pid) {
                        return Err(bad(
                            ppk("pid"),
                            pp.pid.to_string(),
                            "name a pid declared in this GPU's 'processes', once per phase",
                        ));
                    }
                    if !(pp.sm_util.is_finite() && (0.0..=100.0).contains(&pp.sm_util)) {
                        return Err(bad(
                            ppk("sm_util"),
                            pp.sm_util.to_string(),
                            "use a percentage from 0 to 100",
                        ));
                    }
                    if !finite_nonneg(pp.weight) {
                        return Err(bad(
                            ppk("weight"),
                            pp.weight.to_string(),
                            "use a finite weight >= 0",
                        ));
                    }
                    if let Some(b) = pp.burst {
                        if !(b.period_s.is_finite() && b.period_s >= 0.001) {
                            return Err(bad(
                                ppk("burst.period_s"),
                                b.period_s.to_string(),
                                "use a period of at least 0.001 s",
                            ));
                        }
                        if !(b.duty.is_finite() && b.duty > 0.0 && b.duty <= 1.0) {
                            return Err(bad(
                                ppk("burst.duty"),
                                b.duty.to_string(),
                                "use a duty fraction in (0, 1]",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Gpu {
    /// The architecture, given or inferred from the name.
    pub fn architecture(&self) -> Architecture {
        self.architecture
            .unwrap_or_else(|| Architecture::from_name(&self.name))
    }

    /// Enforced power limit in watts.
    pub fn power_limit_w(&self) -> f64 {
        self.power_limit_w.unwrap_or(self.max_w)
    }
}

impl MigInstance {
    /// Memory of this instance in bytes.
    pub fn memory_bytes(&self, gpu_total: u64) -> u64 {
        let memory_slices = match self.slices {
            1 => 1,
            2 => 2,
            3 | 4 => 4,
            _ => 8,
        };
        self.memory_bytes.unwrap_or(gpu_total / 8 * memory_slices)
    }
}

impl Process {
    /// Whether the scenario has this process running at scenario time `t`.
    pub fn running_at(&self, t: f64) -> bool {
        t >= self.start_s && self.end_s.is_none_or(|e| t < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_gpu(extra: &str) -> Result<Scenario, SimError> {
        Scenario::from_json(&format!(
            r#"{{"gpus": [{{"uuid": "GPU-a", "name": "NVIDIA A100-SXM4-80GB", "idle_w": 50,
                "max_w": 400, "memory_total_bytes": 80{extra}}}]}}"#
        ))
    }

    fn invalid_key(r: Result<Scenario, SimError>) -> String {
        match r {
            Err(SimError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let s = with_gpu("").expect("minimal scenario parses");
        assert_eq!(s.driver_version, "550.54.15");
        assert_eq!(s.cuda_driver_version, 12040);
        assert!(s.check_alive);
        assert_eq!(s.epoch_unix_ms(), None);
        let g = &s.gpus[0];
        assert!(g.energy_counter && g.process_utilization);
        assert_eq!(g.power_reading, PowerReading::Average1s);
        assert_eq!(g.architecture(), Architecture::Ampere);
        assert_eq!(g.power_limit_w(), 400.0);
    }

    #[test]
    fn architecture_is_inferred_from_the_name() {
        assert_eq!(
            Architecture::from_name("NVIDIA H100 80GB HBM3"),
            Architecture::Hopper
        );
        assert_eq!(
            Architecture::from_name("Tesla V100-SXM2-16GB"),
            Architecture::Volta
        );
        assert_eq!(Architecture::from_name("NVIDIA L4"), Architecture::Ada);
        assert_eq!(Architecture::from_name("Tesla T4"), Architecture::Turing);
        assert_eq!(
            Architecture::from_name("Mystery GPU"),
            Architecture::Unknown
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            invalid_key(with_gpu(
                r#", "phases": [{"start_s": 0, "end_s": 1, "procs": [{"pid": 9, "sm_util": 5}]}]"#
            )),
            "gpus[0].phases[0].procs[0].pid"
        );
        assert_eq!(
            invalid_key(with_gpu(
                r#", "phases": [{"start_s": 0, "end_s": 2}, {"start_s": 1, "end_s": 3}]"#
            )),
            "gpus[0].phases[1].start_s"
        );
        assert_eq!(
            invalid_key(with_gpu(r#", "power_trace": "p.csv""#)),
            "gpus[0].power_trace"
        );
        assert_eq!(
            invalid_key(with_gpu(r#", "counter_resets_s": [5, 4]"#)),
            "gpus[0].counter_resets_s[1]"
        );
        assert_eq!(
            invalid_key(with_gpu(r#", "processes": [{"pid": 1, "mig_gi": 1}]"#)),
            "gpus[0].processes[0].mig_gi"
        );
        let msg = with_gpu(
            r#", "phases": [{"start_s": 0, "end_s": 1, "procs": [{"pid": 9, "sm_util": 5}]}]"#,
        )
        .expect_err("undeclared pid")
        .to_string();
        assert!(msg.contains("'9'") && msg.contains("processes"), "{msg}");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        assert!(matches!(
            with_gpu(r#", "idel_w": 3"#),
            Err(SimError::Parse { .. })
        ));
        let e = Scenario::load(Path::new("/nonexistent/scenario.json")).expect_err("missing file");
        assert!(
            e.to_string().contains("'/nonexistent/scenario.json'"),
            "{e}"
        );
    }

    #[test]
    fn mig_memory_defaults_follow_profiles() {
        let s = with_gpu(
            r#", "mig": {"instances": [{"gi_id": 1, "slices": 3, "uuid": "MIG-a"},
                                                   {"gi_id": 2, "slices": 4, "uuid": "MIG-b"}]},
                            "processes": [{"pid": 1, "mig_gi": 2}]"#,
        )
        .expect("MIG scenario parses");
        let m = &s.gpus[0].mig.as_ref().expect("mig present").instances;
        assert_eq!(m[0].memory_bytes(80), 40);
        assert_eq!(m[1].memory_bytes(80), 40);
    }
}
