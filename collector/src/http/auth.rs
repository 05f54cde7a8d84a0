//! Write tokens: generation, hashing, lookup (config `[[tokens]]` and the database's
//! `tokens` table) and the site/host binding check.
//!
//! Tokens are 256 random bits (`iw_` + 64 hex digits) and only their SHA-256 is stored.
//! A slow KDF (argon2, bcrypt) protects low-entropy passwords against offline guessing;
//! with 2^256 possible tokens a single fast hash already makes guessing hopeless, and it
//! keeps each request's check cheap. Lookup is by hash in a map or a primary-key index,
//! so no secret-dependent comparison of the token itself happens and a constant-time
//! comparison is not needed: timing can reveal at most something about the hash of a
//! guess, which says nothing about the stored tokens.

use std::collections::HashMap;

use inferwatt_core::lineproto::Point;
use sha2::{Digest, Sha256};

use crate::config::{AuthMode, Config};
use crate::store::{Store, StoreError};

/// Why a token cannot be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no 'Authorization: Token …' header; give the agent its token (inferwatt-collector token create)")]
    Missing,
    #[error("the token is not known; create one with 'inferwatt-collector token create' or list its sha256 in [[tokens]]")]
    Unknown,
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a token may write: one site, and one host or every host (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub site: String,
    pub host: String,
}

impl Binding {
    /// Whether a point tagged `site`/`host` may be written with this binding.
    pub fn allows(&self, site: &str, host: &str) -> bool {
        self.site == site && (self.host == "*" || self.host == host)
    }
}

/// A fresh token: `iw_` and 64 hex digits from the OS random generator.
pub fn generate_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(format!("iw_{}", hex::encode(bytes)))
}

/// Lower-case hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks `Authorization` headers against the configured and stored tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    mode: AuthMode,
    configured: HashMap<String, Binding>,
}

impl Authenticator {
    pub fn new(config: &Config) -> Authenticator {
        let configured = config
            .tokens
            .iter()
            .map(|t| {
                (
                    t.sha256.clone(),
                    Binding {
                        site: t.site.clone(),
                        host: t.host.clone(),
                    },
                )
            })
            .collect();
        Authenticator {
            mode: config.auth,
            configured,
        }
    }

    /// The binding of the request's token, or `None` when authentication is off.
    /// Accepts `Token X` (InfluxDB) and `Bearer X`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        store: &Store,
    ) -> Result<Option<Binding>, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(None);
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Token ")
                    .or_else(|| h.strip_prefix("Bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash = hash_token(token);
        if let Some(b) = self.configured.get(&hash) {
            return Ok(Some(b.clone()));
        }
        match store.find_token(&hash)? {
            Some(row) => Ok(Some(Binding {
                site: row.site,
                host: row.host,
            })),
            None => Err(AuthError::Unknown),
        }
    }
}

/// Why a point may not be written: its 0-based index and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub reason: String,
    /// True when the token is not bound to the point's site/host (403); false when the
    /// point lacks the tags every point must carry (400).
    pub forbidden: bool,
}

/// Checks that every point carries `site` and `host` tags and, with a binding, that the
/// token may write them.
pub fn authorize(binding: Option<&Binding>, points: &[Point]) -> Result<(), Refusal> {
    for (index, p) in points.iter().enumerate() {
        let (Some(site), Some(host)) = (p.tag_value("site"), p.tag_value("host")) else {
            return Err(Refusal {
                index,
                reason: format!(
                    "point of '{}' lacks the 'site' or 'host' tag; every point must carry both",
                    p.measurement
                ),
                forbidden: binding.is_some(),
            });
        };
        if let Some(b) = binding {
            if !b.allows(site, host) {
                return Err(Refusal {
                    index,
                    reason: format!(
                        "this token may write site '{}' host '{}', not site '{site}' host '{host}'",
                        b.site, b.host
                    ),
                    forbidden: true,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = generate_token().expect("random");
        let b = generate_token().expect("random");
        assert_eq!(a.len(), 3 + 64);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn wildcard_host_covers_the_site_only() {
        let b = Binding {
            site: "s".into(),
            host: "*".into(),
        };
        assert!(b.allows("s", "any"));
        assert!(!b.allows("t", "any"));
        let b = Binding {
            site: "s".into(),
            host: "h".into(),
        };
        assert!(b.allows("s", "h"));
        assert!(!b.allows("s", "h2"));
    }

    #[test]
    fn stored_and_configured_tokens_authenticate() {
        let store = Store::open_in_memory().expect("store");
        let stored = generate_token().expect("random");
        store
            .add_token(&hash_token(&stored), "s", "h", 0)
            .expect("add");
        let mut config = Config::default();
        config.tokens.push(crate::config::TokenConfig {
            sha256: hash_token("cfg-token"),
            site: "c".into(),
            host: "*".into(),
        });
        let auth = Authenticator::new(&config);
        let got = auth
            .authenticate(Some(&format!("Token {stored}")), &store)
            .expect("known");
        assert_eq!(got.map(|b| b.host), Some("h".to_string()));
        let got = auth
            .authenticate(Some("Bearer cfg-token"), &store)
            .expect("known");
        assert_eq!(got.map(|b| b.site), Some("c".to_string()));
        assert!(matches!(
            auth.authenticate(Some("Token nope"), &store),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            auth.authenticate(None, &store),
            Err(AuthError::Missing)
        ));
    }
}
