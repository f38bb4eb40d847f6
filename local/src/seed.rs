//! `tally-local up --seed-days N`: days of realistic history for the query routes. The events
//! (the traffic generator's mix, spread evenly over the days, in time order) are validated like
//! any posted event and written to the events table as `process` stores them, so the stream rolls
//! them up and the scorer scores them like any other. Posting a month through the HTTP API would
//! take about an hour at the local stack's throughput; this takes a minute or two. The pipeline
//! counters of `/metrics` do not count seeded events (nothing was accepted or processed).

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

/// Writes `options.days` days of events to `events_table`, oldest first.
pub async fn seed(
    sdk: &aws_config::SdkConfig,
    events_table: &str,
    options: &SeedOptions,
) -> Result<SeedReport> {
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
    let now = Utc::now();
    let from = now - chrono::Duration::days(i64::from(options.days)) + OLDEST_MARGIN;
    let to = now - NEWEST_MARGIN;
    let total = u64::from(options.days) * u64::from(options.events_per_day);
    let step_ms = (to - from).num_milliseconds() as f64 / total as f64;
    let context = NormalizeContext {
        received_at: now,
        limits,
        default_source: "api",
    };
    let mut generator = Generator::new(options.seed, options.leads, 0.0, 0.0);
    let records = (0..total).map(move |i| {
        let (mut value, _) = generator.next_event();
        let at = from + chrono::Duration::milliseconds((i as f64 * step_ms) as i64);
        value["timestamp"] = json!(at.timestamp_millis());
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
