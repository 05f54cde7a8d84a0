//! A simulated inference server for tests and the demo: a process that looks like a
//! vLLM (or TGI, SGLang) server to the agent — its command line is the real server's,
//! set by the caller through `argv[0]` and arguments — and serves the server's
//! Prometheus counters on `/metrics`, advancing them by replaying a recorded request
//! trace (Azure LLM inference traces: `TIMESTAMP,ContextTokens,GeneratedTokens`).
//!
//! Environment: `FAKE_SERVER_TRACE` (CSV path; none = counters stay at 0),
//! `FAKE_SERVER_SPEEDUP` (trace seconds per real second, default 1),
//! `FAKE_SERVER_KIND` (`vllm`, `tgi`, `sglang`; default from the command line),
//! `FAKE_SERVER_HOST` (the address to listen on, default `127.0.0.1`: another loopback
//! address stands for a pod's IP).
//! The port and model come from the command line (`--port`, `--served-model-name`,
//! `--model`, `--model-id`, `--model-path`, or `serve MODEL`). Without a port it only
//! sleeps, as a GPU process with no metrics endpoint.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

struct Request {
    at_s: f64,
    input_tokens: u64,
    output_tokens: u64,
}

fn arg_value(args: &[String], names: &[&str]) -> Option<String> {
    for (i, a) in args.iter().enumerate() {
        for n in names {
            if a == n {
                return args.get(i + 1).cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// Seconds of day of `2023-11-16 18:15:46.6805900` (traces span less than a day).
fn parse_ts(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(day * 86_400.0 + h * 3600.0 + m * 60.0 + sec)
}

fn load_trace(path: &str) -> Result<Vec<Request>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read trace '{path}': {e}"))?;
    let mut out = Vec::new();
    let mut first = None;
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut cols = line.split(',');
        let (Some(ts), Some(ctx), Some(gen)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(format!("trace '{path}' line {}: expected 3 columns", i + 1));
        };
        let t = parse_ts(ts)
            .ok_or_else(|| format!("trace '{path}' line {}: bad timestamp '{ts}'", i + 1))?;
        let t0 = *first.get_or_insert(t);
        out.push(Request {
            at_s: t - t0,
            input_tokens: ctx
                .trim()
                .parse()
                .map_err(|_| format!("trace '{path}' line {}: bad ContextTokens", i + 1))?,
            output_tokens: gen
                .trim()
                .parse()
                .map_err(|_| format!("trace '{path}' line {}: bad GeneratedTokens", i + 1))?,
        });
    }
    Ok(out)
}

fn metrics(kind: &str, model: &str, trace: &[Request], elapsed_trace_s: f64) -> String {
    let done = trace.partition_point(|r| r.at_s <= elapsed_trace_s);
    let reqs = done as u64;
    let input: u64 = trace[..done].iter().map(|r| r.input_tokens).sum();
    let output: u64 = trace[..done].iter().map(|r| r.output_tokens).sum();
    match kind {
        "tgi" => format!(
            "# TYPE tgi_request_success counter\ntgi_request_success {reqs}\n\
             # TYPE tgi_request_input_length histogram\ntgi_request_input_length_sum {input}\ntgi_request_input_length_count {reqs}\n\
             # TYPE tgi_request_generated_tokens histogram\ntgi_request_generated_tokens_sum {output}\ntgi_request_generated_tokens_count {reqs}\n"
        ),
        "sglang" => format!(
            "# TYPE sglang:prompt_tokens_total counter\nsglang:prompt_tokens_total{{model_name=\"{model}\"}} {input}\n\
             # TYPE sglang:generation_tokens_total counter\nsglang:generation_tokens_total{{model_name=\"{model}\"}} {output}\n\
             # TYPE sglang:num_requests_total counter\nsglang:num_requests_total{{model_name=\"{model}\"}} {reqs}\n"
        ),
        _ => {
            let stop = reqs - reqs / 10;
            let length = reqs / 10;
            format!(
                "# HELP vllm:request_success_total Count of successfully processed requests.\n\
                 # TYPE vllm:request_success_total counter\n\
                 vllm:request_success_total{{finished_reason=\"stop\",model_name=\"{model}\"}} {stop}.0\n\
                 vllm:request_success_total{{finished_reason=\"length\",model_name=\"{model}\"}} {length}.0\n\
                 # HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
                 # TYPE vllm:prompt_tokens_total counter\n\
                 vllm:prompt_tokens_total{{model_name=\"{model}\"}} {input}.0\n\
                 # HELP vllm:generation_tokens_total Number of generation tokens processed.\n\
                 # TYPE vllm:generation_tokens_total counter\n\
                 vllm:generation_tokens_total{{model_name=\"{model}\"}} {output}.0\n"
            )
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let joined = args.join(" ");
    let kind = std::env::var("FAKE_SERVER_KIND").unwrap_or_else(|_| {
        if joined.contains("sglang") {
            "sglang".into()
        } else if joined.contains("text-generation") {
            "tgi".into()
        } else {
            "vllm".into()
        }
    });
    let model = arg_value(
        &args,
        &[
            "--served-model-name",
            "--model",
            "--model-id",
            "--model-path",
        ],
    )
    .or_else(|| {
        args.iter()
            .position(|a| a == "serve")
            .and_then(|i| args.get(i + 1).cloned())
    })
    .unwrap_or_else(|| "unknown".into());
    let trace = match std::env::var("FAKE_SERVER_TRACE") {
        Ok(p) => match load_trace(&p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("fake-inference-server: {e}");
                std::process::exit(2);
            }
        },
        Err(_) => Vec::new(),
    };
    let speedup: f64 = std::env::var("FAKE_SERVER_SPEEDUP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let Some(port) = arg_value(&args, &["--port"]) else {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    let host = std::env::var("FAKE_SERVER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = match TcpListener::bind(format!("{host}:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-inference-server: cannot listen on {host}:{port}: {e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // Drain the headers.
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        let _ = reader.read_exact(&mut body);
        let (status, body) = if request_line.starts_with("GET /metrics") {
            let elapsed = start.elapsed().as_secs_f64() * speedup;
            ("200 OK", metrics(&kind, &model, &trace, elapsed))
        } else {
            ("404 Not Found", "not found\n".to_string())
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
