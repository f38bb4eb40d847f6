//! Recompute figures for the README, on DynamoDB Local: how fast the requested recompute of every
//! lead (`POST /v1/admin/leads/recompute`, then the rollup's `recompute-requested` task) re-folds
//! leads, and what it writes per lead. The leads are scored first in stream batches of 1,000 events;
//! then a rule changes and every lead is recomputed in one unbounded run.
//!
//! Run: `cargo bench -p tally-tests --bench recompute` (env `LEADS` (2000), `EVENTS_PER_LEAD` (5)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use chrono::Utc;
use serde_json::json;
use tally::aws::{DynamoEventStore, DynamoLeads, DynamoRules};
use tally::event::{normalize, Event, Limits, NormalizeContext};
use tally::scoring::{put_rule, LeadEvent, LeadRecompute, Rule, ScoredEvent, Scorer};
use tally_tests::stream::store_all;
use tally_tests::{sdk_config, Stack};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn events(leads: usize, per_lead: usize) -> Result<Vec<Event>> {
    let context = NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    };
    let start = Utc::now() - chrono::Duration::days(3);
    let types = ["PAGE_VIEW", "EMAIL_OPEN", "FORM_SUBMISSION", "DEMO_REQUEST"];
    let mut events = Vec::with_capacity(leads * per_lead);
    for lead in 0..leads {
        for i in 0..per_lead {
            let at = start + chrono::Duration::seconds((lead * per_lead + i) as i64);
            let raw = json!({"eventId": format!("rc-{lead}-{i}"), "leadId": format!("lead-{lead:05}"),
                "type": types[i % types.len()], "timestamp": at.to_rfc3339()});
            events.push(normalize(raw, &context).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        }
    }
    Ok(events)
}

/// Stores the events eight writers at a time.
async fn store(store: Arc<DynamoEventStore>, events: &[Event]) -> Result<()> {
    let mut writers = tokio::task::JoinSet::new();
    for chunk in events.chunks(events.len().div_ceil(8).max(1)) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        writers.spawn(async move { store_all(&store, &chunk).await });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

/// The lead events stream batches of these events carry.
fn lead_events(events: &[Event]) -> Result<Vec<LeadEvent>> {
    events
        .iter()
        .map(|e| {
            Ok(LeadEvent {
                lead_id: e.lead_id.clone().unwrap_or_default(),
                event: ScoredEvent::from_stored_json(
                    &e.to_canonical_json()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                )?,
            })
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let (leads, per_lead) = (env_usize("LEADS", 2000), env_usize("EVENTS_PER_LEAD", 5));
    let stack = Stack::provision("bench_recompute").await?;
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let analytics = stack.table("AnalyticsTable")?.to_owned();
    let events_store = Arc::new(DynamoEventStore::new(
        &ddb,
        stack.table("EventsTable")?.to_owned(),
    ));
    let lead_store = Arc::new(DynamoLeads::new(&ddb, analytics.clone()));
    let rules = DynamoRules::new(&ddb, analytics);
    let scorer = Scorer::new(lead_store.clone(), events_store.clone(), rules);

    let all = events(leads, per_lead)?;
    store(events_store, &all).await?;
    for batch in lead_events(&all)?.chunks(1000) {
        scorer.score_events(batch.to_vec(), Utc::now()).await?;
    }

    put_rule(
        &DynamoRules::new(&ddb, stack.table("AnalyticsTable")?.to_owned()),
        Rule::new("PAGE_VIEW", 7),
    )
    .await?;
    let requested = scorer.request_all("bench".into(), Utc::now()).await?;
    ensure!(
        requested == leads as u64,
        "{requested} leads on the board, not {leads}"
    );
    let units_before = lead_store.consumed_write_units();
    let started = Instant::now();
    let (report, progress) = scorer
        .run_requested(Utc::now(), Duration::from_secs(3600))
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(progress.finished, "the run did not finish: {progress:?}");
    ensure!(
        report.leads == leads,
        "{} leads recomputed, not {leads}",
        report.leads
    );
    let units = lead_store.consumed_write_units() - units_before;
    println!(
        "recompute of every lead ({leads} leads x {per_lead} events, DynamoDB Local): {elapsed:.1} s, \
         {:.0} leads/s, {:.0} leads per 60 s run; {:.2} write units per lead (its state and leaderboard index entry)",
        leads as f64 / elapsed,
        leads as f64 / elapsed * 60.0,
        units / leads as f64,
    );
    Ok(())
}
