//! `GET /v1/admin/events/failed?limit=50&cursor&status`: the events that did not make it, dead
//! letters first (they need a person), then failures still being retried, then rejections;
//! newest first within each. The store's failure index has one partition per status.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::http::{HttpRequest, HttpResponse};
use crate::query::params::QueryParams;
use crate::store::{EventStatus, StoreError};

/// One failed event as the list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub attempts: u32,
    pub failed_at: Option<String>,
}

/// Where a page of one status ended: the failure index's key of its last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedKey {
    #[serde(rename = "e")]
    pub event_id: String,
    #[serde(rename = "t")]
    pub failed_at: String,
}

/// A page of one status, newest first, and the key to continue after when more may follow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailedPage {
    pub events: Vec<FailedEvent>,
    pub next: Option<FailedKey>,
}

#[async_trait]
pub trait FailedEvents: Send + Sync {
    async fn failed(
        &self,
        status: EventStatus,
        limit: u32,
        after: Option<&FailedKey>,
    ) -> Result<FailedPage, StoreError>;

    /// How many events have `status`, counted up to `cap` (the answer is `cap` when more do).
    async fn count(&self, status: EventStatus, cap: u64) -> Result<u64, StoreError>;
}

const ORDER: [EventStatus; 3] = [
    EventStatus::DeadLetter,
    EventStatus::Failed,
    EventStatus::Rejected,
];
const STATUSES: [(&str, EventStatus); 3] = [
    ("DEAD_LETTER", EventStatus::DeadLetter),
    ("FAILED", EventStatus::Failed),
    ("REJECTED", EventStatus::Rejected),
];

/// Where a listing goes on: the status (its position in [`ORDER`]) and the key to continue after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "s")]
    status: usize,
    #[serde(rename = "k", default)]
    after: Option<FailedKey>,
    /// The `status` filter the listing was asked with, so a cursor cannot change it.
    #[serde(rename = "f", default)]
    only: Option<usize>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
        // Index keys are non-empty strings; anything else is not a cursor this API issued.
        let plausible = |s: &str| !s.is_empty() && s.len() <= 256;
        let key_ok = cursor
            .after
            .as_ref()
            .is_none_or(|k| plausible(&k.event_id) && plausible(&k.failed_at));
        (cursor.status < ORDER.len() && key_ok).then_some(cursor)
    }
}

pub(super) async fn list(
    store: &dyn FailedEvents,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["limit", "cursor", "status"]);
    let limit = params.integer("limit", 1, 100, 50);
    let status_text = params.text("status", None);
    let only = params
        .choice("status", status_text, &STATUSES)
        .and_then(|s| ORDER.iter().position(|o| *o == s));
    let cursor = match params.text("cursor", None) {
        None => Some(None),
        Some(text) => match Cursor::decode(text) {
            Some(c) if c.only == only && only.is_none_or(|o| o == c.status) => Some(Some(c)),
            _ => {
                params.error(
                    "cursor",
                    "is not a cursor this API issued for these parameters",
                );
                None
            }
        },
    };
    let (limit, cursor) = params.finish(limit.zip(cursor))?;
    let position = cursor.unwrap_or(Cursor {
        status: only.unwrap_or(0),
        after: None,
        only,
    });
    let (events, next) = walk(store, position, limit).await?;
    let mut body = json!({ "events": events });
    if let Some(next) = next {
        body["nextCursor"] = json!(next.encode());
    }
    Ok(HttpResponse::json(200, &body))
}

/// Up to `limit` events from `position` on, in listing order, and where the next page starts.
async fn walk(
    store: &dyn FailedEvents,
    mut position: Cursor,
    limit: u32,
) -> Result<(Vec<FailedEvent>, Option<Cursor>), ApiError> {
    let last = position.only.unwrap_or(ORDER.len() - 1);
    let mut events = Vec::new();
    let next = loop {
        let wanted = limit - events.len() as u32;
        let page = store
            .failed(ORDER[position.status], wanted, position.after.as_ref())
            .await
            .map_err(ApiError::events_down)?;
        events.extend(page.events);
        match page.next {
            Some(key) => {
                position.after = Some(key);
                if events.len() as u32 >= limit {
                    break Some(position);
                }
            }
            None if position.status < last => {
                position = Cursor {
                    status: position.status + 1,
                    after: None,
                    only: position.only,
                };
                if events.len() as u32 >= limit {
                    break Some(position);
                }
            }
            None => break None,
        }
    };
    Ok((events, next))
}

/// Events a numbered page may skip: pages are read from the start, so deep ones are bounded;
/// the cursor listing goes anywhere.
const MAX_SKIPPED: u32 = 10_000;

/// Events counted per status for `total`; past it the total is a lower bound, and says so.
const MAX_COUNTED: u64 = 10_000;

/// EventFlow's `GET /admin/events/failed?page=1&limit=50[&status]`: the same listing in numbered
/// pages, answered as `{"events", "pagination": {"page", "limit", "total", "totalPages"}}`.
pub(super) async fn numbered_page(
    store: &dyn FailedEvents,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["page", "limit", "status"]);
    let limit = params.integer("limit", 1, 100, 50);
    let page = params.integer("page", 1, MAX_SKIPPED + 1, 1);
    let status_text = params.text("status", None);
    let only = params
        .choice("status", status_text, &STATUSES)
        .and_then(|s| ORDER.iter().position(|o| *o == s));
    if let (Some(limit), Some(page)) = (limit, page) {
        if (page - 1).saturating_mul(limit) > MAX_SKIPPED {
            params.error(
                "page",
                format!(
                    "skips more than {MAX_SKIPPED} events; list further with \
                     /v1/admin/events/failed and its cursor"
                ),
            );
        }
    }
    let (limit, page) = params.finish(limit.zip(page))?;
    let skipped = (page - 1) * limit;
    let start = Cursor {
        status: only.unwrap_or(0),
        after: None,
        only,
    };
    let statuses: Vec<EventStatus> = match only {
        Some(o) => vec![ORDER[o]],
        None => ORDER.to_vec(),
    };
    let ((mut events, _), counts) = futures::try_join!(
        walk(store, start, skipped + limit),
        futures::future::try_join_all(statuses.iter().map(|s| async move {
            store
                .count(*s, MAX_COUNTED)
                .await
                .map_err(ApiError::events_down)
        })),
    )?;
    let events = events.split_off((skipped as usize).min(events.len()));
    let total: u64 = counts.iter().sum();
    let mut pagination = json!({
        "page": page,
        "limit": limit,
        "total": total,
        "totalPages": total.div_ceil(u64::from(limit)),
    });
    if counts.contains(&MAX_COUNTED) {
        pagination["totalIsLowerBound"] = json!(true);
    }
    Ok(HttpResponse::json(
        200,
        &json!({"events": events, "pagination": pagination}),
    ))
}
