//! inferwatt-agent: source → reading → sample → attribution → footprint → sink.
//!
//! - [`sources`] only read (NVML, RAPL, the process table, inference-server metrics);
//! - [`identify`] maps a process to the model it serves;
//! - [`sample`] turns readings into interval energy per GPU (counter, integrated, gap);
//! - [`attribution`] splits each GPU's interval energy among models (METHODOLOGY §2);
//! - [`host_split`] splits host (RAPL) energy by host-wide CPU ticks (Σ ≤ 1);
//! - [`footprint`] resolves the site factors (unset → cited reference, warned) and a
//!   row's local emissions and water;
//! - [`sinks`] never compute: they publish (Prometheus), write (file) or ship (HTTP, spool);
//! - [`pipeline`] owns the loop and joins the parts; [`check`] explains a host to a newcomer.

pub mod attribution;
pub mod check;
pub mod config;
pub mod footprint;
pub mod host_split;
pub mod identify;
pub mod kube;
pub mod pipeline;
pub mod power_model;
pub mod sample;
pub mod sinks;
pub mod sources;
