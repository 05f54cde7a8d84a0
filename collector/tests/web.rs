//! The web page's routes on `app(state).oneshot` (no socket): `GET /` and its embedded
//! assets (self-only CSP, nothing loaded from elsewhere), and `GET /api/v1/series` —
//! values per hour equal to hand arithmetic, buckets that sum to the report's figures over
//! the same period (edge hours included), wider steps, errors naming the value, 404 on an
//! empty database, and `report_auth`.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use inferwatt_collector::api::{app, AppState};
use inferwatt_collector::config::{Config, ReportAuth};
use inferwatt_collector::ingest::auth::hash_token;
use inferwatt_collector::store::Store;
use inferwatt_core::schema::{
    EnergySource, GpuInterval, ModelEnergy, Origin, SiteInfo, SplitMethod,
};
use serde_json::Value;
use tower::ServiceExt as _;

/// An hour boundary (2027-01-15T08:00:00Z).
const T0: i64 = 1_800_000_000_000_000_000;
const T0_S: i64 = 1_800_000_000;
const STEP_S: i64 = 600;
const PUE: f64 = 1.25;
const WUE: f64 = 0.4;
const INTENSITY: f64 = 200.0;
const EWIF: f64 = 2.5;
const CONFIG: &str = "[factors.sites.s1]\nintensity_g_per_kwh = 200.0\newif_l_per_kwh = 2.5\n";

/// Per 600-s interval in hour `h`: model `a` (active, idle, host) J, and model `b`.
fn joules(model: &str, h: i64) -> (f64, f64, f64) {
    match model {
        "a" => (36_000.0 * (h + 1) as f64, 7_200.0, 3_600.0),
        _ => (18_000.0, 0.0, 0.0),
    }
}

/// Four hours of 600-s intervals from T0 on one GPU of site `s1` (model `b` only in the
/// first two hours), after a site point (PUE, WUE).
fn fill(store: &Store) {
    let o = Origin {
        site: "s1".into(),
        host: "h1".into(),
    };
    let mut points = vec![SiteInfo {
        country: "DEU".into(),
        zone: "DE".into(),
        pue: Some(PUE),
        wue_l_per_kwh: Some(WUE),
        idle_policy: None,
        interval_s: 60.0,
        end_ns: T0 + 1,
    }
    .to_point(&o)];
    for k in 1..=24 {
        let end_ns = T0 + k * STEP_S * 1_000_000_000;
        let h = (k - 1) / 6;
        let mut gpu_j = 0.0;
        for model in ["a", "b"] {
            if model == "b" && h >= 2 {
                continue;
            }
            let (active, idle, host) = joules(model, h);
            gpu_j += active + idle;
            points.push(
                ModelEnergy {
                    gpu_uuid: "GPU-1".into(),
                    model: model.into(),
                    server: "vllm".into(),
                    active_j: active,
                    idle_j: idle,
                    host_j: host,
                    interval_s: STEP_S as f64,
                    method: SplitMethod::SmUtil,
                    end_ns,
                    pod: None,
                }
                .to_point(&o),
            );
        }
        points.push(
            GpuInterval {
                gpu_uuid: "GPU-1".into(),
                gpu_index: 0,
                gpu_name: "NVIDIA H100 80GB HBM3".into(),
                energy_j: gpu_j,
                power_w: None,
                util_pct: None,
                mem_used_bytes: None,
                energy_counter_mj: None,
                interval_s: STEP_S as f64,
                source: EnergySource::Counter,
                clock_step_s: None,
                end_ns,
            }
            .to_point(&o),
        );
    }
    store.write(&points).expect("write");
}

/// Hand arithmetic: (facility kWh, location kg, water L) of `model` in hour `h`.
fn hour(model: &str, h: i64) -> [f64; 3] {
    if model == "b" && h >= 2 {
        return [0.0; 3];
    }
    let (a, i, ho) = joules(model, h);
    let it = 6.0 * (a + i + ho) / 3.6e6;
    let facility = it * PUE;
    [
        facility,
        facility * INTENSITY / 1000.0,
        it * WUE + facility * EWIF,
    ]
}

fn state(config: Config) -> AppState {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    AppState::new(config, Arc::new(store))
}

fn config() -> Config {
    Config::from_toml(CONFIG, Path::new("collector.toml")).expect("config")
}

async fn get(state: AppState, uri: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Token {t}"));
    }
    let resp = app(state)
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, String::from_utf8_lossy(&body).into_owned())
}

async fn json(state: AppState, uri: &str) -> Value {
    let (status, ct, body) = get(state, uri, None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert_eq!(ct, "application/json", "{uri}");
    serde_json::from_str(&body).expect("json")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

fn values(line: &Value, metric: &str) -> Vec<f64> {
    line[metric]
        .as_array()
        .unwrap_or_else(|| panic!("{metric} array in {line}"))
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

fn line<'a>(series: &'a Value, key: &str) -> &'a Value {
    series["series"]
        .as_array()
        .expect("series array")
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("no line '{key}' in {series}"))
}

#[tokio::test]
async fn page_and_assets_are_served_self_contained() {
    let s = state(config());
    let resp = app(s.clone())
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .expect("a CSP header")
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(
        resp.headers()
            .get(header::REFERRER_POLICY)
            .map(|v| v.as_bytes()),
        Some(&b"no-referrer"[..]),
        "the page URL may hold a token: no referrer"
    );
    let (status, ct, html) = get(s.clone(), "/", None).await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "text/html; charset=utf-8")
    );
    for needle in [
        "src=\"/assets/app.js\"",
        "href=\"/assets/style.css\"",
        "id=\"errors\"",
        "id=\"models-table\"",
        "<noscript>",
        "/api/v1/report?format=html",
    ] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    let (status, ct, js) = get(s.clone(), "/assets/app.js", None).await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "text/javascript; charset=utf-8")
    );
    assert!(js.contains("/api/v1/series"));
    let (status, ct, css) = get(s.clone(), "/assets/style.css", None).await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "text/css; charset=utf-8")
    );
    // Nothing is fetched from another origin (no CDN): the only absolute URL any asset
    // holds is the SVG namespace.
    for (name, text) in [("index.html", &html), ("app.js", &js), ("style.css", &css)] {
        let external = text
            .replace("http://www.w3.org/2000/svg", "")
            .matches("://")
            .count();
        assert_eq!(external, 0, "{name} refers to another origin");
    }
    let (status, _, body) = get(s, "/assets/chart.min.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("'chart.min.js'"), "{body}");
}

#[tokio::test]
async fn series_per_hour_equal_hand_arithmetic() {
    let s = state(config());
    let from = T0_S;
    let to = T0_S + 4 * 3600;
    let v = json(
        s.clone(),
        &format!("/api/v1/series?from={from}&to={to}&group=model"),
    )
    .await;
    assert_eq!(v["schema"], "inferwatt.series/v1");
    assert_eq!(v["step_s"], 3600);
    assert_eq!(v["group"], "model");
    let starts: Vec<i64> = v["bucket_starts"]
        .as_array()
        .expect("starts")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect();
    assert_eq!(starts, (0..4).map(|h| T0_S + h * 3600).collect::<Vec<_>>());
    // Most energy first; reserved models without energy are left out.
    let keys: Vec<&str> = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|l| l["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["a", "b"]);
    for model in ["a", "b"] {
        let l = line(&v, model);
        for (m, metric) in ["energy_kwh", "emissions_kgco2e", "water_l"]
            .iter()
            .enumerate()
        {
            let got = values(l, metric);
            let want: Vec<f64> = (0..4).map(|h| hour(model, h)[m]).collect();
            assert!(
                got.iter().zip(&want).all(|(g, w)| close(*g, *w)) && got.len() == 4,
                "{model} {metric}: {got:?}, want {want:?}"
            );
        }
    }

    // Per site: one line, the sum of the models.
    let v = json(
        s.clone(),
        &format!("/api/v1/series?from={from}&to={to}&group=site"),
    )
    .await;
    let got = values(line(&v, "s1"), "energy_kwh");
    let want: Vec<f64> = (0..4).map(|h| hour("a", h)[0] + hour("b", h)[0]).collect();
    assert!(
        got.iter().zip(&want).all(|(g, w)| close(*g, *w)),
        "{got:?} vs {want:?}"
    );

    // Two-hour buckets add two hours each.
    let v = json(
        s,
        &format!("/api/v1/series?from={from}&to={to}&step=7200&group=model"),
    )
    .await;
    let got = values(line(&v, "a"), "water_l");
    let want = [
        hour("a", 0)[2] + hour("a", 1)[2],
        hour("a", 2)[2] + hour("a", 3)[2],
    ];
    assert!(
        got.len() == 2 && got.iter().zip(&want).all(|(g, w)| close(*g, *w)),
        "{got:?} vs {want:?}"
    );
}

#[tokio::test]
async fn series_sum_to_the_report_over_the_same_period() {
    let s = state(config());
    // Edges inside hours: raw rows of the partial first and last hours count too.
    let from = "2027-01-15T08:30:00Z";
    let to = "2027-01-15T11:20:00Z";
    let report = json(s.clone(), &format!("/api/v1/report?from={from}&to={to}")).await;
    for (group, list, key_name) in [("model", "by_model", "model"), ("site", "by_site", "site")] {
        let v = json(
            s.clone(),
            &format!("/api/v1/series?from={from}&to={to}&group={group}"),
        )
        .await;
        assert_eq!(v["period"]["from"], report["period"]["from"]);
        assert_eq!(
            v["bucket_starts"][0], T0_S,
            "first bucket holds the edge hour"
        );
        for row in report[list].as_array().expect("rows") {
            let key = row[key_name].as_str().expect("key");
            let facility = row["energy_kwh"]["facility"].as_f64().expect("kWh");
            if facility == 0.0 {
                continue;
            }
            let l = line(&v, key);
            let sum = |m: &str| values(l, m).iter().sum::<f64>();
            let water = row["water_l"]["onsite"].as_f64().expect("onsite")
                + row["water_l"]["offsite"].as_f64().expect("offsite");
            let location = row["emissions_kgco2e"]["location"].as_f64().expect("kg");
            assert!(close(sum("energy_kwh"), facility), "{group} {key} energy");
            assert!(
                close(sum("emissions_kgco2e"), location),
                "{group} {key} emissions"
            );
            assert!(close(sum("water_l"), water), "{group} {key} water");
        }
    }
    // Without bounds: the stored data's edges, as the report.
    let all = json(s.clone(), "/api/v1/series").await;
    let report = json(s, "/api/v1/report").await;
    assert_eq!(all["period"], report["period"]);
}

#[tokio::test]
async fn series_errors_name_the_value_and_the_fix() {
    let s = state(config());
    for (query, needle) in [
        ("step=90", "'90'"),
        ("step=hourly", "'hourly'"),
        ("group=country", "'country'"),
        ("from=soon", "'soon'"),
        ("from=1800003600&to=1800000000", "'to' must be after 'from'"),
    ] {
        let (status, ct, body) = get(s.clone(), &format!("/api/v1/series?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(ct, "application/json");
        assert!(body.contains(needle), "{query}: {body}");
    }
    let (status, _, body) = get(s, "/api/v1/series?from=0&to=1800000000&step=3600", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("larger step"), "{body}");

    let empty = AppState::new(config(), Arc::new(Store::open_in_memory().expect("store")));
    let (status, _, body) = get(empty, "/api/v1/series", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("ingest data first"), "{body}");
}

#[tokio::test]
async fn series_needs_a_token_when_reports_do() {
    let store = Store::open_in_memory().expect("store");
    fill(&store);
    let token = "iw_web_route_test_token";
    store
        .add_token(&hash_token(token), "s1", "h1", 0)
        .expect("token");
    let s = AppState::new(
        Config {
            report_auth: Some(ReportAuth::Token),
            ..config()
        },
        Arc::new(store),
    );
    let (status, _, body) = get(s.clone(), "/api/v1/series", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = get(s.clone(), "/api/v1/series", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(s.clone(), "/api/v1/series", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The page itself is public: it carries no data and shows the 401 it gets.
    let (status, _, _) = get(s, "/", None).await;
    assert_eq!(status, StatusCode::OK);
}
