//! inferwatt-nvml-sim: a simulated NVIDIA driver.
//!
//! Built as a `cdylib` it is a drop-in `libnvidia-ml.so.1` exporting the NVML C API
//! (`ffi`), driven by the scenario file named in `FAKE_NVML_SCENARIO`. As an `rlib` it
//! gives Rust tests the same model (`Scenario`, `model`) to compute the ground truth:
//! the true energy per GPU and per process over any window.

mod ffi;
pub mod model;
pub mod scenario;

pub use model::{GpuTruth, ProcTruth, Truth, UtilSample};
pub use scenario::{Scenario, SimError};

/// The environment variable naming the scenario file.
pub const SCENARIO_ENV: &str = "FAKE_NVML_SCENARIO";
