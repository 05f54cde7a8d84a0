//! The collector's configuration file (TOML): what `serve`, `import` and `token create`
//! read. Every key has a default; [`Config::validate`] checks the values without I/O and
//! names the key and the fix in each error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use inferwatt_ship::ShipConfig;
use serde::{Deserialize, Serialize};

use crate::factors_file::FactorsFile;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}; check the path given to --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file '{path}' is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config section [forward]: {0}")]
    Forward(String),
    #[error("config key '{key}' is '{value}': {fix}")]
    Invalid {
        key: &'static str,
        value: String,
        fix: &'static str,
    },
}

/// How writers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Token …` checked against the tokens table and `[[tokens]]`.
    #[default]
    Token,
    /// No authentication. Only accepted with a loopback `listen` address (demos).
    None,
}

/// The collector's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP(S) server binds; loopback by default (8086 is InfluxDB's port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// SQLite database file (created when missing).
    #[serde(default = "default_db_path")]
    pub db_path: PathBuf,
    /// Largest accepted write body, in bytes, both as sent and after gzip decompression.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Write requests decoded and stored at once; more are answered 429 with
    /// `Retry-After`. Memory for writes stays under about this many × 5 × `max_body_bytes`
    /// (the body, its decompressed copy and the decoded points).
    #[serde(default = "default_max_concurrent_writes")]
    pub max_concurrent_writes: usize,
    /// `token` (default) or `none` (loopback demos only; logged loudly).
    #[serde(default)]
    pub auth: AuthMode,
    /// Days raw points are kept (0 = forever), counted from their timestamp and from when
    /// they were stored (a row goes when both are older). Old data is never refused;
    /// rollups keep its sums.
    #[serde(default = "default_raw_retention_days")]
    pub raw_retention_days: u32,
    /// Days hourly rollups are kept (0 = forever).
    #[serde(default)]
    pub rollup_retention_days: u32,
    /// Seconds between two retention passes.
    #[serde(default = "default_retention_interval_s")]
    pub retention_interval_s: u64,
    /// TLS: serve HTTPS when set.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Tokens listed in the config, in addition to those in the database's `tokens` table.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Who may read `GET /api/v1/report`: `none` (anyone who can reach the server) or
    /// `token` (any valid write token). Unset: `none` when `listen` is loopback, else
    /// `token`. Reports are read-only aggregates, but they reveal usage per model and site.
    #[serde(default)]
    pub report_auth: Option<ReportAuth>,
    /// `[factors]`: the factors reports use (same keys as a `--factors` file); unset, the
    /// agents' reported PUE/WUE and the built-in tables apply. `report --factors FILE`
    /// overrides it.
    #[serde(default)]
    pub factors: Option<FactorsFile>,
    /// `[store]`: where accepted points are stored and reports read them (embedded SQLite
    /// by default, or a VictoriaMetrics server or cluster).
    #[serde(default)]
    pub store: StoreConfig,
    /// `[forward]`: forward every accepted point to another InfluxDB v2 write API
    /// (InfluxDB, VictoriaMetrics) through a durable spool, after the write commits here.
    #[serde(default)]
    pub forward: Option<ShipConfig>,
    /// Directory of the config file (relative paths in `[factors]` start there); set by
    /// [`Config::load`], empty otherwise.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded SQLite file at `db_path`.
    #[default]
    Sqlite,
    /// A VictoriaMetrics single node or cluster (`write_url`, `query_url`).
    VictoriaMetrics,
}

/// `[store]`: the backend and, for VictoriaMetrics, its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (default) or `victoriametrics`.
    #[serde(default)]
    pub backend: Backend,
    /// VictoriaMetrics' InfluxDB write endpoint: single node
    /// `http://vm:8428/api/v2/write`, cluster `http://vminsert:8480/insert/0/influx/api/v2/write`.
    #[serde(default)]
    pub write_url: Option<String>,
    /// VictoriaMetrics' Prometheus query API: single node `http://vm:8428/prometheus`,
    /// cluster `http://vmselect:8481/select/0/prometheus`.
    #[serde(default)]
    pub query_url: Option<String>,
    /// Timeout of one request to VictoriaMetrics, in seconds.
    #[serde(default = "default_store_timeout_s")]
    pub timeout_s: f64,
}

fn default_store_timeout_s() -> f64 {
    30.0
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sqlite,
            write_url: None,
            query_url: None,
            timeout_s: default_store_timeout_s(),
        }
    }
}

impl StoreConfig {
    /// The VictoriaMetrics settings, when that is the backend (validated URLs).
    pub fn victoria(&self) -> Option<crate::store::victoria::VictoriaConfig> {
        match (self.backend, &self.write_url, &self.query_url) {
            (Backend::VictoriaMetrics, Some(w), Some(q)) => {
                Some(crate::store::victoria::VictoriaConfig {
                    write_url: w.clone(),
                    query_url: q.clone(),
                    timeout_s: self.timeout_s,
                })
            }
            _ => None,
        }
    }
}

impl StoreConfig {
    /// Checks the `[store]` keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.timeout_s > 0.0 && self.timeout_s <= 3600.0) {
            return Err(ConfigError::Invalid {
                key: "store.timeout_s",
                value: self.timeout_s.to_string(),
                fix: "use a number of seconds above 0 and at most 3600 (default 30)",
            });
        }
        let urls = [
            ("store.write_url", &self.write_url),
            ("store.query_url", &self.query_url),
        ];
        match self.backend {
            Backend::Sqlite => {
                for (key, v) in urls {
                    if let Some(v) = v {
                        return Err(ConfigError::Invalid {
                            key,
                            value: v.clone(),
                            fix: "it is only used with backend = \"victoriametrics\"; set that, or remove the key",
                        });
                    }
                }
            }
            Backend::VictoriaMetrics => {
                for (key, v) in urls {
                    let Some(v) = v else {
                        return Err(ConfigError::Invalid {
                            key,
                            value: String::new(),
                            fix: "backend = \"victoriametrics\" needs write_url (the InfluxDB write endpoint) and query_url (the Prometheus query API)",
                        });
                    };
                    let ok = v.parse::<axum::http::Uri>().ok().is_some_and(|u| {
                        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                    });
                    if !ok {
                        return Err(ConfigError::Invalid {
                            key,
                            value: v.clone(),
                            fix: "give an http:// or https:// URL with a host, e.g. http://vmselect:8481/select/0/prometheus",
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Who may read reports over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportAuth {
    /// No token needed.
    None,
    /// Any valid write token (`Authorization: Token …`).
    Token,
}

/// `[tls]`: PEM files for rustls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[[tokens]]`: a token given by its SHA-256 (hex), bound to a site and host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lower-case hex SHA-256 of the token (`inferwatt-collector token create` prints it).
    pub sha256: String,
    /// The `site` tag this token may write.
    pub site: String,
    /// The `host` tag this token may write, or `*` for every host of the site.
    pub host: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8086))
}
fn default_db_path() -> PathBuf {
    PathBuf::from("./inferwatt.db")
}
fn default_max_body_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_max_concurrent_writes() -> usize {
    4
}
fn default_raw_retention_days() -> u32 {
    35
}
fn default_retention_interval_s() -> u64 {
    3600
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            db_path: default_db_path(),
            max_body_bytes: default_max_body_bytes(),
            max_concurrent_writes: default_max_concurrent_writes(),
            auth: AuthMode::default(),
            raw_retention_days: default_raw_retention_days(),
            rollup_retention_days: 0,
            retention_interval_s: default_retention_interval_s(),
            tls: None,
            tokens: Vec::new(),
            report_auth: None,
            factors: None,
            store: StoreConfig::default(),
            forward: None,
            base_dir: PathBuf::new(),
        }
    }
}

/// A commented example configuration; `example_parses_to_defaults` keeps it in step.
pub const EXAMPLE_TOML: &str = r#"# inferwatt-collector configuration. Every key is optional.

# Address the HTTP(S) server binds (InfluxDB's port, loopback).
listen = "127.0.0.1:8086"
# SQLite database file.
db_path = "./inferwatt.db"
# Largest write body in bytes, as sent and after gzip decompression.
max_body_bytes = 33554432
# Write requests decoded and stored at once; more get 429 and Retry-After.
max_concurrent_writes = 4
# "token" or "none" (loopback only, for demos).
auth = "token"
# Days raw points are kept (0 = forever), by timestamp and by ingest time; data of any
# age is accepted, and its hourly/daily rollups stay.
raw_retention_days = 35
# Days hourly rollups are kept (0 = forever).
rollup_retention_days = 0
# Seconds between retention passes.
retention_interval_s = 3600

# [tls]
# cert_file = "/etc/inferwatt/cert.pem"
# key_file = "/etc/inferwatt/key.pem"

# [[tokens]]
# sha256 = "<hex SHA-256 of the token>"
# site = "fra1"
# host = "*"

# Who may read GET /api/v1/report: "none" or "token" (any valid token).
# Unset: "none" when 'listen' is loopback, else "token".
# report_auth = "token"

# Factors for reports (the keys of a --factors file); unset: the agents' site points
# and built-in tables.
# [factors]
# [factors.sites.fra1]
# pue = 1.2
# intensity_g_per_kwh = 350.0

# Where points are stored: "sqlite" (db_path) or "victoriametrics" (a single node or a
# cluster; the collector then keeps no state and several can serve one cluster; the
# server must run with -dedup.minScrapeInterval=1ms, checked at start).
# [store]
# backend = "victoriametrics"
# write_url = "http://vminsert:8480/insert/0/influx/api/v2/write"
# query_url = "http://vmselect:8481/select/0/prometheus"
# timeout_s = 30.0

# Forward every accepted point to InfluxDB v2 / VictoriaMetrics (durable spool).
# [forward]
# url = "http://victoria.example:8428"
# spool_dir = "/var/lib/inferwatt-collector/forward"
# Or OTLP/HTTP (cumulative sums of the intervals; url used as given):
# format = "otlp"
# url = "http://otel-collector:4318/v1/metrics"
"#;

impl Config {
    /// Parses TOML text; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&text, path)?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    /// Whether `GET /api/v1/report` needs a token (see [`Config::report_auth`]).
    pub fn report_needs_token(&self) -> bool {
        match self.report_auth {
            Some(ReportAuth::Token) => true,
            Some(ReportAuth::None) => false,
            None => !self.listen.ip().is_loopback(),
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                value: self.max_body_bytes.to_string(),
                fix: "use at least 1024 (the default is 33554432, 32 MiB)",
            });
        }
        if self.max_concurrent_writes == 0 {
            return Err(ConfigError::Invalid {
                key: "max_concurrent_writes",
                value: "0".into(),
                fix: "use at least 1 (the default is 4)",
            });
        }
        if self.auth == AuthMode::None && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "auth",
                value: "none".into(),
                fix:
                    "'none' is only allowed with a loopback 'listen' address; use auth = \"token\"",
            });
        }
        if self.retention_interval_s == 0 {
            return Err(ConfigError::Invalid {
                key: "retention_interval_s",
                value: "0".into(),
                fix: "use a positive number of seconds (default 3600)",
            });
        }
        self.store.validate()?;
        if let Some(f) = &self.forward {
            f.validate()
                .map_err(|e| ConfigError::Forward(e.to_string()))?;
            if f.interval_s.is_some() {
                return Err(ConfigError::Forward(
                    "key 'interval_s' applies to an agent's [ship] only (forwarding sends every write as stored); remove it".into(),
                ));
            }
        }
        for t in &self.tokens {
            let ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "tokens.sha256",
                    value: t.sha256.clone(),
                    fix: "give the 64 lower-case hex digits printed by 'inferwatt-collector token create'",
                });
            }
            if t.site.is_empty() || t.host.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "tokens.site/host",
                    value: format!("{}/{}", t.site, t.host),
                    fix: "bind each token to a non-empty site and host (host may be '*')",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_defaults() {
        let parsed = Config::from_toml(EXAMPLE_TOML, Path::new("example")).expect("parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("lisen = \"127.0.0.1:1\"", Path::new("c.toml"))
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("lisen") && msg.contains("c.toml"), "{msg}");
    }

    #[test]
    fn auth_none_needs_loopback() {
        let err = Config::from_toml(
            "listen = \"0.0.0.0:8086\"\nauth = \"none\"",
            Path::new("c.toml"),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("'auth'"), "{err}");
        Config::from_toml("auth = \"none\"", Path::new("c.toml")).expect("loopback is fine");
    }

    #[test]
    fn factors_forward_and_report_auth_sections_parse() {
        let c = Config::from_toml(
            "report_auth = \"token\"\n[factors.sites.fra1]\npue = 1.2\n[forward]\nurl = \"http://v:8428\"\nspool_dir = \"/tmp/f\"",
            Path::new("c.toml"),
        )
        .expect("parses");
        assert!(c.report_needs_token());
        let f = c.factors.expect("factors");
        assert_eq!(f.sites.get("fra1").and_then(|s| s.pue), Some(1.2));
        assert_eq!(c.forward.expect("forward").url, "http://v:8428");
        let err = Config::from_toml(
            "[forward]\nurl = \"v:8428\"\nspool_dir = \"/tmp/f\"",
            Path::new("c.toml"),
        )
        .expect_err("bad url");
        assert!(err.to_string().contains("'ship.url'"), "{err}");
        let err = Config::from_toml(
            "[forward]\nurl = \"http://v:8428\"\nspool_dir = \"/tmp/f\"\ninterval_s = 60",
            Path::new("c.toml"),
        )
        .expect_err("an agent's key");
        assert!(
            err.to_string()
                .contains("'interval_s' applies to an agent's [ship] only"),
            "{err}"
        );
        let err =
            Config::from_toml("[factors]\npuee = 1", Path::new("c.toml")).expect_err("unknown");
        assert!(err.to_string().contains("puee"), "{err}");
        assert!(!Config::default().report_needs_token());
        let open = Config::from_toml("listen = \"0.0.0.0:8086\"", Path::new("c.toml")).expect("ok");
        assert!(open.report_needs_token());
    }

    #[test]
    fn bad_token_hash_is_named() {
        let err = Config::from_toml(
            "[[tokens]]\nsha256 = \"xyz\"\nsite = \"s\"\nhost = \"h\"",
            Path::new("c.toml"),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("'xyz'"), "{err}");
    }
}
