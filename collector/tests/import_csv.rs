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

/// A CodeCarbon 3.x `emissions.csv` as the tracker writes it (every `EmissionsData`
/// column, then `wue`): energies that include CodeCarbon's `pue` 1.5 are divided back, the
/// 4 GPUs of `gpu_count` each get a quarter and a GPU-hour per hour, and the report then
/// applies the site's own PUE once. The row is from 2024: history imports with the
/// default config, and importing the same file again is refused with exit 3.
#[test]
fn codecarbon_pue_is_divided_back_and_gpu_count_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,\
cpu_utilization_percent,ram_utilization_percent,ram_used_gb,cpu_power,gpu_power,ram_power,\
cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,country_name,country_iso_code,\
region,cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,cpu_model,\
gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,on_cloud,pue,wue";
    // 2024-03-01T10:00:00, one hour; GPU 1.2 kWh and CPU+RAM 0.3 kWh as written (× 1.5).
    let row = "2024-03-01T10:00:00,llama-eval,7f1c,e9,3600,0.2,5.5e-05,40.0,20.0,12.0,\
75.0,1600.0,10.0,0.15,1.2,0.15,1.5,0.0,France,FRA,IDF,,,Linux-6.1,3.11.7,3.3.2,32,\
AMD EPYC 9454,4,4 x NVIDIA H100 80GB HBM3,2.35,48.85,512.0,machine,N,1.5,0.0";
    let out = import(
        dir.path(),
        "emissions.csv",
        &format!("{header}\n{row}\n"),
        "codecarbon",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = 1_709_287_200_000_000_000; // 2024-03-01T10:00:00Z
    let hour = 3_600_000_000_000;
    let store = Store::open(&dir.path().join("c.db")).expect("db");
    let gpus = store.sum_gpu_energy(t - hour, t).expect("gpu");
    assert_eq!(gpus.len(), 4, "{gpus:?}");
    for g in &gpus {
        assert!((g.energy_j - 0.2 * 3.6e6).abs() < 1e-3, "{g:?}");
    }
    let models = store.sum_model_energy(t - hour, t).expect("models");
    let host: f64 = models.iter().map(|m| m.host_j).sum();
    assert!((host - 0.2 * 3.6e6).abs() < 1e-3, "{host}");
    let gpu_s: f64 = models.iter().map(|m| m.gpu_s).sum();
    assert!((gpu_s - 4.0 * 3600.0).abs() < 1e-6, "{gpu_s}");
    drop(store);

    // The report: IT = 0.8 + 0.2 kWh, facility at the site's PUE (1.2), not CodeCarbon's.
    let factors = dir.path().join("f.toml");
    std::fs::write(&factors, "[sites.lab]\ncountry = \"FRA\"\npue = 1.2\n").expect("factors");
    let out = Command::new(BIN)
        .args([
            "report",
            "--format",
            "json",
            "--from",
            "2024-03-01T09:00:00Z",
        ])
        .args(["--to", "2024-03-01T10:00:00Z", "--db"])
        .arg(dir.path().join("c.db"))
        .arg("--factors")
        .arg(&factors)
        .output()
        .expect("report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let e = &r["totals"]["energy_kwh"];
    assert!((e["it"].as_f64().expect("it") - 1.0).abs() < 1e-9, "{e}");
    assert!(
        (e["facility"].as_f64().expect("f") - 1.2).abs() < 1e-9,
        "{e}"
    );
    assert!((r["totals"]["gpu_hours"].as_f64().expect("h") - 4.0).abs() < 1e-9);

    // The same file again: refused whole, exit 3, saying why.
    let out = import(
        dir.path(),
        "emissions.csv",
        &format!("{header}\n{row}\n"),
        "codecarbon",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imported before") && err.contains("skipped"),
        "{err}"
    );
    // Another file with the same rows: its duplicates are counted, exit 3.
    let out = import(
        dir.path(),
        "copy.csv",
        &format!("{header}\n{row}\n\n"),
        "codecarbon",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8 of its 8 points were skipped"), "{err}");
}
