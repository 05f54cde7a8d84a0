//! Kubernetes-native attribution: which pod, workload and model a GPU process belongs to,
//! from what the node already shows.
//!
//! - [`cgroup`] reads the pod UID (and container id) out of a process's cgroup path;
//! - [`kubelet`] parses the node's pod list (kubelet or API server) and indexes it by UID
//!   and container id;
//! - [`rules`] names the model a pod serves from its labels, annotations and namespace;
//! - [`fetch`] reads the pod list over HTTP(S) into the view the sampler reads;
//! - [`podresources`] asks the kubelet which container holds each GPU.
//!
//! `cgroup`, `kubelet` and `rules` are pure: they take text the caller read (a cgroup
//! path, a pod list body) and do no I/O.

pub mod cgroup;
pub mod fetch;
pub mod kubelet;
pub mod podresources;
pub mod rules;
