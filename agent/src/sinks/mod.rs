//! Sinks publish what the pipeline computed; they never compute. Shipping over HTTP
//! with the durable spool lives in the `inferwatt-ship` crate (shared with the
//! collector's forwarding).

pub mod file;
pub mod otlp;
pub mod prometheus;
