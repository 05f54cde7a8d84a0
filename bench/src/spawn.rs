//! Running the workspace's release binaries for a benchmark: where they are, child
//! processes that are killed when dropped, free loopback ports, and polling with a
//! deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a process could not be started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("'{0}' is missing; run 'cargo build --release -p inferwatt-agent -p inferwatt-collector -p inferwatt-nvml-sim -p inferwatt-tests -p inferwatt-bench' first")]
    Missing(PathBuf),
    #[error("cannot start '{name}': {source}")]
    Start {
        name: String,
        source: std::io::Error,
    },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("cannot find a free port: {0}")]
    Port(std::io::Error),
}

/// The directory of the running executable (`target/release` for a release bench).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

/// A file beside the running executable (a binary or `libnvml_sim.so`), which must exist.
pub fn sibling(name: &str) -> Result<PathBuf, SpawnError> {
    let p = bin_dir().join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(SpawnError::Missing(p))
    }
}

/// The repository root (for `../shared` data and `bench/peers`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, SpawnError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(SpawnError::Port)?;
    Ok(l.local_addr().map_err(SpawnError::Port)?.port())
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, SpawnError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(SpawnError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, SIGKILLed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` with stdin closed.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc, SpawnError> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| SpawnError::Start {
                name: name.to_string(),
                source,
            })?;
        Ok(Proc {
            child,
            name: name.to_string(),
        })
    }

    /// Wraps an already started child.
    pub fn from_child(name: &str, child: Child) -> Proc {
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 10 s for a clean exit (SIGKILL on drop otherwise).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Current Unix time in ms.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
