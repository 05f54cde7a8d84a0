//! Test support: a scriptable InfluxDB v2 write endpoint on 127.0.0.1:0, interval
//! fixtures, a fast-retrying configuration and polling with a deadline.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use inferwatt_core::lineproto::Point;
use inferwatt_ship::ShipConfig;

/// One scripted answer (the default, once the script is used up, is 204).
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    /// Sleep, then 204 (the client should have timed out by then).
    Delay(Duration),
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub status: u16,
    pub timed_out: bool,
    pub auth: Option<String>,
    pub encoding: Option<String>,
    pub content_type: Option<String>,
    pub query: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ServerState {
    pub script: Mutex<VecDeque<Reply>>,
    pub requests: Mutex<Vec<Received>>,
    /// A body containing this text is answered 400.
    pub reject_marker: Mutex<Option<String>>,
}

impl ServerState {
    /// Lines of every request answered 2xx in time, in arrival order.
    pub fn accepted_lines(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| (200..300).contains(&r.status) && !r.timed_out)
            .flat_map(|r| r.lines.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("lock").clone()
    }
}

pub struct TestServer {
    pub url: String,
    pub state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write(
    State(state): State<Arc<ServerState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let encoding = header("content-encoding");
    let text = if encoding.as_deref() == Some("gzip") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut out)
            .expect("gzip body");
        out
    } else {
        String::from_utf8(body.to_vec()).expect("utf-8 body")
    };
    let reply = state.script.lock().expect("lock").pop_front();
    let marker = state.reject_marker.lock().expect("lock").clone();
    let rejected = marker.is_some_and(|m| text.contains(&m));
    let status = match (&reply, rejected) {
        (_, true) => 400,
        (Some(Reply::Status(s)) | Some(Reply::RetryAfter(s, _)), _) => *s,
        _ => 204,
    };
    let mut rec = Received {
        at: Instant::now(),
        status,
        timed_out: false,
        auth: header("authorization"),
        encoding,
        content_type: header("content-type"),
        query: query.unwrap_or_default(),
        lines: text.lines().map(str::to_string).collect(),
    };
    if let Some(Reply::Delay(d)) = reply {
        rec.timed_out = true;
        state.requests.lock().expect("lock").push(rec);
        tokio::time::sleep(d).await;
        return StatusCode::NO_CONTENT.into_response();
    }
    state.requests.lock().expect("lock").push(rec);
    let code = StatusCode::from_u16(status).expect("status");
    match reply {
        Some(Reply::RetryAfter(_, s)) => {
            (code, [("retry-after", s.to_string())], "slow down").into_response()
        }
        _ if rejected => (code, "unable to parse 'host=bad': rejected by test").into_response(),
        _ => (code, "").into_response(),
    }
}

/// Starts the endpoint on a free loopback port.
pub async fn server(script: Vec<Reply>) -> TestServer {
    let state = Arc::new(ServerState::default());
    *state.script.lock().expect("lock") = script.into();
    let app = Router::new()
        .route("/api/v2/write", post(write))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestServer {
        url: format!("http://{addr}"),
        state,
        task,
    }
}

/// A configuration that retries fast, for `url` and spool `dir`.
pub fn config(url: &str, dir: &Path) -> ShipConfig {
    let mut cfg = ShipConfig::new(url, dir);
    cfg.token = Some("secret-token".into());
    cfg.org = "acme".into();
    cfg.bucket = "energy".into();
    cfg.flush_interval_s = 0.0;
    cfg.timeout_s = 2.0;
    cfg.backoff_min_s = 0.02;
    cfg.backoff_max_s = 0.2;
    cfg.shutdown_flush_s = 0.5;
    cfg
}

pub const T0: i64 = 1_700_000_000_000_000_000;

/// Interval `i` of one host: two GPUs and one model's usage (3 points).
pub fn interval(host: &str, i: i64) -> Vec<Point> {
    let ts = T0 + i * 1_000_000_000;
    let gpu = |idx: &str, e: f64| {
        Point::new("gpu")
            .tag("site", "lab")
            .tag("host", host)
            .tag("gpu_index", idx)
            .tag("gpu_uuid", format!("GPU-{idx}"))
            .float("energy_j", e)
            .float("power_w", e)
            .uint("energy_counter_mj", (i as u64 + 1) * 1000)
            .float("interval_s", 1.0)
            .string("source", "counter")
            .at(ts)
    };
    vec![
        gpu("0", 100.0 + i as f64 * 0.37),
        gpu("1", 50.0 + i as f64 * 1.13),
        Point::new("model_usage")
            .tag("site", "lab")
            .tag("host", host)
            .tag("model", "llama-3-8b")
            .tag("server", "vllm")
            .int("requests", 3 + i % 5)
            .int("output_tokens", 100 + i)
            .float("interval_s", 1.0)
            .at(ts),
    ]
}

/// The encoded lines of points, as the server should receive them.
pub fn lines(points: &[Point]) -> Vec<String> {
    points
        .iter()
        .map(|p| p.to_line().expect("encode"))
        .collect()
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
