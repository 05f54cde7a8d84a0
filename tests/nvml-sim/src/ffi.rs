//! The NVML C ABI: every `extern "C"` symbol of the simulated `libnvidia-ml.so.1`.
//!
//! All `unsafe` of the crate lives here. Layouts and return codes follow
//! nvml-wrapper-sys 0.10 `bindings.rs` (NVML 12.x headers). Each call reads the process
//! clock, converts it to scenario time and asks `model` for the value, so what a reader
//! sees is a pure function of the scenario file and the wall clock. Handles are pointers
//! into a leaked, per-initialisation table of `Handle`s; anything else is rejected with
//! `NVML_ERROR_INVALID_ARGUMENT`.
// Every export is `unsafe extern "C"`: C callers uphold NVML's pointer contracts, which
// the module header states once instead of per function.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::UtilSample;
use crate::scenario::{Gpu, PowerReading, Scenario};
use crate::SCENARIO_ENV;

type Ret = c_uint;

const SUCCESS: Ret = 0;
const UNINITIALIZED: Ret = 1;
const INVALID_ARGUMENT: Ret = 2;
const NOT_SUPPORTED: Ret = 3;
const NOT_FOUND: Ret = 6;
const INSUFFICIENT_SIZE: Ret = 7;
const DRIVER_NOT_LOADED: Ret = 9;
const ARGUMENT_VERSION_MISMATCH: Ret = 25;
const UNKNOWN: Ret = 999;

const FI_DEV_POWER_AVERAGE: c_uint = 185;
const FI_DEV_POWER_INSTANT: c_uint = 186;
const VALUE_TYPE_UNSIGNED_INT: c_uint = 1;
/// `NVML_VALUE_NOT_AVAILABLE` for unsigned ints: gpu/compute instance id without MIG.
const ID_NOT_AVAILABLE: c_uint = c_uint::MAX;
const MEMORY_CLOCKS_MHZ: [c_uint; 1] = [2619];
const MAX_GRAPHICS_CLOCK_MHZ: c_uint = 1980;
const MIN_GRAPHICS_CLOCK_MHZ: c_uint = 345;

/// What a `nvmlDevice_t` points at: a physical GPU or one of its MIG devices.
#[derive(Debug)]
pub struct Handle {
    gpu: usize,
    mig: Option<usize>,
}

struct Loaded {
    scenario: Scenario,
    epoch_ms: i64,
    handles: &'static [Handle],
}

struct State {
    refcount: u32,
    loaded: Option<Arc<Loaded>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    refcount: 0,
    loaded: None,
});
static FIRST_INIT_MS: OnceLock<i64> = OnceLock::new();

/// Unix time (ms) as the GPU keeps it. A real GPU's energy counter does not move when
/// the host's clock is stepped, so the simulator reads CLOCK_REALTIME through the raw
/// system call: libfaketime (which the clock-step test preloads into the agent, and so
/// into this library) interposes on libc's `clock_gettime`, not on the kernel's.
fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &mut ts) };
    if rc != 0 {
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn loaded() -> Result<Arc<Loaded>, Ret> {
    state().loaded.clone().ok_or(UNINITIALIZED)
}

fn load_scenario() -> Result<Loaded, Ret> {
    let Some(path) = std::env::var_os(SCENARIO_ENV) else {
        eprintln!("nvml-sim: {SCENARIO_ENV} is not set; set it to the path of a scenario JSON file (format: tests/nvml-sim/README.md)");
        return Err(DRIVER_NOT_LOADED);
    };
    let scenario = Scenario::load(Path::new(&path)).map_err(|e| {
        eprintln!(
            "nvml-sim: {SCENARIO_ENV}='{}': {e}",
            Path::new(&path).display()
        );
        DRIVER_NOT_LOADED
    })?;
    let first = *FIRST_INIT_MS.get_or_init(now_ms);
    let epoch_ms = scenario.epoch_unix_ms.unwrap_or(first);
    let mut handles = Vec::new();
    for (gpu, g) in scenario.gpus.iter().enumerate() {
        handles.push(Handle { gpu, mig: None });
        if let Some(mig) = &g.mig {
            handles.extend((0..mig.instances.len()).map(|m| Handle { gpu, mig: Some(m) }));
        }
    }
    Ok(Loaded {
        scenario,
        epoch_ms,
        handles: Vec::leak(handles),
    })
}

/// When each pid was last seen alive (Unix ms), so that the samples of a process that
/// exited stay in the "driver's" buffer up to its exit.
fn last_alive() -> std::sync::MutexGuard<'static, std::collections::HashMap<u32, i64>> {
    static LAST_ALIVE: OnceLock<Mutex<std::collections::HashMap<u32, i64>>> = OnceLock::new();
    LAST_ALIVE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A validated device handle together with the state it belongs to.
struct Dev {
    l: Arc<Loaded>,
    gpu: usize,
    mig: Option<usize>,
}

impl Dev {
    fn gpu(&self) -> &Gpu {
        &self.l.scenario.gpus[self.gpu]
    }
    fn t_ms(&self) -> i64 {
        now_ms() - self.l.epoch_ms
    }
    fn t_s(&self) -> f64 {
        self.t_ms() as f64 / 1000.0
    }
    /// Physical-GPU-only queries (power, energy, temperature) refuse MIG handles.
    fn physical(&self) -> Result<&Gpu, Ret> {
        match self.mig {
            None => Ok(self.gpu()),
            Some(_) => Err(NOT_SUPPORTED),
        }
    }
    fn alive(&self, pid: u32) -> bool {
        let alive = !self.l.scenario.check_alive || Path::new(&format!("/proc/{pid}")).exists();
        if alive {
            last_alive().insert(pid, now_ms());
        }
        alive
    }
    /// Whether a utilisation sample of `pid` ending at `sample_unix_ms` is in the
    /// driver's buffer: the process is alive, or was seen alive at or after that time
    /// (the buffer keeps the samples of a process that has since exited; a pid never
    /// seen alive has none).
    fn sampled(&self, pid: u32, sample_unix_ms: i64) -> bool {
        self.alive(pid) || last_alive().get(&pid).is_some_and(|&t| t >= sample_unix_ms)
    }
    /// Processes this handle lists now: (pid, used bytes, gi, ci).
    fn processes(&self) -> Vec<(u32, u64, c_uint, c_uint)> {
        let g = self.gpu();
        let t = self.t_s();
        let mig = g.mig.as_ref();
        g.processes
            .iter()
            .filter(|p| p.running_at(t) && self.alive(p.pid))
            .filter_map(|p| {
                let (gi, ci) = match (mig, p.mig_gi) {
                    (Some(m), Some(gi)) => {
                        let idx = m.instances.iter().position(|i| i.gi_id == gi)?;
                        if self.mig.is_some_and(|mine| mine != idx) {
                            return None;
                        }
                        (gi, m.instances[idx].ci_id)
                    }
                    _ => (ID_NOT_AVAILABLE, ID_NOT_AVAILABLE),
                };
                Some((p.pid, p.used_memory_bytes, gi, ci))
            })
            .collect()
    }
    fn memory_total(&self) -> u64 {
        let g = self.gpu();
        match (self.mig, &g.mig) {
            (Some(i), Some(m)) => m.instances[i].memory_bytes(g.memory_total_bytes),
            _ => g.memory_total_bytes,
        }
    }
    fn memory_used(&self) -> u64 {
        self.processes().iter().map(|p| p.1).sum()
    }
}

fn lookup(h: *const Handle) -> Result<Dev, Ret> {
    let l = loaded()?;
    let found = l.handles.iter().find(|x| std::ptr::eq(*x, h));
    let Some(&Handle { gpu, mig }) = found else {
        return Err(INVALID_ARGUMENT);
    };
    Ok(Dev { l, gpu, mig })
}

fn done(r: Result<(), Ret>) -> Ret {
    r.err().unwrap_or(SUCCESS)
}

unsafe fn put<T>(p: *mut T, v: T) -> Result<(), Ret> {
    if p.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    p.write(v);
    Ok(())
}

unsafe fn put_str(buf: *mut c_char, len: c_uint, s: &str) -> Result<(), Ret> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    if s.len() + 1 > len as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
    buf.add(s.len()).write(0);
    Ok(())
}

/// NVML's list convention: `*count` in = capacity, out = entries (needed, when too small).
unsafe fn put_list<T: Copy>(count: *mut c_uint, buf: *mut T, items: &[T]) -> Result<(), Ret> {
    if count.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let n = c_uint::try_from(items.len()).map_err(|_| INSUFFICIENT_SIZE)?;
    if n == 0 {
        count.write(0);
        return Ok(());
    }
    if buf.is_null() || count.read() < n {
        count.write(n);
        return Err(INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len());
    count.write(n);
    Ok(())
}

fn milliwatts(w: f64) -> c_uint {
    (w * 1000.0).round().clamp(0.0, f64::from(c_uint::MAX)) as c_uint
}

// ---- init, shutdown, errors, system --------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Ret {
    let mut st = state();
    if st.refcount == 0 {
        match load_scenario() {
            Ok(l) => st.loaded = Some(Arc::new(l)),
            Err(e) => return e,
        }
    }
    st.refcount += 1;
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlInit_v2() -> Ret {
    nvmlInitWithFlags(0)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlInit() -> Ret {
    nvmlInitWithFlags(0)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlShutdown() -> Ret {
    let mut st = state();
    if st.refcount == 0 {
        return UNINITIALIZED;
    }
    st.refcount -= 1;
    if st.refcount == 0 {
        st.loaded = None;
    }
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlErrorString(result: Ret) -> *const c_char {
    let s: &'static CStr = match result {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        15 => c"GPU is lost",
        25 => c"Argument version mismatch",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> Ret {
    done(loaded().and_then(|l| put_str(version, length, &l.scenario.driver_version)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> Ret {
    done(loaded().and_then(|l| {
        put_str(
            version,
            length,
            &format!("12.{}", l.scenario.driver_version),
        )
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(v: *mut c_int) -> Ret {
    done(loaded().and_then(|l| put(v, l.scenario.cuda_driver_version)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(v: *mut c_int) -> Ret {
    nvmlSystemGetCudaDriverVersion(v)
}

// ---- enumeration and identity --------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Ret {
    done(loaded().and_then(|l| put(count, l.scenario.gpus.len() as c_uint)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> Ret {
    nvmlDeviceGetCount_v2(count)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut *const Handle,
) -> Ret {
    done(loaded().and_then(|l| {
        let h = l
            .handles
            .iter()
            .find(|h| h.mig.is_none() && h.gpu == index as usize)
            .ok_or(INVALID_ARGUMENT)?;
        put(device, h as *const Handle)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut *const Handle,
) -> Ret {
    nvmlDeviceGetHandleByIndex_v2(index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut *const Handle,
) -> Ret {
    done(loaded().and_then(|l| {
        if uuid.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let wanted = CStr::from_ptr(uuid).to_bytes();
        let h = l
            .handles
            .iter()
            .find(|h| {
                let g = &l.scenario.gpus[h.gpu];
                let id = match (h.mig, &g.mig) {
                    (Some(i), Some(m)) => m.instances[i].uuid.as_bytes(),
                    _ => g.uuid.as_bytes(),
                };
                id == wanted
            })
            .ok_or(NOT_FOUND)?;
        put(device, h as *const Handle)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: *const Handle, index: *mut c_uint) -> Ret {
    done(lookup(device).and_then(|d| {
        d.physical()?;
        put(index, d.gpu as c_uint)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: *const Handle,
    name: *mut c_char,
    length: c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.gpu();
        let s = match (d.mig, &g.mig) {
            (Some(i), Some(m)) => {
                let inst = &m.instances[i];
                let gb = (inst.memory_bytes(g.memory_total_bytes) as f64 / 1e9).round();
                format!("{} MIG {}g.{gb}gb", g.name, inst.slices)
            }
            _ => g.name.clone(),
        };
        put_str(name, length, &s)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: *const Handle,
    uuid: *mut c_char,
    length: c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.gpu();
        let s = match (d.mig, &g.mig) {
            (Some(i), Some(m)) => m.instances[i].uuid.as_str(),
            _ => g.uuid.as_str(),
        };
        put_str(uuid, length, s)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(
    device: *const Handle,
    arch: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| put(arch, d.gpu().architecture().nvml_value())))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeMode(device: *const Handle, mode: *mut c_uint) -> Ret {
    // NVML_COMPUTEMODE_DEFAULT
    done(lookup(device).and_then(|_| put(mode, 0)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPersistenceMode(
    device: *const Handle,
    mode: *mut c_uint,
) -> Ret {
    // NVML_FEATURE_ENABLED, as on a server with nvidia-persistenced
    done(lookup(device).and_then(|d| put(mode, d.physical().map(|_| 1)?)))
}

// ---- memory, utilisation -------------------------------------------------------------

#[repr(C)]
pub struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: c_ulonglong,
    reserved: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: *const Handle,
    memory: *mut Memory,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let (total, used) = (d.memory_total(), d.memory_used());
        put(
            memory,
            Memory {
                total,
                free: total.saturating_sub(used),
                used,
            },
        )
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: *const Handle,
    memory: *mut MemoryV2,
) -> Ret {
    done(lookup(device).and_then(|d| {
        if memory.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let version = memory.read().version;
        if version != (std::mem::size_of::<MemoryV2>() as c_uint | (2 << 24)) {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        let (total, used) = (d.memory_total(), d.memory_used());
        put(
            memory,
            MemoryV2 {
                version,
                total,
                reserved: 0,
                free: total.saturating_sub(used),
                used,
            },
        )
    }))
}

#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: *const Handle,
    utilization: *mut Utilization,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        if g.mig.is_some() {
            return Err(NOT_SUPPORTED);
        }
        let u = g.gpu_util_1s_pct(d.t_s());
        put(
            utilization,
            Utilization {
                gpu: u.round() as c_uint,
                memory: (u * crate::model::MEM_UTIL_RATIO).round() as c_uint,
            },
        )
    }))
}

// ---- power and energy ----------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: *const Handle, power: *mut c_uint) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        let t = d.t_s();
        let w = match g.power_reading {
            PowerReading::Average1s => g.average_1s_power_w(t),
            PowerReading::Instant => g.power_w(t),
        };
        put(power, milliwatts(w))
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: *const Handle,
    energy: *mut c_ulonglong,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        if !g.energy_counter {
            return Err(NOT_SUPPORTED);
        }
        put(energy, g.counter_mj(d.t_ms()))
    }))
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union Value {
    d: f64,
    ui: c_uint,
    ull: c_ulonglong,
}

#[repr(C)]
pub struct FieldValue {
    field_id: c_uint,
    scope_id: c_uint,
    timestamp: i64,
    latency_usec: i64,
    value_type: c_uint,
    nvml_return: Ret,
    value: Value,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: *const Handle,
    values_count: c_int,
    values: *mut FieldValue,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let n = usize::try_from(values_count).map_err(|_| INVALID_ARGUMENT)?;
        if values.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let now_us = now_ms() * 1000;
        let t = d.t_s();
        for i in 0..n {
            let fv = &mut *values.add(i);
            fv.timestamp = now_us;
            fv.latency_usec = 0;
            let w = match (d.physical(), fv.field_id) {
                (Ok(g), FI_DEV_POWER_AVERAGE) => Some(g.average_1s_power_w(t)),
                (Ok(g), FI_DEV_POWER_INSTANT) => Some(g.power_w(t)),
                _ => None,
            };
            match w {
                Some(w) => {
                    fv.value_type = VALUE_TYPE_UNSIGNED_INT;
                    fv.value = Value { ull: 0 };
                    fv.value.ui = milliwatts(w);
                    fv.nvml_return = SUCCESS;
                }
                None => fv.nvml_return = NOT_SUPPORTED,
            }
        }
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: *const Handle,
    limit: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| put(limit, milliwatts(d.physical()?.power_limit_w()))))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: *const Handle,
    limit: *mut c_uint,
) -> Ret {
    nvmlDeviceGetEnforcedPowerLimit(device, limit)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementDefaultLimit(
    device: *const Handle,
    limit: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| put(limit, milliwatts(d.physical()?.max_w))))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimitConstraints(
    device: *const Handle,
    min_limit: *mut c_uint,
    max_limit: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        let max = g.max_w.max(g.power_limit_w());
        put(min_limit, milliwatts(0.3 * max))?;
        put(max_limit, milliwatts(max))
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: *const Handle,
    sensor: c_uint,
    temp: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        if sensor != 0 {
            return Err(INVALID_ARGUMENT);
        }
        put(temp, g.temperature_c)
    }))
}

#[repr(C)]
pub struct TemperatureV1 {
    version: c_uint,
    sensor_type: c_uint,
    temperature: c_int,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperatureV(
    device: *const Handle,
    temperature: *mut TemperatureV1,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        if temperature.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let t = &mut *temperature;
        if t.version >> 24 != 1 {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        if t.sensor_type != 0 {
            return Err(INVALID_ARGUMENT);
        }
        t.temperature = c_int::try_from(g.temperature_c).unwrap_or(c_int::MAX);
        Ok(())
    }))
}

// ---- clocks --------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedMemoryClocks(
    device: *const Handle,
    count: *mut c_uint,
    clocks_mhz: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        d.physical()?;
        put_list(count, clocks_mhz, &MEMORY_CLOCKS_MHZ)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedGraphicsClocks(
    device: *const Handle,
    memory_clock_mhz: c_uint,
    count: *mut c_uint,
    clocks_mhz: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        d.physical()?;
        if !MEMORY_CLOCKS_MHZ.contains(&memory_clock_mhz) {
            return Err(NOT_FOUND);
        }
        let clocks: Vec<c_uint> = (MIN_GRAPHICS_CLOCK_MHZ..=MAX_GRAPHICS_CLOCK_MHZ)
            .rev()
            .step_by(15)
            .collect();
        put_list(count, clocks_mhz, &clocks)
    }))
}

// ---- processes -----------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfoV1 {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfoV2 {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

/// `UNKNOWN` inside one of the GPU's `process_query_fails_s` windows.
fn process_query(d: &Dev) -> Result<(), Ret> {
    let t = d.t_s();
    if d.gpu()
        .process_query_fails_s
        .iter()
        .any(|[a, b]| (*a..*b).contains(&t))
    {
        return Err(UNKNOWN);
    }
    Ok(())
}

unsafe fn compute_v2(device: *const Handle, count: *mut c_uint, infos: *mut ProcessInfoV2) -> Ret {
    done(lookup(device).and_then(|d| {
        process_query(&d)?;
        let list: Vec<ProcessInfoV2> = d
            .processes()
            .into_iter()
            .map(|(pid, used, gi, ci)| ProcessInfoV2 {
                pid,
                used_gpu_memory: used,
                gpu_instance_id: gi,
                compute_instance_id: ci,
            })
            .collect();
        put_list(count, infos, &list)
    }))
}

unsafe fn none_running<T: Copy>(device: *const Handle, count: *mut c_uint, infos: *mut T) -> Ret {
    done(lookup(device).and_then(|_| put_list::<T>(count, infos, &[])))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    compute_v2(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    compute_v2(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV1,
) -> Ret {
    done(lookup(device).and_then(|d| {
        process_query(&d)?;
        let list: Vec<ProcessInfoV1> = d
            .processes()
            .into_iter()
            .map(|(pid, used, _, _)| ProcessInfoV1 {
                pid,
                used_gpu_memory: used,
            })
            .collect();
        put_list(count, infos, &list)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v3(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    none_running(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v2(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    none_running(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV1,
) -> Ret {
    none_running(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMPSComputeRunningProcesses_v3(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    none_running(device, count, infos)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMPSComputeRunningProcesses_v2(
    device: *const Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV2,
) -> Ret {
    none_running(device, count, infos)
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessUtilizationSample {
    pid: c_uint,
    time_stamp: c_ulonglong,
    sm_util: c_uint,
    mem_util: c_uint,
    enc_util: c_uint,
    dec_util: c_uint,
}

/// Samples newer than `last_seen` (µs); `NOT_FOUND` when there are none, as NVML does.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: *const Handle,
    utilization: *mut ProcessUtilizationSample,
    count: *mut c_uint,
    last_seen: c_ulonglong,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = d.physical()?;
        if !g.process_utilization || g.mig.is_some() {
            return Err(NOT_SUPPORTED);
        }
        if g.util_samples_lost {
            if !count.is_null() {
                count.write(0);
            }
            return Err(NOT_FOUND);
        }
        let samples: Vec<ProcessUtilizationSample> = g
            .util_samples(d.l.epoch_ms, d.t_ms(), last_seen, |_| true)
            .into_iter()
            .filter(|s| d.sampled(s.pid, (s.timestamp_us / 1000) as i64))
            .map(|s: UtilSample| ProcessUtilizationSample {
                pid: s.pid,
                time_stamp: s.timestamp_us,
                sm_util: s.sm_util,
                mem_util: s.mem_util,
                enc_util: 0,
                dec_util: 0,
            })
            .collect();
        if samples.is_empty() {
            if !count.is_null() {
                count.write(0);
            }
            return Err(NOT_FOUND);
        }
        put_list(count, utilization, &samples)
    }))
}

// ---- MIG -----------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: *const Handle,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let on = c_uint::from(d.physical()?.mig.is_some());
        put(current, on)?;
        put(pending, on)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: *const Handle,
    count: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| {
        let n = if d.physical()?.mig.is_some() { 7 } else { 0 };
        put(count, n)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: *const Handle,
    index: c_uint,
    mig_device: *mut *const Handle,
) -> Ret {
    done(lookup(device).and_then(|d| {
        d.physical()?;
        let h =
            d.l.handles
                .iter()
                .find(|h| h.gpu == d.gpu && h.mig == Some(index as usize))
                .ok_or(NOT_FOUND)?;
        put(mig_device, h as *const Handle)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: *const Handle,
    is_mig: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| put(is_mig, c_uint::from(d.mig.is_some()))))
}

fn mig_instance(d: &Dev) -> Result<&crate::scenario::MigInstance, Ret> {
    match (d.mig, &d.gpu().mig) {
        (Some(i), Some(m)) => Ok(&m.instances[i]),
        _ => Err(NOT_SUPPORTED),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(device: *const Handle, id: *mut c_uint) -> Ret {
    done(lookup(device).and_then(|d| put(id, mig_instance(&d)?.gi_id)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(
    device: *const Handle,
    id: *mut c_uint,
) -> Ret {
    done(lookup(device).and_then(|d| put(id, mig_instance(&d)?.ci_id)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    mig_device: *const Handle,
    device: *mut *const Handle,
) -> Ret {
    done(lookup(mig_device).and_then(|d| {
        mig_instance(&d)?;
        let h =
            d.l.handles
                .iter()
                .find(|h| h.gpu == d.gpu && h.mig.is_none())
                .ok_or(INVALID_ARGUMENT)?;
        put(device, h as *const Handle)
    }))
}

#[repr(C)]
pub struct DeviceAttributes {
    multiprocessor_count: c_uint,
    shared_copy_engine_count: c_uint,
    shared_decoder_count: c_uint,
    shared_encoder_count: c_uint,
    shared_jpeg_count: c_uint,
    shared_ofa_count: c_uint,
    gpu_instance_slice_count: c_uint,
    compute_instance_slice_count: c_uint,
    memory_size_mb: c_ulonglong,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes_v2(
    device: *const Handle,
    attributes: *mut DeviceAttributes,
) -> Ret {
    done(lookup(device).and_then(|d| {
        // 132 SMs in 7 compute slices, as on H100 SXM; a MIG device gets its slices' share.
        let slices = mig_instance(&d).map_or(7, |m| m.slices);
        put(
            attributes,
            DeviceAttributes {
                multiprocessor_count: 132 * slices / 7,
                shared_copy_engine_count: slices,
                shared_decoder_count: slices.div_ceil(2),
                shared_encoder_count: 0,
                shared_jpeg_count: slices.div_ceil(2),
                shared_ofa_count: u32::from(slices == 7),
                gpu_instance_slice_count: slices,
                compute_instance_slice_count: slices,
                memory_size_mb: d.memory_total() / (1 << 20),
            },
        )
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes(
    device: *const Handle,
    attributes: *mut DeviceAttributes,
) -> Ret {
    nvmlDeviceGetAttributes_v2(device, attributes)
}

// ---- GPM (GPU Performance Monitoring, Hopper+) ---------------------------------------

/// A GPM sample: which GPU (and MIG GPU instance) and when it was taken.
#[derive(Debug, Default)]
pub struct GpmSample {
    gpu: usize,
    gi: Option<u32>,
    t_s: f64,
    taken: bool,
}

#[repr(C)]
pub struct GpmSupport {
    version: c_uint,
    is_supported_device: c_uint,
}

#[repr(C)]
pub struct GpmMetricInfo {
    short_name: *mut c_char,
    long_name: *mut c_char,
    unit: *mut c_char,
}

#[repr(C)]
pub struct GpmMetric {
    metric_id: c_uint,
    nvml_return: Ret,
    value: f64,
    info: GpmMetricInfo,
}

/// The prefix of `nvmlGpmMetricsGet_t` the simulator reads and writes: `metrics` has
/// NVML_GPM_METRIC_MAX entries in the header; only the first `num_metrics` are touched.
#[repr(C)]
pub struct GpmMetricsGet {
    version: c_uint,
    num_metrics: c_uint,
    sample1: *mut GpmSample,
    sample2: *mut GpmSample,
    metrics: [GpmMetric; 1],
}

/// `NVML_GPM_METRIC_SM_UTIL`: percent of the SMs (of the instance, for a MIG sample)
/// that were busy.
const GPM_METRIC_SM_UTIL: c_uint = 2;

fn gpm_device(d: &Dev) -> Result<&Gpu, Ret> {
    let g = d.physical()?;
    if g.gpm {
        Ok(g)
    } else {
        Err(NOT_SUPPORTED)
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: *const Handle,
    support: *mut GpmSupport,
) -> Ret {
    done(lookup(device).and_then(|d| {
        if support.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let on = d.physical()?.gpm;
        (*support).is_supported_device = c_uint::from(on);
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(sample: *mut *mut GpmSample) -> Ret {
    if sample.is_null() {
        return INVALID_ARGUMENT;
    }
    sample.write(Box::into_raw(Box::default()));
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleFree(sample: *mut GpmSample) -> Ret {
    if sample.is_null() {
        return INVALID_ARGUMENT;
    }
    drop(Box::from_raw(sample));
    SUCCESS
}

unsafe fn gpm_take(device: *const Handle, gi: Option<u32>, sample: *mut GpmSample) -> Ret {
    done(lookup(device).and_then(|d| {
        let g = gpm_device(&d)?;
        if sample.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        if let Some(gi) = gi {
            let known = g
                .mig
                .as_ref()
                .is_some_and(|m| m.instances.iter().any(|i| i.gi_id == gi));
            if !known {
                return Err(INVALID_ARGUMENT);
            }
        }
        let s = &mut *sample;
        s.gpu = d.gpu;
        s.gi = gi;
        s.t_s = d.t_s();
        s.taken = true;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleGet(device: *const Handle, sample: *mut GpmSample) -> Ret {
    gpm_take(device, None, sample)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMigSampleGet(
    device: *const Handle,
    gpu_instance_id: c_uint,
    sample: *mut GpmSample,
) -> Ret {
    gpm_take(device, Some(gpu_instance_id), sample)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut GpmMetricsGet) -> Ret {
    let l = match loaded() {
        Ok(l) => l,
        Err(e) => return e,
    };
    if request.is_null() {
        return INVALID_ARGUMENT;
    }
    let r = &mut *request;
    if r.version != 1 {
        return ARGUMENT_VERSION_MISMATCH;
    }
    if r.sample1.is_null() || r.sample2.is_null() || r.num_metrics > 210 {
        return INVALID_ARGUMENT;
    }
    let (a, b) = (&*r.sample1, &*r.sample2);
    if !a.taken || !b.taken || a.gpu != b.gpu || a.gi != b.gi || b.t_s <= a.t_s {
        return INVALID_ARGUMENT;
    }
    let g = &l.scenario.gpus[a.gpu];
    let metrics = std::ptr::addr_of_mut!(r.metrics).cast::<GpmMetric>();
    for i in 0..r.num_metrics as usize {
        let m = &mut *metrics.add(i);
        m.info = GpmMetricInfo {
            short_name: std::ptr::null_mut(),
            long_name: std::ptr::null_mut(),
            unit: std::ptr::null_mut(),
        };
        if m.metric_id == GPM_METRIC_SM_UTIL {
            m.value = match a.gi {
                Some(gi) => g.instance_sm_util(gi, a.t_s, b.t_s),
                None => g.gpu_sm_util(a.t_s, b.t_s),
            };
            m.nvml_return = SUCCESS;
        } else {
            m.value = 0.0;
            m.nvml_return = NOT_SUPPORTED;
        }
    }
    SUCCESS
}
