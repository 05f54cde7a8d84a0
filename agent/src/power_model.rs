//! The learned power model of one GPU (METHODOLOGY §2, method `power_model`).
//!
//! Time-slicing GPUs draw `P = P_static + Σ_m β_m · u_m`, where `u_m` is model `m`'s SM
//! utilisation over the interval (percent, summed over its processes) and `β_m` its power
//! per percent of activity, which differs between models (a tensor-core-bound prefill and a
//! memory-bound decode at the same utilisation draw very different power). Each interval's
//! measured mean power and the models' utilisations are one row of a sliding window; the
//! `β` (and `P_static` when nobody configured it) are the non-negative least-squares fit
//! of that window, weighted by interval length. The split then gives each process
//! `β_m · u_p` of the interval's active energy, rescaled so the shares add up to the
//! measured active energy exactly (see `attribution`).
//!
//! The window identifies the weights only if the mix varied: too few intervals, a model
//! seen in too few of them, or columns that are (nearly) collinear — a constant mix, or
//! two models whose utilisations rise and fall together — give a [`Fallback`] with its
//! reason, and the interval is split by SM share as before. Pure: plain data in, plain
//! data out; no clock, no hardware.

// Dense linear algebra on k×k matrices reads best with index loops.
#![allow(clippy::needless_range_loop)]

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::attribution::ModelKey;

/// Smallest eigenvalue of the window's column-normalised Gram matrix below which the
/// weights count as not identified. 1 means orthogonal columns, 0 collinear ones; a
/// constant mix gives about 1e-4 from rounding noise alone, two independently varying
/// loads about 0.05 to 0.2.
pub const MIN_CONDITIONING: f64 = 0.01;

/// Settings of the estimator (`[sampling.power_model]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerModelConfig {
    /// Length of the sliding window, seconds of measured intervals.
    pub window_s: f64,
    /// Intervals the window must hold before the weights are used, and intervals in
    /// which each model must have been active.
    pub min_intervals: usize,
}

impl Default for PowerModelConfig {
    fn default() -> Self {
        PowerModelConfig {
            window_s: 120.0,
            min_intervals: 20,
        }
    }
}

/// One interval of one GPU, as the estimator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Interval length, seconds (> 0).
    pub dt_s: f64,
    /// Mean power over the interval, watts (ΔE / Δt).
    pub power_w: f64,
    /// SM utilisation per model, percent, summed over the model's processes.
    pub util: BTreeMap<ModelKey, f64>,
}

/// Why the window did not give usable weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// Fewer intervals in the window than `min_intervals`.
    TooFewIntervals { have: usize, need: usize },
    /// A model active now was active in too few of the window's intervals.
    ModelSeldomSeen { model: String, intervals: usize },
    /// The columns are (nearly) collinear: a constant mix, or loads that move together.
    NotIdentified { conditioning: f64 },
    /// Fewer than two models are active in this interval: there is nothing to weigh.
    SingleModel,
    /// The fit gives every model active now zero power.
    ZeroWeights,
}

impl Fallback {
    /// A short, stable reason (metric label, `check`).
    pub fn reason(&self) -> &'static str {
        match self {
            Fallback::TooFewIntervals { .. } => "too_few_intervals",
            Fallback::ModelSeldomSeen { .. } => "model_seldom_seen",
            Fallback::NotIdentified { .. } => "not_identified",
            Fallback::SingleModel => "single_model",
            Fallback::ZeroWeights => "zero_weights",
        }
    }

    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            Fallback::TooFewIntervals { have, need } => {
                format!("collecting: {have} of {need} intervals in the window")
            }
            Fallback::ModelSeldomSeen { model, intervals } => {
                format!("model '{model}' active in only {intervals} intervals of the window")
            }
            Fallback::NotIdentified { conditioning } => format!(
                "the mix did not vary enough to tell the models apart (conditioning {conditioning:.4} < {MIN_CONDITIONING}): a constant mix, or loads that move together"
            ),
            Fallback::SingleModel => "fewer than two models active: nothing to weigh".to_string(),
            Fallback::ZeroWeights => "the fit gives the active models zero power".to_string(),
        }
    }
}

/// The fit of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Static power used, watts.
    pub static_w: f64,
    /// True when `static_w` is the fit's intercept (nobody configured or measured it).
    pub static_estimated: bool,
    /// Power per percent of SM utilisation, watts, per model in the window.
    pub watts_per_pct: BTreeMap<ModelKey, f64>,
    /// Intervals in the window.
    pub intervals: usize,
    /// Seconds the window covers.
    pub window_s: f64,
    /// Smallest eigenvalue of the column-normalised Gram matrix (1: orthogonal).
    pub conditioning: f64,
    /// Root-mean-square residual of the fit, watts (interval-length weighted).
    pub rms_residual_w: f64,
}

/// Time constant of the long-memory statistics from which an unconfigured static power
/// is estimated, seconds. Static power is the GPU's own (it drifts with temperature, not
/// with the mix), so it is fitted over hours, not over the weights' window: its standard
/// error falls with the square root of the time seen.
pub const STATIC_MEMORY_S: f64 = 6.0 * 3600.0;

/// Column of a fit: `None` is the intercept, `Some(id)` a model (interned per GPU).
type Col = Option<u32>;

/// A row as the window keeps it: models by interned id, sorted (a few bytes per model
/// instead of two strings and a tree node: 1,200 rows × 8 GPUs at 10 Hz).
#[derive(Debug, Clone, PartialEq)]
struct Packed {
    dt_s: f64,
    power_w: f64,
    util: Vec<(u32, f64)>,
}

/// Interval-length-weighted normal equations over the columns [intercept, models…]:
/// Σ w·dt·x·xᵀ and Σ w·dt·x·y.
#[derive(Debug, Clone, Default)]
struct Normal {
    g: BTreeMap<(Col, Col), f64>,
    b: BTreeMap<Col, f64>,
}

impl Normal {
    /// Adds row `r` with weight `w` (−1 takes it back out).
    fn add(&mut self, r: &Packed, w: f64) {
        let mut x: Vec<(Col, f64)> = vec![(None, 1.0)];
        x.extend(r.util.iter().map(|(k, u)| (Some(*k), *u)));
        for (ci, xi) in &x {
            *self.b.entry(*ci).or_default() += w * r.dt_s * xi * r.power_w;
            for (cj, xj) in &x {
                *self.g.entry((*ci, *cj)).or_default() += w * r.dt_s * xi * xj;
            }
        }
    }

    fn scale(&mut self, keep: f64) {
        self.g.values_mut().for_each(|v| *v *= keep);
        self.b.values_mut().for_each(|v| *v *= keep);
    }

    /// Removes the columns in `gone` from the equations.
    fn drop_cols(&mut self, gone: &[Col]) {
        if !gone.is_empty() {
            self.b.retain(|c, _| !gone.contains(c));
            self.g
                .retain(|(a, b), _| !gone.contains(a) && !gone.contains(b));
        }
    }

    fn get(&self, a: &Col, b: &Col) -> f64 {
        self.g.get(&(*a, *b)).copied().unwrap_or(0.0)
    }

    /// The Gram matrix over `cols`.
    fn matrix(&self, cols: &[Col]) -> Vec<Vec<f64>> {
        cols.iter()
            .map(|a| cols.iter().map(|c| self.get(a, c)).collect())
            .collect()
    }
}

/// Exponentially forgotten normal equations over every row seen.
#[derive(Debug, Clone, Default)]
struct LongStats {
    eq: Normal,
    rows: f64,
}

impl LongStats {
    fn add(&mut self, r: &Packed) {
        let keep = (-r.dt_s / STATIC_MEMORY_S).exp();
        self.eq.scale(keep);
        self.rows = self.rows * keep + 1.0;
        self.eq.add(r, 1.0);
        // Forget models whose column has decayed to nothing.
        let floor = 1e-12 * self.eq.get(&None, &None);
        let gone: Vec<Col> = self
            .eq
            .b
            .keys()
            .filter(|c| c.is_some() && self.eq.get(c, c) <= floor)
            .copied()
            .collect();
        self.eq.drop_cols(&gone);
    }

    /// The intercept of the long-memory fit, when the statistics identify it.
    fn static_w(&self, min_rows: usize) -> Option<f64> {
        if self.rows < min_rows as f64 {
            return None;
        }
        let cols: Vec<Col> = self.eq.b.keys().copied().collect();
        let g = self.eq.matrix(&cols);
        let b: Vec<f64> = cols.iter().map(|c| self.eq.b[c]).collect();
        let (coef, conditioning) = scaled_nnls(&g, &b);
        (!cols.is_empty() && conditioning >= MIN_CONDITIONING && coef[0].is_finite())
            .then(|| coef[0])
    }
}

/// NNLS on column-scaled normal equations; returns the coefficients in the original
/// scale and the conditioning of the scaled Gram matrix (zero columns left out).
fn scaled_nnls(g: &[Vec<f64>], b: &[f64]) -> (Vec<f64>, f64) {
    let k = b.len();
    let scale: Vec<f64> = (0..k)
        .map(|i| {
            if g[i][i] > 0.0 {
                1.0 / g[i][i].sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let gs: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..k).map(|j| g[i][j] * scale[i] * scale[j]).collect())
        .collect();
    let bs: Vec<f64> = (0..k).map(|i| b[i] * scale[i]).collect();
    let nonzero: Vec<usize> = (0..k).filter(|&i| g[i][i] > 0.0).collect();
    let sub: Vec<Vec<f64>> = nonzero
        .iter()
        .map(|&i| nonzero.iter().map(|&j| gs[i][j]).collect())
        .collect();
    let conditioning = min_eigenvalue(&sub).max(0.0);
    let coef = nnls_normal(&gs, &bs)
        .iter()
        .zip(&scale)
        .map(|(c, s)| c * s)
        .collect();
    (coef, conditioning)
}

/// The estimator of one GPU: its window, and the long-memory statistics of its static
/// power.
#[derive(Debug, Clone, Default)]
pub struct PowerModel {
    cfg: PowerModelConfig,
    rows: VecDeque<Packed>,
    window_s: f64,
    /// Interned models: key → id, and id → key.
    ids: BTreeMap<ModelKey, u32>,
    names: Vec<ModelKey>,
    /// The window's normal equations, kept as rows come and go (O(k²) per interval,
    /// whatever the window's length), rebuilt from the rows every
    /// [`REBUILD_EVERY`] evictions so that subtraction cannot drift.
    sums: WindowSums,
    evictions: usize,
    long: LongStats,
}

/// Evictions between two rebuilds of the window's sums from its rows.
const REBUILD_EVERY: usize = 1024;

/// The window's sufficient statistics: its normal equations, Σ dt·y², and per model
/// the rows it appears in and is busy in.
#[derive(Debug, Clone, Default)]
struct WindowSums {
    eq: Normal,
    yy: f64,
    present: BTreeMap<u32, usize>,
    busy: BTreeMap<u32, usize>,
}

impl WindowSums {
    fn add(&mut self, r: &Packed, sign: f64) {
        self.eq.add(r, sign);
        self.yy += sign * r.dt_s * r.power_w * r.power_w;
        for (k, u) in &r.util {
            bump(&mut self.present, *k, sign);
            if *u > 0.0 {
                bump(&mut self.busy, *k, sign);
            }
        }
        // A model no longer in any row leaves the equations.
        let gone: Vec<Col> = r
            .util
            .iter()
            .filter(|(k, _)| !self.present.contains_key(k))
            .map(|(k, _)| Some(*k))
            .collect();
        self.eq.drop_cols(&gone);
    }

    fn rebuild<'a>(rows: impl Iterator<Item = &'a Packed>) -> WindowSums {
        let mut s = WindowSums::default();
        for r in rows {
            s.add(r, 1.0);
        }
        s
    }
}

fn bump(m: &mut BTreeMap<u32, usize>, k: u32, sign: f64) {
    let n = m.entry(k).or_default();
    if sign > 0.0 {
        *n += 1;
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(&k);
        }
    }
}

impl PowerModel {
    pub fn new(cfg: PowerModelConfig) -> PowerModel {
        PowerModel {
            cfg,
            rows: VecDeque::new(),
            window_s: 0.0,
            ids: BTreeMap::new(),
            names: Vec::new(),
            sums: WindowSums::default(),
            evictions: 0,
            long: LongStats::default(),
        }
    }

    /// Adds an interval and drops the oldest beyond the window. Rows with a non-finite
    /// or non-positive length, or non-finite values, are ignored.
    pub fn observe(&mut self, row: Row) {
        let finite = row.dt_s.is_finite()
            && row.dt_s > 0.0
            && row.power_w.is_finite()
            && row.util.values().all(|u| u.is_finite() && *u >= 0.0);
        if !finite {
            return;
        }
        let mut util: Vec<(u32, f64)> = row
            .util
            .into_iter()
            .map(|(k, u)| (self.intern(k), u))
            .collect();
        util.sort_by_key(|(id, _)| *id);
        let row = Packed {
            dt_s: row.dt_s,
            power_w: row.power_w,
            util,
        };
        self.long.add(&row);
        self.window_s += row.dt_s;
        self.sums.add(&row, 1.0);
        self.rows.push_back(row);
        while self.rows.len() > 1 {
            let oldest = self.rows[0].dt_s;
            if self.window_s - oldest < self.cfg.window_s {
                break;
            }
            self.window_s -= oldest;
            if let Some(old) = self.rows.pop_front() {
                self.sums.add(&old, -1.0);
                self.evictions += 1;
            }
        }
        if self.evictions >= REBUILD_EVERY {
            self.evictions = 0;
            self.sums = WindowSums::rebuild(self.rows.iter());
            self.window_s = self.rows.iter().map(|r| r.dt_s).sum();
        }
    }

    fn intern(&mut self, k: ModelKey) -> u32 {
        if let Some(id) = self.ids.get(&k) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(k.clone());
        self.ids.insert(k, id);
        id
    }

    /// Intervals in the window.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the window is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Fits the window. `static_w`: the GPU's static power when known (configured, or
    /// measured with no process); `None` estimates it as the intercept.
    pub fn fit(&self, static_w: Option<f64>) -> Result<Fit, Fallback> {
        let need = self.cfg.min_intervals.max(2);
        if static_w.is_none() {
            // Static power from everything seen, when that identifies it; the window
            // then fits the weights alone.
            if let Some(s) = self.long.static_w(need) {
                let mut fit = self.fit_window(Some(s), need)?;
                fit.static_estimated = true;
                return Ok(fit);
            }
        }
        self.fit_window(static_w, need)
    }

    fn fit_window(&self, static_w: Option<f64>, need: usize) -> Result<Fit, Fallback> {
        if self.rows.len() < need {
            return Err(Fallback::TooFewIntervals {
                have: self.rows.len(),
                need,
            });
        }
        let models: Vec<u32> = self.sums.present.keys().copied().collect();
        let intercept = static_w.is_none();
        let s0 = static_w.unwrap_or(0.0);
        // Columns [intercept?, models…]; with a known static power the target is
        // y − s: b_j − s·Σdt·x_j, and Σdt(y − s)² = yy − 2s·Σdt·y + s²·Σdt.
        let mut cols: Vec<Col> = Vec::with_capacity(models.len() + 1);
        if intercept {
            cols.push(None);
        }
        cols.extend(models.iter().map(|m| Some(*m)));
        let k = cols.len();
        let eq = &self.sums.eq;
        let g = eq.matrix(&cols);
        let b: Vec<f64> = cols
            .iter()
            .map(|c| eq.b.get(c).copied().unwrap_or(0.0) - s0 * eq.get(&None, c))
            .collect();
        let yy = self.sums.yy - 2.0 * s0 * eq.b.get(&None).copied().unwrap_or(0.0)
            + s0 * s0 * eq.get(&None, &None);
        // Column scaling (unit diagonal) keeps the intercept and percent columns
        // comparable; a column that is all zero contributes nothing.
        let (coef, conditioning) = scaled_nnls(&g, &b);
        // Residual from the sums: yᵀy − 2βᵀb + βᵀGβ (a diagnostic; rounding can leave a
        // tiny negative, clamped).
        let mut rss = yy;
        for i in 0..k {
            rss -= 2.0 * coef[i] * b[i];
            for j in 0..k {
                rss += coef[i] * g[i][j] * coef[j];
            }
        }
        let window_s = self.window_s;
        let rms_residual_w = (rss.max(0.0) / window_s).sqrt();
        let offset = usize::from(intercept);
        let watts_per_pct: BTreeMap<ModelKey, f64> = models
            .iter()
            .enumerate()
            .map(|(j, m)| (self.names[*m as usize].clone(), coef[offset + j]))
            .collect();
        let fit = Fit {
            static_w: static_w.unwrap_or_else(|| coef[0]),
            static_estimated: intercept,
            watts_per_pct,
            intervals: self.rows.len(),
            window_s,
            conditioning,
            rms_residual_w,
        };
        if conditioning < MIN_CONDITIONING {
            return Err(Fallback::NotIdentified { conditioning });
        }
        Ok(fit)
    }

    /// Decides one interval: fits the window (with `known_static` as the static power
    /// when configured or measured, else estimating it), and gives the weights when
    /// every model active now (`active`: model → its SM utilisation this interval) is
    /// identified. The fit's intercept is offered as the static power even where the
    /// split falls back (one model, say), as long as the window identifies it.
    pub fn decide(&self, active: &BTreeMap<ModelKey, f64>, known_static: Option<f64>) -> Decision {
        let fit = self.fit(known_static);
        let static_w = fit
            .as_ref()
            .ok()
            .filter(|f| f.static_estimated)
            .map(|f| f.static_w);
        let verdict = match &fit {
            Ok(f) => self.check_active(f, active),
            Err(e) => match self.busy(active).len() {
                0 | 1 => Err(Fallback::SingleModel),
                _ => Err(e.clone()),
            },
        };
        let weights = match (&fit, &verdict) {
            (Ok(f), Ok(())) => Some(f.watts_per_pct.clone()),
            _ => None,
        };
        Decision {
            weights,
            static_w,
            status: Status {
                fit: fit.ok(),
                fallback: verdict.err(),
            },
        }
    }

    fn busy<'a>(&self, active: &'a BTreeMap<ModelKey, f64>) -> Vec<&'a ModelKey> {
        active
            .iter()
            .filter(|(_, u)| **u > 0.0)
            .map(|(m, _)| m)
            .collect()
    }

    /// Whether `fit` may split an interval whose active models are `active`.
    fn check_active(&self, fit: &Fit, active: &BTreeMap<ModelKey, f64>) -> Result<(), Fallback> {
        let busy = self.busy(active);
        if busy.len() < 2 {
            return Err(Fallback::SingleModel);
        }
        let need = self.cfg.min_intervals.max(2);
        for m in &busy {
            let seen = self
                .ids
                .get(*m)
                .and_then(|id| self.sums.busy.get(id))
                .copied()
                .unwrap_or(0);
            if seen < need {
                return Err(Fallback::ModelSeldomSeen {
                    model: m.model.clone(),
                    intervals: seen,
                });
            }
        }
        let weight: f64 = busy
            .iter()
            .map(|m| fit.watts_per_pct.get(*m).copied().unwrap_or(0.0) * active[*m])
            .sum();
        if weight <= 0.0 {
            return Err(Fallback::ZeroWeights);
        }
        Ok(())
    }
}

/// The estimator's state after an interval: the latest identified fit, and why the
/// interval fell back to the SM share (`None`: it was split by the power model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub fit: Option<Fit>,
    pub fallback: Option<Fallback>,
}

/// A GPU's power model as the state file keeps it and `check` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Unix ns of the interval it describes.
    pub at_ns: i64,
    /// The split the interval got: `power_model` or `sm_util` (fallback).
    pub method: String,
    /// Why it fell back (a stable reason) and the explanation; empty when it did not.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub explanation: String,
    /// The latest identified fit, if any.
    #[serde(default)]
    pub static_w: Option<f64>,
    #[serde(default)]
    pub static_estimated: bool,
    #[serde(default)]
    pub models: Vec<ModelWeight>,
    #[serde(default)]
    pub intervals: usize,
    #[serde(default)]
    pub window_s: f64,
    #[serde(default)]
    pub conditioning: f64,
    #[serde(default)]
    pub rms_residual_w: f64,
}

/// One model's learned power per percent of SM utilisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelWeight {
    pub model: String,
    pub server: String,
    pub watts_per_pct: f64,
}

impl Status {
    /// The summary kept in the state file, for the interval ending at `at_ns`.
    pub fn summary(&self, at_ns: i64) -> Summary {
        let mut s = Summary {
            at_ns,
            method: if self.fallback.is_none() {
                "power_model"
            } else {
                "sm_util"
            }
            .to_string(),
            reason: self
                .fallback
                .as_ref()
                .map_or("", Fallback::reason)
                .to_string(),
            explanation: self
                .fallback
                .as_ref()
                .map(Fallback::describe)
                .unwrap_or_default(),
            ..Summary::default()
        };
        if let Some(f) = &self.fit {
            s.static_w = Some(f.static_w);
            s.static_estimated = f.static_estimated;
            s.models = f
                .watts_per_pct
                .iter()
                .map(|(k, w)| ModelWeight {
                    model: k.model.clone(),
                    server: k.server.clone(),
                    watts_per_pct: *w,
                })
                .collect();
            s.intervals = f.intervals;
            s.window_s = f.window_s;
            s.conditioning = f.conditioning;
            s.rms_residual_w = f.rms_residual_w;
        }
        s
    }
}

/// One interval's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Power per percent per model, to weight the SM share; `None`: SM share.
    pub weights: Option<BTreeMap<ModelKey, f64>>,
    /// The fit's static power, when it estimated one (nobody configured or measured it).
    pub static_w: Option<f64>,
    pub status: Status,
}

/// Non-negative least squares on the normal equations: minimises ½βᵀGβ − bᵀβ with
/// β ≥ 0 (Lawson & Hanson's active-set method, on the Gram form). `g` is symmetric
/// positive semi-definite; columns are expected to be scaled to unit diagonal.
pub fn nnls_normal(g: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let tol = 1e-12;
    let mut beta = vec![0.0; n];
    let mut passive = vec![false; n];
    for _outer in 0..(3 * n + 3) {
        // Gradient of the objective's negative: w = b − Gβ.
        let w: Vec<f64> = (0..n)
            .map(|i| b[i] - (0..n).map(|j| g[i][j] * beta[j]).sum::<f64>())
            .collect();
        let Some(j) = (0..n)
            .filter(|&i| !passive[i] && w[i] > tol)
            .max_by(|&a, &c| w[a].total_cmp(&w[c]))
        else {
            break;
        };
        passive[j] = true;
        for _inner in 0..(3 * n + 3) {
            let idx: Vec<usize> = (0..n).filter(|&i| passive[i]).collect();
            let z_p = solve(
                &idx.iter()
                    .map(|&i| idx.iter().map(|&k| g[i][k]).collect())
                    .collect::<Vec<Vec<f64>>>(),
                &idx.iter().map(|&i| b[i]).collect::<Vec<f64>>(),
            );
            let mut z = vec![0.0; n];
            for (p, &i) in idx.iter().enumerate() {
                z[i] = z_p[p];
            }
            if idx.iter().all(|&i| z[i] > tol) {
                beta = z;
                break;
            }
            // Step towards z until the first passive coefficient reaches zero.
            let alpha = idx
                .iter()
                .filter(|&&i| z[i] <= tol)
                .map(|&i| beta[i] / (beta[i] - z[i]))
                .fold(f64::INFINITY, f64::min);
            let alpha = if alpha.is_finite() { alpha } else { 0.0 };
            for i in 0..n {
                beta[i] += alpha * (z[i] - beta[i]);
                if passive[i] && beta[i] <= tol {
                    passive[i] = false;
                    beta[i] = 0.0;
                }
            }
        }
    }
    beta.iter().map(|v| v.max(0.0)).collect()
}

/// Solves `a x = y` by Gaussian elimination with partial pivoting; a (near-)singular
/// pivot gives 0 for that unknown (the minimum-effort answer for an unidentified column).
fn solve(a: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let n = y.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(y)
        .map(|(row, &v)| {
            let mut r = row.clone();
            r.push(v);
            r
        })
        .collect();
    let mut singular = vec![false; n];
    for col in 0..n {
        let Some(p) = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs())) else {
            continue;
        };
        if m[p][col].abs() < 1e-12 {
            singular[col] = true;
            continue;
        }
        m.swap(col, p);
        for r in 0..n {
            if r != col {
                let f = m[r][col] / m[col][col];
                if f != 0.0 {
                    for c in col..=n {
                        m[r][c] -= f * m[col][c];
                    }
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            if singular[i] || m[i][i].abs() < 1e-12 {
                0.0
            } else {
                m[i][n] / m[i][i]
            }
        })
        .collect()
}

/// Smallest eigenvalue of a small symmetric matrix (cyclic Jacobi); 1 for an empty one.
pub fn min_eigenvalue(a: &[Vec<f64>]) -> f64 {
    let n = a.len();
    if n == 0 {
        return 1.0;
    }
    let mut m: Vec<Vec<f64>> = a.to_vec();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k][p], m[k][q]);
                    m[k][p] = c * mkp - s * mkq;
                    m[k][q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p][k], m[q][k]);
                    m[p][k] = c * mpk - s * mqk;
                    m[q][k] = s * mpk + c * mqk;
                }
            }
        }
    }
    (0..n).map(|i| m[i][i]).fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(m: &str) -> ModelKey {
        ModelKey::new(m, "vllm")
    }

    /// A deterministic pseudo-random sequence in [0, 1).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn window(n: usize, betas: &[f64], static_w: f64, vary: bool) -> PowerModel {
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 1e9,
            min_intervals: 10,
        });
        let mut seed = 7;
        for _ in 0..n {
            let util: BTreeMap<ModelKey, f64> = betas
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let u = if vary {
                        5.0 + 40.0 * lcg(&mut seed)
                    } else {
                        20.0 + 10.0 * i as f64
                    };
                    (key(&format!("m{i}")), u)
                })
                .collect();
            let p = static_w
                + betas
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b * util[&key(&format!("m{i}"))])
                    .sum::<f64>();
            pm.observe(Row {
                dt_s: 1.0,
                power_w: p,
                util,
            });
        }
        pm
    }

    #[test]
    fn recovers_weights_and_static_power_from_a_varying_mix() {
        // 630 W dynamic range, weights 1.6 and 0.6 → 10.08 and 3.78 W per percent.
        let pm = window(60, &[10.08, 3.78], 70.0, true);
        let fit = pm.fit(None).expect("identified");
        assert!((fit.static_w - 70.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.watts_per_pct[&key("m0")] - 10.08).abs() < 1e-6);
        assert!((fit.watts_per_pct[&key("m1")] - 3.78).abs() < 1e-6);
        assert!(fit.rms_residual_w < 1e-3, "{}", fit.rms_residual_w);
        let known = pm.fit(Some(70.0)).expect("identified");
        assert!((known.watts_per_pct[&key("m0")] - 10.08).abs() < 1e-6);
        assert!(!known.static_estimated && fit.static_estimated);
    }

    #[test]
    fn the_static_power_comes_from_everything_seen_not_only_the_window() {
        // A 20-s window that ends in a constant mix: the window alone cannot place the
        // intercept, the long-memory statistics (varying mix earlier) still do.
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 20.0,
            min_intervals: 10,
        });
        let mut seed = 5;
        for i in 0..200 {
            let (u0, u1) = if i < 150 {
                (5.0 + 40.0 * lcg(&mut seed), 5.0 + 40.0 * lcg(&mut seed))
            } else {
                (30.0, 5.0 + 40.0 * lcg(&mut seed))
            };
            pm.observe(Row {
                dt_s: 1.0,
                power_w: 70.0 + 10.0 * u0 + 4.0 * u1,
                util: [(key("m0"), u0), (key("m1"), u1)].into(),
            });
        }
        assert_eq!(pm.len(), 20);
        let fit = pm
            .fit(None)
            .expect("static from the long fit, weights from the window");
        assert!(
            fit.static_estimated && (fit.static_w - 70.0).abs() < 1e-6,
            "{fit:?}"
        );
    }

    #[test]
    fn a_constant_mix_is_not_identified() {
        let pm = window(60, &[10.0, 4.0], 70.0, false);
        match pm.fit(None) {
            Err(Fallback::NotIdentified { conditioning }) => assert!(conditioning < 1e-6),
            other => panic!("{other:?}"),
        }
        // Without the intercept, two constant columns are still collinear.
        assert!(matches!(
            pm.fit(Some(70.0)),
            Err(Fallback::NotIdentified { .. })
        ));
    }

    #[test]
    fn loads_that_move_together_are_not_identified() {
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 1e9,
            min_intervals: 10,
        });
        let mut seed = 3;
        for _ in 0..50 {
            let u = 10.0 + 30.0 * lcg(&mut seed);
            pm.observe(Row {
                dt_s: 1.0,
                power_w: 70.0 + 8.0 * u + 4.0 * 0.5 * u,
                util: [(key("a"), u), (key("b"), 0.5 * u)].into(),
            });
        }
        assert!(matches!(pm.fit(None), Err(Fallback::NotIdentified { .. })));
    }

    #[test]
    fn few_intervals_and_a_new_model_fall_back_with_their_reason() {
        let pm = window(5, &[10.0, 4.0], 70.0, true);
        let active: BTreeMap<ModelKey, f64> = [(key("m0"), 20.0), (key("m1"), 20.0)].into();
        let d = pm.decide(&active, None);
        assert_eq!(
            d.status.fallback,
            Some(Fallback::TooFewIntervals { have: 5, need: 10 })
        );
        assert!(d.weights.is_none() && d.static_w.is_none());
        let pm = window(60, &[10.0, 4.0], 70.0, true);
        let with_new: BTreeMap<ModelKey, f64> = [(key("m0"), 20.0), (key("new"), 20.0)].into();
        assert!(matches!(
            pm.decide(&with_new, None).status.fallback,
            Some(Fallback::ModelSeldomSeen { intervals: 0, .. })
        ));
        // One model busy: no weights, but the identified intercept is still offered.
        let one: BTreeMap<ModelKey, f64> = [(key("m0"), 20.0), (key("m1"), 0.0)].into();
        let d = pm.decide(&one, None);
        assert_eq!(d.status.fallback, Some(Fallback::SingleModel));
        assert!(d.weights.is_none());
        assert!((d.static_w.expect("estimated") - 70.0).abs() < 1e-6);
        let d = pm.decide(&active, None);
        assert!(d.weights.is_some() && d.status.fallback.is_none());
        assert!(pm.decide(&active, Some(70.0)).static_w.is_none());
    }

    #[test]
    fn a_window_without_models_fits_nothing_and_does_not_panic() {
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 1e9,
            min_intervals: 2,
        });
        for _ in 0..5 {
            pm.observe(Row {
                dt_s: 1.0,
                power_w: 70.0,
                util: BTreeMap::new(),
            });
        }
        let known = pm.fit(Some(70.0)).expect("nothing to identify");
        assert!(known.watts_per_pct.is_empty() && known.static_w == 70.0);
        let est = pm.fit(None).expect("intercept only");
        assert!((est.static_w - 70.0).abs() < 1e-9);
        assert_eq!(
            pm.decide(&BTreeMap::new(), Some(70.0)).status.fallback,
            Some(Fallback::SingleModel)
        );
    }

    #[test]
    fn the_running_sums_match_a_rebuild_and_forget_models_that_left() {
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 10.0,
            min_intervals: 2,
        });
        let mut seed = 9;
        for i in 0..3000 {
            let mut util: BTreeMap<ModelKey, f64> = [(key("m0"), 50.0 * lcg(&mut seed))].into();
            if i < 100 {
                util.insert(key("m1"), 30.0 * lcg(&mut seed));
            }
            pm.observe(Row {
                dt_s: 0.5 + 0.1 * lcg(&mut seed),
                power_w: 80.0 + 300.0 * lcg(&mut seed),
                util,
            });
        }
        let m1 = pm.ids[&key("m1")];
        assert!(!pm.sums.present.contains_key(&m1));
        assert!(pm
            .sums
            .eq
            .g
            .keys()
            .all(|(a, b)| *a != Some(m1) && *b != Some(m1)));
        let fresh = WindowSums::rebuild(pm.rows.iter());
        for (k, v) in &fresh.eq.g {
            let got = pm.sums.eq.g[k];
            assert!(
                (got - v).abs() <= 1e-9 * v.abs().max(1.0),
                "{k:?}: {got} vs {v}"
            );
        }
        assert!((pm.sums.yy - fresh.yy).abs() <= 1e-9 * fresh.yy);
        assert!(!pm
            .fit(Some(80.0))
            .expect("one model")
            .watts_per_pct
            .contains_key(&key("m1")));
    }

    #[test]
    fn the_window_slides() {
        let mut pm = PowerModel::new(PowerModelConfig {
            window_s: 10.0,
            min_intervals: 2,
        });
        for i in 0..30 {
            pm.observe(Row {
                dt_s: 1.0,
                power_w: 100.0 + i as f64,
                util: BTreeMap::new(),
            });
        }
        assert_eq!(pm.len(), 10);
        // Bad rows are ignored.
        pm.observe(Row {
            dt_s: f64::NAN,
            power_w: 1.0,
            util: BTreeMap::new(),
        });
        pm.observe(Row {
            dt_s: 0.0,
            power_w: 1.0,
            util: BTreeMap::new(),
        });
        assert_eq!(pm.len(), 10);
    }

    #[test]
    fn nnls_clamps_a_negative_coefficient_to_zero() {
        // Unconstrained LS would give x1 < 0.
        let g = vec![vec![1.0, 0.9], vec![0.9, 1.0]];
        let b = vec![1.0, 0.2];
        let x = nnls_normal(&g, &b);
        assert!(x[1] == 0.0 && (x[0] - 1.0).abs() < 1e-9, "{x:?}");
    }

    proptest! {
        #[test]
        fn nnls_satisfies_the_kkt_conditions(
            cols in proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, 12), 1..5),
            y in proptest::collection::vec(-1.0f64..1.0, 12),
        ) {
            let k = cols.len();
            let mut g = vec![vec![0.0; k]; k];
            let mut b = vec![0.0; k];
            for i in 0..k {
                b[i] = (0..12).map(|r| cols[i][r] * y[r]).sum();
                for j in 0..k {
                    g[i][j] = (0..12).map(|r| cols[i][r] * cols[j][r]).sum();
                }
            }
            let x = nnls_normal(&g, &b);
            for i in 0..k {
                prop_assert!(x[i] >= 0.0);
                let w = b[i] - (0..k).map(|j| g[i][j] * x[j]).sum::<f64>();
                // Stationary where positive, gradient pointing outwards where zero.
                if x[i] > 1e-9 { prop_assert!(w.abs() < 1e-6, "w={} x={:?}", w, x); }
                else { prop_assert!(w < 1e-6, "w={} x={:?}", w, x); }
            }
        }

        #[test]
        fn min_eigenvalue_bounds_the_quadratic_form(
            v in proptest::collection::vec(-1.0f64..1.0, 9),
        ) {
            // A = Mᵀ M is symmetric PSD; λ_min ≤ xᵀAx/xᵀx for any x.
            let m = [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]];
            let a: Vec<Vec<f64>> = (0..3)
                .map(|i| (0..3).map(|j| (0..3).map(|r| m[r][i] * m[r][j]).sum()).collect())
                .collect();
            let l = min_eigenvalue(&a);
            prop_assert!(l >= -1e-9);
            for i in 0..3 {
                prop_assert!(l <= a[i][i] + 1e-9);
            }
        }
    }
}
