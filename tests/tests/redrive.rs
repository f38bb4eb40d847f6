//! Redrive on the emulators: a poison message dead-lettered by the real queue's redrive policy
//! (moto), the fault fixed, the message moved back with its attributes and processed once.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tally::aws::{DynamoCounters, DynamoEventStore, SqsRedrive};
use tally::counters::CounterSink;
use tally::event::Limits;
use tally::http::HttpRequest;
use tally::process::{batch_response, inbound_messages, Processor};
use tally::redrive::{RedriveReport, RedriveRequest, Redriver};
use tally::store::EventStatus;
use tally_tests::driver::receive;
use tally_tests::pipeline::{queued_event_ids, sample, Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::sdk_config;

fn redriver(p: &Pipeline) -> Result<Redriver<SqsRedrive>> {
    Ok(Redriver::new(SqsRedrive::new(
        &sdk_config(&p.stack.moto_endpoint),
        p.stack.queue("DeadLetterQueue")?.url.clone(),
        p.stack.queue("WorkQueue")?.url.clone(),
    )))
}

#[tokio::test]
async fn a_fixed_poison_message_is_redriven_and_processed_once() -> Result<()> {
    let p = Pipeline::start("redrive", &["poison-1"]).await?;
    let batch = json!([
        {"eventId": "good-1", "type": "PAGE_VIEW"},
        {"eventId": "poison-1", "type": "PURCHASE", "revenue": {"amount": "10.00", "currency": "USD"}},
    ]);
    let request = HttpRequest::new("POST", "/v1/events/batch")
        .with_bearer(SAMPLE_INGEST_KEY)
        .with_header("x-correlation-id", "redrive-correlation")
        .with_json(batch.to_string());
    let response = p.post(request).await;
    assert_eq!(response.status, 202, "{}", response.body);
    p.drain().await?;
    assert_eq!(p.stored("poison-1").await?.status, EventStatus::DeadLetter);
    let redriver = redriver(&p)?;

    // A dry run counts and moves nothing.
    let dry = redriver
        .redrive(&RedriveRequest {
            dry_run: true,
            ..RedriveRequest::default()
        })
        .await?;
    assert_eq!((dry.moved, dry.remaining), (0, 1));

    // The fix: a processor whose store no longer fails.
    let ddb = sdk_config(&p.stack.dynamodb_endpoint);
    let fixed = Processor::new(
        DynamoEventStore::new(&ddb, p.stack.table("EventsTable")?.to_owned()),
        DynamoCounters::new(&ddb, p.stack.table("AnalyticsTable")?.to_owned()),
        Limits::default(),
        p.max_receive_count,
    );
    let before = p.counters.totals().await?;
    let report = redriver.redrive(&RedriveRequest::default()).await?;
    assert_eq!(
        report,
        RedriveReport {
            moved: 1,
            remaining: 0,
            failed: 0,
            dry_run: false
        }
    );

    // On the work queue as it was dead-lettered: the same envelope, the correlation id kept.
    let work = p.stack.queue("WorkQueue")?.url.clone();
    let moved = receive(&p.stack.sqs, &work, 10, 1).await?;
    assert_eq!(moved.len(), 1);
    let ids = queued_event_ids(moved[0].body().unwrap_or_default())?;
    assert!(ids.iter().any(|id| id == "poison-1"), "{ids:?}");
    let correlation = moved[0]
        .message_attributes()
        .and_then(|a| a.get("correlationId"))
        .and_then(|v| v.string_value());
    assert_eq!(correlation, Some("redrive-correlation"));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let deliveries = p
        .work
        .drain(|event| {
            let fixed = &fixed;
            async move {
                let messages = inbound_messages(event)?;
                Ok(batch_response(fixed.process(messages).await))
            }
        })
        .await?;
    assert_eq!(deliveries, 1);
    let stored = p.stored("poison-1").await?;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!(
        stored.correlation_id.as_deref(),
        Some("redrive-correlation")
    );
    let after = p.counters.totals().await?;
    assert_eq!(
        (
            after.processed - before.processed,
            after.duplicate - before.duplicate
        ),
        (1, 0),
        "processed once"
    );

    // Nothing left: a second redrive moves nothing.
    let again = redriver.redrive(&RedriveRequest::default()).await?;
    assert_eq!((again.moved, again.remaining), (0, 0));
    Ok(())
}

#[tokio::test]
async fn the_samples_are_valid_invocations() -> Result<()> {
    let p = Pipeline::start("redrive_samples", &[]).await?;
    let redriver = redriver(&p)?;
    for name in ["redrive.json", "redrive-dry-run.json"] {
        let input: Value = serde_json::from_str(&sample(name)?)?;
        let report = redriver.invoke(input).await.context(name)?;
        assert_eq!((report.moved, report.remaining), (0, 0), "{name}");
    }
    let refused = redriver.invoke(json!({"maxMessages": 0})).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("maxMessages")));
    Ok(())
}
