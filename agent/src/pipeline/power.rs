//! The sampler's side of the power model: which intervals feed a GPU's window, the
//! static power each interval uses, and the metrics that explain the split.

use std::collections::BTreeMap;

use inferwatt_core::schema::EnergySource;

use crate::attribution::{ModelKey, ProcessActivity};
use crate::power_model::{Decision, PowerModel, Row, Summary};
use crate::sinks::prometheus::Metrics;

/// What the power model gives one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PowerStep {
    /// Watts per percent per model, when the split may use them.
    pub weights: Option<BTreeMap<ModelKey, f64>>,
    /// The fit's static power, when nobody configured or measured one.
    pub static_w: Option<f64>,
    /// What `check` and the state file show.
    pub summary: Option<Summary>,
}

/// The interval facts the power model needs.
#[derive(Debug, Clone, Copy)]
pub struct IntervalFacts<'a> {
    pub end_ns: i64,
    pub dt_s: f64,
    pub energy_j: f64,
    pub source: EnergySource,
    /// False when the process query failed.
    pub processes_known: bool,
    /// True under MIG (GPU power is the whole GPU's; the split is by instance).
    pub mig: bool,
    /// True when per-process utilisation samples exist for this interval.
    pub has_samples: bool,
    /// The configured sampling interval, seconds.
    pub nominal_s: f64,
    pub activity: &'a [ProcessActivity],
}

/// Intervals longer than this many sampling intervals do not join the window: a late
/// tick is kept, but after a stall (agent stopped, host suspended) the driver's
/// utilisation buffer covers only the interval's last seconds, and the interval-length
/// weight of such a row would outweigh the whole window.
pub const MAX_ROW_INTERVALS: f64 = 3.0;

/// Feeds one interval to `pm` and decides its split. Only intervals whose energy came
/// from the counter, with a known process list and utilisation samples, and no longer
/// than [`MAX_ROW_INTERVALS`] sampling intervals, join the window (an integrated or gap
/// interval's power is not what the utilisation drew). An interval without samples or
/// under MIG gets no power-model weights and no summary.
pub fn step(pm: &mut PowerModel, facts: IntervalFacts<'_>, known_static: Option<f64>) -> PowerStep {
    if facts.mig || !facts.processes_known || !facts.has_samples || facts.dt_s <= 0.0 {
        return PowerStep::default();
    }
    let mut util: BTreeMap<ModelKey, f64> = BTreeMap::new();
    for a in facts.activity {
        *util.entry(a.model.clone()).or_default() += a.sm_util.unwrap_or(0.0).max(0.0);
    }
    if facts.source == EnergySource::Counter && facts.dt_s <= MAX_ROW_INTERVALS * facts.nominal_s {
        pm.observe(Row {
            dt_s: facts.dt_s,
            power_w: facts.energy_j / facts.dt_s,
            util: util.clone(),
        });
    }
    let Decision {
        weights,
        static_w,
        status,
    } = pm.decide(&util, known_static);
    PowerStep {
        weights,
        static_w,
        summary: Some(status.summary(facts.end_ns)),
    }
}

const HELP_WPP: &str =
    "Learned GPU power per percent of SM utilisation of a model (power model), watts.";
const HELP_STATIC: &str =
    "Static GPU power the split used: configured, measured with no process, or estimated by the power model (estimated=\"true\").";
const HELP_IN_USE: &str =
    "1 when the GPU's last interval was split by the power model, 0 when it fell back to the SM share (reason says why).";
const HELP_WINDOW: &str = "Intervals in the power model's window.";
const HELP_COND: &str =
    "Conditioning of the power model's window (smallest eigenvalue of the normalised Gram matrix; below 0.01 the models are not told apart).";

/// Publishes a GPU's power-model summary, replacing its previous series.
pub fn publish(m: &mut Metrics, site: &str, uuid: &str, s: &Summary) {
    for name in [
        "inferwatt_power_model_watts_per_percent",
        "inferwatt_power_model_static_watts",
        "inferwatt_power_model_in_use",
        "inferwatt_power_model_window_intervals",
        "inferwatt_power_model_conditioning",
    ] {
        m.unset_where(name, "gpu_uuid", uuid);
    }
    let gpu = || vec![("gpu_uuid", uuid.to_string()), ("site", site.to_string())];
    let mut l = gpu();
    l.push(("reason", s.reason.clone()));
    m.set(
        "inferwatt_power_model_in_use",
        HELP_IN_USE,
        l,
        if s.method == "power_model" { 1.0 } else { 0.0 },
    );
    if let Some(w) = s.static_w {
        let mut l = gpu();
        l.push(("estimated", s.static_estimated.to_string()));
        m.set("inferwatt_power_model_static_watts", HELP_STATIC, l, w);
    }
    for mw in &s.models {
        let mut l = gpu();
        l.push(("model", mw.model.clone()));
        l.push(("server", mw.server.clone()));
        m.set(
            "inferwatt_power_model_watts_per_percent",
            HELP_WPP,
            l,
            mw.watts_per_pct,
        );
    }
    if s.intervals > 0 {
        m.set(
            "inferwatt_power_model_window_intervals",
            HELP_WINDOW,
            gpu(),
            s.intervals as f64,
        );
        m.set(
            "inferwatt_power_model_conditioning",
            HELP_COND,
            gpu(),
            s.conditioning,
        );
    }
}

/// The lines `check` prints for one GPU's saved summary.
pub fn describe(s: &Summary, now_ns: i64) -> Vec<String> {
    let age_s = (now_ns - s.at_ns) as f64 / 1e9;
    let mut out = vec![format!(
        "split {} ({:.0} s ago){}",
        s.method,
        age_s.max(0.0),
        if s.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", s.explanation)
        }
    )];
    if let Some(w) = s.static_w {
        out.push(format!(
            "static power {w:.1} W ({}); window {} intervals, {:.0} s, conditioning {:.3}, rms residual {:.1} W",
            if s.static_estimated {
                "estimated by the power model"
            } else {
                "configured or measured with no process"
            },
            s.intervals,
            s.window_s,
            s.conditioning,
            s.rms_residual_w
        ));
    }
    for mw in &s.models {
        out.push(format!(
            "{} ({}): {:.3} W per % SM",
            mw.model, mw.server, mw.watts_per_pct
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::ProcessActivity;
    use crate::power_model::PowerModelConfig;

    fn activity(a: f64, b: f64) -> Vec<ProcessActivity> {
        [(1, "a", a), (2, "b", b)]
            .into_iter()
            .map(|(pid, m, u)| ProcessActivity {
                pid,
                model: ModelKey::new(m, "vllm"),
                sm_util: Some(u),
                mem_bytes: None,
                mig_instance: None,
            })
            .collect()
    }

    fn facts(dt_s: f64, energy_j: f64, act: &[ProcessActivity]) -> IntervalFacts<'_> {
        IntervalFacts {
            end_ns: 0,
            dt_s,
            energy_j,
            source: EnergySource::Counter,
            processes_known: true,
            mig: false,
            has_samples: true,
            nominal_s: 1.0,
            activity: act,
        }
    }

    #[test]
    fn an_interval_far_longer_than_the_sampling_interval_does_not_join_the_window() {
        // 10 and 4 W per percent over 70 W static, on 1-s intervals.
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 120.0,
            min_intervals: 10,
        });
        let mut seed = 3u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            5.0 + 40.0 * ((seed >> 11) as f64 / (1u64 << 53) as f64)
        };
        for _ in 0..40 {
            let (a, b) = (next(), next());
            let act = activity(a, b);
            step(
                &mut pm,
                facts(1.0, 70.0 + 10.0 * a + 4.0 * b, &act),
                Some(70.0),
            );
        }
        let before = pm.len();
        // The agent was stopped (SIGSTOP) for an hour: the counter covers 3,600 s but the
        // driver's utilisation buffer only its last seconds, which say 40% and 5% while
        // the hour was nearly idle. One such row would outweigh the whole window.
        let act = activity(40.0, 5.0);
        let long = step(&mut pm, facts(3600.0, 3600.0 * 80.0, &act), Some(70.0));
        assert_eq!(pm.len(), before, "the hour-long interval joined the window");
        let w = long.weights.expect("still split by the window's weights");
        let key = |m: &str| ModelKey::new(m, "vllm");
        assert!((w[&key("a")] - 10.0).abs() < 1e-6 && (w[&key("b")] - 4.0).abs() < 1e-6);
    }
}
