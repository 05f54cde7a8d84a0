//! The process table: what the agent reads about GPU processes from `/proc`.
//!
//! Owns [`ProcReader`]: command line, executable, environment, cgroup and container id
//! of a pid ([`ProcReader::facts`], parsed from a configurable root so tests use a fake
//! tree), the parent chain ([`ProcReader::lineage`], for servers whose GPU workers
//! re-title themselves), and CPU time per pid (`<pid>/stat`) and for the whole host
//! (`stat`), in clock ticks, read directly: this runs on the sampling path at 1–10 Hz.
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

/// Reads process facts and CPU times from a `/proc` tree.
pub struct ProcReader {
    root: PathBuf,
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

    /// A reader over another tree laid out like `/proc` (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        ProcReader { root: root.into() }
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

    /// Cumulative CPU time (user + system, clock ticks) of each live pid among `pids`,
    /// from `<root>/<pid>/stat`; dead or unreadable ones are absent from the map.
    pub fn cpu_ticks(&self, pids: &[u32]) -> HashMap<u32, u64> {
        pids.iter()
            .filter_map(|&pid| {
                let text =
                    std::fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?;
                parse_pid_stat_ticks(&text).map(|t| (pid, t))
            })
            .collect()
    }

    /// Host-wide busy CPU time (clock ticks, all CPUs: user, nice, system, irq, softirq,
    /// steal) from `<root>/stat`. It follows the host, not the agent's cgroup quota or
    /// CPU affinity, so the GPU processes' ticks are a part of it.
    pub fn host_busy_ticks(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.root.join("stat")).ok()?;
        parse_host_stat_busy(&text)
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_pid_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // After ')': state is field 3, so utime (14) is the 12th and stime (15) the 13th.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of the aggregate `cpu` line of `/proc/stat`: user + nice + system + irq +
/// softirq + steal (guest time is already inside user; idle and iowait are not busy).
pub fn parse_host_stat_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
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
    fn stat_files_parse_to_ticks() {
        // A command name with spaces and a ')' must not shift the fields.
        let pid = "4242 (vllm: worker) 0) R 1 4242 4242 0 -1 4194304 100 0 0 0 1500 250 3 4 20 0 8 0 123 0 0";
        assert_eq!(parse_pid_stat_ticks(pid), Some(1750));
        assert_eq!(parse_pid_stat_ticks("garbage"), None);
        let host = "cpu  100 5 50 9000 40 3 2 7 11 0\ncpu0 50 2 25 4500 20 1 1 3 5 0\n";
        assert_eq!(parse_host_stat_busy(host), Some(100 + 5 + 50 + 3 + 2 + 7));
        assert_eq!(parse_host_stat_busy("intr 1 2 3\n"), None);
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
