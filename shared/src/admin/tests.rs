//! The admin routes over in-memory ports: scopes, routing, every refusal, replay, the failed
//! listing's pages across statuses, and redrive input.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::*;
use crate::queue::SendReport;
use crate::redrive::{DeadLetter, QueueError};
use crate::scoring::{MemoryHistory, MemoryLeads, MemoryRules, RecomputeJobs, ScoredEvent};
use crate::store::{FailureRecord, ProcessedRecord, StoreError, StoreOutcome};

#[derive(Default)]
struct MemoryEvents(Mutex<HashMap<String, StoredEvent>>);

#[async_trait]
impl EventStore for MemoryEvents {
    async fn store_processed(&self, _: &ProcessedRecord) -> Result<StoreOutcome, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn record_failure(&self, _: &FailureRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn record_replay(
        &self,
        event_id: &str,
        at: chrono::DateTime<chrono::Utc>,
        correlation_id: &str,
    ) -> Result<(), StoreError> {
        let mut events = self
            .0
            .lock()
            .map_err(|_| StoreError::Unavailable("lock".into()))?;
        if let Some(event) = events.get_mut(event_id) {
            if event.status != EventStatus::Processed {
                event.history.push(crate::store::StatusChange {
                    status: crate::store::REPLAYED.into(),
                    at: crate::event::format_utc(at),
                    attempts: None,
                    reason: None,
                    correlation_id: Some(correlation_id.into()),
                });
            }
        }
        Ok(())
    }
    async fn get(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let events = self
            .0
            .lock()
            .map_err(|_| StoreError::Unavailable("lock".into()))?;
        Ok(events.get(event_id).cloned())
    }
}

/// Per status, its events newest first; a page continues after the event its key names.
#[derive(Default)]
struct MemoryFailed {
    by_status: HashMap<&'static str, Vec<FailedEvent>>,
    calls: Mutex<usize>,
}

#[async_trait]
impl FailedEvents for MemoryFailed {
    async fn failed(
        &self,
        status: EventStatus,
        limit: u32,
        after: Option<&FailedKey>,
    ) -> Result<FailedPage, StoreError> {
        if let Ok(mut calls) = self.calls.lock() {
            *calls += 1;
        }
        let all = self
            .by_status
            .get(status.as_str())
            .cloned()
            .unwrap_or_default();
        let from = after.map_or(0, |key| {
            all.iter()
                .position(|e| e.event_id == key.event_id)
                .map_or(all.len(), |i| i + 1)
        });
        let to = (from + limit as usize).min(all.len());
        let events = all[from..to].to_vec();
        let next = (to < all.len())
            .then(|| events.last())
            .flatten()
            .map(|e| FailedKey {
                event_id: e.event_id.clone(),
                failed_at: e.failed_at.clone().unwrap_or_default(),
            });
        Ok(FailedPage { events, next })
    }

    async fn count(&self, status: EventStatus, cap: u64) -> Result<u64, StoreError> {
        let n = self.by_status.get(status.as_str()).map_or(0, Vec::len) as u64;
        Ok(n.min(cap))
    }
}

#[derive(Default)]
struct RecordingQueue(Mutex<Vec<OutboundMessage>>);

#[async_trait]
impl EventQueue for RecordingQueue {
    async fn send(&self, messages: &[OutboundMessage]) -> SendReport {
        if let Ok(mut sent) = self.0.lock() {
            sent.extend(messages.iter().cloned());
        }
        SendReport { failed: Vec::new() }
    }
}

/// Pipeline counters fixed at `totals`.
struct FixedCounters(crate::counters::CounterDelta);

#[async_trait]
impl CounterSink for FixedCounters {
    async fn add(&self, _: &crate::counters::CounterDelta) -> Result<(), StoreError> {
        Ok(())
    }
    async fn totals(&self) -> Result<crate::counters::CounterDelta, StoreError> {
        Ok(self.0.clone())
    }
}

/// Aggregates of the given events, by day.
struct EventAggregates(HashMap<String, crate::rollup::Rollup>);

#[async_trait]
impl AggregateReader for EventAggregates {
    async fn day(&self, day: &str) -> Result<crate::rollup::Rollup, StoreError> {
        Ok(self.0.get(day).cloned().unwrap_or_default())
    }
}

struct FixedDepth(u64);

#[async_trait]
impl QueueStats for FixedDepth {
    async fn depth(&self) -> Result<crate::ops::QueueDepth, StoreError> {
        Ok(crate::ops::QueueDepth {
            visible: self.0,
            in_flight: 1,
        })
    }
}

/// A dead-letter queue holding `depth` messages that never hands one out.
struct CountingDlq(u64);

#[async_trait]
impl RedriveQueues for CountingDlq {
    async fn receive(&self, _: u32, _: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(Vec::new())
    }
    async fn send_to_work(&self, m: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        Ok(vec![true; m.len()])
    }
    async fn delete(&self, m: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        Ok(vec![true; m.len()])
    }
    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        Ok(self.0)
    }
}

const EVENT: &str =
    r#"{"eventId":"dl-1","type":"PURCHASE","timestamp":"2026-11-30T10:00:00.000Z","source":"api"}"#;

fn stored(id: &str, status: EventStatus, json: Option<&str>) -> StoredEvent {
    StoredEvent {
        event_id: id.into(),
        status,
        attempts: 5,
        event_json: json.map(str::to_owned),
        submission_id: Some("sub-1".into()),
        correlation_id: Some("corr-1".into()),
        received_at: Some("2026-11-30T10:00:02.000Z".into()),
        processed_at: None,
        failed_at: Some("2026-11-30T10:05:00.000Z".into()),
        failure_reason: Some("store unavailable: ProvisionedThroughputExceeded".into()),
        history: vec![crate::store::StatusChange {
            status: status.as_str().into(),
            at: "2026-11-30T10:05:00.000Z".into(),
            attempts: Some(5),
            reason: Some("store unavailable: ProvisionedThroughputExceeded".into()),
            correlation_id: Some("corr-1".into()),
        }],
        history_omitted: 0,
    }
}

fn failed(id: &str, status: &str) -> FailedEvent {
    FailedEvent {
        event_id: id.into(),
        event_type: Some("PAGE_VIEW".into()),
        status: status.into(),
        failure_reason: Some("x".into()),
        attempts: 1,
        failed_at: Some("2026-11-30T10:05:00.000Z".into()),
    }
}

struct Fixture {
    api: AdminApi,
    queue: Arc<RecordingQueue>,
    failed: Arc<MemoryFailed>,
    leads: Arc<MemoryLeads>,
}

fn fixture() -> Result<Fixture, String> {
    let keys = ApiKeys::parse(&format!(
        "{}:read,{}:admin,{}:ingest",
        ApiKeys::digest("r"),
        ApiKeys::digest("a"),
        ApiKeys::digest("i")
    ))?;
    let events = MemoryEvents::default();
    let mut stored_events = HashMap::new();
    for (id, status, json) in [
        ("dl-1", EventStatus::DeadLetter, Some(EVENT)),
        ("ok-1", EventStatus::Processed, Some(EVENT)),
        ("garbage-1", EventStatus::Rejected, None),
    ] {
        stored_events.insert(id.to_owned(), stored(id, status, json));
    }
    *events.0.lock().map_err(|e| e.to_string())? = stored_events;
    let mut memory_failed = MemoryFailed::default();
    memory_failed.by_status.insert(
        "DEAD_LETTER",
        (0..3)
            .map(|i| failed(&format!("d{i}"), "DEAD_LETTER"))
            .collect(),
    );
    memory_failed.by_status.insert(
        "FAILED",
        (0..4).map(|i| failed(&format!("f{i}"), "FAILED")).collect(),
    );
    memory_failed.by_status.insert(
        "REJECTED",
        (0..2)
            .map(|i| failed(&format!("r{i}"), "REJECTED"))
            .collect(),
    );
    let queue = Arc::new(RecordingQueue::default());
    let failed = Arc::new(memory_failed);
    let leads = Arc::new(MemoryLeads::default());
    let history = Arc::new(MemoryHistory::default());
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
        .map_err(|e| e.to_string())?
        .with_timezone(&chrono::Utc);
    for (lead, id) in [("lead-a", "a1"), ("lead-a", "a2"), ("lead-b", "b1")] {
        history.store(lead, ScoredEvent::new(id, "PAGE_VIEW", at));
    }
    let mut totals = crate::counters::CounterDelta::default();
    totals.accepted_by_source.insert("api".into(), 8);
    totals.accepted_by_source.insert("web".into(), 4);
    (totals.processed, totals.duplicate, totals.failed) = (10, 1, 2);
    (totals.rejected, totals.dead_lettered) = (1, 1);
    for ms in [200, 300, 400, 400, 800, 900, 1_200, 1_500, 2_000, 40_000] {
        totals.latency.record(ms);
    }
    // Events of the last 24 hours (and one older, which does not count) by type.
    let now = chrono::Utc::now();
    let context = crate::event::NormalizeContext {
        received_at: now,
        limits: crate::event::Limits::default(),
        default_source: "api",
    };
    let mut days: HashMap<String, crate::rollup::Rollup> = HashMap::new();
    for (i, (event_type, hours_ago)) in [
        ("PAGE_VIEW", 1),
        ("PAGE_VIEW", 2),
        ("PAGE_VIEW", 23),
        ("PURCHASE", 3),
        ("PURCHASE", 5),
        ("EMAIL_OPEN", 4),
        ("EMAIL_OPEN", 30),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - chrono::Duration::hours(hours_ago);
        let event = crate::event::normalize(
            serde_json::json!({"eventId": format!("m{i}"), "type": event_type, "timestamp": at.timestamp_millis()}),
            &context,
        )
        .map_err(|e| format!("{e:?}"))?;
        days.entry(at.format("%Y-%m-%d").to_string())
            .or_default()
            .add(&event);
    }
    let api = AdminApi::new(
        keys,
        AdminPorts {
            events: Arc::new(events),
            failed: failed.clone(),
            work_queue: queue.clone(),
            redrive: Arc::new(CountingDlq(4)),
            counters: Arc::new(FixedCounters(totals)),
            aggregates: Arc::new(EventAggregates(days)),
            work_queue_stats: Arc::new(FixedDepth(6)),
            dead_letter_stats: Arc::new(FixedDepth(4)),
            leads: Arc::new(crate::scoring::Scorer::new(
                leads.clone(),
                history,
                Arc::new(MemoryRules::default()),
            )),
            lead_failures: leads.clone(),
        },
    );
    Ok(Fixture {
        api,
        queue,
        failed,
        leads,
    })
}

fn request(method: &str, path: &str, query: &[(&str, &str)], key: Option<&str>) -> HttpRequest {
    let request = HttpRequest::new(method, path).with_query(query);
    match key {
        Some(k) => request.with_bearer(k),
        None => request,
    }
}

async fn call(api: &AdminApi, request: HttpRequest) -> (u16, Value) {
    let response = api.handle(request).await;
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[tokio::test]
async fn only_admin_keys_reach_the_routes() -> Result<(), String> {
    let f = fixture()?;
    for (method, path) in [
        ("GET", "/v1/admin/metrics"),
        ("GET", "/v1/admin/events/failed"),
        ("GET", "/v1/admin/events/dl-1"),
        ("POST", "/v1/admin/events/dl-1/replay"),
        ("POST", "/v1/admin/redrive"),
        ("POST", "/v1/admin/leads/recompute"),
    ] {
        for (key, status) in [
            (None, 401),
            (Some("r"), 403),
            (Some("i"), 403),
            (Some("nope"), 401),
        ] {
            let (got, body) = call(&f.api, request(method, path, &[], key)).await;
            assert_eq!(got, status, "{method} {path} {key:?}: {body}");
        }
    }
    assert!(f.queue.0.lock().map(|q| q.is_empty()).unwrap_or(false));
    let (status, _) = call(
        &f.api,
        request("DELETE", "/v1/admin/redrive", &[], Some("a")),
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = call(&f.api, request("GET", "/v1/admin/nothing", &[], Some("a"))).await;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn one_event_with_its_status_and_unknown_ones_are_404() -> Result<(), String> {
    let f = fixture()?;
    let (status, body) = call(
        &f.api,
        request("GET", "/v1/admin/events/dl-1", &[], Some("a")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "DEAD_LETTER");
    assert_eq!(body["attempts"], 5);
    assert_eq!(
        body["failureReason"],
        "store unavailable: ProvisionedThroughputExceeded"
    );
    assert_eq!(body["event"]["type"], "PURCHASE");
    assert_eq!(
        body["history"],
        serde_json::json!([{"status": "DEAD_LETTER", "at": "2026-11-30T10:05:00.000Z", "attempts": 5,
            "reason": "store unavailable: ProvisionedThroughputExceeded", "correlationId": "corr-1"}])
    );
    let (status, body) = call(
        &f.api,
        request("GET", "/v1/admin/events/nope", &[], Some("a")),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    Ok(())
}

#[tokio::test]
async fn replay_queues_a_failed_event_as_it_was_and_refuses_the_rest() -> Result<(), String> {
    let f = fixture()?;
    let (status, body) = call(
        &f.api,
        request("POST", "/v1/admin/events/dl-1/replay", &[], Some("a")),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["previousStatus"], "DEAD_LETTER");
    let sent = f.queue.0.lock().map(|q| q.clone()).unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let envelope: Value = serde_json::from_str(&sent[0].body).unwrap_or(Value::Null);
    assert_eq!(
        envelope["events"],
        json!([serde_json::from_str::<Value>(EVENT).unwrap_or(Value::Null)])
    );
    assert_eq!(envelope["receivedAt"], "2026-11-30T10:00:02.000Z");
    assert_eq!(envelope["correlationId"], "corr-1");
    assert_ne!(envelope["submissionId"], "sub-1", "a new submission");
    assert_eq!(
        (sent[0].event_type.as_deref(), sent[0].source.as_deref()),
        (Some("PURCHASE"), Some("api"))
    );

    for (id, status) in [("ok-1", 409), ("garbage-1", 409), ("nope", 404)] {
        let path = format!("/v1/admin/events/{id}/replay");
        let (got, body) = call(&f.api, request("POST", &path, &[], Some("a"))).await;
        assert_eq!(got, status, "{id}: {body}");
    }
    assert_eq!(f.queue.0.lock().map(|q| q.len()).unwrap_or(0), 1);

    let (_, body) = call(
        &f.api,
        request("GET", "/v1/admin/events/dl-1", &[], Some("a")),
    )
    .await;
    let history = body["history"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<&str> = history
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(statuses, ["DEAD_LETTER", "REPLAYED"]);
    assert_eq!(history[1]["correlationId"], "corr-1");
    Ok(())
}

#[tokio::test]
async fn the_failed_list_pages_across_statuses_without_skipping_or_repeating() -> Result<(), String>
{
    let f = fixture()?;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut query = vec![("limit", "2")];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let (status, body) = call(
            &f.api,
            request("GET", "/v1/admin/events/failed", &query, Some("a")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .filter_map(|e| e["eventId"].as_str().map(str::to_owned)),
        );
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec!["d0", "d1", "d2", "f0", "f1", "f2", "f3", "r0", "r1"]
    );

    // One status only, and a cursor cannot switch it.
    let (_, body) = call(
        &f.api,
        request(
            "GET",
            "/v1/admin/events/failed",
            &[("status", "REJECTED")],
            Some("a"),
        ),
    )
    .await;
    let ids: Vec<&str> = body["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["eventId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec!["r0", "r1"]);
    assert!(body.get("nextCursor").is_none());
    let calls = f.failed.calls.lock().map(|c| *c).unwrap_or(0);
    // A cursor naming no real index key is refused, never passed to the store.
    let empty_key = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        r#"{"s":0,"k":{"e":"","t":""}}"#,
    );
    for query in [
        vec![("cursor", empty_key.as_str())],
        vec![("limit", "0")],
        vec![("limit", "101")],
        vec![("status", "PROCESSED")],
        vec![("cursor", "garbage")],
        vec![("limmit", "3")],
    ] {
        let (status, body) = call(
            &f.api,
            request("GET", "/v1/admin/events/failed", &query, Some("a")),
        )
        .await;
        assert_eq!(status, 400, "{query:?}: {body}");
        let named = body["error"]["details"][0]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(query.iter().any(|(k, _)| *k == named), "{query:?}: {body}");
    }
    assert_eq!(
        f.failed.calls.lock().map(|c| *c).unwrap_or(0),
        calls,
        "refusals read nothing"
    );
    Ok(())
}

#[tokio::test]
async fn redrive_takes_defaults_and_names_bad_fields() -> Result<(), String> {
    let f = fixture()?;
    let (status, body) = call(
        &f.api,
        request("POST", "/v1/admin/redrive", &[], Some("a")).with_json(r#"{"dryRun": true}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["moved"].as_u64(),
            body["remaining"].as_u64(),
            body["dryRun"].as_bool()
        ),
        (Some(0), Some(4), Some(true))
    );
    let (status, _) = call(&f.api, request("POST", "/v1/admin/redrive", &[], Some("a"))).await;
    assert_eq!(status, 200, "no body: the defaults");
    for (body, path) in [
        (r#"{"maxMessages": 0}"#, "/maxMessages"),
        (r#"{"maxMessages": "ten"}"#, "/maxMessages"),
        (r#"{"dryRun": "yes"}"#, "/dryRun"),
        (r#"{"ratePerSecond": 100000}"#, "/ratePerSecond"),
        (r#"{"<script>": 1}"#, "/"),
        ("[]", "/"),
    ] {
        let (status, answer) = call(
            &f.api,
            request("POST", "/v1/admin/redrive", &[], Some("a")).with_json(body),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            answer["error"]["details"][0]["path"], path,
            "{body}: {answer}"
        );
        assert!(!answer.to_string().contains("<script>"));
    }
    let (status, _) = call(
        &f.api,
        request("POST", "/v1/admin/redrive", &[], Some("a")).with_json("{nope"),
    )
    .await;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn metrics_sum_the_counters_the_last_day_by_type_and_the_queues() -> Result<(), String> {
    let f = fixture()?;
    let (status, body) = call(&f.api, request("GET", "/v1/admin/metrics", &[], Some("a"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"],
        serde_json::json!({"accepted": 12, "processed": 10, "duplicates": 1, "failed": 2, "deadLetter": 1, "rejected": 1})
    );
    assert_eq!(
        body["eventsByType"],
        serde_json::json!([
            {"eventType": "PAGE_VIEW", "count": 3},
            {"eventType": "PURCHASE", "count": 2},
            {"eventType": "EMAIL_OPEN", "count": 1}
        ]),
        "the event 30 hours old is left out; ties by type"
    );
    // Mean of the ten times; the 95th percentile falls in the bucket up to 60 s.
    assert_eq!(
        body["processingStats"],
        serde_json::json!({"averageProcessingTimeSeconds": 4.77, "p95ProcessingTimeSeconds": 60.0, "totalProcessed": 10})
    );
    assert_eq!(
        body["queues"],
        serde_json::json!({"workDepth": 6, "workInFlight": 1, "deadLetterDepth": 4})
    );
    assert_eq!(
        body["scoring"],
        serde_json::json!({"failedLeads": 0, "failures": []})
    );

    // Leads the scorer could not write are counted and listed with their reasons.
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
        .map_err(|e| e.to_string())?
        .with_timezone(&chrono::Utc);
    let failures: Vec<crate::scoring::LeadFailure> = (0..25)
        .map(|i| crate::scoring::LeadFailure::new(format!("lead-{i:02}"), "item too large", at))
        .collect();
    f.leads
        .record_failures(&failures)
        .await
        .map_err(|e| e.to_string())?;
    let (_, body) = call(&f.api, request("GET", "/v1/admin/metrics", &[], Some("a"))).await;
    assert_eq!(body["scoring"]["failedLeads"], 25);
    let listed = body["scoring"]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 20);
    assert_eq!(
        listed[0],
        serde_json::json!({"leadId": "lead-00", "reason": "item too large", "failedAt": "2026-11-02T10:00:00.000Z"})
    );
    Ok(())
}

#[tokio::test]
async fn recompute_folds_one_lead_now_and_requests_all() -> Result<(), String> {
    let f = fixture()?;
    let post = |body: Option<&str>| {
        let r = request("POST", "/v1/admin/leads/recompute", &[], Some("a"));
        match body {
            Some(b) => r.with_json(b),
            None => r,
        }
    };
    let (status, body) = call(&f.api, post(Some(r#"{"leadId": "lead-a"}"#))).await;
    assert_eq!((status, &body), (202, &serde_json::json!({"leads": 1})));
    let state = f
        .leads
        .lead("lead-a")
        .map(|r| (r.state.score, r.state.events));
    assert_eq!(
        state,
        Some((10, 2)),
        "two page views folded under the default rules"
    );
    assert_eq!(f.leads.lead("lead-b"), None, "only the lead asked for");

    let (status, body) = call(&f.api, post(Some(r#"{"leadId": "nobody"}"#))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    // All: the leads on the board now, to be folded by the rollup's task.
    let jobs = f.leads.current_job().await.map_err(|e| e.to_string())?;
    assert_eq!(jobs, None);
    let (status, body) = call(&f.api, post(None)).await;
    assert_eq!((status, &body), (202, &serde_json::json!({"leads": 1})));
    let job = f.leads.current_job().await.map_err(|e| e.to_string())?;
    assert_eq!(job.map(|j| (j.next_shard, j.leads)), Some((0, 1)));
    let (status, _) = call(&f.api, post(Some("{}"))).await;
    assert_eq!(status, 202, "an empty object means all too");

    for (body, status, code) in [
        (r#"{"leadId": ""}"#, 400, "VALIDATION_FAILED"),
        (r#"{"leadId": 7}"#, 400, "VALIDATION_FAILED"),
        (r#"{"lead": "x"}"#, 400, "VALIDATION_FAILED"),
        ("[]", 400, "VALIDATION_FAILED"),
        ("{", 400, "INVALID_JSON"),
    ] {
        let (got, answer) = call(&f.api, post(Some(body))).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let long = format!(r#"{{"leadId": "{}"}}"#, "x".repeat(129));
    assert_eq!(call(&f.api, post(Some(&long))).await.0, 400);
    let text = request("POST", "/v1/admin/leads/recompute", &[], Some("a"))
        .with_json("leadId=x")
        .with_header("content-type", "text/plain");
    assert_eq!(call(&f.api, text).await.0, 415);
    let get = request("GET", "/v1/admin/leads/recompute", &[], Some("a"));
    assert_eq!(call(&f.api, get).await.0, 405);
    Ok(())
}

#[tokio::test]
async fn eventflow_paths_answer_in_eventflow_shapes() -> Result<(), String> {
    let f = fixture()?;
    // The same scope as the v1 routes; redrive and recompute were never EventFlow's.
    for (method, path) in [
        ("GET", "/admin/metrics"),
        ("GET", "/admin/events/failed"),
        ("GET", "/admin/events/dl-1"),
        ("POST", "/admin/events/dl-1/replay"),
    ] {
        let (status, body) = call(&f.api, request(method, path, &[], Some("r"))).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    for (method, path) in [
        ("POST", "/admin/redrive"),
        ("GET", "/admin/redrive"),
        ("POST", "/admin/leads/recompute"),
    ] {
        let (status, _) = call(&f.api, request(method, path, &[], Some("a"))).await;
        assert_eq!(status, 404, "{method} {path}");
    }

    // Numbered pages over the same order as the cursor listing: 3 dead letters, 4 failures,
    // 2 rejections.
    let page = |page: &'static str, limit: &'static str, status: Option<&'static str>| {
        let mut query = vec![("page", page), ("limit", limit)];
        query.extend(status.map(|s| ("status", s)));
        request("GET", "/admin/events/failed", &query, Some("a"))
    };
    let ids = |body: &Value| -> Vec<String> {
        body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["eventId"].as_str().map(str::to_owned))
            .collect()
    };
    let mut all = Vec::new();
    for number in ["1", "2", "3", "4"] {
        let (status, body) = call(&f.api, page(number, "4", None)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["pagination"],
            json!({"page": number.parse::<u32>().unwrap_or(0), "limit": 4, "total": 9, "totalPages": 3})
        );
        all.extend(ids(&body));
    }
    assert_eq!(
        all,
        ["d0", "d1", "d2", "f0", "f1", "f2", "f3", "r0", "r1"],
        "each event once, in order, and page 4 is empty"
    );
    let (_, body) = call(&f.api, page("2", "1", Some("REJECTED"))).await;
    assert_eq!(ids(&body), ["r1"]);
    assert_eq!(
        body["pagination"],
        json!({"page": 2, "limit": 1, "total": 2, "totalPages": 2})
    );
    // Bad numbers, a page too deep to read from the start, and the v1 cursor, are 400s.
    for query in [
        vec![("page", "0")],
        vec![("limit", "101")],
        vec![("page", "202"), ("limit", "50")],
        vec![("cursor", "abc")],
    ] {
        let (status, body) = call(
            &f.api,
            request("GET", "/admin/events/failed", &query, Some("a")),
        )
        .await;
        assert_eq!(status, 400, "{query:?}: {body}");
    }

    // Metrics: EventFlow's summary from the same counters and queues.
    let (status, body) = call(&f.api, request("GET", "/admin/metrics", &[], Some("a"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "summary": {"total": 12, "pending": 6, "processing": 1, "processed": 10, "failed": 2, "deadLetter": 1},
            "eventsByType": [
                {"eventType": "PAGE_VIEW", "count": 3},
                {"eventType": "PURCHASE", "count": 2},
                {"eventType": "EMAIL_OPEN", "count": 1}
            ],
            "processingStats": {"averageProcessingTimeSeconds": 4.77, "totalProcessed": 10},
        })
    );

    // One event reads as in v1; replay answers success, message and the event, and queues it.
    let (v1_status, v1) = call(
        &f.api,
        request("GET", "/v1/admin/events/dl-1", &[], Some("a")),
    )
    .await;
    let (status, flow) = call(&f.api, request("GET", "/admin/events/dl-1", &[], Some("a"))).await;
    assert_eq!((status, &flow), (v1_status, &v1));
    let (status, body) = call(
        &f.api,
        request("POST", "/admin/events/dl-1/replay", &[], Some("a")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "Event queued for replay",
            "event": {"eventId": "dl-1", "type": "PURCHASE", "status": "queued", "previousStatus": "DEAD_LETTER", "attempts": 5},
        })
    );
    assert_eq!(f.queue.0.lock().map(|q| q.len()).unwrap_or(0), 1);
    let (status, body) = call(
        &f.api,
        request("POST", "/admin/events/ok-1/replay", &[], Some("a")),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("CONFLICT"))
    );
    Ok(())
}
