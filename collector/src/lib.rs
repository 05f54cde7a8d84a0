//! inferwatt-collector: ingest → store → indicators → report.
//!
//! - [`ingest`]: the InfluxDB v2 write API, tokens, `import`.
//! - [`store`]: SQLite with migrations, typed tables, rollups and retention.
//! - [`api`]: the router ([`api::app`]) and its shared state.
//! - [`server`]: binding, TLS, graceful shutdown.
//! - [`config`], [`metrics`]: the configuration file and the collector's own metrics.

pub mod api;
pub mod config;
pub mod factors_file;
pub mod indicators;
pub mod ingest;
pub mod metrics;
pub mod report;
pub mod reporting;
pub mod server;
pub mod store;
pub mod web;

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
