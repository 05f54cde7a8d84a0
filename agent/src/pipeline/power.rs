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
    pub activity: &'a [ProcessActivity],
}

/// Feeds one interval to `pm` and decides its split. Only intervals whose energy came
/// from the counter, with a known process list and utilisation samples, join the window
/// (an integrated or gap interval's power is not what the utilisation drew). An interval
/// without samples or under MIG gets no power-model weights and no summary.
pub fn step(pm: &mut PowerModel, facts: IntervalFacts<'_>, known_static: Option<f64>) -> PowerStep {
    if facts.mig || !facts.processes_known || !facts.has_samples || facts.dt_s <= 0.0 {
        return PowerStep::default();
    }
    let mut util: BTreeMap<ModelKey, f64> = BTreeMap::new();
    for a in facts.activity {
        *util.entry(a.model.clone()).or_default() += a.sm_util.unwrap_or(0.0).max(0.0);
    }
    if facts.source == EnergySource::Counter {
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
