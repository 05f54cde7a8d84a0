//! NVML: the agent's only GPU code path, behind one narrow seam ([`GpuReader`]).
//!
//! [`NvmlReader`] calls `nvml-wrapper` and converts its types into ours. Unsupported
//! queries become `None` (never 0); a failing GPU fails its own reading, not the
//! sample. Tests run this exact code against the simulated `libnvidia-ml.so.1`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, GpmSample, Nvml};

/// `NVML_FI_DEV_POWER_AVERAGE`: 1-second average power (mW).
pub const FI_POWER_AVERAGE: u32 = 185;
/// `NVML_FI_DEV_POWER_INSTANT`: instantaneous power (mW).
pub const FI_POWER_INSTANT: u32 = 186;

/// The default library name, as the dynamic loader finds it.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// Errors of the NVML source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "could not load the NVML library '{path}': {reason}. Install the NVIDIA driver, or point \
         at the library with INFERWATT_NVML_LIB=/path/to/libnvidia-ml.so.1 or `library` under [nvml] in the config"
    )]
    Load { path: String, reason: String },
    #[error("NVML could not start ({0}); is the NVIDIA driver loaded and /dev/nvidia* readable by this user?")]
    Init(NvmlError),
    #[error("GPU {index}: {call} failed: {source}")]
    Gpu {
        index: u32,
        call: &'static str,
        source: NvmlError,
    },
    #[error("NVML: {call} failed: {source}")]
    Nvml {
        call: &'static str,
        source: NvmlError,
    },
}

/// A GPU's fixed facts, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_bytes: Option<u64>,
    pub power_limit_w: Option<f64>,
    /// MIG instances (by MIG device index), empty when MIG is off.
    pub mig: Vec<MigInstance>,
    /// GPU Performance Monitoring works here (Hopper+, `nvmlGpmQueryDeviceSupport`):
    /// per-MIG-instance activity is measured.
    pub gpm: bool,
}

/// One MIG instance of a physical GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct MigInstance {
    /// The MIG device index on its parent.
    pub index: u32,
    pub uuid: String,
    /// GPU instance slices (its size).
    pub slices: u32,
}

/// A compute process on a GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// The MIG device index this process runs in.
    pub mig_index: Option<u32>,
}

/// One NVML per-process utilisation sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UtilSample {
    pub pid: u32,
    pub timestamp_us: u64,
    pub sm_util: u32,
    pub mem_util: u32,
}

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// Wall-clock time of the reading (the point's timestamp).
    pub t_ns: i64,
    /// Monotonic time of the reading ([`mono_ns`]), for the interval's length.
    pub mono_ns: i64,
    pub energy_counter_mj: Option<u64>,
    pub power_w: Option<f64>,
    pub power_instant_w: Option<f64>,
    pub power_average_w: Option<f64>,
    pub util_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub processes: Vec<GpuProcess>,
    /// False when the process query failed: who ran in the interval is unknown (its
    /// energy is `_unattributed`, not `_idle`).
    pub processes_known: bool,
    /// Per-process utilisation samples newer than the last ones seen; `None` when the
    /// GPU does not support them (e.g. under MIG).
    pub util_samples: Option<Vec<UtilSample>>,
    /// Under MIG with GPM: each instance's SM utilisation since the previous reading
    /// (percent of the instance's SMs), by MIG device index; `None` without GPM or on
    /// the first reading.
    pub mig_activity: Option<BTreeMap<u32, f64>>,
    /// Queries that failed for a reason other than "not supported".
    pub errors: Vec<String>,
}

/// The NVML calls the agent makes, and nothing else.
pub trait GpuReader {
    fn driver_version(&self) -> Option<String>;
    fn gpus(&self) -> &[GpuInfo];
    /// Reads GPU `slot` (position in [`GpuReader::gpus`]); `since_us` filters
    /// utilisation samples to those newer than it.
    fn read(&self, slot: usize, since_us: u64) -> Result<GpuReading, SourceError>;
}

/// NVML through `nvml-wrapper`.
pub struct NvmlReader {
    /// Leaked on purpose: GPM samples borrow the library for as long as they live, and
    /// the agent keeps each instance's last sample across readings (one library per
    /// process, for its whole life).
    nvml: &'static Nvml,
    gpus: Vec<GpuInfo>,
    library: String,
    /// Each MIG instance's last GPM sample, by (slot, MIG device index).
    gpm_last: Mutex<HashMap<(usize, u32), GpmSample<'static>>>,
}

/// Which library to load: the configured path, else `INFERWATT_NVML_LIB`, else the
/// loader's default `libnvidia-ml.so.1`.
pub fn library_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    match std::env::var_os("INFERWATT_NVML_LIB") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_LIBRARY),
    }
}

impl NvmlReader {
    /// Loads NVML from `library` and reads each GPU's fixed facts.
    pub fn open(library: &Path) -> Result<Self, SourceError> {
        let nvml = Nvml::builder()
            .lib_path(OsStr::new(library.as_os_str()))
            .init()
            .map_err(|e| match e {
                NvmlError::LibloadingError(l) => SourceError::Load {
                    path: library.display().to_string(),
                    reason: l.to_string(),
                },
                NvmlError::FailedToLoadSymbol(s) => SourceError::Load {
                    path: library.display().to_string(),
                    reason: format!("it lacks the symbol {s}; is it an NVML library?"),
                },
                other => SourceError::Init(other),
            })?;
        let count = nvml.device_count().map_err(|source| SourceError::Nvml {
            call: "nvmlDeviceGetCount",
            source,
        })?;
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let dev = nvml
                .device_by_index(index)
                .map_err(|source| SourceError::Gpu {
                    index,
                    call: "nvmlDeviceGetHandleByIndex",
                    source,
                })?;
            gpus.push(read_info(index, &dev)?);
        }
        Ok(NvmlReader {
            nvml: Box::leak(Box::new(nvml)),
            gpus,
            library: library.display().to_string(),
            gpm_last: Mutex::new(HashMap::new()),
        })
    }

    /// The library this reader loaded.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Direct access for `check`, which probes each call.
    pub fn nvml(&self) -> &Nvml {
        self.nvml
    }

    /// Each occupied MIG instance's SM utilisation since the previous call (GPM), by MIG
    /// device index; `gi_of` maps an occupied instance's MIG index to its GPU-instance id
    /// (from its processes). `None` until every occupied instance has two samples, or
    /// when a sample fails.
    fn mig_activity(
        &self,
        slot: usize,
        dev: &Device<'static>,
        gi_of: &BTreeMap<u32, u32>,
    ) -> Option<BTreeMap<u32, f64>> {
        let mut last = self.gpm_last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        let mut complete = true;
        last.retain(|(s, idx), _| *s != slot || gi_of.contains_key(idx));
        for (&index, &gi) in gi_of {
            let Ok(cur) = dev.gpm_mig_sample(gi) else {
                last.remove(&(slot, index));
                complete = false;
                continue;
            };
            match last.insert((slot, index), cur) {
                Some(prev) => {
                    let cur = &last[&(slot, index)];
                    let util = nvml_wrapper::gpm::gpm_metrics_get(
                        self.nvml,
                        &prev,
                        cur,
                        &[GpmMetricId::SmUtil],
                    )
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(Result::ok)
                    .map(|r| r.value)
                    .filter(|v| v.is_finite() && *v >= 0.0);
                    match util {
                        Some(u) => {
                            out.insert(index, u.min(100.0));
                        }
                        None => complete = false,
                    }
                }
                None => complete = false,
            }
        }
        (complete && !out.is_empty()).then_some(out)
    }
}

fn read_info(index: u32, dev: &Device<'_>) -> Result<GpuInfo, SourceError> {
    let gpu = |call, source| SourceError::Gpu {
        index,
        call,
        source,
    };
    let uuid = dev.uuid().map_err(|e| gpu("nvmlDeviceGetUUID", e))?;
    let name = dev.name().map_err(|e| gpu("nvmlDeviceGetName", e))?;
    let memory_total_bytes = dev.memory_info().ok().map(|m| m.total);
    let power_limit_w = dev
        .enforced_power_limit()
        .ok()
        .map(inferwatt_core::units::mw_to_w);
    let mut mig = Vec::new();
    if matches!(dev.mig_mode(), Ok(m) if m.current == 1) {
        let max = dev.mig_device_count().unwrap_or(0);
        for i in 0..max {
            let Ok(m) = dev.mig_device_by_index(i) else {
                continue;
            };
            mig.push(MigInstance {
                index: i,
                uuid: m.uuid().unwrap_or_default(),
                slices: m
                    .attributes()
                    .map(|a| a.gpu_instance_slice_count)
                    .unwrap_or(1),
            });
        }
    }
    let gpm = !mig.is_empty() && matches!(dev.gpm_support(), Ok(true));
    Ok(GpuInfo {
        index,
        uuid,
        name,
        memory_total_bytes,
        power_limit_w,
        mig,
        gpm,
    })
}

/// Unsupported → `Ok(None)`; another failure → `Err` (recorded, not fatal).
fn optional<T>(r: Result<T, NvmlError>) -> Result<Option<T>, NvmlError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(NvmlError::NotSupported) | Err(NvmlError::FailedToLoadSymbol(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn used_memory(m: UsedGpuMemory) -> Option<u64> {
    match m {
        UsedGpuMemory::Used(b) => Some(b),
        UsedGpuMemory::Unavailable => None,
    }
}

fn field_w(sample: Option<&Result<FieldValueSample, NvmlError>>) -> Option<f64> {
    let value = sample?.as_ref().ok()?.value.as_ref().ok()?;
    let mw = match value {
        SampleValue::U32(v) => f64::from(*v),
        SampleValue::U64(v) => *v as f64,
        SampleValue::I64(v) => *v as f64,
        SampleValue::F64(v) => *v,
    };
    Some(mw / 1000.0)
}

/// Now on the monotonic clock, ns since the agent's first call. Interval lengths come
/// from it: a wall-clock step (NTP, an operator's `date -s`) does not change them.
pub fn mono_ns() -> i64 {
    static ANCHOR: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let anchor = *ANCHOR.get_or_init(std::time::Instant::now);
    i64::try_from(anchor.elapsed().as_nanos()).unwrap_or(i64::MAX)
}

/// Now, in ns since the Unix epoch (timestamps only; never for interval lengths).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl GpuReader for NvmlReader {
    fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn read(&self, slot: usize, since_us: u64) -> Result<GpuReading, SourceError> {
        let info = &self.gpus[slot];
        let index = info.index;
        let dev = self
            .nvml
            .device_by_index(index)
            .map_err(|source| SourceError::Gpu {
                index,
                call: "nvmlDeviceGetHandleByIndex",
                source,
            })?;
        let mut errors = Vec::new();
        let mut note = |call: &str, e: NvmlError| errors.push(format!("{call}: {e}"));

        // The energy counter first, so it pairs with the timestamp most tightly.
        let t_ns = now_ns();
        let mono_ns = mono_ns();
        let energy_counter_mj = optional(dev.total_energy_consumption()).unwrap_or_else(|e| {
            note("nvmlDeviceGetTotalEnergyConsumption", e);
            None
        });
        let power_w = optional(dev.power_usage())
            .unwrap_or_else(|e| {
                note("nvmlDeviceGetPowerUsage", e);
                None
            })
            .map(inferwatt_core::units::mw_to_w);
        let (power_average_w, power_instant_w) = match optional(
            dev.field_values_for(&[FieldId(FI_POWER_AVERAGE), FieldId(FI_POWER_INSTANT)]),
        ) {
            Ok(Some(v)) => (field_w(v.first()), field_w(v.get(1))),
            Ok(None) => (None, None),
            Err(e) => {
                note("nvmlDeviceGetFieldValues", e);
                (None, None)
            }
        };
        let util_pct = optional(dev.utilization_rates())
            .unwrap_or_else(|e| {
                note("nvmlDeviceGetUtilizationRates", e);
                None
            })
            .map(|u| f64::from(u.gpu));
        let mem_used_bytes = optional(dev.memory_info())
            .unwrap_or_else(|e| {
                note("nvmlDeviceGetMemoryInfo", e);
                None
            })
            .map(|m| m.used);
        let temperature_c = optional(dev.temperature(TemperatureSensor::Gpu)).unwrap_or(None);

        let mut processes = Vec::new();
        let mut processes_known = true;
        // Under MIG: each occupied instance's GPU-instance id, from its processes.
        let mut gi_of: BTreeMap<u32, u32> = BTreeMap::new();
        if info.mig.is_empty() {
            match dev.running_compute_processes() {
                Ok(ps) => processes.extend(ps.into_iter().map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_bytes: used_memory(p.used_gpu_memory),
                    mig_index: None,
                })),
                Err(e) => {
                    processes_known = false;
                    note("nvmlDeviceGetComputeRunningProcesses_v3", e)
                }
            }
        } else {
            // Under MIG each instance lists its own processes.
            for m in &info.mig {
                let procs = dev
                    .mig_device_by_index(m.index)
                    .and_then(|md| md.running_compute_processes());
                match procs {
                    Ok(ps) => processes.extend(ps.into_iter().map(|p| {
                        if let Some(gi) = p.gpu_instance_id {
                            gi_of.insert(m.index, gi);
                        }
                        GpuProcess {
                            pid: p.pid,
                            used_memory_bytes: used_memory(p.used_gpu_memory),
                            mig_index: Some(m.index),
                        }
                    })),
                    Err(e) => {
                        processes_known = false;
                        note("nvmlDeviceGetComputeRunningProcesses_v3 (MIG)", e)
                    }
                }
            }
        }

        let util_samples = if info.mig.is_empty() {
            match dev.process_utilization_stats(since_us) {
                Ok(s) => Some(
                    s.into_iter()
                        .map(|s| UtilSample {
                            pid: s.pid,
                            timestamp_us: s.timestamp,
                            sm_util: s.sm_util,
                            mem_util: s.mem_util,
                        })
                        .collect(),
                ),
                // NVML answers NOT_FOUND when no sample is newer than `since_us`.
                Err(NvmlError::NotFound) => Some(Vec::new()),
                Err(NvmlError::NotSupported) | Err(NvmlError::FailedToLoadSymbol(_)) => None,
                Err(e) => {
                    note("nvmlDeviceGetProcessUtilization", e);
                    None
                }
            }
        } else {
            None
        };

        let mig_activity = if info.gpm {
            self.mig_activity(slot, &dev, &gi_of)
        } else {
            None
        };

        Ok(GpuReading {
            mig_activity,
            processes_known,
            t_ns,
            mono_ns,
            energy_counter_mj,
            power_w,
            power_instant_w,
            power_average_w,
            util_pct,
            mem_used_bytes,
            temperature_c,
            processes,
            util_samples,
            errors,
        })
    }
}

/// Mean SM utilisation per pid over the sampling periods seen in an interval. NVML
/// reports only non-zero samples, so a process idle in a period has no sample there and
/// counts as 0 for it. The split uses these means relative to each other, so the
/// common denominator (the number of periods) cancels out.
pub fn mean_sm_util(samples: &[UtilSample]) -> BTreeMap<u32, f64> {
    let mut sums: BTreeMap<u32, f64> = BTreeMap::new();
    let mut periods = std::collections::BTreeSet::new();
    for s in samples {
        *sums.entry(s.pid).or_default() += f64::from(s.sm_util);
        periods.insert(s.timestamp_us);
    }
    let n = periods.len().max(1) as f64;
    sums.into_iter().map(|(pid, sum)| (pid, sum / n)).collect()
}

/// The interval's SM utilisation per pid, or `None` when it is unknown. NVML reports
/// non-zero samples only, so an interval without any sample means either that nobody
/// computed or that the samples were lost; the device's own utilisation (`util_pct`)
/// tells them apart. Nobody computed (device at 0%): every process at 0, an equal
/// split of what little active energy there is. Samples lost while the device was busy,
/// or unsupported: `None`, and the split falls back to memory.
pub fn interval_sm_util(
    samples: Option<&[UtilSample]>,
    util_pct: Option<f64>,
) -> Option<BTreeMap<u32, f64>> {
    match samples {
        None => None,
        Some([]) if util_pct.is_some_and(|u| u <= 0.0) => Some(BTreeMap::new()),
        Some([]) => None,
        Some(s) => Some(mean_sm_util(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_samples_at_all_is_unknown_not_zero() {
        assert_eq!(interval_sm_util(None, Some(50.0)), None);
        assert_eq!(
            interval_sm_util(Some(&[]), Some(50.0)),
            None,
            "lost while busy"
        );
        assert_eq!(interval_sm_util(Some(&[]), None), None);
        assert_eq!(
            interval_sm_util(Some(&[]), Some(0.0)),
            Some(BTreeMap::new()),
            "nobody computed"
        );
        let s = [UtilSample {
            pid: 7,
            timestamp_us: 1,
            sm_util: 0,
            mem_util: 0,
        }];
        assert_eq!(
            interval_sm_util(Some(&s), Some(1.0)).map(|m| m[&7]),
            Some(0.0)
        );
    }

    #[test]
    fn mean_over_periods_counts_missing_samples_as_zero() {
        let s = |pid, ts, sm| UtilSample {
            pid,
            timestamp_us: ts,
            sm_util: sm,
            mem_util: 0,
        };
        let m = mean_sm_util(&[s(1, 10, 80), s(2, 10, 20), s(1, 20, 40)]);
        assert_eq!(m[&1], 60.0);
        assert_eq!(m[&2], 10.0);
    }

    #[test]
    fn library_path_prefers_config_then_env() {
        assert_eq!(
            library_path(Some(Path::new("/x/libnvidia-ml.so.1"))),
            PathBuf::from("/x/libnvidia-ml.so.1")
        );
    }
}
