//! Reading the node's pod list over HTTP(S): the kubelet's `/pods` or the API server's
//! pods of this node, with the service account's bearer token and CA where configured.
//! The pipeline keeps the last list that parsed ([`PodView`]); a failed read keeps the
//! previous one, so a kubelet restart does not untag the pods that are still running.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::kubelet::PodIndex;
use super::podresources::DeviceIndex;
use crate::config::KubernetesConfig;

/// The pod list as last read, shared by the reading task and the sampler.
#[derive(Debug, Default)]
pub struct PodView {
    /// The last list that parsed.
    pub index: Option<Arc<PodIndex>>,
    /// When it was read.
    pub read_at: Option<Instant>,
    /// Why the last read failed, if it did.
    pub error: Option<String>,
    /// The kubelet's device assignments (PodResources), when its socket is configured
    /// and the last call succeeded.
    pub devices: Option<Arc<DeviceIndex>>,
    /// Why the last PodResources call failed, if it did.
    pub devices_error: Option<String>,
}

/// The view shared between the reading task and the sampler.
pub type SharedPodView = Arc<Mutex<PodView>>;

/// One reader of the pod list: the URL (variables expanded), the HTTP client and the
/// token file.
#[derive(Debug, Clone)]
pub struct PodListReader {
    url: String,
    client: reqwest::Client,
    token_file: Option<std::path::PathBuf>,
    pod_resources: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl PodListReader {
    /// A reader for `cfg`, or `None` when `pods_url` is unset. Errors name what to fix:
    /// an environment variable the URL uses that is unset, an unreadable CA file.
    pub fn new(cfg: &KubernetesConfig) -> Result<Option<PodListReader>, String> {
        let Some(url) = cfg.expanded_url(|k| std::env::var(k).ok())? else {
            return Ok(None);
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_s))
            .danger_accept_invalid_certs(cfg.insecure_skip_tls_verify);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("kubernetes.ca_file '{}': {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "kubernetes.ca_file '{}' is not a PEM bundle: {e}",
                    ca.display()
                )
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("no HTTP client for the pod list: {e}"))?;
        Ok(Some(PodListReader {
            url,
            client,
            token_file: cfg.token_file.clone(),
            pod_resources: cfg.pod_resources_socket.clone(),
            timeout: Duration::from_secs_f64(cfg.timeout_s),
        }))
    }

    /// The URL read.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads and parses the pod list once.
    pub async fn read(&self) -> Result<PodIndex, String> {
        let mut req = self.client.get(&self.url);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("kubernetes.token_file '{}': {e}", path.display()))?;
            req = req.bearer_auth(token.trim());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {}: reading the body: {e}", self.url))?;
        // A 401/403 body is a v1.Status, whose message the parser turns into advice.
        PodIndex::from_pod_list(&body).map_err(|e| format!("GET {} ({status}): {e}", self.url))
    }

    /// Reads once and stores the outcome in `view`.
    pub async fn refresh(&self, view: &SharedPodView) {
        let result = self.read().await;
        if let Some(socket) = &self.pod_resources {
            let devices = super::podresources::list(socket, self.timeout).await;
            let mut v = view.lock().unwrap_or_else(PoisonError::into_inner);
            match devices {
                Ok(a) => {
                    if v.devices_error.take().is_some() {
                        tracing::info!(socket = %socket.display(), "PodResources readable again");
                    }
                    v.devices = Some(Arc::new(DeviceIndex::new(&a)));
                }
                Err(e) => {
                    if v.devices_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(error = %e, "cannot ask the kubelet which pod holds each GPU; keeping the last answer");
                    }
                    v.devices_error = Some(e);
                }
            }
        }
        let mut v = view.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(index) => {
                if v.error.take().is_some() {
                    tracing::info!(url = %self.url, pods = index.len(), "pod list readable again");
                }
                v.index = Some(Arc::new(index));
                v.read_at = Some(Instant::now());
            }
            Err(e) => {
                if v.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "cannot read the pod list; keeping the last one");
                }
                v.error = Some(e);
            }
        }
    }
}
