//! A simulated inference host for the demo and the end-to-end tests: three model
//! servers (the simulated inference server under real vLLM, SGLang and llama.cpp
//! command lines; vLLM and SGLang replay the Azure LLM inference traces through their
//! `/metrics` counters) on two simulated GPUs, and the scenario file that drives the
//! simulated driver.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{self, Proc};

pub const VLLM_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
pub const SGLANG_MODEL: &str = "Qwen/Qwen2.5-7B-Instruct";
pub const LLAMACPP_MODEL: &str = "mistral-7b-instruct-v0.2.Q4_K_M";

/// Starts the simulated inference server under a real server's command line
/// (`argv0` and `args`), serving `/metrics` on `port` from a recorded `trace`.
pub fn model_process(
    argv0: &str,
    args: &[&str],
    port: Option<u16>,
    trace: Option<&Path>,
    speedup: f64,
) -> Proc {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(harness::bin("fake-inference-server"));
    cmd.arg0(argv0).args(args);
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    if let Some(t) = trace {
        cmd.env("FAKE_SERVER_TRACE", t);
        cmd.env("FAKE_SERVER_SPEEDUP", speedup.to_string());
    }
    Proc::spawn(argv0, &mut cmd)
}

/// The running model servers and the scenario of their GPUs.
pub struct Fleet {
    pub vllm: Proc,
    pub sglang: Proc,
    pub llamacpp: Proc,
    pub scenario: Value,
    pub scenario_path: PathBuf,
    pub epoch_unix_ms: i64,
}

impl Fleet {
    /// Starts the servers and writes `scenario.json` in `dir`. The scenario starts at
    /// `epoch_unix_ms` and lasts `seconds`, in phases: all busy, a quiet spell, busy
    /// again with sub-second bursts. Utilisations never sum above 100% at an instant.
    pub fn start(dir: &Path, epoch_unix_ms: i64, seconds: f64, trace_speedup: f64) -> Fleet {
        let traces = harness::shared_dir().join("data/traces");
        let vllm = model_process(
            "/usr/bin/python3",
            &[
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                VLLM_MODEL,
            ],
            Some(harness::free_port()),
            Some(&traces.join("azure-llm-inference-2023-conv.csv")),
            trace_speedup,
        );
        let sglang = model_process(
            "python3",
            &[
                "-m",
                "sglang.launch_server",
                "--model-path",
                SGLANG_MODEL,
                "--enable-metrics",
            ],
            Some(harness::free_port()),
            Some(&traces.join("azure-llm-inference-2023-code.csv")),
            trace_speedup,
        );
        let llamacpp = model_process(
            "/usr/local/bin/llama-server",
            &[
                "-m",
                &format!("/models/{LLAMACPP_MODEL}.gguf"),
                "-ngl",
                "99",
            ],
            None,
            None,
            1.0,
        );
        let (v, s, l) = (vllm.pid(), sglang.pid(), llamacpp.pid());
        let quiet = (seconds * 0.4, seconds * 0.5);
        let scenario = json!({
            "epoch_unix_ms": epoch_unix_ms,
            "gpus": [
                {
                    "uuid": "GPU-3f1c6a0e-5d2b-4e8f-9c71-000000000001",
                    "name": "NVIDIA H100 80GB HBM3",
                    "idle_w": 70.0, "max_w": 700.0,
                    "memory_total_bytes": 85_899_345_920u64,
                    "energy_counter": true,
                    "initial_counter_mj": 412_337_001u64,
                    "power_reading": "average_1s",
                    "processes": [
                        {"pid": v, "used_memory_bytes": 38_000_000_000u64, "start_s": 0.0},
                        {"pid": s, "used_memory_bytes": 30_000_000_000u64, "start_s": 0.0}
                    ],
                    "phases": [
                        {"start_s": 0.0, "end_s": quiet.0, "procs": [
                            {"pid": v, "sm_util": 45.0, "weight": 1.0},
                            {"pid": s, "sm_util": 25.0, "weight": 1.0, "burst": {"period_s": 0.4, "duty": 0.5}}
                        ]},
                        {"start_s": quiet.0, "end_s": quiet.1, "procs": []},
                        {"start_s": quiet.1, "end_s": seconds * 10.0, "procs": [
                            {"pid": v, "sm_util": 30.0, "weight": 1.0, "burst": {"period_s": 0.3, "duty": 0.6}},
                            {"pid": s, "sm_util": 40.0, "weight": 1.0}
                        ]}
                    ]
                },
                {
                    "uuid": "GPU-3f1c6a0e-5d2b-4e8f-9c71-000000000002",
                    "name": "NVIDIA H100 80GB HBM3",
                    "idle_w": 70.0, "max_w": 700.0,
                    "memory_total_bytes": 85_899_345_920u64,
                    "energy_counter": true,
                    "initial_counter_mj": 398_112_450u64,
                    "power_reading": "average_1s",
                    "processes": [
                        {"pid": l, "used_memory_bytes": 6_000_000_000u64, "start_s": 0.0}
                    ],
                    "phases": [
                        {"start_s": 0.0, "end_s": seconds * 10.0, "procs": [
                            {"pid": l, "sm_util": 55.0, "weight": 1.0}
                        ]}
                    ]
                }
            ]
        });
        let scenario_path = dir.join("scenario.json");
        std::fs::write(
            &scenario_path,
            serde_json::to_vec_pretty(&scenario).expect("scenario json"),
        )
        .expect("write scenario");
        Fleet {
            vllm,
            sglang,
            llamacpp,
            scenario,
            scenario_path,
            epoch_unix_ms,
        }
    }

    /// pid → model name, for comparing with the simulator's per-process truth.
    pub fn models(&self) -> Vec<(u32, &'static str)> {
        vec![
            (self.vllm.pid(), VLLM_MODEL),
            (self.sglang.pid(), SGLANG_MODEL),
            (self.llamacpp.pid(), LLAMACPP_MODEL),
        ]
    }
}
