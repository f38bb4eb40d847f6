//! Request bodies: size limits applied after `Content-Encoding: gzip` is undone (inflation stops
//! at the limit, so a gzip bomb costs at most the limit), and media types.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::error::ApiError;
use crate::event::FieldError;

pub const SINGLE_LIMIT: usize = 1024 * 1024;
pub const BATCH_LIMIT: usize = 5 * 1024 * 1024;
pub const MAX_BATCH_EVENTS: usize = 500;
pub const MAX_CSV_ROWS: usize = 10_000;

/// A JSON request body of at most [`SINGLE_LIMIT`]: 415 without `Content-Type:
/// application/json`, 413 when too large, 400 `INVALID_JSON` when it does not parse.
pub fn json(request: &crate::http::HttpRequest) -> Result<serde_json::Value, ApiError> {
    if media_type(request.header("content-type")) != Some(MediaType::Json) {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    let raw = decode(
        &request.body,
        request.header("content-encoding"),
        SINGLE_LIMIT,
    )?;
    serde_json::from_slice(&raw)
        .map_err(|_| ApiError::InvalidJson("the body is not valid JSON".into()))
}

/// Returns the decoded body, or 413 when it is (or inflates to) more than `limit` bytes.
pub fn decode(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    if body.len() > limit {
        return Err(too_large());
    }
    match content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let read = GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| {
                    ApiError::validation(vec![FieldError::new("", "body is not valid gzip data")])
                })?;
            if read > limit {
                return Err(too_large());
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::UnsupportedMediaType(
            "Content-Encoding must be gzip or identity".into(),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Json,
    NdJson,
    Csv,
}

/// The media type without parameters; an absent header means JSON.
pub fn media_type(content_type: Option<&str>) -> Option<MediaType> {
    let essence = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/json".into());
    match essence.as_str() {
        "application/json" | "" => Some(MediaType::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonlines" => {
            Some(MediaType::NdJson)
        }
        "text/csv" => Some(MediaType::Csv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{write::GzEncoder, Compression};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        let _ = enc.write_all(data);
        enc.finish().unwrap_or_default()
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        let data = b"[{\"type\":\"A\"}]".repeat(10);
        assert_eq!(decode(&gzip(&data), Some("gzip"), 1024).ok(), Some(data));
    }

    #[test]
    fn gzip_bomb_is_cut_off_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "compresses well: {}", bomb.len());
        assert_eq!(
            decode(&bomb, Some("gzip"), BATCH_LIMIT).map_err(|e| e.status()),
            Err(413)
        );
    }

    #[test]
    fn limits_and_encodings() {
        assert_eq!(
            decode(&[b'x'; 11], None, 10).map_err(|e| e.status()),
            Err(413)
        );
        assert_eq!(
            decode(b"abc", Some("br"), 10).map_err(|e| e.status()),
            Err(415)
        );
        assert_eq!(
            decode(b"not gzip", Some("gzip"), 100).map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(
            media_type(Some("application/json; charset=utf-8")),
            Some(MediaType::Json)
        );
        assert_eq!(media_type(None), Some(MediaType::Json));
        assert_eq!(media_type(Some("text/csv")), Some(MediaType::Csv));
        assert_eq!(media_type(Some("text/plain")), None);
    }
}
