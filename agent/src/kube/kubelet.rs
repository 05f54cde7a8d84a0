//! The pod list → what attribution needs to know of each pod.
//!
//! Parses a `v1.PodList` as JSON: the kubelet's own `GET /pods` (the read-only port
//! 10255, or 10250 with a token allowed `nodes/proxy`) or the API server's
//! `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`; both return the same shape, so
//! one parser reads either. Only the fields used are read; every other field is ignored,
//! so newer Kubernetes versions parse too.
//!
//! Each pod becomes a [`PodMeta`]: identity, labels, annotations, the [`Workload`] that
//! owns it (see [`workload_of`]) and its containers (regular, init and ephemeral) with
//! the runtime's `<scheme>://` stripped from their ids, so they compare equal to the ids
//! in cgroup paths. A [`PodIndex`] finds a pod by UID (what [`super::cgroup`] reads) or
//! by container id.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::cgroup::PodCgroup;

/// What the agent knows of one pod from the pod list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.uid`, lowercased (as [`super::cgroup::pod_of_cgroup`] writes it).
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; empty when the list omits it.
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// The controller that owns the pod (see [`workload_of`]).
    pub workload: Workload,
    /// Every container with a status: regular, then init, then ephemeral.
    pub containers: Vec<ContainerMeta>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: Option<String>,
    /// `status.qosClass` (`Guaranteed`, `Burstable`, `BestEffort`).
    pub qos_class: Option<String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `status.podIP`: where the pod's servers listen, unless it uses the host's network.
    pub pod_ip: Option<String>,
    /// `spec.hostNetwork`: the pod's servers listen on the node's own addresses.
    pub host_network: bool,
}

impl PodMeta {
    /// The value of label `key`, if the pod has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The value of annotation `key`, if the pod has it.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The container whose (stripped) id is `id`.
    pub fn container(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers
            .iter()
            .find(|c| c.container_id.as_deref() == Some(id))
    }
}

/// The controller that owns a pod: what a platform team calls the workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, `Node`
    /// (a mirror pod), `Pod` (no controller), or any other controller's kind as given.
    pub kind: String,
    /// The controller's name (the pod's own name for kind `Pod`).
    pub name: String,
}

/// Which list of a pod's statuses a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `status.containerStatuses`.
    Regular,
    /// `status.initContainerStatuses` (including restartable "sidecar" init containers).
    Init,
    /// `status.ephemeralContainerStatuses` (`kubectl debug`).
    Ephemeral,
}

/// One container of a pod, as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The container's name in the pod spec (`kserve-container`, `vllm`).
    pub name: String,
    /// The runtime's id with `containerd://`, `cri-o://` or `docker://` stripped; `None`
    /// while the container is still being created.
    pub container_id: Option<String>,
    /// Which status list it came from.
    pub kind: ContainerKind,
}

/// Errors reading a pod list.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The body is not JSON at all (an HTML error page, `Unauthorized`, an empty reply).
    #[error("the pod list is not JSON ({reason}); the body starts '{excerpt}'; point the agent at the kubelet's '/pods' (https://<node>:10250/pods) or the API server's '/api/v1/pods?fieldSelector=spec.nodeName=<node>'")]
    NotJson {
        /// serde_json's explanation.
        reason: String,
        /// The first characters of the body.
        excerpt: String,
    },
    /// The server answered with a `Status` (401, 403, 404…) instead of the list.
    #[error("the server answered a Status instead of a PodList: '{message}'; if it says forbidden, grant the agent's service account 'get' on 'nodes/proxy' (kubelet) or 'list' on 'pods' (API server)")]
    Status {
        /// The Status's `message`.
        message: String,
    },
    /// JSON of some other kind (a single Pod, a NodeList…).
    #[error("the body is a '{kind}', not a PodList; request the list ('/pods' on the kubelet, '/api/v1/pods' on the API server), not a single object")]
    WrongKind {
        /// The body's `kind`.
        kind: String,
    },
    /// JSON with neither `kind` nor `items`.
    #[error("the body is JSON but not a PodList (no 'kind' and no 'items'); point the agent at the kubelet's '/pods' or the API server's '/api/v1/pods'")]
    NotPodList,
    /// An item of the list lacks what every pod has (`metadata.uid`, `metadata.name`).
    #[error("pod #{index} of the PodList is malformed ({reason}); the list did not come from a kubelet or an API server, or was cut short")]
    BadPod {
        /// 0-based position in `items`.
        index: usize,
        /// serde_json's explanation.
        reason: String,
    },
}

/// Parses a `v1.PodList` body (the kubelet's `/pods` or the API server's `/api/v1/pods`).
pub fn parse_pod_list(body: &[u8]) -> Result<Vec<PodMeta>, KubeletError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| KubeletError::NotJson {
            reason: e.to_string(),
            excerpt: String::from_utf8_lossy(body).chars().take(60).collect(),
        })?;
    let kind = value.get("kind").and_then(serde_json::Value::as_str);
    match kind {
        Some("PodList") => {}
        Some("Status") => {
            let message = value
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("(no message)");
            return Err(KubeletError::Status {
                message: message.to_string(),
            });
        }
        Some(other) => {
            return Err(KubeletError::WrongKind {
                kind: other.to_string(),
            })
        }
        None if value.get("items").is_none() => return Err(KubeletError::NotPodList),
        None => {}
    }
    // Go marshals an empty list as `"items": null` (or `[]`).
    let items = match value.get("items") {
        Some(serde_json::Value::Array(items)) => items.as_slice(),
        Some(serde_json::Value::Null) | None => &[],
        Some(_) => return Err(KubeletError::NotPodList),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            RawPod::deserialize(item)
                .map(RawPod::into_meta)
                .map_err(|e| KubeletError::BadPod {
                    index,
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// The owning controller of a pod, from its `ownerReferences` and labels:
///
/// - the owner reference with `controller: true` names it;
/// - a `ReplicaSet` named `<deployment>-<pod-template-hash>` (the hash from the pod's
///   `pod-template-hash` label, which the Deployment controller sets) is that
///   `Deployment`. When the label is absent the name is split at its last dash only if
///   what follows looks like such a hash (1–10 characters of the controller's
///   `bcdfghjklmnpqrstvwxz2456789` alphabet); otherwise it stays a `ReplicaSet`. A
///   ReplicaSet of an Argo `Rollout` (label `rollouts-pod-template-hash`) is that
///   `Rollout`;
/// - a `Job` is a `CronJob` only on evidence: a `batch.kubernetes.io/cronjob-name` label
///   or annotation whose value, a dash and digits (the scheduled minute) make the Job's
///   name. Pods usually carry no such evidence (the Job's owner is on the Job, which the
///   pod list does not include), so most CronJob pods stay `Job <cronjob>-<digits>`;
/// - `StatefulSet`, `DaemonSet`, `Node` (a static pod's mirror on the API server) and any
///   other kind are kept as given;
/// - no controller: kind `Pod`, the pod's own name (also a static pod as the kubelet
///   lists it, which has no owner).
pub fn workload_of(
    pod_name: &str,
    owners: &[OwnerRef],
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Workload {
    let Some(owner) = owners.iter().find(|o| o.controller) else {
        return Workload {
            kind: "Pod".into(),
            name: pod_name.to_string(),
        };
    };
    let given = Workload {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    };
    match owner.kind.as_str() {
        "ReplicaSet" => replica_set_owner(&owner.name, labels).unwrap_or(given),
        "Job" => {
            let cronjob = labels
                .get("batch.kubernetes.io/cronjob-name")
                .or_else(|| annotations.get("batch.kubernetes.io/cronjob-name"));
            match cronjob {
                Some(c) if is_scheduled_job_of(&owner.name, c) => Workload {
                    kind: "CronJob".into(),
                    name: c.clone(),
                },
                _ => given,
            }
        }
        _ => given,
    }
}

/// An owner reference as the pod's `metadata.ownerReferences` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OwnerRef {
    /// `kind` (`ReplicaSet`, `StatefulSet`, `Node`…).
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `controller`: whether this owner manages the pod (at most one does).
    #[serde(default, deserialize_with = "null_as_default")]
    pub controller: bool,
}

fn replica_set_owner(rs: &str, labels: &BTreeMap<String, String>) -> Option<Workload> {
    if let Some(hash) = labels.get("rollouts-pod-template-hash") {
        let name = rs.strip_suffix(hash.as_str())?.strip_suffix('-')?;
        return Some(Workload {
            kind: "Rollout".into(),
            name: name.to_string(),
        });
    }
    let name = match labels.get("pod-template-hash") {
        Some(hash) => rs.strip_suffix(hash.as_str())?.strip_suffix('-')?,
        None => {
            let (name, tail) = rs.rsplit_once('-')?;
            let hashlike = (1..=10).contains(&tail.len())
                && tail
                    .bytes()
                    .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b));
            if !hashlike {
                return None;
            }
            name
        }
    };
    (!name.is_empty()).then(|| Workload {
        kind: "Deployment".into(),
        name: name.to_string(),
    })
}

fn is_scheduled_job_of(job: &str, cronjob: &str) -> bool {
    job.strip_prefix(cronjob)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The container id without the runtime's scheme (`containerd://`, `cri-o://`,
/// `docker://`, or any other `<scheme>://`).
pub fn strip_runtime_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// The pods of one pod list, found by UID or container id.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    pods: Vec<PodMeta>,
    by_uid: HashMap<String, usize>,
    by_container: HashMap<String, (usize, usize)>,
}

impl PodIndex {
    /// Indexes `pods`. A static pod is also found under the UID its cgroup carries: the
    /// kubelet's config hash (`kubernetes.io/config.hash` in the kubelet's list,
    /// `kubernetes.io/config.mirror` on the API server's mirror pod, whose own UID
    /// differs). The first pod listed wins when two claim one UID or container id.
    pub fn new(pods: Vec<PodMeta>) -> PodIndex {
        let mut by_uid = HashMap::new();
        let mut by_container = HashMap::new();
        for (i, pod) in pods.iter().enumerate() {
            by_uid.entry(pod.uid.clone()).or_insert(i);
            for (j, c) in pod.containers.iter().enumerate() {
                if let Some(id) = &c.container_id {
                    by_container.entry(id.clone()).or_insert((i, j));
                }
            }
        }
        for (i, pod) in pods.iter().enumerate() {
            for key in ["kubernetes.io/config.mirror", "kubernetes.io/config.hash"] {
                if let Some(hash) = pod.annotation(key) {
                    by_uid.entry(hash.to_ascii_lowercase()).or_insert(i);
                }
            }
        }
        PodIndex {
            pods,
            by_uid,
            by_container,
        }
    }

    /// Parses a pod list body ([`parse_pod_list`]) and indexes it.
    pub fn from_pod_list(body: &[u8]) -> Result<PodIndex, KubeletError> {
        parse_pod_list(body).map(PodIndex::new)
    }

    /// The running pod named `name` in `namespace` (the PodResources API names pods,
    /// not UIDs); a pod that has not finished wins over one that has.
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<&PodMeta> {
        let mut found = self
            .pods
            .iter()
            .filter(|p| p.namespace == namespace && p.name == name);
        let first = found.next()?;
        let done = |p: &PodMeta| matches!(p.phase.as_deref(), Some("Succeeded" | "Failed"));
        if !done(first) {
            return Some(first);
        }
        Some(found.find(|p| !done(p)).unwrap_or(first))
    }

    /// The pod with UID `uid` (either case; a static pod also by its config hash).
    pub fn by_uid(&self, uid: &str) -> Option<&PodMeta> {
        let i = match self.by_uid.get(uid) {
            Some(i) => *i,
            None => *self.by_uid.get(&uid.to_ascii_lowercase())?,
        };
        self.pods.get(i)
    }

    /// The pod and container whose id is `id` (bare or with its `<scheme>://`).
    pub fn by_container_id(&self, id: &str) -> Option<(&PodMeta, &ContainerMeta)> {
        let (i, j) = *self.by_container.get(strip_runtime_scheme(id))?;
        let pod = self.pods.get(i)?;
        Some((pod, pod.containers.get(j)?))
    }

    /// The pod (and, when the path names one the pod lists, the container) of a parsed
    /// cgroup path: by UID first, then by container id alone.
    pub fn lookup(&self, cgroup: &PodCgroup) -> Option<(&PodMeta, Option<&ContainerMeta>)> {
        if let Some(pod) = self.by_uid(&cgroup.pod_uid) {
            let container = cgroup
                .container_id
                .as_deref()
                .and_then(|id| pod.container(id));
            return Some((pod, container));
        }
        let (pod, container) = self.by_container_id(cgroup.container_id.as_deref()?)?;
        Some((pod, Some(container)))
    }

    /// Every pod, in list order.
    pub fn pods(&self) -> &[PodMeta] {
        &self.pods
    }

    /// How many pods the list held.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the list was empty.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

// ---------------------------------------------------------------- wire shape

/// `null` where Go wrote a nil map, slice or pointer: the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct RawPod {
    metadata: RawMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    spec: RawSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    status: RawStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    uid: String,
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    namespace: String,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    owner_references: Vec<OwnerRef>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    host_network: bool,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    qos_class: Option<String>,
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    container_statuses: Vec<RawContainerStatus>,
    #[serde(default, deserialize_with = "null_as_default")]
    init_container_statuses: Vec<RawContainerStatus>,
    #[serde(default, deserialize_with = "null_as_default")]
    ephemeral_container_statuses: Vec<RawContainerStatus>,
}

#[derive(Deserialize)]
struct RawContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

impl RawPod {
    fn into_meta(self) -> PodMeta {
        let m = self.metadata;
        let workload = workload_of(&m.name, &m.owner_references, &m.labels, &m.annotations);
        let s = self.status;
        let containers = [
            (s.container_statuses, ContainerKind::Regular),
            (s.init_container_statuses, ContainerKind::Init),
            (s.ephemeral_container_statuses, ContainerKind::Ephemeral),
        ]
        .into_iter()
        .flat_map(|(list, kind)| {
            list.into_iter().map(move |c| ContainerMeta {
                name: c.name,
                container_id: c
                    .container_id
                    .map(|id| strip_runtime_scheme(&id).to_string())
                    .filter(|id| !id.is_empty()),
                kind,
            })
        })
        .collect();
        PodMeta {
            uid: m.uid.to_ascii_lowercase(),
            name: m.name,
            namespace: m.namespace,
            labels: m.labels,
            annotations: m.annotations,
            workload,
            containers,
            phase: s.phase,
            qos_class: s.qos_class,
            node_name: self.spec.node_name,
            pod_ip: s.pod_ip.filter(|ip| !ip.is_empty()),
            host_network: self.spec.host_network,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fixtures in `testdata/` are written to the kubelet's format (see its README),
    //! not recorded from a cluster.

    use super::*;
    use crate::kube::cgroup::pod_of_cgroup;

    const KUBELET: &str = include_str!("testdata/kubelet-pods.json");
    const AFTER_RESTART: &str = include_str!("testdata/kubelet-pods-after-restart.json");
    const APISERVER: &str = include_str!("testdata/apiserver-pods.json");

    const VLLM_UID: &str = "0f4c2a4e-8c1b-4c55-9c2f-1f2e3d4c5b6a";
    const VLLM_ID: &str = "ec8207a3dde607f7867f8f5390915018488b877761306ffd4ef099f9b3ee16a1";
    const KSERVE_ID: &str = "c54d3f6d2054ef1ec7e23898754d7afe360754494734f5eded5aae18f9614351";
    const STATIC_HASH: &str = "99dcb84d2a34f7e338778606703258c4";

    fn index(body: &str) -> PodIndex {
        match PodIndex::from_pod_list(body.as_bytes()) {
            Ok(i) => i,
            Err(e) => panic!("fixture does not parse: {e}"),
        }
    }

    fn workload(kind: &str, name: &str) -> Workload {
        Workload {
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn controller(kind: &str, name: &str) -> Vec<OwnerRef> {
        vec![OwnerRef {
            kind: kind.into(),
            name: name.into(),
            controller: true,
        }]
    }

    #[test]
    fn a_vllm_deployment_pod_parses_with_its_labels_workload_and_container() {
        let idx = index(KUBELET);
        assert_eq!(idx.len(), 6);
        let Some(pod) = idx.by_uid(VLLM_UID) else {
            panic!("vLLM pod not found by UID");
        };
        assert_eq!(pod.name, "vllm-llama-8b-7d9f8b6c5d-x2k4p");
        assert_eq!(pod.namespace, "inference");
        assert_eq!(pod.label("app.kubernetes.io/instance"), Some("llama-8b"));
        assert_eq!(pod.workload, workload("Deployment", "vllm-llama-8b"));
        assert_eq!(pod.qos_class.as_deref(), Some("Guaranteed"));
        assert_eq!(pod.phase.as_deref(), Some("Running"));
        assert_eq!(pod.node_name.as_deref(), Some("gpu-node-a"));
        assert_eq!(pod.pod_ip.as_deref(), Some("10.244.3.17"));
        assert!(!pod.host_network);
        assert_eq!(
            pod.containers,
            vec![ContainerMeta {
                name: "vllm".into(),
                container_id: Some(VLLM_ID.into()),
                kind: ContainerKind::Regular,
            }]
        );
    }

    #[test]
    fn a_kserve_predictor_lists_init_and_ephemeral_containers_with_crio_ids_stripped() {
        let idx = index(KUBELET);
        let Some((pod, c)) = idx.by_container_id(KSERVE_ID) else {
            panic!("KServe container not found by id");
        };
        assert_eq!(c.name, "kserve-container");
        assert_eq!(
            pod.label("serving.kserve.io/inferenceservice"),
            Some("llama3")
        );
        assert_eq!(pod.workload, workload("Deployment", "llama3-predictor"));
        let kinds: Vec<(&str, ContainerKind)> = pod
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("kserve-container", ContainerKind::Regular),
                ("storage-initializer", ContainerKind::Init),
                ("debugger-8xk2p", ContainerKind::Ephemeral),
            ]
        );
        assert!(pod
            .containers
            .iter()
            .all(|c| c.container_id.as_deref().is_some_and(|id| id.len() == 64)));
        // With its scheme, too.
        assert!(idx
            .by_container_id(&format!("cri-o://{KSERVE_ID}"))
            .is_some());
    }

    #[test]
    fn statefulset_job_and_static_pods_keep_their_owners() {
        let idx = index(KUBELET);
        let by_name = |name: &str| idx.pods().iter().find(|p| p.name == name);
        let got = |name: &str| by_name(name).map(|p| p.workload.clone());
        assert_eq!(
            got("sglang-qwen-0"),
            Some(workload("StatefulSet", "sglang-qwen"))
        );
        // Made by a CronJob, but nothing on the pod says so: it stays the Job.
        assert_eq!(
            got("nightly-eval-29411520-mz8kq"),
            Some(workload("Job", "nightly-eval-29411520"))
        );
        assert_eq!(
            by_name("nightly-eval-29411520-mz8kq").and_then(|p| p.phase.clone()),
            Some("Succeeded".into())
        );
        // The kubelet lists a static pod without an owner.
        assert_eq!(
            got("dcgm-exporter-gpu-node-a"),
            Some(workload("Pod", "dcgm-exporter-gpu-node-a"))
        );
    }

    #[test]
    fn a_container_still_being_created_has_no_id() {
        let idx = index(KUBELET);
        let Some(pod) = idx.by_uid("6d7e8f90-a1b2-4c3d-8e4f-5a6b7c8d9e0f") else {
            panic!("pending pod not found");
        };
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].container_id, None);
    }

    #[test]
    fn a_pod_recreated_under_the_same_name_is_a_new_uid() {
        let before = index(KUBELET);
        let after = index(AFTER_RESTART);
        let old = "3e9b1f7a-6c2d-4e8f-a1b3-c5d7e9f0a2b4";
        let new = "a2c4e6f8-1b3d-4f5a-9c7e-0d2f4a6b8c0e";
        assert_eq!(
            before.by_uid(old).map(|p| p.name.as_str()),
            Some("sglang-qwen-0")
        );
        assert!(before.by_uid(new).is_none());
        assert!(
            after.by_uid(old).is_none(),
            "the old UID must not find the new pod"
        );
        assert_eq!(
            after.by_uid(new).map(|p| p.name.as_str()),
            Some("sglang-qwen-0")
        );
        let old_container = "590f2e806862d04ab8fbfd7396f894063cf43aaec919e35a1a1a5f63219a915f";
        assert!(after.by_container_id(old_container).is_none());
    }

    #[test]
    fn the_api_servers_list_parses_with_the_same_parser() {
        let idx = index(APISERVER);
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.by_uid(VLLM_UID).map(|p| p.workload.clone()),
            Some(workload("Deployment", "vllm-llama-8b"))
        );
        // The mirror pod: its own UID, owned by the Node, and found by the UID its
        // cgroup carries (the kubelet's config hash).
        let Some(mirror) = idx.by_uid("e5f6a7b8-c9d0-4e1f-a2b3-c4d5e6f7a8b9") else {
            panic!("mirror pod not found");
        };
        assert_eq!(mirror.workload, workload("Node", "gpu-node-a"));
        assert_eq!(idx.by_uid(STATIC_HASH).map(|p| &p.uid), Some(&mirror.uid));
    }

    #[test]
    fn a_cgroup_path_finds_its_pod_and_container() {
        let idx = index(KUBELET);
        let uid_ = VLLM_UID.replace('-', "_");
        let path =
            format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{VLLM_ID}.scope");
        let Some(cg) = pod_of_cgroup(&path) else {
            panic!("path not parsed");
        };
        let Some((pod, container)) = idx.lookup(&cg) else {
            panic!("pod not found");
        };
        assert_eq!(pod.uid, VLLM_UID);
        assert_eq!(container.map(|c| c.name.as_str()), Some("vllm"));
        // A static pod's cgroup carries the config hash, which the kubelet lists as its UID.
        let static_path = format!("/kubepods/besteffort/pod{STATIC_HASH}/{}", "a".repeat(64));
        let Some(cg) = pod_of_cgroup(&static_path) else {
            panic!("static path not parsed");
        };
        assert_eq!(
            idx.lookup(&cg).map(|(p, c)| (p.name.as_str(), c.is_none())),
            Some(("dcgm-exporter-gpu-node-a", true))
        );
    }

    #[test]
    fn a_container_id_alone_finds_the_pod_when_the_uid_is_unknown() {
        let idx = index(KUBELET);
        let cg = PodCgroup {
            pod_uid: "00000000-0000-0000-0000-000000000000".into(),
            container_id: Some(KSERVE_ID.into()),
            runtime: Some("cri-o"),
            qos: crate::kube::cgroup::Qos::Unknown,
        };
        assert_eq!(
            idx.lookup(&cg)
                .map(|(p, c)| (p.name.as_str(), c.map(|c| c.name.as_str()))),
            Some(("llama3-predictor-6b9c7d5f8-q7wzn", Some("kserve-container")))
        );
        let unknown = PodCgroup {
            container_id: Some("b".repeat(64)),
            ..cg
        };
        assert!(idx.lookup(&unknown).is_none());
    }

    #[test]
    fn replica_sets_are_deployments_by_the_pod_template_hash_label() {
        let labels = map(&[("pod-template-hash", "5d8f9c7b4")]);
        assert_eq!(
            workload_of(
                "x",
                &controller("ReplicaSet", "my-app-v2-5d8f9c7b4"),
                &labels,
                &map(&[])
            ),
            workload("Deployment", "my-app-v2")
        );
        // The label does not end the name: a ReplicaSet of its own.
        assert_eq!(
            workload_of(
                "x",
                &controller("ReplicaSet", "my-app-v2"),
                &labels,
                &map(&[])
            ),
            workload("ReplicaSet", "my-app-v2")
        );
    }

    #[test]
    fn without_the_label_only_a_hash_like_suffix_is_taken_off() {
        let none = map(&[]);
        assert_eq!(
            workload_of(
                "x",
                &controller("ReplicaSet", "web-6b9c7d5f8"),
                &none,
                &none
            ),
            workload("Deployment", "web")
        );
        // "v1" and "server" are not hashes: no guess.
        for rs in ["web-v1", "inference-server", "plain"] {
            assert_eq!(
                workload_of("x", &controller("ReplicaSet", rs), &none, &none),
                workload("ReplicaSet", rs),
                "{rs}"
            );
        }
    }

    #[test]
    fn argo_rollout_replica_sets_are_rollouts() {
        let labels = map(&[("rollouts-pod-template-hash", "7f9d8c6b5")]);
        assert_eq!(
            workload_of(
                "x",
                &controller("ReplicaSet", "canary-7f9d8c6b5"),
                &labels,
                &map(&[])
            ),
            workload("Rollout", "canary")
        );
    }

    #[test]
    fn a_job_is_a_cronjob_only_on_evidence() {
        let owners = controller("Job", "nightly-eval-29411520");
        let none = map(&[]);
        assert_eq!(
            workload_of("x", &owners, &none, &none),
            workload("Job", "nightly-eval-29411520")
        );
        let label = map(&[("batch.kubernetes.io/cronjob-name", "nightly-eval")]);
        assert_eq!(
            workload_of("x", &owners, &label, &none),
            workload("CronJob", "nightly-eval")
        );
        assert_eq!(
            workload_of("x", &owners, &none, &label),
            workload("CronJob", "nightly-eval")
        );
        // Evidence that does not fit the Job's name is not believed.
        let other = map(&[("batch.kubernetes.io/cronjob-name", "weekly")]);
        assert_eq!(
            workload_of("x", &owners, &other, &none),
            workload("Job", "nightly-eval-29411520")
        );
        let manual = controller("Job", "nightly-eval-manual");
        assert_eq!(
            workload_of("x", &manual, &label, &none),
            workload("Job", "nightly-eval-manual")
        );
    }

    #[test]
    fn only_the_controller_owner_is_the_workload() {
        let owners = vec![OwnerRef {
            kind: "ConfigMap".into(),
            name: "cfg".into(),
            controller: false,
        }];
        let none = map(&[]);
        assert_eq!(
            workload_of("solo", &owners, &none, &none),
            workload("Pod", "solo")
        );
        assert_eq!(
            workload_of("solo", &[], &none, &none),
            workload("Pod", "solo")
        );
        assert_eq!(
            workload_of(
                "ds-x",
                &controller("DaemonSet", "nvidia-device-plugin"),
                &none,
                &none
            ),
            workload("DaemonSet", "nvidia-device-plugin")
        );
        assert_eq!(
            workload_of("r-x", &controller("Revision", "llama-00001"), &none, &none),
            workload("Revision", "llama-00001")
        );
    }

    #[test]
    fn runtime_schemes_are_stripped() {
        for scheme in ["containerd", "cri-o", "docker"] {
            assert_eq!(
                strip_runtime_scheme(&format!("{scheme}://{VLLM_ID}")),
                VLLM_ID
            );
        }
        assert_eq!(strip_runtime_scheme(VLLM_ID), VLLM_ID);
    }

    #[test]
    fn nulls_and_missing_fields_where_go_omits_them_parse() {
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
            {"metadata":{"name":"p","uid":"ABCDEF01-2345-6789-ABCD-EF0123456789","labels":null,
              "ownerReferences":[{"apiVersion":"apps/v1","kind":"DaemonSet","name":"d","uid":"u","controller":null}]},
             "status":{"containerStatuses":null,"newFieldFromTheFuture":{"x":1}},
             "somethingElse":true}
        ]}"#;
        let pods = match parse_pod_list(body.as_bytes()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid, "abcdef01-2345-6789-abcd-ef0123456789");
        assert_eq!(pods[0].namespace, "");
        assert!(pods[0].labels.is_empty() && pods[0].containers.is_empty());
        assert_eq!(pods[0].workload, workload("Pod", "p"));
        for empty in [
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":null}"#,
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#,
            r#"{"items":[]}"#,
        ] {
            assert!(
                matches!(parse_pod_list(empty.as_bytes()), Ok(p) if p.is_empty()),
                "{empty}"
            );
        }
    }

    #[test]
    fn bodies_that_are_not_pod_lists_are_clear_errors() {
        let err = |body: &str| match parse_pod_list(body.as_bytes()) {
            Ok(_) => panic!("'{body}' parsed"),
            Err(e) => e,
        };
        let e = err("Unauthorized\n");
        assert!(matches!(e, KubeletError::NotJson { .. }), "{e:?}");
        assert!(e.to_string().contains("starts 'Unauthorized"), "{e}");
        assert!(matches!(err(""), KubeletError::NotJson { .. }));
        assert!(matches!(
            err("<html><body>502</body></html>"),
            KubeletError::NotJson { .. }
        ));
        let e = err(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"gpu-node-a\" is forbidden: User \"system:serviceaccount:inferwatt:agent\" cannot get resource \"nodes/proxy\"","reason":"Forbidden","code":403}"#,
        );
        assert!(matches!(e, KubeletError::Status { .. }), "{e:?}");
        assert!(e.to_string().contains("nodes/proxy"), "{e}");
        let e = err(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u"}}"#);
        assert!(e.to_string().contains("'Pod', not a PodList"), "{e}");
        assert!(matches!(err("{}"), KubeletError::NotPodList));
        assert!(matches!(err("[]"), KubeletError::NotPodList));
        assert!(matches!(err(r#"{"items":{}}"#), KubeletError::NotPodList));
        let e = err(
            r#"{"kind":"PodList","items":[{"metadata":{"name":"p","uid":"u"}},{"metadata":{"name":"q"}}]}"#,
        );
        assert!(matches!(e, KubeletError::BadPod { index: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("uid"), "{e}");
        // Cut short mid-body.
        let cut = &KUBELET[..KUBELET.len() / 2];
        assert!(matches!(err(cut), KubeletError::NotJson { .. }));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_pod_list(&body);
        }
    }
}
