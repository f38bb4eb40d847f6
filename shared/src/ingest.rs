//! The ingest routes: authenticate, decode, normalize, queue, and answer in the batch shape.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::body::{self, MediaType, BATCH_LIMIT, MAX_BATCH_EVENTS, SINGLE_LIMIT};
use crate::config::IngestConfig;
use crate::counters::{CounterDelta, CounterSink};
use crate::csv_rows;
use crate::error::{list_details, ApiError, MAX_DETAILS};
use crate::event::{normalize, Event, FieldError, NormalizeContext};
use crate::http::{serve, HttpRequest, HttpResponse};
use crate::observability::Metrics;
use crate::queue::{pack_events, EventQueue, OutboundMessage, Packed, QueuedEvent};
use crate::request_latency::LatencyBuffer;
use crate::secrets::{Secrets, SecretsCache};
use crate::signature::{verify_facebook, verify_timestamped};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Single(SingleAnswer),
    Batch,
    Csv,
    FacebookVerify,
    Facebook,
    TikTok,
    Generic(String),
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Self::Single(_) => "POST /v1/events",
            Self::Batch => "POST /v1/events/batch",
            Self::Csv => "POST /v1/events/csv",
            Self::FacebookVerify => "GET /v1/webhooks/facebook",
            Self::Facebook => "POST /v1/webhooks/facebook",
            Self::TikTok => "POST /v1/webhooks/tiktok",
            Self::Generic(_) => "POST /v1/webhooks/{source}",
        }
    }

    fn resolve(method: &str, path: &str) -> Result<Self, ApiError> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let post_only = |route: Route| {
            if method == "POST" {
                Ok(route)
            } else {
                Err(ApiError::MethodNotAllowed { allow: "POST" })
            }
        };
        match path {
            // The replaced systems' spellings (deprecated aliases): the aggregation service's
            // `/api/events` answers as v1 does, EventFlow's `/events` in EventFlow's shape, and
            // the webhook reporter's `/api/webhook` is the generic route for source `webhook`.
            "/v1/events" | "/api/events" => post_only(Self::Single(SingleAnswer::V1)),
            "/events" => post_only(Self::Single(SingleAnswer::EventFlow)),
            "/api/webhook" => post_only(Self::Generic(LEGACY_WEBHOOK_SOURCE.to_owned())),
            "/v1/events/batch" => post_only(Self::Batch),
            "/v1/events/csv" => post_only(Self::Csv),
            "/v1/webhooks/facebook" => match method {
                "GET" => Ok(Self::FacebookVerify),
                "POST" => Ok(Self::Facebook),
                _ => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            },
            "/v1/webhooks/tiktok" => post_only(Self::TikTok),
            _ => match path.strip_prefix("/v1/webhooks/") {
                Some(source) if !source.is_empty() && !source.contains('/') => {
                    post_only(Self::Generic(source.to_owned()))
                }
                _ => Err(ApiError::NotFound),
            },
        }
    }
}

/// How `POST /v1/events` and its aliases answer an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SingleAnswer {
    /// `202 {"eventId", "status": "queued"}`.
    V1,
    /// EventFlow's `201 {"success": true, "eventId", "message"}`.
    EventFlow,
}

/// The source `POST /api/webhook` posts as: its signing secrets are the generic route's for it.
pub const LEGACY_WEBHOOK_SOURCE: &str = "webhook";

/// The ingest function's logic, generic over the queue and counter ports.
pub struct Ingest<Q, C> {
    config: IngestConfig,
    /// Keys and webhook secrets: the config's own, or read through from a secret store.
    secrets: SecretsCache,
    queue: Q,
    counters: C,
    /// Request times by route, for `/metrics`.
    latencies: Option<LatencyBuffer>,
}

/// Error details listed in one batch result, all items together: 10,000 CSV rows of a dozen
/// invalid fields each would otherwise answer about 10 MB, over Lambda's 6 MB response limit.
/// Past it, a rejected item keeps its code and message and counts its `omittedDetails`.
const MAX_RESULT_DETAILS: usize = 1_000;

/// Where an item sits in the request: `index` for JSON and NDJSON, `row` for CSV.
#[derive(Debug, Clone, Copy)]
enum Position {
    Index(usize),
    Row(usize),
}

impl Position {
    fn key(self) -> (&'static str, usize) {
        match self {
            Self::Index(i) => ("index", i),
            Self::Row(r) => ("row", r),
        }
    }
}

struct Item {
    position: Position,
    value: Result<Value, ItemError>,
}

struct ItemError {
    code: &'static str,
    message: String,
    details: Vec<FieldError>,
}

impl ItemError {
    fn validation(details: Vec<FieldError>) -> Self {
        let error = ApiError::validation(details);
        let message = error.to_string();
        let ApiError::Validation { details, .. } = error else {
            unreachable!()
        };
        Self {
            code: "VALIDATION_FAILED",
            message,
            details,
        }
    }

    /// The error with at most `budget` of its details (and at most [`MAX_DETAILS`]); spends
    /// what it lists from the budget.
    fn to_json(&self, budget: &mut usize) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        *budget -= list_details(&mut error, &self.details, (*budget).min(MAX_DETAILS));
        error
    }
}

/// What happened to the items of one request.
struct Outcome {
    results: Vec<Value>,
    accepted: usize,
    rejected: usize,
    delta: CounterDelta,
}

impl<Q: EventQueue, C: CounterSink> Ingest<Q, C> {
    pub fn new(config: IngestConfig, queue: Q, counters: C) -> Self {
        let secrets = SecretsCache::inline(Secrets {
            api_keys: config.api_keys.clone(),
            facebook: config.facebook.clone(),
            tiktok_secret: config.tiktok_secret.clone(),
            webhook_secrets: config.webhook_secrets.clone(),
        });
        Self {
            config,
            secrets,
            queue,
            counters,
            latencies: None,
        }
    }

    /// Records each request's time by route in `latencies`.
    pub fn with_latencies(mut self, latencies: LatencyBuffer) -> Self {
        self.latencies = Some(latencies);
        self
    }

    /// Reads keys and webhook secrets from `secrets` (on the first request that needs them,
    /// then as often as its time to live says) instead of the config.
    pub fn with_secrets(mut self, secrets: SecretsCache) -> Self {
        self.secrets = secrets;
        self
    }

    /// What `source` is counted under in the pipeline counters.
    fn counter_label<'a>(&self, secrets: &Secrets, source: &'a str) -> &'a str {
        self.config
            .counted_sources
            .label(source, secrets.webhook_secrets.for_source(source).is_some())
    }

    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        self.handle_at(request, Utc::now()).await
    }

    /// Handles a request as of `now` (the receive time stamped on its events).
    pub async fn handle_at(&self, request: HttpRequest, now: DateTime<Utc>) -> HttpResponse {
        serve(
            "ingest",
            &request,
            self.latencies.as_ref(),
            async |correlation_id, metrics| {
                self.route(&request, correlation_id, now, metrics).await
            },
        )
        .await
    }

    async fn route(
        &self,
        request: &HttpRequest,
        correlation_id: &str,
        now: DateTime<Utc>,
        metrics: &mut Metrics,
    ) -> Result<HttpResponse, ApiError> {
        let route = Route::resolve(&request.method, &request.path)?;
        info!(route = route.name(), "request");
        metrics.property("route", route.name());
        let secrets = &*self.secrets.get().await?;
        let outcome = match &route {
            Route::FacebookVerify => return self.facebook_handshake(secrets, request),
            Route::Single(_) | Route::Batch | Route::Csv => {
                let client = Client::authenticate(&secrets.api_keys, request, &route)?;
                let media = client.media_type(request);
                let limit = if matches!(route, Route::Single(_)) {
                    SINGLE_LIMIT
                } else {
                    BATCH_LIMIT
                };
                let items = match (&route, media) {
                    (Route::Single(answer), Some(MediaType::Json)) => {
                        let body = decode(request, limit)?;
                        let event_id = self
                            .single(secrets, &body, &client, correlation_id, now, metrics)
                            .await?;
                        return Ok(match answer {
                            SingleAnswer::V1 => HttpResponse::json(
                                202,
                                &json!({"eventId": event_id, "status": "queued"}),
                            ),
                            SingleAnswer::EventFlow => HttpResponse::json(
                                201,
                                &json!({
                                    "success": true,
                                    "eventId": event_id,
                                    "message": "Event accepted and queued for processing",
                                }),
                            ),
                        });
                    }
                    (Route::Batch, Some(MediaType::Json)) => {
                        json_items(&decode(request, limit)?, false)?
                    }
                    (Route::Batch, Some(MediaType::NdJson)) => {
                        ndjson_items(&decode(request, limit)?)?
                    }
                    (Route::Csv, Some(MediaType::Csv)) => csv_items(&decode(request, limit)?)?,
                    (Route::Csv, _) => {
                        return Err(ApiError::UnsupportedMediaType(
                            "Content-Type must be text/csv".into(),
                        ))
                    }
                    (Route::Batch, _) => {
                        return Err(ApiError::UnsupportedMediaType(
                            "Content-Type must be application/json or application/x-ndjson".into(),
                        ))
                    }
                    _ => {
                        return Err(ApiError::UnsupportedMediaType(
                            "Content-Type must be application/json".into(),
                        ))
                    }
                };
                self.accept(
                    secrets,
                    items,
                    Some(&client.ids),
                    Poster::Client(&client),
                    correlation_id,
                    now,
                )
                .await?
            }
            Route::Facebook => {
                return self
                    .facebook(secrets, request, correlation_id, now, metrics)
                    .await
            }
            Route::TikTok => {
                let secret = secrets.tiktok_secret.as_ref().ok_or(ApiError::NotFound)?;
                verify_timestamped(
                    std::slice::from_ref(secret),
                    request.header("tiktok-signature"),
                    "TikTok-Signature",
                    "s",
                    signed_raw_body(request)?,
                    now.timestamp(),
                )?;
                let ids = IdPolicy::webhook("tt:".into(), &request.body);
                let body = decode(request, SINGLE_LIMIT)?;
                self.accept(
                    secrets,
                    json_items(&body, true)?,
                    Some(&ids),
                    Poster::Webhook("tiktok"),
                    correlation_id,
                    now,
                )
                .await?
            }
            Route::Generic(source) => {
                let source_secrets = secrets
                    .webhook_secrets
                    .for_source(source)
                    .ok_or(ApiError::NotFound)?;
                verify_timestamped(
                    source_secrets,
                    request.header("x-signature"),
                    "X-Signature",
                    "v1",
                    signed_raw_body(request)?,
                    now.timestamp(),
                )?;
                let ids = IdPolicy::webhook(format!("wh:{source}:"), &request.body);
                let body = decode(request, SINGLE_LIMIT)?;
                self.accept(
                    secrets,
                    json_items(&body, true)?,
                    Some(&ids),
                    Poster::Webhook(source),
                    correlation_id,
                    now,
                )
                .await?
            }
        };
        metrics.count("EventsAccepted", outcome.accepted as u64);
        metrics.count("EventsRejected", outcome.rejected as u64);
        self.count(&outcome.delta, metrics).await;
        info!(
            accepted = outcome.accepted,
            rejected = outcome.rejected,
            "batch handled"
        );
        let status = if outcome.rejected == 0 { 202 } else { 207 };
        Ok(HttpResponse::json(
            status,
            &json!({"accepted": outcome.accepted, "rejected": outcome.rejected, "results": outcome.results}),
        ))
    }

    async fn single(
        &self,
        secrets: &Secrets,
        body: &[u8],
        client: &Client,
        correlation_id: &str,
        now: DateTime<Utc>,
        metrics: &mut Metrics,
    ) -> Result<String, ApiError> {
        let mut value = parse_json(body)?;
        if value.is_array() {
            return Err(ApiError::validation(vec![FieldError::new(
                "",
                "expected one event object; send arrays to /v1/events/batch",
            )]));
        }
        client
            .ids
            .apply(&mut value, 0)
            .map_err(|e| ApiError::validation(vec![e]))?;
        let ctx = NormalizeContext {
            received_at: now,
            limits: self.config.limits,
            default_source: client.default_source(),
        };
        let event = normalize(value, &ctx).map_err(ApiError::validation)?;
        client.check(&event)?;
        let json = event
            .to_canonical_json()
            .map_err(|e| ApiError::PayloadTooLarge(e.message.into_owned()))?;
        let label = self.counter_label(secrets, &event.source);
        let messages = messages(&[(&event, json.as_str(), label)], correlation_id, now)?;
        if !self.queue.send(&messages).await.failed.is_empty() {
            return Err(ApiError::unavailable("queue"));
        }
        let mut delta = CounterDelta::default();
        delta.accepted_by_source.insert(label.to_owned(), 1);
        metrics.count("EventsAccepted", 1);
        self.count(&delta, metrics).await;
        info!(event_id = %event.event_id, "event queued");
        Ok(event.event_id)
    }

    /// Normalizes every item (after `ids` has checked, prefixed or derived its id), queues the
    /// valid ones that `poster` may post, and reports each item's fate in order.
    async fn accept(
        &self,
        secrets: &Secrets,
        items: Vec<Item>,
        ids: Option<&IdPolicy>,
        poster: Poster<'_>,
        correlation_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, ApiError> {
        let ctx = NormalizeContext {
            received_at: now,
            limits: self.config.limits,
            default_source: match poster {
                Poster::Client(client) => client.default_source(),
                Poster::Webhook(source) => source,
            },
        };
        let mut results: Vec<Value> = Vec::with_capacity(items.len());
        let mut details_budget = MAX_RESULT_DETAILS;
        // (position in `results`, event, canonical JSON) of each accepted item, in send order.
        let mut queued: Vec<(usize, Event, String)> = Vec::new();
        for item in items {
            let (key, number) = item.position.key();
            let prepared = item.value.and_then(|mut value| {
                if let Some(ids) = ids {
                    ids.apply(&mut value, number)
                        .map_err(|e| ItemError::validation(vec![e]))?;
                }
                let event = normalize(value, &ctx).map_err(ItemError::validation)?;
                if let Poster::Client(client) = poster {
                    client.check(&event)?;
                }
                let json = event.to_canonical_json().map_err(|e| ItemError {
                    code: "PAYLOAD_TOO_LARGE",
                    message: e.message.into_owned(),
                    details: Vec::new(),
                })?;
                Ok((event, json))
            });
            match prepared {
                Ok((event, json)) => {
                    results
                        .push(json!({key: number, "eventId": event.event_id, "status": "queued"}));
                    queued.push((results.len() - 1, event, json));
                }
                Err(error) => results.push(json!({
                    key: number,
                    "status": "rejected",
                    "error": error.to_json(&mut details_budget),
                })),
            }
        }

        let events: Vec<(&Event, &str, &str)> = queued
            .iter()
            .map(|(_, e, j)| (e, j.as_str(), self.counter_label(secrets, &e.source)))
            .collect();
        let packed = pack(&events, correlation_id, now)?;
        let messages: Vec<OutboundMessage> = packed.iter().map(|p| p.message.clone()).collect();
        let report = self.queue.send(&messages).await;
        if !report.failed.is_empty() {
            // Every item of a message that could not be queued is to be retried.
            let details = report
                .failed
                .iter()
                .filter_map(|m| packed.get(*m))
                .flat_map(|p| p.events.clone())
                .filter_map(|i| queued.get(i))
                .map(|(r, _, _)| {
                    FieldError::new(
                        format!("/results/{r}"),
                        "could not be queued; retry this item",
                    )
                })
                .collect();
            return Err(ApiError::Unavailable {
                dependency: "queue",
                details,
            });
        }

        let mut delta = CounterDelta::default();
        for (_, _, label) in &events {
            *delta
                .accepted_by_source
                .entry((*label).to_owned())
                .or_default() += 1;
        }
        let rejected = results.len() - queued.len();
        delta.rejected = rejected as u64;
        Ok(Outcome {
            accepted: queued.len(),
            rejected,
            results,
            delta,
        })
    }

    /// Counters are observability, not the source of truth: a failed write is logged, not fatal.
    async fn count(&self, delta: &CounterDelta, metrics: &mut Metrics) {
        if delta.is_empty() {
            return;
        }
        if let Err(error) = self.counters.add(delta).await {
            warn!(%error, "pipeline counters not updated");
            metrics.count("CounterWriteFailures", 1);
        }
    }

    fn facebook_handshake(
        &self,
        secrets: &Secrets,
        request: &HttpRequest,
    ) -> Result<HttpResponse, ApiError> {
        let facebook = secrets.facebook.as_ref().ok_or(ApiError::NotFound)?;
        let token_ok = request
            .query("hub.verify_token")
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(facebook.verify_token.as_bytes())));
        if request.query("hub.mode") != Some("subscribe") || !token_ok {
            return Err(ApiError::Forbidden(
                "verification token or mode does not match",
            ));
        }
        let challenge = request.query("hub.challenge").unwrap_or_default();
        // Only a plain token is echoed back, so the handshake cannot reflect markup.
        let plain = !challenge.is_empty()
            && challenge.len() <= 128
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(ApiError::validation(vec![FieldError::new(
                "/hub.challenge",
                "must be 1-128 letters, digits, - or _",
            )]));
        }
        Ok(HttpResponse::text(200, challenge.to_owned()))
    }

    async fn facebook(
        &self,
        secrets: &Secrets,
        request: &HttpRequest,
        correlation_id: &str,
        now: DateTime<Utc>,
        metrics: &mut Metrics,
    ) -> Result<HttpResponse, ApiError> {
        let facebook = secrets.facebook.as_ref().ok_or(ApiError::NotFound)?;
        verify_facebook(
            &facebook.app_secret,
            request.header("x-hub-signature-256"),
            signed_raw_body(request)?,
        )?;
        let body = decode(request, SINGLE_LIMIT)?;
        let (items, ignored) = facebook_items(parse_json(&body)?)?;
        // Leadgen events are built here with their `fb:` ids; no client id to police.
        let outcome = self
            .accept(
                secrets,
                items,
                None,
                Poster::Webhook("facebook"),
                correlation_id,
                now,
            )
            .await?;
        for rejected in outcome.results.iter().filter(|r| r["status"] == "rejected") {
            warn!(error = %rejected["error"], "facebook leadgen change rejected");
        }
        metrics.count("EventsAccepted", outcome.accepted as u64);
        metrics.count("EventsRejected", outcome.rejected as u64);
        metrics.count("WebhookChangesIgnored", ignored as u64);
        self.count(&outcome.delta, metrics).await;
        info!(
            accepted = outcome.accepted,
            rejected = outcome.rejected,
            ignored,
            "facebook webhook handled"
        );
        Ok(HttpResponse::json(
            200,
            &json!({"received": outcome.accepted, "rejected": outcome.rejected, "ignored": ignored}),
        ))
    }
}

/// Accepted events packed into work-queue messages, many to a message.
/// Packs events with their canonical JSON and the source label their acceptance is counted
/// under.
fn pack(
    events: &[(&Event, &str, &str)],
    correlation_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Packed>, ApiError> {
    let queued: Vec<QueuedEvent<'_>> = events
        .iter()
        .map(|(event, json, label)| QueuedEvent {
            json,
            event_type: &event.event_type,
            source: &event.source,
            counted_as: Some(label),
        })
        .collect();
    pack_events(&queued, correlation_id, now).map_err(|_| ApiError::Internal)
}

fn messages(
    events: &[(&Event, &str, &str)],
    correlation_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<OutboundMessage>, ApiError> {
    Ok(pack(events, correlation_id, now)?
        .into_iter()
        .map(|p| p.message)
        .collect())
}

/// The caller's `X-Correlation-Id` when it is a plain token, else a fresh one.
fn decode(request: &HttpRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    body::decode(&request.body, request.header("content-encoding"), limit)
}

/// The bytes a webhook signs: the body as received (still compressed, if it is), after the
/// checks that cost nothing: JSON (or unlabelled) and at most 1 MiB. Nothing is inflated until
/// the signature has been verified.
fn signed_raw_body(request: &HttpRequest) -> Result<&[u8], ApiError> {
    if body::media_type(request.header("content-type")) != Some(MediaType::Json) {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    if request.body.len() > SINGLE_LIMIT {
        return Err(ApiError::PayloadTooLarge(format!(
            "body exceeds {SINGLE_LIMIT} bytes"
        )));
    }
    Ok(&request.body)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidJson(format!(
            "body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A JSON array of events, or (webhooks only) a single event object. Items are counted as they
/// are parsed: the 501st stops the parse, so an oversized batch is never held in memory whole.
fn json_items(body: &[u8], single_allowed: bool) -> Result<Vec<Item>, ApiError> {
    let values = match bounded_json::parse(body, MAX_BATCH_EVENTS)? {
        bounded_json::Body::Array(values) => values,
        bounded_json::Body::Object(event) if single_allowed => vec![event],
        _ => {
            return Err(ApiError::validation(vec![FieldError::new(
                "",
                "body must be a JSON array of events",
            )]));
        }
    };
    check_count(values.len(), MAX_BATCH_EVENTS)?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Item {
            position: Position::Index(i),
            value: Ok(value),
        })
        .collect())
}

fn ndjson_items(body: &[u8]) -> Result<Vec<Item>, ApiError> {
    // One past the limit is enough to refuse the batch.
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .take(MAX_BATCH_EVENTS + 1)
        .collect();
    check_count(lines.len(), MAX_BATCH_EVENTS)?;
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| Item {
            position: Position::Index(i),
            value: serde_json::from_slice(line).map_err(|e| ItemError {
                code: "INVALID_JSON",
                message: format!("line is not valid JSON (column {})", e.column()),
                details: Vec::new(),
            }),
        })
        .collect())
}

fn check_count(n: usize, max: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "a batch needs at least one event",
        )]));
    }
    if n > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "a batch holds at most {max} events; this one has {n}"
        )));
    }
    Ok(())
}

fn csv_items(body: &[u8]) -> Result<Vec<Item>, ApiError> {
    Ok(csv_rows::parse(body)?
        .into_iter()
        .map(|r| Item {
            position: Position::Row(r.row),
            value: r.item.map_err(|e| ItemError::validation(vec![e])),
        })
        .collect())
}

/// Each `leadgen` change becomes one canonical `FORM_SUBMISSION` event; anything else is ignored
/// (and counted). Returns the items and the number of ignored changes.
fn facebook_items(body: Value) -> Result<(Vec<Item>, usize), ApiError> {
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::validation(vec![FieldError::new("/entry", "must be an array")]))?;
    let mut items = Vec::new();
    let mut ignored = 0;
    for change in entries.iter().flat_map(|e| {
        e.get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }) {
        if change.get("field").and_then(Value::as_str) != Some("leadgen") {
            ignored += 1;
            continue;
        }
        let value = change.get("value").cloned().unwrap_or(Value::Null);
        let position = Position::Index(items.len());
        items.push(Item {
            position,
            value: leadgen_event(value),
        });
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::PayloadTooLarge(format!(
            "a delivery holds at most {MAX_BATCH_EVENTS} leadgen changes"
        )));
    }
    Ok((items, ignored))
}

fn leadgen_event(value: Value) -> Result<Value, ItemError> {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let Value::Object(fields) = &value else {
        return Err(ItemError::validation(vec![FieldError::new(
            "/value",
            "must be an object",
        )]));
    };
    let leadgen_id = text(fields.get("leadgen_id")).ok_or_else(|| {
        ItemError::validation(vec![FieldError::new("/value/leadgen_id", "is required")])
    })?;
    let mut event = Map::new();
    event.insert("eventId".into(), json!(format!("fb:{leadgen_id}")));
    event.insert("leadId".into(), json!(format!("fb:{leadgen_id}")));
    event.insert("type".into(), json!("FORM_SUBMISSION"));
    event.insert("source".into(), json!("facebook"));
    if let Some(ad_id) = text(fields.get("ad_id")) {
        event.insert("campaignId".into(), json!(ad_id));
    }
    match fields.get("created_time") {
        Some(Value::Number(n)) => {
            let seconds = n.as_i64().ok_or_else(|| {
                ItemError::validation(vec![FieldError::new(
                    "/value/created_time",
                    "must be epoch seconds",
                )])
            })?;
            event.insert("timestamp".into(), json!(seconds.saturating_mul(1000)));
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(ItemError::validation(vec![FieldError::new(
                "/value/created_time",
                "must be epoch seconds",
            )]))
        }
    }
    event.insert("payload".into(), value);
    Ok(Value::Object(event))
}

mod bounded_json;
mod client;
mod ids;

use client::Client;
pub use client::TRACK_SOURCE;

/// Who posts a request's items: an API client (its key's rules apply), or a webhook (its
/// events' default source).
#[derive(Clone, Copy)]
enum Poster<'a> {
    Client(&'a Client),
    Webhook(&'a str),
}

use ids::IdPolicy;
pub use ids::RESERVED_PREFIXES;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod accepted_tests;

#[cfg(test)]
mod fuzz_tests;
