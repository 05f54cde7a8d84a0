//! `[ship]` configuration: where to write (InfluxDB v2 write API), how to batch, time out
//! and trust TLS, and where and how large the on-disk spool is. Pure validation only; the
//! I/O happens in `Shipper::open`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Why a `[ship]` configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("key 'ship.{key}': '{value}' {problem}; {fix}")]
    Invalid {
        key: &'static str,
        value: String,
        problem: &'static str,
        fix: &'static str,
    },
}

/// Shipping to an InfluxDB v2 write API (an inferwatt collector, InfluxDB 2/3,
/// VictoriaMetrics) through a bounded, fsync'd on-disk spool.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// Base URL of the server, e.g. `http://collector.example:8086`; `/api/v2/write` is
    /// appended. With `format = "otlp"`, the full OTLP metrics URL, used as given
    /// (`http://otel-collector:4318/v1/metrics`, VictoriaMetrics'
    /// `http://vm:8428/opentelemetry/v1/metrics`).
    pub url: String,
    /// What is sent: `lineprotocol` (InfluxDB v2 write API, the default) or `otlp`
    /// (OTLP/HTTP protobuf, each interval as delta sums: `inferwatt_core::otlp`).
    #[serde(default)]
    pub format: WireFormat,
    /// API token sent as `Authorization: Token <token>` (none: no header).
    #[serde(default)]
    pub token: Option<String>,
    /// InfluxDB organisation (`org=` query parameter).
    #[serde(default)]
    pub org: String,
    /// InfluxDB bucket (`bucket=` query parameter).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// Most points in one write request (a single spooled interval larger than this is sent whole).
    #[serde(default = "default_batch_max_points")]
    pub batch_max_points: usize,
    /// Longest time a spooled interval waits for companions before it is sent, in seconds.
    #[serde(default = "default_flush_interval_s")]
    pub flush_interval_s: f64,
    /// Timeout of one write request (connect + send + response), in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Compress request bodies with gzip (`Content-Encoding: gzip`).
    #[serde(default = "default_gzip")]
    pub gzip: bool,
    /// PEM file of CA certificates to trust for `https://` (added to the built-in web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. For tests only: anyone on the path can read and forge data.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Directory of the on-disk spool (empty: the agent uses `<state.dir>/spool`).
    #[serde(default)]
    pub spool_dir: PathBuf,
    /// Bound of the spool in bytes; over it the oldest intervals are folded into coarser ones.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// First retry delay after a failed write, in seconds (doubles up to `backoff_max_s`, with jitter).
    #[serde(default = "default_backoff_min_s")]
    pub backoff_min_s: f64,
    /// Longest retry delay, in seconds (a server's `Retry-After` is honoured even when longer).
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
    /// On shutdown, how long to keep sending what is spooled before leaving it on disk, in seconds.
    #[serde(default = "default_shutdown_flush_s")]
    pub shutdown_flush_s: f64,
    /// Agent only: ship windows of this many seconds of UTC time (one point per series
    /// per window, energies summed) instead of every sampled interval. At least the
    /// sampling interval, at most 3600, and 3600 / interval_s a whole number. Unset (or
    /// equal to the sampling interval): every interval is shipped as sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
}

fn default_bucket() -> String {
    "inferwatt".to_string()
}
fn default_batch_max_points() -> usize {
    5000
}
fn default_flush_interval_s() -> f64 {
    1.0
}
fn default_timeout_s() -> f64 {
    10.0
}
fn default_gzip() -> bool {
    true
}
fn default_spool_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_backoff_min_s() -> f64 {
    1.0
}
fn default_backoff_max_s() -> f64 {
    60.0
}
fn default_shutdown_flush_s() -> f64 {
    2.0
}

/// What a shipper sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// InfluxDB line protocol to `<url>/api/v2/write`.
    #[default]
    LineProtocol,
    /// OTLP/HTTP protobuf to `<url>`.
    Otlp,
}

/// Smallest accepted `spool_max_bytes`: a few intervals of a large host.
pub const MIN_SPOOL_BYTES: u64 = 4096;

/// Longest shipping window (`interval_s`): an hour, which every window length divides.
pub const MAX_SHIP_INTERVAL_S: f64 = 3600.0;

impl ShipConfig {
    /// A configuration with every default, for `url` and `spool_dir`.
    pub fn new(url: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        ShipConfig {
            url: url.into(),
            token: None,
            org: String::new(),
            bucket: default_bucket(),
            batch_max_points: default_batch_max_points(),
            flush_interval_s: default_flush_interval_s(),
            timeout_s: default_timeout_s(),
            gzip: default_gzip(),
            ca_file: None,
            insecure_skip_verify: false,
            format: WireFormat::LineProtocol,
            spool_dir: spool_dir.into(),
            spool_max_bytes: default_spool_max_bytes(),
            backoff_min_s: default_backoff_min_s(),
            backoff_max_s: default_backoff_max_s(),
            shutdown_flush_s: default_shutdown_flush_s(),
            interval_s: None,
        }
    }

    /// Checks `interval_s` against the sampling interval of the agent that ships: at
    /// least `sampling_interval_s`, at most 3600 and a whole divisor of 3600 seconds, so
    /// that windows aligned to the epoch never straddle an hour.
    pub fn validate_interval(&self, sampling_interval_s: f64) -> Result<(), ConfigError> {
        let Some(w) = self.interval_s else {
            return Ok(());
        };
        let bad = |problem, fix| ConfigError::Invalid {
            key: "interval_s",
            value: w.to_string(),
            problem,
            fix,
        };
        if !(w.is_finite() && w > 0.0 && w <= MAX_SHIP_INTERVAL_S) {
            return Err(bad(
                "is outside 0 to 3600 seconds",
                "use a whole divisor of 3600 such as 10, 60, 300 or 900 (remove the key to ship every interval)",
            ));
        }
        if w < sampling_interval_s {
            return Err(bad(
                "is shorter than 'sampling.interval_s'",
                "make it at least the sampling interval (remove the key to ship every interval)",
            ));
        }
        // In the nanoseconds the windows are cut in: the length divides an hour exactly.
        let hour_ns = (MAX_SHIP_INTERVAL_S * 1e9) as i64;
        let window_ns = (w * 1e9).round() as i64;
        if window_ns == 0 || hour_ns % window_ns != 0 {
            return Err(bad(
                "does not divide an hour: 3600 / interval_s must be a whole number, so that no window straddles an hour",
                "use a whole divisor of 3600 such as 10, 60, 300 or 900",
            ));
        }
        Ok(())
    }

    /// Checks every value without touching the disk or the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(ConfigError::Invalid {
                key: "url",
                value: self.url.clone(),
                problem: "is not an http:// or https:// URL",
                fix: "write the server's base URL, e.g. 'http://collector.example:8086'",
            });
        }
        if self.batch_max_points == 0 {
            return Err(ConfigError::Invalid {
                key: "batch_max_points",
                value: "0".into(),
                problem: "must be at least 1",
                fix: "remove the key to use 5000",
            });
        }
        for (key, value, lo, hi) in [
            ("flush_interval_s", self.flush_interval_s, 0.0, 3600.0),
            ("timeout_s", self.timeout_s, 0.001, 3600.0),
            ("backoff_min_s", self.backoff_min_s, 0.001, 3600.0),
            ("backoff_max_s", self.backoff_max_s, 0.001, 86400.0),
            ("shutdown_flush_s", self.shutdown_flush_s, 0.0, 3600.0),
        ] {
            if !(lo..=hi).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    problem: "is outside its range of seconds",
                    fix: "use a positive number of seconds (remove the key for the default)",
                });
            }
        }
        if self.backoff_max_s < self.backoff_min_s {
            return Err(ConfigError::Invalid {
                key: "backoff_max_s",
                value: self.backoff_max_s.to_string(),
                problem: "is below 'backoff_min_s'",
                fix: "make it at least 'backoff_min_s'",
            });
        }
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            return Err(ConfigError::Invalid {
                key: "spool_max_bytes",
                value: self.spool_max_bytes.to_string(),
                problem: "is below the 4096-byte minimum",
                fix: "raise it (the default is 268435456, 256 MiB)",
            });
        }
        // Against the shortest sampling interval the agent accepts; the agent checks it
        // against its own with `validate_interval`.
        self.validate_interval(0.0)?;
        if self.spool_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "spool_dir",
                value: String::new(),
                problem: "is empty",
                fix: "set a directory the process can write, e.g. '/var/lib/inferwatt-agent/spool'",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_takes_the_defaults() {
        let cfg: ShipConfig =
            toml_from("url = \"http://c:8086\"\nspool_dir = \"/tmp/s\"").expect("parses");
        assert_eq!(cfg, ShipConfig::new("http://c:8086", "/tmp/s"));
        cfg.validate().expect("valid");
    }

    #[test]
    fn bad_values_name_the_key_the_value_and_the_fix() {
        let mut cfg = ShipConfig::new("collector:8086", "/tmp/s");
        let msg = cfg.validate().expect_err("no scheme").to_string();
        assert!(msg.contains("'ship.url': 'collector:8086'"), "{msg}");
        cfg.url = "http://c".into();
        cfg.spool_max_bytes = 10;
        let msg = cfg.validate().expect_err("too small").to_string();
        assert!(
            msg.contains("'ship.spool_max_bytes': '10'") && msg.contains("raise"),
            "{msg}"
        );
        cfg.spool_max_bytes = MIN_SPOOL_BYTES;
        cfg.timeout_s = 0.0;
        assert!(cfg
            .validate()
            .expect_err("zero")
            .to_string()
            .contains("timeout_s"));
    }

    #[test]
    fn the_shipping_window_divides_an_hour_and_is_no_shorter_than_sampling() {
        let with = |w: f64| ShipConfig {
            interval_s: Some(w),
            ..ShipConfig::new("http://c", "/tmp/s")
        };
        for w in [0.5, 1.0, 5.0, 7.5, 60.0, 900.0, 3600.0] {
            with(w).validate_interval(0.5).expect("divides an hour");
            with(w).validate().expect("valid alone");
        }
        ShipConfig::new("http://c", "/tmp/s")
            .validate_interval(30.0)
            .expect("unset is always valid");
        let msg = with(7.0).validate_interval(1.0).expect_err("7").to_string();
        assert_eq!(
            msg,
            "key 'ship.interval_s': '7' does not divide an hour: 3600 / interval_s must be a whole number, so that no window straddles an hour; use a whole divisor of 3600 such as 10, 60, 300 or 900"
        );
        let msg = with(5.0)
            .validate_interval(10.0)
            .expect_err("short")
            .to_string();
        assert!(
            msg.contains("'ship.interval_s': '5' is shorter than 'sampling.interval_s'"),
            "{msg}"
        );
        for w in [7200.0, 0.0, -60.0, f64::NAN] {
            let msg = with(w).validate().expect_err("range").to_string();
            assert!(
                msg.contains("'ship.interval_s'") && msg.contains("outside 0 to 3600"),
                "{msg}"
            );
        }
        let cfg: ShipConfig =
            toml_from("url = \"http://c\"\nspool_dir = \"/s\"\ninterval_s = 60").expect("parses");
        assert_eq!(cfg.interval_s, Some(60.0));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml_from("url = \"http://c\"\nbuckit = \"x\"").expect_err("unknown");
        assert!(err.contains("buckit"), "{err}");
    }

    fn toml_from(text: &str) -> Result<ShipConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}
