//! `inferwatt-agent check`: tells a newcomer what the agent finds on this host — GPUs,
//! their processes and the model each serves (and by which rule), which NVML functions
//! work, host energy, site factors, and the points one interval would ship.

use std::fmt::Write as _;
use std::time::Duration;

use inferwatt_core::lineproto::encode;

use crate::config::Config;
use crate::pipeline::{PipelineError, Sampler};
use crate::sources::nvml::{GpuReader, NvmlReader};

/// Runs the check and prints it to stdout.
pub fn run(cfg: Config, reader: NvmlReader) -> Result<(), PipelineError> {
    print!("{}", report(cfg, reader)?);
    Ok(())
}

fn status<T: std::fmt::Debug>(r: &Result<T, nvml_wrapper::error::NvmlError>) -> String {
    match r {
        Ok(v) => format!("ok ({v:?})"),
        Err(nvml_wrapper::error::NvmlError::NotSupported) => "not supported".to_string(),
        Err(e) => format!("FAILED: {e}"),
    }
}

/// The check's text.
pub fn report(cfg: Config, reader: NvmlReader) -> Result<String, PipelineError> {
    let mut o = String::new();
    let _ = writeln!(o, "inferwatt-agent {} check", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        o,
        "NVML library: {} (driver {})",
        reader.library(),
        reader.driver_version().unwrap_or_else(|| "unknown".into())
    );
    let _ = writeln!(o, "GPUs: {}", reader.gpus().len());
    for g in reader.gpus() {
        let _ = writeln!(
            o,
            "  [{}] {} {}  memory {}  MIG {}",
            g.index,
            g.name,
            g.uuid,
            g.memory_total_bytes
                .map_or("unknown".to_string(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
            if g.mig.is_empty() {
                "off".to_string()
            } else {
                format!(
                    "on: {}",
                    g.mig
                        .iter()
                        .map(|m| format!("{} ({} slices)", m.uuid, m.slices))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if let Ok(dev) = reader.nvml().device_by_index(g.index) {
            let probes = [
                (
                    "nvmlDeviceGetTotalEnergyConsumption (mJ)",
                    status(&dev.total_energy_consumption()),
                ),
                ("nvmlDeviceGetPowerUsage (mW)", status(&dev.power_usage())),
                (
                    "nvmlDeviceGetFieldValues 185/186",
                    status(
                        &dev.field_values_for(&[
                            nvml_wrapper::structs::device::FieldId(
                                crate::sources::nvml::FI_POWER_AVERAGE,
                            ),
                            nvml_wrapper::structs::device::FieldId(
                                crate::sources::nvml::FI_POWER_INSTANT,
                            ),
                        ])
                        .map(|v| {
                            v.iter()
                                .filter(|s| s.as_ref().is_ok_and(|s| s.value.is_ok()))
                                .count()
                        }),
                    ),
                ),
                (
                    "nvmlDeviceGetUtilizationRates",
                    status(&dev.utilization_rates().map(|u| u.gpu)),
                ),
                (
                    "nvmlDeviceGetMemoryInfo",
                    status(&dev.memory_info().map(|m| m.used)),
                ),
                (
                    "nvmlDeviceGetComputeRunningProcesses_v3",
                    status(&dev.running_compute_processes().map(|p| p.len())),
                ),
                ("nvmlGpmQueryDeviceSupport", status(&dev.gpm_support())),
                (
                    "nvmlDeviceGetProcessUtilization",
                    match dev.process_utilization_stats(None) {
                        Ok(s) => format!("ok ({} samples)", s.len()),
                        Err(nvml_wrapper::error::NvmlError::NotFound) => {
                            "ok (no samples yet)".into()
                        }
                        Err(nvml_wrapper::error::NvmlError::NotSupported) => {
                            "not supported (split falls back to memory, then equal)".into()
                        }
                        Err(e) => format!("FAILED: {e}"),
                    },
                ),
            ];
            for (name, st) in probes {
                let _ = writeln!(o, "      {name:<45} {st}");
            }
        }
    }

    // The running agent's power model, from its state file: why each GPU's models got
    // their shares.
    let saved = crate::pipeline::AgentState::load(&cfg.state.dir);
    let _ = writeln!(
        o,
        "Split: {}",
        match cfg.sampling.split {
            crate::config::SplitChoice::PowerModel => format!(
                "power_model (window {} s, at least {} intervals); the running agent's state says:",
                cfg.sampling.power_model.window_s, cfg.sampling.power_model.min_intervals
            ),
            crate::config::SplitChoice::SmUtil => "sm_util (configured)".to_string(),
        }
    );
    if cfg.sampling.split == crate::config::SplitChoice::PowerModel {
        let now_ns = crate::sources::nvml::now_ns();
        let mut any = false;
        for g in reader.gpus() {
            if let Some(s) = saved.power_models.get(&g.uuid) {
                any = true;
                let _ = writeln!(o, "  GPU {}:", g.index);
                for line in crate::pipeline::power::describe(s, now_ns) {
                    let _ = writeln!(o, "      {line}");
                }
            }
        }
        if !any {
            let _ = writeln!(
                o,
                "  nothing yet (no state in '{}'): shares come from the SM share until a running agent's window identifies the models",
                cfg.state.dir.display()
            );
        }
    }
    for g in reader.gpus() {
        if let Some(w) = saved.idle_w.get(&g.uuid) {
            let _ = writeln!(
                o,
                "Static power of GPU {} measured with no process: {w:.1} W (kept across restarts)",
                g.index
            );
        }
    }

    let interval = Duration::from_secs_f64(cfg.sampling.interval_s);
    let metrics = crate::sinks::prometheus::Metrics::shared();
    let site = cfg.site.clone();
    let ship = cfg.ship.clone();
    let prom = cfg.prometheus.clone();
    let kube = crate::kube::fetch::PodListReader::new(&cfg.kubernetes)
        .map_err(crate::pipeline::PipelineError::Kubernetes)?;
    let mut sampler = Sampler::new(cfg, reader, metrics)?;
    sampler.forget_state();
    if let Some(kube) = kube {
        let view = sampler.pods.clone();
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(kube.refresh(&view)),
            Err(e) => {
                let _ = writeln!(o, "Kubernetes: no runtime to read the pod list: {e}");
            }
        }
        let v = view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&v.index, &v.error) {
            (_, Some(e)) => {
                let _ = writeln!(o, "Kubernetes: cannot read the pod list: {e}");
            }
            (Some(i), None) => {
                let _ = writeln!(o, "Kubernetes: {} pods read from {}", i.len(), kube.url());
            }
            (None, None) => {}
        }
        if let Some(e) = &v.devices_error {
            let _ = writeln!(
                o,
                "Kubernetes: cannot read the kubelet's GPU assignment: {e}"
            );
        } else if v.devices.is_some() {
            let _ = writeln!(
                o,
                "Kubernetes: the kubelet's GPU assignment read (PodResources)"
            );
        }
    }
    sampler.sample();

    let _ = writeln!(o, "Processes:");
    let mut any = false;
    for slot in 0..sampler.reader().gpus().len() {
        let g = sampler.reader().gpus()[slot].clone();
        let Ok(reading) = sampler.reader().read(slot, u64::MAX) else {
            continue;
        };
        for p in reading.processes {
            any = true;
            let r = sampler.resolve(p.pid);
            let r = sampler.check_assignment(&g.uuid, p.pid, r);
            let id = &r.identity;
            let _ = writeln!(
                o,
                "  GPU {} pid {:<7} model '{}' (server {}) — {}",
                g.index, p.pid, id.model, id.server, id.rule
            );
            if let Some(pod) = &r.pod {
                let _ = writeln!(
                    o,
                    "      pod: {}/{} container '{}', workload {} {}",
                    pod.namespace, pod.pod, pod.container, pod.workload_kind, pod.workload
                );
            }
            if let Some(n) = sampler.assignment_note(p.pid) {
                let _ = writeln!(o, "      kubelet: {n}");
            }
            if let Some(cmd) = sampler.cmdline(p.pid) {
                let _ = writeln!(o, "      cmdline: {}", cmd.join(" "));
            }
        }
    }
    if !any {
        let _ = writeln!(o, "  none (GPU energy goes to '_idle')");
    }
    let f = sampler.factors();
    let _ = writeln!(
        o,
        "Site: '{}' host '{}' country '{}' zone '{}' PUE {} WUE {} L/kWh EWIF {} L/kWh",
        site.name,
        sampler.origin().host,
        site.country,
        site.zone,
        f.pue.value,
        f.wue_l_per_kwh.value,
        f.ewif_l_per_kwh.value
    );
    for w in f.warnings() {
        let _ = writeln!(o, "  warning: {w}");
    }
    let _ = writeln!(
        o,
        "Carbon intensity: {} ({})",
        f.intensity_g_per_kwh
            .map_or("none".to_string(), |v| format!("{v} gCO2e/kWh")),
        f.intensity_source
    );
    let _ = writeln!(
        o,
        "Prometheus: {}",
        if prom.enabled {
            format!("http://{}/metrics", prom.listen)
        } else {
            "off".into()
        }
    );
    let _ = writeln!(
        o,
        "Shipping: {}",
        ship.map_or("off (no [ship] section)".to_string(), |s| format!(
            "to {}",
            s.url
        ))
    );

    std::thread::sleep(interval);
    // The site point goes out with the first interval and then once a minute: show it.
    sampler.send_site_next();
    let out = sampler.sample();
    let _ = writeln!(o, "One interval ({} s) would ship:", interval.as_secs_f64());
    match encode(&out.points(sampler.origin())) {
        Ok(body) => o.push_str(&body),
        Err(e) => {
            let _ = writeln!(o, "  (cannot encode: {e})");
        }
    }
    Ok(o)
}
