//! Sources read hardware and processes; they never attribute or compute footprints.

pub mod nvml;
pub mod procs;
pub mod rapl;
pub mod server_metrics;
