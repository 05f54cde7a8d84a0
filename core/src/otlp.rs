//! OTLP metrics, shared by the agent's exporter (`[otlp]`, cumulative sums of its
//! Prometheus counters) and shipping in OTLP form (`[ship]`/`[forward] format = "otlp"`,
//! each interval as delta sums, [`encode_intervals`]).
//!
//! Names: the OpenTelemetry hardware semantic conventions where they exist (`hw.energy`
//! in J with `hw.id`, `hw.type`), inferwatt's own otherwise (`inferwatt.model.energy`,
//! `inferwatt.model.requests`, `inferwatt.model.tokens` with `gen_ai.token.type`);
//! resource attributes `service.name`, `host.name`, `inferwatt.site` and the pod's
//! `k8s.*` (docs/ARCHITECTURE.md, "OTLP export").

use std::collections::BTreeMap;

use crate::lineproto::Point;
use crate::schema;

/// Resource attributes of a row: the service, host and site, then the pod's Kubernetes
/// attributes from the wire's pod tags (`k8s.<kind>.name` where the convention names the
/// workload kind). `get` returns a tag's non-empty value.
pub fn resource_attributes<'a>(
    service: &str,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Vec<(String, String)> {
    let mut out = vec![("service.name".to_owned(), service.to_owned())];
    for (tag, attr) in [
        ("host", "host.name"),
        ("site", "inferwatt.site"),
        ("namespace", "k8s.namespace.name"),
        ("pod", "k8s.pod.name"),
        ("container", "k8s.container.name"),
    ] {
        if let Some(v) = get(tag) {
            out.push((attr.to_owned(), v.to_owned()));
        }
    }
    if let (Some(kind), Some(name)) = (get("workload_kind"), get("workload")) {
        let conv = match kind {
            "Deployment" => Some("k8s.deployment.name"),
            "StatefulSet" => Some("k8s.statefulset.name"),
            "DaemonSet" => Some("k8s.daemonset.name"),
            "Job" => Some("k8s.job.name"),
            "CronJob" => Some("k8s.cronjob.name"),
            "ReplicaSet" => Some("k8s.replicaset.name"),
            _ => None,
        };
        if let Some(attr) = conv {
            out.push((attr.to_owned(), name.to_owned()));
        }
        out.push(("inferwatt.workload".to_owned(), name.to_owned()));
        out.push(("inferwatt.workload_kind".to_owned(), kind.to_owned()));
    }
    out
}

/// One data point of a metric: attributes, start and end (ns), value.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    pub attributes: Vec<(String, String)>,
    pub start_ns: u64,
    pub time_ns: u64,
    pub value: f64,
}

/// One metric of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: &'static str,
    /// A sum (monotonic, of the given temporality), else a gauge.
    pub sum: Option<Temporality>,
    pub points: Vec<DataPoint>,
}

/// How a sum's points relate in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Each point is the change over its own `(start, time]`.
    Delta = 1,
    /// Each point is the total since `start`.
    Cumulative = 2,
}

/// Resources (attribute sets) and their metrics, in the order they are encoded.
pub type Resources = BTreeMap<Vec<(String, String)>, BTreeMap<&'static str, Metric>>;

/// The `ExportMetricsServiceRequest` of `resources`, scope `scope` at `version`.
pub fn encode_request(resources: &Resources, scope: &str, version: &str) -> Vec<u8> {
    let mut req = Vec::new();
    for (resource, metrics) in resources {
        let mut rm = Vec::new();
        let mut res = Vec::new();
        for (k, v) in resource {
            pb::message(&mut res, 1, &pb::key_value(k, v));
        }
        pb::message(&mut rm, 1, &res);
        let mut sm = Vec::new();
        let mut sc = Vec::new();
        pb::string(&mut sc, 1, scope);
        pb::string(&mut sc, 2, version);
        pb::message(&mut sm, 1, &sc);
        for m in metrics.values() {
            let mut metric = Vec::new();
            pb::string(&mut metric, 1, m.name);
            pb::string(&mut metric, 2, m.description);
            pb::string(&mut metric, 3, m.unit);
            let mut data = Vec::new();
            for p in &m.points {
                let mut dp = Vec::new();
                if m.sum.is_some() {
                    pb::fixed64(&mut dp, 2, p.start_ns);
                }
                pb::fixed64(&mut dp, 3, p.time_ns);
                pb::double(&mut dp, 4, p.value);
                for (k, v) in &p.attributes {
                    pb::message(&mut dp, 7, &pb::key_value(k, v));
                }
                pb::message(&mut data, 1, &dp);
            }
            match m.sum {
                Some(t) => {
                    pb::varint_field(&mut data, 2, t as u64);
                    pb::varint_field(&mut data, 3, 1); // is_monotonic
                    pb::message(&mut metric, 7, &data);
                }
                None => pb::message(&mut metric, 5, &data),
            }
            pb::message(&mut sm, 2, &metric);
        }
        pb::message(&mut rm, 2, &sm);
        pb::message(&mut req, 1, &rm);
    }
    req
}

/// A sum's series: resource, metric name, point attributes.
pub type SeriesKey = (Vec<(String, String)>, &'static str, Vec<(String, String)>);

/// Running totals of delta sums, per series: the start of the first interval, the sum
/// so far and the end of the last interval counted. Turns intervals into cumulative
/// sums ([`Totals::cumulate`]) for receivers that take only cumulative temporality
/// (Prometheus, VictoriaMetrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(std::collections::HashMap<SeriesKey, (u64, f64, u64)>);

impl Totals {
    /// Rewrites every delta sum of `resources` as a cumulative one, continuing these
    /// totals (a series' points in time order), and returns the totals after them and
    /// how many points were left out: an interval that does not end after the last one
    /// counted for its series is a re-send (counted already) or older data (a
    /// cumulative series cannot go back in time). The caller keeps the returned totals
    /// only once the batch was accepted, so a retried batch is not added twice.
    pub fn cumulate(&self, resources: &mut Resources) -> (Totals, usize) {
        let mut next = self.clone();
        let mut dropped = 0;
        for (resource, metrics) in resources.iter_mut() {
            for m in metrics.values_mut() {
                if m.sum != Some(Temporality::Delta) {
                    continue;
                }
                m.sum = Some(Temporality::Cumulative);
                m.points.sort_by_key(|p| p.time_ns);
                let before = m.points.len();
                m.points.retain_mut(|p| {
                    let key = (resource.clone(), m.name, p.attributes.clone());
                    let t = next.0.entry(key).or_insert((p.start_ns, 0.0, 0));
                    if p.time_ns <= t.2 {
                        return false;
                    }
                    t.1 += p.value;
                    t.2 = p.time_ns;
                    p.start_ns = t.0;
                    p.value = t.1;
                    true
                });
                dropped += before - m.points.len();
            }
        }
        (next, dropped)
    }
}

/// Wire points (line protocol, as shipped) as OTLP delta sums ([`intervals`]), encoded.
pub fn encode_intervals(points: &[Point], service: &str, version: &str) -> Vec<u8> {
    encode_request(&intervals(points, service), service, version)
}

/// Wire points (line protocol, as shipped) as OTLP delta sums, one data point per
/// interval `(ts − interval_s, ts]`: `gpu` → `hw.energy` (`hw.type=gpu`); `model_energy`
/// → `inferwatt.model.energy` per `inferwatt.component` (active, idle, host);
/// `model_usage` → `inferwatt.model.requests` and `inferwatt.model.tokens`;
/// `host_energy` → `hw.energy` with `hw.type` `cpu` and `memory`. Other measurements
/// (`site`, `spool_fold`) carry no energy and are left out; so are zero values of an
/// absent field. Points without a timestamp or an `interval_s` are left out.
pub fn intervals(points: &[Point], service: &str) -> Resources {
    let mut resources: Resources = BTreeMap::new();
    for p in points {
        let (Some(ts), Some(iv)) = (p.timestamp, p.field_f64("interval_s")) else {
            continue;
        };
        if ts < 0 || !(iv.is_finite() && iv >= 0.0) {
            continue;
        }
        let time_ns = ts as u64;
        let start_ns = time_ns.saturating_sub((iv * 1e9).round() as u64);
        let tag = |k: &str| p.tag_value(k).filter(|v| !v.is_empty());
        let resource = resource_attributes(service, |k| tag(k));
        let attrs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut out: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            for (t, a) in [
                ("gpu_uuid", "hw.id"),
                ("gpu_name", "hw.name"),
                ("model", "inferwatt.model"),
                ("server", "inferwatt.server"),
            ] {
                if let Some(v) = tag(t) {
                    out.push((a.to_owned(), v.to_owned()));
                }
            }
            out
        };
        let mut add = |name: &'static str,
                       unit: &'static str,
                       description: &'static str,
                       attributes: Vec<(String, String)>,
                       value: f64| {
            resources
                .entry(resource.clone())
                .or_default()
                .entry(name)
                .or_insert_with(|| Metric {
                    name,
                    description,
                    unit,
                    sum: Some(Temporality::Delta),
                    points: Vec::new(),
                })
                .points
                .push(DataPoint {
                    attributes,
                    start_ns,
                    time_ns,
                    value,
                });
        };
        let f = |k: &str| p.field_f64(k);
        match p.measurement.as_str() {
            schema::GPU => {
                if let Some(j) = f("energy_j") {
                    let source = p
                        .field_value("source")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    add(
                        "hw.energy",
                        "J",
                        "Energy consumed by the component.",
                        attrs(&[("hw.type", "gpu"), ("inferwatt.source", source)]),
                        j,
                    );
                }
            }
            schema::MODEL_ENERGY => {
                for (field, component) in [
                    ("active_j", "active"),
                    ("idle_j", "idle"),
                    ("host_j", "host"),
                ] {
                    if let Some(j) = f(field) {
                        add(
                            "inferwatt.model.energy",
                            "J",
                            "Energy attributed to a model on a GPU, by component (active, idle, host).",
                            attrs(&[("inferwatt.component", component)]),
                            j,
                        );
                    }
                }
            }
            schema::MODEL_USAGE => {
                if let Some(n) = f("requests") {
                    add(
                        "inferwatt.model.requests",
                        "{request}",
                        "Requests a model's server completed.",
                        attrs(&[]),
                        n,
                    );
                }
                for (field, kind) in [("input_tokens", "input"), ("output_tokens", "output")] {
                    if let Some(n) = f(field) {
                        add(
                            "inferwatt.model.tokens",
                            "{token}",
                            "Tokens a model's server processed, by type.",
                            attrs(&[("gen_ai.token.type", kind)]),
                            n,
                        );
                    }
                }
            }
            schema::HOST_ENERGY => {
                let host = tag("host").unwrap_or("");
                for (field, kind) in [("cpu_j", "cpu"), ("dram_j", "memory")] {
                    if let Some(j) = f(field) {
                        let id = format!("{host}/{kind}");
                        add(
                            "hw.energy",
                            "J",
                            "Energy consumed by the component.",
                            attrs(&[("hw.type", kind), ("hw.id", &id)]),
                            j,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    resources
}

/// The protobuf wire format, as far as OTLP metrics need it: varints, 64-bit fixed
/// values and length-delimited fields (strings and embedded messages).
pub mod pb {
    /// Appends `v` as a base-128 varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire_type));
    }

    /// A varint field (wire type 0).
    pub fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }

    /// A `fixed64` field (wire type 1).
    pub fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// A `double` field (wire type 1).
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        fixed64(out, field, v.to_bits());
    }

    /// A length-delimited field holding `bytes` (wire type 2): an embedded message.
    pub fn message(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A string field.
    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        message(out, field, s.as_bytes());
    }

    /// A `KeyValue` with a string `AnyValue`.
    pub fn key_value(k: &str, v: &str) -> Vec<u8> {
        let mut any = Vec::new();
        string(&mut any, 1, v);
        let mut kv = Vec::new();
        string(&mut kv, 1, k);
        message(&mut kv, 2, &any);
        kv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_the_protobuf_encoding() {
        let mut v = Vec::new();
        pb::varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut v = Vec::new();
        pb::varint(&mut v, u64::MAX);
        assert_eq!(v.len(), 10);
        // KeyValue{key:"a", value:AnyValue{string_value:"b"}}
        assert_eq!(
            pb::key_value("a", "b"),
            [0x0a, 0x01, b'a', 0x12, 0x03, 0x0a, 0x01, b'b']
        );
        let mut v = Vec::new();
        pb::double(&mut v, 4, 1.5);
        assert_eq!(v[0], 0x21);
        assert_eq!(&v[1..], 1.5f64.to_bits().to_le_bytes());
        let mut v = Vec::new();
        pb::fixed64(&mut v, 3, 7);
        assert_eq!(v, [0x19, 7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn intervals_become_delta_sums_and_points_without_energy_are_left_out() {
        let p = Point::new(schema::MODEL_ENERGY)
            .tag("site", "fra1")
            .tag("host", "h1")
            .tag("gpu_uuid", "GPU-1")
            .tag("model", "m")
            .tag("namespace", "ns")
            .tag("workload", "w")
            .tag("workload_kind", "StatefulSet")
            .float("active_j", 10.0)
            .float("idle_j", 2.0)
            .float("host_j", 0.5)
            .float("interval_s", 2.0)
            .at(5_000_000_000);
        let site = Point::new(schema::SITE)
            .tag("site", "fra1")
            .float("interval_s", 1.0)
            .at(1);
        let body = encode_intervals(&[p, site], "svc", "0");
        let text = String::from_utf8_lossy(&body);
        for want in [
            "inferwatt.model.energy",
            "inferwatt.component",
            "k8s.statefulset.name",
            "k8s.namespace.name",
            "host.name",
        ] {
            assert!(text.contains(want), "{want}");
        }
        // start = ts − interval: 3 s, as a fixed64 after field 2's key (0x11).
        let start = 3_000_000_000u64.to_le_bytes();
        assert!(body.windows(9).any(|w| w[0] == 0x11 && w[1..] == start));
        assert!(encode_intervals(&[Point::new(schema::SITE).at(1)], "s", "0").is_empty());
    }

    #[test]
    fn totals_turn_intervals_into_cumulative_sums_from_the_first_interval() {
        let gpu = |ts: i64, j: f64| {
            Point::new(schema::GPU)
                .tag("gpu_uuid", "GPU-1")
                .float("energy_j", j)
                .float("interval_s", 1.0)
                .at(ts * 1_000_000_000)
        };
        let totals = Totals::default();
        let mut first = intervals(&[gpu(11, 2.0), gpu(10, 1.0), gpu(10, 1.0)], "s");
        let (after, dropped) = totals.cumulate(&mut first);
        assert_eq!(
            dropped, 1,
            "the interval re-sent within the batch counts once"
        );
        let values = |r: &Resources| -> Vec<(u64, u64, f64)> {
            r.values()
                .flat_map(|m| m.values())
                .flat_map(|m| m.points.iter().map(|p| (p.start_ns, p.time_ns, p.value)))
                .collect()
        };
        let s = 1_000_000_000u64;
        assert_eq!(
            values(&first),
            vec![(9 * s, 10 * s, 1.0), (9 * s, 11 * s, 3.0)]
        );
        // A batch retried after a failure starts again from the accepted totals, and a
        // re-sent or older interval is left out.
        let _lost = after.cumulate(&mut intervals(&[gpu(12, 4.0)], "s"));
        let mut second = intervals(&[gpu(11, 2.0), gpu(12, 4.0), gpu(5, 9.0)], "s");
        assert_eq!(after.cumulate(&mut second).1, 2);
        assert_eq!(values(&second), vec![(9 * s, 12 * s, 7.0)]);
        assert!(second
            .values()
            .flat_map(|m| m.values())
            .all(|m| m.sum == Some(Temporality::Cumulative)));
    }
}
