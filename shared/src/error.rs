//! The HTTP boundary's one error enum and its one mapping to status, code and body.

use serde_json::{json, Value};

use crate::event::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    Validation {
        message: String,
        details: Vec<FieldError>,
    },
    /// A query combines filters the aggregates cannot answer together.
    #[error("{0}")]
    UnsupportedFilter(String),
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("{0}")]
    MissingSignature(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    InvalidSignature(&'static str),
    #[error("no such route")]
    NotFound,
    /// A route that exists, about something that does not (`"no such event"`).
    #[error("{0}")]
    UnknownItem(&'static str),
    /// The request contradicts the item's state (replaying a processed event).
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A dependency did not answer; names it (never its error text).
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: &'static str,
        details: Vec<FieldError>,
    },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// `dependency` did not answer; nothing else about the failure reaches the client.
    pub fn unavailable(dependency: &'static str) -> Self {
        Self::Unavailable {
            dependency,
            details: Vec::new(),
        }
    }

    /// The analytics table did not answer (its error stays in the logs of the adapter).
    pub fn analytics_down(_: crate::store::StoreError) -> Self {
        Self::unavailable("analytics table")
    }

    /// The events table did not answer (its error stays in the logs of the adapter).
    pub fn events_down(_: crate::store::StoreError) -> Self {
        Self::unavailable("events table")
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self::Validation { message, details }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidJson(_) | Self::Validation { .. } | Self::UnsupportedFilter(_) => 400,
            Self::Unauthorized | Self::MissingSignature(_) => 401,
            Self::Forbidden(_) | Self::InvalidSignature(_) => 403,
            Self::NotFound | Self::UnknownItem(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict(_) => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::Internal => 500,
            Self::Unavailable { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::Validation { .. } => "VALIDATION_FAILED",
            Self::UnsupportedFilter(_) => "UNSUPPORTED_FILTER",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::MissingSignature(_) => "MISSING_SIGNATURE",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::InvalidSignature(_) => "INVALID_SIGNATURE",
            Self::NotFound | Self::UnknownItem(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// `{"error": {"code", "message", "details"}, "requestId"}` — the shape of every error.
    /// At most [`MAX_DETAILS`] details are listed; `omittedDetails` counts the rest.
    pub fn body(&self, request_id: &str) -> Value {
        let details: &[FieldError] = match self {
            Self::Validation { details, .. } | Self::Unavailable { details, .. } => details,
            _ => &[],
        };
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        list_details(&mut error, details, MAX_DETAILS);
        json!({"error": error, "requestId": request_id})
    }
}

/// Whether an answer's body has the one error shape (tests of every route check it).
#[cfg(test)]
pub(crate) fn is_error_shape(body: &Value) -> bool {
    body["error"]["code"].is_string()
        && body["error"]["message"].is_string()
        && body["error"]["details"].is_array()
        && body["requestId"].is_string()
}

/// An error lists at most this many details, so that no answer nears Lambda's 6 MB limit.
pub const MAX_DETAILS: usize = 100;

/// Sets `details` on an error object to the first `max` of `details`, and `omittedDetails` to
/// how many were left out (absent when none were). Returns how many were listed.
pub fn list_details(error: &mut Value, details: &[FieldError], max: usize) -> usize {
    let shown = details.len().min(max);
    error["details"] = json!(&details[..shown]);
    if shown < details.len() {
        error["omittedDetails"] = json!(details.len() - shown);
    }
    shown
}
