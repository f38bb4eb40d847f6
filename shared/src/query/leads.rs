//! `GET /v1/leads` (the leaderboard) and `GET /v1/leads/{leadId}`.
//!
//! **A live board, paged by position.** Scores change within seconds of each event, so a page
//! ranks the board as it is now, with decay as of the first page's time (the cursor carries it,
//! so decay never moves a lead between pages). The cursor names the last lead shown by its score
//! and id, and the next page starts after that place in the current order: a lead whose score
//! changes between two pages may move across the boundary (shown twice or not at all), as on any
//! live ranking; every lead that kept its score is shown exactly once.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cursor;
use super::params::QueryParams;
use crate::error::ApiError;
use crate::event::{format_utc, FieldError};
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{
    lead_view, load_or_init, normalized_email, profile_email, ranked, LeadHistory, LeadReader,
    RuleStore, VersionedRules, RECENT_EVENTS,
};

/// The longest lead id (docs/api.md); longer ones are unknown leads.
pub(super) const MAX_LEAD_ID_LEN: usize = 128;

/// Where a leaderboard page ends: the time decay is applied as of, and the last lead shown.
/// Opaque to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// The first page's time (decay is applied as of it), epoch milliseconds.
    #[serde(rename = "t")]
    as_of_ms: i64,
    /// The last lead shown: its score as shown and its id.
    #[serde(rename = "s")]
    score: i64,
    #[serde(rename = "l")]
    lead_id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        cursor::encode(self)
    }

    fn decode(text: &str, now: DateTime<Utc>) -> Result<Self, &'static str> {
        cursor::decode(text, now, |c: &Cursor| c.as_of_ms)
    }

    fn as_of(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.as_of_ms).unwrap_or_default()
    }
}

async fn rules(store: &dyn RuleStore) -> Result<VersionedRules, ApiError> {
    load_or_init(store).await.map_err(ApiError::analytics_down)
}

/// Leads one `GET /v1/leads?email=` lists at most (an address is usually one lead).
const MAX_LEADS_BY_EMAIL: usize = 20;
/// The longest email a profile keeps (docs/api.md: lead strings are at most 256 characters).
const MAX_EMAIL_LEN: usize = 256;

/// `GET /v1/leads?limit&cursor[&stage]`, or `GET /v1/leads?email=` (search).
pub(crate) async fn leaderboard(
    leads: &dyn LeadReader,
    rule_store: &dyn RuleStore,
    request: &HttpRequest,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["limit", "cursor", "stage", "email"]);
    if let Some(email) = params.text("email", None) {
        let email = normalized_email(email);
        if ["cursor", "stage", "limit"]
            .iter()
            .any(|p| request.query(p).is_some())
        {
            params.error("email", "is a search: it takes no cursor, stage or limit");
        }
        if email.chars().count() > MAX_EMAIL_LEN || !email.contains('@') {
            params.error(
                "email",
                "must be an email address of at most 256 characters",
            );
        }
        params.finish(Some(()))?;
        return by_email(leads, rule_store, &email, now).await;
    }
    let limit = params.integer("limit", 1, 100, 20);
    let stage = params.text("stage", None).map(str::to_owned);
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

    // The rules (for decay) and the board are independent reads.
    let (rules, board) = futures::join!(rules(rule_store), leads.board());
    let (rules, board) = (rules?, board.map_err(ApiError::analytics_down)?);
    let set = &rules.rules;
    if let Some(name) = &stage {
        if !set.stages.iter().any(|s| &s.name == name) {
            return Err(ApiError::validation(vec![FieldError::new(
                "stage".to_owned(),
                "is not a stage of GET /v1/scoring".to_owned(),
            )]));
        }
    }
    let as_of = cursor.as_ref().map_or(now, Cursor::as_of);
    let mut order = ranked(&board, &set.decay, as_of);
    // A lead's stage is the one its score as of the page reaches (decay included).
    if let Some(name) = &stage {
        order.retain(|(_, score, _)| set.stage_of(*score) == Some(name.as_str()));
    }
    let start = cursor.as_ref().map_or(0, |c| {
        order.partition_point(|(id, score, _)| {
            (Reverse(*score), *id) <= (Reverse(c.score), c.lead_id.as_str())
        })
    });
    let end = order.len().min(start + limit as usize);
    let page = order.get(start..end).unwrap_or_default();
    let ids: Vec<&str> = page.iter().map(|(id, _, _)| *id).collect();
    let states = leads.leads(&ids).await.map_err(ApiError::analytics_down)?;

    let rows: Vec<Value> = page
        .iter()
        .enumerate()
        .map(|(i, (id, score, entry))| {
            let state = states.get(*id).map(|r| &r.state);
            let profile = state.map(|s| &s.profile);
            json!({
                "rank": start + i + 1,
                "leadId": id,
                "score": score,
                "email": profile.and_then(|p| p.email.as_deref()),
                "name": profile.and_then(|p| p.name.as_deref()),
                "company": profile.and_then(|p| p.company.as_deref()),
                "lastActivityAt": format_utc(entry.last_activity()),
                "eventCount": state.map_or(0, |s| s.events),
                "stage": set.stage_of(*score),
            })
        })
        .collect();
    let mut body = json!({"leads": rows, "asOf": format_utc(as_of)});
    if let Some((id, score, _)) = page.last().filter(|_| end < order.len()) {
        let next = Cursor {
            as_of_ms: as_of.timestamp_millis(),
            score: *score,
            lead_id: (*id).to_owned(),
        };
        body["nextCursor"] = json!(next.encode());
    }
    Ok(HttpResponse::json(200, &body))
}

/// The leads whose profile email is `email`, by score (ties by id), as the leaderboard's rows
/// without their rank: the lead whose id is the address's own (`email:<address>`), if stored,
/// and those the `byEmail` index finds.
async fn by_email(
    leads: &dyn LeadReader,
    rule_store: &dyn RuleStore,
    email: &str,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let (rules, indexed) = futures::join!(
        rules(rule_store),
        leads.leads_by_email(email, MAX_LEADS_BY_EMAIL)
    );
    let (rules, indexed) = (rules?, indexed.map_err(ApiError::analytics_down)?);
    let own = format!("email:{email}");
    let mut ids: Vec<&str> = vec![own.as_str()];
    ids.extend(indexed.iter().map(String::as_str).filter(|id| *id != own));
    let mut states = leads.leads(&ids).await.map_err(ApiError::analytics_down)?;
    // The lead named after the address counts only if its profile has that address.
    if states
        .get(&own)
        .is_some_and(|r| profile_email(&r.state.profile).as_deref() != Some(email))
    {
        states.remove(&own);
    }
    let set = &rules.rules;
    let mut found: Vec<(&str, i64)> = states
        .iter()
        .map(|(id, r)| (id.as_str(), r.state.decayed_score(&set.decay, now)))
        .collect();
    found.sort_by(|a, b| (Reverse(a.1), a.0).cmp(&(Reverse(b.1), b.0)));
    let rows: Vec<Value> = found
        .iter()
        .filter_map(|(id, score)| {
            let state = &states.get(*id)?.state;
            Some(json!({
                "leadId": id,
                "score": score,
                "email": state.profile.email.as_deref(),
                "name": state.profile.name.as_deref(),
                "company": state.profile.company.as_deref(),
                "lastActivityAt": state.last_activity_at.map(format_utc),
                "eventCount": state.events,
                "stage": set.stage_of(*score),
            }))
        })
        .collect();
    Ok(HttpResponse::json(
        200,
        &json!({"leads": rows, "asOf": format_utc(now)}),
    ))
}

/// `GET /v1/leads/{leadId}`: the stored state advanced by any processed event whose stream batch
/// is still being scored, so a lead is current as soon as its events are processed.
pub(crate) async fn lead(
    leads: &dyn LeadReader,
    history: &dyn LeadHistory,
    rule_store: &dyn RuleStore,
    lead_id: &str,
    request: &HttpRequest,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    QueryParams::new(request, &[]).finish(Some(()))?;
    if lead_id.is_empty() || lead_id.chars().count() > MAX_LEAD_ID_LEN {
        return Err(ApiError::NotFound);
    }
    let ids = [lead_id];
    let (rules, stored) = futures::join!(rules(rule_store), leads.leads(&ids));
    let rules = rules?;
    let stored = stored
        .map_err(ApiError::analytics_down)?
        .remove(lead_id)
        .map(|r| r.state);
    let after = stored
        .as_ref()
        .and_then(|s| s.last.as_ref())
        .map(|(ts, id)| (*ts, id.as_str()));
    let events = history
        .latest_events(lead_id, after, RECENT_EVENTS)
        .await
        .map_err(ApiError::events_down)?;
    let view = lead_view(stored, &events, &rules.rules).ok_or(ApiError::NotFound)?;
    let state = &view.state;
    let recent: Vec<Value> = view
        .recent
        .iter()
        .map(|r| {
            json!({
                "eventId": r.event.event_id,
                "type": r.event.event_type,
                "timestamp": format_utc(r.event.timestamp),
                "points": r.points,
            })
        })
        .collect();
    let score = state.decayed_score(&rules.rules.decay, now);
    Ok(HttpResponse::json(
        200,
        &json!({
            "leadId": lead_id,
            "score": score,
            "stage": rules.rules.stage_of(score),
            "profile": {
                "email": state.profile.email,
                "name": state.profile.name,
                "company": state.profile.company,
            },
            "lastActivityAt": state.last_activity_at.map(format_utc),
            "eventCount": state.events,
            "eventCounts": state.event_counts,
            "recentEvents": recent,
        }),
    ))
}
