//! The InfluxDB v2 write API client: one `POST {url}/api/v2/write?org=&bucket=&precision=ns`
//! per batch, gzip-compressed, with a token; classifies the answer into committed,
//! rejected for good (the batch's fault), or worth retrying (the server's or network's).

use std::io::Write;
use std::time::Duration;

use crate::config::{ShipConfig, WireFormat};

/// Why the HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read 'ship.ca_file' '{path}': {source}; point it at a readable PEM file of CA certificates")]
    CaFileRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("'ship.ca_file' '{path}' holds no usable PEM certificate ({reason}); give a PEM file with '-----BEGIN CERTIFICATE-----' blocks")]
    CaFileParse {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot build the HTTP client for '{url}': {reason}")]
    Build { url: String, reason: String },
}

/// What became of one write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: the server committed the batch.
    Committed,
    /// 4xx other than 408/429/401/403: the server will never accept this batch; status 0:
    /// the batch was not sent, since it cannot be put in the server's format.
    Rejected { status: u16, message: String },
    /// 5xx, 408, 429, 401, 403, a connection error or a timeout: try again later;
    /// `retry_after` is the server's `Retry-After`, when it gave one in seconds.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Longest server message kept for logs and the dead-letter file.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A client for one write endpoint.
#[derive(Debug, Clone)]
pub struct WriteClient {
    http: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
    gzip: bool,
    format: WireFormat,
    /// OTLP: the cumulative totals of what the server accepted, per series.
    totals: std::sync::Arc<std::sync::Mutex<inferwatt_core::otlp::Totals>>,
}

impl WriteClient {
    /// Builds the client from a validated configuration (reads `ca_file`).
    pub fn new(cfg: &ShipConfig) -> Result<WriteClient, ClientError> {
        let build_err = |reason: String| ClientError::Build {
            url: cfg.url.clone(),
            reason,
        };
        let url = match cfg.format {
            WireFormat::LineProtocol => {
                let mut url =
                    reqwest::Url::parse(&format!("{}/api/v2/write", cfg.url.trim_end_matches('/')))
                        .map_err(|e| build_err(e.to_string()))?;
                url.query_pairs_mut()
                    .append_pair("org", &cfg.org)
                    .append_pair("bucket", &cfg.bucket)
                    .append_pair("precision", "ns");
                url
            }
            WireFormat::Otlp => {
                reqwest::Url::parse(&cfg.url).map_err(|e| build_err(e.to_string()))?
            }
        };
        let timeout = Duration::from_secs_f64(cfg.timeout_s);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("inferwatt-ship/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFileRead {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::CaFileParse {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(ClientError::CaFileParse {
                    path: path.clone(),
                    reason: "no certificate found".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if cfg.insecure_skip_verify {
            tracing::warn!(
                url = %cfg.url,
                "'ship.insecure_skip_verify' is on: TLS certificates are NOT checked; anyone on the path can read and forge this data. Use it for tests only; set 'ship.ca_file' instead"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| build_err(e.to_string()))?;
        Ok(WriteClient {
            http,
            url,
            token: cfg.token.clone(),
            gzip: cfg.gzip,
            format: cfg.format,
            totals: Default::default(),
        })
    }

    /// The full write URL, query included.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Sends one line-protocol body and classifies the answer. With `format = "otlp"`,
    /// the body's intervals become cumulative sums continuing the totals of what this
    /// client sent before (since it started, per series: `inferwatt_core::otlp::Totals`),
    /// kept only once the server accepts the batch.
    pub async fn write(&self, body: &[u8]) -> Outcome {
        let otlp;
        let mut next_totals = None;
        let (body, content_type, scheme) = match self.format {
            WireFormat::LineProtocol => (body, "text/plain; charset=utf-8", "Token"),
            WireFormat::Otlp => {
                let points = match inferwatt_core::lineproto::decode(
                    body,
                    inferwatt_core::lineproto::Precision::Nanoseconds,
                    0,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        return Outcome::Rejected {
                            status: 0,
                            message: format!("not line protocol, so not sent as OTLP: {e}"),
                        }
                    }
                };
                let mut resources = inferwatt_core::otlp::intervals(&points, "inferwatt");
                let (next, dropped) = self
                    .totals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .cumulate(&mut resources);
                if dropped > 0 {
                    tracing::info!(
                        points = dropped,
                        "OTLP: intervals that end no later than the last one sent for their series are not sent again (re-sends, or older data a cumulative series cannot take)"
                    );
                }
                next_totals = Some(next);
                otlp = inferwatt_core::otlp::encode_request(
                    &resources,
                    "inferwatt",
                    env!("CARGO_PKG_VERSION"),
                );
                (otlp.as_slice(), "application/x-protobuf", "Bearer")
            }
        };
        let mut req = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, format!("{scheme} {token}"));
        }
        let body = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            match gz.write_all(body).and_then(|()| gz.finish()) {
                Ok(compressed) => {
                    req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
                    compressed
                }
                Err(_) => body.to_vec(),
            }
        } else {
            body.to_vec()
        };
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                return Outcome::Retry {
                    reason: format!("request {kind}: {}", error_chain(&e)),
                    retry_after: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            if let Some(next) = next_totals {
                *self
                    .totals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
            }
            return Outcome::Committed;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let message = match resp.bytes().await {
            Ok(b) => {
                let end = b.len().min(MAX_MESSAGE_BYTES);
                String::from_utf8_lossy(&b[..end]).trim().to_string()
            }
            Err(e) => format!("(body unreadable: {e})"),
        };
        let code = status.as_u16();
        match code {
            // Auth failures say nothing about the batch: keep it until the token is fixed.
            408 | 429 | 401 | 403 => Outcome::Retry {
                reason: format!("HTTP {code}: {message}"),
                retry_after,
            },
            400..=499 => Outcome::Rejected {
                status: code,
                message,
            },
            _ => Outcome::Retry {
                reason: format!("HTTP {code}: {message}"),
                retry_after,
            },
        }
    }
}

/// An error with its sources, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
