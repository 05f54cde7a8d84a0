//! Host energy split (METHODOLOGY §3): one interval's host (RAPL) energy among the GPU
//! processes by their share of the host's busy CPU time. Pure.
//!
//! Both sides are measured host-wide in the same unit (clock ticks from `/proc`): a
//! process's ticks are part of the host's busy ticks, so the shares sum to at most 1
//! by construction, under any cgroup quota or CPU affinity of the agent. (Dividing by
//! the agent's `available_parallelism()`, which follows its cgroup quota, charged each
//! of 8 workers in a 500m pod the whole host.) Reading skew between the two files can
//! push the sum a hair over 1; the shares are then scaled back to 1. What is left —
//! other processes, the kernel, idle — is not assigned here; the report charges it by
//! the site's idle policy.

use std::collections::HashMap;

/// One process's CPU ticks over the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessCpu {
    pub pid: u32,
    pub ticks: u64,
}

/// Each pid's share of the host's busy ticks, summing to at most 1. Empty when the
/// host was not busy (nothing to split) or unknown.
pub fn cpu_shares(host_busy_ticks: u64, procs: &[ProcessCpu]) -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    if host_busy_ticks == 0 {
        return out;
    }
    let host = host_busy_ticks as f64;
    let mut sum = 0.0;
    for p in procs {
        let share = p.ticks as f64 / host;
        *out.entry(p.pid).or_insert(0.0) += share;
        sum += share;
    }
    if sum > 1.0 {
        for v in out.values_mut() {
            *v /= sum;
        }
    }
    out
}

/// The ticks each pid used between two cumulative readings; a pid missing from either
/// (started or exited in between) or whose counter went back (pid reuse) is left out.
pub fn tick_deltas(prev: &HashMap<u32, u64>, cur: &HashMap<u32, u64>) -> Vec<ProcessCpu> {
    let mut out: Vec<ProcessCpu> = cur
        .iter()
        .filter_map(|(pid, &now)| {
            let before = *prev.get(pid)?;
            let ticks = now.checked_sub(before)?;
            Some(ProcessCpu { pid: *pid, ticks })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eight_workers_in_a_small_pod_share_the_host_not_multiply_it() {
        // 16 CPUs × 100 ticks busy; 8 workers each 150 ticks: 75% of the host.
        let procs: Vec<ProcessCpu> = (0..8).map(|i| ProcessCpu { pid: i, ticks: 150 }).collect();
        let s = cpu_shares(1600, &procs);
        let sum: f64 = s.values().sum();
        assert!((sum - 0.75).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn skew_over_the_host_is_scaled_to_one_and_idle_host_gives_nothing() {
        let s = cpu_shares(
            100,
            &[
                ProcessCpu { pid: 1, ticks: 80 },
                ProcessCpu { pid: 2, ticks: 40 },
            ],
        );
        assert!((s.values().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((s[&1] / s[&2] - 2.0).abs() < 1e-12);
        assert!(cpu_shares(0, &[ProcessCpu { pid: 1, ticks: 5 }]).is_empty());
    }

    #[test]
    fn deltas_skip_new_gone_and_reused_pids() {
        let prev = HashMap::from([(1, 100), (2, 50), (3, 500)]);
        let cur = HashMap::from([(1, 130), (3, 20), (4, 10)]);
        assert_eq!(
            tick_deltas(&prev, &cur),
            vec![ProcessCpu { pid: 1, ticks: 30 }]
        );
    }

    proptest! {
        #[test]
        fn shares_never_sum_over_one(
            host in 0u64..10_000_000,
            ticks in proptest::collection::vec(0u64..10_000_000, 0..64),
        ) {
            let procs: Vec<ProcessCpu> = ticks
                .iter()
                .enumerate()
                .map(|(i, t)| ProcessCpu { pid: i as u32, ticks: *t })
                .collect();
            let s = cpu_shares(host, &procs);
            let sum: f64 = s.values().sum();
            prop_assert!(sum <= 1.0 + 1e-9, "sum {}", sum);
            prop_assert!(s.values().all(|v| *v >= 0.0));
        }
    }
}
