//! The HTTP surface: [`AppState`] and [`app`], the router (`POST /api/v2/write`,
//! `GET /healthz`, `GET /metrics`), with one middleware that counts every answer by
//! status and logs each error once.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::{AuthMode, Config};
use crate::ingest::{self, auth::Authenticator, ErrorMessage};
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
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
        }
    }
}

/// The collector's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v2/write", post(ingest::write))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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
