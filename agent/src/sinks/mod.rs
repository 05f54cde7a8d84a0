//! Sinks publish what the pipeline computed; they never compute.

pub mod file;
pub mod http;
pub mod prometheus;
pub mod spool;
