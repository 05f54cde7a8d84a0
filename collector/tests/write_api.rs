//! The write API as writers see it: service tests on `app(state)` with `oneshot`, and
//! HTTP-level cases on a real server bound to 127.0.0.1:0 (plain and TLS).

use std::io::{Read as _, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use inferwatt_collector::api::{app, AppState};
use inferwatt_collector::config::{Config, TlsConfig};
use inferwatt_collector::ingest::auth::{generate_token, hash_token};
use inferwatt_collector::server::{serve_on, tls_acceptor};
use inferwatt_collector::store::Store;
use tower::ServiceExt as _;

const T0: i64 = 1_800_000_000_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    /// Bound to site `s1`, host `h1`.
    token: String,
}

fn fixture_with(config: Config) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("c.db")).expect("store"));
    let token = generate_token().expect("token");
    store
        .add_token(&hash_token(&token), "s1", "h1", 0)
        .expect("add token");
    let config = Config {
        db_path: dir.path().join("c.db"),
        raw_retention_days: 0,
        ..config
    };
    Fixture {
        state: AppState::new(config, store),
        token,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_with(Config::default())
}

fn lines(host: &str, n: usize, t: i64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "model_energy,site=s1,host={host},gpu_uuid=GPU-0,model=llama,server=vllm active_j={}.5,idle_j=1,host_j=0.5,interval_s=1,method=\"sm_util\" {}\n",
                i,
                t + i as i64
            )
        })
        .collect()
}

fn write_req(token: &str) -> axum::http::request::Builder {
    Request::post("/api/v2/write?org=o&bucket=b&precision=ns")
        .header(header::AUTHORIZATION, format!("Token {token}"))
}

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, String) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(f: &Fixture, body: String) -> (StatusCode, String) {
    let req = write_req(&f.token).body(Body::from(body)).expect("request");
    send(&f.state, req).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compress");
    e.finish().expect("compress")
}

#[tokio::test]
async fn good_batch_is_204_and_stored() {
    let f = fixture();
    let (status, body) = post(&f, lines("h1", 10, T0)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(f.state.store.count_points().expect("count"), 10);
    let rows = f
        .state
        .store
        .sum_model_energy(T0 - 3_600_000_000_000, T0 + 100)
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].active_j,
        (0..10).map(|i| i as f64 + 0.5).sum::<f64>()
    );
}

#[tokio::test]
async fn gzip_body_is_accepted_and_unknown_encoding_refused() {
    let f = fixture();
    let req = write_req(&f.token)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(lines("h1", 5, T0).as_bytes())))
        .expect("request");
    let (status, body) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(f.state.store.count_points().expect("count"), 5);
    let req = write_req(&f.token)
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(lines("h1", 5, T0 + 100)))
        .expect("request");
    let (status, body) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(body.contains("'br'"), "{body}");
}

#[tokio::test]
async fn malformed_line_is_400_naming_the_line_and_stores_nothing() {
    let f = fixture();
    let mut body = lines("h1", 3, T0);
    body.push_str("model_energy,site=s1,host=h1 active_j=oops 5\n");
    body.push_str(&lines("h1", 2, T0 + 10));
    let (status, text) = post(&f, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(json["code"], "invalid");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 4:")),
        "{text}"
    );
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn wrong_field_type_of_a_wire_measurement_names_its_line() {
    let f = fixture();
    let mut body = String::from("# comment\n\n");
    body.push_str(&lines("h1", 1, T0));
    body.push_str("gpu,site=s1,host=h1,gpu_uuid=G energy_j=\"a lot\",interval_s=1 7\n");
    let (status, text) = post(&f, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("line 4: field 'energy_j'"), "{text}");
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let f = fixture();
    let req = Request::post("/api/v2/write")
        .body(Body::from(lines("h1", 1, T0)))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::UNAUTHORIZED);
    let req = write_req("iw_not-a-token")
        .body(Body::from(lines("h1", 1, T0)))
        .expect("request");
    let (status, text) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("\"code\":\"unauthorized\""), "{text}");
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn other_hosts_series_is_403_and_stores_nothing() {
    let f = fixture();
    let mut body = lines("h1", 3, T0);
    body.push_str(&lines("h2", 1, T0 + 10));
    let (status, text) = post(&f, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("line 4") && text.contains("'h2'"), "{text}");
    assert_eq!(f.state.store.count_points().expect("count"), 0);
    // A point without the site/host tags is refused too.
    let (status, _) = post(&f, format!("model_usage,host=h1 requests=1i {T0}\n")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn site_wide_token_writes_every_host_of_its_site() {
    let f = fixture();
    let token = generate_token().expect("token");
    f.state
        .store
        .add_token(&hash_token(&token), "s1", "*", 0)
        .expect("add");
    let mut body = lines("h1", 1, T0);
    body.push_str(&lines("h9", 1, T0));
    let req = write_req(&token).body(Body::from(body)).expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::NO_CONTENT);
    let other_site = "model_usage,site=s2,host=h1 requests=1i 5\n";
    let req = write_req(&token)
        .body(Body::from(other_site))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn same_batch_twice_is_stored_once() {
    let f = fixture();
    let body = lines("h1", 20, T0);
    assert_eq!(post(&f, body.clone()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(post(&f, body).await.0, StatusCode::NO_CONTENT);
    assert_eq!(f.state.store.count_points().expect("count"), 20);
    let rows = f
        .state
        .store
        .sum_model_energy(T0 - 3_600_000_000_000, T0 + 100)
        .expect("query");
    assert_eq!(rows[0].points, 20);
    let req = Request::get("/metrics")
        .body(Body::empty())
        .expect("request");
    let (_, metrics) = send(&f.state, req).await;
    assert!(
        metrics.contains("inferwatt_collector_points_written_total 20\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("inferwatt_collector_points_duplicate_total 20\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "inferwatt_collector_http_requests_total{path=\"/api/v2/write\",status=\"204\"} 2"
        ),
        "{metrics}"
    );
}

/// A body that yields `total` bytes in 1 MiB chunks and counts what was pulled.
struct Counted {
    pulled: Arc<AtomicU64>,
    total: u64,
    chunk: Bytes,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let done = self.pulled.load(Ordering::SeqCst);
        if done >= self.total {
            return Poll::Ready(None);
        }
        self.pulled
            .fetch_add(self.chunk.len() as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

#[tokio::test]
async fn hundred_megabyte_body_is_413_without_reading_it_all() {
    let f = fixture();
    let pulled = Arc::new(AtomicU64::new(0));
    let line = "model_usage,site=s1,host=h1 requests=1i 1\n";
    let chunk = Bytes::from(line.repeat((1 << 20) / line.len()));
    let body = Counted {
        pulled: pulled.clone(),
        total: 100 << 20,
        chunk,
    };
    let req = write_req(&f.token).body(Body::new(body)).expect("request");
    let (status, text) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("max_body_bytes"), "{text}");
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read <= (32 << 20) + (1 << 20),
        "read {read} bytes of 100 MiB"
    );
    // Declared too large: refused before reading anything.
    let pulled = Arc::new(AtomicU64::new(0));
    let body = Counted {
        pulled: pulled.clone(),
        total: 100 << 20,
        chunk: Bytes::from_static(b"x"),
    };
    let req = write_req(&f.token)
        .header(header::CONTENT_LENGTH, (100u64 << 20).to_string())
        .body(Body::new(body))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn gzip_bomb_is_413() {
    let f = fixture();
    let line = "model_usage,site=s1,host=h1 requests=1i 1\n";
    let bomb = gzip(line.repeat((64 << 20) / line.len()).as_bytes());
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let req = write_req(&f.token)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb))
        .expect("request");
    let (status, text) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("decompresses"), "{text}");
    assert_eq!(f.state.store.count_points().expect("count"), 0);
}

#[tokio::test]
async fn auth_none_accepts_tagged_points_without_a_token() {
    let f = fixture_with(Config {
        auth: inferwatt_collector::config::AuthMode::None,
        ..Config::default()
    });
    let req = Request::post("/api/v2/write?precision=s")
        .body(Body::from(
            "model_usage,site=s1,host=h1 requests=3i,interval_s=1 1800000000\n",
        ))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::NO_CONTENT);
    let rows = f
        .state
        .store
        .sum_model_usage(T0 - 3_600_000_000_000, T0)
        .expect("query");
    assert_eq!(rows[0].requests, 3);
    // Every point still needs its site/host tags.
    let req = Request::post("/api/v2/write")
        .body(Body::from("model_usage requests=3i 1\n"))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn restart_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    let token = generate_token().expect("token");
    {
        let store = Arc::new(Store::open(&path).expect("store"));
        store
            .add_token(&hash_token(&token), "s1", "h1", 0)
            .expect("add");
        let state = AppState::new(Config::default(), store);
        let req = write_req(&token)
            .body(Body::from(lines("h1", 7, T0)))
            .expect("request");
        assert_eq!(send(&state, req).await.0, StatusCode::NO_CONTENT);
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.count_points().expect("count"), 7);
    assert!(store
        .find_token(&hash_token(&token))
        .expect("find")
        .is_some());
}

async fn start(
    state: AppState,
    tls: Option<TlsConfig>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let acceptor = tls.as_ref().map(|t| tls_acceptor(t).expect("tls config"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(tcp, state, acceptor, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn real_server_ingests_gzip_and_refuses_a_huge_declared_body() {
    let f = fixture();
    let (addr, _stop) = start(f.state.clone(), None).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v2/write?org=o&bucket=b&precision=ns");
    let resp = client
        .post(&url)
        .header("Authorization", format!("Token {}", f.token))
        .header("Content-Encoding", "gzip")
        .body(gzip(lines("h1", 50, T0).as_bytes()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(f.state.store.count_points().expect("count"), 50);
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status().as_u16(), 200);

    // 100 MiB declared: the answer comes after a few bytes, not after 100 MiB.
    let token = f.token.clone();
    let status_line = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        write!(
            s,
            "POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\nContent-Length: {}\r\n\r\n",
            100u64 << 20
        )
        .expect("write");
        let _ = s.write_all(&[b'a'; 4096]);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .expect("join");
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
}

#[tokio::test]
async fn tls_server_accepts_writes() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let f = fixture();
    let tls = TlsConfig {
        cert_file: fixtures.join("cert.pem"),
        key_file: fixtures.join("key.pem"),
    };
    let (addr, _stop) = start(f.state.clone(), Some(tls)).await;
    let ca = std::fs::read(fixtures.join("cert.pem")).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let resp = client
        .post(format!(
            "https://localhost:{}/api/v2/write?bucket=b",
            addr.port()
        ))
        .header("Authorization", format!("Token {}", f.token))
        .body(lines("h1", 3, T0))
        .send()
        .await
        .expect("TLS request");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(f.state.store.count_points().expect("count"), 3);
}

#[tokio::test]
async fn resent_point_with_another_value_is_ignored_and_counted() {
    let f = fixture();
    assert_eq!(post(&f, lines("h1", 1, T0)).await.0, StatusCode::NO_CONTENT);
    let changed = lines("h1", 1, T0).replace("active_j=0.5", "active_j=99");
    assert_eq!(post(&f, changed).await.0, StatusCode::NO_CONTENT);
    let rows = f
        .state
        .store
        .sum_model_energy(T0 - 3_600_000_000_000, T0)
        .expect("query");
    assert_eq!(rows[0].active_j, 0.5, "the first value wins");
    let req = Request::get("/metrics")
        .body(Body::empty())
        .expect("request");
    let (_, metrics) = send(&f.state, req).await;
    assert!(
        metrics.contains("inferwatt_collector_points_conflicting_total 1\n"),
        "{metrics}"
    );
}

/// Last year's data over the write API with the default config (35 days of raw
/// retention): stored and in the rollups, never refused for its age; sent again, counted
/// as duplicates, not twice.
#[tokio::test]
async fn old_data_is_stored_and_deduplicated() {
    let f = fixture();
    let old = 1_717_200_000_000_000_000; // 2024-06-01T00:00:00Z
    let (status, body) = post(&f, lines("h1", 10, old)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = post(&f, lines("h1", 10, old)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(f.state.store.count_points().expect("count"), 10);
    let rows = f
        .state
        .store
        .sum_model_energy(old - 3_600_000_000_000, old + 3_600_000_000_000)
        .expect("query");
    let active: f64 = rows.iter().map(|r| r.active_j).sum();
    assert!(
        (active - (0..10).map(|i| i as f64 + 0.5).sum::<f64>()).abs() < 1e-9,
        "{active}"
    );
}
