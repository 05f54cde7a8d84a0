//! Test harness: locate the workspace's binaries, spawn processes that clean up after
//! themselves, find free ports, and poll for conditions with a deadline (never bare
//! sleeps).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cargo target profile directory (`target/debug`) the tests run from.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// `../shared` beside the repository (the project's reference data).
pub fn shared_dir() -> PathBuf {
    repo_root().join("../shared")
}

static BUILT: OnceLock<()> = OnceLock::new();

/// Builds the workspace's binaries and the simulated driver once per test process
/// (a no-op when `cargo test --workspace` already built them).
pub fn ensure_built() {
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "inferwatt-agent",
                "-p",
                "inferwatt-collector",
                "-p",
                "inferwatt-nvml-sim",
                "-p",
                "inferwatt-tests",
            ])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the workspace binaries failed"
        );
    });
}

/// Path of a workspace binary (built on demand).
pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    let p = target_dir().join(name);
    assert!(p.exists(), "{} missing after build", p.display());
    p
}

/// Path of the simulated NVML library (built on demand).
pub fn sim_library() -> PathBuf {
    ensure_built();
    crate::nvml_sim_library()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of the live [`Proc`]s of this process, for [`stop_children_on_signal`].
static LIVE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// On SIGTERM or SIGINT: sends SIGTERM to every live [`Proc`] (a signal skips `Drop`, so
/// without this a stopped demo would leave its collector and servers running), waits up
/// to 5 s for them, then exits with 128 + the signal's number.
pub fn stop_children_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let code = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return None;
            };
            tokio::select! {
                _ = term.recv() => Some(143),
                _ = int.recv() => Some(130),
            }
        });
        let Some(code) = code else { return };
        let pids: Vec<u32> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && pids
                .iter()
                .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::process::exit(code);
    });
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        if let Ok(mut live) = LIVE.lock() {
            live.push(child.id());
        }
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `"TERM"`, `"KILL"`) and waits up to 10 s for exit.
    pub fn signal(&mut self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit after SIG{sig}", self.name);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| *p != pid);
        }
    }
}

/// `inferwatt-collector report --format json --db DB ARGS…`, parsed; a failed report
/// fails the test with its stderr.
pub fn report_json(db: &Path, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(bin("inferwatt-collector"))
        .args(["report", "--format", "json", "--db"])
        .arg(db)
        .args(args)
        .output()
        .expect("run the report");
    assert!(
        out.status.success(),
        "report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// A plain HTTP GET on loopback, returning (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Current Unix time in ms.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Whether this process runs as root (tests then run the agent as `nobody`).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The points in a line-protocol file a running agent appends to (complete lines only:
/// the agent may be mid-write).
pub fn read_points(path: &Path) -> Vec<inferwatt_core::lineproto::Point> {
    let body = std::fs::read(path).unwrap_or_default();
    let end = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    inferwatt_core::lineproto::decode(
        &body[..end],
        inferwatt_core::lineproto::Precision::Nanoseconds,
        0,
    )
    .expect("the agent writes valid line protocol")
}

/// A collector on its embedded store, as the tests and the demo run it: `db` in `dir`,
/// listening on a free loopback port, with a write token for one site and host.
pub struct Collector {
    pub db: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub token: String,
}

impl Collector {
    /// Creates the token (`token create`) and writes the config; does not start it.
    pub fn prepare(dir: &Path, site: &str, host: &str) -> Result<Collector, String> {
        let db = dir.join("inferwatt.db");
        let out = Command::new(bin("inferwatt-collector"))
            .args(["token", "create", "--site", site, "--host", host, "--db"])
            .arg(&db)
            .output()
            .map_err(|e| format!("token create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let token = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.len() >= 40)
            .ok_or("token create printed no token")?
            .to_string();
        let port = free_port();
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndb_path = \"{}\"\n",
                db.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        Ok(Collector {
            db,
            config,
            port,
            token,
        })
    }

    /// Starts `serve` and waits for `/healthz`.
    pub fn start(&self) -> Proc {
        let p = Proc::spawn(
            "inferwatt-collector",
            Command::new(bin("inferwatt-collector"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .stderr(Stdio::null()),
        );
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        wait_for("the collector's /healthz", Duration::from_secs(20), || {
            http_get(&url).filter(|(s, _)| *s == 200)
        });
        p
    }

    /// The collector's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A powercap tree like `/sys/class/powercap` (package zone and its DRAM subzone) whose
/// counters a thread advances at `package_w` and `dram_w` until the returned flag is
/// cleared; written through a rename, so a reader never sees half a number.
pub fn fake_powercap(
    root: &Path,
    package_w: f64,
    dram_w: f64,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pkg = root.join("intel-rapl:0");
    let dram = root.join("intel-rapl:0:0");
    for (dir, name) in [(&pkg, "package-0"), (&dram, "dram")] {
        std::fs::create_dir_all(dir).expect("powercap dir");
        std::fs::write(dir.join("name"), format!("{name}\n")).expect("name");
        std::fs::write(dir.join("max_energy_range_uj"), "262143328850\n").expect("range");
        std::fs::write(dir.join("energy_uj"), "0\n").expect("energy");
    }
    let run = std::sync::Arc::new(AtomicBool::new(true));
    let flag = run.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while flag.load(Ordering::Relaxed) {
            let t = start.elapsed().as_secs_f64();
            for (dir, w) in [(&pkg, package_w), (&dram, dram_w)] {
                let tmp = dir.join("energy_uj.tmp");
                if std::fs::write(&tmp, format!("{}\n", (w * t * 1e6) as u64)).is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join("energy_uj"));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    run
}

/// An agent on the simulated driver that writes its intervals to a file sink: the
/// scenario, the configuration, the state directory and the output, all under one root.
#[derive(Debug, Clone)]
pub struct FileAgent {
    pub config: PathBuf,
    pub scenario: PathBuf,
    pub out: PathBuf,
    pub state: PathBuf,
}

impl FileAgent {
    /// Writes `scenario` and a configuration of `sections` (TOML tables other than
    /// `[nvml]`, `[prometheus]`, `[state]` and `[file]`, which this sets: the simulated
    /// library, no Prometheus endpoint, and both under `root`).
    pub fn prepare(root: &Path, scenario: &serde_json::Value, sections: &str) -> FileAgent {
        let agent = FileAgent {
            config: root.join("agent.toml"),
            scenario: root.join("scenario.json"),
            out: root.join("intervals.lp"),
            state: root.join("state"),
        };
        std::fs::write(&agent.scenario, scenario.to_string()).expect("write scenario");
        std::fs::write(
            &agent.config,
            format!(
                "{sections}\n[nvml]\nlibrary = \"{}\"\n[prometheus]\nenabled = false\n[state]\ndir = \"{}\"\n[file]\npath = \"{}\"\n",
                sim_library().display(),
                agent.state.display(),
                agent.out.display()
            ),
        )
        .expect("write agent config");
        agent
    }

    /// `inferwatt-agent run` on this configuration and scenario, through `wrapper`
    /// (e.g. `["taskset", "-c", "0"]`) when it is not empty.
    pub fn command(&self, wrapper: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("inferwatt-agent"));
                c
            }
            None => Command::new(bin("inferwatt-agent")),
        };
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("FAKE_NVML_SCENARIO", &self.scenario);
        cmd
    }

    /// Starts the agent.
    pub fn spawn(&self) -> Proc {
        Proc::spawn("inferwatt-agent", &mut self.command(&[]))
    }

    /// The points written so far.
    pub fn points(&self) -> Vec<inferwatt_core::lineproto::Point> {
        read_points(&self.out)
    }

    /// Waits until the file holds `n` points of `measurement`.
    pub fn wait_for_points(&self, measurement: &str, n: usize) {
        wait_for(
            &format!("{n} '{measurement}' points"),
            Duration::from_secs(30),
            || {
                (self
                    .points()
                    .iter()
                    .filter(|p| p.measurement == measurement)
                    .count()
                    >= n)
                    .then_some(())
            },
        );
    }
}
