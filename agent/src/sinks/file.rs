//! File sink: appends each interval's points as line protocol to a local file, one
//! write per interval. For offline hosts, audits and tests (`inferwatt-collector
//! import FILE` reads it back).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use inferwatt_core::lineproto::{encode, Point};

/// Errors of the file sink.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("cannot open '{path}' for appending: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write to '{path}': {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Encode(#[from] inferwatt_core::lineproto::EncodeError),
}

/// Appends line protocol to a file.
pub struct FileSink {
    path: PathBuf,
    file: File,
}

impl FileSink {
    pub fn open(path: &Path) -> Result<Self, FileSinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| FileSinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes one interval's points in one `write` call.
    pub fn write(&mut self, points: &[Point]) -> Result<(), FileSinkError> {
        let body = encode(points)?;
        self.write_raw(&body)
    }

    /// Appends encoded line protocol in one `write` call.
    pub fn write_raw(&mut self, body: &str) -> Result<(), FileSinkError> {
        self.file
            .write_all(body.as_bytes())
            .map_err(|source| FileSinkError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Whether the file ends with `body` (an interval already written).
    pub fn ends_with(&self, body: &str) -> Result<bool, FileSinkError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let read_err = |source| FileSinkError::Write {
            path: self.path.clone(),
            source,
        };
        let mut f = File::open(&self.path).map_err(read_err)?;
        let len = f.metadata().map_err(read_err)?.len();
        let n = body.len() as u64;
        if n > len {
            return Ok(false);
        }
        f.seek(SeekFrom::Start(len - n)).map_err(read_err)?;
        let mut tail = Vec::with_capacity(body.len());
        f.read_to_end(&mut tail).map_err(read_err)?;
        Ok(tail == body.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.lp");
        let mut s = FileSink::open(&path).expect("open");
        s.write(&[Point::new("m").float("f", 1.0).at(1)])
            .expect("write");
        s.write(&[Point::new("m").float("f", 2.0).at(2)])
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "m f=1 1\nm f=2 2\n"
        );
        assert!(s.ends_with("m f=2 2\n").expect("tail"));
        assert!(!s.ends_with("m f=1 1\n").expect("tail"));
        assert!(!s.ends_with(&"x".repeat(100)).expect("tail"));
    }
}
