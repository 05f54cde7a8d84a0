//! CPU cost of the power model's per-interval work (`observe` + `decide`) for one GPU,
//! at the window sizes 1 Hz and 10 Hz sampling give (120 s window), for 2 and 4 models.
//! Prints one JSON line per case: microseconds per interval (median of 5 runs), and the
//! share of one core this costs for 8 GPUs at that rate.

use std::collections::BTreeMap;
use std::time::Instant;

use inferwatt_agent::attribution::ModelKey;
use inferwatt_agent::power_model::{PowerModel, PowerModelConfig, Row};

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

fn main() {
    for (hz, models) in [(1.0, 2usize), (1.0, 4), (10.0, 2), (10.0, 4)] {
        let dt = 1.0 / hz;
        let keys: Vec<ModelKey> = (0..models)
            .map(|i| ModelKey::new(format!("model-{i}"), "vllm"))
            .collect();
        let mut runs = Vec::new();
        for _ in 0..5 {
            let mut pm = PowerModel::new(PowerModelConfig {
                window_s: 120.0,
                min_intervals: 20,
            });
            let mut seed = 1;
            let n = (600.0 * hz) as usize; // ten minutes of intervals
            let start = Instant::now();
            for _ in 0..n {
                let util: BTreeMap<ModelKey, f64> = keys
                    .iter()
                    .map(|k| (k.clone(), 5.0 + 40.0 * lcg(&mut seed)))
                    .collect();
                let power = 70.0
                    + util
                        .values()
                        .enumerate()
                        .map(|(i, u)| (2.0 + i as f64) * u)
                        .sum::<f64>();
                pm.observe(Row {
                    dt_s: dt,
                    power_w: power,
                    util: util.clone(),
                });
                std::hint::black_box(pm.decide(&util, None));
            }
            runs.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        runs.sort_by(f64::total_cmp);
        let us = runs[2];
        println!(
            "{}",
            serde_json::json!({
                "rate_hz": hz,
                "models": models,
                "window_intervals": (120.0 * hz) as usize,
                "us_per_interval_median": us,
                "us_per_interval_min": runs[0],
                "us_per_interval_max": runs[4],
                "core_share_8_gpus_pct": us * 8.0 * hz / 1e4,
            })
        );
    }
}
