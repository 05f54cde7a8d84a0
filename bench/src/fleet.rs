//! The benchmark's simulated host: 8 H100s, each shared by 4 model-server processes
//! (32 in all, 8 models each on 4 GPUs), on a bursty trace — 30-s cycles of sub-second
//! bursts (18 s), a quiet spell (6 s) and steady load (6 s), per-GPU scaled — written as
//! a scenario for the simulated driver.

use serde_json::{json, Value};

/// GPUs in the benchmark host.
pub const GPUS: usize = 8;
/// Model-server processes per GPU.
pub const PROCS_PER_GPU: usize = 4;
/// Distinct models.
pub const MODELS: usize = 8;
/// Idle power of the simulated GPUs, W (the agent is configured with the same value).
pub const IDLE_W: f64 = 70.0;
/// GPU name the scenario uses.
pub const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";

/// The model served by process number `i` (0-based over all 32).
pub fn model_of(i: usize) -> String {
    format!("bench-org/model-{}", i % MODELS)
}

/// The scenario for `pids` (GPU `g` gets `pids[4g..4g+4]`), starting at `epoch_unix_ms`
/// and covering at least `seconds`. Instantaneous utilisations on a GPU never sum above
/// 100% (bursts at duty 0.5 double the mean).
pub fn scenario(epoch_unix_ms: i64, pids: &[u32], seconds: f64) -> Value {
    let base = [20.0, 15.0, 10.0, 5.0];
    let cycles = (seconds / 30.0).ceil() as usize + 4;
    let gpus: Vec<Value> = pids
        .chunks(PROCS_PER_GPU)
        .enumerate()
        .map(|(g, ps)| {
            let scale = 0.6 + 0.05 * g as f64;
            let mut phases = Vec::new();
            for c in 0..cycles {
                let t0 = c as f64 * 30.0;
                let bursty: Vec<Value> = ps
                    .iter()
                    .enumerate()
                    .map(|(j, pid)| {
                        json!({"pid": pid, "sm_util": base[j] * scale, "weight": 1.0,
                               "burst": {"period_s": 0.2 + 0.1 * j as f64 + 0.05 * g as f64, "duty": 0.5}})
                    })
                    .collect();
                let steady: Vec<Value> = ps
                    .iter()
                    .take(2)
                    .enumerate()
                    .map(|(j, pid)| json!({"pid": pid, "sm_util": if j == 0 { 60.0 } else { 30.0 } * scale, "weight": 1.0}))
                    .collect();
                phases.push(json!({"start_s": t0, "end_s": t0 + 18.0, "procs": bursty}));
                phases.push(json!({"start_s": t0 + 18.0, "end_s": t0 + 24.0, "procs": []}));
                phases.push(json!({"start_s": t0 + 24.0, "end_s": t0 + 30.0, "procs": steady}));
            }
            let processes: Vec<Value> = ps
                .iter()
                .map(|pid| json!({"pid": pid, "used_memory_bytes": 16_000_000_000u64, "start_s": 0.0}))
                .collect();
            json!({
                "uuid": format!("GPU-be7c0000-0000-4000-8000-{g:012}"),
                "name": GPU_NAME,
                "idle_w": IDLE_W, "max_w": 700.0,
                "memory_total_bytes": 85_899_345_920u64,
                "energy_counter": true,
                "initial_counter_mj": 1_000_000_000u64 + g as u64 * 7_777_777,
                "power_reading": "average_1s",
                "processes": processes,
                "phases": phases,
            })
        })
        .collect();
    json!({"epoch_unix_ms": epoch_unix_ms, "gpus": gpus})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_parses_and_puts_four_processes_on_each_of_eight_gpus() {
        let pids: Vec<u32> = (1000..1032).collect();
        let v = scenario(1_700_000_000_000, &pids, 300.0);
        let mut s = v.clone();
        s["check_alive"] = json!(false);
        let sim = nvml_sim::Scenario::from_json(&s.to_string()).expect("valid scenario");
        let t = sim.truth(0.0, 300.0);
        assert_eq!(t.gpus.len(), GPUS);
        for g in &t.gpus {
            assert_eq!(g.processes.len(), PROCS_PER_GPU);
            // Bursty and quiet phases: the mean power is well above idle, below max.
            let mean_w = g.energy_j / 300.0;
            assert!(mean_w > IDLE_W + 50.0 && mean_w < 700.0, "{mean_w}");
        }
        assert_eq!(model_of(9), "bench-org/model-1");
    }
}
