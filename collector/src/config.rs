//! The collector's configuration file (TOML): what `serve`, `import` and `token create`
//! read. Every key has a default; [`Config::validate`] checks the values without I/O and
//! names the key and the fix in each error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// `token` (default) or `none` (loopback demos only; logged loudly).
    #[serde(default)]
    pub auth: AuthMode,
    /// Days raw points are kept (0 = forever). Points older than this are not accepted,
    /// because their duplicates could no longer be recognised.
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
            auth: AuthMode::default(),
            raw_retention_days: default_raw_retention_days(),
            rollup_retention_days: 0,
            retention_interval_s: default_retention_interval_s(),
            tls: None,
            tokens: Vec::new(),
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
# "token" or "none" (loopback only, for demos).
auth = "token"
# Days raw points are kept (0 = forever); older points are refused.
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
        Config::from_toml(&text, path)
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
    fn bad_token_hash_is_named() {
        let err = Config::from_toml(
            "[[tokens]]\nsha256 = \"xyz\"\nsite = \"s\"\nhost = \"h\"",
            Path::new("c.toml"),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("'xyz'"), "{err}");
    }
}
