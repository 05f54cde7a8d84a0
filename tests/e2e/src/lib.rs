//! Helpers for inferwatt's end-to-end tests.
pub mod harness;
pub mod nvml_sim;
pub mod split;
pub use nvml_sim::nvml_sim_library;
pub mod fleet;
