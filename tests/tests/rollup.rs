//! Rollups from the real events stream (DynamoDB Local) through the local stream mapping with
//! tumbling windows, into the analytics table: exact after duplicates, retries, failed flushes and
//! bisected batches, and reconciled against the events table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;
use tally::aggregation::{
    AggregatePart, AggregateStore, CompactedDay, Reconciler, RollupHandler, StoredDay,
};
use tally::aws::{DynamoAggregates, DynamoEventStore};
use tally::event::{normalize, Event, Limits, NormalizeContext};
use tally::rollup::{AggregateKey, Dimension, Rollup};
use tally::store::{
    EventStatus, EventStore, FailureRecord, ProcessedRecord, Provenance, StoreError,
};
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::publish::Generator;
use tally_local::sources::{StartingPosition, StreamMapping, StreamPoller};
use tally_tests::{sdk_config, Stack};

/// The real analytics store; when armed, the next flush writes only its first part and fails,
/// like a function dying half-way through its writes.
struct FlakyAggregates {
    inner: DynamoAggregates,
    fail_next_flush: AtomicBool,
}

#[async_trait]
impl AggregateStore for FlakyAggregates {
    async fn put_parts(&self, parts: &[AggregatePart]) -> Result<(), StoreError> {
        if parts.len() > 1 && self.fail_next_flush.swap(false, Ordering::SeqCst) {
            self.inner.put_parts(&parts[..1]).await?;
            return Err(StoreError::Unavailable(
                "injected crash after the first part".into(),
            ));
        }
        self.inner.put_parts(parts).await
    }

    async fn read_day(&self, day: &str) -> Result<StoredDay, StoreError> {
        self.inner.read_day(day).await
    }

    async fn write_compacted(
        &self,
        day: &str,
        compacted: &CompactedDay,
        superseded: &StoredDay,
    ) -> Result<(), StoreError> {
        self.inner.write_compacted(day, compacted, superseded).await
    }
}

/// Runs the rollup handler in-process for the stream mapping, counting invocations.
struct InProcess {
    handler: RollupHandler<FlakyAggregates, DynamoEventStore>,
}

#[async_trait]
impl Invoker for InProcess {
    async fn invoke(&self, _function: &str, event: Value) -> Result<Value, InvokeError> {
        self.handler
            .handle(event)
            .await
            .map_err(|e| InvokeError::FunctionError {
                error_type: "RollupError".into(),
                error_message: e.to_string(),
            })
    }
}

struct Fixture {
    stack: Stack,
    events: DynamoEventStore,
    aggregates: Arc<FlakyAggregates>,
    poller: StreamPoller,
}

async fn fixture(name: &str, fail_first_flush: bool) -> Result<Fixture> {
    let stack = Stack::provision(name).await?;
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let events_table = stack.table("EventsTable")?.to_owned();
    let analytics = stack.table("AnalyticsTable")?.to_owned();
    let aggregates = Arc::new(FlakyAggregates {
        inner: DynamoAggregates::new(&ddb, analytics),
        fail_next_flush: AtomicBool::new(fail_first_flush),
    });
    let handler = RollupHandler::new(
        aggregates.clone(),
        DynamoEventStore::new(&ddb, events_table.clone()),
        chrono::Duration::seconds(2),
    );
    let arn = stack
        .dynamodb
        .describe_table()
        .table_name(&events_table)
        .send()
        .await?
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .context("events table has a stream")?;
    let mut mapping = StreamMapping::new("RollupFunction", arn);
    mapping.starting_position = StartingPosition::TrimHorizon;
    mapping.batch_size = 50;
    mapping.tumbling_window = Some(Duration::from_secs(2));
    mapping.bisect_on_error = true;
    mapping.maximum_retry_attempts = 10;
    mapping.report_batch_item_failures = true;
    mapping.retry_backoff = Duration::from_millis(100);
    let poller = StreamPoller::start(
        aws_sdk_dynamodbstreams::Client::new(&ddb),
        stack.sqs.clone(),
        mapping,
        Arc::new(InProcess { handler }),
    );
    Ok(Fixture {
        events: DynamoEventStore::new(&ddb, events_table),
        aggregates,
        poller,
        stack,
    })
}

/// `count` generated events (publisher and lead events, some late by hours to days).
fn workload(seed: u64, count: usize) -> Result<Vec<Event>> {
    let mut generator = Generator::new(seed, 200, 0.0, 0.2);
    let ctx = NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    };
    (0..count)
        .map(|_| normalize(generator.next_event().0, &ctx).map_err(|e| anyhow::anyhow!("{e:?}")))
        .collect()
}

async fn store_all(store: &DynamoEventStore, events: &[Event]) -> Result<()> {
    for event in events {
        let record = ProcessedRecord {
            event: event.clone(),
            event_json: event
                .to_canonical_json()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            provenance: Provenance {
                submission_id: uuid::Uuid::new_v4().to_string(),
                correlation_id: "c".into(),
                received_at: Utc::now(),
                attempts: 1,
            },
            processed_at: Utc::now(),
        };
        store.store_processed(&record).await?;
    }
    Ok(())
}

async fn stored_rollup(store: &impl AggregateStore, days: &[String]) -> Result<Rollup> {
    let mut rollup = Rollup::default();
    for day in days {
        rollup.merge(&store.read_day(day).await?.merged()?);
    }
    Ok(rollup)
}

fn days_of(events: &[Event]) -> Vec<String> {
    let mut days: Vec<String> = events
        .iter()
        .map(|e| e.timestamp.format("%Y-%m-%d").to_string())
        .collect();
    days.sort();
    days.dedup();
    days
}

/// Waits until the stored aggregates equal `expected`.
async fn wait_equal(
    store: &impl AggregateStore,
    days: &[String],
    expected: &Rollup,
) -> Result<Rollup> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored = stored_rollup(store, days).await?;
        if stored == *expected {
            return Ok(stored);
        }
        if Instant::now() > deadline {
            bail!(
                "aggregates never matched: stored {} counters, expected {}",
                stored.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counts recomputed by the test itself, without the rollup types: (hour, type) → (count,
/// revenue per currency), and (hour, campaign, type) → count.
type Independent = (
    BTreeMap<(String, String), (u64, BTreeMap<String, Decimal>)>,
    BTreeMap<(String, String, String), u64>,
);

fn independent(events: &[Event]) -> Independent {
    let mut by_type: BTreeMap<(String, String), (u64, BTreeMap<String, Decimal>)> = BTreeMap::new();
    let mut by_campaign = BTreeMap::new();
    for e in events {
        let hour = e.timestamp.format("%Y-%m-%dT%H").to_string();
        let entry = by_type
            .entry((hour.clone(), e.event_type.clone()))
            .or_default();
        entry.0 += 1;
        if let Some(m) = &e.revenue {
            *entry.1.entry(m.currency.clone()).or_default() += m.amount;
        }
        if let Some(c) = &e.campaign_id {
            *by_campaign
                .entry((hour, c.clone(), e.event_type.clone()))
                .or_default() += 1;
        }
    }
    (by_type, by_campaign)
}

fn check_independent(stored: &Rollup, events: &[Event]) {
    let (by_type, by_campaign) = independent(events);
    for ((hour, event_type), (count, revenue)) in &by_type {
        let totals = stored.hours.get(hour).and_then(|w| {
            w.totals
                .get(&AggregateKey::new(Dimension::All, "", event_type.as_str()))
        });
        assert_eq!(totals.map(|t| t.count), Some(*count), "{hour} {event_type}");
        for (currency, amount) in revenue {
            assert_eq!(
                totals.map(|t| t.revenue_in(currency)),
                Some(*amount),
                "{hour} {event_type} {currency}"
            );
        }
    }
    for ((hour, campaign, event_type), count) in &by_campaign {
        let totals = stored.hours.get(hour).and_then(|w| {
            w.totals.get(&AggregateKey::new(
                Dimension::CampaignId,
                campaign.as_str(),
                event_type.as_str(),
            ))
        });
        assert_eq!(
            totals.map(|t| t.count),
            Some(*count),
            "{hour} {campaign} {event_type}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_an_independent_recomputation_despite_duplicates_and_failures(
) -> Result<()> {
    let f = fixture("rollup_exact", true).await?;
    let events = workload(11, 400)?;
    store_all(&f.events, &events).await?;
    // Duplicates (another submission of stored ids) write nothing, so reach no window.
    store_all(&f.events, &events[..25]).await?;
    // A failure record, then the event processed after all: counted once, from the MODIFY.
    let late = workload(12, 1)?.remove(0);
    f.events
        .record_failure(&FailureRecord {
            event_id: late.event_id.clone(),
            status: EventStatus::Failed,
            reason: "transient".into(),
            failed_at: Utc::now(),
            provenance: None,
            event: Some(late.clone()),
            event_json: late.to_canonical_json().ok(),
        })
        .await?;
    store_all(&f.events, std::slice::from_ref(&late)).await?;
    let mut all = events.clone();
    all.push(late);

    let mut expected = Rollup::default();
    all.iter().for_each(|e| expected.add(e));
    let days = days_of(&all);
    let stored = wait_equal(f.aggregates.as_ref(), &days, &expected).await?;
    check_independent(&stored, &all);
    assert!(
        !f.aggregates.fail_next_flush.load(Ordering::SeqCst),
        "the injected failed flush happened and was retried"
    );
    let stats = f.poller.stop().await;
    // The failed flush was redelivered, whole (a retry) or halved (bisect, which Lambda does not
    // count as a retry).
    assert!(
        stats.invoke_errors >= 1 && stats.retries + stats.bisections >= 1,
        "{stats:?}"
    );
    assert!(stats.windows_closed >= 1, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_window_delivered_twice_changes_nothing() -> Result<()> {
    let f = fixture("rollup_twice", false).await?;
    let events = workload(21, 120)?;
    store_all(&f.events, &events).await?;
    let mut expected = Rollup::default();
    events.iter().for_each(|e| expected.add(e));
    let days = days_of(&events);
    wait_equal(f.aggregates.as_ref(), &days, &expected).await?;
    f.poller.stop().await;

    // Replay every stored part's window: a re-run writes the same keys with the same content.
    let mut parts: Vec<AggregatePart> = Vec::new();
    for day in &days {
        parts.extend(f.aggregates.read_day(day).await?.parts);
    }
    assert!(!parts.is_empty());
    f.aggregates.put_parts(&parts).await?;
    assert_eq!(stored_rollup(f.aggregates.as_ref(), &days).await?, expected);
    let mut after: Vec<AggregatePart> = Vec::new();
    for day in &days {
        after.extend(f.aggregates.read_day(day).await?.parts);
    }
    assert_eq!(after.len(), parts.len(), "no new items");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_and_repairs_drift() -> Result<()> {
    let f = fixture("rollup_reconcile", false).await?;
    let events = workload(31, 150)?;
    store_all(&f.events, &events).await?;
    let mut expected = Rollup::default();
    events.iter().for_each(|e| expected.add(e));
    let days = days_of(&events);
    wait_equal(f.aggregates.as_ref(), &days, &expected).await?;
    f.poller.stop().await;

    // Drift: a part written twice under another shard name double-counts its window.
    let day = days.last().context("a day")?.clone();
    let mut bogus = f
        .aggregates
        .read_day(&day)
        .await?
        .parts
        .first()
        .context("a part")?
        .clone();
    bogus.shard = "shard-bogus".into();
    f.aggregates.put_parts(std::slice::from_ref(&bogus)).await?;
    assert_ne!(stored_rollup(f.aggregates.as_ref(), &days).await?, expected);

    let ddb = sdk_config(&f.stack.dynamodb_endpoint);
    let reconciler = Reconciler::new(
        f.aggregates.clone(),
        DynamoEventStore::new(&ddb, f.stack.table("EventsTable")?.to_owned()),
        chrono::Duration::seconds(2),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = reconciler.reconcile_day(&day, Utc::now()).await?;
    assert!(report.settled && report.written, "{report:?}");
    assert!(
        report.drift_counters > 0 && report.drift_events > 0,
        "{report:?}"
    );
    assert_eq!(
        stored_rollup(f.aggregates.as_ref(), &days).await?,
        expected,
        "repaired"
    );
    let stored = f.aggregates.read_day(&day).await?;
    assert!(
        stored.compacted.is_some() && stored.parts.is_empty(),
        "parts superseded and removed: {}",
        stored.parts.len()
    );

    let again = reconciler.reconcile_day(&day, Utc::now()).await?;
    assert_eq!(
        (again.drift_counters, again.written),
        (0, false),
        "{again:?}"
    );

    // An event stored just now leaves the day unsettled: nothing is rewritten.
    let mut fresh = workload(32, 1)?.remove(0);
    fresh.timestamp = chrono::DateTime::parse_from_rfc3339(&format!("{day}T12:00:00Z"))?
        .with_timezone(&Utc)
        .min(Utc::now());
    store_all(&f.events, std::slice::from_ref(&fresh)).await?;
    let unsettled = reconciler.reconcile_day(&day, Utc::now()).await?;
    assert!(!unsettled.settled && !unsettled.written, "{unsettled:?}");
    Ok(())
}
