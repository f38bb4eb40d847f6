//! The repair on the emulators: events stored in DynamoDB Local while neither stream consumer
//! ran (their batches failed for good), failure references in moto's failure queues in the
//! shape Lambda gives them; the repair re-derives the aggregates, the scores and the archive
//! from the events table alone and deletes the references.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use serde_json::json;
use tally::aggregation::AggregateStore;
use tally::aws::{repair_ports, DynamoAggregates, DynamoEventStore, DynamoLeads};
use tally::config::RepairConfig;
use tally::event::Limits;
use tally::repair::Repairer;
use tally::rollup::Rollup;
use tally::scoring::{LeadScore, LeadStore, ScoreRules, ScoredEvent};
use tally_tests::stream::{store_all, workload};
use tally_tests::{archived_lines, sdk_config, Stack};

fn failure_record(first: chrono::DateTime<Utc>, last: chrono::DateTime<Utc>) -> String {
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({
        "requestContext": {"requestId": "r", "functionArn": "arn", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": at(last),
        "DDBStreamBatchInfo": {
            "shardId": "shardId-1", "startSequenceNumber": "1", "endSequenceNumber": "2",
            "approximateArrivalOfFirstRecord": at(first), "approximateArrivalOfLastRecord": at(last),
            "batchSize": 100, "streamArn": "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x"
        }
    })
    .to_string()
}

/// One reference of each consumer for the batch stored between `first` and `last`, and one
/// unreadable message in the rollup's queue.
async fn send_references(
    stack: &Stack,
    rollup_queue: &str,
    archive_queue: &str,
    first: chrono::DateTime<Utc>,
    last: chrono::DateTime<Utc>,
) -> Result<()> {
    for (url, body) in [
        (rollup_queue, failure_record(first, last)),
        (rollup_queue, "not a failure record".to_owned()),
        (archive_queue, failure_record(first, last)),
    ] {
        stack
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await?;
    }
    Ok(())
}

async fn queue_depth(stack: &Stack, url: &str) -> Result<usize> {
    let mut bodies = Vec::new();
    // Messages received here are hidden for a second only, so repeated reads see them again.
    let output = stack
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(1)
        .send()
        .await?;
    bodies.extend(output.messages.unwrap_or_default());
    Ok(bodies.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_rederived_from_the_events_table_and_their_references_deleted(
) -> Result<()> {
    let stack = Stack::provision("repair_failures").await?;
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let moto = sdk_config(&stack.moto_endpoint);
    let events_table = stack.table("EventsTable")?.to_owned();
    let analytics = stack.table("AnalyticsTable")?.to_owned();
    let store = DynamoEventStore::new(&ddb, events_table.clone());

    // Stored while both consumers' batches failed: no aggregate, score or archive line exists.
    // Some events are late (stamped hours to days ago), so several days are touched.
    let events = workload(11, 120)?;
    let first = Utc::now();
    store_all(&store, &events).await?;
    let last = Utc::now();
    let rollup_queue = stack.queue("RollupFailureQueue")?.url.clone();
    let archive_queue = stack.queue("ArchiveFailureQueue")?.url.clone();
    send_references(&stack, &rollup_queue, &archive_queue, first, last).await?;
    let stream = stack.delivery_stream("ArchiveDeliveryStream")?;
    let bucket = stack.bucket(&stream.bucket_logical_id)?.name.clone();
    assert!(archived_lines(&stack, &bucket).await?.is_empty());

    let config = RepairConfig {
        events_table,
        analytics_table: analytics.clone(),
        rollup_failure_queue_url: rollup_queue.clone(),
        archive_failure_queue_url: archive_queue.clone(),
        delivery_stream: stream.name.clone(),
        settle: chrono::Duration::seconds(1),
        limits: Limits::default(),
    };
    let repairer = Repairer::new(repair_ports(&ddb, &moto, &config), 30);
    // A dry run counts and changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dry = repairer.invoke(json!({"dryRun": true}), Utc::now()).await?;
    assert_eq!(
        dry.rollup.as_ref().map(|r| (r.records, r.events)),
        Some((2, events.len()))
    );
    // The dry run handed its references back: the repair can follow at once.
    let report = repairer.invoke(json!({}), Utc::now()).await?;
    let rollup = report.rollup.context("rollup report")?;
    assert_eq!(
        (
            rollup.records,
            rollup.repaired,
            rollup.unreadable,
            rollup.events,
            rollup.days_not_settled
        ),
        (2, 1, 1, events.len(), 0),
        "{rollup:?}"
    );
    let archive = report.archive.context("archive report")?;
    assert_eq!(
        (archive.repaired, archive.lines_archived),
        (1, events.len())
    );

    // Aggregates: every day the events fall on, as an independent sum over the events.
    let mut expected = Rollup::default();
    events.iter().for_each(|e| expected.add(e));
    let days: BTreeSet<String> = events
        .iter()
        .map(|e| e.timestamp.format("%Y-%m-%d").to_string())
        .collect();
    assert!(days.len() > 1, "late events touch earlier days");
    let aggregates = DynamoAggregates::new(&ddb, analytics.clone());
    let mut stored = Rollup::default();
    for day in &days {
        stored.merge(&aggregates.read_day(day).await?.merged()?);
    }
    assert_eq!(stored, expected);

    // Scores: every lead, as a fold of its events under the default rules.
    let mut by_lead: BTreeMap<String, Vec<ScoredEvent>> = BTreeMap::new();
    for e in &events {
        if let Some(lead) = &e.lead_id {
            by_lead
                .entry(lead.clone())
                .or_default()
                .push(ScoredEvent::from(e));
        }
    }
    let leads = DynamoLeads::new(&ddb, analytics);
    let ids: Vec<&str> = by_lead.keys().map(String::as_str).collect();
    let states = leads.get_leads(&ids).await?;
    assert_eq!(states.len(), by_lead.len());
    for (lead, lead_events) in by_lead {
        let (want, _) = LeadScore::fold(&ScoreRules::defaults(), lead_events);
        let got = states.get(&lead).map(|r| (r.state.score, r.state.events));
        assert_eq!(got, Some((want.score, want.events)), "{lead}");
    }

    // Archive: every stored event's line (moto's Firehose writes through at once).
    let ids: BTreeSet<String> = archived_lines(&stack, &bucket)
        .await?
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["eventId"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, want);

    // Only the unreadable reference is left, for a person.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(queue_depth(&stack, &archive_queue).await?, 0);
    let again = repairer
        .invoke(json!({"queue": "rollup"}), Utc::now())
        .await?;
    assert_eq!(
        again.rollup.map(|r| (r.records, r.unreadable)),
        Some((0, 0)),
        "still hidden"
    );
    Ok(())
}
