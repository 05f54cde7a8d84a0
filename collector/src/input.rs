//! The report's input: the rows [`crate::reporting::report_input`] reads out of the store
//! for one period, per (GPU, model, bucket) — what factor resolution
//! ([`crate::factors`]) and the indicators ([`crate::indicators`]) both start from, so
//! this module imports neither.

use serde::Serialize;

/// A period, nanoseconds since the Unix epoch, `[from_ns, to_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ns: i64,
    pub to_ns: i64,
}

/// Where on Kubernetes a row ran: the namespace and the owning workload (its kind and
/// name) of the pod, from the `namespace`, `workload_kind` and `workload` tags; empty off
/// Kubernetes. Pods are not a report key: they come and go with every rollout, and a
/// tenant is billed by namespace and workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Tenancy {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
}

impl Tenancy {
    /// Whether the row ran on Kubernetes.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.workload.is_empty() && self.workload_kind.is_empty()
    }
}

/// Energy of one model on one GPU during one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub gpu_name: String,
    pub model: String,
    pub server: String,
    /// Start of the hour (rows are hourly so an hourly intensity can apply).
    pub hour_start_ns: i64,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    /// This model's share of the GPU's time in the hour: Σ interval_s × (row energy /
    /// GPU energy) over the hour's intervals (or the store's best equivalent). Drives
    /// GPU-hours and embodied emissions.
    pub gpu_seconds: f64,
    /// Its namespace and workload on Kubernetes.
    pub tenancy: Tenancy,
}

/// Inference-server usage of one model during one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub site: String,
    pub model: String,
    pub server: String,
    pub hour_start_ns: i64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Its namespace and workload on Kubernetes.
    pub tenancy: Tenancy,
}

/// GPU energy and seconds of a site by measurement path (`counter`, `integrated`, `gap`).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSourceRow {
    pub site: String,
    pub source: String,
    pub energy_j: f64,
    pub seconds: f64,
}

/// GPU energy of a site's model rows by split method (`power_model`, `sm_util`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitEnergyRow {
    pub site: String,
    pub method: String,
    pub energy_j: f64,
}

/// A site as the agents report it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    pub site: String,
    pub country: String,
    pub zone: String,
    pub pue: f64,
    pub wue_l_per_kwh: f64,
}

/// A span where a GPU was not measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GapRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub from_ns: i64,
    pub to_ns: i64,
    pub energy_j: f64,
}

/// The idle policy a host's unassigned energy was charged by, and where it came from
/// (`agent`, or the factors file when the agent did not report one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPolicy {
    pub site: String,
    pub host: String,
    pub policy: String,
    pub from: String,
}

/// Everything the store provides for a period.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    pub period: Period,
    pub energy: Vec<EnergyRow>,
    pub usage: Vec<UsageRow>,
    pub sources: Vec<GpuSourceRow>,
    /// Model energy by split method (rows stored before the store kept it have none).
    pub splits: Vec<SplitEnergyRow>,
    pub sites: Vec<SiteRow>,
    pub gaps: Vec<GapRow>,
    pub folded_points: u64,
    /// Per host, the idle policy its unassigned host energy was charged by.
    pub idle_policies: Vec<HostPolicy>,
    /// Width of the rows' buckets (ns): an hourly intensity series applies as its
    /// time-weighted mean over each bucket.
    pub grain_ns: i64,
    /// Findings about the input the report's warnings carry.
    pub notes: Vec<String>,
    /// sha256 the store computes over the raw rows of the period.
    pub input_digest: String,
}
