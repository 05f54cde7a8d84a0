//! `import --format codecarbon|nvidia-smi`: good files become `gpu` (and for CodeCarbon
//! `model_energy`) points whose energy equals the file's (trapezoid for nvidia-smi); a
//! bad column, unit or value names the line and column, and nothing is stored.

use std::process::Command;

use inferwatt_collector::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_inferwatt-collector");

fn import(dir: &std::path::Path, name: &str, text: &str, format: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write");
    Command::new(BIN)
        .args([
            "import", "--format", format, "--site", "lab", "--host", "ws1", "--db",
        ])
        .arg(dir.join("c.db"))
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run")
}

const T: i64 = 1_800_000_000_000_000_000; // 2027-01-15T08:00:00Z

#[test]
fn codecarbon_runs_become_gpu_and_model_energy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = "timestamp,project_name,run_id,experiment_id,duration,emissions,cpu_energy,gpu_energy,ram_energy,energy_consumed,country_iso_code,gpu_model\n\
                2027-01-15T08:00:00,llama-eval,r1,e1,3600,0.01,0.1,0.5,0.05,0.65,FRA,\"1 x NVIDIA H100\"\n\
                2027-01-15T09:00:00,llama-eval,r2,e1,1800,0.01,0.1,0.25,0.05,0.4,FRA,\"1 x NVIDIA H100\"\n";
    let out = import(dir.path(), "emissions.csv", good, "codecarbon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&dir.path().join("c.db")).expect("db");
    let gpu = store
        .sum_gpu_energy(T - 1 - 3_600_000_000_000, T + 3_600_000_000_000)
        .expect("gpu");
    assert_eq!(gpu.len(), 2);
    assert!(gpu.iter().all(|g| g.source == "integrated"));
    let total: f64 = gpu.iter().map(|g| g.energy_j).sum();
    assert!((total - 0.75 * 3.6e6).abs() < 1e-6, "{total}");
    let models = store
        .sum_model_energy(T - 1 - 3_600_000_000_000, T + 3_600_000_000_000)
        .expect("models");
    assert!(models.iter().all(|m| m.model == "llama-eval"));
    let host: f64 = models.iter().map(|m| m.host_j).sum();
    assert!((host - 0.3 * 3.6e6).abs() < 1e-6, "{host}");

    let bad_column =
        "timestamp,project_name,duration,gpu_energy,mystery\n2027-01-15T08:00:00,p,1,1,x\n";
    let out = import(dir.path(), "bad1.csv", bad_column, "codecarbon");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("'mystery'"), "{err}");
    let bad_value = "timestamp,project_name,duration,gpu_energy\n2027-01-16T08:00:00,p,1,1\n2027-01-16T09:00:00,p,1,lots\n";
    let out = import(dir.path(), "bad2.csv", bad_value, "codecarbon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("'gpu_energy'") && err.contains("'lots'"),
        "{err}"
    );
    assert_eq!(
        store.count_points().expect("count"),
        4,
        "nothing of a bad file is stored"
    );
}

#[test]
fn nvidia_smi_power_is_integrated_per_gpu_by_trapezoid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = "timestamp, index, uuid, name, power.draw [W], utilization.gpu [%]\n\
                2027/01/15 08:00:00.000, 0, GPU-a, NVIDIA H100, 100.00 W, 10 %\n\
                2027/01/15 08:00:00.000, 1, GPU-b, NVIDIA H100, 50.00 W, 0 %\n\
                2027/01/15 08:00:01.000, 0, GPU-a, NVIDIA H100, 300.00 W, 90 %\n\
                2027/01/15 08:00:01.000, 1, GPU-b, NVIDIA H100, 50.00 W, 0 %\n\
                2027/01/15 08:00:03.000, 0, GPU-a, NVIDIA H100, 200.00 W, 50 %\n";
    let out = import(dir.path(), "smi.csv", good, "nvidia-smi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&dir.path().join("c.db")).expect("db");
    let rows = store
        .sum_gpu_energy(T - 3_600_000_000_000, T + 10_000_000_000)
        .expect("gpu");
    let a = rows.iter().find(|r| r.gpu_uuid == "GPU-a").expect("a");
    // (100+300)/2·1 + (300+200)/2·2 = 200 + 500.
    assert_eq!(
        (a.energy_j, a.interval_s, a.source.as_str()),
        (700.0, 3.0, "integrated")
    );
    assert_eq!(a.gpu_name, "NVIDIA H100");
    let b = rows.iter().find(|r| r.gpu_uuid == "GPU-b").expect("b");
    assert_eq!((b.energy_j, b.interval_s), (50.0, 1.0));

    let mw = "timestamp, uuid, power.draw [mW]\n2027/01/15 09:00:00, GPU-a, 1\n";
    let out = import(dir.path(), "mw.csv", mw, "nvidia-smi");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'power.draw [mW]'") && err.contains("'mW'"),
        "{err}"
    );
    let unknown =
        "timestamp, uuid, power.draw [W], clocks.sm [MHz]\n2027/01/15 09:00:00, GPU-a, 1, 2\n";
    let out = import(dir.path(), "u.csv", unknown, "nvidia-smi");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'clocks.sm [MHz]'"), "{err}");
    let bad = "timestamp, uuid, power.draw [W]\n2027/01/15 09:00:00, GPU-a, 1 W\n2027/01/15 09:00:01, GPU-a, N/A\n";
    let out = import(dir.path(), "b.csv", bad, "nvidia-smi");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("'N/A'"), "{err}");
    let out = Command::new(BIN)
        .args(["import", "--format", "nvidia-smi", "x.csv"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "--site/--host are required");
    assert_eq!(
        store.count_points().expect("count"),
        3,
        "nothing of a bad file is stored"
    );
}
