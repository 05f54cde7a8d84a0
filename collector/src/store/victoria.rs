//! The VictoriaMetrics backend (`[store] backend = "victoriametrics"`): the collector
//! checks and authorises writes as with SQLite, converts the points to the form below and
//! writes them to VictoriaMetrics' InfluxDB endpoint (single node `/api/v2/write`, cluster
//! `vminsert`'s `/insert/<tenant>/influx/api/v2/write`), acknowledging only after
//! VictoriaMetrics did. Reports read the same sums as over SQLite with MetricsQL
//! (`sum_over_time` per bucket, grouped by the report's keys), through the Prometheus
//! query API (`vmselect`'s `/select/<tenant>/prometheus`). The collector keeps no state of
//! its own, so any number of collectors can serve one cluster.
//!
//! The stored form ([`vm_points`]) is the agent's line protocol with three changes, each
//! needed for the sums to equal SQLite's:
//! - string fields of the wire measurements (`gpu.source`, `model_energy.method`,
//!   `host_energy.source`, `site.idle_policy`) become labels (VictoriaMetrics stores a
//!   string field as the number 0); other string fields are dropped;
//! - every `model_energy` point carries `gpu_s`, the model's share of the GPU's time,
//!   computed from its batch as the SQLite store does;
//! - an interval that straddles an hour edge is written as one piece per hour, each piece
//!   stamped with the end of its part (the hour edge, or the interval's end) and holding
//!   its additive fields pro rata to time, exactly as the SQLite rollups split it; the
//!   other fields stay on the last piece. Timestamps are rounded up to the millisecond
//!   (VictoriaMetrics' resolution), which keeps a point in the hour `(b, b + 1 h]` its
//!   nanosecond end belongs to.
//!
//! So every stored sample lies inside one hour, and a sum over whole hours (or calendar
//! years) is exact. A period edge inside an hour, or a grain finer than the shipped
//! intervals, counts each interval by its end (SQLite clips it pro rata): a difference of
//! at most one interval per series at each edge.
//!
//! Re-sent batches: VictoriaMetrics keeps every sample it is sent, duplicates included,
//! unless `-dedup.minScrapeInterval` is set; then it keeps one sample per series and
//! interval of that length. [`VictoriaStore::check_dedup`] requires exactly `1ms`: no
//! dedup would count a retried batch twice, a longer one would merge distinct samples
//! (pieces of a split interval can be 1 ms apart).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use inferwatt_core::lineproto::{FieldValue, Point};
use inferwatt_core::schema;

use super::query::{
    BucketGpuRow, BucketHostRow, BucketModelEnergyRow, BucketUsageRow, GapPointRow, GpuEnergyRow,
    IdlePolicyRow, SiteRow, SplitRow,
};
use super::rollup::{self, Typed};
use super::source::ReportStore;
use super::{StoreError, HOUR_NS, YEAR_GRAIN};
use crate::input::Tenancy;

/// Nanoseconds per millisecond, VictoriaMetrics' time resolution.
const MS: i64 = 1_000_000;
/// Most points one range query asks for per series (VictoriaMetrics refuses more than
/// `-search.maxPointsPerTimeseries`, 30,000 by default).
const MAX_STEPS: i64 = 10_000;
/// How far back `time_bounds` looks (and `latest_sites` for a site with no point in the
/// period).
const FAR_BACK_MS: i64 = 20 * 366 * 86_400_000;
/// Measurements whose `interval_s` marks a stored interval (for the data's time bounds).
const INTERVAL_METRICS: &str = "(gpu|model_energy|model_usage|host_energy)_interval_s";

/// Sums per (label values, bucket start), one per metric asked.
type Sums<const N: usize> = BTreeMap<(Vec<String>, i64), [f64; N]>;
/// A series' labels (without its name).
type Labels = BTreeMap<String, String>;
/// Per series: the time of its last sample and that sample's value.
type Latest = HashMap<Labels, (i64, f64)>;
/// (site, host, gpu_uuid).
type GpuKey = (String, String, String);

/// The value of `-dedup.minScrapeInterval` a report over VictoriaMetrics needs.
pub const REQUIRED_DEDUP_MS: i64 = 1;

/// The additive fields of a measurement (split pro rata over the hours an interval
/// covers): floats, then whole-number counts.
fn additive(t: &Typed) -> (&'static [&'static str], &'static [&'static str]) {
    match t {
        Typed::Gpu { .. } => (&["energy_j"], &[]),
        Typed::ModelEnergy { .. } => (
            &["active_j", "idle_j", "host_j", schema::GPU_SECONDS_FIELD],
            &[],
        ),
        Typed::ModelUsage { .. } => (&[], &["requests", "input_tokens", "output_tokens"]),
        Typed::HostEnergy { .. } => (&["cpu_j", "dram_j"], &[]),
        Typed::Site { .. } | Typed::Other => (&[], &[]),
    }
}

/// The string fields of a measurement that become labels.
fn label_fields(measurement: &str) -> &'static [&'static str] {
    match measurement {
        schema::GPU | schema::HOST_ENERGY => &["source"],
        schema::MODEL_ENERGY => &["method"],
        schema::SITE => &["idle_policy"],
        _ => &[],
    }
}

fn ceil_ms(ts: i64) -> i64 {
    ts.div_euclid(MS) * MS + if ts.rem_euclid(MS) == 0 { 0 } else { MS }
}

fn set_field(p: &mut Point, key: &str, value: FieldValue) {
    match p.fields.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => p.fields.push((key.to_owned(), value)),
    }
}

fn set_tag(p: &mut Point, key: &str, value: &str) {
    p.tags.retain(|(k, _)| k != key);
    if !value.is_empty() {
        p.tags.push((key.to_owned(), value.to_owned()));
        p.tags.sort();
    }
}

/// Checks `points` as the SQLite store does (the same errors, by 0-based index) and
/// returns their stored form (see the module docs).
pub fn vm_points(points: &[Point]) -> Result<Vec<Point>, StoreError> {
    let typed = points
        .iter()
        .enumerate()
        .map(|(index, p)| {
            rollup::classify(p).map_err(|reason| StoreError::InvalidPoint { index, reason })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gpu_s = inferwatt_core::gpu_time::gpu_seconds(points);
    let mut out = Vec::with_capacity(points.len() + points.len() / 16);
    for (index, (p, t)) in points.iter().zip(&typed).enumerate() {
        let Some(ts) = p.timestamp else {
            return Err(StoreError::InvalidPoint {
                index,
                reason: "point has no timestamp".into(),
            });
        };
        let mut base = Point::new(&p.measurement);
        base.tags = p.tags.clone();
        let labels = label_fields(&p.measurement);
        for (k, v) in &p.fields {
            match v {
                FieldValue::Str(s) if labels.contains(&k.as_str()) => set_tag(&mut base, k, s),
                FieldValue::Str(_) => {}
                v => base.fields.push((k.clone(), v.clone())),
            }
        }
        if let Typed::ModelEnergy { .. } = t {
            set_field(
                &mut base,
                schema::GPU_SECONDS_FIELD,
                FieldValue::Float(gpu_s[index]),
            );
        }
        let (floats, counts) = additive(t);
        let parts = if floats.is_empty() && counts.is_empty() {
            Vec::new()
        } else {
            rollup::parts(ts, rollup::interval_ns(t.interval_s()), HOUR_NS)
        };
        if parts.len() <= 1 {
            base.timestamp = Some(ceil_ms(ts));
            out.push(base);
            continue;
        }
        // One piece per hour: additive fields pro rata, `interval_s` the part's seconds,
        // the rest on the last piece.
        let n = parts.len();
        let mut pieces: Vec<Point> = parts
            .iter()
            .enumerate()
            .map(|(i, (b, ns))| {
                let mut q = Point::new(&p.measurement);
                q.tags = base.tags.clone();
                q.timestamp = Some(if i + 1 == n {
                    ceil_ms(ts)
                } else {
                    b.saturating_add(HOUR_NS)
                });
                q.fields
                    .push(("interval_s".into(), FieldValue::Float(*ns as f64 / 1e9)));
                q
            })
            .collect();
        for (k, v) in &base.fields {
            if let Some(f) = floats.iter().find(|f| **f == k.as_str()) {
                let value = v.as_f64().unwrap_or(0.0);
                for (q, x) in pieces.iter_mut().zip(rollup::split_value(value, &parts)) {
                    q.fields.push(((*f).to_owned(), FieldValue::Float(x)));
                }
            } else if let Some(c) = counts.iter().find(|c| **c == k.as_str()) {
                let value = match v {
                    FieldValue::Int(i) => *i,
                    FieldValue::UInt(u) => i64::try_from(*u).unwrap_or(i64::MAX),
                    other => other.as_f64().unwrap_or(0.0) as i64,
                };
                for (q, x) in pieces.iter_mut().zip(rollup::split_count(value, &parts)) {
                    q.fields.push(((*c).to_owned(), FieldValue::Int(x)));
                }
            } else if k != "interval_s" {
                if let Some(last) = pieces.last_mut() {
                    last.fields.push((k.clone(), v.clone()));
                }
            }
        }
        out.extend(pieces);
    }
    Ok(out)
}

/// A piece of a report period as the queries read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// One bucket (start `bucket`) read as `(lo, hi]`: an instant query at `hi` with a
    /// window of `hi - lo`.
    Instant { bucket: i64, lo: i64, hi: i64 },
    /// Whole buckets of width `step` whose ends run from `first_end` to `last_end`: one
    /// range query.
    Range {
        first_end: i64,
        last_end: i64,
        step: i64,
    },
}

/// How `(from, to]` in buckets of `grain_ns` is read (0: one bucket, 0; [`YEAR_GRAIN`]:
/// calendar years).
pub(crate) fn plan(from: i64, to: i64, grain_ns: i64) -> Vec<Piece> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    match grain_ns {
        g if g <= 0 => out.push(Piece::Instant {
            bucket: 0,
            lo: from,
            hi: to,
        }),
        YEAR_GRAIN => {
            let mut lo = from;
            while lo < to {
                let start = super::query::year_start_ns(lo.saturating_add(1));
                let next = super::query::next_year_start_ns(lo.saturating_add(1));
                let hi = next.min(to);
                out.push(Piece::Instant {
                    bucket: start,
                    lo,
                    hi,
                });
                lo = hi;
            }
        }
        g => {
            // Whole buckets [a, b), ragged edges as instants.
            let a = from.div_euclid(g) * g + if from.rem_euclid(g) == 0 { 0 } else { g };
            let b = to.div_euclid(g) * g;
            if a >= b {
                // No whole bucket: one or two ragged pieces.
                let edge = from.div_euclid(g) * g + g;
                if edge < to {
                    out.push(Piece::Instant {
                        bucket: edge - g,
                        lo: from,
                        hi: edge,
                    });
                    out.push(Piece::Instant {
                        bucket: edge,
                        lo: edge,
                        hi: to,
                    });
                } else {
                    out.push(Piece::Instant {
                        bucket: from.div_euclid(g) * g,
                        lo: from,
                        hi: to,
                    });
                }
                return out;
            }
            if from < a {
                out.push(Piece::Instant {
                    bucket: a - g,
                    lo: from,
                    hi: a,
                });
            }
            let mut end = a + g;
            while end <= b {
                let last = (end + (MAX_STEPS - 1) * g).min(b);
                out.push(Piece::Range {
                    first_end: end,
                    last_end: last,
                    step: g,
                });
                end = last + g;
            }
            if b < to {
                out.push(Piece::Instant {
                    bucket: b,
                    lo: b,
                    hi: to,
                });
            }
        }
    }
    out
}

/// A time for the query API: Unix seconds with milliseconds.
fn api_time(ns: i64) -> String {
    let ms = ns.div_euclid(MS);
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A window for MetricsQL, in whole milliseconds (at least 1).
fn window(ns: i64) -> String {
    format!("{}ms", (ns.div_euclid(MS)).max(1))
}

/// A label value quoted for a MetricsQL regex matcher: regex metacharacters escaped, then
/// the string quoted.
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One series of a query result: its labels and its (time ns, value) samples.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    labels: BTreeMap<String, String>,
    samples: Vec<(i64, f64)>,
}

impl Series {
    fn label(&self, key: &str) -> String {
        self.labels.get(key).cloned().unwrap_or_default()
    }
}

fn bad(what: &str, body: &serde_json::Value) -> StoreError {
    let mut text = body.to_string();
    text.truncate(300);
    StoreError::Remote(format!("unexpected {what} answer: {text}"))
}

fn sample_of(v: &serde_json::Value) -> Option<(i64, f64)> {
    let pair = v.as_array()?;
    let t = pair.first()?.as_f64()?;
    let x: f64 = pair.get(1)?.as_str()?.parse().ok()?;
    Some(((t * 1000.0).round() as i64 * MS, x))
}

/// Parses a `/api/v1/query` or `/api/v1/query_range` answer.
fn parse_result(body: &serde_json::Value) -> Result<Vec<Series>, StoreError> {
    if body.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(bad("query", body));
    }
    let result = body
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad("query", body))?;
    let mut out = Vec::with_capacity(result.len());
    for r in result {
        let labels: BTreeMap<String, String> = r
            .get("metric")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "__name__")
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut samples = Vec::new();
        if let Some(v) = r.get("value") {
            samples.push(sample_of(v).ok_or_else(|| bad("query", body))?);
        }
        if let Some(vs) = r.get("values").and_then(|v| v.as_array()) {
            for v in vs {
                samples.push(sample_of(v).ok_or_else(|| bad("query", body))?);
            }
        }
        out.push(Series { labels, samples });
    }
    Ok(out)
}

/// Parses a Go duration as `/flags` prints it (`1ms`, `0s`, `1m30s`, `0`) into ms.
pub fn parse_go_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim().trim_matches('"');
    if s == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..u] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += value * unit_ms;
        rest = &rest[u..];
    }
    Some(total)
}

/// The VictoriaMetrics backend's connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VictoriaConfig {
    /// The InfluxDB write endpoint, e.g. `http://vminsert:8480/insert/0/influx/api/v2/write`.
    pub write_url: String,
    /// The Prometheus query API base, e.g. `http://vmselect:8481/select/0/prometheus`.
    pub query_url: String,
    /// Timeout of one request, in seconds.
    pub timeout_s: f64,
}

/// The VictoriaMetrics backend. Writes are async (from the ingest handler); the report
/// queries block on the runtime `handle` (call them from blocking threads, as reports
/// are).
#[derive(Debug, Clone)]
pub struct VictoriaStore {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    write_url: reqwest::Url,
    query_url: String,
    flags_url: reqwest::Url,
}

impl VictoriaStore {
    /// A backend for `cfg`, whose report queries run on `handle`.
    pub fn new(cfg: &VictoriaConfig, handle: tokio::runtime::Handle) -> Result<Self, StoreError> {
        let parse = |key: &str, v: &str| {
            reqwest::Url::parse(v)
                .map_err(|e| StoreError::Remote(format!("store.{key} '{v}' is not a URL: {e}")))
        };
        let write_url = parse("write_url", &cfg.write_url)?;
        let query = parse("query_url", &cfg.query_url)?;
        let mut flags_url = query.clone();
        flags_url.set_path("/flags");
        flags_url.set_query(None);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_s.max(0.1)))
            .build()
            .map_err(|e| StoreError::Remote(format!("cannot build the HTTP client: {e}")))?;
        Ok(VictoriaStore {
            client,
            handle,
            write_url,
            query_url: cfg.query_url.trim_end_matches('/').to_owned(),
            flags_url,
        })
    }

    /// Reads `-dedup.minScrapeInterval` from the query server's `/flags` and refuses a
    /// value other than 1 ms (see the module docs).
    pub async fn check_dedup(&self) -> Result<(), StoreError> {
        let url = self.flags_url.clone();
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| StoreError::Remote(format!("cannot read '{url}': {e}")))?;
        if !resp.status().is_success() {
            return Err(StoreError::Remote(format!(
                "'{url}' answered {}; the collector reads -dedup.minScrapeInterval there",
                resp.status()
            )));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| StoreError::Remote(format!("cannot read '{url}': {e}")))?;
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-dedup.minScrapeInterval="))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| "0s".to_owned());
        let ms = parse_go_duration_ms(&value).ok_or_else(|| {
            StoreError::Remote(format!(
                "-dedup.minScrapeInterval '{value}' at '{url}' is not a duration"
            ))
        })?;
        if ms == 0.0 {
            return Err(StoreError::Remote(format!(
                "-dedup.minScrapeInterval is not set at '{url}': a batch an agent re-sends after a timeout would be counted twice; start vmselect and vmstorage (or the single node) with -dedup.minScrapeInterval=1ms"
            )));
        }
        if ms > REQUIRED_DEDUP_MS as f64 {
            return Err(StoreError::Remote(format!(
                "-dedup.minScrapeInterval={value} at '{url}' would merge distinct intervals (an interval split at an hour edge is stored as samples 1 ms apart, and agents may ship every 0.1 s); set -dedup.minScrapeInterval=1ms"
            )));
        }
        Ok(())
    }

    /// Writes line protocol (the stored form) and returns once VictoriaMetrics accepted it.
    pub async fn write(&self, body: String) -> Result<(), StoreError> {
        if body.is_empty() {
            return Ok(());
        }
        let resp = self
            .client
            .post(self.write_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                StoreError::Remote(format!("cannot write to '{}': {e}", self.write_url))
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let mut text = resp.text().await.unwrap_or_default();
        text.truncate(300);
        Err(StoreError::Remote(format!(
            "'{}' answered {status} to a write: {text}",
            self.write_url
        )))
    }

    /// Whether the query server answers (`/health`).
    pub fn check(&self) -> Result<(), StoreError> {
        let mut url = self.flags_url.clone();
        url.set_path("/health");
        self.handle.block_on(async {
            let resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| StoreError::Remote(format!("cannot reach '{url}': {e}")))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(StoreError::Remote(format!(
                    "'{url}' answered {}",
                    resp.status()
                )))
            }
        })
    }

    fn get(&self, path: &str, params: Vec<(&'static str, String)>) -> Result<String, StoreError> {
        let url = format!("{}{path}", self.query_url);
        self.handle.block_on(async {
            let resp = self
                .client
                .post(&url)
                .form(&params)
                .send()
                .await
                .map_err(|e| StoreError::Remote(format!("cannot query '{url}': {e}")))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| StoreError::Remote(format!("cannot read '{url}': {e}")))?;
            if !status.is_success() {
                let mut t = text;
                t.truncate(400);
                return Err(StoreError::Remote(format!(
                    "'{url}' answered {status}: {t}"
                )));
            }
            Ok(text)
        })
    }

    fn query(&self, q: &str, at_ns: i64) -> Result<Vec<Series>, StoreError> {
        let text = self.get(
            "/api/v1/query",
            vec![
                ("query", q.to_owned()),
                ("time", api_time(at_ns)),
                ("nocache", "1".into()),
            ],
        )?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Remote(format!("query answer is not JSON: {e}")))?;
        parse_result(&body)
    }

    fn query_range(
        &self,
        q: &str,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<Vec<Series>, StoreError> {
        let text = self.get(
            "/api/v1/query_range",
            vec![
                ("query", q.to_owned()),
                ("start", api_time(start_ns)),
                ("end", api_time(end_ns)),
                ("step", window(step_ns)),
                ("nocache", "1".into()),
            ],
        )?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Remote(format!("query answer is not JSON: {e}")))?;
        parse_result(&body)
    }

    /// Σ of `metric` per `by` labels and bucket over `(from, to]`: rows of (label values
    /// in `by` order, bucket start, sum).
    fn bucket_sum(
        &self,
        metric: &str,
        by: &[&str],
        from: i64,
        to: i64,
        grain_ns: i64,
    ) -> Result<Vec<(Vec<String>, i64, f64)>, StoreError> {
        let by_list = by.join(", ");
        let mut out = Vec::new();
        let push = |out: &mut Vec<_>, s: &Series, bucket: i64, v: f64| {
            out.push((by.iter().map(|k| s.label(k)).collect(), bucket, v));
        };
        for piece in plan(from, to, grain_ns) {
            match piece {
                Piece::Instant { bucket, lo, hi } => {
                    let q = format!(
                        "sum by ({by_list}) (sum_over_time({metric}[{}]))",
                        window(hi - lo)
                    );
                    for s in self.query(&q, hi)? {
                        for (_, v) in &s.samples {
                            push(&mut out, &s, bucket, *v);
                        }
                    }
                }
                Piece::Range {
                    first_end,
                    last_end,
                    step,
                } => {
                    let q = format!(
                        "sum by ({by_list}) (sum_over_time({metric}[{}]))",
                        window(step)
                    );
                    for s in self.query_range(&q, first_end, last_end, step)? {
                        for (t, v) in &s.samples {
                            push(&mut out, &s, t - step, *v);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// [`Self::bucket_sum`] of several metrics with the same labels, merged per key and
    /// bucket into one array of sums (in `metrics` order).
    fn bucket_sums<const N: usize>(
        &self,
        metrics: [&str; N],
        by: &[&str],
        from: i64,
        to: i64,
        grain_ns: i64,
    ) -> Result<Sums<N>, StoreError> {
        let mut acc: Sums<N> = BTreeMap::new();
        for (i, m) in metrics.iter().enumerate() {
            for (key, bucket, v) in self.bucket_sum(m, by, from, to, grain_ns)? {
                acc.entry((key, bucket)).or_insert([0.0; N])[i] += v;
            }
        }
        Ok(acc)
    }
}

impl ReportStore for VictoriaStore {
    fn bucket_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketModelEnergyRow>, StoreError> {
        let acc = self.bucket_sums(
            [
                "model_energy_active_j",
                "model_energy_idle_j",
                "model_energy_host_j",
                "model_energy_interval_s",
                "model_energy_gpu_s",
            ],
            &[
                "site",
                "host",
                "gpu_uuid",
                "model",
                "server",
                "namespace",
                "workload_kind",
                "workload",
            ],
            from_ns,
            to_ns,
            grain_ns,
        )?;
        Ok(acc
            .into_iter()
            .map(|((k, bucket_ns), v)| BucketModelEnergyRow {
                site: k[0].clone(),
                host: k[1].clone(),
                gpu_uuid: k[2].clone(),
                model: k[3].clone(),
                server: k[4].clone(),
                tenancy: Tenancy {
                    namespace: k[5].clone(),
                    workload_kind: k[6].clone(),
                    workload: k[7].clone(),
                },
                bucket_ns,
                active_j: v[0],
                idle_j: v[1],
                host_j: v[2],
                interval_s: v[3],
                gpu_s: v[4],
            })
            .collect())
    }

    fn bucket_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketGpuRow>, StoreError> {
        let acc = self.bucket_sums(
            ["gpu_energy_j", "gpu_interval_s"],
            &["site", "host", "gpu_uuid", "gpu_name"],
            from_ns,
            to_ns,
            grain_ns,
        )?;
        // One row per GPU and bucket (a GPU renamed within a bucket keeps its first name).
        let mut folded: BTreeMap<(String, String, String, i64), BucketGpuRow> = BTreeMap::new();
        for ((k, bucket_ns), v) in acc {
            let e = folded
                .entry((k[0].clone(), k[1].clone(), k[2].clone(), bucket_ns))
                .or_insert_with(|| BucketGpuRow {
                    site: k[0].clone(),
                    host: k[1].clone(),
                    gpu_uuid: k[2].clone(),
                    gpu_name: k[3].clone(),
                    bucket_ns,
                    energy_j: 0.0,
                    interval_s: 0.0,
                });
            e.energy_j += v[0];
            e.interval_s += v[1];
        }
        Ok(folded.into_values().collect())
    }

    fn bucket_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketHostRow>, StoreError> {
        let acc = self.bucket_sums(
            ["host_energy_cpu_j", "host_energy_dram_j"],
            &["site", "host"],
            from_ns,
            to_ns,
            grain_ns,
        )?;
        Ok(acc
            .into_iter()
            .map(|((k, bucket_ns), v)| BucketHostRow {
                site: k[0].clone(),
                host: k[1].clone(),
                bucket_ns,
                energy_j: v[0] + v[1],
            })
            .collect())
    }

    fn bucket_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
        grain_ns: i64,
    ) -> Result<Vec<BucketUsageRow>, StoreError> {
        let acc = self.bucket_sums(
            [
                "model_usage_requests",
                "model_usage_input_tokens",
                "model_usage_output_tokens",
            ],
            &[
                "site",
                "host",
                "model",
                "server",
                "namespace",
                "workload_kind",
                "workload",
            ],
            from_ns,
            to_ns,
            grain_ns,
        )?;
        Ok(acc
            .into_iter()
            .map(|((k, bucket_ns), v)| BucketUsageRow {
                site: k[0].clone(),
                host: k[1].clone(),
                model: k[2].clone(),
                server: k[3].clone(),
                tenancy: Tenancy {
                    namespace: k[4].clone(),
                    workload_kind: k[5].clone(),
                    workload: k[6].clone(),
                },
                bucket_ns,
                requests: v[0],
                input_tokens: v[1],
                output_tokens: v[2],
            })
            .collect())
    }

    fn idle_policies(&self, from_ns: i64, to_ns: i64) -> Result<Vec<IdlePolicyRow>, StoreError> {
        if from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let q = format!(
            "count by (site, host, idle_policy) (count_over_time(site_interval_s[{}]))",
            window(to_ns - from_ns)
        );
        let rows: BTreeSet<(String, String, Option<String>)> = self
            .query(&q, to_ns)?
            .iter()
            .map(|s| {
                let p = s.label("idle_policy");
                (
                    s.label("site"),
                    s.label("host"),
                    (!p.is_empty()).then_some(p),
                )
            })
            .collect();
        Ok(rows
            .into_iter()
            .map(|(site, host, policy)| IdlePolicyRow { site, host, policy })
            .collect())
    }

    fn sum_gpu_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GpuEnergyRow>, StoreError> {
        let by = ["site", "host", "gpu_uuid", "gpu_name", "source"];
        let acc = self.bucket_sums(["gpu_energy_j", "gpu_interval_s"], &by, from_ns, to_ns, 0)?;
        let mut points: HashMap<Vec<String>, f64> = HashMap::new();
        if from_ns < to_ns {
            let q = format!(
                "sum by ({}) (count_over_time(gpu_interval_s[{}]))",
                by.join(", "),
                window(to_ns - from_ns)
            );
            for s in self.query(&q, to_ns)? {
                let key: Vec<String> = by.iter().map(|k| s.label(k)).collect();
                let n: f64 = s.samples.iter().map(|(_, v)| v).sum();
                *points.entry(key).or_default() += n;
            }
        }
        Ok(acc
            .into_iter()
            .map(|((k, _), v)| GpuEnergyRow {
                points: points.get(&k).copied().unwrap_or(0.0) as i64,
                site: k[0].clone(),
                host: k[1].clone(),
                gpu_uuid: k[2].clone(),
                gpu_name: k[3].clone(),
                source: if k[4].is_empty() {
                    "unknown".into()
                } else {
                    k[4].clone()
                },
                energy_j: v[0],
                interval_s: v[1],
            })
            .collect())
    }

    fn sum_split_energy(&self, from_ns: i64, to_ns: i64) -> Result<Vec<SplitRow>, StoreError> {
        let acc = self.bucket_sums(
            [
                "model_energy_active_j{method!=\"\"}",
                "model_energy_idle_j{method!=\"\"}",
            ],
            &["site", "method"],
            from_ns,
            to_ns,
            0,
        )?;
        Ok(acc
            .into_iter()
            .map(|((k, _), v)| SplitRow {
                site: k[0].clone(),
                method: k[1].clone(),
                energy_j: v[0] + v[1],
            })
            .collect())
    }

    fn latest_sites(
        &self,
        from_ns: i64,
        to_ns: i64,
        wanted: &[String],
    ) -> Result<Vec<SiteRow>, StoreError> {
        // The period (and a day before it) first; then, for a wanted site not seen there,
        // as far back as the data can go.
        let near = (to_ns - from_ns).max(0) + 24 * HOUR_NS;
        let mut rows = self.latest_sites_in("", near, to_ns)?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !rows.contains_key(*w))
            .map(|w| regex_literal(w))
            .collect();
        if !missing.is_empty() {
            let selector = format!("site=~{}", quote(&missing.join("|")));
            rows.extend(self.latest_sites_in(&selector, FAR_BACK_MS * MS, to_ns)?);
        }
        Ok(rows.into_values().collect())
    }

    fn gap_points(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GapPointRow>, StoreError> {
        if from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let energy = self.export("gpu_energy_j{source=\"gap\"}", from_ns, to_ns)?;
        let interval = self.export("gpu_interval_s{source=\"gap\"}", from_ns, to_ns)?;
        let key = |s: &Series| (s.label("site"), s.label("host"), s.label("gpu_uuid"));
        let mut iv: HashMap<(String, String, String, i64), f64> = HashMap::new();
        for s in &interval {
            for (t, v) in &s.samples {
                let (a, b, c) = key(s);
                iv.insert((a, b, c, *t), *v);
            }
        }
        let mut rows: BTreeSet<(String, String, String, i64, u64)> = BTreeSet::new();
        let mut values: HashMap<(String, String, String, i64), (f64, f64)> = HashMap::new();
        for s in &energy {
            for (t, v) in &s.samples {
                let (a, b, c) = key(s);
                let k = (a.clone(), b.clone(), c.clone(), *t);
                let i = iv.get(&k).copied().unwrap_or(0.0);
                if values.insert(k, (i, *v)).is_none() {
                    rows.insert((a, b, c, *t, 0));
                }
            }
        }
        // Rejoin the pieces of an interval split at an hour edge.
        let mut out: Vec<GapPointRow> = Vec::new();
        let mut by_gpu: BTreeMap<GpuKey, Vec<(i64, f64, f64)>> = BTreeMap::new();
        for (a, b, c, t, _) in rows {
            let (i, e) = values[&(a.clone(), b.clone(), c.clone(), t)];
            by_gpu.entry((a, b, c)).or_default().push((t, i, e));
        }
        for ((site, host, gpu_uuid), pts) in by_gpu {
            let mut merged: Vec<(i64, f64, f64)> = Vec::new();
            for (t, i, e) in pts {
                if let Some(last) = merged.last_mut() {
                    let start = t - (i * 1e9).round() as i64;
                    if last.0.rem_euclid(HOUR_NS) == 0 && (start - last.0).abs() <= MS {
                        *last = (t, last.1 + i, last.2 + e);
                        continue;
                    }
                }
                merged.push((t, i, e));
            }
            for (ts, interval_s, energy_j) in merged {
                out.push(GapPointRow {
                    site: site.clone(),
                    host: host.clone(),
                    gpu_uuid: gpu_uuid.clone(),
                    ts,
                    interval_s,
                    energy_j,
                });
            }
        }
        out.sort_by(|a, b| {
            (a.ts, &a.site, &a.host, &a.gpu_uuid).cmp(&(b.ts, &b.site, &b.host, &b.gpu_uuid))
        });
        Ok(out)
    }

    fn sum_folded_points(&self, from_ns: i64, to_ns: i64) -> Result<u64, StoreError> {
        let acc = self.bucket_sums(
            ["{__name__=~\"(gpu|model_energy|model_usage|host_energy|site|spool_fold)_folded_points\"}"],
            &["site"],
            from_ns,
            to_ns,
            0,
        )?;
        Ok(acc.values().map(|v| v[0]).sum::<f64>().round().max(0.0) as u64)
    }

    fn time_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let now = crate::now_ns().saturating_add(366 * 24 * HOUR_NS);
        let w = window(FAR_BACK_MS * MS);
        let first = self.query(
            &format!("min(tfirst_over_time({{__name__=~\"{INTERVAL_METRICS}\"}}[{w}]))"),
            now,
        )?;
        let last = self.query(
            &format!("max(tlast_over_time({{__name__=~\"{INTERVAL_METRICS}\"}}[{w}]))"),
            now,
        )?;
        let value = |s: &[Series]| {
            s.first()
                .and_then(|s| s.samples.first())
                .map(|(_, v)| (v * 1000.0).round() as i64 * MS)
        };
        Ok(value(&first).zip(value(&last)))
    }
}

impl VictoriaStore {
    /// The latest `site` point per site within `window_ns` before `to_ns` (series matching
    /// `selector`): its labels, its time, and its PUE and WUE where that point had them.
    fn latest_sites_in(
        &self,
        selector: &str,
        window_ns: i64,
        to_ns: i64,
    ) -> Result<BTreeMap<String, SiteRow>, StoreError> {
        let w = window(window_ns);
        let sel = |m: &str| format!("{m}{{{selector}}}");
        let last_ts = self.query(
            &format!("tlast_over_time({}[{w}])", sel("site_interval_s")),
            to_ns,
        )?;
        let mut best: BTreeMap<String, (i64, BTreeMap<String, String>)> = BTreeMap::new();
        for s in last_ts {
            let Some((_, t)) = s.samples.first() else {
                continue;
            };
            let t = (t * 1000.0).round() as i64 * MS;
            let site = s.label("site");
            if best.get(&site).is_none_or(|(bt, _)| t > *bt) {
                best.insert(site, (t, s.labels.clone()));
            }
        }
        // A factor counts only when the site's latest point carried it.
        let factor = |m: &str| -> Result<Latest, StoreError> {
            let ts = self.query(&format!("tlast_over_time({}[{w}])", sel(m)), to_ns)?;
            let vs = self.query(&format!("last_over_time({}[{w}])", sel(m)), to_ns)?;
            let mut out: Latest = HashMap::new();
            for s in ts {
                if let Some((_, t)) = s.samples.first() {
                    out.insert(s.labels, ((t * 1000.0).round() as i64 * MS, f64::NAN));
                }
            }
            for s in vs {
                if let (Some(e), Some((_, v))) = (out.get_mut(&s.labels), s.samples.first()) {
                    e.1 = *v;
                }
            }
            Ok(out)
        };
        let pue = factor("site_pue")?;
        let wue = factor("site_wue_l_per_kwh")?;
        let at = |m: &Latest, labels: &BTreeMap<String, String>, t: i64| {
            m.get(labels)
                .filter(|(ft, v)| *ft == t && v.is_finite())
                .map(|(_, v)| *v)
        };
        Ok(best
            .into_iter()
            .map(|(site, (ts, labels))| {
                let row = SiteRow {
                    site: site.clone(),
                    country: labels.get("country").cloned().unwrap_or_default(),
                    zone: labels.get("zone").cloned().unwrap_or_default(),
                    pue: at(&pue, &labels, ts),
                    wue_l_per_kwh: at(&wue, &labels, ts),
                    ts,
                };
                (site, row)
            })
            .collect())
    }

    /// Raw samples of `selector` with times in `(from_ns, to_ns]` (`/api/v1/export`).
    fn export(&self, selector: &str, from_ns: i64, to_ns: i64) -> Result<Vec<Series>, StoreError> {
        let text = self.get(
            "/api/v1/export",
            vec![
                ("match[]", selector.to_owned()),
                ("start", api_time(from_ns.saturating_add(MS))),
                ("end", api_time(to_ns)),
            ],
        )?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| StoreError::Remote(format!("export line is not JSON: {e}")))?;
            let labels: BTreeMap<String, String> = v
                .get("metric")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() != "__name__")
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let values = v.get("values").and_then(|x| x.as_array());
            let times = v.get("timestamps").and_then(|x| x.as_array());
            let (Some(values), Some(times)) = (values, times) else {
                return Err(bad("export", &v));
            };
            let mut samples: Vec<(i64, f64)> = times
                .iter()
                .zip(values)
                .filter_map(|(t, x)| Some((t.as_i64()? * MS, x.as_f64()?)))
                .filter(|(t, _)| *t > from_ns && *t <= to_ns)
                .collect();
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
            out.push(Series { labels, samples });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy_sum(points: &[Point], field: &str) -> f64 {
        points.iter().filter_map(|p| p.field_f64(field)).sum()
    }

    #[test]
    fn an_interval_across_an_hour_edge_is_split_pro_rata_and_adds_up() {
        let end = 5 * HOUR_NS + 250 * MS + 7;
        let p = Point::new(schema::GPU)
            .tag("site", "s")
            .tag("host", "h")
            .tag("gpu_uuid", "u")
            .float("energy_j", 1000.0)
            .float("power_w", 300.0)
            .float("interval_s", 1.0)
            .string("source", "counter")
            .at(end);
        let out = vm_points(&[p]).expect("valid");
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].timestamp, Some(5 * HOUR_NS));
        assert_eq!(out[1].timestamp, Some(5 * HOUR_NS + 251 * MS));
        assert!((energy_sum(&out, "energy_j") - 1000.0).abs() < 1e-9);
        // 750 ms before the edge, 250 ms after it.
        assert!((out[0].field_f64("energy_j").expect("e") - 750.0).abs() < 1e-3);
        assert!((energy_sum(&out, "interval_s") - 1.0).abs() < 1e-9);
        assert!(out[0].field_value("power_w").is_none());
        assert_eq!(out[1].field_f64("power_w"), Some(300.0));
        assert!(
            out.iter()
                .all(|p| p.tag_value("source") == Some("counter")
                    && p.field_value("source").is_none())
        );
    }

    #[test]
    fn counts_split_into_whole_numbers_and_model_rows_carry_gpu_time() {
        let end = 2 * HOUR_NS + 30 * 1_000_000_000;
        let usage = Point::new(schema::MODEL_USAGE)
            .tag("site", "s")
            .tag("host", "h")
            .tag("model", "m")
            .int("requests", 7)
            .int("input_tokens", 1001)
            .int("output_tokens", 3)
            .float("interval_s", 60.0)
            .at(end);
        let a = Point::new(schema::MODEL_ENERGY)
            .tag("site", "s")
            .tag("host", "h")
            .tag("gpu_uuid", "u")
            .tag("model", "a")
            .float("active_j", 300.0)
            .float("idle_j", 0.0)
            .float("host_j", 0.0)
            .float("interval_s", 10.0)
            .string("method", "sm_util")
            .at(HOUR_NS / 2);
        let b = Point::new(schema::MODEL_ENERGY)
            .tag("site", "s")
            .tag("host", "h")
            .tag("gpu_uuid", "u")
            .tag("model", "b")
            .float("active_j", 100.0)
            .float("idle_j", 0.0)
            .float("host_j", 0.0)
            .float("interval_s", 10.0)
            .string("method", "sm_util")
            .at(HOUR_NS / 2);
        let out = vm_points(&[usage, a, b]).expect("valid");
        let reqs: Vec<i64> = out
            .iter()
            .filter_map(|p| match p.field_value("requests") {
                Some(FieldValue::Int(i)) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs.iter().sum::<i64>(), 7);
        let gpu_s: Vec<f64> = out
            .iter()
            .filter_map(|p| p.field_f64(schema::GPU_SECONDS_FIELD))
            .collect();
        assert_eq!(gpu_s, vec![7.5, 2.5]);
        assert!(out
            .iter()
            .filter(|p| p.measurement == schema::MODEL_ENERGY)
            .all(|p| p.tag_value("method") == Some("sm_util")));
    }

    #[test]
    fn a_bad_point_is_refused_by_index_as_by_sqlite() {
        let ok = Point::new(schema::GPU)
            .float("energy_j", 1.0)
            .float("interval_s", 1.0)
            .at(1);
        let bad = Point::new(schema::GPU)
            .string("energy_j", "x")
            .float("interval_s", 1.0)
            .at(2);
        match vm_points(&[ok, bad]) {
            Err(StoreError::InvalidPoint { index: 1, reason }) => {
                assert!(reason.contains("energy_j"), "{reason}")
            }
            other => panic!("expected point 1 refused, got {other:?}"),
        }
    }

    #[test]
    fn periods_are_read_as_whole_buckets_and_ragged_edges() {
        let h = HOUR_NS;
        assert_eq!(
            plan(h / 2, 3 * h + 5, h),
            vec![
                Piece::Instant {
                    bucket: 0,
                    lo: h / 2,
                    hi: h
                },
                Piece::Range {
                    first_end: 2 * h,
                    last_end: 3 * h,
                    step: h
                },
                Piece::Instant {
                    bucket: 3 * h,
                    lo: 3 * h,
                    hi: 3 * h + 5
                },
            ]
        );
        assert_eq!(
            plan(10, 20, h),
            vec![Piece::Instant {
                bucket: 0,
                lo: 10,
                hi: 20
            }]
        );
        assert_eq!(
            plan(h - 10, h + 10, h),
            vec![
                Piece::Instant {
                    bucket: 0,
                    lo: h - 10,
                    hi: h
                },
                Piece::Instant {
                    bucket: h,
                    lo: h,
                    hi: h + 10
                }
            ]
        );
        assert_eq!(
            plan(0, 5, 0),
            vec![Piece::Instant {
                bucket: 0,
                lo: 0,
                hi: 5
            }]
        );
        // Long ranges are cut into queries of at most MAX_STEPS points.
        let pieces = plan(0, (MAX_STEPS + 5) * h, h);
        assert_eq!(pieces.len(), 2);
        assert!(plan(5, 5, h).is_empty());
    }

    #[test]
    fn calendar_years_are_instants_clipped_to_the_period() {
        // 2025-06-01 .. 2027-01-01.
        let from = 1_748_736_000 * 1_000_000_000;
        let y2026 = 1_767_225_600 * 1_000_000_000;
        let y2027 = 1_798_761_600 * 1_000_000_000;
        assert_eq!(
            plan(from, y2027, YEAR_GRAIN),
            vec![
                Piece::Instant {
                    bucket: 1_735_689_600 * 1_000_000_000,
                    lo: from,
                    hi: y2026
                },
                Piece::Instant {
                    bucket: y2026,
                    lo: y2026,
                    hi: y2027
                }
            ]
        );
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration_ms("1ms"), Some(1.0));
        assert_eq!(parse_go_duration_ms("\"0s\""), Some(0.0));
        assert_eq!(parse_go_duration_ms("0"), Some(0.0));
        assert_eq!(parse_go_duration_ms("1m30s"), Some(90_000.0));
        assert_eq!(parse_go_duration_ms("500us"), Some(0.5));
        assert_eq!(parse_go_duration_ms("1.5h"), Some(5_400_000.0));
        assert_eq!(parse_go_duration_ms("soon"), None);
        assert_eq!(parse_go_duration_ms(""), None);
    }

    #[test]
    fn site_names_are_regex_quoted() {
        assert_eq!(regex_literal("fra.1|x"), "fra\\.1\\|x");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
