//! inferwatt-core: what the agent and the collector share.
//!
//! - [`lineproto`]: InfluxDB line protocol, the one wire format (encode and decode).
//! - [`gpu_time`]: a model's GPU time in an interval (`gpu_s`), one rule for both sides.
//! - [`schema`]: the measurement, tag and field names of the wire contract
//!   (`docs/ARCHITECTURE.md`, "Wire schema").
//! - [`time`], [`csv`]: the civil calendar and times users give, CSV lines.
//! - [`units`]: unit conversions, one named function each, applied at the edges.
//! - [`validate`]: the physical bounds a wire point must meet to be stored.
//!
//! Nothing in this crate does I/O.

pub mod csv;
pub mod factors;
pub mod footprint;
pub mod gpu_time;
pub mod lineproto;
pub mod otlp;
pub mod schema;
pub mod time;
pub mod units;
pub mod validate;
