//! Hostile and absurd input (issue: nothing a client sends can stop or corrupt the
//! accounting): each case sends exactly that input over the write API (or the report and
//! series routes), asserts the status and that the message names the line, field or
//! limit, that nothing of the request was stored, and that a good write afterwards is
//! 204 and the store still answers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use inferwatt_collector::api::{app, AppState};
use inferwatt_collector::config::Config;
use inferwatt_collector::ingest::auth::{generate_token, hash_token};
use inferwatt_collector::store::Store;
use proptest::prelude::*;
use tower::ServiceExt as _;

const T0: i64 = 1_800_000_000_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    token: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("c.db")).expect("store"));
    let token = generate_token().expect("token");
    store
        .add_token(&hash_token(&token), "s1", "h1", 0)
        .expect("add token");
    let config = Config {
        db_path: dir.path().join("c.db"),
        ..Config::default()
    };
    Fixture {
        state: AppState::new(config, store),
        token,
        _dir: dir,
    }
}

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, String) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn write(f: &Fixture, precision: &str, body: String) -> (StatusCode, String) {
    let req = Request::post(format!("/api/v2/write?precision={precision}"))
        .header(header::AUTHORIZATION, format!("Token {}", f.token))
        .body(Body::from(body))
        .expect("request");
    send(&f.state, req).await
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, String) {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    send(&f.state, req).await
}

/// Every energy total of a report JSON is a finite number (JSON cannot hold another).
fn assert_energy_finite(report: &str) {
    let r: serde_json::Value = serde_json::from_str(report).expect("report JSON");
    for k in ["gpu_active", "gpu_idle", "host", "it", "facility"] {
        let v = &r["totals"]["energy_kwh"][k];
        assert!(
            v.as_f64().is_some_and(f64::is_finite),
            "{k}: {v} in {report}"
        );
    }
}

const GOOD: &str = "model_energy,site=s1,host=h1,gpu_uuid=GPU-0,model=m,server=vllm active_j=10,idle_j=1,host_j=0,interval_s=1";

/// The refusal is a 400 naming `needle`, nothing is stored, and a good write then works.
async fn refused(f: &Fixture, precision: &str, body: String, needle: &str) {
    let before = f.state.store.count_points().expect("count");
    let (status, msg) = write(f, precision, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{needle}: {msg}");
    assert!(msg.contains(needle), "{needle}: {msg}");
    assert!(msg.contains("\"code\":\"invalid\""), "{msg}");
    assert_eq!(
        f.state.store.count_points().expect("count"),
        before,
        "{needle}: something was stored"
    );
    let ts = T0 + before as i64 + 1;
    let (status, msg) = write(f, "ns", format!("{GOOD} {ts}\n")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "after {needle}: {msg}");
    let (status, _) = get(f, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "after {needle}");
}

#[tokio::test]
async fn timestamps_outside_the_representable_period_are_400_naming_the_line() {
    let f = fixture();
    refused(
        &f,
        "ns",
        format!("{GOOD} {T0}\n{GOOD} -9223372036854775808\n"),
        "line 2",
    )
    .await;
    refused(&f, "ns", format!("{GOOD} -1\n"), "timestamp").await;
    // Before 1677 at precision=s overflows nanoseconds: the decoder says so.
    refused(&f, "s", format!("{GOOD} -9300000000\n"), "line 1").await;
    refused(&f, "s", format!("{GOOD} 7258118400\n"), "2200").await;
}

#[tokio::test]
async fn absurd_values_are_400_naming_the_field_and_its_bound() {
    let f = fixture();
    let gpu = |fields: &str| {
        format!("gpu,site=s1,host=h1,gpu_uuid=GPU-0,gpu_index=0,gpu_name=H100 {fields} {T0}\n")
    };
    let me = |fields: &str| {
        format!("model_energy,site=s1,host=h1,gpu_uuid=GPU-0,model=m,server=vllm {fields} {T0}\n")
    };
    for (body, needle) in [
        (me("active_j=1.7e308,interval_s=1"), "'active_j'"),
        (gpu("energy_j=-500,interval_s=1"), "'energy_j'"),
        (me("active_j=-300,interval_s=1"), "'active_j'"),
        (gpu("energy_j=1,interval_s=-1"), "'interval_s'"),
        (gpu("energy_j=1,interval_s=0"), "'interval_s'"),
        (gpu("energy_j=1e30,interval_s=1"), "10 kW"),
        (
            format!("site,site=s1,host=h1,country=FR,zone=FR pue=-5,interval_s=60 {T0}\n"),
            "'pue'",
        ),
        (
            format!(
                "model_usage,site=s1,host=h1,model=m,server=v requests=-5i,interval_s=1 {T0}\n"
            ),
            "'requests'",
        ),
        (gpu("energy_j=1,energy_j=1000,interval_s=1"), "twice"),
    ] {
        refused(&f, "ns", body, needle).await;
    }
    // Totals stay finite whatever was tried (the agent-less site has no zone: its
    // emissions are null with a warning, its energy is counted).
    let (status, report) = get(&f, "/api/v1/report").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_energy_finite(&report);
}

#[tokio::test]
async fn oversized_points_are_400_naming_the_limit() {
    let f = fixture();
    let fields: String = (0..300).map(|i| format!("f{i}=1,")).collect();
    refused(
        &f,
        "ns",
        format!("other,site=s1,host=h1 {fields}interval_s=1 {T0}\n"),
        "more than 256 fields",
    )
    .await;
    let tag = "x".repeat(10 * 1024 * 1024);
    refused(
        &f,
        "ns",
        format!("model_energy,site=s1,host=h1,model={tag} active_j=1,interval_s=1 {T0}\n"),
        "more than the limit of 1024",
    )
    .await;
}

#[tokio::test]
async fn line_numbers_count_newlines_inside_quoted_strings() {
    let f = fixture();
    let body = format!(
        "other,site=s1,host=h1 note=\"two\nlines\" {T0}\n{GOOD},active_j=5 {}\n",
        T0 + 1
    );
    refused(&f, "ns", body, "line 3").await;
}

#[tokio::test]
async fn writes_over_the_concurrency_limit_are_429_with_retry_after() {
    let f = fixture();
    let held: Vec<_> = (0..f.state.config.max_concurrent_writes)
        .map(|_| {
            f.state
                .write_permits
                .clone()
                .try_acquire_owned()
                .expect("permit")
        })
        .collect();
    let req = Request::post("/api/v2/write")
        .header(header::AUTHORIZATION, format!("Token {}", f.token))
        .body(Body::from(format!("{GOOD} {T0}\n")))
        .expect("request");
    let resp = app(f.state.clone()).oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    drop(held);
    let (status, msg) = write(&f, "ns", format!("{GOOD} {T0}\n")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");
}

#[tokio::test]
async fn report_and_series_bounds_far_outside_the_data_are_400_not_a_panic() {
    let f = fixture();
    let (status, _) = write(&f, "ns", format!("{GOOD} {T0}\n")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for uri in [
        "/api/v1/report?from=2262-04-12T00:00:00Z",
        "/api/v1/report?from=1600-01-01T00:00:00Z",
        "/api/v1/report?to=99999999999999999999",
        "/api/v1/series?step=9223372036854774000",
    ] {
        let (status, msg) = get(&f, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {msg}");
    }
    let (status, _) = get(&f, "/api/v1/report").await;
    assert_eq!(status, StatusCode::OK);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bodies (valid lines, mutated bytes, extreme numbers) never panic, never
    /// store a non-finite value, and leave the store answering.
    #[test]
    fn random_bodies_never_panic_nor_poison_totals(
        lines in proptest::collection::vec(
            (0usize..6, any::<f64>(), any::<i64>(), proptest::collection::vec(any::<u8>(), 0..6)),
            1..8,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let f = fixture();
            let mut body = String::new();
            for (kind, x, ts, noise) in &lines {
                let line = match kind {
                    0 => format!("{GOOD} {ts}"),
                    1 => format!("gpu,site=s1,host=h1,gpu_uuid=G energy_j={x:e},interval_s=1 {}", T0),
                    2 => format!("model_energy,site=s1,host=h1,gpu_uuid=G,model=m active_j={x:e},interval_s={x:e} {}", T0 + 1),
                    3 => format!("site,site=s1,host=h1 pue={x:e},interval_s=0 {ts}"),
                    4 => format!("{GOOD}{} {}", String::from_utf8_lossy(noise), T0 + 2),
                    _ => String::from_utf8_lossy(noise).into_owned(),
                };
                body.push_str(&line);
                body.push('\n');
            }
            let (status, msg) = write(&f, "ns", body).await;
            prop_assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::BAD_REQUEST,
                "{status}: {msg}"
            );
            let (status, _) = get(&f, "/healthz").await;
            prop_assert_eq!(status, StatusCode::OK);
            let (status, report) = get(&f, "/api/v1/report").await;
            prop_assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{status}: {report}");
            if status == StatusCode::OK {
                assert_energy_finite(&report);
            }
            Ok(())
        })?;
    }
}
