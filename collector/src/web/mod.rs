//! The web page: `GET /` (charts of energy, emissions and water over time per model and
//! per site, the indicator table, data quality and the factors with their sources),
//! `GET /assets/{file}` (its script and stylesheet, embedded in the binary: no CDN, no
//! build step) and `GET /api/v1/series` (the time series the charts draw, see
//! [`series`]). The page reads `GET /api/v1/report` for everything else.
//!
//! Reading needs what `GET /api/v1/report` needs ([`Config::report_needs_token`]): the
//! page sends `Authorization: Token …` from its own `?token=` query parameter and shows a
//! 401 as a message saying so. Without JavaScript the page links to the HTML report.
//!
//! [`Config::report_needs_token`]: crate::config::Config::report_needs_token

pub mod series;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::reporting;
use series::{SeriesError, SeriesGroup, SeriesRequest};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Everything the page loads comes from this server; scripts only from `/assets/`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes, to merge into [`crate::api::app`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/v1/series", get(series_handler))
}

/// The embedded asset named `file` and its content type.
pub fn asset_body(file: &str) -> Option<(&'static str, &'static str)> {
    match file {
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "style.css" => Some(("text/css; charset=utf-8", STYLE_CSS)),
        _ => None,
    }
}

/// Headers every page answer carries: the CSP, no sniffing, and no referrer (the page's
/// URL may hold a `?token=`).
fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// `GET /`: the page.
async fn index() -> Response {
    (page_headers("text/html; charset=utf-8"), INDEX_HTML).into_response()
}

/// `GET /assets/{file}`: `app.js`, `style.css`; 404 otherwise.
async fn asset(Path(file): Path<String>) -> Response {
    match asset_body(&file) {
        Some((ct, body)) => (page_headers(ct), body).into_response(),
        None => ApiError::NotFound(format!(
            "no asset '{file}'; the page's assets are app.js and style.css"
        ))
        .into_response(),
    }
}

fn series_request(q: &HashMap<String, String>) -> Result<SeriesRequest, SeriesError> {
    let time = |key: &'static str| -> Result<Option<i64>, SeriesError> {
        Ok(q.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| reporting::parse_time(v, key))
            .transpose()?)
    };
    Ok(SeriesRequest {
        from_ns: time("from")?,
        to_ns: time("to")?,
        step_s: series::parse_step(q.get("step").map(String::as_str).unwrap_or(""))?,
        group: SeriesGroup::parse(q.get("group").map(String::as_str).unwrap_or(""))?,
    })
}

/// `GET /api/v1/series?from=&to=&step=&group=model|site`: [`series::Series`] as JSON.
/// `from`/`to` as the report takes them; `step` in seconds, a multiple of 3600 (default
/// 3600). Needs a token when reports do.
async fn series_handler(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let req = match series_request(&query) {
        Ok(r) => r,
        Err(e) => return ApiError::Invalid(e.to_string()).into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let s = state.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<series::Series, ApiError> {
        s.authorize_read(authorization.as_deref())?;
        let factors = s.factors_choice();
        series::build_series(s.reports(), &req, &factors).map_err(|e| match e {
            SeriesError::Reporting(r) => ApiError::from(r),
            e => ApiError::Invalid(e.to_string()),
        })
    })
    .await;
    match result {
        Ok(Ok(series)) => axum::Json(series).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::Internal(format!("series task failed: {e}")).into_response(),
    }
}
