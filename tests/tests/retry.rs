//! Retry backoff on moto's SQS: a message `process` could not store comes back after its backoff
//! delay (seconds), not after the work queue's 360 s visibility timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tally::aws::{DynamoCounters, DynamoEventStore, SqsVisibility};
use tally::event::Limits;
use tally::faults::FaultyStore;
use tally::http::HttpRequest;
use tally::process::{InboundMessage, Processor};
use tally::retry::Backoff;
use tally::store::{EventStatus, EventStore};
use tally_tests::pipeline::{Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::sdk_config;

/// Waits up to `wait` for one message, with SQS long polling (moto honours it).
async fn receive_within(p: &Pipeline, wait: Duration) -> Result<Option<InboundMessage>> {
    let url = &p.stack.queue("WorkQueue")?.url;
    let started = Instant::now();
    while started.elapsed() < wait {
        let output = p
            .stack
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .context("ReceiveMessage")?;
        if let Some(m) = output.messages.unwrap_or_default().pop() {
            let count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            return Ok(Some(InboundMessage {
                message_id: m.message_id.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                receive_count: count,
                receipt_handle: m.receipt_handle.unwrap_or_default(),
            }));
        }
    }
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_returns_after_its_backoff_not_the_visibility_timeout() -> Result<()> {
    let p = Pipeline::start("retry_backoff", &[]).await?;
    let work = p.stack.queue("WorkQueue")?;
    assert!(
        work.visibility_timeout.unwrap_or_default() >= 300,
        "the template's visibility timeout is what backoff shortens"
    );
    let dynamodb = sdk_config(&p.stack.dynamodb_endpoint);
    let moto = sdk_config(&p.stack.moto_endpoint);
    let events = p.stack.table("EventsTable")?.to_owned();
    let analytics = p.stack.table("AnalyticsTable")?.to_owned();
    let outage = Processor::new(
        FaultyStore::failing_ids(
            DynamoEventStore::new(&dynamodb, events.clone()),
            &["slow-1"],
        ),
        DynamoCounters::new(&dynamodb, analytics.clone()),
        Limits::default(),
        p.max_receive_count,
    )
    .with_backoff(
        Arc::new(SqsVisibility::new(&moto, work.url.clone())),
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(2),
        },
    );

    let r = p
        .post(
            HttpRequest::new("POST", "/v1/events")
                .with_bearer(SAMPLE_INGEST_KEY)
                .with_json(r#"{"eventId": "slow-1", "type": "PAGE_VIEW"}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    // Two failed deliveries, each back within its delay (1 s, then at most 2 s), where the
    // visibility timeout alone would hide the message for 360 s.
    for attempt in 1..=2 {
        let message = receive_within(&p, Duration::from_secs(6))
            .await?
            .with_context(|| format!("delivery {attempt} did not come back within 6 s"))?;
        assert_eq!(message.receive_count, attempt);
        let failed = outage.process(vec![message]).await;
        assert_eq!(failed.len(), 1);
    }
    let stored = p.store.get("slow-1").await?.context("failure recorded")?;
    assert_eq!(stored.status, EventStatus::Failed);

    // The outage ends: the third delivery comes back within its delay and is stored.
    let started = Instant::now();
    let message = receive_within(&p, Duration::from_secs(6))
        .await?
        .context("third delivery")?;
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(message.receive_count, 3);
    assert!(p.processor.process(vec![message]).await.is_empty());
    assert_eq!(p.stored("slow-1").await?.status, EventStatus::Processed);
    Ok(())
}
