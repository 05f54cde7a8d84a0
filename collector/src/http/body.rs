//! Reading a write body under a size cap: refused early by `Content-Length`, while
//! streaming, and again after gzip decompression (so a small gzip bomb cannot expand
//! into memory).

use std::io::Read;

use axum::body::Body;
use http_body_util::BodyExt;

/// Why a body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than max_body_bytes = {limit}; send smaller batches or raise 'max_body_bytes' in the config")]
    TooLarge { limit: u64 },
    #[error("the body decompresses to more than max_body_bytes = {limit}; send smaller batches or raise 'max_body_bytes' in the config")]
    DecompressedTooLarge { limit: u64 },
    #[error("Content-Encoding '{0}' is not supported; send 'gzip' or 'identity'")]
    UnsupportedEncoding(String),
    #[error("the gzip body cannot be decompressed: {0}")]
    BadGzip(String),
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// Reads at most `limit` bytes of `body`; more is [`BodyError::TooLarge`] and the rest is
/// never read.
pub async fn read_capped(body: Body, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Err(BodyError::TooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// A supported `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Parses a `Content-Encoding` header (absent, `identity`, `gzip` or `x-gzip`).
pub fn parse_encoding(header: Option<&str>) -> Result<Encoding, BodyError> {
    match header.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(Encoding::Identity),
        Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// Undoes the content encoding, producing at most `limit` bytes.
pub fn decode_content(raw: Vec<u8>, encoding: Encoding, limit: u64) -> Result<Vec<u8>, BodyError> {
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(raw.as_slice())
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| BodyError::BadGzip(e.to_string()))?;
            if out.len() as u64 > limit {
                return Err(BodyError::DecompressedTooLarge { limit });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("compress");
        e.finish().expect("compress")
    }

    #[test]
    fn gzip_round_trips_under_the_cap() {
        let body = b"m,site=s,host=h f=1 1\n".repeat(10);
        assert_eq!(
            decode_content(gzip(&body), Encoding::Gzip, 10_000).expect("fits"),
            body
        );
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'a'; 4 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            decode_content(bomb, Encoding::Gzip, 1 << 20),
            Err(BodyError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_encoding_is_named() {
        let err = parse_encoding(Some("br")).expect_err("refused");
        assert!(err.to_string().contains("'br'"));
    }
}
