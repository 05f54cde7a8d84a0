//! Cgroup path → Kubernetes pod (and container).
//!
//! The kubelet puts every pod in its own cgroup and the runtime puts every container in a
//! child of it, so the path in `/proc/<pid>/cgroup` names the pod by UID without asking
//! anyone. Two drivers write two shapes (the QoS level is absent for Guaranteed pods):
//!
//! | driver   | pod cgroup                                                        | container child                                   |
//! |----------|-------------------------------------------------------------------|---------------------------------------------------|
//! | cgroupfs | `/kubepods/burstable/pod<uid>`                                    | `<id>` (containerd, Docker), `crio-<id>` (CRI-O)  |
//! | systemd  | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//!
//! systemd cannot have `-` inside a unit name component (it is the hierarchy separator),
//! so the kubelet writes the UID with `_`; [`pod_of_cgroup`] turns it back into the
//! dashed form the API shows. Static pods have a 32-hex UID (the kubelet's hash of the
//! manifest) rather than a UUID; both are accepted.
//!
//! The pod cgroup is found anywhere in the path, not only at its root, because the same
//! tree appears below other prefixes:
//! - a kubelet with its own `--cgroup-root` (kind uses `/kubelet`): cgroupfs
//!   `/kubelet/kubepods/…`, systemd `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod<uid>.slice/…`
//!   (systemd repeats the parent's name in every child's);
//! - a node that is itself a container, seen from its host: `/system.slice/docker-<node>.scope/kubelet.slice/…`,
//!   `/docker/<node>/kubepods/…`, `/machine.slice/libpod-<node>.scope/container/kubelet.slice/…`;
//! - a reader inside a cgroup namespace (cgroup v2's default for containers), which sees
//!   the paths of processes outside its own cgroup relative to it: `/../../kubepods-besteffort-pod<uid>.slice/…`
//!   or, with cgroupfs, `/../../besteffort/pod<uid>/<id>`.
//!
//! With nested Kubernetes (a kind cluster inside a pod) the pod nearest the process wins:
//! that is the pod whose metadata describes it. The container is read only from the
//! pod's direct child, so a container inside the container (Docker in Docker) is not
//! mistaken for it; deeper children (`crio-<id>.scope/container`, a systemd inside the
//! container) still name the pod's container.
//!
//! Not recognised (returns `None`): a kubelet run with `--cgroups-per-qos=false` or a
//! `--cgroup-root` whose pods are not under a `kubepods` cgroup, and every cgroup outside
//! Kubernetes (`/docker/<id>`, `/system.slice/…`, `/user.slice/…`).

/// A pod's QoS class as its cgroup shows it (the API's `status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    /// Requests equal limits for every resource: the pod cgroup sits directly under
    /// `kubepods`.
    Guaranteed,
    /// Some requests set: under `kubepods/burstable`.
    Burstable,
    /// No requests: under `kubepods/besteffort`.
    BestEffort,
    /// A cgroupfs path relative to a cgroup namespace whose root hides the QoS level
    /// (`/../../pod<uid>/<id>`); the pod list's `status.qosClass` says which it is.
    Unknown,
}

impl Qos {
    /// The name the Kubernetes API uses (`status.qosClass`), `Unknown` for [`Qos::Unknown`].
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
            Qos::Unknown => "Unknown",
        }
    }
}

/// The pod (and container) a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodCgroup {
    /// The pod's UID as the API shows it: lowercase, dashed
    /// (`0f4c2a4e-8c1b-4c55-9c2f-1f2e3d4c5b6a`), or 32 hex digits for a static pod.
    pub pod_uid: String,
    /// The 64-hex container id, `None` for the pod-level cgroup itself and for CRI-O's
    /// `crio-conmon-<id>.scope`, which holds the container's monitor (conmon), not the
    /// container: its CPU time is the runtime's, not the workload's.
    pub container_id: Option<String>,
    /// `containerd`, `cri-o` or `docker` when the container's cgroup name says so
    /// (`cri-containerd-`, `crio-`, `docker-`); `None` for a bare id (cgroupfs with
    /// containerd or Docker), which does not say.
    pub runtime: Option<&'static str>,
    /// The QoS class the path encodes.
    pub qos: Qos,
}

/// The pod (and container) of a cgroup path from `/proc/<pid>/cgroup`: the cgroup v2
/// `0::` entry's path or a v1 controller's path. `None` when the path is not inside a
/// Kubernetes pod; see the module documentation for the shapes recognised.
pub fn pod_of_cgroup(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Innermost pod first: with nested Kubernetes, it is the process's own.
    let (at, pod_uid, qos) =
        segments.iter().enumerate().rev().find_map(|(i, seg)| {
            pod_segment(&segments[..i], seg).map(|(uid, qos)| (i, uid, qos))
        })?;
    let (container_id, runtime) = match segments.get(at + 1) {
        Some(child) => container_segment(child),
        None => (None, None),
    };
    Some(PodCgroup {
        pod_uid,
        container_id,
        runtime,
        qos,
    })
}

/// The pod of a whole `/proc/<pid>/cgroup` file: the cgroup v2 `0::` entry when it names a
/// pod, else the first v1 controller line that does (a hybrid host's `0::` entry may be
/// the systemd view, which for some setups does not).
pub fn pod_of_cgroup_file(text: &str) -> Option<PodCgroup> {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            let _controllers = fields.next()?;
            Some((id, fields.next()?))
        })
        .collect();
    entries
        .iter()
        .filter(|(id, _)| *id == "0")
        .chain(entries.iter().filter(|(id, _)| *id != "0"))
        .find_map(|(_, path)| pod_of_cgroup(path))
}

/// Whether `seg` is a pod cgroup given the segments above it; its UID and QoS if so.
fn pod_segment(above: &[&str], seg: &str) -> Option<(String, Qos)> {
    if let Some(stem) = seg.strip_suffix(".slice") {
        return systemd_pod(stem);
    }
    let uid = canonical_uid(seg.strip_prefix("pod")?, '-')?;
    let parent = above.last().copied();
    let grandparent = above.len().checked_sub(2).map(|i| above[i]);
    let qos = match (parent, grandparent) {
        (Some("kubepods"), _) => Qos::Guaranteed,
        (Some("burstable"), Some("kubepods" | "..")) => Qos::Burstable,
        (Some("besteffort"), Some("kubepods" | "..")) => Qos::BestEffort,
        (Some(".."), _) => Qos::Unknown,
        _ => return None,
    };
    if qos != Qos::Guaranteed && !above.contains(&"kubepods") {
        // Only a path relative to a cgroup namespace may hide `kubepods`: every segment
        // above the pod must then be `..` or the QoS level.
        let relative = above
            .iter()
            .all(|s| matches!(*s, ".." | "burstable" | "besteffort"))
            && above.first() == Some(&"..");
        if !relative {
            return None;
        }
    }
    Some((uid, qos))
}

/// A systemd pod slice's stem (`kubepods-burstable-pod<uid_>`, also with a cgroup-root
/// prefix such as `kubelet-kubepods-pod<uid_>`): its UID and QoS.
fn systemd_pod(stem: &str) -> Option<(String, Qos)> {
    let parts: Vec<&str> = stem.split('-').collect();
    let (last, before) = parts.split_last()?;
    let uid = canonical_uid(last.strip_prefix("pod")?, '_')?;
    let qos = match before {
        [.., "kubepods"] => Qos::Guaranteed,
        [.., "kubepods", "burstable"] => Qos::Burstable,
        [.., "kubepods", "besteffort"] => Qos::BestEffort,
        _ => return None,
    };
    Some((uid, qos))
}

/// A pod UID in its dashed lowercase form, from a UUID written with `sep` between its
/// groups, or a static pod's 32 hex digits.
fn canonical_uid(raw: &str, sep: char) -> Option<String> {
    let is_hex = |c: char| c.is_ascii_hexdigit();
    let ok = match raw.len() {
        32 => raw.chars().all(is_hex),
        36 => raw.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == sep
            } else {
                is_hex(c)
            }
        }),
        _ => false,
    };
    ok.then(|| raw.replace(sep, "-").to_ascii_lowercase())
}

/// The container id and runtime a pod cgroup's child names.
fn container_segment(seg: &str) -> (Option<String>, Option<&'static str>) {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    if let Some(id) = name.strip_prefix("crio-conmon-") {
        // The monitor, not the container: say the runtime, name no container.
        return (None, is_container_id(id).then_some("cri-o"));
    }
    let (id, runtime) = [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ]
    .iter()
    .find_map(|(prefix, runtime)| name.strip_prefix(prefix).map(|id| (id, Some(*runtime))))
    .unwrap_or((name, None));
    if is_container_id(id) {
        (Some(id.to_string()), runtime)
    } else {
        (None, None)
    }
}

/// 64 lowercase hex digits, as every runtime writes container ids in cgroup names.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UID: &str = "0f4c2a4e-8c1b-4c55-9c2f-1f2e3d4c5b6a";
    const UID_: &str = "0f4c2a4e_8c1b_4c55_9c2f_1f2e3d4c5b6a";
    const ID: &str = "3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";
    const NODE: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";

    fn pod(qos: Qos, container: Option<&str>, runtime: Option<&'static str>) -> PodCgroup {
        PodCgroup {
            pod_uid: UID.to_string(),
            container_id: container.map(str::to_string),
            runtime,
            qos,
        }
    }

    #[test]
    fn cgroupfs_paths_name_the_pod_qos_and_container() {
        let cases = [
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Qos::Burstable),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                Qos::BestEffort,
            ),
            (format!("/kubepods/pod{UID}/{ID}"), Qos::Guaranteed),
        ];
        for (path, qos) in cases {
            assert_eq!(
                pod_of_cgroup(&path),
                Some(pod(qos, Some(ID), None)),
                "{path}"
            );
        }
    }

    #[test]
    fn crio_with_cgroupfs_prefixes_the_container_id() {
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            Some(pod(Qos::Burstable, Some(ID), Some("cri-o")))
        );
    }

    #[test]
    fn systemd_paths_of_each_runtime_name_the_pod_qos_and_container() {
        let pod_slice =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        for (scope, runtime) in [
            (format!("cri-containerd-{ID}.scope"), "containerd"),
            (format!("crio-{ID}.scope"), "cri-o"),
            (format!("docker-{ID}.scope"), "docker"),
        ] {
            let path = format!("{pod_slice}/{scope}");
            assert_eq!(
                pod_of_cgroup(&path),
                Some(pod(Qos::Burstable, Some(ID), Some(runtime))),
                "{path}"
            );
        }
        assert_eq!(
            pod_of_cgroup(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            Some(pod(Qos::BestEffort, Some(ID), Some("containerd")))
        );
        assert_eq!(
            pod_of_cgroup(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"
            )),
            Some(pod(Qos::Guaranteed, Some(ID), Some("cri-o")))
        );
    }

    #[test]
    fn a_pod_level_cgroup_names_the_pod_without_a_container() {
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/burstable/pod{UID}")),
            Some(pod(Qos::Burstable, None, None))
        );
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")),
            Some(pod(Qos::Guaranteed, None, None))
        );
    }

    #[test]
    fn crio_conmon_is_the_monitor_not_the_container() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(
            pod_of_cgroup(&path),
            Some(pod(Qos::Burstable, None, Some("cri-o")))
        );
        // conmon_cgroup = "system.slice" puts the monitor outside the pod altogether.
        assert_eq!(
            pod_of_cgroup(&format!("/system.slice/crio-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn a_kubelet_cgroup_root_prefixes_every_systemd_slice_name() {
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            pod_of_cgroup(&path),
            Some(pod(Qos::Burstable, Some(ID), Some("containerd")))
        );
        let guaranteed = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            pod_of_cgroup(&guaranteed).map(|p| p.qos),
            Some(Qos::Guaranteed)
        );
        assert_eq!(
            pod_of_cgroup(&format!("/kubelet/kubepods/besteffort/pod{UID}/{ID}")),
            Some(pod(Qos::BestEffort, Some(ID), None))
        );
    }

    #[test]
    fn a_node_inside_a_container_is_seen_below_its_hosts_cgroup() {
        let expect = Some(pod(Qos::Burstable, Some(ID), Some("containerd")));
        let kind = format!("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
        for path in [
            format!("/system.slice/docker-{NODE}.scope/{kind}"),
            format!("/machine.slice/libpod-{NODE}.scope/container/{kind}"),
        ] {
            assert_eq!(pod_of_cgroup(&path), expect, "{path}");
        }
        // k3s in Docker with the cgroupfs driver: the node's own id must not be taken
        // for the container's.
        assert_eq!(
            pod_of_cgroup(&format!("/docker/{NODE}/kubepods/burstable/pod{UID}/{ID}")),
            Some(pod(Qos::Burstable, Some(ID), None))
        );
    }

    #[test]
    fn paths_relative_to_a_cgroup_namespace_still_name_the_pod() {
        assert_eq!(
            pod_of_cgroup(&format!(
                "/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            Some(pod(Qos::BestEffort, Some(ID), Some("containerd")))
        );
        assert_eq!(
            pod_of_cgroup(&format!("/../../../besteffort/pod{UID}/{ID}")),
            Some(pod(Qos::BestEffort, Some(ID), None))
        );
        // The QoS level is above the namespace root: unknown, not guessed.
        assert_eq!(
            pod_of_cgroup(&format!("/../../pod{UID}/{ID}")),
            Some(pod(Qos::Unknown, Some(ID), None))
        );
    }

    #[test]
    fn the_innermost_pod_wins_when_kubernetes_runs_inside_a_pod() {
        let outer = "11111111-2222-3333-4444-555555555555";
        let path = format!("/kubepods/pod{outer}/{NODE}/kubelet/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(
            pod_of_cgroup(&path),
            Some(pod(Qos::BestEffort, Some(ID), None))
        );
    }

    #[test]
    fn deeper_cgroups_inside_the_container_still_name_it() {
        assert_eq!(
            pod_of_cgroup(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope/container"
            )),
            Some(pod(Qos::Guaranteed, Some(ID), Some("cri-o")))
        );
        // Docker in Docker inside the pod: the pod's container, not the inner one.
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/pod{UID}/{ID}/docker/{NODE}")),
            Some(pod(Qos::Guaranteed, Some(ID), None))
        );
    }

    #[test]
    fn static_pods_have_a_32_hex_uid() {
        let hash = "99dcb84d2a34f7e338778606703258c4";
        for path in [
            format!("/kubepods/burstable/pod{hash}/{ID}"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"),
        ] {
            assert_eq!(
                pod_of_cgroup(&path).map(|p| p.pod_uid),
                Some(hash.to_string()),
                "{path}"
            );
        }
    }

    #[test]
    fn uppercase_uids_are_lowercased() {
        let upper = UID.to_ascii_uppercase();
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/pod{upper}/{ID}")).map(|p| p.pod_uid),
            Some(UID.to_string())
        );
    }

    #[test]
    fn cgroups_outside_kubernetes_are_not_pods() {
        for path in [
            "".to_string(),
            "/".to_string(),
            "/system.slice/containerd.service".to_string(),
            "/system.slice/sshd.service".to_string(),
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            "/user.slice/user-1000.slice/session-2.scope".to_string(),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/cri-containerd-{ID}.scope"),
            // QoS slices hold pods but are not one.
            "/kubepods.slice/kubepods-burstable.slice".to_string(),
            "/kubepods/burstable".to_string(),
            // A "pod…" name that is not a UID, or not under kubepods.
            format!("/kubepods/burstable/podNOTAUUID/{ID}"),
            format!("/kubepods.slice/kubepods-burstable-podNOTAUUID.slice/cri-containerd-{ID}.scope"),
            format!("/system.slice/pod{UID}/{ID}"),
            format!("/other/burstable/pod{UID}/{ID}"),
            format!("/system.slice/system-pod{UID_}.slice"),
            // A dashed UID cannot be in a systemd slice name.
            format!("/kubepods.slice/kubepods-pod{UID}.slice"),
        ] {
            assert_eq!(pod_of_cgroup(&path), None, "{path}");
        }
    }

    #[test]
    fn a_child_that_is_not_a_container_id_leaves_the_container_unnamed() {
        for child in ["init.scope", "cri-containerd-abc.scope", "crio-XYZ"] {
            assert_eq!(
                pod_of_cgroup(&format!("/kubepods/pod{UID}/{child}")),
                Some(pod(Qos::Guaranteed, None, None)),
                "{child}"
            );
        }
    }

    #[test]
    fn a_cgroup_file_prefers_the_v2_entry_then_any_v1_controller() {
        let v2 = format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(
            pod_of_cgroup_file(&v2),
            Some(pod(Qos::Guaranteed, Some(ID), Some("containerd")))
        );
        let hybrid = format!(
            "12:cpuset:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
        );
        assert_eq!(
            pod_of_cgroup_file(&hybrid),
            Some(pod(Qos::BestEffort, Some(ID), None))
        );
        assert_eq!(pod_of_cgroup_file("0::/system.slice/sshd.service\n"), None);
        assert_eq!(pod_of_cgroup_file(""), None);
    }

    #[test]
    fn qos_names_match_the_api() {
        assert_eq!(Qos::Guaranteed.as_str(), "Guaranteed");
        assert_eq!(Qos::Burstable.as_str(), "Burstable");
        assert_eq!(Qos::BestEffort.as_str(), "BestEffort");
    }

    /// Every way a test path can be written for one pod and container.
    #[derive(Debug, Clone, Copy)]
    enum Shape {
        Cgroupfs,
        CgroupfsCrio,
        SystemdContainerd,
        SystemdCrio,
        SystemdDocker,
    }

    fn build(
        shape: Shape,
        uid: &str,
        id: &str,
        qos: Qos,
        prefix: usize,
        pod_only: bool,
    ) -> (String, Option<&'static str>) {
        let systemd_root = ["", "kubelet"][prefix % 2];
        let host = ["", "/system.slice/docker-NODE.scope", "/../.."][prefix % 3];
        let host = host.replace("NODE", NODE);
        match shape {
            Shape::Cgroupfs | Shape::CgroupfsCrio => {
                let root = if systemd_root.is_empty() {
                    "/kubepods".to_string()
                } else {
                    "/kubelet/kubepods".to_string()
                };
                let level = match qos {
                    Qos::Burstable => "/burstable",
                    Qos::BestEffort => "/besteffort",
                    _ => "",
                };
                let (child, runtime) = match shape {
                    Shape::CgroupfsCrio => (format!("/crio-{id}"), Some("cri-o")),
                    _ => (format!("/{id}"), None),
                };
                let child = if pod_only { String::new() } else { child };
                (
                    format!("{host}{root}{level}/pod{uid}{child}"),
                    runtime.filter(|_| !pod_only),
                )
            }
            _ => {
                let uid_ = uid.replace('-', "_");
                let mut base = String::new();
                let mut name = String::new();
                if !systemd_root.is_empty() {
                    name = systemd_root.to_string();
                    base.push_str(&format!("/{name}.slice"));
                }
                for part in ["kubepods"]
                    .into_iter()
                    .chain(match qos {
                        Qos::Burstable => Some("burstable"),
                        Qos::BestEffort => Some("besteffort"),
                        _ => None,
                    })
                    .chain(std::iter::once("POD"))
                {
                    let part = if part == "POD" {
                        format!("pod{uid_}")
                    } else {
                        part.to_string()
                    };
                    name = if name.is_empty() {
                        part
                    } else {
                        format!("{name}-{part}")
                    };
                    base.push_str(&format!("/{name}.slice"));
                }
                let (scope, runtime) = match shape {
                    Shape::SystemdContainerd => ("cri-containerd", "containerd"),
                    Shape::SystemdCrio => ("crio", "cri-o"),
                    _ => ("docker", "docker"),
                };
                if pod_only {
                    (format!("{host}{base}"), None)
                } else {
                    (format!("{host}{base}/{scope}-{id}.scope"), Some(runtime))
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_uids_and_ids_round_trip_in_every_format(
            uid_bytes in proptest::array::uniform16(any::<u8>()),
            id_bytes in proptest::array::uniform32(any::<u8>()),
            shape in prop_oneof![
                Just(Shape::Cgroupfs), Just(Shape::CgroupfsCrio), Just(Shape::SystemdContainerd),
                Just(Shape::SystemdCrio), Just(Shape::SystemdDocker),
            ],
            qos in prop_oneof![Just(Qos::Guaranteed), Just(Qos::Burstable), Just(Qos::BestEffort)],
            prefix in 0usize..6,
            pod_only in any::<bool>(),
        ) {
            let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let u = hex(&uid_bytes);
            let uid = format!("{}-{}-{}-{}-{}", &u[..8], &u[8..12], &u[12..16], &u[16..20], &u[20..]);
            let id = hex(&id_bytes);
            let (path, runtime) = build(shape, &uid, &id, qos, prefix, pod_only);
            let got = pod_of_cgroup(&path);
            prop_assert_eq!(got, Some(PodCgroup {
                pod_uid: uid,
                container_id: (!pod_only).then_some(id),
                runtime,
                qos,
            }), "{}", path);
        }

        #[test]
        fn any_text_is_parsed_without_panicking(path in ".{0,200}") {
            let _ = pod_of_cgroup(&path);
            let _ = pod_of_cgroup_file(&path);
        }

        #[test]
        fn paths_made_of_kubernetes_words_never_panic(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("kubepods".to_string()), Just("burstable".to_string()), Just("..".to_string()),
                    Just(format!("pod{UID}")), Just(format!("kubepods-pod{UID_}.slice")), Just(ID.to_string()),
                    Just(format!("crio-conmon-{ID}.scope")), Just("".to_string()),
                ],
                0..8,
            )
        ) {
            let path = format!("/{}", parts.join("/"));
            if let Some(p) = pod_of_cgroup(&path) {
                prop_assert_eq!(p.pod_uid, UID);
            }
        }
    }
}
