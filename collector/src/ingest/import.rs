//! `inferwatt-collector import FILE`: stores a line-protocol file (plain or gzip) in one
//! transaction, with the same checks as the write API except the token binding.

use std::path::{Path, PathBuf};

use inferwatt_core::lineproto::Precision;

use super::body::{self, Encoding};
use super::ApiError;
use crate::store::{Store, WriteOutcome};

/// Why a file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{path}' was not imported (nothing of it is stored): {source}")]
    Rejected { path: PathBuf, source: ApiError },
}

/// Imports `path` (gzip when it starts with the gzip magic bytes). Nothing is stored
/// when any line is bad. Points at or before `min_ts_ns` are skipped and counted.
pub fn import_file(
    store: &Store,
    path: &Path,
    precision: Precision,
    min_ts_ns: Option<i64>,
) -> Result<WriteOutcome, ImportError> {
    let raw = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let rejected = |source: ApiError| ImportError::Rejected {
        path: path.to_path_buf(),
        source,
    };
    let encoding = if raw.starts_with(&[0x1f, 0x8b]) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let text = body::decode_content(raw, encoding, u64::MAX - 1).map_err(|e| rejected(e.into()))?;
    super::ingest_bytes(store, &text, precision, None, min_ts_ns, crate::now_ns()).map_err(rejected)
}
