//! The process table: what the agent reads about GPU processes from `/proc`.
//!
//! Owns [`ProcReader`]: command line, executable, environment, cgroup and container id
//! of a pid ([`ProcReader::facts`], parsed from a configurable root so tests use a fake
//! tree), the parent chain ([`ProcReader::lineage`], for servers whose GPU workers
//! re-title themselves), and CPU time per pid and for the host (via `sysinfo`, refreshing
//! only the pids asked for: this runs on the sampling path at 1–10 Hz).
//!
//! Unprivileged reads: another user's `environ` (and `exe` link) is unreadable without
//! `CAP_SYS_PTRACE`; that yields an empty environment and the `comm` name, not an error.
//! Container ids are the 64-hex ids found in cgroup paths written by Docker
//! (`/docker/<id>`, `docker-<id>.scope`), containerd/CRI (`cri-containerd-<id>.scope`,
//! `/kubepods/…/<id>`), CRI-O (`crio-<id>.scope`) and Podman (`libpod-<id>.scope`);
//! `libpod-conmon-`/`crio-conmon-` scopes are monitors, not containers, and are skipped.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::identify::ProcessFacts;

/// Errors reading the process table.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (or never existed).
    #[error("process {pid} is gone")]
    Gone {
        /// The pid asked for.
        pid: u32,
    },
    /// A file of the process could not be read.
    #[error("cannot read '{}': {source}; the agent needs read access to /proc (run it in the host's pid namespace, and without hidepid= on the /proc mount)", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file had an unexpected shape.
    #[error("cannot parse '{}': {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Reads process facts from a `/proc` tree and CPU times via `sysinfo`.
pub struct ProcReader {
    root: PathBuf,
    sys: System,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProcReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcReader")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ProcReader {
    /// A reader over the real `/proc`.
    pub fn new() -> Self {
        Self::with_root("/proc")
    }

    /// A reader over another tree laid out like `/proc` (tests). CPU times always come
    /// from the running kernel.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let mut sys = System::new();
        // Prime host CPU usage so the first `host_cpu_pct` covers the time since now.
        sys.refresh_cpu_usage();
        ProcReader {
            root: root.into(),
            sys,
        }
    }

    /// The facts of one process. [`ProcError::Gone`] when it vanished.
    pub fn facts(&self, pid: u32) -> Result<ProcessFacts, ProcError> {
        let dir = self.root.join(pid.to_string());
        let cmdline_path = dir.join("cmdline");
        let cmdline_raw = read_bytes(&cmdline_path, pid)?.ok_or_else(|| ProcError::Io {
            source: std::io::Error::from(ErrorKind::PermissionDenied),
            path: cmdline_path,
        })?;
        let cmdline = split_nul(&cmdline_raw);
        let comm = read_optional(&dir, "comm", pid)?
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .unwrap_or_default();
        let exe = match std::fs::read_link(dir.join("exe")) {
            Ok(target) => target
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(" (deleted)")
                        .to_string()
                })
                .unwrap_or_else(|| comm.clone()),
            Err(e) if e.kind() == ErrorKind::NotFound && !dir.exists() => {
                return Err(ProcError::Gone { pid })
            }
            Err(_) => comm.clone(),
        };
        let env = read_optional(&dir, "environ", pid)?
            .map(|b| {
                split_nul(&b)
                    .into_iter()
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cgroup_text = read_optional(&dir, "cgroup", pid)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let (cgroup, container_id) = parse_cgroup(&cgroup_text);
        Ok(ProcessFacts {
            pid,
            exe,
            cmdline,
            env,
            cgroup,
            container_id,
        })
    }

    /// The parent pid (`/proc/<pid>/stat`, field 4); 0 for the root of the tree.
    pub fn parent_pid(&self, pid: u32) -> Result<u32, ProcError> {
        let path = self.root.join(pid.to_string()).join("stat");
        let raw = read_bytes(&path, pid)?.ok_or(ProcError::Gone { pid })?;
        let text = String::from_utf8_lossy(&raw);
        // comm may contain spaces and parentheses: fields restart after the last ')'.
        let after = text
            .rfind(')')
            .map(|i| &text[i + 1..])
            .ok_or_else(|| ProcError::Parse {
                path: path.clone(),
                reason: "no ')' closing the command name".into(),
            })?;
        after
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ProcError::Parse {
                path,
                reason: "no parent pid in field 4".into(),
            })
    }

    /// The process followed by up to `max_ancestors` ancestors (parent first), stopping at
    /// pid 1 or at an ancestor that cannot be read. Feed it to
    /// [`crate::identify::Identifier::identify_lineage`].
    pub fn lineage(&self, pid: u32, max_ancestors: usize) -> Result<Vec<ProcessFacts>, ProcError> {
        let mut chain = vec![self.facts(pid)?];
        let mut current = pid;
        for _ in 0..max_ancestors {
            let Ok(parent) = self.parent_pid(current) else {
                break;
            };
            if parent <= 1 || parent == current {
                break;
            }
            match self.facts(parent) {
                Ok(f) => chain.push(f),
                Err(_) => break,
            }
            current = parent;
        }
        Ok(chain)
    }

    /// Cumulative CPU time (user + system, ms) of each live pid among `pids`. Refreshes
    /// only those pids; dead ones are absent from the map.
    pub fn cpu_time_ms(&mut self, pids: &[u32]) -> HashMap<u32, u64> {
        let ids: Vec<Pid> = pids.iter().map(|p| Pid::from_u32(*p)).collect();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&ids),
            true,
            ProcessRefreshKind::nothing().with_cpu(),
        );
        ids.iter()
            .filter_map(|id| {
                self.sys
                    .process(*id)
                    .map(|p| (id.as_u32(), p.accumulated_cpu_time()))
            })
            .collect()
    }

    /// Host-wide CPU utilisation (0–100 %, all cores) since the previous call (or since
    /// the reader was built).
    pub fn host_cpu_pct(&mut self) -> f64 {
        self.sys.refresh_cpu_usage();
        f64::from(self.sys.global_cpu_usage()).clamp(0.0, 100.0)
    }
}

/// Reads a file of a process: `Ok(None)` when it is unreadable for lack of permission,
/// `Gone` when the process vanished.
fn read_bytes(path: &Path, pid: u32) -> Result<Option<Vec<u8>>, ProcError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(None),
        // ESRCH from a zombie's files reads as "No such process".
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(3) => {
            Err(ProcError::Gone { pid })
        }
        Err(source) => Err(ProcError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Like [`read_bytes`], but a missing file of a live process is `Ok(None)` (trees
/// without it: containers' masked /proc, test fixtures).
fn read_optional(dir: &Path, file: &str, pid: u32) -> Result<Option<Vec<u8>>, ProcError> {
    match read_bytes(&dir.join(file), pid) {
        Err(ProcError::Gone { .. }) if dir.exists() => Ok(None),
        other => other,
    }
}

/// Splits NUL-separated strings, dropping the trailing empties (terminator, padding left
/// by setproctitle).
fn split_nul(b: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = b
        .split(|c| *c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts
}

/// The cgroup path (the unified `0::` entry, else the first entry) and the container id
/// found in any entry.
pub fn parse_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut unified = None;
    let mut first = None;
    let mut container = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && unified.is_none() {
            unified = Some(path.to_string());
        }
        if first.is_none() && !path.is_empty() {
            first = Some(path.to_string());
        }
        if container.is_none() {
            container = container_id_from_path(path);
        }
    }
    (unified.or(first), container)
}

/// The 64-hex container id in a cgroup path, searching from the innermost segment.
pub fn container_id_from_path(path: &str) -> Option<String> {
    for seg in path.rsplit('/') {
        if seg.starts_with("libpod-conmon-") || seg.starts_with("crio-conmon-") {
            continue;
        }
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = [
            "docker-",
            "cri-containerd-",
            "crio-",
            "libpod-",
            "containerd-",
        ]
        .iter()
        .find_map(|p| seg.strip_prefix(p))
        .unwrap_or(seg);
        if id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Some(id.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

    #[test]
    fn container_ids_from_runtimes() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/burstable/pod0c1d2e3f-aaaa-bbbb-cccc-123456789abc/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id_from_path(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id_from_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            container_id_from_path("/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(container_id_from_path("/"), None);
    }

    #[test]
    fn cgroup_v1_and_v2() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            parse_cgroup(&v2),
            (
                Some(format!("/system.slice/docker-{ID}.scope")),
                Some(ID.to_string())
            )
        );
        let v1 = format!("12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(
            parse_cgroup(&v1),
            (Some(format!("/docker/{ID}")), Some(ID.to_string()))
        );
        assert_eq!(parse_cgroup(""), (None, None));
    }

    #[test]
    fn nul_split_drops_padding() {
        assert_eq!(
            split_nul(b"VLLM::EngineCore\0\0\0\0"),
            vec!["VLLM::EngineCore"]
        );
        assert_eq!(split_nul(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_nul(b"").is_empty());
    }
}
