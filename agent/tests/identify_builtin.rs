//! Built-in identification rules, on command lines taken from each server's docs and
//! issue trackers.

use inferwatt_agent::identify::{Identifier, Identity, ProcessFacts};

fn facts(cmdline: &str) -> ProcessFacts {
    ProcessFacts {
        pid: 4242,
        exe: "python3.11".into(),
        cmdline: cmdline.split_whitespace().map(str::to_string).collect(),
        ..Default::default()
    }
}

fn ident(cmdline: &str) -> Identity {
    Identifier::new(&[])
        .expect("no rules")
        .identify(&facts(cmdline))
}

fn assert_model(cmdline: &str, server: &str, model: &str) {
    let id = ident(cmdline);
    assert_eq!(
        (id.server.as_str(), id.model.as_str()),
        (server, model),
        "{cmdline}\n rule: {}",
        id.rule
    );
    assert!(
        id.rule.starts_with(&format!("built-in {server}")),
        "{}",
        id.rule
    );
}

#[test]
fn vllm_command_lines() {
    // docs: quickstart / OpenAI-compatible server
    assert_model(
        "vllm serve meta-llama/Llama-3.1-8B-Instruct --tensor-parallel-size 2",
        "vllm",
        "meta-llama/Llama-3.1-8B-Instruct",
    );
    assert_model(
        "vllm serve NousResearch/Meta-Llama-3-8B-Instruct --dtype auto --api-key token-abc123",
        "vllm",
        "NousResearch/Meta-Llama-3-8B-Instruct",
    );
    // the pip entry point as the kernel sees it
    assert_model(
        "/usr/bin/python3 /usr/local/bin/vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001",
        "vllm",
        "Qwen/Qwen2.5-1.5B-Instruct",
    );
    // legacy module form, both flag spellings
    assert_model(
        "python -m vllm.entrypoints.openai.api_server --model facebook/opt-125m",
        "vllm",
        "facebook/opt-125m",
    );
    assert_model("python -m vllm.entrypoints.api_server --model=gs://vertex-model-garden-public-us-central1/llama2/llama2-7b-hf --tensor-parallel-size=2 --swap-space=16", "vllm", "gs://vertex-model-garden-public-us-central1/llama2/llama2-7b-hf");
    // --served-model-name wins: it is the name clients and vLLM's metrics use
    assert_model("python3 -m vllm.entrypoints.openai.api_server --model=/models/llama2-7b-hf --tensor-parallel-size=2 --served-model-name llama-2-7b", "vllm", "llama-2-7b");
    assert_model(
        "vllm serve unsloth/Llama-3.2-1B-Instruct --served-model-name=llama-small --port 8000",
        "vllm",
        "llama-small",
    );
    // uv wrapper and a local path with a trailing slash
    assert_model(
        "uv run --with vllm vllm serve /data/models/Qwen3-8B/ --max-model-len 8192",
        "vllm",
        "Qwen3-8B",
    );
    // a Hugging Face cache snapshot path becomes the repo id
    assert_model("vllm serve /root/.cache/huggingface/hub/models--mistralai--Mistral-7B-Instruct-v0.3/snapshots/e0bc86c23ce5aae1db576c8cca6f06f1f73af2db", "vllm", "mistralai/Mistral-7B-Instruct-v0.3");
}

#[test]
fn vllm_engine_core_takes_its_parents_model() {
    let identifier = Identifier::new(&[]).expect("no rules");
    let mut child = facts("VLLM::EngineCore");
    child.pid = 101;
    let mut parent =
        facts("/usr/bin/python3 /usr/local/bin/vllm serve meta-llama/Llama-3.1-8B-Instruct");
    parent.pid = 100;
    let shell = facts("bash");
    let id = identifier.identify_lineage(&[child.clone(), parent, shell]);
    assert_eq!(id.model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(id.server, "vllm");
    assert!(id.rule.ends_with("(via parent pid 100)"), "{}", id.rule);
    // parent unreadable: still known to be vLLM
    let id = identifier.identify_lineage(&[child]);
    assert_eq!(
        (id.model.as_str(), id.server.as_str()),
        ("unknown:vllm", "vllm")
    );
}

#[test]
fn tgi_command_lines() {
    // docker image entrypoint with `--model-id $model` (TGI quick tour)
    assert_model(
        "text-generation-launcher --model-id teknium/OpenHermes-2.5-Mistral-7B",
        "tgi",
        "teknium/OpenHermes-2.5-Mistral-7B",
    );
    assert_model("text-generation-launcher --port 8001 --max-batch-prefill-tokens 3072 --max-input-length 3072 --max-total-tokens 4096 --model-id /data/llama-2-7b-chat-hf", "tgi", "llama-2-7b-chat-hf");
    // the shard processes the launcher spawns hold the GPU
    assert_model("/opt/conda/bin/python3.11 /opt/conda/bin/text-generation-server serve bigcode/starcoder2-15b --uds-path /tmp/text-generation-server --logger-level INFO --json-output", "tgi", "bigcode/starcoder2-15b");
    assert_model("/opt/conda/bin/python3.11 /opt/conda/bin/text-generation-server serve meta-llama/Meta-Llama-3.1-70B-Instruct --revision main --sharded --quantize bitsandbytes-nf4 --uds-path /tmp/text-generation-server", "tgi", "meta-llama/Meta-Llama-3.1-70B-Instruct");
    // `docker run -e MODEL_ID=…`: the model comes from the environment
    let mut p = facts("text-generation-launcher");
    p.env = vec![(
        "MODEL_ID".into(),
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0".into(),
    )];
    let id = Identifier::new(&[]).expect("no rules").identify(&p);
    assert_eq!(
        (id.server.as_str(), id.model.as_str()),
        ("tgi", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    );
}

#[test]
fn sglang_command_lines() {
    assert_model("python -m sglang.launch_server --model-path meta-llama/Meta-Llama-3-8B-Instruct --port 30000", "sglang", "meta-llama/Meta-Llama-3-8B-Instruct");
    assert_model("python3 -m sglang.launch_server --model-path Qwen/Qwen2-7B-Instruct --served-model-name qwen --enable-metrics --host 0.0.0.0 --port 30000", "sglang", "qwen");
    assert_model("python3 -m sglang.launch_server --model deepseek-ai/DeepSeek-V3 --tp 8 --trust-remote-code", "sglang", "deepseek-ai/DeepSeek-V3");
    assert_model("python3 -m sglang_router.launch_server --model-path=meta-llama/Llama-3.1-8B-Instruct --dp-size 2", "sglang", "meta-llama/Llama-3.1-8B-Instruct");
    let identifier = Identifier::new(&[]).expect("no rules");
    let mut parent =
        facts("python3 -m sglang.launch_server --model-path Qwen/Qwen2.5-7B-Instruct --tp 2");
    parent.pid = 7;
    let id = identifier.identify_lineage(&[facts("sglang::scheduler_TP1"), parent]);
    assert_eq!(
        (id.server.as_str(), id.model.as_str()),
        ("sglang", "Qwen/Qwen2.5-7B-Instruct")
    );
}

#[test]
fn llamacpp_command_lines() {
    // README: the model file's stem
    assert_model(
        "llama-server -m models/7B/ggml-model.gguf -c 2048",
        "llamacpp",
        "ggml-model",
    );
    assert_model("/app/llama-server --model /models/mistral-7b-instruct-v0.2.Q4_K_M.gguf --host 0.0.0.0 --port 8080", "llamacpp", "mistral-7b-instruct-v0.2.Q4_K_M");
    // README: straight from the Hub
    assert_model(
        "llama-server -hf ggml-org/gemma-3-1b-it-GGUF",
        "llamacpp",
        "ggml-org/gemma-3-1b-it-GGUF",
    );
    // split GGUF, and --alias (the name the API reports) wins
    assert_model("./llama-server -m /models/Qwen3-235B-A22B-Q4_K_M-00001-of-00003.gguf --port 8081 --metrics", "llamacpp", "Qwen3-235B-A22B-Q4_K_M");
    assert_model("./llama-server -m /models/Qwen3-235B-A22B-Q4_K_M-00001-of-00003.gguf --alias qwen3 --port 8081", "llamacpp", "qwen3");
}

#[test]
fn ollama_runners_without_manifests() {
    // Ollama 0.5 (issue ollama#8525)
    assert_model("/usr/local/lib/ollama/runners/cuda_v12_avx/ollama_llama_server runner --model /home/khammitt/.ollama/models/blobs/sha256-5c56bb0256a2c402e95282a29bb5cb747bb805eda0e14a84b1f6c594a297ec1a --ctx-size 8192 --batch-size 512 --n-gpu-layers 41 --threads 8 --parallel 4 --port 41813", "ollama", "ollama:sha256-5c56bb0256a2");
    // Ollama ≥ 0.6: the runner is the ollama binary itself
    assert_model("/usr/local/bin/ollama runner --model /root/.ollama/models/blobs/sha256-6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa --ctx-size 8192 --batch-size 512 --n-gpu-layers 33 --threads 16 --parallel 1 --port 35159", "ollama", "ollama:sha256-6a0746a1ec1a");
    assert_model("/usr/bin/ollama runner --ollama-engine --model /usr/share/ollama/.ollama/models/blobs/sha256-aeda25e63ebd698fab8638ffb778e68bed908b960d39d0becc650fa981609d25 --port 44321", "ollama", "ollama:sha256-aeda25e63ebd");
    // `ollama serve` itself is not a runner
    assert_eq!(ident("/usr/local/bin/ollama serve").server, "unknown");
}

#[test]
fn ollama_blob_named_by_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let digest = "5c56bb0256a2c402e95282a29bb5cb747bb805eda0e14a84b1f6c594a297ec1a";
    let write_manifest = |rel: &str, model_digest: &str| {
        let path = models.join("manifests").join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:0ba8f0e314b4264dfd19df045cde9d4c394a52474bf92ed6a3de22a4ca31a177","size":485}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{model_digest}","size":4920738944}},{{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:11ce4ee3e170f6adebac9a991c22e22ab3f8530e154ee669954c4bc73061c258","size":1480}}]}}"#
        );
        std::fs::write(path, json).expect("write manifest");
    };
    write_manifest("registry.ollama.ai/library/llama3.1/8b", digest);
    write_manifest("registry.ollama.ai/library/llama3.1/latest", digest);
    write_manifest("registry.ollama.ai/library/qwen2.5/7b", &"ab".repeat(32));
    std::fs::create_dir_all(models.join("blobs")).expect("mkdir blobs");
    let blob = models.join("blobs").join(format!("sha256-{digest}"));
    let cmd = format!(
        "/usr/local/bin/ollama runner --model {} --port 35159",
        blob.display()
    );
    let id = Identifier::new(&[])
        .expect("no rules")
        .identify(&facts(&cmd));
    // two tags name the blob: the first in sort order is reported, deterministically
    assert_eq!(
        (id.server.as_str(), id.model.as_str()),
        ("ollama", "llama3.1:8b")
    );
    assert!(id.rule.contains("manifest"), "{}", id.rule);

    // a blob path from another mount namespace, found through OLLAMA_MODELS
    let mut p = facts(&format!(
        "/usr/bin/ollama runner --model /root/.ollama/models/blobs/sha256-{} --port 1",
        "ab".repeat(32)
    ));
    p.env = vec![("OLLAMA_MODELS".into(), models.display().to_string())];
    let id = Identifier::new(&[]).expect("no rules").identify(&p);
    assert_eq!(id.model, "qwen2.5:7b");

    // a user namespace and a private registry
    write_manifest("registry.ollama.ai/hf-user/mymodel/q4", &"cd".repeat(32));
    write_manifest(
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF/Q4_K_M",
        &"ef".repeat(32),
    );
    let identifier = Identifier::new(&[])
        .expect("no rules")
        .with_ollama_models_dirs(vec![models.clone()]);
    let blob = |d: &str| {
        facts(&format!(
            "ollama runner --model /elsewhere/blobs/sha256-{d}"
        ))
    };
    assert_eq!(
        identifier.identify(&blob(&"cd".repeat(32))).model,
        "hf-user/mymodel:q4"
    );
    assert_eq!(
        identifier.identify(&blob(&"ef".repeat(32))).model,
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"
    );
}

#[test]
fn triton_command_lines() {
    // quickstart: every model of the repository
    assert_model(
        "tritonserver --model-repository=/models",
        "triton",
        "triton:models",
    );
    assert_model("/opt/tritonserver/bin/tritonserver --http-port 8000 --grpc-port 8001 --metrics-port 8002 --model-repository=/opt/tritonserver/model_repo --exit-on-error=false --model-control-mode=explicit --repository-poll-secs 10 --allow-metrics=true --allow-gpu-metrics=true", "triton", "triton:model_repo");
    // explicit mode with exactly one --load-model names that model
    assert_model("tritonserver --model-repository=/models --model-control-mode=explicit --load-model=densenet_onnx", "triton", "densenet_onnx");
    // `*` or several models: the repository again
    assert_model("tritonserver --model-repository s3://my-bucket/triton-repo/ --model-control-mode=explicit --load-model=* ", "triton", "triton:triton-repo");
    assert_model("tritonserver --model-repository=/models --model-control-mode=explicit --load-model a --load-model b", "triton", "triton:models");
}

#[test]
fn unmatched_processes_are_unknown_exe() {
    let id = ident("/usr/bin/python3 train.py --epochs 3");
    assert_eq!(
        (id.model.as_str(), id.server.as_str()),
        ("unknown:python3.11", "unknown")
    );
    let mut p = facts("");
    p.exe = String::new();
    p.cmdline = vec!["/opt/bin/blender".into(), "-b".into()];
    assert_eq!(
        Identifier::new(&[]).expect("no rules").identify(&p).model,
        "unknown:blender"
    );
    // `vllm bench` is a client, not a server
    assert_eq!(ident("vllm bench serve --model x").server, "unknown");
}
