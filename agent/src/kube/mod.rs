//! Kubernetes-native attribution: which pod, workload and model a GPU process belongs to,
//! from what the node already shows.
//!
//! - [`cgroup`] reads the pod UID (and container id) out of a process's cgroup path;
//! - [`kubelet`] parses the node's pod list (kubelet or API server) and indexes it by UID
//!   and container id;
//! - [`rules`] names the model a pod serves from its labels, annotations and namespace.
//!
//! Everything here is pure: it takes text the caller read (a cgroup path, a pod list
//! body) and does no I/O, so the pipeline decides when to read and how to cache.

pub mod cgroup;
pub mod kubelet;
pub mod rules;
