//! Requests and tokens per model from the inference servers' own Prometheus counters
//! (METHODOLOGY §7).
//!
//! Owns a small parser of the Prometheus text exposition format ([`parse_exposition`]:
//! `# HELP`/`# TYPE`/comments, labels with `\\`, `\"`, `\n` escapes, `NaN`/`±Inf`,
//! optional timestamps, OpenMetrics `# EOF`), the mapping of each server's metric names
//! onto [`ServerCounters`] ([`parse_metrics`]), per-interval differencing with reset
//! handling ([`UsageTracker`]), the HTTP scrape ([`scrape`]) and endpoint discovery from
//! a server's command line ([`default_endpoint`]).
//!
//! | server | model label | requests | input tokens | output tokens |
//! |---|---|---|---|---|
//! | `vllm` | `model_name` | `vllm:request_success_total` (Σ `finished_reason`) | `vllm:prompt_tokens_total` | `vllm:generation_tokens_total` |
//! | `sglang` | `model_name` | `sglang:num_requests_total` | `sglang:prompt_tokens_total` | `sglang:generation_tokens_total` |
//! | `tgi` | none | `tgi_request_success` | `tgi_request_input_length_sum` | `tgi_request_generated_tokens_sum` |
//! | `llamacpp` | none | none (stays 0) | `llamacpp:prompt_tokens_total` | `llamacpp:tokens_predicted_total` |
//!
//! Counters match with or without the `_total` suffix (Prometheus vs OpenMetrics
//! exporters); `_created` series are ignored; series of one model are summed over their
//! other labels (`finished_reason`, `engine`, `tp_rank`, …). Model label values go
//! through [`normalize_model_name`] so they meet the identities of `identify`.
//!
//! Servers whose metrics carry no model label (TGI, llama.cpp) serve one model per
//! endpoint: their counters are keyed [`UNLABELLED`] by [`parse_metrics`], and
//! [`default_endpoint`] appends the model as a URL fragment (`#model=NAME`, never sent
//! over HTTP) which [`scrape`] uses to name them.

use std::collections::HashMap;
use std::time::Duration;

use crate::identify::{flag_value, has_flag, normalize_model_name, Identity, ProcessFacts};

/// Key of the counters of a server whose metrics carry no model label.
pub const UNLABELLED: &str = "";

/// Errors reading inference-server metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exposition text is malformed.
    #[error("metrics line {line}: {reason}: '{text}'")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
        /// The line (truncated).
        text: String,
    },
    /// A counter we use holds a negative or non-finite value.
    #[error("metric '{metric}' holds {value}, not a count; the server's /metrics is not usable")]
    BadValue {
        /// Series name.
        metric: String,
        /// The value.
        value: f64,
    },
    /// No mapping for this server kind.
    #[error("server kind '{0}' has no known metrics; use one of vllm, sglang, tgi, llamacpp in server_metrics.endpoints")]
    UnknownServer(String),
    /// The HTTP request failed.
    #[error("cannot scrape '{url}': {source}")]
    Http {
        /// The URL.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// The server answered with a non-success status.
    #[error("scraping '{url}' returned HTTP {status}; is metrics export enabled on the server (sglang --enable-metrics, llama-server --metrics)?")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name (`vllm:prompt_tokens_total`).
    pub name: String,
    /// Labels in written order, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Cumulative (or, from [`UsageTracker`], per-interval) usage of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerCounters {
    /// Requests completed.
    pub requests: u64,
    /// Prompt tokens processed.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
}

/// Parses the Prometheus text exposition format into samples.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, MetricsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment.trim() == "EOF" {
                break;
            }
            continue;
        }
        let err = |reason: &str| MetricsError::Parse {
            line: i + 1,
            reason: reason.to_string(),
            text: raw.chars().take(120).collect(),
        };
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("expected a metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = parse_labels(after, &mut labels).map_err(|r| err(&r))?;
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| err("missing value"))?;
        let value = parse_value(value).ok_or_else(|| err("value is not a number"))?;
        if let Some(ts) = fields.next() {
            if ts.parse::<f64>().is_err() {
                return Err(err("timestamp is not a number"));
            }
        }
        if fields.next().is_some() {
            return Err(err("unexpected text after the value"));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Parses `name="value",…}`; returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = &s[..name_end];
        if name.is_empty() {
            return Err("expected a label name".into());
        }
        s = s[name_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or("expected '=' after a label name")?;
        s = s
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

#[derive(Clone, Copy)]
enum Field {
    Requests,
    Input,
    Output,
}

struct Mapping {
    model_label: Option<&'static str>,
    /// (counter base name without `_total`, or exact series name for histogram sums)
    series: &'static [(&'static str, Field)],
}

/// The server kinds whose counters the agent knows (each has a counter mapping).
pub const SERVER_KINDS: &[&str] = &["vllm", "sglang", "tgi", "llamacpp"];

fn mapping(server: &str) -> Option<Mapping> {
    use Field::*;
    Some(match server {
        "vllm" => Mapping {
            model_label: Some("model_name"),
            series: &[
                ("vllm:request_success", Requests),
                ("vllm:prompt_tokens", Input),
                ("vllm:generation_tokens", Output),
            ],
        },
        "sglang" => Mapping {
            model_label: Some("model_name"),
            series: &[
                ("sglang:num_requests", Requests),
                ("sglang:prompt_tokens", Input),
                ("sglang:generation_tokens", Output),
            ],
        },
        "tgi" => Mapping {
            model_label: None,
            series: &[
                ("tgi_request_success", Requests),
                ("tgi_request_input_length_sum", Input),
                ("tgi_request_generated_tokens_sum", Output),
            ],
        },
        "llamacpp" => Mapping {
            model_label: None,
            series: &[
                ("llamacpp:prompt_tokens", Input),
                ("llamacpp:tokens_predicted", Output),
            ],
        },
        _ => return None,
    })
}

/// Parses a server's `/metrics` text into cumulative counters per model (see the module
/// header for the mapping). Servers without a model label give one entry, [`UNLABELLED`].
pub fn parse_metrics(
    server: &str,
    text: &str,
) -> Result<HashMap<String, ServerCounters>, MetricsError> {
    let map = mapping(server).ok_or_else(|| MetricsError::UnknownServer(server.to_string()))?;
    let samples = parse_exposition(text)?;
    let mut sums: HashMap<String, [f64; 3]> = HashMap::new();
    for s in &samples {
        if s.name.ends_with("_created") {
            continue;
        }
        let base = s.name.strip_suffix("_total").unwrap_or(&s.name);
        let Some((_, field)) = map.series.iter().find(|(n, _)| *n == base) else {
            continue;
        };
        if !s.value.is_finite() || s.value < 0.0 {
            return Err(MetricsError::BadValue {
                metric: s.name.clone(),
                value: s.value,
            });
        }
        let model = match map.model_label {
            Some(l) => match s.label(l) {
                Some(m) => normalize_model_name(m),
                None => UNLABELLED.to_string(),
            },
            None => UNLABELLED.to_string(),
        };
        sums.entry(model).or_default()[*field as usize] += s.value;
    }
    Ok(sums
        .into_iter()
        .map(|(m, [r, i, o])| {
            (
                m,
                ServerCounters {
                    requests: r.round() as u64,
                    input_tokens: i.round() as u64,
                    output_tokens: o.round() as u64,
                },
            )
        })
        .collect())
}

/// Last cumulative readings per endpoint URL and model, as persisted.
pub type Baselines =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, ServerCounters>>;

/// Differences successive cumulative readings per (endpoint, model).
///
/// - The first reading of an endpoint is a baseline: usage before the agent watched is
///   not counted.
/// - A model that appears later on a known endpoint counts from zero (it started while
///   watched).
/// - A decrease of any counter of a model means the server restarted: the new values
///   are the delta.
#[derive(Debug, Default)]
pub struct UsageTracker {
    last: HashMap<String, HashMap<String, ServerCounters>>,
}

impl UsageTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that resumes from baselines an earlier run saved ([`Self::baselines`]):
    /// the first reading of a saved endpoint is differenced against them, so what the
    /// server served while the agent was down is counted, not taken as a new baseline.
    pub fn resume(baselines: &Baselines) -> Self {
        UsageTracker {
            last: baselines
                .iter()
                .map(|(url, m)| {
                    (
                        url.clone(),
                        m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The last reading of every endpoint, to persist with the agent's state.
    pub fn baselines(&self) -> Baselines {
        self.last
            .iter()
            .map(|(url, m)| {
                (
                    url.clone(),
                    m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                )
            })
            .collect()
    }

    /// Records `readings` of `endpoint` and returns each model's usage since the previous
    /// reading of that endpoint (empty on the first).
    pub fn update(
        &mut self,
        endpoint: &str,
        readings: &HashMap<String, ServerCounters>,
    ) -> HashMap<String, ServerCounters> {
        let mut out = HashMap::new();
        match self.last.get(endpoint) {
            None => {}
            Some(prev) => {
                for (model, cur) in readings {
                    let d = match prev.get(model) {
                        None => *cur,
                        Some(p) => {
                            let reset = cur.requests < p.requests
                                || cur.input_tokens < p.input_tokens
                                || cur.output_tokens < p.output_tokens;
                            if reset {
                                *cur
                            } else {
                                ServerCounters {
                                    requests: cur.requests - p.requests,
                                    input_tokens: cur.input_tokens - p.input_tokens,
                                    output_tokens: cur.output_tokens - p.output_tokens,
                                }
                            }
                        }
                    };
                    out.insert(model.clone(), d);
                }
            }
        }
        self.last.insert(endpoint.to_string(), readings.clone());
        out
    }

    /// Forgets an endpoint (its server went away); its next reading is a new baseline.
    pub fn forget(&mut self, endpoint: &str) {
        self.last.remove(endpoint);
    }
}

/// Fetches and parses `url` (a `#model=NAME` fragment names [`UNLABELLED`] counters).
pub async fn scrape(
    client: &reqwest::Client,
    url: &str,
    server: &str,
    timeout: Duration,
) -> Result<HashMap<String, ServerCounters>, MetricsError> {
    let (target, fragment_model) = split_model_fragment(url);
    let http = |source| MetricsError::Http {
        url: target.to_string(),
        source,
    };
    let resp = client
        .get(target)
        .timeout(timeout)
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(MetricsError::Status {
            url: target.to_string(),
            status: status.as_u16(),
        });
    }
    let text = resp.text().await.map_err(http)?;
    let mut counters = parse_metrics(server, &text)?;
    if let Some(model) = fragment_model {
        if let Some(c) = counters.remove(UNLABELLED) {
            *counters.entry(model).or_default() = c;
        }
    }
    Ok(counters)
}

fn split_model_fragment(url: &str) -> (&str, Option<String>) {
    match url.split_once("#model=") {
        Some((u, m)) if !m.is_empty() => (u, Some(percent_decode(m))),
        _ => (url.split('#').next().unwrap_or(url), None),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `/metrics` URL of the server a process runs, from its command line: `--port`
/// (and a non-wildcard `--host`) or the server's default port — vLLM 8000, TGI launcher
/// 3000, SGLang 30000 (only with `--enable-metrics`), llama.cpp 8080 (only with
/// `--metrics`). `None` for other servers and for processes that serve no HTTP (TGI
/// shards, vLLM/SGLang workers: use [`default_endpoint_for_lineage`]).
pub fn default_endpoint(identity: &Identity, cmdline: &[String]) -> Option<String> {
    endpoint_with_env(identity, cmdline, &[])
}

/// [`default_endpoint`] for the first process of `chain` (process, then ancestors) that
/// serves HTTP; reads llama.cpp's `LLAMA_ARG_*` and TGI's `PORT` environment too.
pub fn default_endpoint_for_lineage(identity: &Identity, chain: &[ProcessFacts]) -> Option<String> {
    chain
        .iter()
        .find_map(|p| endpoint_with_env(identity, &p.cmdline, &p.env))
}

fn endpoint_with_env(
    identity: &Identity,
    cmdline: &[String],
    env: &[(String, String)],
) -> Option<String> {
    let env_var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let inv = crate::identify::Invocation::parse(cmdline)?;
    let args = inv.args;
    let prog = inv.program.as_str();
    let (port, host, labelled): (u16, Option<&str>, bool) = match identity.server.as_str() {
        "vllm" => {
            let is_server = (prog == "vllm" && args.first().map(String::as_str) == Some("serve"))
                || prog.starts_with("vllm.entrypoints");
            if !is_server {
                return None;
            }
            (
                port_of(args, &["--port"]).unwrap_or(8000),
                flag_value(args, &["--host"]),
                true,
            )
        }
        "tgi" => {
            if prog != "text-generation-launcher" {
                return None;
            }
            let port = port_of(args, &["--prometheus-port"])
                .or_else(|| port_of(args, &["--port", "-p"]))
                .or_else(|| env_var("PORT").and_then(|p| p.parse().ok()))
                .unwrap_or(3000);
            (port, flag_value(args, &["--hostname"]), false)
        }
        "sglang" => {
            if !prog.contains("launch_server") && prog != "sglang" {
                return None;
            }
            if !has_flag(args, "--enable-metrics") {
                return None;
            }
            (
                port_of(args, &["--port"]).unwrap_or(30000),
                flag_value(args, &["--host"]),
                true,
            )
        }
        "llamacpp" => {
            let enabled = has_flag(args, "--metrics")
                || env_var("LLAMA_ARG_ENDPOINT_METRICS").is_some_and(|v| v == "1" || v == "true");
            if !enabled {
                return None;
            }
            let port = port_of(args, &["--port"])
                .or_else(|| env_var("LLAMA_ARG_PORT").and_then(|p| p.parse().ok()))
                .unwrap_or(8080);
            let host = flag_value(args, &["--host"]).or_else(|| env_var("LLAMA_ARG_HOST"));
            (port, host, false)
        }
        _ => return None,
    };
    let host = match host {
        None | Some("") | Some("0.0.0.0") | Some("::") | Some("[::]") | Some("localhost") => {
            "127.0.0.1".to_string()
        }
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.to_string(),
    };
    let mut url = format!("http://{host}:{port}/metrics");
    if !labelled && !identity.model.is_empty() {
        url.push_str("#model=");
        url.push_str(&percent_encode(&identity.model));
    }
    Some(url)
}

/// `url` with a loopback host (`127.0.0.1`, `localhost`, `[::1]`) replaced by `host` (a
/// pod's IP; IPv6 bracketed); `None` when the URL's host is not loopback (a server told
/// to listen on a given address is scraped there).
pub fn on_host(url: &str, host: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (h, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if !matches!(h, "127.0.0.1" | "localhost" | "[::1]") {
        return None;
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(match port {
        Some(p) => format!("http://{host}:{p}{path}"),
        None => format!("http://{host}{path}"),
    })
}

fn port_of(args: &[String], names: &[&str]) -> Option<u16> {
    flag_value(args, names).and_then(|p| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_endpoint_moves_to_the_pods_address_and_others_stay() {
        assert_eq!(
            on_host("http://127.0.0.1:8000/metrics", "10.244.3.17").as_deref(),
            Some("http://10.244.3.17:8000/metrics")
        );
        assert_eq!(
            on_host("http://localhost:8080/metrics#model=m", "fd00::5").as_deref(),
            Some("http://[fd00::5]:8080/metrics#model=m")
        );
        assert_eq!(on_host("http://10.0.0.9:8000/metrics", "10.244.3.17"), None);
        assert_eq!(on_host("https://127.0.0.1:8000/metrics", "10.1.1.1"), None);
    }

    #[test]
    fn fragment_round_trip() {
        let enc = percent_encode("my model#1/ü");
        assert!(!enc.contains(' ') && !enc.contains('#'));
        let url = format!("http://h:1/metrics#model={enc}");
        let (u, m) = split_model_fragment(&url);
        assert_eq!(u, "http://h:1/metrics");
        assert_eq!(m.as_deref(), Some("my model#1/ü"));
        assert_eq!(
            split_model_fragment("http://h:1/metrics"),
            ("http://h:1/metrics", None)
        );
    }

    #[test]
    fn label_escapes() {
        let s =
            parse_exposition("m{a=\"x\\\"y\\\\z\\n\",b=\"\",} 1 1700000000000\n").expect("parses");
        assert_eq!(
            s[0].labels,
            vec![
                ("a".into(), "x\"y\\z\n".into()),
                ("b".into(), String::new())
            ]
        );
    }
}
