//! The `admin` function: what a person on call needs (scope `admin`): the pipeline's metrics, the
//! failed events and why, one stored event with its status, replaying one event, and redriving
//! the dead-letter queue.

mod failed;
mod metrics;

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tracing::info;
use uuid::Uuid;

use crate::aggregation::AggregateReader;
use crate::auth::{ApiKeys, Scope};
use crate::body::{self, MediaType, SINGLE_LIMIT};
use crate::counters::CounterSink;
use crate::error::ApiError;
use crate::event::{Event, FieldError};
use crate::http::{serve, HttpRequest, HttpResponse};
use crate::observability::Metrics;
use crate::ops::QueueStats;
use crate::queue::{pack_events, EventQueue, OutboundMessage, QueuedEvent};
use crate::redrive::{RedriveQueues, RedriveRequest, Redriver};
use crate::request_latency::LatencyBuffer;
use crate::scoring::{LeadFailures, LeadRecompute};
use crate::secrets::{Secrets, SecretsCache};
use crate::store::{EventStatus, EventStore, StatusChange, StoredEvent};

pub use failed::{FailedEvent, FailedEvents, FailedKey, FailedPage};

/// What the admin routes read and write, each behind its port.
#[derive(Clone)]
pub struct AdminPorts {
    pub events: Arc<dyn EventStore>,
    pub failed: Arc<dyn FailedEvents>,
    /// The work queue replays go to.
    pub work_queue: Arc<dyn EventQueue>,
    pub redrive: Arc<dyn RedriveQueues>,
    /// The pipeline counters `ingest` and `process` keep.
    pub counters: Arc<dyn CounterSink>,
    /// The hourly aggregates (`eventsByType`).
    pub aggregates: Arc<dyn AggregateReader>,
    pub work_queue_stats: Arc<dyn QueueStats>,
    pub dead_letter_stats: Arc<dyn QueueStats>,
    /// Lead scores: one re-folded now, or all requested.
    pub leads: Arc<dyn LeadRecompute>,
    /// Leads the scorer could not write.
    pub lead_failures: Arc<dyn LeadFailures>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metrics,
    Failed,
    Event(String),
    Replay(String),
    Redrive,
    Recompute,
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Self::Metrics => "GET /v1/admin/metrics",
            Self::Failed => "GET /v1/admin/events/failed",
            Self::Event(_) => "GET /v1/admin/events/{eventId}",
            Self::Replay(_) => "POST /v1/admin/events/{eventId}/replay",
            Self::Redrive => "POST /v1/admin/redrive",
            Self::Recompute => "POST /v1/admin/leads/recompute",
        }
    }

    /// The route and the dialect it answers in. EventFlow's `/admin/...` paths are deprecated
    /// aliases of the v1 routes it had (not redrive nor recompute), answered in its shapes.
    fn resolve(method: &str, path: &str) -> Result<(Self, Dialect), ApiError> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some(rest) = path.strip_prefix("/admin/") {
            // Not EventFlow's: unknown whatever the method.
            if rest == "redrive" || rest.starts_with("leads/") {
                return Err(ApiError::NotFound);
            }
            return Ok((
                Self::resolve_v1(method, &format!("/v1/admin/{rest}"))?,
                Dialect::EventFlow,
            ));
        }
        Ok((Self::resolve_v1(method, path)?, Dialect::V1))
    }

    fn resolve_v1(method: &str, path: &str) -> Result<Self, ApiError> {
        let (route, allow) = if path == "/v1/admin/metrics" {
            (Self::Metrics, "GET")
        } else if path == "/v1/admin/events/failed" {
            (Self::Failed, "GET")
        } else if path == "/v1/admin/redrive" {
            (Self::Redrive, "POST")
        } else if path == "/v1/admin/leads/recompute" {
            (Self::Recompute, "POST")
        } else if let Some(rest) = path.strip_prefix("/v1/admin/events/") {
            match rest.strip_suffix("/replay") {
                Some(id) => (Self::Replay(decoded(id)?), "POST"),
                None => (Self::Event(decoded(rest)?), "GET"),
            }
        } else {
            return Err(ApiError::NotFound);
        };
        if method == allow {
            Ok(route)
        } else {
            Err(ApiError::MethodNotAllowed { allow })
        }
    }
}

/// Which system's shapes a route answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V1,
    /// The EventFlow service's: a numbered failed list, and its replay and metrics bodies.
    EventFlow,
}

/// One percent-decoded path segment; an empty, nested or undecodable one names no route.
fn decoded(segment: &str) -> Result<String, ApiError> {
    crate::http::path_segment(segment).ok_or(ApiError::NotFound)
}

/// An event queued again, and what it was before.
struct Replayed {
    event_id: String,
    event_type: String,
    previous_status: EventStatus,
    attempts: u32,
}

pub struct AdminApi {
    keys: SecretsCache,
    ports: AdminPorts,
    /// Request times by route, for `/metrics`.
    latencies: Option<LatencyBuffer>,
}

impl AdminApi {
    pub fn new(keys: ApiKeys, ports: AdminPorts) -> Self {
        Self {
            keys: SecretsCache::inline(Secrets {
                api_keys: keys,
                ..Secrets::default()
            }),
            ports,
            latencies: None,
        }
    }

    /// Records each request's time by route in `latencies`.
    pub fn with_latencies(mut self, latencies: LatencyBuffer) -> Self {
        self.latencies = Some(latencies);
        self
    }

    /// Reads the keys from `secrets` instead.
    pub fn with_secrets(mut self, secrets: SecretsCache) -> Self {
        self.keys = secrets;
        self
    }

    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        serve(
            "admin",
            &request,
            self.latencies.as_ref(),
            async |correlation_id, metrics| self.route(&request, correlation_id, metrics).await,
        )
        .await
    }

    async fn route(
        &self,
        request: &HttpRequest,
        correlation_id: &str,
        metrics: &mut Metrics,
    ) -> Result<HttpResponse, ApiError> {
        let (route, dialect) = Route::resolve(&request.method, &request.path)?;
        info!(route = route.name(), ?dialect, "request");
        metrics.property("route", route.name());
        self.keys
            .get()
            .await?
            .api_keys
            .authorize(request.header("authorization"), Scope::Admin)?;
        let response = match &route {
            Route::Metrics => {
                let p = &self.ports;
                let body = metrics::metrics(
                    &*p.counters,
                    &*p.aggregates,
                    &p.work_queue_stats,
                    &p.dead_letter_stats,
                    &*p.lead_failures,
                    Utc::now(),
                )
                .await?;
                let body = match dialect {
                    Dialect::V1 => body,
                    Dialect::EventFlow => metrics::eventflow(&body),
                };
                HttpResponse::json(200, &body)
            }
            Route::Failed => match dialect {
                Dialect::V1 => failed::list(&*self.ports.failed, request).await?,
                Dialect::EventFlow => failed::numbered_page(&*self.ports.failed, request).await?,
            },
            Route::Event(id) => self.event(id).await?,
            Route::Replay(id) => {
                let replayed = self.replay(id, correlation_id, metrics).await?;
                match dialect {
                    Dialect::V1 => HttpResponse::json(
                        202,
                        &json!({
                            "eventId": replayed.event_id,
                            "status": "queued",
                            "previousStatus": replayed.previous_status.as_str(),
                        }),
                    ),
                    Dialect::EventFlow => HttpResponse::json(
                        200,
                        &json!({
                            "success": true,
                            "message": "Event queued for replay",
                            "event": {
                                "eventId": replayed.event_id,
                                "type": replayed.event_type,
                                "status": "queued",
                                "previousStatus": replayed.previous_status.as_str(),
                                "attempts": replayed.attempts,
                            },
                        }),
                    ),
                }
            }
            Route::Redrive => self.redrive(request).await?,
            Route::Recompute => self.recompute(request, metrics).await?,
        };
        metrics.count("AdminRequests", 1);
        Ok(response)
    }

    async fn stored(&self, event_id: &str) -> Result<StoredEvent, ApiError> {
        self.ports
            .events
            .get(event_id)
            .await
            .map_err(ApiError::events_down)?
            .ok_or(ApiError::UnknownItem("no such event"))
    }

    async fn event(&self, event_id: &str) -> Result<HttpResponse, ApiError> {
        let stored = self.stored(event_id).await?;
        let event: Value = stored
            .event_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or(Value::Null);
        Ok(HttpResponse::json(
            200,
            &json!({
                "eventId": stored.event_id,
                "status": stored.status.as_str(),
                "attempts": stored.attempts,
                "receivedAt": stored.received_at,
                "processedAt": stored.processed_at,
                "failedAt": stored.failed_at,
                "failureReason": stored.failure_reason,
                "correlationId": stored.correlation_id,
                "event": event,
                "history": stored.history.iter().map(history_entry).collect::<Vec<_>>(),
                "historyOmitted": stored.history_omitted,
            }),
        ))
    }

    /// Queues the stored event again as a new submission; `process` then stores it as if it had
    /// just arrived (its original `receivedAt` kept, so the age rules judge it as before).
    async fn replay(
        &self,
        event_id: &str,
        correlation_id: &str,
        metrics: &mut Metrics,
    ) -> Result<Replayed, ApiError> {
        let stored = self.stored(event_id).await?;
        if stored.status == EventStatus::Processed {
            return Err(ApiError::Conflict(
                "the event is processed; replaying it would change nothing".into(),
            ));
        }
        let (Some(json), Some(event)) = (
            stored.event_json.as_deref(),
            stored
                .event_json
                .as_deref()
                .and_then(|j| serde_json::from_str::<Event>(j).ok()),
        ) else {
            return Err(ApiError::Conflict(
                "the event's content was not kept (it never was a valid event); nothing to replay"
                    .into(),
            ));
        };
        let received_at = stored
            .received_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        let correlation = stored.correlation_id.as_deref().unwrap_or(correlation_id);
        let queued = QueuedEvent {
            json,
            event_type: &event.event_type,
            source: &event.source,
            // Counted at ingest already; process labels it by its own list.
            counted_as: None,
        };
        let messages: Vec<OutboundMessage> = pack_events(&[queued], correlation, received_at)
            .map_err(|_| ApiError::Internal)?
            .into_iter()
            .map(|p| p.message)
            .collect();
        let report = self.ports.work_queue.send(&messages).await;
        if !report.failed.is_empty() {
            return Err(ApiError::unavailable("work queue"));
        }
        metrics.count("EventsReplayed", 1);
        info!(event_id, status = stored.status.as_str(), "event replayed");
        // After the send, so the history never claims a replay that did not happen; the replayed
        // message may be processed first, and then its history ends with PROCESSED instead.
        if let Err(e) = self
            .ports
            .events
            .record_replay(event_id, Utc::now(), correlation)
            .await
        {
            tracing::warn!(event_id, error = %e, "replayed, but the history does not say so");
        }
        Ok(Replayed {
            event_id: event_id.to_owned(),
            event_type: event.event_type,
            previous_status: stored.status,
            attempts: stored.attempts,
        })
    }

    /// One lead is re-folded before the answer; all of them are requested, and the rollup's
    /// `recompute-requested` task works through them shard by shard.
    async fn recompute(
        &self,
        request: &HttpRequest,
        metrics: &mut Metrics,
    ) -> Result<HttpResponse, ApiError> {
        let leads = match recompute_target(request)? {
            Some(lead_id) => {
                let found = self
                    .ports
                    .leads
                    .recompute_now(&lead_id, Utc::now())
                    .await
                    .map_err(ApiError::analytics_down)?;
                if !found {
                    return Err(ApiError::UnknownItem("no such lead"));
                }
                info!(lead_id, "lead recomputed");
                1
            }
            None => {
                let job_id = Uuid::now_v7().to_string();
                let leads = self
                    .ports
                    .leads
                    .request_all(job_id.clone(), Utc::now())
                    .await
                    .map_err(ApiError::analytics_down)?;
                info!(job_id, leads, "recompute of every lead requested");
                leads
            }
        };
        metrics.count("LeadRecomputeRequests", 1);
        Ok(HttpResponse::json(202, &json!({"leads": leads})))
    }

    async fn redrive(&self, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let parsed = redrive_request(request)?;
        let report = Redriver::new(self.ports.redrive.clone())
            .redrive(&parsed)
            .await
            .map_err(|_| ApiError::unavailable("dead-letter queue"))?;
        Ok(HttpResponse::json(200, &json!(report)))
    }
}

fn history_entry(change: &StatusChange) -> Value {
    let mut entry = json!({"status": change.status, "at": change.at});
    if let Some(attempts) = change.attempts {
        entry["attempts"] = json!(attempts);
    }
    if let Some(reason) = &change.reason {
        entry["reason"] = json!(reason);
    }
    if let Some(id) = &change.correlation_id {
        entry["correlationId"] = json!(id);
    }
    entry
}

/// An optional JSON object body: `None` when there is none.
fn optional_object(request: &HttpRequest) -> Result<Option<Map<String, Value>>, ApiError> {
    let raw = body::decode(
        &request.body,
        request.header("content-encoding"),
        SINGLE_LIMIT,
    )?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if body::media_type(request.header("content-type")) != Some(MediaType::Json) {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(ApiError::validation(vec![FieldError::new(
            "/",
            "must be an object",
        )])),
        Err(_) => Err(ApiError::InvalidJson("the body is not valid JSON".into())),
    }
}

/// The body of `POST /v1/admin/leads/recompute`: the lead to recompute now, or none for all.
fn recompute_target(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(object) = optional_object(request)? else {
        return Ok(None);
    };
    let mut lead_id = None;
    let mut errors = Vec::new();
    for (key, value) in &object {
        match (key.as_str(), value) {
            ("leadId", Value::String(id)) if !id.is_empty() && id.chars().count() <= 128 => {
                lead_id = Some(id.clone());
            }
            ("leadId", _) => errors.push(FieldError::new(
                "/leadId",
                "must be a string of 1 to 128 characters",
            )),
            _ => errors.push(FieldError::new(
                "/",
                "has an unknown field (only leadId is allowed)",
            )),
        }
    }
    if errors.is_empty() {
        Ok(lead_id)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The body of `POST /v1/admin/redrive` (none: the defaults), every problem named without
/// quoting the input.
fn redrive_request(request: &HttpRequest) -> Result<RedriveRequest, ApiError> {
    let Some(object) = optional_object(request)? else {
        return Ok(RedriveRequest::default());
    };
    let mut request = RedriveRequest::default();
    let mut errors = Vec::new();
    let count = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    for (key, value) in &object {
        match key.as_str() {
            "maxMessages" => match count(value) {
                Some(n) => request.max_messages = n,
                None => errors.push(FieldError::new("/maxMessages", "must be an integer")),
            },
            "ratePerSecond" => match count(value) {
                Some(n) => request.rate_per_second = n,
                None => errors.push(FieldError::new("/ratePerSecond", "must be an integer")),
            },
            "dryRun" => match value.as_bool() {
                Some(b) => request.dry_run = b,
                None => errors.push(FieldError::new("/dryRun", "must be true or false")),
            },
            _ => errors.push(FieldError::new(
                "/",
                "has an unknown field (maxMessages, dryRun and ratePerSecond are allowed)",
            )),
        }
    }
    errors.extend(
        request
            .problems()
            .into_iter()
            .map(|(field, message)| FieldError::new(format!("/{field}"), message)),
    );
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(ApiError::validation(errors))
    }
}

#[cfg(test)]
mod tests;
