//! What a report reads from a store: [`ReportStore`], the sums and rows of a period that
//! `reporting::report_input` turns into a report. The embedded SQLite [`Store`] and the
//! VictoriaMetrics backend ([`super::victoria::VictoriaStore`]) both answer it, so both
//! feed the same indicator code and a report over either is computed the same way.
//!
//! Conventions (both backends): a period is `(from_ns, to_ns]` over interval ends; a
//! bucket starting at `b` holds `(b, b + width]`; an interval that straddles a bucket edge
//! is split over the buckets pro rata to its time.

use super::query::{
    BucketGpuRow, BucketHostRow, BucketModelEnergyRow, BucketUsageRow, GapPointRow, GpuEnergyRow,
    IdlePolicyRow, SiteRow, SplitRow,
};
use super::{Store, StoreError};

/// The store-side sums a report is computed from.
pub trait ReportStore: Send + Sync {
    /// `model_energy` sums per (site, host, gpu_uuid, model, server, bucket).
    fn bucket_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketModelEnergyRow>, StoreError>;
    /// `gpu` sums per (site, host, gpu_uuid, bucket), with the GPU's name.
    fn bucket_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketGpuRow>, StoreError>;
    /// `host_energy` (CPU + DRAM) sums per (site, host, bucket).
    fn bucket_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketHostRow>, StoreError>;
    /// `model_usage` sums per (site, host, model, server, bucket).
    fn bucket_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketUsageRow>, StoreError>;
    /// The idle policies each host reported in the period.
    fn idle_policies(&self, from_ns: i64, to_ns: i64) -> Result<Vec<IdlePolicyRow>, StoreError>;
    /// `gpu` sums per GPU and energy source over the period.
    fn sum_gpu_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GpuEnergyRow>, StoreError>;
    /// GPU energy per (site, split method) over the period.
    fn sum_split_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<SplitRow>, StoreError>;
    /// The latest `site` point of each site at or before `to_ns`. `wanted` names the sites
    /// the report has rows for: each of them is looked for however old its last point.
    fn latest_sites(
        &self,
        from_ns: i64,
        to_ns: i64,
        wanted: &[String],
    ) -> Result<Vec<SiteRow>, StoreError>;
    /// The `gpu` intervals of the period whose energy `source` is `gap`.
    fn gap_points(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GapPointRow>, StoreError>;
    /// Σ `folded_points` over the period.
    fn sum_folded_points(&self, from_ns: i64, to_ns: i64) -> Result<u64, StoreError>;
    /// The earliest and latest stored interval ends, if anything is stored.
    fn time_bounds(&self) -> Result<Option<(i64, i64)>, StoreError>;
}

impl ReportStore for Store {
    fn bucket_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketModelEnergyRow>, StoreError> {
        Store::bucket_model_energy(self, from_ns, to_ns, grain_ns)
    }
    fn bucket_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketGpuRow>, StoreError> {
        Store::bucket_gpu_energy(self, from_ns, to_ns, grain_ns)
    }
    fn bucket_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketHostRow>, StoreError> {
        Store::bucket_host_energy(self, from_ns, to_ns, grain_ns)
    }
    fn bucket_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketUsageRow>, StoreError> {
        Store::bucket_model_usage(self, from_ns, to_ns, grain_ns)
    }
    fn idle_policies(&self, from_ns: i64, to_ns: i64) -> Result<Vec<IdlePolicyRow>, StoreError> {
        Store::idle_policies(self, from_ns, to_ns)
    }
    fn sum_gpu_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GpuEnergyRow>, StoreError> {
        Store::sum_gpu_energy(self, from_ns, to_ns)
    }
    fn sum_split_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<SplitRow>, StoreError> {
        Store::sum_split_energy(self, from_ns, to_ns)
    }
    fn latest_sites(
        &self,
        _from_ns: i64,
        to_ns: i64,
        _wanted: &[String],
    ) -> Result<Vec<SiteRow>, StoreError> {
        Store::latest_sites(self, to_ns)
    }
    fn gap_points(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GapPointRow>, StoreError> {
        Store::gap_points(self, from_ns, to_ns)
    }
    fn sum_folded_points(&self, from_ns: i64, to_ns: i64) -> Result<u64, StoreError> {
        Store::sum_folded_points(self, from_ns, to_ns)
    }
    fn time_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        Store::time_bounds(self)
    }
}
