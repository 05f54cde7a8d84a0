//! The pipeline: owns the sources and sinks and runs one sample per interval:
//! read → sample → attribute → footprint → publish.
//!
//! Sampling runs on its own thread on an absolute schedule and never waits on the
//! network: inference-server scrapes and shipping run as async tasks, joined to the
//! sampler by shared state (the latest usage deltas) and by the durable spool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use inferwatt_core::lineproto::Point;
use inferwatt_core::schema::{
    EnergySource, GpuInterval, HostEnergy, ModelEnergy, ModelUsage, Origin, SiteInfo, SplitMethod,
    MODEL_UNATTRIBUTED,
};
use inferwatt_core::units::mj_to_j;
use serde::{Deserialize, Serialize};

use crate::attribution::{attribute, GpuEnergyInput, IdlePolicy, ModelKey, ProcessActivity};
use crate::config::{Config, SplitChoice};
use crate::footprint::LocalFactors;
use crate::identify::{Identifier, Identity};
use crate::power_model::{PowerModel, Summary};
use crate::sample::{EnergyReading, GpuSampler, IntervalEnergy};
use crate::sinks::file::FileSink;
use crate::sinks::prometheus::SharedMetrics;
use crate::sources::nvml::{interval_sm_util, GpuReader, GpuReading};
use crate::sources::procs::ProcReader;
use crate::sources::rapl::RaplReader;
use crate::sources::server_metrics::{Baselines, ServerCounters, UsageTracker};

pub mod coarse;
pub mod power;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Nvml(#[from] crate::sources::nvml::SourceError),
    #[error("cannot create the state directory '{path}': {source}; set [state] dir to a directory this user can write")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] crate::sinks::file::FileSinkError),
    #[error("shipping: {0}")]
    Ship(String),
    #[error("identify rules: {0}")]
    Identify(String),
    #[error("kubernetes: {0}")]
    Kubernetes(String),
}

/// The scraper's counter baselines and the usage deltas it accumulated since the
/// sampler last took them, under one lock: the sampler snapshots the baselines when it
/// takes the deltas, so the state it persists never holds a baseline whose delta is not
/// in the interval it persists with.
#[derive(Debug, Default)]
pub struct UsageLedger {
    pub tracker: UsageTracker,
    pub pending: BTreeMap<ModelKey, ServerCounters>,
}

/// Shared between the scrape task and the sampler.
pub type PendingUsage = Arc<Mutex<UsageLedger>>;

/// Inference-server endpoints to scrape: URL → server kind.
pub type Endpoints = Arc<Mutex<BTreeMap<String, String>>>;

/// The last counter reading per GPU, persisted so that a restart attributes what the
/// counters advanced while the agent was down to `_unattributed`.
///
/// It is a write-ahead record: saved *before* an interval's points go to the sinks,
/// with those points (`pending`, line protocol). A restart re-delivers `pending` where
/// it did not arrive (the file sink checks its tail; the collector deduplicates a
/// re-sent batch), so a kill between the two writes neither loses nor doubles the
/// interval, and the downtime starts exactly where the last interval ended. With coarse
/// shipping the same save holds the shipping windows (`ship_*`, see [`coarse`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub gpus: BTreeMap<String, SavedReading>,
    /// The last interval's points, as line protocol.
    #[serde(default)]
    pub pending: Option<String>,
    /// Inference-server counters at the last scrape whose usage is in `pending` or
    /// before: a restart differences against them, so requests and tokens served while
    /// the agent was down are counted in its first interval, not lost.
    #[serde(default)]
    pub server_counters: Baselines,
    /// Static power measured with no compute process (the lowest mean power of a 10-s
    /// run of such intervals), per GPU uuid: kept so that a restart does not relearn it.
    #[serde(default)]
    pub idle_w: BTreeMap<String, f64>,
    /// Each GPU's power model at its last interval, per uuid (what `check` shows).
    #[serde(default)]
    pub power_models: BTreeMap<String, Summary>,
    /// Coarse shipping: the window length of the run that wrote the state (absent: it
    /// shipped every interval, so `pending` is owed to the spool as well).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_interval_s: Option<f64>,
    /// Coarse shipping: the open window's folded points (line protocol), one point per
    /// series; spooled as they are after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_open: Option<String>,
    /// Coarse shipping: closed windows not yet in the spool (line protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_closed: Option<String>,
}

/// One GPU's last reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SavedReading {
    pub t_ns: i64,
    pub counter_mj: u64,
}

impl AgentState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state file; a missing or unreadable one is an empty state (logged).
    pub fn load(dir: &Path) -> AgentState {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable state file");
                AgentState::default()
            }),
            Err(_) => AgentState::default(),
        }
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = Self::path(dir);
        let tmp = dir.join("state.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }
}

/// What one sample produced (also what `check` shows and tests inspect).
#[derive(Debug, Default, Clone)]
pub struct SampleOutput {
    /// Whether this sample carries the agent's downtime (a restart's `gap` intervals).
    pub downtime: bool,
    pub gpus: Vec<GpuInterval>,
    pub models: Vec<ModelEnergy>,
    pub usage: Vec<ModelUsage>,
    pub host: Option<HostEnergy>,
    pub site: Option<SiteInfo>,
}

impl SampleOutput {
    pub fn points(&self, o: &Origin) -> Vec<Point> {
        let mut pts = Vec::with_capacity(self.gpus.len() + self.models.len() + 2);
        pts.extend(self.gpus.iter().map(|g| g.to_point(o)));
        pts.extend(self.models.iter().map(|m| m.to_point(o)));
        pts.extend(self.usage.iter().map(|u| u.to_point(o)));
        pts.extend(self.host.iter().map(|h| h.to_point(o)));
        pts.extend(self.site.iter().map(|s| s.to_point(o)));
        pts
    }
}

struct CachedIdentity {
    /// What the process's lineage says (rules and built-ins on command lines).
    identity: Identity,
    cmdline: Vec<String>,
    /// The pod its cgroup names, on Kubernetes (resolved against the pod list at every
    /// interval: the list may arrive after the process, or change).
    pod_cgroup: Option<crate::kube::cgroup::PodCgroup>,
    /// The inference-server endpoint found for it, whose usage carries its pod.
    endpoint: Option<String>,
    /// Whether its cgroup could be read (a process whose cgroup is unreadable may be
    /// tagged by the kubelet's device assignment instead).
    cgroup_known: bool,
    /// What the kubelet's device assignment said of it, once (for `check` and the log).
    assignment_note: Option<String>,
    /// Its pod as resolved against a pod list, and that list: resolved again only when
    /// another list has been read.
    resolved: Option<(Arc<crate::kube::kubelet::PodIndex>, Resolved)>,
}

/// A process's identity with its pod, as attribution uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub identity: Identity,
    pub pod: Option<inferwatt_core::schema::PodTags>,
}

/// The Prometheus labels of a row's pod: the wire's pod tags that are set, none off
/// Kubernetes.
fn pod_labels(pod: Option<&inferwatt_core::schema::PodTags>) -> Vec<(&'static str, String)> {
    pod.map(|p| {
        p.pairs()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.to_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Endpoint URL → the pod of the process it was found for (usage rows carry it).
pub type EndpointPods = Arc<Mutex<BTreeMap<String, inferwatt_core::schema::PodTags>>>;

/// The sampler: everything one interval needs, owned by the sampling thread.
pub struct Sampler<R: GpuReader> {
    cfg: Config,
    origin: Origin,
    reader: R,
    procs: ProcReader,
    identifier: Identifier,
    rapl: Option<RaplReader>,
    samplers: Vec<GpuSampler>,
    power_models: Vec<PowerModel>,
    util_since_us: Vec<u64>,
    min_power_w: Vec<crate::sample::RunMinPower>,
    identities: HashMap<u32, CachedIdentity>,
    cpu_ticks: HashMap<u32, u64>,
    host_ticks: Option<u64>,
    state: AgentState,
    resumed: HashSet<String>,
    factors: LocalFactors,
    pending_usage: PendingUsage,
    /// (wall, monotonic) times (ns) of the last usage and host points, and the
    /// monotonic time of the last site point.
    last_usage_at: Option<(i64, i64)>,
    last_site_mono: Option<i64>,
    last_host_at: Option<(i64, i64)>,
    pub metrics: SharedMetrics,
    pub endpoints: Endpoints,
    /// The node's pod list as last read (empty off Kubernetes).
    pub pods: crate::kube::fetch::SharedPodView,
    pod_rules: Vec<crate::kube::rules::CompiledPodRule>,
    pub endpoint_pods: EndpointPods,
}

const HELP_GPU_ENERGY: &str =
    "GPU energy measured by NVML, by measurement path (counter, integrated, gap).";
const HELP_MODEL_ENERGY: &str =
    "Energy attributed to a model on a GPU, by component (active, idle, host).";
const HELP_EMISSIONS: &str =
    "Location-based emissions of a model's facility energy (agent's local estimate).";
const HELP_WATER: &str = "Water consumed for a model's energy: onsite (WUE x IT energy) and offsite (EWIF x facility energy).";

impl<R: GpuReader> Sampler<R> {
    pub fn new(cfg: Config, reader: R, metrics: SharedMetrics) -> Result<Self, PipelineError> {
        let identifier = Identifier::new(&cfg.identify.rules)
            .map_err(|e| PipelineError::Identify(e.to_string()))?;
        let pod_rules = crate::kube::rules::compile_pod_rules(&cfg.kubernetes.pod_rules)
            .map_err(|e| PipelineError::Identify(e.to_string()))?;
        let host = if cfg.site.host.is_empty() {
            system_host_name()
        } else {
            cfg.site.host.clone()
        };
        let origin = Origin {
            site: cfg.site.name.clone(),
            host,
        };
        let rapl = if cfg.host.rapl {
            match RaplReader::open(&cfg.host.powercap_root) {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(error = %e, "host energy: RAPL not readable");
                    None
                }
            }
        } else {
            None
        };
        let n = reader.gpus().len();
        let state = AgentState::load(&cfg.state.dir);
        let pending_usage = Arc::new(Mutex::new(UsageLedger {
            tracker: UsageTracker::resume(&state.server_counters),
            pending: BTreeMap::new(),
        }));
        let factors = LocalFactors::from_site(&cfg.site);
        for w in factors.warnings() {
            tracing::warn!("{w}");
        }
        let mut samplers = vec![GpuSampler::new(); n];
        for (slot, g) in reader.gpus().iter().enumerate() {
            if let Some(w) = state.idle_w.get(&g.uuid) {
                samplers[slot].observe_idle_power(*w);
            }
        }
        Ok(Sampler {
            origin,
            procs: ProcReader::with_root(&cfg.host.proc_root),
            identifier,
            rapl,
            samplers,
            power_models: vec![PowerModel::new(cfg.sampling.power_model); n],
            util_since_us: vec![0; n],
            min_power_w: vec![crate::sample::RunMinPower::default(); n],
            identities: HashMap::new(),
            cpu_ticks: HashMap::new(),
            host_ticks: None,
            state,
            resumed: HashSet::new(),
            factors,
            pending_usage,
            last_usage_at: None,
            last_site_mono: None,
            last_host_at: None,
            metrics,
            endpoints: Arc::new(Mutex::new(BTreeMap::new())),
            pods: Arc::default(),
            pod_rules,
            endpoint_pods: Arc::default(),
            reader,
            cfg,
        })
    }

    /// Ignores readings saved by an earlier run (for `check`, which must not report a
    /// downtime that `run` will report).
    pub fn forget_state(&mut self) {
        self.state = AgentState::default();
    }

    /// Makes the next sample carry the site point (sent once a minute otherwise).
    pub fn send_site_next(&mut self) {
        self.last_site_mono = None;
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn reader(&self) -> &R {
        &self.reader
    }

    pub fn pending_usage(&self) -> PendingUsage {
        self.pending_usage.clone()
    }

    pub fn factors(&self) -> &LocalFactors {
        &self.factors
    }

    /// The identity of a process and its pod. The lineage's identity is cached per pid
    /// while it lives; on Kubernetes the pod is looked up in the pod list, again only
    /// when a new list has been read (the answer is cached with the list it came from),
    /// and the pod's metadata names the model where METHODOLOGY §2.5's order says so: a
    /// `[[identify.rules]]` rule first, then `[[kubernetes.pod_rules]]`, then KServe's
    /// InferenceService label, then the built-in command-line rules, then
    /// `app.kubernetes.io/instance` for a process nothing else names.
    pub fn resolve(&mut self, pid: u32) -> Resolved {
        if !self.identities.contains_key(&pid) {
            self.learn(pid);
        }
        let index = self
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .index
            .clone();
        let Some(c) = self.identities.get(&pid) else {
            return Resolved {
                identity: Identity {
                    model: format!("unknown:pid{pid}"),
                    server: "unknown".into(),
                    rule: "not cached".into(),
                },
                pod: None,
            };
        };
        let (Some(cg), Some(index)) = (&c.pod_cgroup, index) else {
            return Resolved {
                identity: c.identity.clone(),
                pod: None,
            };
        };
        if let Some((seen, r)) = &c.resolved {
            if Arc::ptr_eq(seen, &index) {
                return r.clone();
            }
        }
        let Some((pod, container)) = index.lookup(cg) else {
            return Resolved {
                identity: c.identity.clone(),
                pod: None,
            };
        };
        let mut identity = c.identity.clone();
        let tags = inferwatt_core::schema::PodTags {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: container.map(|k| k.name.clone()).unwrap_or_default(),
            workload: pod.workload.name.clone(),
            workload_kind: pod.workload.kind.clone(),
        };
        if !identity.from_config_rule() {
            use crate::kube::rules;
            let unknown = identity.server == "unknown";
            let named = rules::from_config(pod, &self.pod_rules)
                .or_else(|| rules::kserve(pod))
                .or_else(|| unknown.then(|| rules::recommended_labels(pod)).flatten());
            if let Some(n) = named {
                identity = Identity {
                    model: n.model,
                    server: n.server,
                    rule: format!("{} (pod {}/{})", n.rule, pod.namespace, pod.name),
                };
            }
        }
        // The server's endpoint: in the pod's own network namespace its loopback is not
        // the agent's, so a loopback address becomes the pod's IP.
        let endpoint = c.endpoint.clone().map(|url| {
            let moved = pod
                .pod_ip
                .as_deref()
                .filter(|_| !pod.host_network)
                .and_then(|ip| crate::sources::server_metrics::on_host(&url, ip))
                .filter(|new| *new != url);
            (url, moved)
        });
        let mut endpoint_now = None;
        if let Some((url, moved)) = endpoint {
            let url = match moved {
                Some(new) => {
                    let mut eps = self
                        .endpoints
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(server) = eps.remove(&url) {
                        tracing::info!(%url, to = %new, pod = %tags.pod, "scraping the server at its pod's address");
                        eps.insert(new.clone(), server);
                    }
                    new
                }
                None => url,
            };
            self.endpoint_pods
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(url.clone(), tags.clone());
            endpoint_now = Some(url);
        }
        let r = Resolved {
            identity,
            pod: Some(tags),
        };
        if let Some(c) = self.identities.get_mut(&pid) {
            if endpoint_now.is_some() {
                c.endpoint = endpoint_now;
            }
            c.resolved = Some((index, r.clone()));
        }
        r
    }

    /// Reads a process's lineage and caches what it says.
    fn learn(&mut self, pid: u32) {
        // The process and its ancestors: vLLM's engine core and SGLang's schedulers
        // re-title themselves and carry their model on the parent's command line.
        let (identity, cmdline, endpoint, pod_cgroup, cgroup_known) =
            match self.procs.lineage(pid, 4) {
                Ok(chain) => {
                    let id = self.identifier.identify_lineage(&chain);
                    let endpoint =
                        crate::sources::server_metrics::default_endpoint_for_lineage(&id, &chain);
                    let cmdline = chain.first().map(|f| f.cmdline.clone()).unwrap_or_default();
                    let pod_cgroup = chain
                        .first()
                        .and_then(|f| f.cgroup.as_deref())
                        .and_then(crate::kube::cgroup::pod_of_cgroup);
                    let cgroup_known = chain.first().is_some_and(|f| f.cgroup.is_some());
                    (id, cmdline, endpoint, pod_cgroup, cgroup_known)
                }
                Err(e) => {
                    // Not readable (gone, or hidden by hidepid): still attributed, by pid.
                    tracing::debug!(pid, error = %e, "process facts unavailable");
                    (
                        Identity {
                            model: format!("unknown:pid{pid}"),
                            server: "unknown".into(),
                            rule: format!("process {pid} not readable: {e}"),
                        },
                        Vec::new(),
                        None,
                        None,
                        false,
                    )
                }
            };
        let endpoint = endpoint.filter(|_| self.cfg.server_metrics.discover);
        if let Some(url) = &endpoint {
            self.endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(url.clone(), identity.server.clone());
        }
        self.identities.insert(
            pid,
            CachedIdentity {
                identity,
                cmdline,
                pod_cgroup,
                endpoint,
                cgroup_known,
                assignment_note: None,
                resolved: None,
            },
        );
    }

    /// Checks a process's pod against the kubelet's device assignment of its GPU
    /// (PodResources), where the kubelet assigned that GPU to anyone:
    /// - tagged by its cgroup with a pod the kubelet did not give the GPU: kept (the
    ///   cgroup says where the process runs), counted in
    ///   `inferwatt_agent_pod_gpu_mismatches_total` and logged once;
    /// - its cgroup unreadable and the GPU held by one container only: tagged with it.
    pub fn check_assignment(&mut self, gpu_uuid: &str, pid: u32, mut r: Resolved) -> Resolved {
        let (devices, pods) = {
            let v = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
            (v.devices.clone(), v.index.clone())
        };
        let Some(devices) = devices else { return r };
        let holders = devices.holders(gpu_uuid);
        if holders.is_empty() {
            return r;
        }
        let Some(c) = self.identities.get_mut(&pid) else {
            return r;
        };
        let note = match &r.pod {
            Some(t) => {
                if holders
                    .iter()
                    .any(|(ns, pod, _)| *ns == t.namespace && *pod == t.pod)
                {
                    None
                } else {
                    let held: Vec<String> = holders
                        .iter()
                        .map(|(ns, pod, ctr)| format!("{ns}/{pod}/{ctr}"))
                        .collect();
                    Some(format!(
                        "GPU {gpu_uuid} is assigned by the kubelet to {}, not to this process's pod {}/{}",
                        held.join(", "),
                        t.namespace,
                        t.pod
                    ))
                }
            }
            None if !c.cgroup_known && holders.len() == 1 => {
                let (ns, pod, ctr) = &holders[0];
                let meta = pods.as_ref().and_then(|i| i.by_name(ns, pod));
                r.pod = Some(inferwatt_core::schema::PodTags {
                    namespace: ns.clone(),
                    pod: pod.clone(),
                    container: ctr.clone(),
                    workload: meta.map(|m| m.workload.name.clone()).unwrap_or_default(),
                    workload_kind: meta.map(|m| m.workload.kind.clone()).unwrap_or_default(),
                });
                if c.assignment_note.is_none() {
                    c.assignment_note = Some(format!(
                        "cgroup unreadable: pod {ns}/{pod} from the kubelet's assignment of GPU {gpu_uuid}"
                    ));
                }
                return r;
            }
            None => None,
        };
        if let Some(n) = note {
            if c.assignment_note.as_deref() != Some(n.as_str()) {
                tracing::warn!(pid, "{n}");
                c.assignment_note = Some(n);
                self.metrics
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .inc(
                        "inferwatt_agent_pod_gpu_mismatches_total",
                        "Processes whose pod (by cgroup) does not hold their GPU by the kubelet's assignment.",
                        vec![("gpu_uuid", gpu_uuid.to_owned())],
                        1.0,
                    );
            }
        }
        r
    }

    /// What the kubelet's device assignment said of a pid, if anything (for `check`).
    pub fn assignment_note(&self, pid: u32) -> Option<&str> {
        self.identities.get(&pid)?.assignment_note.as_deref()
    }

    /// The cmdline seen for a pid (for `check`).
    pub fn cmdline(&self, pid: u32) -> Option<&[String]> {
        self.identities.get(&pid).map(|c| c.cmdline.as_slice())
    }

    /// Takes one sample of every GPU and returns what it produced.
    pub fn sample(&mut self) -> SampleOutput {
        let mut out = SampleOutput::default();
        let mut live_pids: HashSet<u32> = HashSet::new();
        // pid → (gpu uuid, model key) rows, for the host split.
        let mut pid_rows: Vec<(u32, String, ModelKey)> = Vec::new();
        let mut model_rows: BTreeMap<(String, ModelKey), ModelEnergy> = BTreeMap::new();

        for slot in 0..self.samplers.len() {
            let info = self.reader.gpus()[slot].clone();
            let reading = match self.reader.read(slot, self.util_since_us[slot]) {
                Ok(r) => r,
                Err(e) => {
                    self.count_error("gpu_read");
                    tracing::warn!(gpu = info.index, error = %e, "GPU reading failed; its next interval spans this one");
                    continue;
                }
            };
            for e in &reading.errors {
                self.count_error("nvml_query");
                tracing::debug!(gpu = info.index, error = %e, "NVML query failed");
            }
            if let Some(samples) = &reading.util_samples {
                if let Some(max) = samples.iter().map(|s| s.timestamp_us).max() {
                    self.util_since_us[slot] = self.util_since_us[slot].max(max);
                }
            }
            let er = EnergyReading {
                t_ns: reading.t_ns,
                mono_ns: reading.mono_ns,
                counter_mj: reading.energy_counter_mj,
                power_w: reading.power_w,
                power_avg_w: reading.power_average_w,
            };

            // A restart: what the counter advanced while the agent was down.
            if self.resumed.insert(info.uuid.clone()) {
                if let (Some(saved), Some(cur)) =
                    (self.state.gpus.get(&info.uuid).copied(), er.counter_mj)
                {
                    if let Some(gap) = downtime_interval(saved, er.t_ns, cur) {
                        self.push_gap(&info, &reading, gap, &mut out, &mut model_rows);
                    }
                }
            }

            let Some(interval) = self.samplers[slot].step(er) else {
                self.save_reading(&info.uuid, er);
                continue;
            };
            self.save_reading(&info.uuid, er);
            if let Some(step) = interval.clock_step_s() {
                tracing::warn!(
                    gpu = info.index,
                    step_s = step,
                    "the wall clock stepped during this interval; its length comes from the monotonic clock, its energy is kept, and the point carries clock_step_s"
                );
            }
            if interval.counter_reset {
                tracing::info!(gpu = info.index, "energy counter went backwards (driver reload or GPU reset); integrating power for this interval");
            }

            // Processes and their models.
            let sm = interval_sm_util(reading.util_samples.as_deref(), reading.util_pct);
            let mut activity = Vec::with_capacity(reading.processes.len());
            for p in &reading.processes {
                live_pids.insert(p.pid);
                let r = self.resolve(p.pid);
                let r = self.check_assignment(&info.uuid, p.pid, r);
                let key = ModelKey::new(r.identity.model, r.identity.server).in_pod(r.pod);
                pid_rows.push((p.pid, info.uuid.clone(), key.clone()));
                activity.push(ProcessActivity {
                    pid: p.pid,
                    model: key,
                    sm_util: sm.as_ref().map(|m| m.get(&p.pid).copied().unwrap_or(0.0)),
                    mem_bytes: p.used_memory_bytes,
                    mig_instance: p.mig_index,
                });
            }
            // A process that exited during the interval is no longer listed, but its
            // utilisation samples before the exit are: it keeps its share.
            if let Some(sm) = &sm {
                for (&pid, &util) in sm {
                    if util > 0.0
                        && !activity.iter().any(|a| a.pid == pid)
                        && self.identities.contains_key(&pid)
                    {
                        let r = self.resolve(pid);
                        let key = ModelKey::new(r.identity.model, r.identity.server).in_pod(r.pod);
                        pid_rows.push((pid, info.uuid.clone(), key.clone()));
                        activity.push(ProcessActivity {
                            pid,
                            model: key,
                            sm_util: Some(util),
                            mem_bytes: None,
                            mig_instance: None,
                        });
                    }
                }
            }
            let dt = interval.interval_s();
            if interval.source != EnergySource::Gap {
                self.min_power_w[slot].observe(interval.energy_j, dt);
                let idle = activity.is_empty() && reading.processes_known;
                self.samplers[slot].observe_interval(interval.energy_j, dt, idle);
                if let Some(w) = self.samplers[slot].learned_idle_w() {
                    self.state.idle_w.insert(info.uuid.clone(), w);
                }
            }
            // Static power the user gave, else the one measured with no process.
            let known_static = self
                .cfg
                .sampling
                .idle_power_w
                .get(&info.name)
                .copied()
                .or(self.samplers[slot].learned_idle_w());
            let pstep = if self.cfg.sampling.split == SplitChoice::PowerModel {
                power::step(
                    &mut self.power_models[slot],
                    power::IntervalFacts {
                        end_ns: interval.end_ns,
                        dt_s: dt,
                        energy_j: interval.energy_j,
                        source: interval.source,
                        processes_known: reading.processes_known,
                        mig: !info.mig.is_empty(),
                        has_samples: sm.is_some(),
                        nominal_s: self.cfg.sampling.interval_s,
                        activity: &activity,
                    },
                    known_static,
                )
            } else {
                power::PowerStep::default()
            };
            if let Some(summary) = &pstep.summary {
                self.note_power_model(&info, summary);
            }
            // Else the power model's intercept, else the lowest power seen. (The
            // intercept is not capped by the lowest power seen: one short interval's
            // mean is off by up to a counter step, so that minimum is biased low.)
            let idle_power_w = known_static
                .or(pstep.static_w)
                .or(self.min_power_w[slot].value())
                .unwrap_or(0.0);
            let shares = attribute(&GpuEnergyInput {
                energy_j: interval.energy_j,
                interval_s: dt,
                idle_power_w,
                processes: activity,
                mig_slices: info.mig.iter().map(|m| (m.index, m.slices)).collect(),
                mig_activity: reading.mig_activity.clone(),
                idle_policy: self.cfg.sampling.idle_policy,
                processes_known: reading.processes_known,
                power_weights: pstep.weights,
            });

            out.gpus.push(gpu_interval(&info, &reading, &interval));
            for s in shares {
                let row = ModelEnergy {
                    gpu_uuid: info.uuid.clone(),
                    model: s.model.model.clone(),
                    server: s.model.server.clone(),
                    active_j: s.active_j,
                    idle_j: s.idle_j,
                    host_j: 0.0,
                    interval_s: dt,
                    method: s.method,
                    end_ns: interval.end_ns,
                    pod: s.model.pod.clone(),
                };
                model_rows.insert((info.uuid.clone(), s.model), row);
            }
            self.publish_gpu(&info, &reading, &interval);
        }

        let now_ns = crate::sources::nvml::now_ns();
        let now_mono = crate::sources::nvml::mono_ns();
        out.host = self.host_energy(now_ns, now_mono, &pid_rows, &mut model_rows);
        out.models = model_rows.into_values().collect();
        out.usage = self.take_usage(now_ns, now_mono);
        let since_site = self.last_site_mono.map(|t| now_mono - t);
        if since_site.is_none_or(|d| d >= 60_000_000_000) {
            let interval_s = since_site.map_or(0.0, |d| d as f64 / 1e9);
            self.last_site_mono = Some(now_mono);
            out.site = Some(SiteInfo {
                country: self.cfg.site.country.clone(),
                zone: self.cfg.site.zone.clone(),
                pue: self.cfg.site.pue,
                wue_l_per_kwh: self.cfg.site.wue_l_per_kwh,
                idle_policy: Some(
                    match self.cfg.sampling.idle_policy {
                        IdlePolicy::Resident => "resident",
                        IdlePolicy::Separate => "separate",
                    }
                    .to_owned(),
                ),
                interval_s,
                end_ns: now_ns,
            });
        }
        self.publish_models(&out);
        self.identities.retain(|pid, _| live_pids.contains(pid));
        out
    }

    fn push_gap(
        &mut self,
        info: &crate::sources::nvml::GpuInfo,
        reading: &GpuReading,
        gap: IntervalEnergy,
        out: &mut SampleOutput,
        rows: &mut BTreeMap<(String, ModelKey), ModelEnergy>,
    ) {
        tracing::info!(
            gpu = info.index,
            energy_j = gap.energy_j,
            seconds = gap.interval_s(),
            "energy used while the agent was down goes to _unattributed"
        );
        out.downtime = true;
        out.gpus.push(GpuInterval {
            energy_counter_mj: reading.energy_counter_mj,
            ..gpu_interval(info, reading, &gap)
        });
        let key = ModelKey::new(MODEL_UNATTRIBUTED, "");
        rows.insert(
            (info.uuid.clone(), key),
            ModelEnergy {
                gpu_uuid: info.uuid.clone(),
                model: MODEL_UNATTRIBUTED.into(),
                server: String::new(),
                active_j: gap.energy_j,
                idle_j: 0.0,
                host_j: 0.0,
                interval_s: gap.interval_s(),
                method: SplitMethod::None,
                end_ns: gap.end_ns,
                pod: None,
            },
        );
        self.publish_gpu(info, reading, &gap);
    }

    fn save_reading(&mut self, uuid: &str, er: EnergyReading) {
        if let Some(c) = er.counter_mj {
            self.state.gpus.insert(
                uuid.to_string(),
                SavedReading {
                    t_ns: er.t_ns,
                    counter_mj: c,
                },
            );
        }
    }

    /// Persists the last readings with the interval's points (`body`); call before the
    /// points go to the sinks. Returns whether the state is durable.
    pub fn persist_state(&mut self, body: &str) -> bool {
        self.state.pending = Some(body.to_string());
        let saved = self.state.save(&self.cfg.state.dir);
        self.state.pending = None;
        if let Err(e) = saved {
            self.count_error("state_write");
            tracing::warn!(error = %e, dir = %self.cfg.state.dir.display(), "cannot write the agent state");
            return false;
        }
        true
    }

    /// Sets what the next [`Sampler::persist_state`] saves of coarse shipping: the window
    /// length (`None`: every interval is shipped), the open window and the closed windows
    /// not yet spooled.
    pub fn set_ship_state(
        &mut self,
        interval_s: Option<f64>,
        open: Option<String>,
        closed: Option<String>,
    ) {
        self.state.ship_interval_s = interval_s;
        self.state.ship_open = open;
        self.state.ship_closed = closed;
    }

    /// What the previous run may not have delivered (a kill between its state and its
    /// sinks, or windows it had not shipped yet).
    pub fn take_owed(&mut self) -> coarse::Owed {
        coarse::owed(&mut self.state)
    }

    fn host_energy(
        &mut self,
        now_ns: i64,
        now_mono: i64,
        pid_rows: &[(u32, String, ModelKey)],
        rows: &mut BTreeMap<(String, ModelKey), ModelEnergy>,
    ) -> Option<HostEnergy> {
        let rapl = self.rapl.as_mut()?;
        let delta = match rapl.read_delta() {
            Ok(Some(d)) => d,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "RAPL read failed");
                return None;
            }
        };
        let host_j = delta.cpu_j + delta.dram_j.unwrap_or(0.0);
        // Split host energy by the GPU processes' share of the host's busy CPU time,
        // both read host-wide from /proc over the same interval (Σ shares ≤ 1).
        // Each pid once, though it may have a row on several GPUs.
        let pids: Vec<u32> = pid_rows
            .iter()
            .map(|(p, _, _)| *p)
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect();
        let ticks_now = self.procs.cpu_ticks(&pids);
        let host_now = self.procs.host_busy_ticks();
        let interval_s = self
            .last_host_at
            .map_or(self.cfg.sampling.interval_s, |(w, m)| {
                crate::sample::interval_length_ns(now_ns - w, now_mono - m) as f64 / 1e9
            });
        self.last_host_at = Some((now_ns, now_mono));
        if let (Some(before), Some(now)) = (self.host_ticks, host_now) {
            let deltas = crate::host_split::tick_deltas(&self.cpu_ticks, &ticks_now);
            let shares = crate::host_split::cpu_shares(now.saturating_sub(before), &deltas);
            let mut rows_per_pid: HashMap<u32, usize> = HashMap::new();
            for (pid, _, _) in pid_rows {
                *rows_per_pid.entry(*pid).or_default() += 1;
            }
            for (pid, uuid, key) in pid_rows {
                if let Some(share) = shares.get(pid) {
                    if let Some(row) = rows.get_mut(&(uuid.clone(), key.clone())) {
                        row.host_j += host_j * share / rows_per_pid[pid] as f64;
                    }
                }
            }
        }
        self.cpu_ticks = ticks_now;
        self.host_ticks = host_now;
        Some(HostEnergy {
            cpu_j: delta.cpu_j,
            dram_j: delta.dram_j,
            interval_s,
            source: "rapl".into(),
            end_ns: now_ns,
        })
    }

    fn take_usage(&mut self, now_ns: i64, now_mono: i64) -> Vec<ModelUsage> {
        let pending = {
            let mut ledger = self
                .pending_usage
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.state.server_counters = ledger.tracker.baselines();
            std::mem::take(&mut ledger.pending)
        };
        let interval_s = self
            .last_usage_at
            .map_or(self.cfg.sampling.interval_s, |(w, m)| {
                crate::sample::interval_length_ns(now_ns - w, now_mono - m) as f64 / 1e9
            });
        self.last_usage_at = Some((now_ns, now_mono));
        pending
            .into_iter()
            .filter(|(_, c)| c.requests + c.input_tokens + c.output_tokens > 0)
            .map(|(k, c)| ModelUsage {
                model: k.model,
                server: k.server,
                requests: c.requests,
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
                interval_s,
                end_ns: now_ns,
                pod: k.pod,
            })
            .collect()
    }

    /// Keeps a GPU's power-model summary for the state file and the metrics, and logs
    /// when its split changes method or fallback reason.
    fn note_power_model(&mut self, info: &crate::sources::nvml::GpuInfo, summary: &Summary) {
        let prev = self.state.power_models.get(&info.uuid);
        if prev.is_none_or(|p| p.method != summary.method || p.reason != summary.reason) {
            if summary.reason.is_empty() {
                tracing::info!(
                    gpu = info.index,
                    intervals = summary.intervals,
                    conditioning = summary.conditioning,
                    "power model identified: active energy split by learned power per percent"
                );
            } else {
                tracing::info!(gpu = info.index, reason = %summary.reason, "power model not used, SM share: {}", summary.explanation);
            }
        }
        {
            let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
            power::publish(&mut m, &self.origin.site, &info.uuid, summary);
        }
        self.state
            .power_models
            .insert(info.uuid.clone(), summary.clone());
    }

    fn count_error(&self, kind: &'static str) {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inc(
                "inferwatt_agent_sample_errors_total",
                "Failed reads while sampling, by kind.",
                vec![("kind", kind.to_string())],
                1.0,
            );
    }

    fn publish_gpu(
        &self,
        info: &crate::sources::nvml::GpuInfo,
        reading: &GpuReading,
        interval: &IntervalEnergy,
    ) {
        let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        let gpu_labels = || {
            vec![
                ("gpu_index", info.index.to_string()),
                ("gpu_name", info.name.clone()),
                ("gpu_uuid", info.uuid.clone()),
                ("site", self.origin.site.clone()),
            ]
        };
        let mut l = gpu_labels();
        l.push(("source", interval.source.as_str().to_string()));
        m.inc(
            "inferwatt_gpu_energy_joules_total",
            HELP_GPU_ENERGY,
            l,
            interval.energy_j,
        );
        if let Some(p) = reading.power_w {
            m.set(
                "inferwatt_gpu_power_watts",
                "GPU power as NVML reports it.",
                gpu_labels(),
                p,
            );
        }
        if let Some(u) = reading.util_pct {
            m.set(
                "inferwatt_gpu_utilization_percent",
                "GPU utilisation (percent of time a kernel ran).",
                gpu_labels(),
                u,
            );
        }
        if let Some(b) = reading.mem_used_bytes {
            m.set(
                "inferwatt_gpu_memory_used_bytes",
                "GPU memory in use.",
                gpu_labels(),
                b as f64,
            );
        }
        m.set(
            "inferwatt_gpu_processes",
            "Compute processes on the GPU.",
            gpu_labels(),
            reading.processes.len() as f64,
        );
    }

    fn publish_models(&self, out: &SampleOutput) {
        let f = &self.factors;
        let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        for r in &out.models {
            let base = || {
                let mut l = vec![
                    ("gpu_uuid", r.gpu_uuid.clone()),
                    ("model", r.model.clone()),
                    ("server", r.server.clone()),
                    ("site", self.origin.site.clone()),
                ];
                l.extend(pod_labels(r.pod.as_ref()));
                l
            };
            for (component, j) in [
                ("active", r.active_j),
                ("idle", r.idle_j),
                ("host", r.host_j),
            ] {
                let mut l = base();
                l.push(("component", component.to_string()));
                m.inc(
                    "inferwatt_model_energy_joules_total",
                    HELP_MODEL_ENERGY,
                    l,
                    j,
                );
            }
            let fp = f.footprint(r.total_j());
            let model_labels = || {
                let mut l = vec![
                    ("model", r.model.clone()),
                    ("server", r.server.clone()),
                    ("site", self.origin.site.clone()),
                ];
                l.extend(pod_labels(r.pod.as_ref()));
                l
            };
            if let Some(g) = fp.location_g {
                let mut l = model_labels();
                l.push(("method", "location".to_string()));
                m.inc(
                    "inferwatt_model_emissions_grams_total",
                    HELP_EMISSIONS,
                    l,
                    g,
                );
            }
            for (scope, l_) in [
                ("onsite", fp.water_onsite_l),
                ("offsite", fp.water_offsite_l),
            ] {
                let mut l = model_labels();
                l.push(("scope", scope.to_string()));
                m.inc("inferwatt_model_water_liters_total", HELP_WATER, l, l_);
            }
        }
        for u in &out.usage {
            let l = || {
                let mut l = vec![
                    ("model", u.model.clone()),
                    ("server", u.server.clone()),
                    ("site", self.origin.site.clone()),
                ];
                l.extend(pod_labels(u.pod.as_ref()));
                l
            };
            m.inc(
                "inferwatt_model_requests_total",
                "Requests a model's server completed.",
                l(),
                u.requests as f64,
            );
            m.inc(
                "inferwatt_model_input_tokens_total",
                "Prompt tokens a model's server processed.",
                l(),
                u.input_tokens as f64,
            );
            m.inc(
                "inferwatt_model_output_tokens_total",
                "Tokens a model's server generated.",
                l(),
                u.output_tokens as f64,
            );
        }
        if let Some(h) = &out.host {
            let l = vec![
                ("site", self.origin.site.clone()),
                ("source", h.source.clone()),
            ];
            m.inc(
                "inferwatt_host_energy_joules_total",
                "Host CPU package and DRAM energy.",
                l,
                h.cpu_j + h.dram_j.unwrap_or(0.0),
            );
        }
        m.inc(
            "inferwatt_agent_samples_total",
            "Samples taken.",
            vec![],
            1.0,
        );
        m.set(
            "inferwatt_agent_last_sample_timestamp_seconds",
            "Unix time of the last sample.",
            vec![],
            crate::sources::nvml::now_ns() as f64 / 1e9,
        );
    }
}

/// The interval between a reading saved by an earlier run and the first one now.
pub fn downtime_interval(
    saved: SavedReading,
    now_ns: i64,
    counter_mj: u64,
) -> Option<IntervalEnergy> {
    if now_ns <= saved.t_ns {
        return None;
    }
    // A counter that went backwards was reset while we were down (driver reload): what
    // it shows now is the energy since then; what came before the reset is unknown.
    let energy_mj = if counter_mj >= saved.counter_mj {
        counter_mj - saved.counter_mj
    } else {
        counter_mj
    };
    // Across a restart only the wall clock relates the two readings.
    Some(IntervalEnergy {
        start_ns: saved.t_ns,
        end_ns: now_ns,
        dt_ns: now_ns - saved.t_ns,
        energy_j: mj_to_j(energy_mj),
        source: EnergySource::Gap,
        counter_reset: counter_mj < saved.counter_mj,
    })
}

fn gpu_interval(
    info: &crate::sources::nvml::GpuInfo,
    reading: &GpuReading,
    interval: &IntervalEnergy,
) -> GpuInterval {
    GpuInterval {
        gpu_uuid: info.uuid.clone(),
        gpu_index: info.index,
        gpu_name: info.name.clone(),
        energy_j: interval.energy_j,
        power_w: reading.power_w,
        util_pct: reading.util_pct,
        mem_used_bytes: reading.mem_used_bytes,
        energy_counter_mj: reading.energy_counter_mj,
        interval_s: interval.interval_s(),
        source: interval.source,
        clock_step_s: interval.clock_step_s(),
        end_ns: interval.end_ns,
    }
}

/// The system's host name.
pub fn system_host_name() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_string())
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn run<R: GpuReader + Send + 'static>(cfg: Config, reader: R) -> Result<(), PipelineError> {
    std::fs::create_dir_all(&cfg.state.dir).map_err(|source| PipelineError::StateDir {
        path: cfg.state.dir.clone(),
        source,
    })?;
    let metrics = crate::sinks::prometheus::Metrics::shared();
    let mut sampler = Sampler::new(cfg.clone(), reader, metrics.clone())?;
    let mut file = cfg
        .file
        .as_ref()
        .map(|f| FileSink::open(&f.path))
        .transpose()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| PipelineError::Ship(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let ship = match cfg.ship.clone() {
        Some(mut sc) => {
            if sc.spool_dir.as_os_str().is_empty() {
                sc.spool_dir = cfg.state.dir.join("spool");
            }
            let (shipper, handle) = rt
                .block_on(async { inferwatt_ship::Shipper::open(sc) })
                .map_err(|e| PipelineError::Ship(e.to_string()))?;
            let rx = stop_rx.clone();
            let task = rt.spawn(shipper.run(rx));
            Some((handle, task))
        }
        None => None,
    };

    if cfg.prometheus.enabled {
        let (listen, m, rx) = (cfg.prometheus.listen, metrics.clone(), stop_rx.clone());
        // Bind now so a taken port is a startup error, not a log line later.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|e| {
                PipelineError::Ship(format!(
                    "cannot listen on {listen} for Prometheus: {e}; set [prometheus] listen"
                ))
            })?;
        drop(listener);
        rt.spawn(async move {
            if let Err(e) = crate::sinks::prometheus::serve(listen, m, rx).await {
                tracing::error!(error = %e, "Prometheus endpoint stopped");
            }
        });
    }

    rt.spawn(scrape_loop(
        cfg.server_metrics.clone(),
        sampler.endpoints.clone(),
        sampler.endpoint_pods.clone(),
        sampler.pending_usage(),
        metrics.clone(),
        stop_rx.clone(),
    ));

    // OTLP: the same counters pushed every `interval_s`, and once more at the stop.
    let otlp = cfg.otlp.clone().map(|o| {
        tracing::info!(endpoint = %o.endpoint, interval_s = o.interval_s, "pushing metrics over OTLP");
        rt.spawn(crate::sinks::otlp::export_loop(
            o,
            metrics.clone(),
            sampler.origin().host.clone(),
            stop_rx.clone(),
        ))
    });

    // Kubernetes: the pod list, read once before the first interval, then every
    // `refresh_s` (a failed read keeps the last list).
    if let Some(reader) = crate::kube::fetch::PodListReader::new(&cfg.kubernetes)
        .map_err(PipelineError::Kubernetes)?
    {
        let view = sampler.pods.clone();
        rt.block_on(reader.refresh(&view));
        let pods = view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .index
            .as_ref()
            .map_or(0, |i| i.len());
        tracing::info!(url = %reader.url(), pods, "reading the node's pods");
        let every = Duration::from_secs_f64(cfg.kubernetes.refresh_s);
        let mut stop = stop_rx.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                reader.refresh(&view).await;
            }
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Only the flag: the sampling loop tells the tasks (`stop_tx`) once it has
        // handed its last points to the spool, so the shipper's final flush sends them.
        rt.spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping");
            stop.store(true, Ordering::SeqCst);
        });
    }

    let interval = Duration::from_secs_f64(cfg.sampling.interval_s);
    let start = Instant::now();
    let mut k: u32 = 0;
    tracing::info!(
        gpus = sampler.reader().gpus().len(),
        interval_s = cfg.sampling.interval_s,
        site = %sampler.origin().site,
        host = %sampler.origin().host,
        "sampling"
    );
    // Coarse shipping: windows longer than the sampling interval.
    let mut coarse = cfg
        .ship
        .as_ref()
        .and_then(|s| s.interval_s)
        .filter(|&w| w > cfg.sampling.interval_s)
        .map(coarse::CoarseShip::new);
    if let Some(c) = &coarse {
        tracing::info!(
            interval_s = c.interval_s(),
            "shipping one point per series per window"
        );
    }
    // What the previous run may not have delivered: its last interval if a kill came
    // between its state and its sinks, and its shipping windows.
    let owed = sampler.take_owed();
    redeliver(
        owed,
        file.as_mut(),
        ship.as_ref().map(|(h, _)| h),
        coarse.as_mut(),
    );
    let mut last_body: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let out = sampler.sample();
        let mut points = out.points(sampler.origin());
        if coarse.is_some() {
            coarse::CoarseShip::prepare(&mut points);
        }
        // One encoding per tick: the state's write-ahead copy, the file and (shipping
        // every interval) the spool all take the same bytes.
        let body = match inferwatt_core::lineproto::encode(&points) {
            Ok(body) => Some(body),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode this interval");
                None
            }
        };
        if let Some(c) = coarse.as_mut() {
            if body.is_some() {
                c.push(points, out.downtime);
            }
            let (open, closed) = c.wal();
            sampler.set_ship_state(Some(c.interval_s()), open, closed);
        }
        if let Some(body) = body.as_deref() {
            sampler.persist_state(body);
        }
        if let (Some(f), Some(body)) = (file.as_mut(), body.as_deref()) {
            if let Err(e) = f.write_raw(body) {
                tracing::warn!(error = %e, "file sink write failed");
            }
        }
        if let Some((handle, _)) = &ship {
            match (coarse.as_mut(), body.as_deref()) {
                (Some(c), _) => c.spool(handle),
                (None, Some(body)) => {
                    if let Err(e) = handle.enqueue_encoded(body) {
                        tracing::warn!(error = %e, "cannot spool this interval");
                    }
                }
                (None, None) => {}
            }
            let s = handle.stats();
            let mut m = metrics.lock().unwrap_or_else(PoisonError::into_inner);
            m.set(
                "inferwatt_agent_spool_bytes",
                "Bytes waiting in the on-disk spool.",
                vec![],
                s.spool_bytes as f64,
            );
            m.set(
                "inferwatt_agent_sent_points",
                "Points the collector acknowledged since start.",
                vec![],
                s.sent_points_total as f64,
            );
            m.set(
                "inferwatt_agent_send_failures",
                "Failed sends since start (retried).",
                vec![],
                s.send_failures_total as f64,
            );
            m.set(
                "inferwatt_agent_rejected_batches",
                "Batches the server rejected since start (kept in the dead-letter file).",
                vec![],
                s.rejected_batches_total as f64,
            );
            m.set(
                "inferwatt_agent_folded_points",
                "Points folded into coarser intervals on spool overflow since start.",
                vec![],
                s.folded_points_total as f64,
            );
        }
        // Absolute schedule: the next tick is the next multiple of the interval.
        k += 1;
        let mut next = start + interval * k;
        let now = Instant::now();
        while next <= now {
            k += 1;
            next = start + interval * k;
        }
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
        }
        last_body = body;
    }
    // The open window goes to the spool before the shipper's final flush, and the state
    // says so (a later start then owes the spool nothing of it).
    if let (Some(c), Some((handle, _))) = (coarse.as_mut(), &ship) {
        c.close();
        c.spool(handle);
        if let Some(body) = &last_body {
            let (open, closed) = c.wal();
            sampler.set_ship_state(Some(c.interval_s()), open, closed);
            sampler.persist_state(body);
        }
    }
    let _ = stop_tx.send(true);
    if let Some((_, task)) = ship {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
    if let Some(task) = otlp {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Delivers what the previous run may not have: its last interval to the file sink
/// unless the file already ends with it; its batches for the spool ([`coarse::owed`]:
/// that interval when it shipped every interval, else its shipping windows) always,
/// since the collector deduplicates what it already has, by series and timestamp. A
/// window the spool refuses now stays owed (kept by `coarse`, so in the next state).
fn redeliver(
    owed: coarse::Owed,
    file: Option<&mut FileSink>,
    ship: Option<&inferwatt_ship::ShipHandle>,
    mut coarse: Option<&mut coarse::CoarseShip>,
) {
    if let (Some(f), Some(body)) = (file, owed.file.as_deref()) {
        match f.ends_with(body) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("writing the last interval of the previous run, which its stop kept from the file");
                if let Err(e) = f.write_raw(body) {
                    tracing::warn!(error = %e, "file sink write failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the file sink's tail"),
        }
    }
    let Some(h) = ship else { return };
    for body in &owed.spool {
        // Check it before it enters the spool: a corrupt state file must not become a
        // batch the collector refuses.
        if let Err(e) = inferwatt_core::lineproto::decode(
            body.as_bytes(),
            inferwatt_core::lineproto::Precision::Nanoseconds,
            0,
        ) {
            tracing::warn!(error = %e, "the saved points of the previous run are not valid line protocol");
            continue;
        }
        if let Err(e) = h.enqueue_encoded(body) {
            match coarse.as_deref_mut() {
                Some(c) => {
                    tracing::warn!(error = %e, "cannot spool the previous run's points yet; retrying next interval");
                    c.keep(body);
                }
                None => tracing::warn!(error = %e, "cannot spool the previous run's last interval"),
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn scrape_loop(
    cfg: crate::config::ServerMetricsConfig,
    endpoints: Endpoints,
    endpoint_pods: EndpointPods,
    pending: PendingUsage,
    metrics: SharedMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: server metrics disabled");
            return;
        }
    };
    {
        let mut eps = endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        for e in &cfg.endpoints {
            eps.insert(e.url.clone(), e.server.clone());
        }
    }
    let timeout = Duration::from_secs_f64(cfg.timeout_s);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.interval_s));
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let eps: Vec<(String, String)> = endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        for (url, server) in eps {
            match crate::sources::server_metrics::scrape(&client, &url, &server, timeout).await {
                Ok(counters) => {
                    if failing.remove(&url) {
                        tracing::info!(%url, "inference-server metrics reachable again");
                    }
                    let mut ledger = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    let deltas = ledger.tracker.update(&url, &counters);
                    let pod = endpoint_pods
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&url)
                        .cloned();
                    for (model, d) in deltas {
                        let e = ledger
                            .pending
                            .entry(ModelKey::new(model, server.clone()).in_pod(pod.clone()))
                            .or_default();
                        e.requests += d.requests;
                        e.input_tokens += d.input_tokens;
                        e.output_tokens += d.output_tokens;
                    }
                }
                Err(e) => {
                    if failing.insert(url.clone()) {
                        tracing::warn!(%url, error = %e, "cannot scrape inference-server metrics");
                    }
                    metrics.lock().unwrap_or_else(PoisonError::into_inner).inc(
                        "inferwatt_agent_scrape_failures_total",
                        "Failed scrapes of inference-server metrics.",
                        vec![("server", server.clone())],
                        1.0,
                    );
                }
            }
        }
    }
}
