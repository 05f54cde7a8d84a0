//! Attribution: one GPU interval's energy split among the models that used it
//! (METHODOLOGY §2). Pure: it takes plain data and never touches hardware.
//!
//! 1. Idle (static) energy `E_idle = min(ΔE, P_idle·Δt)`; active `E_active = ΔE − E_idle`.
//! 2. Active energy is split among the GPU's processes by SM utilisation — weighted by
//!    each model's learned power per percent where the GPU's power model identified it
//!    (`power_model`, see `power_model.rs`); without samples by used memory; else equally. Under MIG by instance size (compute slices),
//!    then by memory or equally within an instance.
//! 3. Idle energy goes to the resident models in proportion to their active energy
//!    (equally when none is active) under the `resident` policy, or to `_idle` under
//!    `separate`. A GPU with no resident process is `_idle`.
//! 4. A GPU whose process query failed is `_unattributed` (who ran is unknown).
//! 5. Conservation: the rows sum to `ΔE` (to float rounding) — checked by proptest.

use std::collections::BTreeMap;

use inferwatt_core::schema::{SplitMethod, MODEL_IDLE, MODEL_UNATTRIBUTED};
use serde::{Deserialize, Serialize};

/// Where a GPU's idle (static) energy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// To the models resident on the GPU (holding memory), in proportion to their
    /// active energy, or equally when none is active.
    #[default]
    Resident,
    /// To `_idle`, separate from every model.
    Separate,
}

/// A model as attribution sees it: its name, the server that serves it and, on
/// Kubernetes, the pod it runs in (two pods of one model on a GPU are two rows, so a
/// tenant is charged for its own pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    pub model: String,
    pub server: String,
    pub pod: Option<inferwatt_core::schema::PodTags>,
}

impl ModelKey {
    pub fn new(model: impl Into<String>, server: impl Into<String>) -> Self {
        ModelKey {
            model: model.into(),
            server: server.into(),
            pod: None,
        }
    }

    /// This key in `pod`.
    pub fn in_pod(mut self, pod: Option<inferwatt_core::schema::PodTags>) -> Self {
        self.pod = pod;
        self
    }

    fn idle() -> Self {
        ModelKey::new(MODEL_IDLE, "")
    }
}

/// One GPU process in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessActivity {
    pub pid: u32,
    pub model: ModelKey,
    /// Mean SM utilisation (percent) over the interval from NVML's per-process
    /// samples; `None` when the GPU gave no samples for anyone.
    pub sm_util: Option<f64>,
    /// Used GPU memory, when NVML reports it.
    pub mem_bytes: Option<u64>,
    /// MIG GPU instance the process runs in.
    pub mig_instance: Option<u32>,
}

/// One GPU's interval, ready to split.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnergyInput {
    /// Measured energy of the interval (ΔE).
    pub energy_j: f64,
    pub interval_s: f64,
    /// Static power of this GPU (configured or learned).
    pub idle_power_w: f64,
    pub processes: Vec<ProcessActivity>,
    /// MIG instances of the GPU (GPU instance id → compute slices), empty without MIG.
    pub mig_slices: BTreeMap<u32, u32>,
    /// Under MIG with GPM: each instance's SM utilisation over the interval (percent of
    /// the instance), by the same key as `mig_slices`.
    pub mig_activity: Option<BTreeMap<u32, f64>>,
    pub idle_policy: IdlePolicy,
    /// False when the process query failed: the whole interval is `_unattributed`.
    pub processes_known: bool,
    /// Learned power per percent of SM utilisation per model (the GPU's power model),
    /// when it identified every model active in the interval; `None`: SM share.
    pub power_weights: Option<BTreeMap<ModelKey, f64>>,
}

/// One model's share of a GPU interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShare {
    pub model: ModelKey,
    pub active_j: f64,
    pub idle_j: f64,
    pub method: SplitMethod,
}

impl ModelShare {
    pub fn total_j(&self) -> f64 {
        self.active_j + self.idle_j
    }
}

/// Splits one GPU interval among models. Rows are sorted by model; their
/// `active_j + idle_j` sum to `energy_j`.
pub fn attribute(input: &GpuEnergyInput) -> Vec<ModelShare> {
    let energy = input.energy_j.max(0.0);
    let idle_j = energy.min((input.idle_power_w * input.interval_s).max(0.0));
    let active_j = energy - idle_j;

    if !input.processes_known {
        // Who ran is unknown: not idle, not anyone's.
        return vec![ModelShare {
            model: ModelKey::new(MODEL_UNATTRIBUTED, ""),
            active_j,
            idle_j,
            method: SplitMethod::None,
        }];
    }
    if input.processes.is_empty() {
        return vec![ModelShare {
            model: ModelKey::idle(),
            active_j,
            idle_j,
            method: SplitMethod::None,
        }];
    }

    let (weights, method) = process_weights(input);
    let total_weight: f64 = weights.iter().sum();

    // Active energy per model.
    let mut active: BTreeMap<ModelKey, f64> = BTreeMap::new();
    for (p, w) in input.processes.iter().zip(&weights) {
        let share = if total_weight > 0.0 {
            active_j * (w / total_weight)
        } else {
            0.0
        };
        *active.entry(p.model.clone()).or_default() += share;
    }

    let mut rows: Vec<ModelShare> = active
        .into_iter()
        .map(|(model, a)| ModelShare {
            model,
            active_j: a,
            idle_j: 0.0,
            method,
        })
        .collect();

    match input.idle_policy {
        IdlePolicy::Separate => rows.push(ModelShare {
            model: ModelKey::idle(),
            active_j: 0.0,
            idle_j,
            method: SplitMethod::None,
        }),
        IdlePolicy::Resident => {
            let sum_active: f64 = rows.iter().map(|r| r.active_j).sum();
            // Weights per model, for an interval whose measured energy did not exceed
            // the static-power estimate although the processes were busy.
            let mut model_weight: BTreeMap<&ModelKey, f64> = BTreeMap::new();
            for (p, w) in input.processes.iter().zip(&weights) {
                *model_weight.entry(&p.model).or_default() += w;
            }
            let n = rows.len() as f64;
            let shares: Vec<f64> = rows
                .iter()
                .map(|r| {
                    if sum_active > 0.0 {
                        r.active_j / sum_active
                    } else if total_weight > 0.0 {
                        model_weight.get(&r.model).copied().unwrap_or(0.0) / total_weight
                    } else {
                        1.0 / n
                    }
                })
                .collect();
            for (r, share) in rows.iter_mut().zip(shares) {
                r.idle_j = idle_j * share;
            }
        }
    }
    rows
}

/// Per-process weights for the active split, and the method that produced them.
fn process_weights(input: &GpuEnergyInput) -> (Vec<f64>, SplitMethod) {
    let procs = &input.processes;
    if !input.mig_slices.is_empty() {
        return mig_weights(input);
    }
    if procs.iter().any(|p| p.sm_util.is_some()) {
        let sm: Vec<f64> = procs
            .iter()
            .map(|p| p.sm_util.unwrap_or(0.0).max(0.0))
            .collect();
        if let Some(pw) = &input.power_weights {
            let weighted: Vec<f64> = procs
                .iter()
                .zip(&sm)
                .map(|(p, u)| u * pw.get(&p.model).copied().unwrap_or(0.0).max(0.0))
                .collect();
            let total: f64 = weighted.iter().sum();
            if total > 0.0 && total.is_finite() {
                return (weighted, SplitMethod::PowerModel);
            }
        }
        if sm.iter().sum::<f64>() > 0.0 {
            return (sm, SplitMethod::SmUtil);
        }
        // Samples say nobody computed: what little active energy the counter shows
        // (quantisation, P_idle estimate) is shared equally, and so is idle energy.
        return (vec![1.0; procs.len()], SplitMethod::Equal);
    }
    if let Some(mem) = memory_weights(procs) {
        return (mem, SplitMethod::Memory);
    }
    (vec![1.0; procs.len()], SplitMethod::Equal)
}

/// Weights from used memory, when every process reports some and the sum is positive.
fn memory_weights(procs: &[ProcessActivity]) -> Option<Vec<f64>> {
    let mem: Option<Vec<f64>> = procs
        .iter()
        .map(|p| p.mem_bytes.map(|m| m as f64))
        .collect();
    mem.filter(|m| m.iter().sum::<f64>() > 0.0)
}

/// MIG: each occupied instance gets a share in proportion to its measured activity
/// (GPM SM utilisation × compute slices: busy SMs) where GPM gave every occupied instance
/// a value and some activity (`mig_gpm`), else to its compute slices (`mig`); split
/// within the instance by memory or equally. Processes whose instance is unknown form one
/// group with the smallest occupied instance size (at least one slice) and, with GPM, no
/// measured activity.
fn mig_weights(input: &GpuEnergyInput) -> (Vec<f64>, SplitMethod) {
    let mut groups: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, p) in input.processes.iter().enumerate() {
        groups.entry(p.mig_instance).or_default().push(i);
    }
    let slices = |instance: Option<u32>| {
        instance
            .and_then(|gi| input.mig_slices.get(&gi).copied())
            .unwrap_or(1)
            .max(1) as f64
    };
    // Busy SMs per occupied instance, when GPM measured every one of them.
    let busy: Option<BTreeMap<Option<u32>, f64>> = input.mig_activity.as_ref().and_then(|a| {
        let b: Option<BTreeMap<Option<u32>, f64>> = groups
            .keys()
            .map(|k| {
                k.and_then(|gi| a.get(&gi))
                    .map(|u| (*k, slices(*k) * u.max(0.0) / 100.0))
            })
            .collect();
        b.filter(|b| b.values().sum::<f64>() > 0.0)
    });
    let method = if busy.is_some() {
        SplitMethod::MigGpm
    } else {
        SplitMethod::Mig
    };
    let mut weights = vec![0.0; input.processes.len()];
    for (instance, members) in groups {
        let share = match &busy {
            Some(b) => b.get(&instance).copied().unwrap_or(0.0),
            None => slices(instance),
        };
        let procs: Vec<ProcessActivity> = members
            .iter()
            .map(|&i| input.processes[i].clone())
            .collect();
        let inner = memory_weights(&procs).unwrap_or_else(|| vec![1.0; procs.len()]);
        let inner_sum: f64 = inner.iter().sum();
        for (&i, w) in members.iter().zip(inner) {
            weights[i] = share * w / inner_sum;
        }
    }
    (weights, method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proc(pid: u32, model: &str, sm: Option<f64>, mem: Option<u64>) -> ProcessActivity {
        ProcessActivity {
            pid,
            model: ModelKey::new(model, "vllm"),
            sm_util: sm,
            mem_bytes: mem,
            mig_instance: None,
        }
    }

    fn input(energy_j: f64, processes: Vec<ProcessActivity>, policy: IdlePolicy) -> GpuEnergyInput {
        GpuEnergyInput {
            energy_j,
            interval_s: 1.0,
            idle_power_w: 100.0,
            processes,
            mig_slices: BTreeMap::new(),
            mig_activity: None,
            idle_policy: policy,
            processes_known: true,
            power_weights: None,
        }
    }

    #[test]
    fn a_failed_process_query_is_unattributed_not_idle() {
        let rows = attribute(&GpuEnergyInput {
            processes_known: false,
            ..input(300.0, vec![], IdlePolicy::Resident)
        });
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].model.model, MODEL_UNATTRIBUTED);
        assert_eq!(rows[0].total_j(), 300.0);
    }

    #[test]
    fn missing_samples_split_by_memory_70_to_10() {
        // 70 GB and 10 GB resident, no utilisation samples: 350 / 50 J of 400 J active.
        let gb = 1_000_000_000u64;
        let rows = attribute(&GpuEnergyInput {
            idle_power_w: 0.0,
            ..input(
                400.0,
                vec![
                    proc(1, "big", None, Some(70 * gb)),
                    proc(2, "small", None, Some(10 * gb)),
                ],
                IdlePolicy::Resident,
            )
        });
        assert_eq!(find(&rows, "big").method, SplitMethod::Memory);
        assert!((find(&rows, "big").active_j - 350.0).abs() < 1e-9);
        assert!((find(&rows, "small").active_j - 50.0).abs() < 1e-9);
    }

    #[test]
    fn power_weights_scale_the_sm_share_and_keep_conservation() {
        // Same utilisation, 1.6 : 0.6 power per percent → 8 : 3 of the active energy.
        let rows = attribute(&GpuEnergyInput {
            idle_power_w: 0.0,
            power_weights: Some(
                [
                    (ModelKey::new("prefill", "vllm"), 1.6),
                    (ModelKey::new("decode", "vllm"), 0.6),
                ]
                .into(),
            ),
            ..input(
                1100.0,
                vec![
                    proc(1, "prefill", Some(30.0), None),
                    proc(2, "decode", Some(30.0), None),
                ],
                IdlePolicy::Resident,
            )
        });
        assert_eq!(find(&rows, "prefill").method, SplitMethod::PowerModel);
        assert!((find(&rows, "prefill").active_j - 800.0).abs() < 1e-9);
        assert!((find(&rows, "decode").active_j - 300.0).abs() < 1e-9);
        // All-zero weights fall back to the SM share.
        let rows = attribute(&GpuEnergyInput {
            idle_power_w: 0.0,
            power_weights: Some([(ModelKey::new("prefill", "vllm"), 0.0)].into()),
            ..input(
                100.0,
                vec![
                    proc(1, "prefill", Some(30.0), None),
                    proc(2, "decode", Some(10.0), None),
                ],
                IdlePolicy::Resident,
            )
        });
        assert_eq!(find(&rows, "prefill").method, SplitMethod::SmUtil);
        assert!((find(&rows, "prefill").active_j - 75.0).abs() < 1e-9);
    }

    fn find<'a>(rows: &'a [ModelShare], model: &str) -> &'a ModelShare {
        rows.iter()
            .find(|r| r.model.model == model)
            .expect("model row present")
    }

    #[test]
    fn splits_active_by_sm_util_and_idle_by_active_share() {
        let rows = attribute(&input(
            500.0,
            vec![
                proc(1, "a", Some(60.0), Some(10)),
                proc(2, "b", Some(20.0), Some(10)),
            ],
            IdlePolicy::Resident,
        ));
        let a = find(&rows, "a");
        let b = find(&rows, "b");
        assert!((a.active_j - 300.0).abs() < 1e-9);
        assert!((b.active_j - 100.0).abs() < 1e-9);
        assert!((a.idle_j - 75.0).abs() < 1e-9);
        assert!((b.idle_j - 25.0).abs() < 1e-9);
        assert_eq!(a.method, SplitMethod::SmUtil);
    }

    #[test]
    fn separate_policy_leaves_idle_to_idle_row() {
        let rows = attribute(&input(
            500.0,
            vec![proc(1, "a", Some(60.0), None)],
            IdlePolicy::Separate,
        ));
        assert!((find(&rows, "a").active_j - 400.0).abs() < 1e-9);
        assert_eq!(find(&rows, "a").idle_j, 0.0);
        assert!((find(&rows, MODEL_IDLE).idle_j - 100.0).abs() < 1e-9);
    }

    #[test]
    fn falls_back_to_memory_then_equal() {
        let rows = attribute(&input(
            400.0,
            vec![proc(1, "a", None, Some(3)), proc(2, "b", None, Some(1))],
            IdlePolicy::Resident,
        ));
        assert_eq!(find(&rows, "a").method, SplitMethod::Memory);
        assert!((find(&rows, "a").active_j - 225.0).abs() < 1e-9);
        let rows = attribute(&input(
            400.0,
            vec![proc(1, "a", None, None), proc(2, "b", None, None)],
            IdlePolicy::Resident,
        ));
        assert_eq!(find(&rows, "b").method, SplitMethod::Equal);
        assert!((find(&rows, "b").total_j() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn idle_gpu_and_idle_below_static_power() {
        let rows = attribute(&input(80.0, vec![], IdlePolicy::Resident));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].model.model, MODEL_IDLE);
        assert_eq!(rows[0].idle_j, 80.0);
        // Resident but inactive: idle shared equally.
        let rows = attribute(&input(
            90.0,
            vec![
                proc(1, "a", Some(0.0), Some(1)),
                proc(2, "b", Some(0.0), Some(1)),
            ],
            IdlePolicy::Resident,
        ));
        assert!((find(&rows, "a").idle_j - 45.0).abs() < 1e-9);
    }

    #[test]
    fn all_zero_samples_mean_nobody_was_active_not_a_memory_split() {
        // Regression: a hair of active energy above P_idle with every sample at 0 used
        // to be split by memory, and idle with it.
        let rows = attribute(&input(
            100.001,
            vec![
                proc(1, "a", Some(0.0), Some(3)),
                proc(2, "b", Some(0.0), Some(1)),
            ],
            IdlePolicy::Resident,
        ));
        assert_eq!(find(&rows, "a").method, SplitMethod::Equal);
        assert!((find(&rows, "a").total_j() - 50.0005).abs() < 1e-9);
    }

    #[test]
    fn busy_processes_share_idle_by_utilisation_when_no_energy_exceeds_static_power() {
        // Regression: with P_idle estimated at or above this interval's power, active
        // energy is 0; the processes were still busy, so idle follows utilisation.
        let rows = attribute(&input(
            90.0,
            vec![
                proc(1, "a", Some(60.0), Some(1)),
                proc(2, "b", Some(30.0), Some(1)),
            ],
            IdlePolicy::Resident,
        ));
        assert!((find(&rows, "a").idle_j - 60.0).abs() < 1e-9);
        assert!((find(&rows, "b").idle_j - 30.0).abs() < 1e-9);
    }

    #[test]
    fn two_processes_of_one_model_merge() {
        let rows = attribute(&input(
            300.0,
            vec![
                proc(1, "a", Some(10.0), None),
                proc(2, "a", Some(30.0), None),
            ],
            IdlePolicy::Resident,
        ));
        assert_eq!(rows.len(), 1);
        assert!((rows[0].total_j() - 300.0).abs() < 1e-9);
    }

    #[test]
    fn mig_splits_by_instance_slices() {
        let mut inp = input(
            800.0,
            vec![
                ProcessActivity {
                    mig_instance: Some(1),
                    ..proc(1, "a", None, Some(1))
                },
                ProcessActivity {
                    mig_instance: Some(2),
                    ..proc(2, "b", None, Some(1))
                },
            ],
            IdlePolicy::Resident,
        );
        inp.mig_slices = BTreeMap::from([(1, 3), (2, 4)]);
        let rows = attribute(&inp);
        assert_eq!(find(&rows, "a").method, SplitMethod::Mig);
        assert!((find(&rows, "a").active_j - 700.0 * 3.0 / 7.0).abs() < 1e-9);
        assert!((find(&rows, "b").active_j - 400.0).abs() < 1e-9);
        // GPM: the 3-slice instance 70% busy (2.1 busy slices), the 4-slice 35% (1.4).
        inp.mig_activity = Some(BTreeMap::from([(1, 70.0), (2, 35.0)]));
        let rows = attribute(&inp);
        assert_eq!(find(&rows, "a").method, SplitMethod::MigGpm);
        assert!((find(&rows, "a").active_j - 700.0 * 2.1 / 3.5).abs() < 1e-9);
        // An occupied instance GPM did not measure: back to instance size.
        inp.mig_activity = Some(BTreeMap::from([(1, 70.0)]));
        assert_eq!(find(&attribute(&inp), "a").method, SplitMethod::Mig);
        // Nothing measured as busy: instance size too.
        inp.mig_activity = Some(BTreeMap::from([(1, 0.0), (2, 0.0)]));
        assert_eq!(find(&attribute(&inp), "b").method, SplitMethod::Mig);
    }

    proptest! {
        #[test]
        fn conservation_holds_for_any_samples(
            energy in 0.0f64..5000.0,
            idle_w in 0.0f64..800.0,
            dt in 0.05f64..10.0,
            sms in proptest::collection::vec(proptest::option::of(0.0f64..100.0), 0..6),
            separate in any::<bool>(),
            betas in proptest::option::of(proptest::collection::vec(0.0f64..20.0, 3)),
        ) {
            let processes = sms.iter().enumerate().map(|(i, sm)| {
                proc(i as u32, &format!("m{}", i % 3), *sm, Some(i as u64))
            }).collect();
            let inp = GpuEnergyInput {
                energy_j: energy,
                interval_s: dt,
                idle_power_w: idle_w,
                processes,
                mig_slices: BTreeMap::new(),
                mig_activity: None,
                idle_policy: if separate { IdlePolicy::Separate } else { IdlePolicy::Resident },
                processes_known: true,
                power_weights: betas.map(|b| {
                    (0..3).map(|i| (ModelKey::new(format!("m{i}"), "vllm"), b[i])).collect()
                }),
            };
            let rows = attribute(&inp);
            let sum: f64 = rows.iter().map(ModelShare::total_j).sum();
            prop_assert!((sum - energy).abs() <= 1e-9 * energy.max(1.0));
            prop_assert!(rows.iter().all(|r| r.active_j >= 0.0 && r.idle_j >= 0.0));
        }
    }
}
