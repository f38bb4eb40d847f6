//! The admin routes on the emulators: a poison message dead-lettered through moto's redrive
//! policy and a corrupt one rejected show in the failed list; replay after the fix stores the
//! event once; a redrive of the stale dead letter then counts a duplicate, not a second event.

use anyhow::Result;
use serde_json::{json, Value};
use tally::admin::{AdminApi, FailedEvents};
use tally::auth::ApiKeys;
use tally::aws::{admin_ports, DynamoCounters, DynamoEventStore};
use tally::config::AdminConfig;
use tally::counters::CounterSink;
use tally::event::Limits;
use tally::http::{HttpRequest, HttpResponse};
use tally::process::{batch_response, inbound_messages, Processor};
use tally::store::EventStatus;
use tally_tests::pipeline::{Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::sdk_config;

const ADMIN: &str = "admin-test-key";
const READ: &str = "admin-test-read-key";

fn body(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn failed_events_are_listed_replayed_once_and_redrive_counts_no_second_event() -> Result<()> {
    let p = Pipeline::start("admin_routes", &["poison-1"]).await?;
    let batch = json!([
        {"eventId": "good-1", "type": "PAGE_VIEW"},
        {"eventId": "poison-1", "type": "DEMO_REQUEST"},
    ]);
    let posted = p
        .post(
            HttpRequest::new("POST", "/v1/events/batch")
                .with_bearer(SAMPLE_INGEST_KEY)
                .with_json(batch.to_string()),
        )
        .await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let work_url = p.stack.queue("WorkQueue")?.url.clone();
    let garbage = p
        .stack
        .sqs
        .send_message()
        .queue_url(&work_url)
        .message_body("not-json")
        .send()
        .await?;
    let garbage_id = format!("sqs:{}", garbage.message_id().unwrap_or_default());
    p.drain().await?;

    let ddb = sdk_config(&p.stack.dynamodb_endpoint);
    let moto = sdk_config(&p.stack.moto_endpoint);
    let config = AdminConfig {
        events_table: p.stack.table("EventsTable")?.to_owned(),
        analytics_table: p.stack.table("AnalyticsTable")?.to_owned(),
        work_queue_url: work_url.clone(),
        dead_letter_queue_url: p.stack.queue("DeadLetterQueue")?.url.clone(),
        api_keys: ApiKeys::parse(&format!(
            "{}:admin,{}:read",
            ApiKeys::digest(ADMIN),
            ApiKeys::digest(READ)
        ))
        .map_err(anyhow::Error::msg)?,
    };
    let api = AdminApi::new(config.api_keys.clone(), admin_ports(&ddb, &moto, &config));
    let get = |path: &str, key: &str| HttpRequest::new("GET", path).with_bearer(key);
    let post = |path: &str, key: &str| HttpRequest::new("POST", path).with_bearer(key);

    // A read key reaches none of them.
    for request in [
        get("/v1/admin/events/failed", READ),
        get("/v1/admin/events/poison-1", READ),
        post("/v1/admin/events/poison-1/replay", READ),
        post("/v1/admin/redrive", READ),
    ] {
        assert_eq!(api.handle(request).await.status, 403);
    }

    // The failed list: the dead letter first, then the rejection.
    let list = body(&api.handle(get("/v1/admin/events/failed", ADMIN)).await);
    let listed: Vec<(String, String)> = list["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["eventId"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("poison-1".to_owned(), "DEAD_LETTER".to_owned()),
            (garbage_id.clone(), "REJECTED".to_owned())
        ],
        "{list}"
    );
    // EventFlow's numbered pages over the same list, totals counted on the failure index.
    let page =
        |n: &str| get("/admin/events/failed", ADMIN).with_query(&[("page", n), ("limit", "1")]);
    let first = body(&api.handle(page("1")).await);
    assert_eq!(
        first["pagination"],
        json!({"page": 1, "limit": 1, "total": 2, "totalPages": 2}),
        "{first}"
    );
    assert_eq!(first["events"][0]["eventId"], "poison-1");
    let second = body(&api.handle(page("2")).await);
    assert_eq!(
        second["events"][0]["eventId"],
        json!(garbage_id),
        "{second}"
    );
    let store = DynamoEventStore::new(&ddb, config.events_table.clone());
    assert_eq!(store.count(EventStatus::Rejected, 10).await?, 1);
    assert_eq!(store.count(EventStatus::Failed, 10).await?, 0);
    let one = body(&api.handle(get("/v1/admin/events/poison-1", ADMIN)).await);
    assert_eq!(one["status"], "DEAD_LETTER");
    assert_eq!(one["attempts"], p.max_receive_count);
    assert_eq!(one["event"]["type"], "DEMO_REQUEST");
    // Every delivery left its entry: failures, then the dead letter, each with its reason.
    let max = u64::from(p.max_receive_count);
    let expected: Vec<(String, u64)> = (1..=max)
        .map(|attempt| {
            let status = if attempt == max {
                "DEAD_LETTER"
            } else {
                "FAILED"
            };
            (status.to_owned(), attempt)
        })
        .collect();
    assert_eq!(history(&one), expected, "{one}");
    assert!(one["history"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|h| h["reason"].as_str().is_some_and(|r| r.contains("injected"))));

    // What cannot be replayed: processed (409), content not kept (409), unknown (404).
    for (id, status) in [("good-1", 409), (garbage_id.as_str(), 409), ("nope", 404)] {
        let path = format!("/v1/admin/events/{id}/replay");
        assert_eq!(api.handle(post(&path, ADMIN)).await.status, status, "{id}");
    }

    // The fix, then the replay: stored once.
    let fixed = Processor::new(
        DynamoEventStore::new(&ddb, config.events_table.clone()),
        DynamoCounters::new(&ddb, p.stack.table("AnalyticsTable")?.to_owned()),
        Limits::default(),
        p.max_receive_count,
    );
    let drain_fixed = || {
        p.work.drain(|event| {
            let fixed = &fixed;
            async move {
                let messages = inbound_messages(event)?;
                Ok(batch_response(fixed.process(messages).await))
            }
        })
    };
    let before = p.counters.totals().await?;
    let replayed = api
        .handle(post("/v1/admin/events/poison-1/replay", ADMIN))
        .await;
    assert_eq!(replayed.status, 202, "{}", replayed.body);
    assert_eq!(drain_fixed().await?, 1);
    assert_eq!(p.stored("poison-1").await?.status, EventStatus::Processed);
    let replayed_totals = p.counters.totals().await?;
    assert_eq!(replayed_totals.processed - before.processed, 1);
    let one = body(&api.handle(get("/v1/admin/events/poison-1", ADMIN)).await);
    let statuses: Vec<String> = history(&one).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        statuses[statuses.len() - 3..],
        ["DEAD_LETTER", "REPLAYED", "PROCESSED"],
        "{one}"
    );
    assert_eq!(one["status"], "PROCESSED");
    assert_eq!(one["failureReason"], Value::Null, "the history keeps it");

    // The stale dead letter still waits; redriving it delivers a second submission of an event
    // already stored: a duplicate, not a second event.
    let dry = body(
        &api.handle(post("/v1/admin/redrive", ADMIN).with_json(r#"{"dryRun": true}"#))
            .await,
    );
    assert_eq!(
        (dry["moved"].as_u64(), dry["remaining"].as_u64()),
        (Some(0), Some(1))
    );
    let moved = body(&api.handle(post("/v1/admin/redrive", ADMIN)).await);
    assert_eq!(
        (moved["moved"].as_u64(), moved["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(drain_fixed().await?, 1);
    let after = p.counters.totals().await?;
    assert_eq!(
        (
            after.processed - replayed_totals.processed,
            after.duplicate - replayed_totals.duplicate
        ),
        (0, 1)
    );

    // The metrics agree with the counters, and every processed event has its processing time.
    let metrics = body(&api.handle(get("/v1/admin/metrics", ADMIN)).await);
    assert_eq!(
        metrics["summary"]["processed"], after.processed,
        "{metrics}"
    );
    assert_eq!(
        metrics["summary"]["duplicates"], after.duplicate,
        "{metrics}"
    );
    assert_eq!(
        metrics["summary"]["deadLetter"], after.dead_lettered,
        "{metrics}"
    );
    assert_eq!(
        metrics["processingStats"]["totalProcessed"], after.processed,
        "{metrics}"
    );
    assert!(metrics["processingStats"]["averageProcessingTimeSeconds"].as_f64() >= Some(0.0));
    assert_eq!(metrics["queues"]["deadLetterDepth"], 0, "{metrics}");
    let flow = body(&api.handle(get("/admin/metrics", ADMIN)).await);
    assert_eq!(
        flow["summary"],
        json!({
            "total": metrics["summary"]["accepted"],
            "pending": metrics["queues"]["workDepth"],
            "processing": metrics["queues"]["workInFlight"],
            "processed": after.processed,
            "failed": after.failed,
            "deadLetter": after.dead_lettered,
        }),
        "{flow}"
    );
    assert_eq!(flow["eventsByType"], metrics["eventsByType"]);
    assert_eq!(api.handle(get("/v1/admin/metrics", READ)).await.status, 403);

    // Only the rejection is left in the failed list.
    let list = body(&api.handle(get("/v1/admin/events/failed", ADMIN)).await);
    let ids: Vec<&str> = list["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["eventId"].as_str())
        .collect();
    assert_eq!(ids, vec![garbage_id.as_str()]);
    // The duplicate changed nothing, history included.
    let last = body(&api.handle(get("/v1/admin/events/poison-1", ADMIN)).await);
    assert_eq!(last["history"], one["history"]);
    Ok(())
}

/// An event's history as (status, attempts) pairs (attempts 0 where none is given).
fn history(event: &Value) -> Vec<(String, u64)> {
    event["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["status"].as_str().unwrap_or_default().to_owned(),
                h["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_history_keeps_fifty_entries_and_counts_the_rest() -> Result<()> {
    use tally::store::{EventStore, FailureRecord};
    let p = Pipeline::start("admin_history_cap", &[]).await?;
    let r = p
        .post(
            HttpRequest::new("POST", "/v1/events")
                .with_bearer(SAMPLE_INGEST_KEY)
                .with_json(r#"{"eventId": "busy-1", "type": "PAGE_VIEW"}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Sixty failures recorded for one event (as replays and redrives could pile up).
    for attempt in 1..=60 {
        p.store
            .record_failure(&FailureRecord {
                event_id: "busy-1".into(),
                status: EventStatus::Failed,
                reason: format!("attempt {attempt}: injected"),
                failed_at: chrono::Utc::now(),
                provenance: None,
                event: None,
                event_json: None,
            })
            .await?;
    }
    let stored = p.stored("busy-1").await?;
    assert_eq!(stored.history.len(), 50);
    assert_eq!(stored.history_omitted, 10);
    assert_eq!(
        stored
            .history
            .last()
            .and_then(|h| h.reason.clone())
            .as_deref(),
        Some("attempt 50: injected"),
        "the first fifty are kept"
    );
    assert_eq!(
        stored.failure_reason.as_deref(),
        Some("attempt 60: injected"),
        "the status itself is always written"
    );
    p.store
        .record_replay("busy-1", chrono::Utc::now(), "corr")
        .await?;
    assert_eq!(p.stored("busy-1").await?.history_omitted, 11);
    // A full history never stops the event from being processed, and still ends with it: the
    // processed entry is made from the item, not stored.
    p.drain().await?;
    let stored = p.stored("busy-1").await?;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!((stored.history.len(), stored.history_omitted), (51, 11));
    assert_eq!(
        stored.history.last().map(|h| h.status.as_str()),
        Some("PROCESSED")
    );
    Ok(())
}
