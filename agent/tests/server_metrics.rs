//! Inference-server metrics: parsing real expositions, differencing with resets,
//! endpoint discovery and a scrape over loopback.

use std::collections::HashMap;
use std::time::Duration;

use inferwatt_agent::identify::{Identifier, Identity, ProcessFacts};
use inferwatt_agent::sources::server_metrics::{
    default_endpoint, default_endpoint_for_lineage, parse_exposition, parse_metrics, scrape,
    MetricsError, ServerCounters, UsageTracker, UNLABELLED,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/metrics/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).expect("fixture exists")
}

fn counters(requests: u64, input_tokens: u64, output_tokens: u64) -> ServerCounters {
    ServerCounters {
        requests,
        input_tokens,
        output_tokens,
    }
}

#[test]
fn vllm_v1_sums_finished_reasons() {
    let got = parse_metrics("vllm", &fixture("vllm_v1.prom")).expect("parses");
    assert_eq!(got.len(), 1);
    // 121 stop + 10 length + 1 abort; the prompt-token histogram is not counted twice
    assert_eq!(
        got["meta-llama/Llama-3.1-8B-Instruct"],
        counters(132, 140_934, 16_768)
    );
}

#[test]
fn vllm_v0_ignores_created_and_normalises_paths() {
    let got = parse_metrics("vllm", &fixture("vllm_v0_created.prom")).expect("parses");
    // model_name was the local path the server was started with: same name as identify gives
    assert_eq!(got["Mistral-7B-Instruct-v0.3"], counters(42, 25_000, 7_300));
    let id = Identifier::new(&[])
        .expect("no rules")
        .identify(&ProcessFacts {
            cmdline: ["vllm", "serve", "/models/Mistral-7B-Instruct-v0.3/"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        });
    assert!(got.contains_key(&id.model));
}

#[test]
fn sglang_counters() {
    let got = parse_metrics("sglang", &fixture("sglang.prom")).expect("parses");
    assert_eq!(
        got["meta-llama/Llama-3.1-8B-Instruct"],
        counters(11_008, 8_128_902, 7_557_572)
    );
}

#[test]
fn tgi_counters_have_no_model_label() {
    let got = parse_metrics("tgi", &fixture("tgi.prom")).expect("parses");
    assert_eq!(got.len(), 1);
    assert_eq!(got[UNLABELLED], counters(25, 5_112, 3_416));
}

#[test]
fn llamacpp_counts_tokens_only() {
    let got = parse_metrics("llamacpp", &fixture("llamacpp.prom")).expect("parses");
    assert_eq!(got[UNLABELLED], counters(0, 6_886, 3_469));
}

#[test]
fn malformed_exposition_is_a_clear_error() {
    let err = parse_metrics("vllm", &fixture("malformed.prom")).expect_err("malformed");
    let msg = err.to_string();
    assert!(
        matches!(err, MetricsError::Parse { line: 4, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("line 4") && msg.contains("unterminated label value"),
        "{msg}"
    );

    for (text, reason) in [
        ("x{a=\"1\"} abc\n", "value is not a number"),
        ("x{a=1} 2\n", "label value must be quoted"),
        ("x 1 2 3\n", "unexpected text"),
        ("{a=\"1\"} 2\n", "expected a metric name"),
        ("x{a=\"1\" b=\"2\"} 2\n", "expected ',' or '}'"),
    ] {
        let err = parse_exposition(text).expect_err(text);
        assert!(err.to_string().contains(reason), "{text}: {err}");
    }
    let neg = parse_metrics("vllm", "vllm:prompt_tokens_total{model_name=\"m\"} -3\n")
        .expect_err("negative");
    assert!(
        neg.to_string().contains("'vllm:prompt_tokens_total'"),
        "{neg}"
    );
    assert!(matches!(
        parse_metrics("nim", ""),
        Err(MetricsError::UnknownServer(_))
    ));
}

#[test]
fn exposition_details() {
    let s = parse_exposition(
        "# a comment\n\nm_total{le=\"+Inf\"} +Inf\nn NaN 1700000000000\ng -1.5e-3\n# EOF\nafter{ 1\n",
    )
    .expect("parses, stops at EOF");
    assert_eq!(s.len(), 3);
    assert!(s[0].value.is_infinite() && s[1].value.is_nan());
    assert_eq!(s[2].value, -0.0015);
}

#[test]
fn tracker_baselines_differences_and_resets() {
    let mut t = UsageTracker::new();
    let read = |pairs: &[(&str, ServerCounters)]| -> HashMap<String, ServerCounters> {
        pairs.iter().map(|(m, c)| (m.to_string(), *c)).collect()
    };
    // first reading of an endpoint: baseline only
    assert!(t
        .update("a", &read(&[("m", counters(10, 1000, 500))]))
        .is_empty());
    let d = t.update("a", &read(&[("m", counters(13, 1300, 650))]));
    assert_eq!(d["m"], counters(3, 300, 150));
    // restart: counters went down → the new values are the delta
    let d = t.update("a", &read(&[("m", counters(2, 90, 40))]));
    assert_eq!(d["m"], counters(2, 90, 40));
    // a model appearing on a watched endpoint counts from zero
    let d = t.update(
        "a",
        &read(&[("m", counters(2, 90, 40)), ("n", counters(1, 10, 5))]),
    );
    assert_eq!(d["m"], counters(0, 0, 0));
    assert_eq!(d["n"], counters(1, 10, 5));
    // endpoints are independent
    assert!(t
        .update("b", &read(&[("m", counters(100, 100, 100))]))
        .is_empty());
    t.forget("a");
    assert!(t
        .update("a", &read(&[("m", counters(50, 50, 50))]))
        .is_empty());
}

fn id(server: &str, model: &str) -> Identity {
    Identity {
        model: model.into(),
        server: server.into(),
        rule: String::new(),
    }
}

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn endpoints_from_command_lines() {
    let ep = |server, model, cmd| default_endpoint(&id(server, model), &argv(cmd));
    assert_eq!(
        ep("vllm", "m", "vllm serve m").as_deref(),
        Some("http://127.0.0.1:8000/metrics")
    );
    assert_eq!(
        ep(
            "vllm",
            "m",
            "python3 -m vllm.entrypoints.openai.api_server --model m --port=8011 --host 0.0.0.0"
        )
        .as_deref(),
        Some("http://127.0.0.1:8011/metrics")
    );
    assert_eq!(
        ep("vllm", "m", "vllm serve m --host 10.1.2.3 --port 9000").as_deref(),
        Some("http://10.1.2.3:9000/metrics")
    );
    assert_eq!(
        ep(
            "sglang",
            "m",
            "python -m sglang.launch_server --model-path m --enable-metrics"
        )
        .as_deref(),
        Some("http://127.0.0.1:30000/metrics")
    );
    assert_eq!(
        ep(
            "sglang",
            "m",
            "python -m sglang.launch_server --model-path m --port 30001"
        ),
        None,
        "metrics off"
    );
    assert_eq!(
        ep(
            "llamacpp",
            "qwen3",
            "llama-server -m q.gguf --metrics --port 8081"
        )
        .as_deref(),
        Some("http://127.0.0.1:8081/metrics#model=qwen3")
    );
    assert_eq!(
        ep("llamacpp", "q", "llama-server -m q.gguf"),
        None,
        "metrics off"
    );
    assert_eq!(
        ep(
            "tgi",
            "org/m x",
            "text-generation-launcher --model-id org/m"
        )
        .as_deref(),
        Some("http://127.0.0.1:3000/metrics#model=org/m%20x")
    );
    assert_eq!(
        ep("tgi", "m", "text-generation-server serve m"),
        None,
        "shards serve no HTTP"
    );
    assert_eq!(ep("ollama", "m", "ollama runner --model /b --port 4"), None);
    assert_eq!(ep("unknown", "m", "vllm serve m"), None);
}

#[test]
fn endpoint_of_a_worker_comes_from_its_parent() {
    let facts = |cmd: &str, env: &[(&str, &str)]| ProcessFacts {
        cmdline: argv(cmd),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let chain = [
        facts("/opt/conda/bin/python3.11 /opt/conda/bin/text-generation-server serve m --uds-path /tmp/x", &[]),
        facts("text-generation-launcher --model-id m", &[("PORT", "80")]),
    ];
    assert_eq!(
        default_endpoint_for_lineage(&id("tgi", "m"), &chain).as_deref(),
        Some("http://127.0.0.1:80/metrics#model=m")
    );
    let chain = [
        facts("VLLM::EngineCore", &[]),
        facts("vllm serve m --port 8123", &[]),
    ];
    assert_eq!(
        default_endpoint_for_lineage(&id("vllm", "m"), &chain).as_deref(),
        Some("http://127.0.0.1:8123/metrics")
    );
}

async fn serve(body: &'static str, status: u16) -> String {
    use axum::{http::StatusCode, routing::get, Router};
    let code = StatusCode::from_u16(status).expect("status");
    let app = Router::new().route("/metrics", get(move || async move { (code, body) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/metrics")
}

#[tokio::test]
async fn scrape_over_loopback() {
    let client = reqwest::Client::new();
    let t = Duration::from_secs(5);
    let vllm = serve(include_str!("fixtures/metrics/vllm_v1.prom"), 200).await;
    let got = scrape(&client, &vllm, "vllm", t).await.expect("scrapes");
    assert_eq!(got["meta-llama/Llama-3.1-8B-Instruct"].requests, 132);

    // a label-less server is named by the endpoint's #model fragment
    let tgi = serve(include_str!("fixtures/metrics/tgi.prom"), 200).await;
    let got = scrape(
        &client,
        &format!("{tgi}#model=teknium/OpenHermes-2.5-Mistral-7B"),
        "tgi",
        t,
    )
    .await
    .expect("scrapes");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        vec!["teknium/OpenHermes-2.5-Mistral-7B"]
    );
    assert_eq!(
        got["teknium/OpenHermes-2.5-Mistral-7B"].output_tokens,
        3_416
    );

    let off = serve("not found", 404).await;
    let err = scrape(&client, &off, "sglang", t).await.expect_err("404");
    assert!(
        matches!(err, MetricsError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--enable-metrics"), "{err}");

    // nothing listens: an HTTP error naming the URL
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let url = format!("http://{closed}/metrics");
    let err = scrape(&client, &url, "vllm", t).await.expect_err("refused");
    assert!(err.to_string().contains(&url), "{err}");
}
