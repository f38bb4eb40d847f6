//! Rollup cost on the reference workload: 10,000 events over one hour (8 types, 20 campaigns,
//! 5 regions, 2 sources, 3 funnel stages, 2,000 leads), against DynamoDB Local with
//! `ReturnConsumedCapacity`:
//! - write units per event of the windowed parts (for several window lengths) and of the
//!   reconciliation that compacts the day;
//! - write units per event of real-time scoring (lead states and their leaderboard index
//!   entries), with the stream batched over 1, 5 and 30 s, and for one hot lead at 100 events/s;
//! - the naive baseline, one `ADD` per aggregate per event (measured on 1,000 events);
//! - CPU time to aggregate one 10,000-record batch (`-- --cpu-only` measures only that).
//!
//! Run: `cargo bench -p tally-tests --bench rollup`

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};
use tally::aggregation::{
    AggregatePart, AggregateStore, CompactedDay, DayTotals, HourlyEvents, ProcessedEvent,
    Reconciler, StoredDay, WindowProcessor,
};
use tally::aws::{DynamoAggregates, DynamoLeads, DynamoRules};
use tally::event::{normalize, Event, Limits, NormalizeContext};
use tally::rollup::{age_band, followers_band, Rollup};
use tally::scoring::{LeadEvent, LeadScore, MemoryHistory, ScoreRules, ScoredEvent, Scorer};
use tally::store::StoreError;
use tally::stream_window::WindowEvent;
use tally_tests::{sdk_config, Stack};

const EVENTS: usize = 10_000;
/// Timed repetitions of the CPU measurement; the median is reported.
const CPU_RUNS: usize = 150;
const TYPES: [&str; 8] = [
    "PAGE_VIEW",
    "EMAIL_OPEN",
    "FORM_SUBMISSION",
    "DEMO_REQUEST",
    "PURCHASE",
    "REFUND",
    "ad.click",
    "ad.impression",
];

fn reference_workload(hour: DateTime<Utc>) -> Result<Vec<Event>> {
    let mut rng = fastrand_like(7);
    let ctx = NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    };
    (0..EVENTS)
        .map(|i| {
            let event_type = TYPES[(rng() % 8) as usize];
            let stage = ["top", "middle", "bottom"][(rng() % 3) as usize];
            let gender = ["female", "male"][(rng() % 2) as usize];
            let country = ["US", "DE", "FR", "GB"][(rng() % 4) as usize];
            let mut e = json!({
                "eventId": format!("ref-{i}"),
                "type": event_type,
                "timestamp": (hour + Duration::milliseconds((rng() % 3_600_000) as i64)).to_rfc3339(),
                "source": if rng() % 2 == 0 { "web" } else { "tiktok" },
                "campaignId": format!("c{}", rng() % 20),
                "regionId": format!("r{}", rng() % 5),
                "funnelStage": stage,
                "lead": {"email": format!("lead{}@example.com", rng() % 2000)},
                "user": {"age": 16 + rng() % 60, "gender": gender, "country": country, "followers": rng() % 200_000}
            });
            match event_type {
                "PURCHASE" => e["revenue"] = json!({"amount": format!("{}.{:02}", 5 + rng() % 200, rng() % 100)}),
                "REFUND" => e["revenue"] = json!({"amount": format!("-{}.{:02}", 5 + rng() % 50, rng() % 100)}),
                _ => {}
            }
            normalize(e, &ctx).map_err(|err| anyhow::anyhow!("{err:?}"))
        })
        .collect()
}

/// xorshift64*: deterministic, dependency-free.
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.max(1);
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A window event as the stream mapping delivers it (final invoke), for `events`.
fn window_event(
    events: &[(usize, &Event)],
    shard: &str,
    start: DateTime<Utc>,
    len: Duration,
    is_final: bool,
) -> Result<Value> {
    let records: Vec<Value> = events
        .iter()
        .map(|(seq, e)| -> Result<Value> {
            Ok(json!({
                "eventName": "INSERT",
                "dynamodb": {"SequenceNumber": format!("{seq:021}"), "NewImage": {
                    "eventId": {"S": e.event_id}, "status": {"S": "PROCESSED"},
                    "event": {"S": e.to_canonical_json().map_err(|err| anyhow::anyhow!("{err:?}"))?}
                }}
            }))
        })
        .collect::<Result<_>>()?;
    Ok(json!({
        "Records": records, "shardId": shard, "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/x",
        "window": {"start": start.to_rfc3339(), "end": (start + len).to_rfc3339()},
        "state": {}, "isFinalInvokeForWindow": is_final, "isWindowTerminatedEarly": false
    }))
}

struct NoStore;

#[async_trait]
impl AggregateStore for NoStore {
    async fn put_parts(&self, _: &[AggregatePart]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn read_day(&self, _: &str) -> Result<StoredDay, StoreError> {
        Ok(StoredDay::default())
    }
    async fn read_day_totals(&self, _: &str) -> Result<Option<DayTotals>, StoreError> {
        Ok(None)
    }
    async fn write_compacted(
        &self,
        _: &str,
        _: &CompactedDay,
        _: &StoredDay,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The events of the workload as the events table's hourly index would return them.
struct InMemoryHours(Vec<Event>);

#[async_trait]
impl HourlyEvents for InMemoryHours {
    async fn processed_in_hour(&self, hour: &str) -> Result<Vec<ProcessedEvent>, StoreError> {
        Ok(self
            .0
            .iter()
            .filter(|e| e.hour_bucket() == hour)
            .filter_map(|e| e.to_canonical_json().ok())
            .map(|event_json| ProcessedEvent {
                event_json,
                processed_at: Utc::now() - Duration::hours(2),
            })
            .collect())
    }
}

/// Keys the naive baseline would `ADD` to for one event, in one window granularity.
fn naive_keys(e: &Event, bucket: &str) -> Vec<String> {
    let t = &e.event_type;
    let mut keys = vec![format!("{bucket}|all||{t}")];
    let mut dim = |name: &str, v: Option<&str>| {
        if let Some(v) = v {
            keys.push(format!("{bucket}|{name}|{v}|{t}"));
        }
    };
    dim("campaignId", e.campaign_id.as_deref());
    dim("regionId", e.region_id.as_deref());
    dim("source", Some(e.source.as_str()));
    dim("funnelStage", e.funnel_stage.map(|s| s.as_str()));
    dim(
        "sourceFunnelStage",
        e.funnel_stage
            .map(|s| format!("{}|{}", e.source, s.as_str()))
            .as_deref(),
    );
    let user = e.user.clone().unwrap_or_default();
    let s = &e.source;
    keys.push(format!("{bucket}|demo|{s}|age|{}", age_band(user.age)));
    keys.push(format!(
        "{bucket}|demo|{s}|gender|{}",
        user.gender.as_deref().unwrap_or("unknown")
    ));
    keys.push(format!(
        "{bucket}|demo|{s}|country|{}",
        user.country.as_deref().unwrap_or("unknown")
    ));
    keys.push(format!(
        "{bucket}|demo|{s}|followers|{}",
        followers_band(user.followers)
    ));
    keys
}

#[tokio::main]
async fn main() -> Result<()> {
    let hour = (Utc::now() - Duration::hours(2)).duration_trunc(Duration::hours(1))?;
    let events = reference_workload(hour)?;
    let day = hour.format("%Y-%m-%d").to_string();
    println!("reference workload: {EVENTS} events in {} (8 types, 20 campaigns, 5 regions, 2 sources, 3 stages, 2,000 leads)", hour.format("%Y-%m-%dT%H:00Z"));

    // CPU: one 10,000-record batch: parse, aggregate, then the state (a batch inside the
    // window) or the encoded parts (its last batch). Scoring's CPU is a fold per event; its
    // cost is the writes, measured below.
    let batch: Vec<(usize, &Event)> = events.iter().enumerate().collect();
    let processor = WindowProcessor::new(NoStore);
    for is_final in [false, true] {
        let text =
            window_event(&batch, "shardId-cpu", hour, Duration::hours(1), is_final)?.to_string();
        let mut times = Vec::new();
        for _ in 0..CPU_RUNS {
            let started = Instant::now();
            let event: WindowEvent = serde_json::from_str(&text)?;
            let result = processor.handle(&event).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(result.outcome.events, EVENTS);
            assert_eq!(result.lead_events.len(), EVENTS);
            assert_eq!(result.response.state.get("rollup").is_some(), !is_final);
            assert_eq!(result.outcome.parts_written > 0, is_final);
        }
        times.sort_by(f64::total_cmp);
        let what = if is_final {
            "final invoke: parts encoded"
        } else {
            "state encoded"
        };
        println!(
            "CPU per 10,000-record batch ({what}): median {:.1} ms, min {:.1} ms (one core)",
            times[CPU_RUNS / 2],
            times[0]
        );
    }
    // `-- --cpu-only` stops here, for profiling the window path without the emulators.
    if std::env::args().any(|a| a == "--cpu-only") {
        return Ok(());
    }

    let stack = Stack::provision("bench_rollup").await?;
    let config = sdk_config(&stack.dynamodb_endpoint);
    let table = stack.table("AnalyticsTable")?.to_owned();
    let mut expected = Rollup::default();
    events.iter().for_each(|e| expected.add(e));

    // Windowed parts: events arrive spread over the hour, as their timestamps say.
    let mut aggregates_300 = 0.0;
    for window_seconds in [60_i64, 300, 900] {
        let store = Arc::new(DynamoAggregates::new(&config, table.clone()));
        let processor = WindowProcessor::new(store.clone());
        let len = Duration::seconds(window_seconds);
        let mut sorted: Vec<(usize, &Event)> = events.iter().enumerate().collect();
        sorted.sort_by_key(|(_, e)| e.timestamp);
        let mut start = hour;
        let mut windows = 0;
        while start < hour + Duration::hours(1) {
            let in_window: Vec<(usize, &Event)> = sorted
                .iter()
                .copied()
                .filter(|(_, e)| e.timestamp >= start && e.timestamp < start + len)
                .collect();
            let shard = format!("shardId-{window_seconds}");
            let event: WindowEvent =
                serde_json::from_value(window_event(&in_window, &shard, start, len, true)?)?;
            processor.handle(&event).await?;
            start += len;
            windows += 1;
        }
        let parts_wcu = store.consumed_write_units();
        if window_seconds == 300 {
            aggregates_300 = parts_wcu;
        }
        let stored = store.read_day(&day).await?;
        let mut window_parts = stored.clone();
        window_parts
            .parts
            .retain(|p| p.shard == format!("shardId-{window_seconds}"));
        window_parts.compacted = None;
        assert_eq!(
            window_parts.merged()?,
            expected,
            "parts of the {window_seconds} s windows equal the recomputation"
        );
        println!(
            "windowed parts, {window_seconds:>3} s windows: {windows} flushes, {} parts, {parts_wcu:.0} WCU = {:.4} WCU/event",
            window_parts.parts.len(),
            parts_wcu / EVENTS as f64
        );
    }

    // Reconciliation of a day holding the 300 s run's parts: snapshot written, parts deleted.
    let fresh = Stack::provision("bench_reconcile").await?;
    let store = Arc::new(DynamoAggregates::new(
        &config,
        fresh.table("AnalyticsTable")?.to_owned(),
    ));
    let processor = WindowProcessor::new(store.clone());
    let len = Duration::seconds(300);
    let mut start = hour;
    while start < hour + Duration::hours(1) {
        let in_window: Vec<(usize, &Event)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.timestamp >= start && e.timestamp < start + len)
            .collect();
        let event: WindowEvent =
            serde_json::from_value(window_event(&in_window, "shardId-1", start, len, true)?)?;
        processor.handle(&event).await?;
        start += len;
    }
    let parts = store.read_day(&day).await?.parts.len();
    let before = store.consumed_write_units();
    let reconciler = Reconciler::new(
        store.clone(),
        InMemoryHours(events.clone()),
        Duration::minutes(20),
    );
    let report = reconciler
        .reconcile_day(&day, Utc::now() + Duration::days(400))
        .await?;
    assert_eq!(report.drift_counters, 0, "parts equal the recomputation");
    assert_eq!(store.read_day(&day).await?.merged()?, expected);
    let reconcile_wcu = store.consumed_write_units() - before;
    println!(
        "reconciliation of the day (once a day is settled): {:.0} WCU = snapshot + deleting {parts} superseded parts ({:.4} WCU/event); drift 0",
        store.consumed_write_units() - before,
        (store.consumed_write_units() - before) / EVENTS as f64
    );

    let mut scoring = Vec::new();
    for batching_seconds in [1_i64, 5, 30] {
        scoring.push((
            batching_seconds,
            scoring_run("reference", &events, batching_seconds).await?,
        ));
    }
    let hot = hot_lead(hour)?;
    for batching_seconds in [1_i64, 5] {
        scoring_run("hot lead, 100 events/s", &hot, batching_seconds).await?;
    }

    // Naive baseline on 1,000 events: one UpdateItem ADD per aggregate (hour and day) per event.
    let client = aws_sdk_dynamodb::Client::new(&config);
    let sample = 1_000;
    let mut naive = 0.0;
    for e in events.iter().take(sample) {
        let hour_bucket = e.hour_bucket();
        let day_bucket = e.timestamp.format("%Y-%m-%d").to_string();
        for key in naive_keys(e, &hour_bucket)
            .into_iter()
            .chain(naive_keys(e, &day_bucket))
        {
            let mut update = client
                .update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S(format!("NAIVE#{key}")))
                .key("sk", AttributeValue::S("n".into()))
                .update_expression("ADD #c :one")
                .expression_attribute_names("#c", "count")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if let Some(m) = e.revenue.as_ref().filter(|_| !key.contains("|demo|")) {
                update = update
                    .update_expression("ADD #c :one, #r :amount")
                    .expression_attribute_names("#r", format!("rev{}", m.currency))
                    .expression_attribute_values(
                        ":amount",
                        AttributeValue::N(m.amount.to_string()),
                    );
            }
            let output = update.send().await?;
            naive += output
                .consumed_capacity()
                .and_then(|c| c.capacity_units())
                .unwrap_or_default();
        }
    }
    let naive_per_event = naive / sample as f64;
    println!("naive baseline (ADD per aggregate per event), measured on {sample} events: {naive_per_event:.2} WCU/event");
    for (batching, cost) in scoring {
        let total = (aggregates_300 + reconcile_wcu + cost) / EVENTS as f64;
        println!(
            "total with the stream batched over {batching} s: aggregates {:.4} + reconciliation {:.4} + lead states and leaderboard {:.4} = {total:.4} WCU/event; naive / total = {:.0}x",
            aggregates_300 / EVENTS as f64,
            reconcile_wcu / EVENTS as f64,
            cost / EVENTS as f64,
            naive_per_event / total
        );
    }
    Ok(())
}

/// One lead at 100 events a second for 60 s, types as the reference workload mixes them.
fn hot_lead(hour: DateTime<Utc>) -> Result<Vec<Event>> {
    let mut rng = fastrand_like(11);
    let ctx = NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    };
    (0..6_000)
        .map(|i| {
            let e = json!({
                "eventId": format!("hot-{i}"),
                "type": TYPES[(rng() % 8) as usize],
                "timestamp": (hour + Duration::milliseconds(i * 10)).to_rfc3339(),
                "leadId": "email:hot@example.com",
            });
            normalize(e, &ctx).map_err(|err| anyhow::anyhow!("{err:?}"))
        })
        .collect()
}

/// Scores `events` as the stream delivers them: in timestamp order, one batch per
/// `batching_seconds` of traffic (the mapping's batching window), each scored at once. Returns
/// the write units spent (lead states and their leaderboard index entries, as DynamoDB reports
/// them, indexes included) and checks every lead against a recomputation.
async fn scoring_run(name: &str, events: &[Event], batching_seconds: i64) -> Result<f64> {
    let stack =
        Stack::provision(&format!("bench_scores_{batching_seconds}_{}", events.len())).await?;
    let config = sdk_config(&stack.dynamodb_endpoint);
    let table = stack.table("AnalyticsTable")?.to_owned();
    let leads = Arc::new(DynamoLeads::new(&config, table.clone()));
    let history = Arc::new(MemoryHistory::default());
    for e in events {
        if let Some(lead) = &e.lead_id {
            history.store(lead, ScoredEvent::from(e));
        }
    }
    let scorer = Scorer::new(leads.clone(), history, DynamoRules::new(&config, table));
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| (e.timestamp, e.event_id.clone()));
    let mut batches: std::collections::BTreeMap<i64, Vec<LeadEvent>> = Default::default();
    for e in sorted {
        if let Some(lead) = &e.lead_id {
            batches
                .entry(e.timestamp.timestamp() / batching_seconds)
                .or_default()
                .push(LeadEvent {
                    lead_id: lead.clone(),
                    event: ScoredEvent::from(e),
                });
        }
    }
    let scored: usize = batches.values().map(Vec::len).sum();
    let invocations = batches.len();
    let started = Instant::now();
    let mut recomputed = 0;
    for (_, batch) in batches {
        recomputed += scorer.score_events(batch, Utc::now()).await?.recomputed;
    }
    let elapsed = started.elapsed();
    let wcu = leads.consumed_write_units();
    let rules = ScoreRules::defaults();
    let mut by_lead: std::collections::BTreeMap<&str, Vec<ScoredEvent>> = Default::default();
    for e in events {
        if let Some(lead) = &e.lead_id {
            by_lead.entry(lead).or_default().push(ScoredEvent::from(e));
        }
    }
    let ids: Vec<&str> = by_lead.keys().copied().collect();
    let stored = tally::scoring::LeadStore::get_leads(leads.as_ref(), &ids).await?;
    for (lead, lead_events) in by_lead {
        let expected = LeadScore::fold(&rules, lead_events).0;
        assert_eq!(
            stored.get(lead).map(|r| &r.state),
            Some(&expected),
            "{lead}"
        );
    }
    let state_bytes: usize = stored
        .values()
        .map(|r| serde_json::to_string(&r.state).map_or(0, |s| s.len()))
        .sum();
    println!(
        "real-time scoring, {name}, stream batched over {batching_seconds} s: {scored} events in {invocations} batches, {wcu:.0} WCU = {:.4} WCU/event (lead states and leaderboard index), {} leads (mean state {} bytes), {recomputed} recomputed, {:.1} s; every lead equals its recomputation",
        wcu / scored.max(1) as f64,
        stored.len(),
        state_bytes / stored.len().max(1),
        elapsed.as_secs_f64()
    );
    Ok(wcu)
}
