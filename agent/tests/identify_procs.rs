//! The process table reader: a fake /proc tree for parsing, the live /proc for the rest.

use std::fs;
use std::path::Path;

use inferwatt_agent::identify::Identifier;
use inferwatt_agent::sources::procs::{ProcError, ProcReader};

const CONTAINER: &str = "3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

struct FakeProc<'a> {
    root: &'a Path,
}

impl FakeProc<'_> {
    fn add(
        &self,
        pid: u32,
        ppid: u32,
        comm: &str,
        argv: &[&str],
        environ: Option<&[&str]>,
        cgroup: &str,
    ) {
        let d = self.root.join(pid.to_string());
        fs::create_dir_all(&d).expect("mkdir");
        let mut cmd = argv.join("\0");
        cmd.push('\0');
        fs::write(d.join("cmdline"), cmd).expect("cmdline");
        fs::write(d.join("comm"), format!("{comm}\n")).expect("comm");
        if let Some(env) = environ {
            let mut e = env.join("\0");
            e.push('\0');
            fs::write(d.join("environ"), e).expect("environ");
        }
        fs::write(d.join("cgroup"), cgroup).expect("cgroup");
        fs::write(
            d.join("stat"),
            format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 1 0 100 0 0\n"),
        )
        .expect("stat");
    }
}

#[test]
fn facts_from_a_fake_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeProc { root: dir.path() };
    fake.add(
        100,
        1,
        "vllm",
        &[
            "/usr/bin/python3",
            "/usr/local/bin/vllm",
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--port",
            "8001",
        ],
        Some(&["PATH=/usr/bin", "HF_HOME=/data/hf", "EMPTY=", "A=b=c"]),
        &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
    );
    // setproctitle pads the re-titled command line with NULs
    fake.add(
        101,
        100,
        "VLLM::EngineCor",
        &["VLLM::EngineCore", "", "", ""],
        None,
        "0::/\n",
    );
    #[cfg(unix)]
    std::os::unix::fs::symlink("/usr/bin/python3.12", dir.path().join("100/exe")).expect("symlink");

    let r = ProcReader::with_root(dir.path());
    let f = r.facts(100).expect("facts");
    assert_eq!(f.pid, 100);
    #[cfg(unix)]
    assert_eq!(f.exe, "python3.12");
    assert_eq!(f.cmdline[3], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(f.env_var("HF_HOME"), Some("/data/hf"));
    assert_eq!(f.env_var("EMPTY"), Some(""));
    assert_eq!(f.env_var("A"), Some("b=c"));
    assert_eq!(
        f.cgroup.as_deref(),
        Some(format!("/system.slice/docker-{CONTAINER}.scope").as_str())
    );
    assert_eq!(f.container_id.as_deref(), Some(CONTAINER));

    // no exe link, no environ: comm and an empty environment, not an error
    let child = r.facts(101).expect("facts");
    assert_eq!(child.exe, "VLLM::EngineCor");
    assert_eq!(child.cmdline, vec!["VLLM::EngineCore"]);
    assert!(child.env.is_empty());
    assert_eq!(child.container_id, None);

    assert_eq!(r.parent_pid(101).expect("stat"), 100);
    let chain = r.lineage(101, 4).expect("lineage");
    assert_eq!(
        chain.iter().map(|f| f.pid).collect::<Vec<_>>(),
        vec![101, 100]
    );
    let id = Identifier::new(&[])
        .expect("no rules")
        .identify_lineage(&chain);
    assert_eq!(id.model, "meta-llama/Llama-3.1-8B-Instruct");

    assert!(matches!(r.facts(999), Err(ProcError::Gone { pid: 999 })));
}

#[test]
fn comm_with_parens_in_stat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("7");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("stat"), "7 (a) b (c)) R 42 7 7 0 -1\n").expect("stat");
    assert_eq!(
        ProcReader::with_root(dir.path())
            .parent_pid(7)
            .expect("ppid"),
        42
    );
}

#[cfg(target_os = "linux")]
#[test]
fn live_proc_self() {
    let me = std::process::id();
    let r = ProcReader::new();
    let f = r.facts(me).expect("own facts");
    assert_eq!(f.pid, me);
    assert!(!f.exe.is_empty());
    let argv0 = std::env::args().next().expect("argv0");
    assert_eq!(f.cmdline.first(), Some(&argv0));
    let path = std::env::var("PATH").expect("PATH set");
    assert_eq!(f.env_var("PATH"), Some(path.as_str()));
    assert!(r.parent_pid(me).expect("ppid") > 0);

    // burn some CPU, then our cumulative CPU time must have grown
    let before = r.cpu_ticks(&[me])[&me];
    let host_before = r.host_busy_ticks().expect("/proc/stat");
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(300) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let after = r.cpu_ticks(&[me, u32::MAX - 1]);
    let host_after = r.host_busy_ticks().expect("/proc/stat");
    assert!(after[&me] > before, "{before} → {}", after[&me]);
    assert!(!after.contains_key(&(u32::MAX - 1)), "dead pids are absent");
    // Our ticks are a part of the host's busy ticks over the same time.
    assert!(
        host_after - host_before >= after[&me] - before,
        "host {host_before} → {host_after}, us {before} → {}",
        after[&me]
    );
}

#[cfg(unix)]
#[test]
fn hidden_cmdline_is_an_error_not_gone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeProc { root: dir.path() };
    fake.add(5, 1, "x", &["x"], None, "");
    let cmdline = dir.path().join("5/cmdline");
    fs::set_permissions(&cmdline, fs::Permissions::from_mode(0o000)).expect("chmod");
    if fs::read(&cmdline).is_ok() {
        return; // running as root: permissions are not enforced
    }
    let err = ProcReader::with_root(dir.path())
        .facts(5)
        .expect_err("unreadable");
    assert!(matches!(err, ProcError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("hidepid"), "{err}");
}
