//! The router: [`app`] (`POST /api/v2/write`, `GET /api/v1/report`, the web page's
//! routes, `GET /healthz`, `GET /metrics`), with one middleware that counts every answer
//! by status and logs each error once. The shared [`AppState`] and the one error type
//! live in [`crate::http`], below every handler.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::HeaderMap;

pub use crate::http::error::{ApiError, ErrorMessage};
pub use crate::http::state::AppState;

use crate::ingest;
use crate::report::Format;
use crate::reporting::{self, ReportRequest, ReportingError};

/// The collector's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/write", post(ingest::write))
        .route("/api/v1/report", get(report))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts the answer by path and status; logs an error answer once, with its message.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    let status = resp.status();
    state.metrics.record_request(&path, status.as_u16());
    if let Some(ErrorMessage(msg)) = resp.extensions().get::<ErrorMessage>() {
        if status.is_server_error() {
            tracing::error!(%path, status = status.as_u16(), error = %msg, "request failed");
        } else {
            tracing::info!(%path, status = status.as_u16(), error = %msg, "request refused");
        }
    }
    resp
}

/// `GET /healthz`: 200 when the database answers.
async fn healthz(State(state): State<AppState>) -> Response {
    let s = state.clone();
    let check = move || match &s.victoria {
        Some(v) => v.check(),
        None => s.store.check(),
    };
    match tokio::task::spawn_blocking(check).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `GET /metrics`: the collector's own counters.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The request of `GET /api/v1/report`'s query string: `from`, `to` (RFC 3339 UTC or Unix
/// seconds; default: the stored data's edges), `group`, `format` (json default, csv,
/// md/markdown, html) and `min_count`.
fn report_query(q: &HashMap<String, String>) -> Result<(ReportRequest, Format), ReportingError> {
    let time = |key: &'static str, name: &str| {
        q.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| reporting::parse_time(v, key))
            .transpose()
    };
    let req = ReportRequest {
        from_ns: time("from", "from")?,
        to_ns: time("to", "to")?,
        group: reporting::parse_group(q.get("group").map(String::as_str).unwrap_or(""))?,
        min_count: match q.get("min_count").filter(|v| !v.is_empty()) {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| ReportingError::BadMinCount(v.clone()))?,
        },
    };
    let format = match q.get("format").filter(|v| !v.is_empty()) {
        None => Format::Json,
        Some(f) => f.parse::<Format>()?,
    };
    Ok((req, format))
}

/// `GET /api/v1/report`: the report the CLI's `report` prints for the same period, group
/// and format (same bytes). Needs a token when [`Config::report_needs_token`].
async fn report(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (req, format) = match report_query(&query) {
        Ok(r) => r,
        Err(e) => return ApiError::Invalid(e.to_string()).into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let s = state.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        s.authorize_read(authorization.as_deref())?;
        let factors = s.factors_choice();
        Ok(reporting::render_report(
            s.reports(),
            &req,
            &factors,
            format,
        )?)
    })
    .await;
    match result {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, reporting::content_type(format))],
            body,
        )
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::Internal(format!("report task failed: {e}")).into_response(),
    }
}
