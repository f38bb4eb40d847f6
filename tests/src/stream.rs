//! The rollup function wired to DynamoDB Local's real events stream through the local stream
//! mapping (tumbling windows, bisect, retries), in-process, with the real adapters; and a
//! generated workload stored as `process` stores events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tally::aggregation::{
    AggregatePart, AggregateStore, CompactedDay, DayTotals, RollupHandler, StoredDay,
};
use tally::aws::{DynamoAggregates, DynamoEventStore, DynamoLeads, DynamoRules};
use tally::event::{normalize, Event, Limits, NormalizeContext};
use tally::store::{EventStore, ProcessedRecord, Provenance, StoreError};
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::publish::Generator;
use tally_local::sources::{StartingPosition, StreamMapping, StreamPoller};

use crate::{sdk_config, Stack};

/// The handler as the tests wire it.
pub type Handler = RollupHandler<FlakyAggregates, DynamoLeads, DynamoEventStore, DynamoRules>;

/// The real analytics store; when armed, the next flush writes only its first part and fails,
/// like a function dying half-way through its writes.
pub struct FlakyAggregates {
    pub inner: DynamoAggregates,
    pub fail_next_flush: AtomicBool,
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

    async fn read_day_totals(&self, day: &str) -> Result<Option<DayTotals>, StoreError> {
        self.inner.read_day_totals(day).await
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
    handler: Arc<Handler>,
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

pub struct Fixture {
    pub stack: Stack,
    pub events: DynamoEventStore,
    pub aggregates: Arc<FlakyAggregates>,
    pub leads: Arc<DynamoLeads>,
    pub rules: DynamoRules,
    pub handler: Arc<Handler>,
    pub poller: StreamPoller,
}

/// The rollup consuming a stack's events stream.
pub struct Consumer {
    pub events: DynamoEventStore,
    pub aggregates: Arc<FlakyAggregates>,
    pub leads: Arc<DynamoLeads>,
    pub rules: DynamoRules,
    pub handler: Arc<Handler>,
    pub poller: StreamPoller,
}

/// A fresh stack with the rollup consuming its events stream (2 s windows, batches of 50);
/// `fail_first_flush` arms one flush that dies after its first part.
pub async fn fixture(name: &str, fail_first_flush: bool) -> Result<Fixture> {
    let stack = Stack::provision(name).await?;
    let c = consume(&stack, fail_first_flush).await?;
    Ok(Fixture {
        events: c.events,
        aggregates: c.aggregates,
        leads: c.leads,
        rules: c.rules,
        handler: c.handler,
        poller: c.poller,
        stack,
    })
}

/// Starts the rollup on `stack`'s events stream, from its start (2 s windows, batches of 50).
pub async fn consume(stack: &Stack, fail_first_flush: bool) -> Result<Consumer> {
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let events_table = stack.table("EventsTable")?.to_owned();
    let analytics = stack.table("AnalyticsTable")?.to_owned();
    let aggregates = Arc::new(FlakyAggregates {
        inner: DynamoAggregates::new(&ddb, analytics.clone()),
        fail_next_flush: AtomicBool::new(fail_first_flush),
    });
    let leads = Arc::new(DynamoLeads::new(&ddb, analytics.clone()));
    let handler = Arc::new(RollupHandler::new(
        aggregates.clone(),
        leads.clone(),
        Arc::new(DynamoEventStore::new(&ddb, events_table.clone())),
        DynamoRules::new(&ddb, analytics.clone()),
        chrono::Duration::seconds(2),
    ));
    let arn = events_stream_arn(stack).await?;
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
        Arc::new(InProcess {
            handler: handler.clone(),
        }),
    );
    Ok(Consumer {
        events: DynamoEventStore::new(&ddb, events_table),
        aggregates,
        leads,
        rules: DynamoRules::new(&ddb, analytics),
        handler,
        poller,
    })
}

/// The ARN of the events table's stream.
pub async fn events_stream_arn(stack: &Stack) -> Result<String> {
    stack
        .dynamodb
        .describe_table()
        .table_name(stack.table("EventsTable")?)
        .send()
        .await?
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .context("events table has a stream")
}

/// `count` generated events (publisher and lead events, some late by hours to days).
pub fn workload(seed: u64, count: usize) -> Result<Vec<Event>> {
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

pub async fn store_all(store: &DynamoEventStore, events: &[Event]) -> Result<()> {
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
