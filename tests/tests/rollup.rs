//! Rollups from the real events stream (DynamoDB Local) through the local stream mapping with
//! tumbling windows, into the analytics table: exact after duplicates, retries, failed flushes and
//! bisected batches, and reconciled against the events table.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use rust_decimal::Decimal;
use tally::aggregation::{
    AggregatePart, AggregateReader, AggregateStore, CompactedDay, Reconciler,
};
use tally::aws::{hour_shard, DynamoEventStore};
use tally::event::Event;
use tally::rollup::{AggregateKey, Dimension, Rollup};
use tally::store::{EventStatus, EventStore, FailureRecord};
use tally_tests::sdk_config;
use tally_tests::stream::{fixture, store_all, workload};

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
    // The hour index is write-sharded by event id; reconciliation below must read every shard.
    let scanned = f
        .stack
        .dynamodb
        .scan()
        .table_name(f.stack.table("EventsTable")?)
        .projection_expression("eventId, hourShard")
        .send()
        .await?;
    let mut shards: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for item in scanned.items() {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let (id, shard) = (
            text("eventId").context("id")?,
            text("hourShard").context("shard")?,
        );
        let (hour, _) = shard.split_once('#').context("<hour>#<shard>")?;
        assert_eq!(shard, hour_shard(hour, &id));
        shards.entry(hour.to_owned()).or_default().insert(shard);
    }
    let busiest = shards.values().map(|s| s.len()).max().unwrap_or(0);
    assert!(
        busiest >= 4,
        "an hour's events spread over shards: {shards:?}"
    );
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

    // The snapshot comes with its daily summary, which whole-day reads take alone.
    let expected_day = expected
        .days()
        .remove(&day)
        .context("the day's aggregates")?;
    let totals = f
        .aggregates
        .read_day_totals(&day)
        .await?
        .context("a daily summary")?;
    assert_eq!(totals.merged()?, expected_day);
    assert_eq!(f.aggregates.whole_day(&day).await?, expected_day);

    let again = reconciler.reconcile_day(&day, Utc::now()).await?;
    assert_eq!(
        (again.drift_counters, again.written),
        (0, false),
        "{again:?}"
    );
    // The schedule's next run: nothing counted for the day since, so its events are not read.
    let scheduled = reconciler.reconcile_if_changed(&day, Utc::now()).await?;
    assert!(
        scheduled.unchanged && scheduled.events == 0 && !scheduled.written,
        "{scheduled:?}"
    );
    // A day without events gets an empty snapshot once, then is left unread too.
    let empty = "2020-01-01";
    let first = reconciler.reconcile_if_changed(empty, Utc::now()).await?;
    assert!(first.written && first.events == 0, "{first:?}");
    let next = reconciler.reconcile_if_changed(empty, Utc::now()).await?;
    assert!(next.unchanged && !next.written, "{next:?}");
    assert_eq!(f.aggregates.whole_day(empty).await?, Default::default());

    // A snapshot written before daily summaries existed: whole-day reads sum its hours instead,
    // and the next reconciliation adds the summary.
    let current = stored.compacted.clone().context("the snapshot")?;
    let legacy = CompactedDay {
        upto_ms: current.upto_ms + 1,
        chunks: current.chunks.clone(),
        daily: Vec::new(),
    };
    f.aggregates.write_compacted(&day, &legacy, &stored).await?;
    assert!(f.aggregates.read_day_totals(&day).await?.is_none());
    assert_eq!(f.aggregates.whole_day(&day).await?, expected_day);
    let upgrade = reconciler.reconcile_if_changed(&day, Utc::now()).await?;
    assert!(
        upgrade.written && !upgrade.unchanged && upgrade.drift_counters == 0,
        "{upgrade:?}"
    );
    let totals = f.aggregates.read_day_totals(&day).await?;
    assert_eq!(totals.map(|t| t.merged()).transpose()?, Some(expected_day));
    let upgraded = f.aggregates.read_day(&day).await?;
    assert!(
        upgraded.stale_snapshots.is_empty(),
        "superseded versions removed"
    );
    let expected_hours = Rollup {
        hours: expected
            .hours
            .iter()
            .filter(|(hour, _)| hour.starts_with(day.as_str()))
            .map(|(hour, window)| (hour.clone(), window.clone()))
            .collect(),
    };
    assert_eq!(upgraded.merged()?, expected_hours);

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
