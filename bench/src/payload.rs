//! Synthetic agent output for ingest benchmarks: what 1-Hz agents on 16 hosts of 8 GPUs
//! × 4 model processes ship — per host and second 8 `gpu`, 32 `model_energy`,
//! 8 `model_usage`, 1 `host_energy` and 1 `site` point — encoded as line protocol in
//! batches.

use inferwatt_core::lineproto::{encode, EncodeError, Point};
use inferwatt_core::schema::{
    EnergySource, GpuInterval, HostEnergy, ModelEnergy, ModelUsage, Origin, SiteInfo, SplitMethod,
};

/// Hosts the synthetic fleet has.
pub const HOSTS: usize = 16;
/// Points one host ships per interval.
pub const POINTS_PER_HOST_INTERVAL: usize = 50;
/// The `site` tag of every point.
pub const SITE: &str = "bench";

/// The points one host ships for the 1-s interval ending at `end_ns`; `k` varies values.
fn host_interval(host: usize, end_ns: i64, k: usize) -> Vec<Point> {
    host_interval_of(host, end_ns, k, 1.0)
}

/// The points host `host` ships for the interval of `interval_s` seconds ending at
/// `end_ns` (energies and counts scale with it); `k` varies values.
pub fn host_interval_of(host: usize, end_ns: i64, k: usize, interval_s: f64) -> Vec<Point> {
    let o = Origin {
        site: SITE.into(),
        host: format!("gpu-host-{host:02}"),
    };
    let mut out = Vec::with_capacity(POINTS_PER_HOST_INTERVAL);
    for g in 0..8u32 {
        let uuid = format!("GPU-be7c{host:04}-0000-4000-8000-{g:012}");
        let power = 180.0 + ((k * 7 + g as usize * 13) % 400) as f64 + 0.25;
        out.push(
            GpuInterval {
                gpu_uuid: uuid.clone(),
                gpu_index: g,
                gpu_name: "NVIDIA H100 80GB HBM3".into(),
                energy_j: power * interval_s,
                power_w: Some(power),
                util_pct: Some(((k + g as usize) % 100) as f64),
                mem_used_bytes: Some(64_000_000_000),
                energy_counter_mj: Some(1_000_000_000 + (k as u64) * 300_000),
                interval_s,
                source: EnergySource::Counter,
                clock_step_s: None,
                end_ns,
            }
            .to_point(&o),
        );
        for j in 0..4usize {
            let active = (power - 70.0) * (j + 1) as f64 / 10.0;
            out.push(
                ModelEnergy {
                    gpu_uuid: uuid.clone(),
                    model: format!("bench-org/model-{}", (g as usize * 4 + j) % 8),
                    server: "vllm".into(),
                    active_j: active * interval_s,
                    idle_j: 17.5 * interval_s,
                    host_j: 1.5 * interval_s,
                    interval_s,
                    method: SplitMethod::SmUtil,
                    end_ns,
                    pod: None,
                }
                .to_point(&o),
            );
        }
    }
    for m in 0..8 {
        out.push(
            ModelUsage {
                model: format!("bench-org/model-{m}"),
                server: "vllm".into(),
                requests: ((k % 5) as f64 * interval_s) as u64,
                input_tokens: 1200 + (k % 300) as u64,
                output_tokens: 250 + (k % 90) as u64,
                interval_s,
                end_ns,
                pod: None,
            }
            .to_point(&o),
        );
    }
    out.push(
        HostEnergy {
            cpu_j: (95.0 + (k % 20) as f64) * interval_s,
            dram_j: Some(12.5 * interval_s),
            interval_s,
            source: "rapl".into(),
            end_ns,
        }
        .to_point(&o),
    );
    out.push(
        SiteInfo {
            country: "DEU".into(),
            zone: "DE".into(),
            pue: Some(1.2),
            wue_l_per_kwh: Some(0.5),
            idle_policy: None,
            interval_s,
            end_ns,
        }
        .to_point(&o),
    );
    out
}

/// About `n` points (rounded up to whole host intervals) of 1-s intervals ending before
/// `end_ns`, encoded in batches of `batch` points (the last may be shorter).
pub fn batches(n: usize, batch: usize, end_ns: i64) -> Result<Vec<(usize, String)>, EncodeError> {
    let intervals = n.div_ceil(POINTS_PER_HOST_INTERVAL * HOSTS);
    let mut points = Vec::with_capacity(intervals * HOSTS * POINTS_PER_HOST_INTERVAL);
    for k in 0..intervals {
        let t = end_ns - (intervals - k) as i64 * 1_000_000_000;
        for h in 0..HOSTS {
            points.extend(host_interval(h, t, k));
        }
    }
    points
        .chunks(batch.max(1))
        .map(|c| encode(c).map(|body| (c.len(), body)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferwatt_core::lineproto::{decode, Precision};

    #[test]
    fn batches_decode_back_to_every_point_with_the_agent_schema() {
        let b = batches(2_000, 500, 1_800_000_000_000_000_000).expect("encode");
        let total: usize = b.iter().map(|(n, _)| n).sum();
        assert_eq!(total, 3 * HOSTS * POINTS_PER_HOST_INTERVAL);
        assert!(b.iter().all(|(n, _)| *n <= 500));
        let mut seen = 0;
        for (n, body) in &b {
            let pts = decode(body.as_bytes(), Precision::Nanoseconds, 0).expect("valid lp");
            assert_eq!(pts.len(), *n);
            seen += pts
                .iter()
                .filter(|p| p.measurement == "model_energy")
                .count();
        }
        assert_eq!(seen, 3 * HOSTS * 32);
    }
}
