//! Who posts to the API routes (`POST /v1/events`, `/batch`, `/csv`): a secret `ingest` key in
//! `Authorization`, or a publishable `track` key from a browser.
//!
//! A track key may post single events and batches only, from one of its origins (the `Origin`
//! header, which browsers set and page scripts cannot), events of its allowed types with source
//! `web`. Beacons (`navigator.sendBeacon`) cannot send headers, so on the batch route a track key
//! may also come as the `key` query parameter, with `idempotencyKey` beside it and a
//! `text/plain` JSON body. A secret key in a URL is refused as unknown: it would be logged
//! wherever URLs are.

use std::sync::Arc;

use super::ids::{IdPolicy, IDEMPOTENCY_HEADER};
use super::{ItemError, Route};
use crate::auth::{bearer, ApiKeys, Scope, TrackPolicy};
use crate::body::{self, MediaType};
use crate::error::ApiError;
use crate::event::{Event, FieldError};
use crate::http::HttpRequest;

/// The source of every event a track key posts.
pub const TRACK_SOURCE: &str = "web";

pub(super) struct Client {
    /// The ids its items may carry, and those derived from its idempotency key. They are bound
    /// to its key as an `Authorization` value, so a beacon retrying a batch first sent with
    /// headers derives the same ids.
    pub ids: IdPolicy,
    /// A track key's policy; `None` for an ingest key.
    pub track: Option<Arc<TrackPolicy>>,
}

impl Client {
    pub(super) fn authenticate(
        keys: &ApiKeys,
        request: &HttpRequest,
        route: &Route,
    ) -> Result<Self, ApiError> {
        let header = request.header("authorization");
        let (key, in_url) = match (header, request.query("key")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(vec![FieldError::new(
                    "key",
                    "send the key in Authorization or as the key parameter, not both",
                )]))
            }
            // Beacons send batches; the single route takes keys in Authorization only.
            (None, Some(key)) if *route == Route::Batch => (key, true),
            (header, _) => (bearer(header)?, false),
        };
        let caller = keys.caller(key)?;
        let track = match (caller.scope, caller.track) {
            (Scope::Track, Some(policy)) => policy,
            _ if in_url => return Err(ApiError::Unauthorized),
            (Scope::Ingest, _) => {
                return Ok(Self {
                    ids: IdPolicy::client(
                        Some(&format!("Bearer {key}")),
                        route.name(),
                        request.header(IDEMPOTENCY_HEADER),
                    )?,
                    track: None,
                })
            }
            _ => {
                return Err(ApiError::Forbidden(
                    "this key's scope does not allow this route",
                ))
            }
        };
        if *route == Route::Csv {
            return Err(ApiError::Forbidden(
                "a track key posts single events and batches only",
            ));
        }
        if !track.allows_origin(request.header("origin")) {
            return Err(ApiError::Forbidden(
                "this key posts only from the origins configured for it",
            ));
        }
        let idempotency_key = match (
            request.header(IDEMPOTENCY_HEADER),
            request.query("idempotencyKey"),
        ) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(vec![FieldError::new(
                    "idempotencyKey",
                    "send Idempotency-Key or the idempotencyKey parameter, not both",
                )]))
            }
            (header, parameter) => header.or(parameter),
        };
        Ok(Self {
            ids: IdPolicy::client(
                Some(&format!("Bearer {key}")),
                route.name(),
                idempotency_key,
            )?,
            track: Some(track),
        })
    }

    /// The body's media type; a track key's `text/plain` (a beacon's) is JSON.
    pub fn media_type(&self, request: &HttpRequest) -> Option<MediaType> {
        let content_type = request.header("content-type");
        let plain = content_type.is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/plain"))
        });
        if self.track.is_some() && plain {
            Some(MediaType::Json)
        } else {
            body::media_type(content_type)
        }
    }

    /// The source an event without one gets.
    pub fn default_source(&self) -> &'static str {
        if self.track.is_some() {
            TRACK_SOURCE
        } else {
            "api"
        }
    }

    /// Refuses an event a track key may not post.
    pub fn check(&self, event: &Event) -> Result<(), Refusal> {
        let Some(track) = &self.track else {
            return Ok(());
        };
        if event.source != TRACK_SOURCE {
            Err(Refusal {
                field: "/source",
                message: "a track key's events have source web",
            })
        } else if !track.allows_type(&event.event_type) {
            Err(Refusal {
                field: "/type",
                message: "this key may not post events of this type",
            })
        } else {
            Ok(())
        }
    }
}

/// Why a track key may not post an event: a 403 for a single event, a rejected item in a batch.
#[derive(Debug)]
pub(super) struct Refusal {
    field: &'static str,
    message: &'static str,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Forbidden(refusal.message)
    }
}

impl From<Refusal> for ItemError {
    fn from(refusal: Refusal) -> Self {
        ItemError {
            code: "FORBIDDEN",
            message: refusal.message.to_owned(),
            details: vec![FieldError::new(refusal.field, refusal.message)],
        }
    }
}
