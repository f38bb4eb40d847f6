//! The archive on the emulators: stored events (DynamoDB Local) through the real events stream
//! and the local stream mapping, into the archive function's logic, out through moto's Firehose
//! to S3. Every stored event appears in the archive; a reader keeps one line per `eventId`,
//! because a batch retried after a reported failure delivers its later records again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tally::archive::{ArchiveSink, Archiver, StreamBatch};
use tally::aws::{DynamoEventStore, FirehoseArchive};
use tally::store::{EventStatus, EventStore, FailureRecord, StoreError};
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::sources::{StartingPosition, StreamMapping, StreamPoller};
use tally_tests::stream::{events_stream_arn, store_all, workload};
use tally_tests::{archived_lines, sdk_config, Stack};

/// The real delivery stream, refusing chosen lines: every 5th line of the first call (Firehose's
/// per-record refusals), and one event's line on its first two attempts.
struct FlakyFirehose {
    inner: FirehoseArchive,
    calls: AtomicUsize,
    stubborn_event: String,
    stubborn_refusals: AtomicUsize,
    /// Each call's event ids, in order.
    seen: Mutex<Vec<Vec<String>>>,
}

fn event_id(line: &[u8]) -> String {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v["eventId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[async_trait]
impl ArchiveSink for FlakyFirehose {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let ids: Vec<String> = records.iter().map(|r| event_id(r)).collect();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(ids.clone());
        }
        let mut refused = vec![None; records.len()];
        let mut passed = Vec::new();
        let mut positions = Vec::new();
        for (n, (record, id)) in records.into_iter().zip(&ids).enumerate() {
            let stubborn = *id == self.stubborn_event
                && self.stubborn_refusals.fetch_add(1, Ordering::SeqCst) < 2;
            if stubborn || (call == 0 && n % 5 == 4) {
                refused[n] = Some("ServiceUnavailableException".to_owned());
            } else {
                passed.push(record);
                positions.push(n);
            }
        }
        if !passed.is_empty() {
            let answers = self.inner.put_batch(passed).await?;
            for (n, answer) in positions.into_iter().zip(answers) {
                refused[n] = answer;
            }
        }
        Ok(refused)
    }
}

struct InProcess {
    archiver: Archiver<Arc<FlakyFirehose>>,
    invocations: AtomicUsize,
}

#[async_trait]
impl Invoker for InProcess {
    async fn invoke(&self, _function: &str, event: Value) -> Result<Value, InvokeError> {
        self.invocations.fetch_add(1, Ordering::SeqCst);
        let batch: StreamBatch =
            serde_json::from_value(event).map_err(|e| InvokeError::FunctionError {
                error_type: "InvalidEvent".into(),
                error_message: e.to_string(),
            })?;
        let response = self.archiver.handle(&batch).await;
        serde_json::to_value(response).map_err(|e| InvokeError::FunctionError {
            error_type: "Serialize".into(),
            error_message: e.to_string(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stored_event_is_archived_and_readers_keep_one_line_per_event() -> Result<()> {
    let stack = Stack::provision("archive").await?;
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let moto = sdk_config(&stack.moto_endpoint);
    let events_table = stack.table("EventsTable")?.to_owned();
    let store = DynamoEventStore::new(&ddb, events_table.clone());

    let events = workload(41, 120)?;
    let stubborn = events[30].event_id.clone();
    // A failure first recorded, then processed: archived once, from its MODIFY record.
    let recovered = &events[7];
    store
        .record_failure(&FailureRecord {
            event_id: recovered.event_id.clone(),
            status: EventStatus::Failed,
            reason: "injected".into(),
            failed_at: Utc::now(),
            provenance: None,
            event: None,
            event_json: None,
        })
        .await?;
    // Every event stored, ten of them submitted twice (duplicates change nothing).
    store_all(&store, &events).await?;
    store_all(&store, &events[..10]).await?;
    // A failure never processed: not archived.
    store
        .record_failure(&FailureRecord {
            event_id: "never-processed".into(),
            status: EventStatus::DeadLetter,
            reason: "injected".into(),
            failed_at: Utc::now(),
            provenance: None,
            event: None,
            event_json: None,
        })
        .await?;

    let stream = stack.delivery_stream("ArchiveDeliveryStream")?;
    let bucket = stack.bucket(&stream.bucket_logical_id)?.name.clone();
    let firehose = Arc::new(FlakyFirehose {
        inner: FirehoseArchive::new(&moto, stream.name.clone()),
        calls: AtomicUsize::new(0),
        stubborn_event: stubborn.clone(),
        stubborn_refusals: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let function = Arc::new(InProcess {
        // One line a record, so the stub's per-record refusals pick single events (packing is
        // unit-tested, and the stack test archives packed records through moto).
        archiver: Archiver::new(firehose.clone(), 2, Duration::from_millis(10))
            .with_record_bytes(0),
        invocations: AtomicUsize::new(0),
    });
    let arn = events_stream_arn(&stack).await?;
    let mut mapping = StreamMapping::new("ArchiveFunction", arn);
    mapping.starting_position = StartingPosition::TrimHorizon;
    mapping.batch_size = 500;
    mapping.maximum_retry_attempts = 10;
    mapping.report_batch_item_failures = true;
    mapping.retry_backoff = Duration::from_millis(100);
    let poller = StreamPoller::start(
        aws_sdk_dynamodbstreams::Client::new(&ddb),
        stack.sqs.clone(),
        mapping,
        function.clone(),
    );

    let expected: BTreeMap<String, Value> = events
        .iter()
        .map(|e| {
            let json = e
                .to_canonical_json()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok((e.event_id.clone(), serde_json::from_str(&json)?))
        })
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = archived_lines(&stack, &bucket).await?;
        let ids: BTreeSet<String> = lines.iter().map(|l| event_id(l.as_bytes())).collect();
        if ids.len() >= expected.len() {
            break lines;
        }
        if Instant::now() > deadline {
            bail!("archived {} of {} events", ids.len(), expected.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    poller.stop().await;

    // A reader keeps the first line of each eventId; every line of an id is the same event.
    let mut kept: BTreeMap<String, Value> = BTreeMap::new();
    for line in &lines {
        let value: Value = serde_json::from_str(line).context("an archive line is JSON")?;
        let id = value["eventId"].as_str().context("eventId")?.to_owned();
        if let Some(first) = kept.get(&id) {
            assert_eq!(*first, value, "a repeated line is the same event");
        } else {
            kept.insert(id, value);
        }
    }
    assert_eq!(kept, expected, "each stored event once, as stored");

    // Firehose's refusals were resent alone: the second call carried exactly the first call's
    // every 5th line.
    let seen = firehose.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let refused_first: Vec<String> = seen[0].iter().skip(4).step_by(5).cloned().collect();
    assert!(!refused_first.is_empty());
    assert_eq!(
        seen[1]
            .iter()
            .filter(|id| **id != stubborn)
            .cloned()
            .collect::<Vec<_>>(),
        refused_first
            .into_iter()
            .filter(|id| *id != stubborn)
            .collect::<Vec<_>>()
    );
    // The stubborn line outlasted the archiver's two attempts: its record was reported, the
    // mapping invoked again from it, and it was delivered then.
    assert!(function.invocations.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        lines
            .iter()
            .filter(|l| event_id(l.as_bytes()) == stubborn)
            .count(),
        1,
        "delivered once, on the retried invocation"
    );
    Ok(())
}
