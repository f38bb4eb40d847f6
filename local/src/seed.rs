//! Days of realistic history for the query routes: the traffic generator's mix, spread evenly
//! over the days, in time order.
//!
//! * [`seed_over_http`] (`tally-local up --seed-days N`) posts them through the HTTP API in
//!   batches, like real traffic: ingest, the queue, `process`, the counters, the rollups and the
//!   scores all see them.
//! * [`seed`] writes them to the events table as `process` stores them, for benches and tests
//!   that need a month of history in a minute without the functions running. The pipeline
//!   counters do not count those.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use tally::aws::DynamoEventStore;
use tally::event::{normalize, Limits, NormalizeContext};
use tally::store::{EventStore, ProcessedRecord, Provenance, StoreOutcome};

use crate::publish::Generator;

#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Days of history before now; at most the events' maximum age (30 days by default).
    pub days: u32,
    pub events_per_day: u32,
    /// Distinct leads of the canonical lead events.
    pub leads: u32,
    pub seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            days: 30,
            events_per_day: 3_000,
            leads: 3_000,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeedReport {
    /// Events stored (each once).
    pub events: u64,
    /// The first and last event time.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub elapsed: Duration,
}

/// Concurrent writes: enough to keep DynamoDB Local busy on two cores.
const CONCURRENT_WRITES: usize = 32;
/// Margins inside the accepted age range, so validation at `now` accepts every timestamp.
const OLDEST_MARGIN: chrono::Duration = chrono::Duration::minutes(10);
const NEWEST_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// The span of history to seed, and the generator of its events.
fn history(options: &SeedOptions, now: DateTime<Utc>) -> Result<(HistorySpan, Generator)> {
    let limits = Limits::default();
    ensure!(
        (1..=limits.max_event_age_days).contains(&options.days),
        "seed days must be 1..={} (the events' maximum age)",
        limits.max_event_age_days
    );
    ensure!(
        options.events_per_day > 0,
        "seed events per day must be > 0"
    );
    let from = now - chrono::Duration::days(i64::from(options.days)) + OLDEST_MARGIN;
    let to = now - NEWEST_MARGIN;
    let total = u64::from(options.days) * u64::from(options.events_per_day);
    let span = HistorySpan {
        from,
        to,
        total,
        step_ms: (to - from).num_milliseconds() as f64 / total as f64,
    };
    Ok((span, Generator::new(options.seed, options.leads, 0.0, 0.0)))
}

struct HistorySpan {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    total: u64,
    step_ms: f64,
}

impl HistorySpan {
    fn at(&self, i: u64) -> DateTime<Utc> {
        self.from + chrono::Duration::milliseconds((i as f64 * self.step_ms) as i64)
    }
}

/// Events per request, and requests in flight, when seeding over HTTP.
const SEED_BATCH: usize = 100;
const SEED_REQUESTS_IN_FLIGHT: usize = 4;

/// Posts `options.days` days of events to the HTTP API at `api` (`/v1/events/batch`, with the
/// ingest key), oldest first. Fails if any event is refused.
pub async fn seed_over_http(
    api: &str,
    ingest_key: &str,
    options: &SeedOptions,
) -> Result<SeedReport> {
    let (span, mut generator) = history(options, Utc::now())?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events/batch", api.trim_end_matches('/'));
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(SEED_BATCH);
    for i in 0..span.total {
        let (mut value, _) = generator.next_event();
        value["timestamp"] = json!(span.at(i).timestamp_millis());
        batch.push(value);
        if batch.len() == SEED_BATCH || i + 1 == span.total {
            batches.push(std::mem::take(&mut batch));
        }
    }
    let started = Instant::now();
    let accepted = stream::iter(batches)
        .map(|events| {
            let (client, url) = (&client, &url);
            async move {
                let sent = events.len() as u64;
                let response = client
                    .post(url)
                    .bearer_auth(ingest_key)
                    .json(&events)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let accepted = body["accepted"].as_u64().unwrap_or(0);
                if !status.is_success() || accepted != sent {
                    bail!("seeding: {status}, {accepted} of {sent} accepted: {body}");
                }
                Ok::<_, anyhow::Error>(accepted)
            }
        })
        .buffered(SEED_REQUESTS_IN_FLIGHT)
        .try_fold(0u64, |total, n| async move { Ok(total + n) })
        .await?;
    Ok(SeedReport {
        events: accepted,
        from: span.from,
        to: span.to,
        elapsed: started.elapsed(),
    })
}

/// Writes `options.days` days of events to `events_table`, oldest first.
pub async fn seed(
    sdk: &aws_config::SdkConfig,
    events_table: &str,
    options: &SeedOptions,
) -> Result<SeedReport> {
    let now = Utc::now();
    let (span, mut generator) = history(options, now)?;
    let context = NormalizeContext {
        received_at: now,
        limits: Limits::default(),
        default_source: "api",
    };
    let (from, to, total) = (span.from, span.to, span.total);
    let records = (0..total).map(move |i| {
        let (mut value, _) = generator.next_event();
        value["timestamp"] = json!(span.at(i).timestamp_millis());
        let event = normalize(value, &context)
            .map_err(|errors| anyhow::anyhow!("generated event {i} is invalid: {errors:?}"))?;
        let event_json = event
            .to_canonical_json()
            .map_err(|e| anyhow::anyhow!("generated event {i}: {e:?}"))?;
        Ok::<_, anyhow::Error>(ProcessedRecord {
            event,
            event_json,
            provenance: Provenance {
                submission_id: format!("seed-{}-{i}", options.seed),
                correlation_id: "seed".into(),
                received_at: now,
                attempts: 1,
            },
            processed_at: now,
        })
    });
    let store = DynamoEventStore::new(sdk, events_table.to_owned());
    let started = Instant::now();
    let stored = stream::iter(records)
        .map(|record| {
            let store = &store;
            async move {
                let record = record?;
                let outcome = store
                    .store_processed(&record)
                    .await
                    .with_context(|| format!("storing {}", record.event.event_id))?;
                Ok::<_, anyhow::Error>(outcome)
            }
        })
        .buffered(CONCURRENT_WRITES)
        .try_fold(0u64, |stored, outcome| async move {
            match outcome {
                StoreOutcome::Stored => Ok(stored + 1),
                other => bail!("a seeded event was already stored ({other:?})"),
            }
        })
        .await?;
    Ok(SeedReport {
        events: stored,
        from,
        to,
        elapsed: started.elapsed(),
    })
}
