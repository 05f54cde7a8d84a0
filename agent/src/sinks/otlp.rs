//! OTLP export (`[otlp]`): the agent's metrics pushed over OTLP/HTTP in protobuf
//! (`POST <endpoint>`, `Content-Type: application/x-protobuf`), for OpenTelemetry
//! collectors and backends that take OTLP (VictoriaMetrics at `/opentelemetry/v1/metrics`).
//!
//! What is exported is the Prometheus endpoint's counters and gauges, under the
//! OpenTelemetry semantic conventions where they exist and inferwatt's own names
//! otherwise ([`EXPORTS`], documented in docs/ARCHITECTURE.md): `hw.energy` (J, a
//! cumulative monotonic sum), `hw.power` (W), `hw.gpu.utilization` (ratio),
//! `hw.gpu.memory.usage` (By), each with `hw.id` = the GPU's UUID and `hw.type = gpu`;
//! `inferwatt.model.energy` (J), `inferwatt.model.emissions` (g),
//! `inferwatt.model.water` (L), `inferwatt.model.requests` and `inferwatt.model.tokens`
//! (`gen_ai.token.type` input or output). Sums are cumulative from the agent's start, the
//! same values as the Prometheus counters, so a failed push loses nothing: the next
//! one carries the totals. One resource per pod (`k8s.namespace.name`, `k8s.pod.name`,
//! `k8s.container.name`, `k8s.<kind>.name`) beside `host.name`, `inferwatt.site` and
//! `service.name`; series off Kubernetes share the host's resource.
//!
//! The protobuf messages are written by hand (`inferwatt_core::otlp::pb`): the few fields
//! OTLP metrics need, checked against a real receiver in `tests/e2e/tests/otlp.rs`.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use inferwatt_core::otlp::{self, resource_attributes, DataPoint, Metric, Resources, Temporality};

use super::prometheus::SharedMetrics;
use crate::config::OtlpConfig;

/// One exported metric: the Prometheus family it comes from, its OTLP name, unit and
/// description, whether it is a cumulative sum (else a gauge), a factor applied to the
/// value, and attributes every point gets.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    pub prometheus: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub sum: bool,
    pub scale: f64,
    pub fixed: &'static [(&'static str, &'static str)],
}

const GPU: &[(&str, &str)] = &[("hw.type", "gpu")];

/// The exported metrics (the agent's own health, `inferwatt_agent_*`, stays on the
/// Prometheus endpoint).
pub const EXPORTS: &[Export] = &[
    Export {
        prometheus: "inferwatt_gpu_energy_joules_total",
        name: "hw.energy",
        unit: "J",
        description: "Energy consumed by the GPU, measured by NVML.",
        sum: true,
        scale: 1.0,
        fixed: GPU,
    },
    Export {
        prometheus: "inferwatt_gpu_power_watts",
        name: "hw.power",
        unit: "W",
        description: "Instantaneous power of the GPU as NVML reports it.",
        sum: false,
        scale: 1.0,
        fixed: GPU,
    },
    Export {
        prometheus: "inferwatt_gpu_utilization_percent",
        name: "hw.gpu.utilization",
        unit: "1",
        description: "Fraction of time a kernel ran on the GPU.",
        sum: false,
        scale: 0.01,
        fixed: GPU,
    },
    Export {
        prometheus: "inferwatt_gpu_memory_used_bytes",
        name: "hw.gpu.memory.usage",
        unit: "By",
        description: "GPU memory in use.",
        sum: false,
        scale: 1.0,
        fixed: GPU,
    },
    Export {
        prometheus: "inferwatt_model_energy_joules_total",
        name: "inferwatt.model.energy",
        unit: "J",
        description: "Energy attributed to a model on a GPU, by component (active, idle, host).",
        sum: true,
        scale: 1.0,
        fixed: &[],
    },
    Export {
        prometheus: "inferwatt_model_emissions_grams_total",
        name: "inferwatt.model.emissions",
        unit: "g",
        description: "Location-based emissions of a model's facility energy (the agent's local estimate, CO2e).",
        sum: true,
        scale: 1.0,
        fixed: &[],
    },
    Export {
        prometheus: "inferwatt_model_water_liters_total",
        name: "inferwatt.model.water",
        unit: "L",
        description: "Water consumed for a model's energy, on site and off site.",
        sum: true,
        scale: 1.0,
        fixed: &[],
    },
    Export {
        prometheus: "inferwatt_model_requests_total",
        name: "inferwatt.model.requests",
        unit: "{request}",
        description: "Requests a model's server completed.",
        sum: true,
        scale: 1.0,
        fixed: &[],
    },
    Export {
        prometheus: "inferwatt_model_input_tokens_total",
        name: "inferwatt.model.tokens",
        unit: "{token}",
        description: "Tokens a model's server processed, by type.",
        sum: true,
        scale: 1.0,
        fixed: &[("gen_ai.token.type", "input")],
    },
    Export {
        prometheus: "inferwatt_model_output_tokens_total",
        name: "inferwatt.model.tokens",
        unit: "{token}",
        description: "Tokens a model's server processed, by type.",
        sum: true,
        scale: 1.0,
        fixed: &[("gen_ai.token.type", "output")],
    },
];

/// The OTLP attribute of a Prometheus label on a data point; `None` for labels that
/// describe the resource (`site` and the pod's). A label this table does not know keeps
/// its name under `inferwatt.`.
fn point_attribute(label: &str) -> Option<String> {
    Some(
        match label {
            "gpu_uuid" => "hw.id",
            "gpu_name" => "hw.name",
            "gpu_index" => "inferwatt.gpu_index",
            "model" => "inferwatt.model",
            "server" => "inferwatt.server",
            "component" => "inferwatt.component",
            "method" => "inferwatt.emissions.method",
            "scope" => "inferwatt.water.scope",
            "source" => "inferwatt.source",
            "site" | "namespace" | "pod" | "container" | "workload" | "workload_kind" => {
                return None
            }
            other => return Some(format!("inferwatt.{other}")),
        }
        .to_owned(),
    )
}

/// The resource attributes of a series: the host's, then its pod's (shared with line
/// protocol shipped as OTLP: `inferwatt_core::otlp::resource_attributes`).
fn resource_of(host: &str, labels: &[(&'static str, String)]) -> Vec<(String, String)> {
    resource_attributes("inferwatt-agent", |k| {
        if k == "host" {
            return Some(host);
        }
        labels
            .iter()
            .find(|(l, _)| *l == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    })
}

/// The `ExportMetricsServiceRequest` of the metrics as they stand: every [`EXPORTS`]
/// family's series, grouped into one resource per distinct resource attribute set.
/// `start_ns` is when the sums started (the agent's start); `now_ns` the points' time.
pub fn encode_request(metrics: &SharedMetrics, host: &str, start_ns: u64, now_ns: u64) -> Vec<u8> {
    let mut resources: Resources = BTreeMap::new();
    {
        let m = metrics.lock().unwrap_or_else(PoisonError::into_inner);
        for e in EXPORTS {
            for (labels, value) in m.series(e.prometheus) {
                let mut attributes: Vec<(String, String)> = e
                    .fixed
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                for (k, v) in &labels {
                    if let Some(a) = point_attribute(k) {
                        attributes.push((a, v.clone()));
                    }
                }
                resources
                    .entry(resource_of(host, &labels))
                    .or_default()
                    .entry(e.name)
                    .or_insert_with(|| Metric {
                        name: e.name,
                        description: e.description,
                        unit: e.unit,
                        sum: e.sum.then_some(Temporality::Cumulative),
                        points: Vec::new(),
                    })
                    .points
                    .push(DataPoint {
                        attributes,
                        start_ns,
                        time_ns: now_ns,
                        value: value * e.scale,
                    });
            }
        }
    }
    otlp::encode_request(&resources, "inferwatt-agent", env!("CARGO_PKG_VERSION"))
}

/// Pushes the metrics every `interval_s` until `stop`, then once more, so the last
/// interval's totals leave before the agent exits.
pub async fn export_loop(
    cfg: OtlpConfig,
    metrics: SharedMetrics,
    host: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(cfg.timeout_s))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: OTLP export disabled");
            return;
        }
    };
    let start_ns = now_ns();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.interval_s));
    tick.tick().await;
    let mut failing: Option<String> = None;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let body = encode_request(&metrics, &host, start_ns, now_ns());
        let mut req = client
            .post(&cfg.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        for (k, v) in &cfg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let outcome = match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Err(format!(
                    "{status}: {}",
                    text.chars().take(300).collect::<String>()
                ))
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!(endpoint = %cfg.endpoint, "OTLP export works again");
                }
            }
            Err(e) => {
                metrics.lock().unwrap_or_else(PoisonError::into_inner).inc(
                    "inferwatt_agent_otlp_failures_total",
                    "Failed OTLP pushes (the next push carries the cumulative totals).",
                    Vec::new(),
                    1.0,
                );
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::warn!(endpoint = %cfg.endpoint, error = %e, "OTLP push failed; the next one carries the totals");
                }
                failing = Some(e);
            }
        }
        if last {
            return;
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::prometheus::Metrics;

    #[test]
    fn one_resource_per_pod_and_semantic_names_for_gpus() {
        let m = Metrics::shared();
        {
            let mut g = m.lock().expect("lock");
            g.inc(
                "inferwatt_gpu_energy_joules_total",
                "h",
                vec![("gpu_uuid", "GPU-1".into()), ("site", "fra1".into())],
                12.5,
            );
            for pod in ["a", "b"] {
                g.inc(
                    "inferwatt_model_energy_joules_total",
                    "h",
                    vec![
                        ("model", "m".into()),
                        ("site", "fra1".into()),
                        ("namespace", "ns".into()),
                        ("pod", pod.into()),
                        ("workload", "w".into()),
                        ("workload_kind", "Deployment".into()),
                    ],
                    1.0,
                );
            }
            g.inc("inferwatt_agent_sample_errors_total", "h", vec![], 1.0);
        }
        let body = encode_request(&m, "node-1", 1, 2);
        let text = String::from_utf8_lossy(&body);
        for want in [
            "hw.energy",
            "hw.id",
            "GPU-1",
            "inferwatt.model.energy",
            "k8s.pod.name",
            "k8s.deployment.name",
            "node-1",
        ] {
            assert!(text.contains(want), "{want}");
        }
        assert!(
            !text.contains("sample_errors"),
            "the agent's health stays local"
        );
        // Three resources: the host's, and one per pod; each is field 1 of the request.
        assert_eq!(top_level_fields(&body), 3);
    }

    /// The number of top-level fields of a message (all length-delimited here).
    fn top_level_fields(mut b: &[u8]) -> usize {
        let mut n = 0;
        while !b.is_empty() {
            let (key, rest) = read_varint(b);
            assert_eq!(key & 7, 2, "length-delimited");
            let (len, rest) = read_varint(rest);
            b = &rest[len as usize..];
            n += 1;
        }
        n
    }

    fn read_varint(b: &[u8]) -> (u64, &[u8]) {
        let mut v = 0u64;
        for (i, byte) in b.iter().enumerate() {
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (v, &b[i + 1..]);
            }
        }
        panic!("truncated varint");
    }
}
