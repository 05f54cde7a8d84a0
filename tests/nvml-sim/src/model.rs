//! The physical model: scenario + scenario time → utilisation, power, energy, ground truth.
//!
//! Every quantity is piecewise constant in time (phases, process windows and burst edges
//! are the only breakpoints), so integrals are computed exactly, segment by segment, with
//! no numeric step. The FFI layer and the Rust tests both read from here, so what the
//! driver reports and what the tests call the truth come from one definition.

use serde::Serialize;

use crate::scenario::{Gpu, Scenario, SimError};

/// Power-model share of memory utilisation: memUtil = `MEM_UTIL_RATIO` · smUtil.
pub const MEM_UTIL_RATIO: f64 = 0.5;
/// The energy counter changes value every this many milliseconds.
pub const COUNTER_STEP_MS: i64 = 100;
/// One process-utilisation sample per process per this many milliseconds.
pub const SAMPLE_STEP_MS: i64 = 100;
/// How far back the process-utilisation buffer reaches, milliseconds.
pub const SAMPLE_BUFFER_MS: i64 = 10_000;

/// True energy over a window of scenario time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    /// Window start, scenario seconds.
    pub from_s: f64,
    /// Window end, scenario seconds.
    pub to_s: f64,
    /// One entry per GPU, in scenario order.
    pub gpus: Vec<GpuTruth>,
}

/// True energy of one GPU over the window: `Σ processes.active_j + idle_j = energy_j`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuTruth {
    /// The GPU's uuid.
    pub uuid: String,
    /// ∫ P dt, joules.
    pub energy_j: f64,
    /// idle_w · window length, joules.
    pub idle_j: f64,
    /// Each declared process's share of the dynamic energy.
    pub processes: Vec<ProcTruth>,
}

/// One process's true active energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcTruth {
    /// Process id.
    pub pid: u32,
    /// ∫ its term of the power sum dt, joules.
    pub active_j: f64,
}

/// One `nvmlProcessUtilizationSample_t` worth of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilSample {
    /// Process id.
    pub pid: u32,
    /// End of the sampled 100 ms, Unix microseconds.
    pub timestamp_us: u64,
    /// Mean SM utilisation over the 100 ms, percent.
    pub sm_util: u32,
    /// `MEM_UTIL_RATIO` · the unrounded SM mean, percent.
    pub mem_util: u32,
}

/// Loads of every declared process at one instant (indices follow `Gpu::processes`).
struct Loads {
    /// u_p, percent.
    util: Vec<f64>,
    /// u_p/100 · weight_p.
    load: Vec<f64>,
}

impl Loads {
    fn new(n: usize) -> Loads {
        Loads {
            util: vec![0.0; n],
            load: vec![0.0; n],
        }
    }
    /// Σ load, and the clipping factor applied to each term.
    fn clip(&self) -> (f64, f64) {
        let s: f64 = self.load.iter().sum();
        if s > 1.0 {
            (1.0, 1.0 / s)
        } else {
            (s, 1.0)
        }
    }
}

impl Gpu {
    fn dynamic_w(&self) -> f64 {
        self.max_w - self.idle_w
    }

    /// Fills `out` with every process's utilisation and load at scenario time `t`.
    fn loads_at(&self, t: f64, out: &mut Loads) {
        out.util.iter_mut().for_each(|x| *x = 0.0);
        out.load.iter_mut().for_each(|x| *x = 0.0);
        let idx = self.phases.partition_point(|ph| ph.start_s <= t);
        let Some(phase) = idx.checked_sub(1).map(|i| &self.phases[i]) else {
            return;
        };
        if t >= phase.end_s {
            return;
        }
        for pp in &phase.procs {
            let Some(i) = self.processes.iter().position(|p| p.pid == pp.pid) else {
                continue;
            };
            if !self.processes[i].running_at(t) {
                continue;
            }
            let u = match pp.burst {
                None => pp.sm_util,
                Some(b) => {
                    let pos = ((t - phase.start_s) / b.period_s).fract();
                    if pos < b.duty {
                        (pp.sm_util / b.duty).min(100.0)
                    } else {
                        0.0
                    }
                }
            };
            out.util[i] = u;
            out.load[i] = u / 100.0 * pp.weight;
        }
    }

    /// Sorted times in [a, b] where any load may change, including a and b.
    fn breakpoints(&self, a: f64, b: f64) -> Vec<f64> {
        let mut pts = vec![a, b];
        let mut push = |t: f64| {
            if t > a && t < b {
                pts.push(t);
            }
        };
        for p in &self.processes {
            push(p.start_s);
            if let Some(e) = p.end_s {
                push(e);
            }
        }
        for ph in &self.phases {
            if ph.end_s <= a || ph.start_s >= b {
                continue;
            }
            push(ph.start_s);
            push(ph.end_s);
            let lo = a.max(ph.start_s);
            let hi = b.min(ph.end_s);
            for pp in &ph.procs {
                let Some(burst) = pp.burst else { continue };
                let first = ((lo - ph.start_s) / burst.period_s).floor() as i64;
                let last = ((hi - ph.start_s) / burst.period_s).ceil() as i64;
                for k in first..=last {
                    let on = ph.start_s + k as f64 * burst.period_s;
                    for t in [on, on + burst.duty * burst.period_s] {
                        if t < ph.end_s {
                            push(t);
                        }
                    }
                }
            }
        }
        pts.sort_by(f64::total_cmp);
        pts.dedup();
        pts
    }

    /// Calls `f(dt, loads)` for each constant piece of [a, b].
    fn for_each_segment(&self, a: f64, b: f64, mut f: impl FnMut(f64, &Loads)) {
        if b <= a {
            return;
        }
        let mut loads = Loads::new(self.processes.len());
        for w in self.breakpoints(a, b).windows(2) {
            let (t0, t1) = (w[0], w[1]);
            if t1 <= t0 {
                continue;
            }
            self.loads_at(0.5 * (t0 + t1), &mut loads);
            f(t1 - t0, &loads);
        }
    }

    /// Utilisation of process `pid` at scenario time `t`, percent (0 if not running).
    pub fn util_at(&self, pid: u32, t: f64) -> f64 {
        let mut loads = Loads::new(self.processes.len());
        self.loads_at(t, &mut loads);
        self.processes
            .iter()
            .position(|p| p.pid == pid)
            .map_or(0.0, |i| loads.util[i])
    }

    /// Instantaneous power at scenario time `t`, watts.
    pub fn power_w(&self, t: f64) -> f64 {
        let mut loads = Loads::new(self.processes.len());
        self.loads_at(t, &mut loads);
        self.idle_w + self.dynamic_w() * loads.clip().0
    }

    /// ∫ P dt over [a, b] in joules (0 if b <= a).
    pub fn energy_j(&self, a: f64, b: f64) -> f64 {
        let mut e = 0.0;
        let dynamic = self.dynamic_w();
        self.for_each_segment(a, b, |dt, l| e += (self.idle_w + dynamic * l.clip().0) * dt);
        e
    }

    /// Mean power over [t − 1 s, t], watts.
    pub fn average_1s_power_w(&self, t: f64) -> f64 {
        self.energy_j(t - 1.0, t)
    }

    /// Mean of min(100, Σ u_p) over [t − 1 s, t], percent.
    pub fn gpu_util_1s_pct(&self, t: f64) -> f64 {
        let mut acc = 0.0;
        self.for_each_segment(t - 1.0, t, |dt, l| {
            acc += l.util.iter().sum::<f64>().min(100.0) * dt
        });
        acc
    }

    /// Mean SM utilisation of the whole GPU over [a, b], percent (GPM on a whole GPU).
    pub fn gpu_sm_util(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let mut acc = 0.0;
        self.for_each_segment(a, b, |dt, l| {
            acc += l.util.iter().sum::<f64>().min(100.0) * dt
        });
        acc / (b - a)
    }

    /// Mean utilisation of process `pid` over [a, b], percent.
    pub fn mean_util(&self, pid: u32, a: f64, b: f64) -> f64 {
        let Some(i) = self.processes.iter().position(|p| p.pid == pid) else {
            return 0.0;
        };
        if b <= a {
            return 0.0;
        }
        let mut acc = 0.0;
        self.for_each_segment(a, b, |dt, l| acc += l.util[i] * dt);
        acc / (b - a)
    }

    /// GPM's SM utilisation of MIG GPU instance `gi` over [a, b], percent of the
    /// instance's SMs: its processes' utilisation (percent of the whole GPU) × 7 / the
    /// instance's compute slices, at most 100. 0 outside MIG or for an unknown instance.
    pub fn instance_sm_util(&self, gi: u32, a: f64, b: f64) -> f64 {
        let Some(slices) = self
            .mig
            .as_ref()
            .and_then(|m| m.instances.iter().find(|i| i.gi_id == gi))
            .map(|i| f64::from(i.slices.max(1)))
        else {
            return 0.0;
        };
        let whole: f64 = self
            .processes
            .iter()
            .filter(|p| p.mig_gi == Some(gi))
            .map(|p| self.mean_util(p.pid, a, b))
            .sum();
        (whole * 7.0 / slices).min(100.0)
    }

    /// The exact energy split over [a, b].
    pub fn truth(&self, a: f64, b: f64) -> GpuTruth {
        let dynamic = self.dynamic_w();
        let mut energy = 0.0;
        let mut active = vec![0.0; self.processes.len()];
        self.for_each_segment(a, b, |dt, l| {
            let (sum, factor) = l.clip();
            energy += (self.idle_w + dynamic * sum) * dt;
            for (acc, load) in active.iter_mut().zip(&l.load) {
                *acc += dynamic * load * factor * dt;
            }
        });
        GpuTruth {
            uuid: self.uuid.clone(),
            energy_j: energy,
            idle_j: self.idle_w * (b - a).max(0.0),
            processes: self
                .processes
                .iter()
                .zip(active)
                .map(|(p, active_j)| ProcTruth {
                    pid: p.pid,
                    active_j,
                })
                .collect(),
        }
    }

    /// The energy counter at scenario time `t_ms` (milliseconds), in millijoules.
    ///
    /// It holds the value of the last 100-ms boundary: `initial_counter_mj + ∫₀^q P`, or
    /// `∫_r^q P` after the last reset r ≤ q, where q = ⌊t/100 ms⌋·100 ms.
    pub fn counter_mj(&self, t_ms: i64) -> u64 {
        let q = (t_ms.div_euclid(COUNTER_STEP_MS) * COUNTER_STEP_MS) as f64 / 1000.0;
        let last_reset = self
            .counter_resets_s
            .iter()
            .copied()
            .filter(|&r| r <= q)
            .fold(None, |_, r| Some(r));
        let (base_mj, from) = match last_reset {
            Some(r) => (0, r),
            None => (self.initial_counter_mj, 0.0),
        };
        let joules = self.energy_j(from, q);
        base_mj.saturating_add((joules * 1000.0).floor() as u64)
    }

    /// Whether the scenario has process `pid` running at any time in [a, b).
    fn runs_during(&self, pid: u32, a: f64, b: f64) -> bool {
        self.processes
            .iter()
            .any(|p| p.pid == pid && p.start_s < b && p.end_s.is_none_or(|e| e > a))
    }

    /// Process-utilisation samples newer than `last_seen_us`, at scenario time `t_ms`.
    ///
    /// One sample per process per completed 100-ms bucket of the last 10 s, stamped at the
    /// bucket's end (`epoch_unix_ms` + end, in Unix µs). `listed(pid)` filters processes
    /// (the FFI passes its liveness check).
    pub fn util_samples(
        &self,
        epoch_unix_ms: i64,
        t_ms: i64,
        last_seen_us: u64,
        listed: impl Fn(u32) -> bool,
    ) -> Vec<UtilSample> {
        let mut out = Vec::new();
        let newest = t_ms.div_euclid(SAMPLE_STEP_MS);
        let oldest = ((t_ms - SAMPLE_BUFFER_MS).div_euclid(SAMPLE_STEP_MS) + 1).max(1);
        for end_k in oldest..=newest {
            let end_ms = end_k * SAMPLE_STEP_MS;
            let Ok(ts) = u64::try_from((epoch_unix_ms + end_ms) * 1000) else {
                continue;
            };
            if ts <= last_seen_us {
                continue;
            }
            let b = end_ms as f64 / 1000.0;
            let a = (end_ms - SAMPLE_STEP_MS) as f64 / 1000.0;
            for p in &self.processes {
                if !self.runs_during(p.pid, a, b) || !listed(p.pid) {
                    continue;
                }
                let mean = self.mean_util(p.pid, a, b);
                out.push(UtilSample {
                    pid: p.pid,
                    timestamp_us: ts,
                    sm_util: mean.round() as u32,
                    mem_util: (mean * MEM_UTIL_RATIO).round() as u32,
                });
            }
        }
        out
    }
}

impl Scenario {
    /// True energy over [from_s, to_s] in scenario seconds.
    pub fn truth(&self, from_s: f64, to_s: f64) -> Truth {
        Truth {
            from_s,
            to_s,
            gpus: self.gpus.iter().map(|g| g.truth(from_s, to_s)).collect(),
        }
    }

    /// True energy between two Unix times (ms); needs `epoch_unix_ms` in the scenario.
    pub fn truth_unix_ms(&self, from_unix_ms: i64, to_unix_ms: i64) -> Result<Truth, SimError> {
        let epoch = self.epoch_unix_ms.ok_or_else(|| SimError::Invalid {
            origin: "scenario".to_owned(),
            key: "epoch_unix_ms".to_owned(),
            value: "null".to_owned(),
            fix: "set epoch_unix_ms in the scenario to relate Unix times to scenario time"
                .to_owned(),
        })?;
        Ok(self.truth(
            (from_unix_ms - epoch) as f64 / 1000.0,
            (to_unix_ms - epoch) as f64 / 1000.0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One GPU (idle 70 W, max 700 W) with the given processes and phases JSON.
    fn gpu(extra: &str) -> Gpu {
        let json = format!(
            r#"{{"check_alive": false, "gpus": [{{"uuid": "GPU-t", "name": "NVIDIA H100 80GB HBM3",
               "idle_w": 70.0, "max_w": 700.0, "memory_total_bytes": 1000, {extra}}}]}}"#
        );
        let mut s = Scenario::from_json(&json).expect("test scenario parses");
        s.gpus.remove(0)
    }

    fn steady() -> Gpu {
        gpu(r#""initial_counter_mj": 5000,
               "processes": [{"pid": 1, "used_memory_bytes": 10}],
               "phases": [{"start_s": 0.0, "end_s": 10.0, "procs": [{"pid": 1, "sm_util": 50.0}]}]"#)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn steady_load_integrates_exactly_and_conserves() {
        let g = steady();
        assert_eq!(g.power_w(5.0), 70.0 + 630.0 * 0.5);
        assert_eq!(g.power_w(10.0), 70.0, "phase end is exclusive");
        let t = g.truth(-2.0, 12.0);
        assert!(close(t.energy_j, 70.0 * 14.0 + 315.0 * 10.0, 1e-9), "{t:?}");
        assert!(close(t.idle_j, 70.0 * 14.0, 1e-9));
        assert!(close(t.processes[0].active_j, 3150.0, 1e-9));
        let sum: f64 = t.processes.iter().map(|p| p.active_j).sum::<f64>() + t.idle_j;
        assert!(close(sum, t.energy_j, 1e-9));
    }

    #[test]
    fn overload_is_clipped_and_shared_by_weight() {
        let g = gpu(r#""processes": [{"pid": 1}, {"pid": 2}],
               "phases": [{"start_s": 0.0, "end_s": 10.0, "procs": [
                  {"pid": 1, "sm_util": 80.0, "weight": 1.0},
                  {"pid": 2, "sm_util": 80.0, "weight": 0.5}]}]"#);
        assert_eq!(g.power_w(1.0), 700.0);
        let t = g.truth(0.0, 1.0);
        // loads 0.8 and 0.4, sum 1.2 → each scaled by 1/1.2
        assert!(
            close(t.processes[0].active_j, 630.0 * 0.8 / 1.2, 1e-9),
            "{t:?}"
        );
        assert!(
            close(t.processes[1].active_j, 630.0 * 0.4 / 1.2, 1e-9),
            "{t:?}"
        );
        assert!(close(t.energy_j, 700.0, 1e-9));
    }

    #[test]
    fn bursts_keep_the_mean_and_cap_at_100() {
        let g = gpu(r#""processes": [{"pid": 1}, {"pid": 2}],
               "phases": [{"start_s": 1.0, "end_s": 9.0, "procs": [
                  {"pid": 1, "sm_util": 20.0, "burst": {"period_s": 0.4, "duty": 0.25}},
                  {"pid": 2, "sm_util": 50.0, "weight": 0.0, "burst": {"period_s": 0.4, "duty": 0.25}}]}]"#);
        assert_eq!(g.util_at(1, 1.05), 80.0);
        assert_eq!(g.util_at(1, 1.2), 0.0);
        assert_eq!(
            g.util_at(1, 1.45),
            80.0,
            "second period, counted from the phase start"
        );
        assert_eq!(g.util_at(2, 1.05), 100.0, "50/0.25 is capped at 100");
        assert!(close(g.mean_util(1, 1.0, 5.0), 20.0, 1e-9));
        assert!(close(g.mean_util(2, 1.0, 5.0), 25.0, 1e-9));
        assert!(close(
            g.energy_j(1.0, 5.0),
            70.0 * 4.0 + 630.0 * 0.2 * 4.0,
            1e-9
        ));
        assert_eq!(g.power_w(1.05), 70.0 + 630.0 * 0.8);
    }

    #[test]
    fn exact_integration_matches_a_fine_riemann_sum() {
        let g = gpu(
            r#""processes": [{"pid": 1, "start_s": 0.37}, {"pid": 2, "end_s": 7.77}, {"pid": 3}],
               "phases": [
                 {"start_s": 0.5, "end_s": 4.3, "procs": [
                    {"pid": 1, "sm_util": 33.0, "weight": 0.9, "burst": {"period_s": 0.137, "duty": 0.3}},
                    {"pid": 2, "sm_util": 61.0, "weight": 1.3, "burst": {"period_s": 0.05, "duty": 0.71}},
                    {"pid": 3, "sm_util": 12.5}]},
                 {"start_s": 4.3, "end_s": 9.1, "procs": [
                    {"pid": 2, "sm_util": 90.0, "weight": 0.7, "burst": {"period_s": 1.3, "duty": 0.5}},
                    {"pid": 3, "sm_util": 40.0, "weight": 0.4}]}]"#,
        );
        let (a, b) = (0.123, 9.876);
        let exact = g.energy_j(a, b);
        let dt = 1e-5;
        let n = ((b - a) / dt).round() as usize;
        let riemann: f64 = (0..n)
            .map(|i| g.power_w(a + (i as f64 + 0.5) * dt) * dt)
            .sum();
        assert!(
            ((exact - riemann) / exact).abs() < 1e-4,
            "exact {exact} vs riemann {riemann}"
        );
        let t = g.truth(a, b);
        let sum: f64 = t.processes.iter().map(|p| p.active_j).sum::<f64>() + t.idle_j;
        assert!(close(sum, t.energy_j, 1e-6 * t.energy_j));
        assert!(t.processes.iter().all(|p| p.active_j > 0.0), "{t:?}");
    }

    #[test]
    fn counter_is_quantised_to_100_ms() {
        let g = steady();
        let at_1s = 5000 + 385_000;
        assert_eq!(g.counter_mj(1000), at_1s);
        assert_eq!(g.counter_mj(1099), at_1s);
        assert_eq!(g.counter_mj(1100), at_1s + 38_500);
        assert_eq!(g.counter_mj(0), 5000);
        assert_eq!(
            g.counter_mj(-5000),
            5000,
            "before t=0 the counter holds its initial value"
        );
    }

    #[test]
    fn counter_restarts_from_zero_at_each_reset() {
        let g = gpu(
            r#""initial_counter_mj": 123456789, "counter_resets_s": [12.0, 20.0],
               "processes": [{"pid": 1}],
               "phases": [{"start_s": 0.0, "end_s": 10.0, "procs": [{"pid": 1, "sm_util": 50.0}]}]"#,
        );
        assert_eq!(g.counter_mj(11_950), 123_456_789 + 3_850_000 + 70 * 1900);
        assert_eq!(g.counter_mj(12_050), 0);
        assert_eq!(g.counter_mj(13_000), 70_000);
        assert_eq!(g.counter_mj(20_099), 0);
        assert_eq!(g.counter_mj(25_000), 350_000);
    }

    #[test]
    fn average_power_lags_instant_power() {
        let g = steady();
        assert_eq!(g.power_w(10.5), 70.0);
        assert!(close(
            g.average_1s_power_w(10.5),
            0.5 * 385.0 + 0.5 * 70.0,
            1e-9
        ));
        assert!(close(g.average_1s_power_w(5.0), 385.0, 1e-9));
        assert!(close(g.gpu_util_1s_pct(10.25), 0.75 * 50.0, 1e-9));
    }

    #[test]
    fn process_counts_only_inside_its_window() {
        let g = gpu(r#""processes": [{"pid": 1, "start_s": 2.0, "end_s": 5.0}],
               "phases": [{"start_s": 0.0, "end_s": 10.0, "procs": [{"pid": 1, "sm_util": 50.0}]}]"#);
        assert_eq!(g.util_at(1, 1.9), 0.0);
        assert_eq!(g.util_at(1, 2.0), 50.0);
        assert_eq!(g.util_at(1, 5.0), 0.0);
        let t = g.truth(0.0, 10.0);
        assert!(close(t.energy_j, 700.0 + 315.0 * 3.0, 1e-9));
        assert!(close(t.processes[0].active_j, 945.0, 1e-9));
    }

    #[test]
    fn util_samples_follow_buckets_and_last_seen() {
        let g = gpu(r#""processes": [{"pid": 7, "start_s": 0.25}],
               "phases": [{"start_s": 0.0, "end_s": 100.0, "procs": [
                  {"pid": 7, "sm_util": 20.0, "burst": {"period_s": 0.4, "duty": 0.25}}]}]"#);
        let epoch = 1_000_000;
        let s = g.util_samples(epoch, 1_050, 0, |_| true);
        // buckets ending at 0.3 .. 1.0 s (the process starts at 0.25 s)
        assert_eq!(s.len(), 8, "{s:?}");
        assert_eq!(s[0].timestamp_us, (epoch as u64 + 300) * 1000);
        assert_eq!(s[0].sm_util, 0, "0.2..0.3 s is off");
        assert_eq!(s[2].sm_util, 80, "0.4..0.5 s is on");
        assert_eq!(s[2].mem_util, 40);
        let later = g.util_samples(epoch, 1_050, s[5].timestamp_us, |_| true);
        assert_eq!(later, s[6..].to_vec());
        assert!(g.util_samples(epoch, 1_050, 0, |pid| pid != 7).is_empty());
        let long = g.util_samples(epoch, 60_000, 0, |_| true);
        assert_eq!(long.len(), 100, "10 s buffer");
        assert_eq!(long[99].timestamp_us, (epoch as u64 + 60_000) * 1000);
    }

    #[test]
    fn truth_by_unix_time_needs_an_epoch() {
        let s = Scenario::from_json(r#"{"gpus": []}"#).expect("parses");
        assert!(s.truth_unix_ms(0, 1).is_err());
        let s = Scenario::from_json(
            r#"{"epoch_unix_ms": 1000, "gpus": [{"uuid": "GPU-a", "name": "x", "idle_w": 50,
               "max_w": 100, "memory_total_bytes": 1}]}"#,
        )
        .expect("parses");
        let t = s.truth_unix_ms(3000, 5000).expect("epoch set");
        assert_eq!((t.from_s, t.to_s), (2.0, 4.0));
        assert!(close(t.gpus[0].energy_j, 100.0, 1e-9));
    }
}
