//! What the split tests (`power_split.rs`, `mig_gpm.rs`) read off an agent's intervals:
//! per-model active energy over a window, the methods its rows used, conservation per
//! interval, and the relative error against the simulator's ground truth.

use std::collections::BTreeMap;

use inferwatt_core::lineproto::Point;
use nvml_sim::Scenario;

fn f(p: &Point, k: &str) -> f64 {
    p.field_f64(k).unwrap_or(0.0)
}

/// A deterministic pseudo-random sequence in [0, 1) (scenario utilisations).
pub fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

/// Asserts that every GPU interval's model rows (active + idle) add up to its energy;
/// returns how many intervals were checked.
pub fn assert_conserved(points: &[Point]) -> usize {
    let mut models: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "model_energy") {
        *models
            .entry((
                p.tag_value("gpu_uuid").unwrap_or("").to_string(),
                p.timestamp.unwrap_or(0),
            ))
            .or_default() += f(p, "active_j") + f(p, "idle_j");
    }
    let mut n = 0;
    for g in points.iter().filter(|p| p.measurement == "gpu") {
        let key = (
            g.tag_value("gpu_uuid").unwrap_or("").to_string(),
            g.timestamp.unwrap_or(0),
        );
        let e = f(g, "energy_j");
        let m = models.get(&key).copied().unwrap_or(0.0);
        assert!(
            (m - e).abs() <= 1e-9 * e.max(1.0),
            "interval {key:?}: models {m} J, GPU {e} J"
        );
        n += 1;
    }
    n
}

/// One GPU's model rows over a window of interval ends.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Active energy per model, joules.
    pub active_j: BTreeMap<String, f64>,
    /// Split methods the rows used, in order of first appearance.
    pub methods: Vec<String>,
    /// Idle (static) energy of all the GPU's rows: over the span's length, the static
    /// power the split used on average.
    pub idle_j: f64,
    /// The span the intervals cover, Unix ms.
    pub span_ms: (i64, i64),
}

/// The rows of GPU `uuid` whose interval ends in `(from_ns, to_ns]`.
pub fn window(points: &[Point], uuid: &str, from_ns: i64, to_ns: i64) -> Window {
    let mut w = Window::default();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for p in points {
        if p.measurement != "model_energy" || p.tag_value("gpu_uuid") != Some(uuid) {
            continue;
        }
        let end = p.timestamp.expect("timestamp");
        if end <= from_ns || end > to_ns {
            continue;
        }
        lo = lo.min(end - (f(p, "interval_s") * 1e9).round() as i64);
        hi = hi.max(end);
        *w.active_j
            .entry(p.tag_value("model").unwrap_or("").to_string())
            .or_insert(0.0) += f(p, "active_j");
        w.idle_j += f(p, "idle_j");
        let m = p
            .field_value("method")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if !w.methods.contains(&m) {
            w.methods.push(m);
        }
    }
    w.span_ms = (lo / 1_000_000, hi / 1_000_000);
    w
}

/// Each model's relative error of active energy against the truth over the window's span.
pub fn errors(
    scenario: &Scenario,
    uuid: &str,
    models: &[(u32, &str)],
    w: &Window,
) -> Vec<(String, f64)> {
    let truth = scenario
        .truth_unix_ms(w.span_ms.0, w.span_ms.1)
        .expect("truth");
    let g = truth.gpus.iter().find(|g| g.uuid == uuid).expect("gpu");
    models
        .iter()
        .map(|(pid, model)| {
            let t = g
                .processes
                .iter()
                .find(|p| p.pid == *pid)
                .expect("process")
                .active_j;
            let a = w.active_j.get(*model).copied().unwrap_or(0.0);
            (model.to_string(), (a - t) / t)
        })
        .collect()
}

/// `model +0.12%, other −3.40%`.
pub fn show(errors: &[(String, f64)]) -> String {
    errors
        .iter()
        .map(|(m, e)| format!("{m} {:+.2}%", 100.0 * e))
        .collect::<Vec<_>>()
        .join(", ")
}
