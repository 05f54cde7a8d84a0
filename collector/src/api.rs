//! The HTTP surface: [`AppState`] and [`app`], the router (`POST /api/v2/write`,
//! `GET /api/v1/report`, `GET /healthz`, `GET /metrics`), with one middleware that counts
//! every answer by status and logs each error once.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::HeaderMap;

use inferwatt_ship::ShipHandle;

use crate::config::{AuthMode, Config};
use crate::ingest::auth::AuthError;
use crate::ingest::{self, auth::Authenticator, ErrorMessage};
use crate::metrics::Metrics;
use crate::report::Format;
use crate::reporting::{self, FactorsChoice, ReportRequest, ReportingError};
use crate::store::Store;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// `[forward]`: the spool accepted points are enqueued to after their write commits.
    pub forward: Option<ShipHandle>,
}

impl AppState {
    /// Read access to reports and series: a valid token when `report_auth` asks for one.
    pub fn authorize_read(&self, authorization: Option<&str>) -> Result<(), (StatusCode, String)> {
        if !self.config.report_needs_token() {
            return Ok(());
        }
        self.auth
            .authenticate(authorization, &self.store)
            .map(|_| ())
            .map_err(|e| match e {
                AuthError::Missing | AuthError::Unknown => {
                    (StatusCode::UNAUTHORIZED, e.to_string())
                }
                e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            })
    }

    /// The factors reports use: the config's `[factors]`, else the built-in defaults.
    pub fn factors_choice(&self) -> FactorsChoice {
        match &self.config.factors {
            Some(f) => FactorsChoice::from_config(f.clone(), &self.config.base_dir),
            None => FactorsChoice::builtin(),
        }
    }
    /// State over an opened store; logs loudly when authentication is off.
    pub fn new(config: Config, store: Arc<Store>) -> AppState {
        if config.auth == AuthMode::None {
            tracing::warn!(
                listen = %config.listen,
                "AUTHENTICATION IS OFF (auth = \"none\"): anyone who can reach this address can write any site's data; use it for loopback demos only"
            );
        }
        AppState {
            auth: Arc::new(Authenticator::new(&config)),
            config: Arc::new(config),
            store,
            metrics: Arc::new(Metrics::default()),
            forward: None,
        }
    }

    /// This state, forwarding accepted points through `handle` (see `[forward]`).
    pub fn with_forward(mut self, handle: ShipHandle) -> AppState {
        self.forward = Some(handle);
        self
    }

    /// Enqueues the points of a committed write for forwarding (blocking: the spool
    /// fsyncs). Duplicates are forwarded again, which InfluxDB and VictoriaMetrics store
    /// once. A spool failure is logged, not answered: the points are already stored here.
    pub fn forward_points(&self, points: &[inferwatt_core::lineproto::Point]) {
        let Some(handle) = &self.forward else {
            return;
        };
        if let Err(e) = handle.enqueue(points) {
            tracing::error!(points = points.len(), error = %e, "cannot spool points for forwarding; they are stored here but will not be forwarded");
        }
    }
}

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
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.check()).await {
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

/// An error answer of `GET /api/v1/report`: `{"code","message"}` like the write API's.
fn report_error(status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not found",
        _ => "internal error",
    };
    let body = serde_json::json!({ "code": code, "message": message });
    let mut resp = (status, axum::Json(body)).into_response();
    resp.extensions_mut().insert(ErrorMessage(message));
    resp
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
        Err(e) => return report_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let s = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        s.authorize_read(authorization.as_deref())?;
        let factors = s.factors_choice();
        reporting::render_report(&s.store, &req, &factors, format).map_err(|e| {
            let status = match &e {
                ReportingError::NoData => StatusCode::NOT_FOUND,
                ReportingError::Store(_)
                | ReportingError::Factors(_)
                | ReportingError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, e.to_string())
        })
    })
    .await;
    match result {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, reporting::content_type(format))],
            body,
        )
            .into_response(),
        Ok(Err((status, msg))) => report_error(status, msg),
        Err(e) => report_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("report task failed: {e}"),
        ),
    }
}
