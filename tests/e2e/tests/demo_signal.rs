//! `inferwatt-demo` stopped with SIGTERM (a service manager, `kill`, a CI timeout) stops
//! its collector, agent and model servers too, instead of leaving them running.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inferwatt_tests::harness;

/// Pids whose parent is `pid` (from `/proc/<pid>/stat`, field 4).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn sigterm_stops_the_demo_and_every_process_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Command::new(harness::bin("inferwatt-demo"))
        .args(["--seconds", "60", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("==> running the agent") {
                let _ = tx.send(());
            }
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(60));
    // The collector, the model servers and the agent are children by now.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kids = children_of(demo.id());
    while kids.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        kids = children_of(demo.id());
    }
    assert!(kids.len() >= 3, "the demo's children: {kids:?}");

    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // 143 (SIGTERM) when the handler exits first; 1 when the demo's own check sees its
    // servers stop first. Either way it did not succeed, and nothing it started remains.
    assert!(!status.success(), "{status:?}");
    let left: Vec<u32> = kids.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after the demo's SIGTERM: {left:?}"
    );
}
