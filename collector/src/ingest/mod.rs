//! Ingest: the InfluxDB v2 write API (`POST /api/v2/write`), its errors in InfluxDB's
//! shape (`{"code","message"}`), and `import` of line-protocol files. A request is
//! authenticated, read under the size cap, decoded, checked against the token's binding
//! and stored in one transaction; 204 is sent only after the commit.

pub mod csv_import;
pub mod import;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use inferwatt_core::lineproto::{self, Precision};

pub use crate::http::error::{ApiError, ErrorMessage};
use crate::http::state::AppState;
pub use crate::http::{auth, body};
use crate::store::{Store, StoreError, WriteOutcome};
use auth::{AuthError, Binding};
use body::BodyError;

/// Most distinct series one request may write: a batch of one agent interval holds a few
/// dozen, a day of imported history a few thousand.
pub const MAX_SERIES_PER_REQUEST: usize = 100_000;

/// Decodes a body with the 1-based line each point starts on (a string field may hold a
/// newline, so lines are the decoder's, not a re-split of the body).
pub fn decode_with_lines(
    body: &[u8],
    precision: Precision,
    now_ns: i64,
) -> Result<(Vec<lineproto::Point>, Vec<usize>), ApiError> {
    let mut decoder = lineproto::Decoder::new(body, precision, now_ns);
    let (mut points, mut lines) = (Vec::new(), Vec::new());
    while let Some(p) = decoder.next() {
        points.push(p.map_err(|e| ApiError::Invalid(e.to_string()))?);
        lines.push(decoder.point_line());
    }
    let mut series = std::collections::HashSet::new();
    for (p, line) in points.iter().zip(&lines) {
        if series.insert(p.series_key()) && series.len() > MAX_SERIES_PER_REQUEST {
            return Err(ApiError::Invalid(format!(
                "line {line}: the request writes more than {MAX_SERIES_PER_REQUEST} series, the limit per request; split it"
            )));
        }
    }
    Ok((points, lines))
}

fn line_of(lines: &[usize], index: usize) -> String {
    match lines.get(index) {
        Some(n) => format!("line {n}"),
        None => format!("point {}", index + 1),
    }
}

/// Parses `precision=` (`ns`, `us`, `ms`, `s`; InfluxDB also accepts `n`, `u`).
pub fn parse_precision(s: Option<&str>) -> Result<Precision, ApiError> {
    match s.unwrap_or("ns") {
        "ns" | "n" | "" => Ok(Precision::Nanoseconds),
        "us" | "u" => Ok(Precision::Microseconds),
        "ms" => Ok(Precision::Milliseconds),
        "s" => Ok(Precision::Seconds),
        other => Err(ApiError::Invalid(format!(
            "precision '{other}' is not supported; use ns, us, ms or s"
        ))),
    }
}

/// Decodes a body and checks its points' authorisation, without storing them (the
/// VictoriaMetrics backend checks their values as it converts them).
pub fn check_points(
    body: &[u8],
    precision: Precision,
    binding: Option<&Binding>,
    now_ns: i64,
) -> Result<(Vec<lineproto::Point>, Vec<usize>), ApiError> {
    let (points, lines) = decode_with_lines(body, precision, now_ns)?;
    if let Err(r) = auth::authorize(binding, &points) {
        let msg = format!("{}: {}", line_of(&lines, r.index), r.reason);
        return Err(if r.forbidden {
            ApiError::Forbidden(msg)
        } else {
            ApiError::Invalid(msg)
        });
    }
    Ok((points, lines))
}

/// Decodes, checks and stores one body in one transaction (blocking).
pub fn ingest_bytes(
    store: &Store,
    body: &[u8],
    precision: Precision,
    binding: Option<&Binding>,
    now_ns: i64,
) -> Result<WriteOutcome, ApiError> {
    ingest_points(store, body, precision, binding, now_ns).map(|(o, _)| o)
}

/// [`ingest_bytes`], also returning the decoded points (for forwarding after the commit).
pub fn ingest_points(
    store: &Store,
    body: &[u8],
    precision: Precision,
    binding: Option<&Binding>,
    now_ns: i64,
) -> Result<(WriteOutcome, Vec<lineproto::Point>), ApiError> {
    ingest_points_with_progress(store, body, precision, binding, now_ns, &mut |_, _| {})
}

/// [`ingest_points`], reporting the write's progress (`done`, `total` points).
pub fn ingest_points_with_progress(
    store: &Store,
    body: &[u8],
    precision: Precision,
    binding: Option<&Binding>,
    now_ns: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(WriteOutcome, Vec<lineproto::Point>), ApiError> {
    let (points, lines) = check_points(body, precision, binding, now_ns)?;
    match store.write_with_progress(&points, progress) {
        Ok(o) => Ok((o, points)),
        Err(StoreError::InvalidPoint { index, reason }) => Err(ApiError::Invalid(format!(
            "{}: {reason}",
            line_of(&lines, index)
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?
}

/// `POST /api/v2/write?org=&bucket=&precision=`.
pub async fn write(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let precision = parse_precision(query.get("precision").map(String::as_str))?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let binding = {
        let s = state.clone();
        blocking(move || {
            s.auth
                .authenticate(authorization.as_deref(), &s.store)
                .map_err(|e| match e {
                    AuthError::Store(e) => ApiError::Internal(e.to_string()),
                    e => ApiError::Unauthorized(e),
                })
        })
        .await?
    };
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit }.into());
    }
    let encoding = body::parse_encoding(
        headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("<not ASCII>")),
    )?;
    // Bounded work: at most `max_concurrent_writes` bodies are read, decoded and stored at
    // once; a writer over it is told to retry (agents back off and keep their spool).
    let Ok(_permit) = state.write_permits.clone().try_acquire_owned() else {
        return Err(ApiError::Busy(format!(
            "{} writes are in progress, the limit (max_concurrent_writes); retry in a second",
            state.config.max_concurrent_writes
        )));
    };
    let raw = body::read_capped(body, limit).await?;
    state.metrics.add_bytes(raw.len() as u64);
    let s = state.clone();
    let outcome = match state.victoria.clone() {
        None => {
            blocking(move || {
                let body = body::decode_content(raw, encoding, limit)?;
                let now = crate::now_ns();
                let (outcome, points) =
                    ingest_points(&s.store, &body, precision, binding.as_ref(), now)?;
                s.forward_points(&points);
                Ok(outcome)
            })
            .await?
        }
        Some(vm) => {
            let (points, encoded) = blocking(move || {
                let body = body::decode_content(raw, encoding, limit)?;
                let now = crate::now_ns();
                let (points, lines) = check_points(&body, precision, binding.as_ref(), now)?;
                let stored = crate::store::victoria::vm_points(&points).map_err(|e| match e {
                    StoreError::InvalidPoint { index, reason } => {
                        ApiError::Invalid(format!("{}: {reason}", line_of(&lines, index)))
                    }
                    e => e.into(),
                })?;
                let encoded = lineproto::encode(&stored)
                    .map_err(|e| ApiError::Invalid(format!("cannot encode the points: {e}")))?;
                Ok((points, encoded))
            })
            .await?;
            // Acknowledged only once VictoriaMetrics took the points.
            vm.write(encoded).await.map_err(|e| {
                ApiError::Unavailable(format!("{e}; nothing of this write was stored, retry it"))
            })?;
            let s = state.clone();
            let n = points.len() as u64;
            blocking(move || {
                s.forward_points(&points);
                Ok(())
            })
            .await?;
            WriteOutcome {
                written: n,
                ..WriteOutcome::default()
            }
        }
    };
    state.metrics.record_write(&outcome);
    if let Some(c) = &outcome.first_conflict {
        if state.metrics.first_conflict() {
            tracing::warn!(
                conflicts = outcome.conflicts,
                first = %c,
                "re-sent points differ from the stored ones; the first stored values were kept \
                 (logged once; see inferwatt_collector_points_conflicting_total)"
            );
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_lines_skip_blanks_comments_and_quoted_newlines() {
        let body = b"# c\na f=1\n\n  \nb f=2\r\n# x\nc f=3\nd s=\"two\nlines\"\ne f=4";
        let (_, lines) = decode_with_lines(body, Precision::Nanoseconds, 0).expect("decode");
        assert_eq!(lines, vec![2, 5, 7, 8, 10]);
    }

    #[test]
    fn precision_names() {
        assert_eq!(parse_precision(Some("s")).expect("ok"), Precision::Seconds);
        assert_eq!(parse_precision(None).expect("ok"), Precision::Nanoseconds);
        assert!(parse_precision(Some("h")).is_err());
    }
}
