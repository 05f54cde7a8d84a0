//! inferwatt-collector: ingest → store → indicators → report.
//!
//! - [`ingest`]: the InfluxDB v2 write API, tokens, `import`.
//! - [`store`]: SQLite with migrations, typed tables, rollups and retention.
//! - The report path, bottom up: [`input`] (a period's rows out of the store),
//!   [`factors_file`] (the factors file format) and [`factors`] (resolution), then
//!   [`indicators`] (the computed report), [`report`] (formats) and [`reporting`]
//!   (store → input → factors → indicators → bytes, for the CLI and the API).
//! - [`api`]: the router ([`api::app`]); [`http`]: the state and error type every handler
//!   shares.
//! - [`server`]: binding, TLS, graceful shutdown.
//! - [`config`], [`metrics`]: the configuration file and the collector's own metrics.

pub mod api;
pub mod config;
pub mod factors;
pub mod factors_file;
pub mod http;
pub mod indicators;
pub mod ingest;
pub mod input;
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
