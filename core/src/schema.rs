//! The wire contract: measurement, tag and field names that the agent writes, the
//! collector reads, and dashboards query. Renaming any of these is a contract change
//! (see `docs/ARCHITECTURE.md`).
//!
//! Timestamps are interval ends in nanoseconds; energies are interval deltas in joules.

use crate::lineproto::Point;

/// Per-GPU interval energy and state.
pub const GPU: &str = "gpu";
/// Per-(GPU, model) interval energy.
pub const MODEL_ENERGY: &str = "model_energy";
/// Per-model interval requests and tokens.
pub const MODEL_USAGE: &str = "model_usage";
/// Per-host CPU/DRAM interval energy.
pub const HOST_ENERGY: &str = "host_energy";
/// Site metadata as the agent knows it.
pub const SITE: &str = "site";
/// Energy the agent's spool folded into coarser intervals on overflow.
pub const SPOOL_FOLD: &str = "spool_fold";

/// Reserved model name: a GPU's energy while no model was resident (or under the
/// `separate` idle policy, all idle energy).
pub const MODEL_IDLE: &str = "_idle";
/// Reserved model name: energy the counters saw that the agent could not attribute
/// (for instance while it was down).
pub const MODEL_UNATTRIBUTED: &str = "_unattributed";
/// Optional `model_energy` field: the model's share of the GPU's time in the interval, in
/// seconds, by the rule of [`crate::gpu_time`]. The collector computes it when a point
/// does not carry it (see docs/ARCHITECTURE.md "Store"); an agent shipping coarse windows
/// (`[ship] interval_s`) and imports that know it (one model per GPU) set it.
pub const GPU_SECONDS_FIELD: &str = "gpu_s";

/// How a GPU interval's energy was measured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// Difference of two readings of NVML's cumulative energy counter.
    Counter,
    /// Trapezoidal integration of NVML power readings.
    Integrated,
    /// Neither: the agent was not sampling (energy from a counter that advanced while
    /// it was down, attributed to `_unattributed`), or nothing could be read.
    Gap,
}

impl EnergySource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::Counter => "counter",
            EnergySource::Integrated => "integrated",
            EnergySource::Gap => "gap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "counter" => Some(EnergySource::Counter),
            "integrated" => Some(EnergySource::Integrated),
            "gap" => Some(EnergySource::Gap),
            _ => None,
        }
    }
}

/// How a GPU's active energy was split among its processes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// In proportion to per-process SM utilisation samples.
    SmUtil,
    /// In proportion to SM utilisation times the model's learned power per percent of
    /// utilisation (the GPU's power model).
    PowerModel,
    /// In proportion to used GPU memory (no utilisation samples).
    Memory,
    /// Equally (neither utilisation nor memory known).
    Equal,
    /// By MIG instance size (compute slices), then within the instance.
    Mig,
    /// By each MIG instance's measured activity (GPM SM utilisation × its slices), then
    /// within the instance.
    MigGpm,
    /// Not split: the whole interval went to a reserved name.
    None,
}

impl SplitMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitMethod::SmUtil => "sm_util",
            SplitMethod::PowerModel => "power_model",
            SplitMethod::Memory => "memory",
            SplitMethod::Equal => "equal",
            SplitMethod::Mig => "mig",
            SplitMethod::MigGpm => "mig_gpm",
            SplitMethod::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sm_util" => Some(SplitMethod::SmUtil),
            "power_model" => Some(SplitMethod::PowerModel),
            "memory" => Some(SplitMethod::Memory),
            "equal" => Some(SplitMethod::Equal),
            "mig" => Some(SplitMethod::Mig),
            "mig_gpm" => Some(SplitMethod::MigGpm),
            "none" => Some(SplitMethod::None),
            _ => None,
        }
    }
}

/// Tags every point carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub site: String,
    pub host: String,
}

/// One GPU's interval (`gpu` measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInterval {
    pub gpu_uuid: String,
    pub gpu_index: u32,
    pub gpu_name: String,
    pub energy_j: f64,
    pub power_w: Option<f64>,
    pub util_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub energy_counter_mj: Option<u64>,
    pub interval_s: f64,
    pub source: EnergySource,
    /// How far the host's wall clock stepped within the interval (s, wall − monotonic),
    /// when it did; `interval_s` is the monotonic length either way.
    pub clock_step_s: Option<f64>,
    pub end_ns: i64,
}

impl GpuInterval {
    pub fn to_point(&self, o: &Origin) -> Point {
        let mut p = Point::new(GPU)
            .tag("site", &o.site)
            .tag("host", &o.host)
            .tag("gpu_uuid", &self.gpu_uuid)
            .tag("gpu_index", self.gpu_index.to_string())
            .tag("gpu_name", &self.gpu_name)
            .float("energy_j", self.energy_j);
        if let Some(v) = self.power_w {
            p = p.float("power_w", v);
        }
        if let Some(v) = self.util_pct {
            p = p.float("util_pct", v);
        }
        // Signed integers, not `u`: InfluxDB 1.x refuses unsigned fields, and these
        // values fit an i64 for millions of years.
        if let Some(v) = self.mem_used_bytes {
            p = p.int("mem_used_bytes", i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = self.energy_counter_mj {
            p = p.int("energy_counter_mj", i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = self.clock_step_s {
            p = p.float("clock_step_s", v);
        }
        p.float("interval_s", self.interval_s)
            .string("source", self.source.as_str())
            .at(self.end_ns)
    }
}

/// The Kubernetes tags of `model_energy` and `model_usage`, in the order they are written.
pub const POD_TAG_KEYS: [&str; 5] = ["namespace", "pod", "container", "workload", "workload_kind"];

/// Where on Kubernetes a `model_energy` or `model_usage` row ran: the pod's namespace and
/// name, the container's name, and the pod's owning workload (`workload_kind` such as
/// `Deployment`, `StatefulSet`, `Job`; `Pod` for a bare pod). Off Kubernetes the row has
/// none of these tags (line protocol has no empty tag values); an empty field here is a
/// tag left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodTags {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub workload: String,
    pub workload_kind: String,
}

impl PodTags {
    /// The tags, [`POD_TAG_KEYS`] order, each with its value (possibly empty).
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (POD_TAG_KEYS[0], self.namespace.as_str()),
            (POD_TAG_KEYS[1], self.pod.as_str()),
            (POD_TAG_KEYS[2], self.container.as_str()),
            (POD_TAG_KEYS[3], self.workload.as_str()),
            (POD_TAG_KEYS[4], self.workload_kind.as_str()),
        ]
    }

    /// `p` with the non-empty tags added.
    pub fn tag(&self, mut p: Point) -> Point {
        for (k, v) in self.pairs() {
            if !v.is_empty() {
                p = p.tag(k, v);
            }
        }
        p
    }
}

/// One (GPU, model) interval (`model_energy` measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEnergy {
    pub gpu_uuid: String,
    pub model: String,
    pub server: String,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    pub interval_s: f64,
    pub method: SplitMethod,
    pub end_ns: i64,
    /// The pod the model ran in, on Kubernetes.
    pub pod: Option<PodTags>,
}

impl ModelEnergy {
    pub fn to_point(&self, o: &Origin) -> Point {
        let p = Point::new(MODEL_ENERGY)
            .tag("site", &o.site)
            .tag("host", &o.host)
            .tag("gpu_uuid", &self.gpu_uuid)
            .tag("model", &self.model)
            .tag("server", &self.server);
        let p = match &self.pod {
            Some(pod) => pod.tag(p),
            None => p,
        };
        p.float("active_j", self.active_j)
            .float("idle_j", self.idle_j)
            .float("host_j", self.host_j)
            .float("interval_s", self.interval_s)
            .string("method", self.method.as_str())
            .at(self.end_ns)
    }

    /// Total energy of the row.
    pub fn total_j(&self) -> f64 {
        self.active_j + self.idle_j + self.host_j
    }
}

/// One model's interval usage (`model_usage` measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUsage {
    pub model: String,
    pub server: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub interval_s: f64,
    pub end_ns: i64,
    /// The pod whose server counted these requests, on Kubernetes.
    pub pod: Option<PodTags>,
}

impl ModelUsage {
    pub fn to_point(&self, o: &Origin) -> Point {
        let p = Point::new(MODEL_USAGE)
            .tag("site", &o.site)
            .tag("host", &o.host)
            .tag("model", &self.model)
            .tag("server", &self.server);
        let p = match &self.pod {
            Some(pod) => pod.tag(p),
            None => p,
        };
        p.int("requests", self.requests as i64)
            .int("input_tokens", self.input_tokens as i64)
            .int("output_tokens", self.output_tokens as i64)
            .float("interval_s", self.interval_s)
            .at(self.end_ns)
    }
}

/// One host interval (`host_energy` measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct HostEnergy {
    pub cpu_j: f64,
    pub dram_j: Option<f64>,
    pub interval_s: f64,
    /// `rapl`, `estimated` (configured static watts).
    pub source: String,
    pub end_ns: i64,
}

impl HostEnergy {
    pub fn to_point(&self, o: &Origin) -> Point {
        let mut p = Point::new(HOST_ENERGY)
            .tag("site", &o.site)
            .tag("host", &o.host)
            .float("cpu_j", self.cpu_j);
        if let Some(d) = self.dram_j {
            p = p.float("dram_j", d);
        }
        p.float("interval_s", self.interval_s)
            .string("source", &self.source)
            .at(self.end_ns)
    }
}

/// Site metadata (`site` measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteInfo {
    pub country: String,
    pub zone: String,
    /// The site's PUE where the agent's `[site]` sets it; `None` (field left out) when
    /// nobody configured it, so the collector uses its factors file or a cited reference
    /// and says so — never a silent 1.0.
    pub pue: Option<f64>,
    /// On-site WUE (L/kWh) where configured; `None` (left out) otherwise.
    pub wue_l_per_kwh: Option<f64>,
    /// The idle policy the agent attributes with (`resident`, `separate`); the report
    /// states it and charges the host's unassigned energy by it.
    pub idle_policy: Option<String>,
    pub interval_s: f64,
    pub end_ns: i64,
}

impl SiteInfo {
    pub fn to_point(&self, o: &Origin) -> Point {
        let p = Point::new(SITE)
            .tag("site", &o.site)
            .tag("host", &o.host)
            .tag("country", &self.country)
            .tag("zone", &self.zone);
        let p = match self.pue {
            Some(v) => p.float("pue", v),
            None => p,
        };
        let p = match self.wue_l_per_kwh {
            Some(v) => p.float("wue_l_per_kwh", v),
            None => p,
        };
        let p = match &self.idle_policy {
            Some(policy) => p.string("idle_policy", policy),
            None => p,
        };
        p.float("interval_s", self.interval_s).at(self.end_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_site_factors_are_left_off_the_wire() {
        let o = Origin {
            site: "s".into(),
            host: "h".into(),
        };
        let mut s = SiteInfo {
            country: "DE".into(),
            zone: "DE".into(),
            pue: None,
            wue_l_per_kwh: None,
            idle_policy: None,
            interval_s: 60.0,
            end_ns: 1,
        };
        let p = s.to_point(&o);
        assert!(p.field_value("pue").is_none() && p.field_value("wue_l_per_kwh").is_none());
        s.pue = Some(1.0);
        s.wue_l_per_kwh = Some(0.0);
        let p = s.to_point(&o);
        assert_eq!(p.field_f64("pue"), Some(1.0));
        assert_eq!(p.field_f64("wue_l_per_kwh"), Some(0.0));
    }

    #[test]
    fn gpu_point_carries_contract_names() {
        let o = Origin {
            site: "fra1".into(),
            host: "h1".into(),
        };
        let g = GpuInterval {
            gpu_uuid: "GPU-1".into(),
            gpu_index: 0,
            gpu_name: "NVIDIA H100".into(),
            energy_j: 100.0,
            power_w: Some(100.0),
            util_pct: None,
            mem_used_bytes: Some(1),
            energy_counter_mj: Some(5),
            interval_s: 1.0,
            source: EnergySource::Counter,
            clock_step_s: None,
            end_ns: 7,
        };
        let line = g.to_point(&o).to_line().expect("encodes");
        assert_eq!(
            line,
            "gpu,gpu_index=0,gpu_name=NVIDIA\\ H100,gpu_uuid=GPU-1,host=h1,site=fra1 \
             energy_j=100,power_w=100,mem_used_bytes=1i,energy_counter_mj=5i,interval_s=1,source=\"counter\" 7"
        );
    }

    #[test]
    fn enums_round_trip_their_wire_names() {
        for s in [
            EnergySource::Counter,
            EnergySource::Integrated,
            EnergySource::Gap,
        ] {
            assert_eq!(EnergySource::parse(s.as_str()), Some(s));
        }
        for m in [
            SplitMethod::SmUtil,
            SplitMethod::PowerModel,
            SplitMethod::Memory,
            SplitMethod::Equal,
            SplitMethod::Mig,
            SplitMethod::MigGpm,
            SplitMethod::None,
        ] {
            assert_eq!(SplitMethod::parse(m.as_str()), Some(m));
        }
    }
}
