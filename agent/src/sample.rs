//! Sample: two successive readings of one GPU → that interval's energy, with the path
//! it came from (METHODOLOGY §1). Pure.
//!
//! - `counter`: difference of NVML's cumulative energy counter (millijoules);
//! - `integrated`: trapezoidal integration of power, when the GPU has no counter or the
//!   counter went backwards (a driver reload or GPU reset);
//! - `gap`: neither could be read; the interval carries no energy and is flagged.
//!
//! It also learns each GPU's static power as the lowest power seen while no compute
//! process ran (as Kepler does), unless the configuration fixes it.

use inferwatt_core::schema::EnergySource;
use inferwatt_core::units::mj_to_j;

/// What the sampler needs from one reading of one GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyReading {
    /// Wall-clock time of the reading, ns since the Unix epoch (timestamps).
    pub t_ns: i64,
    /// Monotonic time of the reading, ns (interval lengths).
    pub mono_ns: i64,
    /// Cumulative energy counter (mJ), `None` when unsupported or unreadable.
    pub counter_mj: Option<u64>,
    /// Power (W) from `nvmlDeviceGetPowerUsage`, `None` when unreadable. On Ampere and
    /// newer it is a 1-second average, on older GPUs instantaneous: which one is not
    /// reported, so it is integrated with the trapezoid rule.
    pub power_w: Option<f64>,
    /// The 1-second average power (field `NVML_FI_DEV_POWER_AVERAGE`), where the GPU
    /// reports it: the mean power over the second before the reading.
    pub power_avg_w: Option<f64>,
}

/// One GPU interval's energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalEnergy {
    /// Wall-clock start and end (end is the point's timestamp).
    pub start_ns: i64,
    pub end_ns: i64,
    /// Length on the monotonic clock, ns.
    pub dt_ns: i64,
    pub energy_j: f64,
    pub source: EnergySource,
    /// The counter went backwards in this interval.
    pub counter_reset: bool,
}

/// A wall-clock step at least this large (s) within one interval is flagged: NTP slews
/// at most 500 ppm (0.5 ms per second), so anything this size is a step.
pub const CLOCK_STEP_FLAG_S: f64 = 0.1;

/// The interval's length (ns): the wall-clock length, so that consecutive intervals
/// tile exactly (each starts where the previous ended), unless the wall clock stepped
/// by [`CLOCK_STEP_FLAG_S`] or more within it; then the monotonic length.
pub fn interval_length_ns(wall_ns: i64, mono_ns: i64) -> i64 {
    if ((wall_ns - mono_ns) as f64).abs() < CLOCK_STEP_FLAG_S * 1e9 {
        wall_ns
    } else {
        mono_ns
    }
}

impl IntervalEnergy {
    /// The interval's length (s): wall-clock, or monotonic across a clock step.
    pub fn interval_s(&self) -> f64 {
        interval_length_ns(self.end_ns - self.start_ns, self.dt_ns) as f64 / 1e9
    }

    /// How far the wall clock stepped during the interval (wall length − monotonic
    /// length, s), when at least [`CLOCK_STEP_FLAG_S`]; `None` otherwise.
    pub fn clock_step_s(&self) -> Option<f64> {
        let step = ((self.end_ns - self.start_ns) - self.dt_ns) as f64 / 1e9;
        (step.abs() >= CLOCK_STEP_FLAG_S).then_some(step)
    }
}

/// Per-GPU state between readings.
#[derive(Debug, Clone, Default)]
pub struct GpuSampler {
    last: Option<EnergyReading>,
    learned_idle_w: Option<f64>,
    /// Energy and seconds of the current run of consecutive intervals with no process.
    idle_run: (f64, f64),
}

/// The highest static power the agent accepts for one GPU, watts (configured or kept in
/// the state file); no GPU idles above it.
pub const MAX_STATIC_W: f64 = 5000.0;

/// The lowest mean power over runs of at least [`IDLE_RUN_S`] of consecutive intervals:
/// a floor on the static power that one short, quantised interval cannot drag down.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunMinPower {
    run: (f64, f64),
    best: Option<f64>,
}

impl RunMinPower {
    /// Adds an interval's energy and length.
    pub fn observe(&mut self, energy_j: f64, dt_s: f64) {
        if !(energy_j.is_finite() && energy_j >= 0.0 && dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        self.run.0 += energy_j;
        self.run.1 += dt_s;
        if self.run.1 >= IDLE_RUN_S {
            let p = self.run.0 / self.run.1;
            self.best = Some(self.best.map_or(p, |b| b.min(p)));
            self.run = (0.0, 0.0);
        }
    }

    /// The lowest run mean so far; before the first full run, the mean of what was seen.
    pub fn value(&self) -> Option<f64> {
        self.best
            .or((self.run.1 > 0.0).then(|| self.run.0 / self.run.1))
    }
}

/// Seconds of consecutive intervals with no compute process over which one static-power
/// measurement is averaged. A single short interval's mean power is off by up to one
/// counter step (NVML's counter advances in steps; 100 ms in the simulator) divided by
/// its length — ±20% at 0.5 s — and the lowest of many such values is biased low.
pub const IDLE_RUN_S: f64 = 10.0;

impl GpuSampler {
    pub fn new() -> Self {
        GpuSampler::default()
    }

    /// A sampler that resumes from a reading made before (e.g. by a previous run).
    pub fn resume(last: EnergyReading) -> Self {
        GpuSampler {
            last: Some(last),
            learned_idle_w: None,
            idle_run: (0.0, 0.0),
        }
    }

    /// The last reading taken.
    pub fn last(&self) -> Option<EnergyReading> {
        self.last
    }

    /// Takes a reading; returns the interval since the previous one (none for the first).
    pub fn step(&mut self, cur: EnergyReading) -> Option<IntervalEnergy> {
        let prev = self.last.replace(cur)?;
        // Monotonic order, not wall-clock order: a wall clock stepped back must not drop
        // the interval (its counter difference would be lost).
        if cur.mono_ns <= prev.mono_ns {
            return None;
        }
        Some(interval_between(prev, cur))
    }

    /// Adds an interval with no compute process (`idle`) to the current idle run, or ends
    /// the run (`!idle`). A run of [`IDLE_RUN_S`] or more is one measurement of the static
    /// power (its mean), which lowers the learned value if below it.
    pub fn observe_interval(&mut self, energy_j: f64, dt_s: f64, idle: bool) {
        if !(idle && energy_j.is_finite() && dt_s.is_finite() && dt_s > 0.0) {
            self.idle_run = (0.0, 0.0);
            return;
        }
        self.idle_run.0 += energy_j;
        self.idle_run.1 += dt_s;
        if self.idle_run.1 >= IDLE_RUN_S {
            let (e, t) = self.idle_run;
            self.observe_idle_power(e / t);
            self.idle_run = (0.0, 0.0);
        }
    }

    /// Lowers the learned static power if `power_w` was measured with no compute process
    /// (an idle run's mean, or a value kept from an earlier run).
    /// A value above [`MAX_STATIC_W`] (a damaged state file, say) is ignored.
    pub fn observe_idle_power(&mut self, power_w: f64) {
        if power_w.is_finite() && power_w > 0.0 && power_w <= MAX_STATIC_W {
            self.learned_idle_w = Some(self.learned_idle_w.map_or(power_w, |w| w.min(power_w)));
        }
    }

    /// Static power learned so far.
    pub fn learned_idle_w(&self) -> Option<f64> {
        self.learned_idle_w
    }
}

/// Longest interval for which a 1-second average power reading stands for the
/// interval's mean power.
pub const AVERAGE_WINDOW_MAX_S: f64 = 1.5;

/// Energy between two readings of one GPU.
pub fn interval_between(prev: EnergyReading, cur: EnergyReading) -> IntervalEnergy {
    let dt_ns = cur.mono_ns - prev.mono_ns;
    let dt_s = interval_length_ns(cur.t_ns - prev.t_ns, dt_ns) as f64 / 1e9;
    let mut out = IntervalEnergy {
        start_ns: prev.t_ns,
        end_ns: cur.t_ns,
        dt_ns,
        energy_j: 0.0,
        source: EnergySource::Gap,
        counter_reset: false,
    };
    if let (Some(a), Some(b)) = (prev.counter_mj, cur.counter_mj) {
        if b >= a {
            out.energy_j = mj_to_j(b - a);
            out.source = EnergySource::Counter;
            return out;
        }
        out.counter_reset = true;
    }
    // With an explicit 1-second average, the reading is the mean power over the last
    // second: for intervals up to about a second that is the interval's own mean
    // (right-endpoint rule), which the trapezoid of two averages would blur by half
    // an interval.
    if let Some(avg) = cur.power_avg_w {
        if dt_s <= AVERAGE_WINDOW_MAX_S {
            out.energy_j = avg * dt_s;
            out.source = EnergySource::Integrated;
            return out;
        }
    }
    match (prev.power_w, cur.power_w) {
        (Some(p0), Some(p1)) => {
            out.energy_j = trapezoid_j(p0, p1, dt_s);
            out.source = EnergySource::Integrated;
        }
        (None, Some(p)) | (Some(p), None) => {
            out.energy_j = p * dt_s;
            out.source = EnergySource::Integrated;
        }
        (None, None) => {}
    }
    out
}

/// Trapezoidal energy of a linear power ramp from `p0_w` to `p1_w` over `dt_s`.
pub fn trapezoid_j(p0_w: f64, p1_w: f64, dt_s: f64) -> f64 {
    0.5 * (p0_w + p1_w) * dt_s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t_s: f64, counter: Option<u64>, power: Option<f64>) -> EnergyReading {
        EnergyReading {
            t_ns: (t_s * 1e9) as i64,
            mono_ns: (t_s * 1e9) as i64,
            counter_mj: counter,
            power_w: power,
            power_avg_w: None,
        }
    }

    #[test]
    fn counter_path_differences_millijoules() {
        let mut s = GpuSampler::new();
        assert!(s.step(r(0.0, Some(1_000_000), Some(100.0))).is_none());
        let i = s
            .step(r(1.0, Some(1_250_500), Some(300.0)))
            .expect("interval");
        assert_eq!(i.source, EnergySource::Counter);
        assert!((i.energy_j - 250.5).abs() < 1e-9);
        assert_eq!(i.interval_s(), 1.0);
    }

    #[test]
    fn counter_reset_falls_back_to_integration() {
        let i = interval_between(
            r(0.0, Some(5_000), Some(100.0)),
            r(2.0, Some(10), Some(300.0)),
        );
        assert_eq!(i.source, EnergySource::Integrated);
        assert!(i.counter_reset);
        assert!((i.energy_j - 400.0).abs() < 1e-9);
    }

    #[test]
    fn no_counter_integrates_and_nothing_is_a_gap() {
        let i = interval_between(r(0.0, None, Some(100.0)), r(1.0, None, Some(200.0)));
        assert_eq!(i.source, EnergySource::Integrated);
        assert!((i.energy_j - 150.0).abs() < 1e-9);
        let g = interval_between(r(0.0, None, None), r(1.0, None, None));
        assert_eq!(g.source, EnergySource::Gap);
        assert_eq!(g.energy_j, 0.0);
    }

    #[test]
    fn one_second_average_is_the_mean_of_a_short_interval() {
        let prev = r(0.0, None, Some(100.0));
        let cur = EnergyReading {
            power_avg_w: Some(300.0),
            ..r(1.0, None, Some(280.0))
        };
        let i = interval_between(prev, cur);
        assert_eq!(i.source, EnergySource::Integrated);
        assert!((i.energy_j - 300.0).abs() < 1e-9);
        // Longer intervals fall back to the trapezoid of the power readings.
        let cur = EnergyReading {
            power_avg_w: Some(300.0),
            ..r(5.0, None, Some(300.0))
        };
        assert!((interval_between(prev, cur).energy_j - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn learns_the_lowest_idle_power() {
        let mut s = GpuSampler::new();
        s.observe_idle_power(90.0);
        s.observe_idle_power(70.0);
        s.observe_idle_power(80.0);
        s.observe_idle_power(f64::NAN);
        s.observe_idle_power(-5.0);
        assert_eq!(s.learned_idle_w(), Some(70.0));
        // An absurd value (a damaged state file) is not taken.
        let mut s = GpuSampler::new();
        s.observe_idle_power(1e9);
        assert_eq!(s.learned_idle_w(), None);
        // Short idle intervals are averaged over a run: one 0.4 s-worth counter step in a
        // 0.5 s interval (56 W) does not become the static power.
        let mut s = GpuSampler::new();
        s.observe_interval(28.0, 0.5, true);
        assert_eq!(s.learned_idle_w(), None);
        // The lowest power seen is a run mean too: a zero-energy interval does not make it 0.
        let mut m = RunMinPower::default();
        m.observe(0.0, 0.5);
        m.observe(100.0, 0.5);
        assert_eq!(m.value(), Some(100.0));
        for _ in 0..20 {
            m.observe(40.0, 0.5);
        }
        assert!(
            (m.value().expect("a run") - 82.0).abs() < 1e-9,
            "(0 + 100 + 18·40) J over 10 s"
        );
        for _ in 0..19 {
            s.observe_interval(35.0 + 7.0 / 19.0, 0.5, true);
        }
        assert!((s.learned_idle_w().expect("a 10 s run") - 70.0).abs() < 1e-9);
        // A busy interval ends the run.
        let mut s = GpuSampler::new();
        for i in 0..30 {
            s.observe_interval(35.0, 0.5, i % 10 != 9);
        }
        assert_eq!(s.learned_idle_w(), None);
    }

    #[test]
    fn wall_clock_steps_lose_no_energy_and_are_flagged() {
        // 1-s intervals on the monotonic clock; the wall clock steps back 2 s, then
        // forward 2 s. Every counter difference is booked, each over 1 s.
        let at = |wall_s: f64, mono_s: f64, mj: u64| EnergyReading {
            t_ns: (wall_s * 1e9) as i64,
            mono_ns: (mono_s * 1e9) as i64,
            ..r(0.0, Some(mj), None)
        };
        let mut s = GpuSampler::new();
        s.step(at(100.0, 0.0, 0));
        let back = s
            .step(at(99.0, 1.0, 300_000))
            .expect("a step back keeps the interval");
        assert_eq!(back.energy_j, 300.0);
        assert_eq!(back.interval_s(), 1.0);
        assert_eq!(back.clock_step_s(), Some(-2.0));
        let fwd = s.step(at(102.0, 2.0, 600_000)).expect("interval");
        assert_eq!(fwd.energy_j, 300.0);
        assert_eq!(fwd.interval_s(), 1.0, "a step forward does not inflate Δt");
        assert_eq!(fwd.clock_step_s(), Some(2.0));
        let calm = s.step(at(103.0, 3.0, 900_000)).expect("interval");
        assert_eq!(calm.clock_step_s(), None);
    }

    #[test]
    fn no_monotonic_progress_gives_no_interval() {
        let mut s = GpuSampler::new();
        s.step(r(5.0, Some(1), None));
        assert!(s.step(r(5.0, Some(2), None)).is_none());
    }
}
