//! Durable line-protocol shipping, one code path for the agent (shipping its intervals)
//! and the collector (forwarding to InfluxDB/VictoriaMetrics).
//!
//! [`ShipHandle::enqueue`] appends a batch of points to a bounded, fsync'd on-disk
//! [`spool`]; [`Shipper::run`] sends spooled batches in order to an InfluxDB v2 write
//! API ([`client`]), deletes them once the server answers 2xx, retries with backoff and
//! jitter otherwise, and moves batches the server rejects for good to a dead-letter file.
//! On overflow the oldest batches are [`fold`]ed into coarser intervals. See `README.md`
//! for the exactly-once argument. The agent's coarse shipping (`[ship] interval_s`)
//! folds its intervals into aligned [`window`]s before they reach the spool.

pub mod client;
pub mod config;
pub mod fold;
pub mod shipper;
pub mod spool;
pub mod window;

pub use client::{ClientError, Outcome, WriteClient};
pub use config::{ConfigError, ShipConfig, WireFormat};
pub use fold::{fold_points, ADDITIVE_FIELDS, FOLDED_POINTS_FIELD};
pub use shipper::{ShipHandle, ShipStats, Shipper, DEAD_LETTER_FILE};
pub use spool::SpoolError;
pub use window::ShipWindow;

/// Why shipping cannot start or a batch cannot be spooled.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("[ship] configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("shipping task failed: {0}")]
    Task(String),
}
