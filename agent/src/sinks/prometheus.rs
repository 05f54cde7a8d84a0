//! The Prometheus endpoint: the pipeline adds to [`Metrics`] each interval, and
//! `GET /metrics` renders them in the text exposition format (version 0.0.4).
//!
//! Names are a contract (docs/ARCHITECTURE.md): `inferwatt_gpu_energy_joules_total`,
//! `inferwatt_gpu_power_watts`, `inferwatt_model_energy_joules_total{component}`,
//! `inferwatt_model_emissions_grams_total{method}`, `inferwatt_model_water_liters_total{scope}`,
//! `inferwatt_model_requests_total`, `inferwatt_model_output_tokens_total`, and the
//! agent's own health (`inferwatt_agent_*`). `promtool check metrics` runs on the output
//! in the end-to-end tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Labels, f64>,
}

/// All metric families, keyed by name.
#[derive(Debug, Default)]
pub struct Metrics {
    families: BTreeMap<&'static str, Family>,
}

/// Shared handle to the metrics.
pub type SharedMetrics = Arc<Mutex<Metrics>>;

impl Metrics {
    pub fn shared() -> SharedMetrics {
        Arc::new(Mutex::new(Metrics::default()))
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        self.families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        })
    }

    /// Adds `by` (≥ 0) to a counter.
    pub fn inc(&mut self, name: &'static str, help: &'static str, labels: Labels, by: f64) {
        debug_assert!(name.ends_with("_total"));
        if by.is_finite() && by >= 0.0 {
            *self
                .family(name, help, Kind::Counter)
                .series
                .entry(labels)
                .or_default() += by;
        }
    }

    /// Declares a counter family and series at 0 so it shows before its first increment.
    pub fn touch(&mut self, name: &'static str, help: &'static str, labels: Labels) {
        self.family(name, help, Kind::Counter)
            .series
            .entry(labels)
            .or_default();
    }

    /// Sets a gauge.
    pub fn set(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        if v.is_finite() {
            self.family(name, help, Kind::Gauge)
                .series
                .insert(labels, v);
        }
    }

    /// Removes a gauge series (e.g. a GPU that vanished).
    pub fn unset(&mut self, name: &'static str, labels: &Labels) {
        if let Some(f) = self.families.get_mut(name) {
            f.series.remove(labels);
        }
    }

    /// Removes every series of `name` whose `label` is `value` (e.g. one GPU's series of a
    /// family whose other labels change: models that left, a fallback reason that ended).
    pub fn unset_where(&mut self, name: &'static str, label: &str, value: &str) {
        if let Some(f) = self.families.get_mut(name) {
            f.series
                .retain(|l, _| !l.iter().any(|(k, v)| *k == label && v == value));
        }
    }

    /// A counter's current value (tests and `check`).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let f = self.families.get(name)?;
        f.series
            .iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| *v)
    }

    /// Every series of family `name` (labels and value), for the OTLP exporter.
    pub fn series(&self, name: &str) -> Vec<(Labels, f64)> {
        self.families
            .get(name)
            .map(|f| f.series.iter().map(|(l, v)| (l.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &f.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {v}");
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` (and `/healthz`) on `listen` until `shutdown` fires.
pub async fn serve(
    listen: SocketAddr,
    metrics: SharedMetrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving Prometheus metrics on /metrics");
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// The endpoint's routes.
pub fn router(metrics: SharedMetrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_in_exposition_format() {
        let mut m = Metrics::default();
        m.inc(
            "inferwatt_gpu_energy_joules_total",
            "GPU energy.",
            vec![("gpu_uuid", "GPU-1".into())],
            12.5,
        );
        m.inc(
            "inferwatt_gpu_energy_joules_total",
            "GPU energy.",
            vec![("gpu_uuid", "GPU-1".into())],
            0.5,
        );
        m.set(
            "inferwatt_gpu_power_watts",
            "Power.",
            vec![("gpu_uuid", "a\"b".into())],
            300.0,
        );
        let text = m.render();
        assert!(text.contains("# TYPE inferwatt_gpu_energy_joules_total counter\n"));
        assert!(text.contains("inferwatt_gpu_energy_joules_total{gpu_uuid=\"GPU-1\"} 13\n"));
        assert!(text.contains("inferwatt_gpu_power_watts{gpu_uuid=\"a\\\"b\"} 300\n"));
        assert_eq!(
            m.value(
                "inferwatt_gpu_energy_joules_total",
                &[("gpu_uuid", "GPU-1")]
            ),
            Some(13.0)
        );
    }

    #[test]
    fn counters_never_go_down() {
        let mut m = Metrics::default();
        m.inc("x_total", "x", vec![], 2.0);
        m.inc("x_total", "x", vec![], -1.0);
        m.inc("x_total", "x", vec![], f64::NAN);
        assert_eq!(m.value("x_total", &[]), Some(2.0));
    }
}
