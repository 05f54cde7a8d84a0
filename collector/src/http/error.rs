//! The one error type of the HTTP surface: [`ApiError`], answered as InfluxDB's
//! `{"code","message"}` JSON with its status by every route (write, report, series,
//! page), and [`ErrorMessage`], the message left in the response for the logging
//! middleware.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::auth::AuthError;
use crate::http::body::BodyError;
use crate::reporting::ReportingError;
use crate::store::StoreError;

/// An error answered to a writer, with its HTTP status and InfluxDB error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a malformed line or point; the message starts with `line N:`.
    #[error("{0}")]
    Invalid(String),
    /// 401
    #[error(transparent)]
    Unauthorized(AuthError),
    /// 403: the token may not write a point's site/host.
    #[error("{0}")]
    Forbidden(String),
    /// 413, 415 or 400 from reading the body.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// 429: more writes in progress than `max_concurrent_writes`; retry after a second.
    #[error("{0}")]
    Busy(String),
    /// 404: nothing to answer with (no data for a report, an unknown asset).
    #[error("{0}")]
    NotFound(String),
    /// 500
    #[error("{0}")]
    Internal(String),
    /// 503: the storage backend (VictoriaMetrics) did not take the write; nothing was
    /// acknowledged, retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// The message of an error response, left in the response's extensions for the logging
/// middleware (so each error is logged once, with its status).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(AuthError::Missing | AuthError::Unknown) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Unauthorized(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Body(BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Body(BodyError::UnsupportedEncoding(_)) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Body(BodyError::BadGzip(_) | BodyError::Read(_)) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// InfluxDB's error code for the status.
    pub fn code(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST => "invalid",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "request too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
            StatusCode::NOT_FOUND => "not found",
            StatusCode::TOO_MANY_REQUESTS => "too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = serde_json::json!({ "code": self.code(), "message": message });
        let mut resp = (self.status(), Json(body)).into_response();
        let retry = match self {
            ApiError::Busy(_) => Some("1"),
            ApiError::Unavailable(_) => Some("5"),
            _ => None,
        };
        if let Some(after) = retry {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(after),
            );
        }
        resp.extensions_mut().insert(ErrorMessage(message));
        resp
    }
}

impl From<ReportingError> for ApiError {
    /// No data is 404, a store, factors or rendering failure 500, anything else (a bad
    /// parameter) 400.
    fn from(e: ReportingError) -> Self {
        match &e {
            ReportingError::NoData => ApiError::NotFound(e.to_string()),
            ReportingError::Store(_) | ReportingError::Factors(_) | ReportingError::Render(_) => {
                ApiError::Internal(e.to_string())
            }
            _ => ApiError::Invalid(e.to_string()),
        }
    }
}
