//! The ingest → queue → process path wired to the emulators with the real adapters, for tests.

use anyhow::{Context, Result};
use serde_json::Value;
use tally::auth::ApiKeys;
use tally::aws::{DynamoCounters, DynamoEventStore, SqsEventQueue};
use tally::config::{FacebookConfig, IngestConfig};
use tally::event::Limits;
use tally::faults::FaultyStore;
use tally::http::{HttpRequest, HttpResponse};
use tally::ingest::Ingest;
use tally::process::{batch_response, inbound_messages, Processor};
use tally::signature::WebhookSecrets;
use tally::store::{EventStore, StoredEvent};

use crate::driver::QueueDriver;
use crate::{repo_root, sdk_config, Stack};

/// Local-only sample credentials, matching `events/README.md`.
pub const SAMPLE_INGEST_KEY: &str = "sample-ingest-key";
pub const SAMPLE_FACEBOOK_SECRET: &str = "sample-facebook-app-secret";
pub const SAMPLE_VERIFY_TOKEN: &str = "sample-verify-token";
pub const SAMPLE_TIKTOK_SECRET: &str = "sample-tiktok-secret";
pub const SAMPLE_SHOP_SECRET: &str = "sample-shop-secret";

pub struct Pipeline {
    pub stack: Stack,
    pub ingest: Ingest<SqsEventQueue, DynamoCounters>,
    pub processor: Processor<FaultyStore<DynamoEventStore>, DynamoCounters>,
    pub store: DynamoEventStore,
    pub counters: DynamoCounters,
    pub work: QueueDriver,
    pub max_receive_count: u32,
}

pub fn ingest_config(stack: &Stack) -> Result<IngestConfig> {
    Ok(IngestConfig {
        work_queue_url: stack.queue("WorkQueue")?.url.clone(),
        analytics_table: stack.table("AnalyticsTable")?.to_owned(),
        api_keys: ApiKeys::parse(&format!(
            "{}:ingest,{}:read",
            ApiKeys::digest(SAMPLE_INGEST_KEY),
            ApiKeys::digest("sample-read-key")
        ))
        .map_err(anyhow::Error::msg)?,
        facebook: Some(FacebookConfig {
            app_secret: SAMPLE_FACEBOOK_SECRET.into(),
            verify_token: SAMPLE_VERIFY_TOKEN.into(),
        }),
        tiktok_secret: Some(SAMPLE_TIKTOK_SECRET.into()),
        webhook_secrets: WebhookSecrets::parse(&format!("shop={SAMPLE_SHOP_SECRET}"))
            .map_err(anyhow::Error::msg)?,
        counted_sources: Default::default(),
        limits: Limits::default(),
    })
}

impl Pipeline {
    pub async fn start(name: &str, failing_event_ids: &[&str]) -> Result<Self> {
        let stack = Stack::provision(name).await?;
        let dynamodb = sdk_config(&stack.dynamodb_endpoint);
        let sqs = sdk_config(&stack.moto_endpoint);
        let events_table = stack.table("EventsTable")?.to_owned();
        let analytics_table = stack.table("AnalyticsTable")?.to_owned();
        let work = stack.queue("WorkQueue")?.clone();
        let max_receive_count = work
            .max_receive_count
            .context("WorkQueue has no maxReceiveCount")? as u32;
        let ingest = Ingest::new(
            ingest_config(&stack)?,
            SqsEventQueue::new(&sqs, work.url.clone()),
            DynamoCounters::new(&dynamodb, analytics_table.clone()),
        );
        let processor = Processor::new(
            FaultyStore::failing_ids(
                DynamoEventStore::new(&dynamodb, events_table.clone()),
                failing_event_ids,
            ),
            DynamoCounters::new(&dynamodb, analytics_table.clone()),
            Limits::default(),
            max_receive_count,
        );
        Ok(Self {
            store: DynamoEventStore::new(&dynamodb, events_table),
            counters: DynamoCounters::new(&dynamodb, analytics_table),
            work: QueueDriver::new(stack.sqs.clone(), &work.url, &work.arn),
            ingest,
            processor,
            max_receive_count,
            stack,
        })
    }

    pub async fn post(&self, request: HttpRequest) -> HttpResponse {
        self.ingest.handle(request).await
    }

    /// Runs the processor over the work queue until it is empty (failed messages are retried
    /// until SQS dead-letters them). Returns the number of deliveries.
    pub async fn drain(&self) -> Result<usize> {
        self.work
            .drain(|event| async move {
                let messages = inbound_messages(event)?;
                Ok(batch_response(self.processor.process(messages).await))
            })
            .await
    }

    pub async fn stored(&self, event_id: &str) -> Result<StoredEvent> {
        self.store
            .get(event_id)
            .await?
            .with_context(|| format!("event {event_id} is not stored"))
    }

    pub async fn stored_event(&self, event_id: &str) -> Result<Value> {
        let stored = self.stored(event_id).await?;
        serde_json::from_str(stored.event_json.as_deref().unwrap_or("null"))
            .context("stored event JSON")
    }
}

/// `<repo>/events/<name>` as text.
pub fn sample(name: &str) -> Result<String> {
    let path = repo_root().join("events").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading sample {}", path.display()))
}

/// An API Gateway payload-2.0 sample, optionally edited, as the handler's request.
pub fn sample_request(name: &str, edit: impl FnOnce(&mut Value)) -> Result<HttpRequest> {
    let mut value: Value = serde_json::from_str(&sample(name)?)?;
    edit(&mut value);
    let request =
        lambda_http::request::from_str(&value.to_string()).context("not an API Gateway request")?;
    Ok(tally::http::lambda::from_lambda(request))
}

/// The query routes' ports on `stack`'s tables and queues.
pub fn query_ports(stack: &Stack) -> Result<tally::query::QueryPorts> {
    let config = tally::config::QueryConfig {
        analytics_table: stack.table("AnalyticsTable")?.to_owned(),
        events_table: stack.table("EventsTable")?.to_owned(),
        work_queue_url: stack.queue("WorkQueue")?.url.clone(),
        dead_letter_queue_url: stack.queue("DeadLetterQueue")?.url.clone(),
        api_keys: ApiKeys::default(),
    };
    Ok(tally::aws::query_ports(
        &crate::sdk_config(&stack.dynamodb_endpoint),
        &crate::sdk_config(&stack.moto_endpoint),
        &config,
    ))
}

/// The `eventId`s a work-queue message body carries, in order.
pub fn queued_event_ids(body: &str) -> Result<Vec<String>> {
    let envelope: Value = serde_json::from_str(body)?;
    let events = envelope["events"]
        .as_array()
        .context("the body carries no events")?;
    Ok(events
        .iter()
        .filter_map(|e| e["eventId"].as_str().map(str::to_owned))
        .collect())
}
