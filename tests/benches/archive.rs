//! Archive and redrive figures for the README, on the emulators (moto's Firehose, S3 and SQS):
//! - the archive: records per second of one invocation of 500 records (the mapping's batch
//!   size), through moto's Firehose and with a sink that keeps nothing (the function's own
//!   CPU), and `PutRecordBatch` calls per 1,000 events;
//! - redrive: messages per second moved from the dead-letter queue to the work queue.
//!
//! Run: `cargo bench -p tally-tests --bench archive` (env `BATCHES` (20), `MESSAGES` (2000)).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_trait::async_trait;
use serde_json::{json, Value};
use tally::archive::{ArchiveSink, Archiver, StreamBatch};
use tally::aws::{FirehoseArchive, SqsRedrive};
use tally::redrive::{RedriveRequest, Redriver};
use tally::store::StoreError;
use tally_tests::stream::workload;
use tally_tests::{sdk_config, Stack};

const BATCH: usize = 500;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts calls; delivers through `inner`, or keeps nothing.
struct Counting<S> {
    inner: Option<S>,
    calls: AtomicUsize,
}

#[async_trait]
impl<S: ArchiveSink> ArchiveSink for Counting<S> {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match &self.inner {
            Some(sink) => sink.put_batch(records).await,
            None => Ok(vec![None; records.len()]),
        }
    }
}

/// Stream batches of `BATCH` records as DynamoDB streams deliver stored events.
fn batches(count: usize) -> Result<Vec<StreamBatch>> {
    let events = workload(7, count * BATCH)?;
    events
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let records: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let json = e.to_canonical_json().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    Ok(json!({
                        "eventID": format!("{b}-{i}"), "eventName": "INSERT", "eventSource": "aws:dynamodb",
                        "dynamodb": {"SequenceNumber": format!("{:021}", b * BATCH + i),
                            "Keys": {"eventId": {"S": e.event_id}},
                            "NewImage": {"eventId": {"S": e.event_id}, "status": {"S": "PROCESSED"}, "event": {"S": json}}}
                    }))
                })
                .collect::<Result<_>>()?;
            Ok(serde_json::from_value(json!({ "Records": records }))?)
        })
        .collect()
}

async fn archive_figures(stack: &Stack, batches: &[StreamBatch]) -> Result<()> {
    let moto = sdk_config(&stack.moto_endpoint);
    let stream = stack.delivery_stream("ArchiveDeliveryStream")?;
    let bytes: usize = batches
        .iter()
        .flat_map(|b| &b.records)
        .filter_map(|r| r.processed_event_json())
        .map(|j| j.len() + 1)
        .sum();
    let events: usize = batches.iter().map(|b| b.records.len()).sum();
    for (label, inner) in [
        ("no sink (CPU only)", None),
        (
            "moto Firehose",
            Some(FirehoseArchive::new(&moto, stream.name.clone())),
        ),
    ] {
        let sink = Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
        });
        let archiver = Archiver::new(sink.clone(), 4, Duration::from_millis(200));
        let mut rates = Vec::new();
        for batch in batches {
            let started = Instant::now();
            let (response, report) = archiver.archive(batch).await;
            let elapsed = started.elapsed().as_secs_f64();
            ensure!(response.batch_item_failures.is_empty() && report.archived == BATCH);
            rates.push(BATCH as f64 / elapsed);
        }
        rates.sort_by(f64::total_cmp);
        let calls = sink.calls.load(Ordering::Relaxed);
        println!(
            "archive, {label}: median {:.0} records/s per invocation of {BATCH} (min {:.0}, max {:.0}); {} PutRecordBatch calls for {events} events ({:.1} per 1,000; mean line {} bytes)",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            calls,
            calls as f64 * 1000.0 / events as f64,
            bytes / events.max(1),
        );
    }
    Ok(())
}

async fn redrive_figures(stack: &Stack, batches: &[StreamBatch], messages: usize) -> Result<()> {
    let dlq = stack.queue("DeadLetterQueue")?.url.clone();
    let work = stack.queue("WorkQueue")?.url.clone();
    // Realistic messages: envelopes of generated events with the ingest attributes.
    let bodies: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.records)
        .filter_map(|r| r.processed_event_json())
        .take(messages)
        .enumerate()
        .map(|(i, event)| {
            format!(
                r#"{{"submissionId":"bench-{i}","receivedAt":"2026-12-01T00:00:00.000Z","correlationId":"bench","event":{event}}}"#
            )
        })
        .collect();
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_attributes(
                        "correlationId",
                        aws_sdk_sqs::types::MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value("bench")
                            .build()?,
                    )
                    .build()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        stack
            .sqs
            .send_message_batch()
            .queue_url(&dlq)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    let redriver = Redriver::new(SqsRedrive::new(
        &sdk_config(&stack.moto_endpoint),
        dlq,
        work,
    ));
    let started = Instant::now();
    let report = redriver
        .redrive(&RedriveRequest {
            max_messages: bodies.len() as u32,
            dry_run: false,
            rate_per_second: 3000,
        })
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(report.moved == bodies.len() as u64, "{report:?}");
    println!(
        "redrive, moto SQS: {} messages in {elapsed:.1} s = {:.0} messages/s (rate limit 3,000/s; 3 calls per 10 messages)",
        report.moved,
        report.moved as f64 / elapsed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let stack = Stack::provision("bench_archive").await?;
    let batches = batches(env_usize("BATCHES", 20))?;
    archive_figures(&stack, &batches).await?;
    redrive_figures(&stack, &batches, env_usize("MESSAGES", 2000)).await?;
    Ok(())
}
