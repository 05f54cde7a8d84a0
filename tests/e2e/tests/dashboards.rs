//! The Grafana dashboards in `dashboards/`, checked two ways. Statically: every
//! dashboard parses, has a unique uid, unique panel ids inside the 24-column grid, only
//! the data-source uids that `dashboards/provisioning/datasources/` provisions, and
//! defines every variable it uses (before a variable query uses it). Against real
//! servers: the agent runs on the simulated fleet with three injected faults (an
//! unreachable collector, an unreachable inference server, an unwritable state file) so
//! that its health series exist too; a real Prometheus scrapes it every second, and
//! every PromQL target and `label_values` variable returns data — from Prometheus and
//! from VictoriaMetrics scraping the agent with the same configuration — once with every
//! variable at "All" and once with one real selection; the agent's line protocol is
//! written to a real InfluxDB 1.x and every InfluxQL target and `SHOW TAG VALUES`
//! variable returns series.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use inferwatt_core::lineproto::{self, Point};
use inferwatt_tests::fleet::{Fleet, LLAMACPP_MODEL, SGLANG_MODEL, VLLM_MODEL};
use inferwatt_tests::harness::{self, Proc};
use serde_json::Value;

const SITE: &str = "fra1";
const GPU_OF_VLLM: &str = "GPU-3f1c6a0e-5d2b-4e8f-9c71-000000000001";

/// Grafana's built-in variables the dashboards may use, with the value the test gives
/// each (the agent samples every second; Prometheus scrapes every second).
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "15s"),
    ("__interval", "5s"),
    ("__range", "1m"),
    ("timeFilter", "time > now() - 1h"),
];

struct Dashboard {
    file: String,
    json: Value,
}

impl Dashboard {
    fn datasource_type(&self) -> &str {
        self.json["panels"]
            .as_array()
            .and_then(|p| p.iter().find_map(|p| p["datasource"]["type"].as_str()))
            .unwrap_or_else(|| panic!("{}: no panel names a data source", self.file))
    }

    fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default()
    }

    /// Every panel, rows' nested panels included.
    fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            out.push(p);
            for inner in p["panels"].as_array().into_iter().flatten() {
                out.push(inner);
            }
        }
        out
    }

    /// (panel title, query text) of every target.
    fn queries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let q = t["expr"]
                    .as_str()
                    .or_else(|| t["query"].as_str())
                    .unwrap_or_else(|| {
                        panic!("{}: a target of '{}' has no query", self.file, p["title"])
                    });
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    q.to_string(),
                ));
            }
        }
        out
    }
}

fn dashboards_dir() -> PathBuf {
    harness::repo_root().join("dashboards")
}

fn load_dashboards() -> Vec<Dashboard> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dashboards_dir()).expect("read dashboards/") {
        let path = e.expect("dir entry").path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            out.push(Dashboard {
                file: path.file_name().expect("name").to_string_lossy().into(),
                json,
            });
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// uid → type of the provisioned data sources (our own YAML file: one `- name:` item per
/// data source, with `uid:` and `type:` keys).
fn provisioned_datasources() -> BTreeMap<String, String> {
    let dir = dashboards_dir().join("provisioning/datasources");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("read provisioning/datasources") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("read yaml");
        let (mut uid, mut kind) = (None::<String>, None::<String>);
        let mut flush = |uid: &mut Option<String>, kind: &mut Option<String>| {
            if let (Some(u), Some(k)) = (uid.take(), kind.take()) {
                out.insert(u, k);
            }
        };
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with("- name:") {
                flush(&mut uid, &mut kind);
            } else if let Some(v) = l.strip_prefix("uid:") {
                uid = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("type:") {
                kind = Some(v.trim().to_string());
            }
        }
        flush(&mut uid, &mut kind);
    }
    out
}

/// Names of the Grafana variables a query uses: `$name`, `${name}`, `${name:fmt}`,
/// `[[name]]`.
fn variables_used(q: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in q.match_indices('$') {
        let rest = &q[i + 1..];
        let name = match rest.strip_prefix('{') {
            Some(r) => ident(r),
            None => ident(rest),
        };
        if !name.is_empty() {
            out.insert(name);
        }
    }
    for (i, _) in q.match_indices("[[") {
        let name = ident(&q[i + 2..]);
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Replaces every variable by its value (longest names first, so `$site` never eats
/// into `$site_x`); panics if anything that looks like a variable is left.
fn substitute(q: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = q.to_string();
    for n in names {
        let v = &values[n];
        out = out
            .replace(&format!("${{{n}}}"), v)
            .replace(&format!("[[{n}]]"), v)
            .replace(&format!("${n}"), v);
    }
    assert!(
        variables_used(&out).is_empty(),
        "a variable is left in '{out}' (from '{q}')"
    );
    out
}

#[test]
fn every_dashboard_is_well_formed_and_uses_provisioned_datasources() {
    let dashboards = load_dashboards();
    assert!(
        dashboards.len() >= 6,
        "fleet, model and site dashboards for Prometheus and InfluxDB: {:?}",
        dashboards.iter().map(|d| &d.file).collect::<Vec<_>>()
    );
    let sources = provisioned_datasources();
    assert_eq!(
        sources.values().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"influxdb".to_string(), &"prometheus".to_string()]),
        "provisioned data sources: {sources:?}"
    );
    let provider =
        std::fs::read_to_string(dashboards_dir().join("provisioning/dashboards/inferwatt.yaml"))
            .expect("dashboards provider");
    assert!(provider.contains("type: file") && provider.contains("path:"));

    let mut uids = BTreeSet::new();
    for d in &dashboards {
        let f = &d.file;
        let uid = d.json["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{f}: no uid"));
        assert!(uids.insert(uid.to_string()), "{f}: uid '{uid}' used twice");
        assert!(
            uid.len() <= 40,
            "{f}: Grafana uids are at most 40 characters"
        );
        assert!(d.json["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(d.json["schemaVersion"].as_u64().is_some());

        // Panels: unique ids, inside the grid, data sources provisioned.
        let mut ids = BTreeSet::new();
        let kind = d.datasource_type().to_string();
        for p in d.panels() {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{f}: panel without id"));
            assert!(ids.insert(id), "{f}: panel id {id} used twice");
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64(), g["w"].as_u64());
            assert!(
                matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
                "{f}: panel {id} outside the 24-column grid: {g}"
            );
            let mut refs: Vec<&Value> = vec![&p["datasource"]];
            refs.extend(
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            );
            for ds in refs.into_iter().filter(|ds| !ds.is_null()) {
                let uid = ds["uid"].as_str().unwrap_or("");
                assert_eq!(
                    sources.get(uid).map(String::as_str),
                    Some(kind.as_str()),
                    "{f}: panel {id} uses data source '{uid}', not a provisioned {kind} one ({sources:?})"
                );
            }
            if p["type"] != "row" {
                assert!(
                    p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{f}: panel {id} has no query"
                );
            }
        }

        // Variables: defined before use, on a provisioned data source of the right type.
        let mut defined: BTreeSet<String> = BUILTINS.iter().map(|(n, _)| n.to_string()).collect();
        for v in d.variables() {
            let name = v["name"].as_str().expect("variable name");
            let q = variable_query(v);
            for used in variables_used(&q) {
                assert!(
                    defined.contains(&used),
                    "{f}: variable '{name}' uses '${used}' before it is defined"
                );
            }
            assert_eq!(
                sources.get(v["datasource"]["uid"].as_str().unwrap_or("")),
                Some(&kind),
                "{f}: variable '{name}' uses an unprovisioned data source"
            );
            assert!(defined.insert(name.to_string()), "{f}: '{name}' twice");
        }
        for (title, q) in d.queries() {
            for used in variables_used(&q) {
                assert!(
                    defined.contains(&used),
                    "{f}: panel '{title}' uses '${used}', which the dashboard does not define"
                );
            }
        }
    }
}

fn variable_query(v: &Value) -> String {
    v["query"]
        .as_str()
        .or_else(|| v["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", v["name"]))
        .to_string()
}

// ---------------------------------------------------------------------------------
// Against real servers.

fn which(name: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("'{name}' is not installed: apt-get install {package}"))
}

/// Percent-encodes a query-string component.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain HTTP/1.0 POST on loopback (so the answer is never chunked), returning
/// (status, body).
fn http_post(url: &str, content_type: &str, body: &[u8]) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST /{path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A value as Grafana puts a single selection into a Prometheus regex matcher: regex
/// metacharacters escaped, then backslashes doubled for the PromQL string.
fn prom_regex(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if r".+*?()|[]{}^$\".contains(c) {
            out.push_str(r"\\");
        }
        out.push(c);
    }
    out
}

/// A value as Grafana puts a single selection into an InfluxQL `/^…$/` regex.
fn influx_regex(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if r"/.+*?()|[]{}^$\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Prometheus {
    port: u16,
}

impl Prometheus {
    fn get(&self, path_and_query: &str) -> Value {
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.port);
        let (status, body) =
            harness::http_get(&url).unwrap_or_else(|| panic!("no answer from {url}"));
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
        assert!(
            status == 200 && json["status"] == "success",
            "{url}: {status} {body}"
        );
        json["data"].clone()
    }

    fn query(&self, q: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/query?query={}", urlencode(q)))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

struct Influx {
    port: u16,
}

impl Influx {
    /// Runs an InfluxQL statement; returns its series (an error answer panics).
    fn query(&self, q: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/query?db=inferwatt", self.port);
        let body = format!("q={}", urlencode(q));
        let (status, text) = http_post(&url, "application/x-www-form-urlencoded", body.as_bytes())
            .unwrap_or_else(|| panic!("no answer from {url}"));
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("'{q}': not JSON ({e}): {text}"));
        let result = &json["results"][0];
        assert!(
            status == 200 && result["error"].is_null() && json["error"].is_null(),
            "InfluxQL '{q}': {status} {text}"
        );
        result["series"].as_array().cloned().unwrap_or_default()
    }
}

fn start_influxd(dir: &Path) -> (Proc, Influx) {
    let (http, rpc) = (harness::free_port(), harness::free_port());
    let config = dir.join("influxdb.conf");
    std::fs::write(
        &config,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [coordinator]\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n\
             [subscriber]\n  enabled = false\n",
            d = dir.display()
        ),
    )
    .expect("influxdb config");
    let proc = Proc::spawn(
        "influxd",
        Command::new(which("influxd", "influxdb"))
            .arg("-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    harness::wait_for("influxd /ping", Duration::from_secs(30), || {
        harness::http_get(&format!("http://127.0.0.1:{http}/ping")).filter(|(s, _)| *s == 204)
    });
    (proc, Influx { port: http })
}

/// Whether an instant-query result has a finite sample.
fn has_finite_value(result: &[Value]) -> bool {
    result.iter().any(|r| {
        r["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// Whether InfluxQL series hold a non-null value besides time.
fn has_values(series: &[Value]) -> bool {
    series.iter().any(|s| {
        s["values"].as_array().into_iter().flatten().any(|row| {
            row.as_array()
                .is_some_and(|r| r.iter().skip(1).any(|v| !v.is_null()))
        })
    })
}

fn builtin_values() -> BTreeMap<String, String> {
    BUILTINS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_real_servers() {
    let prometheus_bin = which("prometheus", "prometheus");
    let dashboards = load_dashboards();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();

    // The agent on the simulated fleet, with three faults injected so that its health
    // series carry something: the collector it ships to is not listening (send
    // failures, spool bytes), neither is one inference server (scrape failures), and
    // its state file is a directory (sample errors of kind state_write).
    let epoch = harness::now_unix_ms() - 500;
    let fleet = Fleet::start(root, epoch, 120.0, 30.0);
    let (agent_port, prom_port) = (harness::free_port(), harness::free_port());
    let (dead_collector, dead_server) = (harness::free_port(), harness::free_port());
    let state = root.join("state");
    std::fs::create_dir_all(state.join("state.json/blocker")).expect("state dir");
    let lp = root.join("intervals.lp");
    let agent_config = root.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "[site]\nname = \"{SITE}\"\nhost = \"gpu-host-1\"\ncountry = \"DE\"\nzone = \"DE\"\npue = 1.2\n\
             wue_l_per_kwh = 0.5\newif_l_per_kwh = 3.1\ncarbon_intensity_g_per_kwh = 350.0\n\
             [nvml]\nlibrary = \"{lib}\"\n[prometheus]\nlisten = \"127.0.0.1:{agent_port}\"\n\
             [server_metrics]\ninterval_s = 1.0\n\
             [[server_metrics.endpoints]]\nurl = \"http://127.0.0.1:{dead_server}/metrics\"\nserver = \"vllm\"\n\
             [host]\nrapl = false\n[state]\ndir = \"{state}\"\n[file]\npath = \"{lp}\"\n\
             [ship]\nurl = \"http://127.0.0.1:{dead_collector}\"\nflush_interval_s = 0.5\n\
             backoff_min_s = 0.2\nbackoff_max_s = 1.0\n",
            lib = harness::sim_library().display(),
            state = state.display(),
            lp = lp.display(),
        ),
    )
    .expect("agent config");
    let mut agent = Proc::spawn(
        "inferwatt-agent",
        Command::new(harness::bin("inferwatt-agent"))
            .args(["run", "--config"])
            .arg(&agent_config)
            .env("FAKE_NVML_SCENARIO", &fleet.scenario_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );

    // A real Prometheus scraping it every second, and a real InfluxDB.
    let prom_dir = root.join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inferwatt-agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .expect("prometheus config");
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // VictoriaMetrics scraping the same agent with the same configuration: the
    // Prometheus dashboards on a VictoriaMetrics data source (the fleets' store).
    let vm_port = harness::free_port();
    let _victoria = Proc::spawn(
        "victoria-metrics",
        Command::new(which("victoria-metrics", "victoria-metrics"))
            .arg(format!(
                "-promscrape.config={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "-storageDataPath={}",
                root.join("vm-data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let influx_dir = root.join("influxdb");
    std::fs::create_dir_all(&influx_dir).expect("influxdb dir");
    let (_influxd, influx) = start_influxd(&influx_dir);
    let prom = Prometheus { port: prom_port };
    let victoria = Prometheus { port: vm_port };

    // ≥ 15 s of samples in Prometheus and in VictoriaMetrics.
    for port in [prom_port, vm_port] {
        harness::wait_for(
            "Prometheus and VictoriaMetrics to hold 16 scrapes of the agent",
            Duration::from_secs(60),
            || {
                assert!(agent.is_running(), "the agent exited early");
                let url = format!(
                    "http://127.0.0.1:{port}/api/v1/query?query={}",
                    urlencode("count_over_time(inferwatt_agent_samples_total[1m])")
                );
                let (_, body) = harness::http_get(&url)?;
                let json: Value = serde_json::from_str(&body).ok()?;
                let n: f64 = json["data"]["result"][0]["value"][1]
                    .as_str()?
                    .parse()
                    .ok()?;
                (n >= 16.0).then_some(())
            },
        );
    }

    // Prometheus dashboards: the variables list the fleet, then every target returns
    // data, with every variable at "All" and with one real selection.
    let instance = format!("127.0.0.1:{agent_port}");
    let selection: BTreeMap<&str, String> = BTreeMap::from([
        ("site", prom_regex(SITE)),
        ("model", prom_regex(VLLM_MODEL)),
        ("gpu_uuid", prom_regex(GPU_OF_VLLM)),
        ("instance", prom_regex(&instance)),
    ]);
    let mut failures = Vec::new();
    let mut prom_checked = 0;
    for (server, prom) in [("Prometheus", &prom), ("VictoriaMetrics", &victoria)] {
        let mut checked = 0;
        for d in dashboards
            .iter()
            .filter(|d| d.datasource_type() == "prometheus")
        {
            let all: BTreeMap<String, String> = builtin_values()
                .into_iter()
                .chain(d.variables().iter().map(|v| {
                    (
                        v["name"].as_str().expect("name").to_string(),
                        ".*".to_string(),
                    )
                }))
                .collect();
            for v in d.variables() {
                let name = v["name"].as_str().expect("name");
                let q = substitute(&variable_query(v), &all);
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.strip_suffix(')'))
                    .unwrap_or_else(|| {
                        panic!("{}: variable '{name}' is not label_values(..): {q}", d.file)
                    });
                let (selector, label) = inner
                    .rsplit_once(',')
                    .expect("label_values(selector, label)");
                let values = prom.get(&format!(
                    "/api/v1/label/{}/values?match%5B%5D={}",
                    label.trim(),
                    urlencode(selector.trim())
                ));
                let values: BTreeSet<&str> = values
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let want: &[&str] = match name {
                    "site" => &[SITE],
                    "model" => &[VLLM_MODEL, SGLANG_MODEL, LLAMACPP_MODEL],
                    "gpu_uuid" => &[GPU_OF_VLLM],
                    "instance" => &[instance.as_str()],
                    other => panic!("{}: unexpected variable '{other}'", d.file),
                };
                for w in want {
                    assert!(
                        values.contains(w),
                        "{server}: {}: variable '{name}' ({q}) lacks '{w}': {values:?}",
                        d.file
                    );
                }
            }
            let mut selected = all.clone();
            for (k, v) in &selection {
                if selected.contains_key(*k) {
                    selected.insert(k.to_string(), v.clone());
                }
            }
            for (title, q) in d.queries() {
                for (label, values) in [("All", &all), ("one selection", &selected)] {
                    let expr = substitute(&q, values);
                    let result = prom.query(&expr);
                    if !has_finite_value(&result) {
                        failures.push(format!(
                        "{server}: {} '{title}' ({label}): no finite sample from {expr}: {result:?}",
                        d.file
                    ));
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 40,
            "{server}: only {checked} PromQL queries checked"
        );
        prom_checked += checked;
    }

    // InfluxDB dashboards: the agent's line protocol in InfluxDB 1.x, then every
    // InfluxQL target and variable returns series.
    let (status, body) = http_post(
        &format!("http://127.0.0.1:{}/query", influx.port),
        "application/x-www-form-urlencoded",
        b"q=CREATE%20DATABASE%20inferwatt",
    )
    .expect("CREATE DATABASE");
    assert_eq!(status, 200, "CREATE DATABASE: {body}");
    // The agent's own line protocol, as written: InfluxDB 1.x refuses unsigned integer
    // fields, so the agent writes its integer fields signed.
    let points: Vec<Point> = harness::read_points(&lp);
    assert!(points.iter().any(|p| p.measurement == "gpu"));
    let body = lineproto::encode(&points).expect("encode");
    let (status, body) = http_post(
        &format!(
            "http://127.0.0.1:{}/write?db=inferwatt&precision=ns",
            influx.port
        ),
        "text/plain; charset=utf-8",
        body.as_bytes(),
    )
    .expect("write to influxd");
    assert_eq!(status, 204, "InfluxDB /write: {body}");
    let influx_selection: BTreeMap<&str, String> = BTreeMap::from([
        ("site", influx_regex(SITE)),
        ("model", influx_regex(VLLM_MODEL)),
        ("gpu_uuid", influx_regex(GPU_OF_VLLM)),
    ]);
    let mut influx_checked = 0;
    for d in dashboards
        .iter()
        .filter(|d| d.datasource_type() == "influxdb")
    {
        let all: BTreeMap<String, String> = builtin_values()
            .into_iter()
            .chain(d.variables().iter().map(|v| {
                (
                    v["name"].as_str().expect("name").to_string(),
                    ".*".to_string(),
                )
            }))
            .collect();
        for v in d.variables() {
            let name = v["name"].as_str().expect("name");
            let q = substitute(&variable_query(v), &all);
            let series = influx.query(&q);
            let values: BTreeSet<&str> = series
                .iter()
                .flat_map(|s| s["values"].as_array().into_iter().flatten())
                .filter_map(|row| row[1].as_str())
                .collect();
            let want = match name {
                "site" => SITE,
                "model" => VLLM_MODEL,
                "gpu_uuid" => GPU_OF_VLLM,
                other => panic!("{}: unexpected variable '{other}'", d.file),
            };
            assert!(
                values.contains(want),
                "{}: variable '{name}' ({q}) lacks '{want}': {values:?}",
                d.file
            );
        }
        let mut selected = all.clone();
        for (k, v) in &influx_selection {
            if selected.contains_key(*k) {
                selected.insert(k.to_string(), v.clone());
            }
        }
        for (title, q) in d.queries() {
            for (label, values) in [("All", &all), ("one selection", &selected)] {
                let query = substitute(&q, values);
                let series = influx.query(&query);
                if !has_values(&series) {
                    failures.push(format!(
                        "{} '{title}' ({label}): no series from {query}",
                        d.file
                    ));
                }
                influx_checked += 1;
            }
        }
    }
    assert!(
        influx_checked >= 20,
        "only {influx_checked} InfluxQL queries checked"
    );
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        failures.len(),
        prom_checked + influx_checked,
        failures.join("\n")
    );
    drop(fleet);
}
