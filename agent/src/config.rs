//! The agent's configuration: TOML, every key documented and defaulted (except where to
//! ship, which has no sensible default), unknown keys rejected.
//!
//! Two phases: [`Config::parse`] is pure (syntax, types, ranges) and gives one-line
//! errors naming the key; [`crate::pipeline`] does the I/O with the validated values.
//! `agent/inferwatt-agent.example.toml` is generated from [`Config::example`] and a
//! test fails when it drifts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attribution::IdlePolicy;
use crate::identify::RuleConfig;
use crate::power_model::PowerModelConfig;

/// Errors of loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config '{path}': {message}")]
    Parse { path: String, message: String },
    #[error("config '{path}': key '{key}': {reason}")]
    Invalid {
        path: String,
        key: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where this host is and the factors of its data centre.
    pub site: SiteConfig,
    /// Sampling and attribution.
    pub sampling: SamplingConfig,
    /// Which NVML library to load.
    pub nvml: NvmlConfig,
    /// The Prometheus endpoint.
    pub prometheus: PrometheusConfig,
    /// Process → model rules, tried before the built-in ones.
    pub identify: IdentifyConfig,
    /// Inference-server metrics (requests and tokens).
    pub server_metrics: ServerMetricsConfig,
    /// Host CPU and DRAM energy.
    pub host: HostConfig,
    /// Local state (last counter readings, so a restart knows what it missed).
    pub state: StateConfig,
    /// Write every interval as line protocol to a local file (off by default).
    pub file: Option<FileSinkConfig>,
    /// Ship intervals to a collector, InfluxDB or VictoriaMetrics (off when absent).
    pub ship: Option<inferwatt_ship::ShipConfig>,
    /// Kubernetes: tag each model row with its pod, namespace and workload.
    pub kubernetes: KubernetesConfig,
    /// Push the metrics over OTLP/HTTP (off when absent).
    pub otlp: Option<OtlpConfig>,
}

/// `[otlp]`: push the Prometheus endpoint's energy, power and per-model metrics over
/// OTLP/HTTP (protobuf) to an OpenTelemetry collector or backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The metrics URL, e.g. `http://otel-collector:4318/v1/metrics` or
    /// VictoriaMetrics' `http://vm:8428/opentelemetry/v1/metrics`.
    pub endpoint: String,
    /// Seconds between pushes (sums are cumulative: a failed push loses nothing).
    #[serde(default = "default_otlp_interval_s")]
    pub interval_s: f64,
    /// Seconds before a push gives up.
    #[serde(default = "default_otlp_timeout_s")]
    pub timeout_s: f64,
    /// Extra HTTP headers, e.g. `{ Authorization = "Bearer …" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_otlp_interval_s() -> f64 {
    60.0
}

fn default_otlp_timeout_s() -> f64 {
    10.0
}

/// `[kubernetes]`: where the agent reads this node's pods. Off while `pods_url` is unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// The node's pod list (a `v1.PodList`): the kubelet
    /// (`https://${NODE_NAME}:10250/pods`, or its read-only port
    /// `http://127.0.0.1:10255/pods`) or the API server
    /// (`https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName%3D${NODE_NAME}`).
    /// `${VAR}` is replaced by the agent's environment variable (the DaemonSet sets
    /// `NODE_NAME` from `spec.nodeName`).
    pub pods_url: Option<String>,
    /// A bearer token file, read again at every request (service-account tokens
    /// rotate), e.g. `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub token_file: Option<PathBuf>,
    /// A PEM CA bundle the server's certificate must chain to (the service account's
    /// `ca.crt` for the API server), besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate: the kubelet serves a self-signed one unless its serving
    /// certificates are rotated through the cluster CA. The token is still sent.
    pub insecure_skip_tls_verify: bool,
    /// The kubelet's PodResources socket
    /// (`/var/lib/kubelet/pod-resources/kubelet.sock`): which container holds each GPU,
    /// to cross-check the cgroup's pod and to tag a process whose cgroup is unreadable.
    /// Unset: no cross-check.
    pub pod_resources_socket: Option<PathBuf>,
    /// Seconds between pod-list reads.
    pub refresh_s: f64,
    /// Seconds before a read gives up.
    pub timeout_s: f64,
    /// Pod label/annotation → model rules, tried before the built-in ones
    /// (`[[kubernetes.pod_rules]]`).
    pub pod_rules: Vec<crate::kube::rules::PodRule>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            pods_url: None,
            token_file: None,
            ca_file: None,
            insecure_skip_tls_verify: false,
            pod_resources_socket: None,
            refresh_s: 10.0,
            timeout_s: 5.0,
            pod_rules: Vec::new(),
        }
    }
}

impl KubernetesConfig {
    /// `pods_url` with `${VAR}` replaced from `env`; an unset variable is an error that
    /// names it.
    pub fn expanded_url(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        let Some(url) = &self.pods_url else {
            return Ok(None);
        };
        let mut out = String::new();
        let mut rest = url.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("'{url}' has an unterminated '${{'"))?;
            let name = &after[..end];
            let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!("'{url}' uses ${{{name}}}, which is not set in the agent's environment (the DaemonSet sets NODE_NAME from spec.nodeName)")
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }
}

/// `[site]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// Site name (a data centre or region), the `site` tag of every point.
    pub name: String,
    /// Host name, the `host` tag; empty means the system's host name.
    pub host: String,
    /// Country (ISO 3166 alpha-2 or alpha-3), for the geographic spread.
    pub country: String,
    /// Electricity Maps grid zone (e.g. `US-CAL-CISO`, `FR`), for the carbon intensity.
    pub zone: String,
    /// Power usage effectiveness of the data centre (ISO/IEC 30134-2), 1 to 3. Unset is
    /// not 1.0: the field is left off the wire, the collector uses its factors file or
    /// the cited industry average, and both the agent and the report warn.
    pub pue: Option<f64>,
    /// On-site water usage effectiveness, litres per kWh of IT energy; unset is not 0.
    pub wue_l_per_kwh: Option<f64>,
    /// Grid carbon intensity (gCO2e/kWh) for the agent's local estimates; when absent,
    /// the built-in yearly average of `zone` (else `country`) is used.
    pub carbon_intensity_g_per_kwh: Option<f64>,
    /// Off-site electricity water intensity factor, litres per kWh of facility energy,
    /// for the agent's local estimates; unset uses the cited reference (with a warning).
    pub ewif_l_per_kwh: Option<f64>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            name: "default".into(),
            host: String::new(),
            country: String::new(),
            zone: String::new(),
            pue: None,
            wue_l_per_kwh: None,
            carbon_intensity_g_per_kwh: None,
            ewif_l_per_kwh: None,
        }
    }
}

/// `[sampling]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Seconds between samples (0.1 to 60).
    pub interval_s: f64,
    /// Where idle (static) GPU energy goes: `resident` (to the models on the GPU) or
    /// `separate` (to `_idle`).
    pub idle_policy: IdlePolicy,
    /// Static power per GPU name (e.g. `"NVIDIA H100 80GB HBM3" = 70.0`); GPUs not
    /// listed learn it as the lowest power seen with no compute process.
    pub idle_power_w: BTreeMap<String, f64>,
    /// How active energy is split among models sharing a GPU: `power_model` (SM
    /// utilisation weighted by each model's learned power per percent, falling back to
    /// the SM share where the window does not identify it) or `sm_util`.
    pub split: SplitChoice,
    /// The power model's window (`[sampling.power_model]`).
    pub power_model: PowerModelConfig,
}

/// `[sampling] split`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitChoice {
    #[default]
    PowerModel,
    SmUtil,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            interval_s: 1.0,
            idle_policy: IdlePolicy::Resident,
            idle_power_w: BTreeMap::new(),
            split: SplitChoice::PowerModel,
            power_model: PowerModelConfig::default(),
        }
    }
}

/// `[nvml]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmlConfig {
    /// Path of the NVML library; when absent, `INFERWATT_NVML_LIB`, else the loader's
    /// `libnvidia-ml.so.1`.
    pub library: Option<PathBuf>,
}

/// `[prometheus]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Address to listen on (loopback by default; use `0.0.0.0:9464` to be scraped
    /// from elsewhere).
    pub listen: SocketAddr,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[identify]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentifyConfig {
    /// Rules tried in order before the built-in ones (`[[identify.rules]]`).
    pub rules: Vec<RuleConfig>,
}

/// `[server_metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerMetricsConfig {
    /// Scrape the inference servers found on the GPUs at their default or `--port`.
    pub discover: bool,
    /// Seconds between scrapes.
    pub interval_s: f64,
    /// Seconds before a scrape gives up.
    pub timeout_s: f64,
    /// Endpoints to scrape besides the discovered ones.
    pub endpoints: Vec<EndpointConfig>,
}

impl Default for ServerMetricsConfig {
    fn default() -> Self {
        ServerMetricsConfig {
            discover: true,
            interval_s: 5.0,
            timeout_s: 2.0,
            endpoints: Vec::new(),
        }
    }
}

/// `[[server_metrics.endpoints]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL of the server's Prometheus endpoint, e.g. `http://127.0.0.1:8000/metrics`.
    pub url: String,
    /// Its kind: `vllm`, `sglang`, `tgi` or `llamacpp`. TGI and llama.cpp metrics carry
    /// no model label: name the model with a `#model=NAME` fragment on the URL.
    pub server: String,
}

/// `[host]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Read CPU and DRAM energy from RAPL where readable.
    pub rapl: bool,
    /// Root of the powercap tree.
    pub powercap_root: PathBuf,
    /// Static host power (W) to use where RAPL is absent, marked `estimated`; none
    /// means host energy is reported as not measured.
    pub static_power_w: Option<f64>,
    /// The host's `/proc`: a containerised agent without the host's PID namespace reads
    /// it where it is mounted (`/host/proc`).
    pub proc_root: PathBuf,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            rapl: true,
            powercap_root: PathBuf::from("/sys/class/powercap"),
            static_power_w: None,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// `[state]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for the agent's state file (and the default spool directory).
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("/var/lib/inferwatt-agent"),
        }
    }
}

/// `[file]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File to append line protocol to.
    pub path: PathBuf,
}

impl Config {
    /// Parses and validates a TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: one_line(&e, text),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_string(),
            key: key.to_string(),
            reason,
        };
        let s = &self.sampling;
        if !(0.1..=60.0).contains(&s.interval_s) {
            return Err(bad(
                "sampling.interval_s",
                format!("'{}' is outside 0.1 to 60 seconds", s.interval_s),
            ));
        }
        let pm = &s.power_model;
        if !(pm.window_s.is_finite() && (10.0..=86_400.0).contains(&pm.window_s)) {
            return Err(bad(
                "sampling.power_model.window_s",
                format!("'{}' is outside 10 to 86400 seconds", pm.window_s),
            ));
        }
        if !(2..=100_000).contains(&pm.min_intervals) {
            return Err(bad(
                "sampling.power_model.min_intervals",
                format!("'{}' is outside 2 to 100000", pm.min_intervals),
            ));
        }
        if (pm.min_intervals as f64) * s.interval_s > pm.window_s {
            return Err(bad(
                "sampling.power_model.min_intervals",
                format!(
                    "{} intervals of {} s do not fit in window_s = {}: the power model would never be used",
                    pm.min_intervals, s.interval_s, pm.window_s
                ),
            ));
        }
        for (name, w) in &s.idle_power_w {
            if !(w.is_finite() && *w >= 0.0 && *w <= crate::sample::MAX_STATIC_W) {
                return Err(bad(
                    &format!("sampling.idle_power_w.\"{name}\""),
                    format!(
                        "'{w}' is not a power between 0 and {} W",
                        crate::sample::MAX_STATIC_W
                    ),
                ));
            }
        }
        let site = &self.site;
        if site.name.is_empty() {
            return Err(bad("site.name", "must not be empty".into()));
        }
        // The collector's bounds (`inferwatt_core::validate`): a value outside them would
        // make it refuse every batch carrying the site point.
        let (lo, hi) = inferwatt_core::validate::PUE_RANGE;
        if let Some(pue) = site.pue {
            if !(pue.is_finite() && (lo..=hi).contains(&pue)) {
                return Err(bad(
                    "site.pue",
                    format!("'{pue}' is not a PUE between {lo} and {hi}"),
                ));
            }
        }
        for (key, v, max) in [
            (
                "site.wue_l_per_kwh",
                site.wue_l_per_kwh,
                inferwatt_core::validate::MAX_WUE,
            ),
            ("site.ewif_l_per_kwh", site.ewif_l_per_kwh, 100.0),
        ] {
            let Some(v) = v else { continue };
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(bad(key, format!("'{v}' is outside 0 to {max} L/kWh")));
            }
        }
        if let Some(ci) = site.carbon_intensity_g_per_kwh {
            if !(ci.is_finite() && (0.0..=2000.0).contains(&ci)) {
                return Err(bad(
                    "site.carbon_intensity_g_per_kwh",
                    format!("'{ci}' is outside 0 to 2000 gCO2e/kWh"),
                ));
            }
        }
        let m = &self.server_metrics;
        if !(0.5..=3600.0).contains(&m.interval_s) {
            return Err(bad(
                "server_metrics.interval_s",
                format!("'{}' is outside 0.5 to 3600 seconds", m.interval_s),
            ));
        }
        if !(0.1..=60.0).contains(&m.timeout_s) {
            return Err(bad(
                "server_metrics.timeout_s",
                format!("'{}' is outside 0.1 to 60 seconds", m.timeout_s),
            ));
        }
        for (i, e) in m.endpoints.iter().enumerate() {
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(bad(
                    &format!("server_metrics.endpoints[{i}].url"),
                    format!("'{}' is not an http:// or https:// URL", e.url),
                ));
            }
            let kinds = crate::sources::server_metrics::SERVER_KINDS;
            if !kinds.contains(&e.server.as_str()) {
                return Err(bad(
                    &format!("server_metrics.endpoints[{i}].server"),
                    format!("'{}' is not one of {}", e.server, kinds.join(", ")),
                ));
            }
        }
        if let Some(w) = self.host.static_power_w {
            if !(w.is_finite() && (0.0..=100_000.0).contains(&w)) {
                return Err(bad(
                    "host.static_power_w",
                    format!("'{w}' is not a power between 0 and 100000 W"),
                ));
            }
        }
        if let Some(ship) = &self.ship {
            ship.validate_interval(s.interval_s).map_err(|e| match e {
                inferwatt_ship::ConfigError::Invalid {
                    value,
                    problem,
                    fix,
                    ..
                } => bad("ship.interval_s", format!("'{value}' {problem}; {fix}")),
            })?;
        }
        crate::identify::Identifier::new(&self.identify.rules)
            .map_err(|e| bad("identify.rules", e.to_string()))?;
        let k = &self.kubernetes;
        if let Some(url) = &k.pods_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "kubernetes.pods_url",
                    format!("'{url}' is not an http:// or https:// URL"),
                ));
            }
        }
        for (key, v, range) in [
            ("kubernetes.refresh_s", k.refresh_s, 1.0..=3600.0),
            ("kubernetes.timeout_s", k.timeout_s, 0.1..=60.0),
        ] {
            if !(v.is_finite() && range.contains(&v)) {
                return Err(bad(
                    key,
                    format!(
                        "'{v}' is outside {} to {} seconds",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        crate::kube::rules::compile_pod_rules(&k.pod_rules)
            .map_err(|e| bad("kubernetes.pod_rules", e.to_string()))?;
        if k.pod_resources_socket.is_some() && k.pods_url.is_none() {
            return Err(bad(
                "kubernetes.pod_resources_socket",
                "is read with the pod list, and 'kubernetes.pods_url' is unset; set pods_url (the node's pods name the workloads) or remove the socket".into(),
            ));
        }
        if let Some(o) = &self.otlp {
            if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
                return Err(bad(
                    "otlp.endpoint",
                    format!("'{}' is not an http:// or https:// URL", o.endpoint),
                ));
            }
            if !(o.interval_s.is_finite() && (s.interval_s..=3600.0).contains(&o.interval_s)) {
                return Err(bad(
                    "otlp.interval_s",
                    format!(
                        "'{}' is outside the sampling interval ({} s) to 3600 seconds",
                        o.interval_s, s.interval_s
                    ),
                ));
            }
            if !(o.timeout_s.is_finite() && (0.1..=60.0).contains(&o.timeout_s)) {
                return Err(bad(
                    "otlp.timeout_s",
                    format!("'{}' is outside 0.1 to 60 seconds", o.timeout_s),
                ));
            }
            for k in o.headers.keys() {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    return Err(bad(
                        "otlp.headers",
                        format!("'{k}' is not an HTTP header name"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The commented example configuration, generated from the defaults.
    pub fn example() -> String {
        EXAMPLE_HEADER.to_string() + EXAMPLE_BODY
    }
}

/// toml's messages span lines (with a caret drawing): one line instead, naming the
/// line number and quoting the offending line, which names the key.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("line {line_no}: {msg}: '{line}'")
        }
        None => msg,
    }
}

const EXAMPLE_HEADER: &str = "\
# inferwatt-agent configuration. Every key is shown with its default.
# Unknown keys are rejected. Run `inferwatt-agent check --config FILE` to try it.
";

const EXAMPLE_BODY: &str = r#"
[site]
# Site name (a data centre or region), the `site` tag of every point.
name = "default"
# Host name, the `host` tag; empty means the system's host name.
host = ""
# Country (ISO 3166 alpha-2 or alpha-3), for the geographic spread.
country = ""
# Electricity Maps grid zone (e.g. "US-CAL-CISO", "FR"), for the carbon intensity.
zone = ""
# Power usage effectiveness of the data centre (ISO/IEC 30134-2), 1 to 3. Unset is
# not 1.0: it is left off the wire, the collector uses its factors file or the cited
# industry average (Uptime Institute 2024), and `check` and the report warn.
# pue = 1.2
# On-site water usage effectiveness, litres per kWh of IT energy; unset is not 0.
# wue_l_per_kwh = 0.3
# Grid carbon intensity (gCO2e/kWh) for local estimates; unset = built-in yearly
# average of `zone`, else `country`.
# carbon_intensity_g_per_kwh = 383.55
# Off-site electricity water intensity factor, litres per kWh of facility energy, for
# local estimates; unset = the cited reference (Li et al., US average).
# ewif_l_per_kwh = 3.142

[sampling]
# Seconds between samples (0.1 to 60).
interval_s = 1.0
# Idle GPU energy: "resident" (to the models on the GPU) or "separate" (to `_idle`).
idle_policy = "resident"
# Split of active energy among models sharing a GPU: "power_model" (SM utilisation
# weighted by each model's learned watts per percent; SM share until the window
# identifies them) or "sm_util".
split = "power_model"

# The power model's sliding window: its length in seconds, and how many intervals it
# (and each model in it) needs before its weights are used.
[sampling.power_model]
window_s = 120.0
min_intervals = 20

# Static power per GPU name; GPUs not listed learn it (lowest power with no process).
[sampling.idle_power_w]
# "NVIDIA H100 80GB HBM3" = 70.0

[nvml]
# Path of the NVML library; unset = $INFERWATT_NVML_LIB, else libnvidia-ml.so.1.
# library = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"

[prometheus]
# Serve /metrics.
enabled = true
# Address to listen on; "0.0.0.0:9464" to be scraped from other hosts.
listen = "127.0.0.1:9464"

[identify]
# Rules tried in order before the built-in ones (vLLM, TGI, SGLang, llama.cpp,
# Ollama, Triton). See docs/CONFIGURATION.md for every rule key.
rules = []

[server_metrics]
# Scrape the inference servers found on the GPUs at their default or --port.
discover = true
# Seconds between scrapes.
interval_s = 5.0
# Seconds before a scrape gives up.
timeout_s = 2.0
# Endpoints besides the discovered ones:
# [[server_metrics.endpoints]]
# url = "http://127.0.0.1:8000/metrics"
# server = "vllm"
# (tgi and llamacpp metrics name no model: url = "http://127.0.0.1:8080/metrics#model=NAME")
endpoints = []

[host]
# Read CPU and DRAM energy from RAPL where readable.
rapl = true
# Root of the powercap tree.
powercap_root = "/sys/class/powercap"
# Static host power (W) where RAPL is absent, marked "estimated".
# static_power_w = 300.0
# The host's /proc (a container without hostPID reads it where it is mounted).
proc_root = "/proc"

[state]
# Directory for the agent's state (last counter readings) and default spool.
dir = "/var/lib/inferwatt-agent"

# Write every interval as line protocol to a local file (off when absent).
# [file]
# path = "/var/lib/inferwatt-agent/intervals.lp"

# Ship intervals to a collector, InfluxDB or VictoriaMetrics (off when absent).
# [ship]
# url = "http://collector.example:8086"
# token = "..."
# Ship one point per series per window of this many seconds of UTC time (energies
# summed; Prometheus and the file sink keep every interval). At least
# sampling.interval_s, at most 3600, and 3600 / interval_s a whole number. Unset: every
# interval is shipped.
# interval_s = 60.0

[kubernetes]
# The node's pod list, to tag each model row with its namespace, pod, container and
# workload (off while unset). The kubelet: "https://${NODE_NAME}:10250/pods" (or its
# read-only port "http://127.0.0.1:10255/pods"); the API server:
# "https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName%3D${NODE_NAME}".
# ${VAR} comes from the agent's environment.
# pods_url = "https://${NODE_NAME}:10250/pods"
# token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
# Accept the kubelet's self-signed serving certificate.
insecure_skip_tls_verify = false
# The kubelet's PodResources socket: which container holds each GPU (a cross-check of
# the cgroup's pod; tags a process whose cgroup is unreadable).
# pod_resources_socket = "/var/lib/kubelet/pod-resources/kubelet.sock"
# Seconds between pod-list reads, and before one gives up.
refresh_s = 10.0
timeout_s = 5.0
# Pod label/annotation -> model rules, before the built-ins (KServe's
# serving.kserve.io/inferenceservice, then app.kubernetes.io/instance):
# [[kubernetes.pod_rules]]
# label = "acme.com/model"
# model = "acme/${value}"
pod_rules = []

# Push energy, power and per-model metrics over OTLP/HTTP (off when absent):
# hw.energy, hw.power, inferwatt.model.energy, … (docs/ARCHITECTURE.md, "OTLP export").
# [otlp]
# endpoint = "http://otel-collector:4318/v1/metrics"
# interval_s = 60.0
# timeout_s = 10.0
# headers = { Authorization = "Bearer ..." }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_the_defaults() {
        let cfg = Config::parse(&Config::example(), "example").expect("example parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn example_file_matches_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inferwatt-agent.example.toml");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != Config::example() {
            std::fs::write(&path, Config::example()).expect("write example");
            panic!(
                "{} was out of date and has been regenerated; commit it",
                path.display()
            );
        }
    }

    #[test]
    fn every_scrapable_server_kind_is_a_valid_endpoint() {
        for kind in crate::sources::server_metrics::SERVER_KINDS {
            let text = format!(
                "[[server_metrics.endpoints]]\nurl = \"http://127.0.0.1:8080/metrics#model=m\"\nserver = \"{kind}\"\n"
            );
            Config::parse(&text, "t").unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        assert!(err(
            "[[server_metrics.endpoints]]\nurl = \"http://x/metrics\"\nserver = \"ollama\""
        )
        .contains("not one of vllm, sglang, tgi, llamacpp"));
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml")
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert!(err("[site]\nnmae = \"x\"").contains("unknown field `nmae`"));
        assert_eq!(
            err("[sampling]\ninterval_s = 0.0"),
            "config 't.toml': key 'sampling.interval_s': '0' is outside 0.1 to 60 seconds"
        );
        assert!(err("[site]\npue = 0.8").contains("key 'site.pue'"));
        assert!(err("[sampling]\nidle_policy = \"greedy\"").contains("unknown variant `greedy`"));
        assert!(err("[sampling]\nsplit = \"guess\"").contains("unknown variant `guess`"));
        assert!(
            err("[sampling.power_model]\nwindow_s = 5.0").contains("sampling.power_model.window_s")
        );
        assert!(
            err("[sampling.power_model]\nwindow_s = 10.0\nmin_intervals = 50")
                .contains("do not fit in window_s")
        );
        assert!(err("[prometheus]\nlisten = \"nowhere\"").contains("listen"));
        let ship = "[ship]\nurl = \"http://c:8086\"\n";
        assert_eq!(
            err(&format!("[sampling]\ninterval_s = 2.0\n{ship}interval_s = 1.0")),
            "config 't.toml': key 'ship.interval_s': '1' is shorter than 'sampling.interval_s'; make it at least the sampling interval (remove the key to ship every interval)"
        );
        assert!(err(&format!("{ship}interval_s = 7")).contains(
            "key 'ship.interval_s': '7' does not divide an hour: 3600 / interval_s must be a whole number"
        ));
        assert!(err(&format!("{ship}interval_s = 7200"))
            .contains("key 'ship.interval_s': '7200' is outside 0 to 3600 seconds"));
        assert!(err(
            "[kubernetes]\npod_resources_socket = \"/var/lib/kubelet/pod-resources/kubelet.sock\""
        )
        .contains("key 'kubernetes.pod_resources_socket': is read with the pod list"));
        assert!(err("[kubernetes]\npods_url = \"kubelet:10250/pods\"").contains("not an http"));
        assert!(err("[kubernetes]\nrefresh_s = 0.1").contains("kubernetes.refresh_s"));
        assert!(
            err("[otlp]\nendpoint = \"http://o:4318/v1/metrics\"\ninterval_s = 0.01")
                .contains("otlp.interval_s")
        );
        let cfg = Config::parse(&format!("{ship}interval_s = 60"), "t").expect("valid");
        assert_eq!(cfg.ship.and_then(|s| s.interval_s), Some(60.0));
        assert!(!err("[site]\npue = \"high\"").contains('\n'));
    }
}
