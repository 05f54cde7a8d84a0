//! `inferwatt-collector import FILE`: stores a line-protocol file (plain or gzip) in one
//! transaction, with the same checks as the write API except the token binding; or a
//! CodeCarbon / nvidia-smi CSV file converted by [`super::csv_import`].

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
    #[error("'{path}' was not imported (nothing of it is stored): {source}")]
    Csv {
        path: PathBuf,
        source: super::csv_import::CsvImportError,
    },
    #[error("'{path}' was not imported: {source}")]
    Store {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("--site and --host must be non-empty for a CSV import (the points need them); got site '{site}' host '{host}'")]
    Origin { site: String, host: String },
}

/// Imports a CodeCarbon or nvidia-smi CSV file as points of `site`/`host`, in one
/// transaction: nothing is stored when any line is bad.
pub fn import_csv_file(
    store: &Store,
    path: &Path,
    format: super::csv_import::CsvFormat,
    site: &str,
    host: &str,
) -> Result<WriteOutcome, ImportError> {
    use super::csv_import::{codecarbon_points, nvidia_smi_points, CsvFormat};
    if site.is_empty() || host.is_empty() {
        return Err(ImportError::Origin {
            site: site.to_owned(),
            host: host.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let points = match format {
        CsvFormat::CodeCarbon => codecarbon_points(&text, site, host),
        CsvFormat::NvidiaSmi => nvidia_smi_points(&text, site, host),
    }
    .map_err(|source| ImportError::Csv {
        path: path.to_path_buf(),
        source,
    })?;
    store.write(&points).map_err(|source| ImportError::Store {
        path: path.to_path_buf(),
        source,
    })
}

/// Imports `path` (gzip when it starts with the gzip magic bytes). Nothing is stored
/// when any line is bad; data of any age is stored.
pub fn import_file(
    store: &Store,
    path: &Path,
    precision: Precision,
) -> Result<WriteOutcome, ImportError> {
    import_file_with_progress(store, path, precision, &mut |_, _| {})
}

/// [`import_file`], reporting the write's progress (`done`, `total` points).
pub fn import_file_with_progress(
    store: &Store,
    path: &Path,
    precision: Precision,
    progress: &mut dyn FnMut(usize, usize),
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
    super::ingest_points_with_progress(store, &text, precision, None, crate::now_ns(), progress)
        .map(|(outcome, _)| outcome)
        .map_err(rejected)
}
