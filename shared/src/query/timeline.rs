//! `GET /v1/leads/{leadId}/timeline?limit&cursor`: every event of a lead in fold order with the
//! points it gave, what a cap or the clamp took away, the running score and stage; then the
//! decay as of now.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cursor;
use super::leads::MAX_LEAD_ID_LEN;
use super::params::QueryParams;
use crate::error::ApiError;
use crate::event::{format_utc, FieldError};
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{
    explain, lead_view, load_or_init, LeadHistory, LeadReader, RuleStore, TimelineState,
};

/// Where a page ends: the fold's state, under the rules it was folded by. Opaque to clients.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// When the first page was read (epoch milliseconds): decay is shown as of it.
    #[serde(rename = "t")]
    as_of_ms: i64,
    /// The rules' version: a page under other rules would not continue this fold.
    #[serde(rename = "v")]
    rules_version: u64,
    #[serde(rename = "f")]
    fold: TimelineState,
}

fn bad_cursor(message: &str) -> ApiError {
    ApiError::validation(vec![FieldError::new(
        "cursor".to_owned(),
        message.to_owned(),
    )])
}

impl Cursor {
    fn decode(text: &str, now: DateTime<Utc>) -> Result<Self, &'static str> {
        cursor::decode(text, now, |c: &Cursor| c.as_of_ms)
    }
}

pub(crate) async fn timeline(
    leads: &dyn LeadReader,
    history: &dyn LeadHistory,
    rule_store: &dyn RuleStore,
    lead_id: &str,
    request: &HttpRequest,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["limit", "cursor"]);
    let limit = params.integer("limit", 1, 500, 100);
    let cursor = match params.text("cursor", None) {
        None => Some(None),
        Some(text) => match Cursor::decode(text, now) {
            Ok(cursor) => Some(Some(cursor)),
            Err(message) => {
                params.error("cursor", message);
                None
            }
        },
    };
    let (limit, cursor) = params.finish(limit.zip(cursor))?;
    if lead_id.is_empty() || lead_id.chars().count() > MAX_LEAD_ID_LEN {
        return Err(ApiError::NotFound);
    }
    let rules = load_or_init(rule_store)
        .await
        .map_err(ApiError::analytics_down)?;
    if cursor
        .as_ref()
        .is_some_and(|c| c.rules_version != rules.version)
    {
        return Err(bad_cursor(
            "was made under rules that have changed since; start again without a cursor",
        ));
    }
    let as_of = cursor
        .as_ref()
        .and_then(|c| DateTime::from_timestamp_millis(c.as_of_ms))
        .unwrap_or(now);
    let state = cursor.map(|c| c.fold).unwrap_or_default();
    let after = state.last.as_ref().map(|(ts, id)| (*ts, id.as_str()));
    let limit = limit as usize;
    let mut events = history
        .events_after(lead_id, after, limit + 1)
        .await
        .map_err(ApiError::events_down)?;
    let more = events.len() > limit;
    events.truncate(limit);
    if state.last.is_none() && events.is_empty() {
        return Err(ApiError::NotFound);
    }
    let (explained, next) = explain(&rules.rules, state, events);

    // The lead as of now (its stored state and any events not yet folded), for its decay.
    let ids = [lead_id];
    let stored = leads
        .leads(&ids)
        .await
        .map_err(ApiError::analytics_down)?
        .remove(lead_id)
        .map(|r| r.state);
    let after_stored = stored
        .as_ref()
        .and_then(|s| s.last.as_ref())
        .map(|(ts, id)| (*ts, id.as_str()));
    let pending = history
        .latest_events(lead_id, after_stored, 0)
        .await
        .map_err(ApiError::events_down)?;
    let current = lead_view(stored, &pending, &rules.rules).map(|v| v.state);
    let undecayed = current.as_ref().map_or(next.score, |s| s.score);
    let decayed = current
        .as_ref()
        .map_or(undecayed, |s| s.decayed_score(&rules.rules.decay, as_of));

    let rows: Vec<Value> = explained
        .iter()
        .map(|e| {
            let mut row = json!({
                "eventId": e.event.event_id,
                "type": e.event.event_type,
                "timestamp": format_utc(e.event.timestamp),
                "points": e.points,
                "score": e.score,
                "stage": e.stage,
            });
            if let Some((points, by)) = e.removed {
                row["removed"] = json!({"points": points, "by": by});
            }
            row
        })
        .collect();
    let mut body = json!({
        "leadId": lead_id,
        "events": rows,
        "decay": {"asOf": format_utc(as_of), "points": decayed - undecayed},
        "score": decayed,
        "stage": rules.rules.stage_of(decayed),
    });
    if more {
        let cursor = Cursor {
            as_of_ms: as_of.timestamp_millis(),
            rules_version: rules.version,
            fold: next,
        };
        body["nextCursor"] = json!(cursor::encode(&cursor));
    }
    Ok(HttpResponse::json(200, &body))
}
