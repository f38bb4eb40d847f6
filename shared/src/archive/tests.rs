//! The archiver against an in-memory sink that records every call and refuses what it is told to.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

type Policy = Box<dyn Fn(usize, &str) -> Option<String> + Send + Sync>;

/// Records each call's lines; `refuse(call number, line)` says which lines a call refuses.
struct RecordingSink {
    calls: Mutex<Vec<Vec<String>>>,
    refuse: Policy,
    fail_call: Option<usize>,
}

impl RecordingSink {
    fn new(refuse: Policy) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            refuse,
            fail_call: None,
        }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ArchiveSink for &RecordingSink {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        let lines: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        let n = {
            let mut calls = self
                .calls
                .lock()
                .map_err(|_| StoreError::Unavailable("lock".into()))?;
            calls.push(lines.clone());
            calls.len() - 1
        };
        if self.fail_call == Some(n) {
            return Err(StoreError::Unavailable(
                "ServiceUnavailableException".into(),
            ));
        }
        Ok(lines.iter().map(|l| (self.refuse)(n, l)).collect())
    }
}

fn record(seq: usize, name: &str, status: &str, padding: usize) -> Value {
    let event = json!({"eventId": format!("e{seq}"), "type": "PAGE_VIEW", "payload": {"pad": "x".repeat(padding)}});
    json!({
        "eventID": seq.to_string(), "eventName": name, "eventSource": "aws:dynamodb",
        "dynamodb": {"SequenceNumber": format!("{seq:021}"), "Keys": {"eventId": {"S": format!("e{seq}")}},
            "NewImage": {"eventId": {"S": format!("e{seq}")}, "status": {"S": status}, "event": {"S": event.to_string()}}}
    })
}

fn batch(records: Vec<Value>) -> StreamBatch {
    serde_json::from_value(json!({ "Records": records })).unwrap_or_default()
}

fn processed(count: usize, padding: usize) -> StreamBatch {
    batch(
        (0..count)
            .map(|i| record(i, "INSERT", "PROCESSED", padding))
            .collect(),
    )
}

fn id_of(line: &str) -> String {
    serde_json::from_str::<Value>(line).map_or_else(
        |_| String::new(),
        |v| v["eventId"].as_str().unwrap_or_default().to_owned(),
    )
}

const NO_WAIT: Duration = Duration::ZERO;

#[tokio::test]
async fn every_processed_event_becomes_one_line_in_calls_of_at_most_500() {
    let sink = RecordingSink::new(Box::new(|_, _| None));
    let mut records: Vec<Value> = (0..1_201)
        .map(|i| record(i, "INSERT", "PROCESSED", 0))
        .collect();
    records.push(record(5_000, "INSERT", "FAILED", 0));
    records.push(record(5_001, "REMOVE", "PROCESSED", 0));
    records.push(record(5_002, "MODIFY", "PROCESSED", 0));
    let (response, report) = Archiver::new(&sink, 3, NO_WAIT)
        .with_record_bytes(0)
        .archive(&batch(records))
        .await;
    assert_eq!(response, BatchResponse::default());
    let calls = sink.calls();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![500, 500, 202]
    );
    let lines: Vec<&String> = calls.iter().flatten().collect();
    assert!(lines
        .iter()
        .all(|l| l.ends_with('\n') && l.matches('\n').count() == 1));
    let ids: Vec<String> = lines.iter().map(|l| id_of(l)).collect();
    let mut expected: Vec<String> = (0..1_201).map(|i| format!("e{i}")).collect();
    expected.push("e5002".into());
    assert_eq!(ids, expected, "in stream order, each once");
    assert_eq!(
        report,
        ArchiveReport {
            archived: 1_202,
            skipped: 2,
            calls: 3,
            resent: 0,
            failed: 0,
            records: 1_202,
        }
    );
}

#[tokio::test]
async fn calls_stay_within_4_mib() {
    let sink = RecordingSink::new(Box::new(|_, _| None));
    // About 30 KB a line: 4 MiB holds 139 of them.
    let (_, report) = Archiver::new(&sink, 3, NO_WAIT)
        .with_record_bytes(0)
        .archive(&processed(400, 30_000))
        .await;
    let calls = sink.calls();
    assert!(calls.len() >= 3, "{}", calls.len());
    for call in &calls {
        let bytes: usize = call.iter().map(String::len).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
    }
    // Every call but the last is full: the next line would not have fit.
    for pair in calls.windows(2) {
        let bytes: usize = pair[0].iter().map(String::len).sum();
        assert!(bytes + pair[1][0].len() > MAX_BATCH_BYTES);
    }
    assert_eq!(report.archived, 400);
}

#[tokio::test]
async fn only_refused_records_are_sent_again() {
    // The first call refuses every 7th line; later calls accept everything.
    let sink = RecordingSink::new(Box::new(|call, line| {
        let n: usize = id_of(line)
            .trim_start_matches('e')
            .parse()
            .unwrap_or_default();
        (call == 0 && n % 7 == 0).then(|| "ServiceUnavailableException".to_owned())
    }));
    let (response, report) = Archiver::new(&sink, 3, NO_WAIT)
        .with_record_bytes(0)
        .archive(&processed(100, 0))
        .await;
    let calls = sink.calls();
    assert_eq!(calls.len(), 2);
    let resent: Vec<String> = calls[1].iter().map(|l| id_of(l)).collect();
    let refused: Vec<String> = (0..100).step_by(7).map(|i| format!("e{i}")).collect();
    assert_eq!(resent, refused);
    assert_eq!(response, BatchResponse::default());
    assert_eq!(
        (report.archived, report.resent, report.failed, report.calls),
        (100, refused.len(), 0, 2)
    );
}

#[tokio::test]
async fn a_record_refused_every_time_is_reported_after_the_last_attempt() {
    let sink = RecordingSink::new(Box::new(|_, line| {
        (id_of(line) == "e42").then(|| "InternalFailure".to_owned())
    }));
    let (response, report) = Archiver::new(&sink, 3, NO_WAIT)
        .with_record_bytes(0)
        .archive(&processed(100, 0))
        .await;
    let calls = sink.calls();
    assert_eq!(calls.len(), 3, "one call, then two with e42 alone");
    assert!(calls[1..]
        .iter()
        .all(|c| c.len() == 1 && id_of(&c[0]) == "e42"));
    assert_eq!(
        response.batch_item_failures,
        vec![ItemFailure {
            item_identifier: format!("{:021}", 42)
        }]
    );
    assert_eq!((report.archived, report.failed, report.resent), (99, 1, 2));
}

#[tokio::test]
async fn a_failed_call_resends_that_call_only() {
    let mut sink = RecordingSink::new(Box::new(|_, _| None));
    sink.fail_call = Some(1);
    let (response, report) = Archiver::new(&sink, 2, NO_WAIT)
        .with_record_bytes(0)
        .archive(&processed(1_100, 0))
        .await;
    let calls = sink.calls();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![500, 500, 100, 500]
    );
    assert_eq!(calls[3], calls[1], "the failed call's lines, again");
    assert_eq!(response, BatchResponse::default());
    assert_eq!((report.archived, report.resent), (1_100, 500));
}

#[tokio::test]
async fn the_sample_batch_archives_its_two_processed_events() -> Result<(), serde_json::Error> {
    let sample: StreamBatch =
        serde_json::from_str(include_str!("../../../events/archive-stream-batch.json"))?;
    let sink = RecordingSink::new(Box::new(|_, _| None));
    let (response, report) = Archiver::new(&sink, 3, NO_WAIT).archive(&sample).await;
    let ids: Vec<String> = lines_of(&sink.calls()).iter().map(|l| id_of(l)).collect();
    assert_eq!(ids, vec!["sample-stream-1", "sample-stream-2"]);
    assert_eq!((report.archived, report.skipped, report.records), (2, 1, 1));
    assert_eq!(response, BatchResponse::default());
    Ok(())
}

/// Every line of every record sent, in order.
fn lines_of(calls: &[Vec<String>]) -> Vec<String> {
    calls
        .iter()
        .flatten()
        .flat_map(|record| record.split_inclusive('\n').map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn lines_are_packed_into_records_of_at_most_1000_kib() {
    let sink = RecordingSink::new(Box::new(|_, _| None));
    // About 10 KB a line: a record holds 100 of them.
    let (response, report) = Archiver::new(&sink, 3, NO_WAIT)
        .archive(&processed(1_000, 10_000))
        .await;
    assert_eq!(response, BatchResponse::default());
    let records: Vec<String> = sink.calls().into_iter().flatten().collect();
    assert!(
        records.len() >= 10 && records.len() < 12,
        "{}",
        records.len()
    );
    for (n, record) in records.iter().enumerate() {
        assert!(record.len() <= MAX_RECORD_BYTES && record.ends_with('\n'));
        // Full: the next record's first line would not have fit.
        if let Some(next) = records.get(n + 1) {
            let first = next.split_inclusive('\n').next().map_or(0, str::len);
            assert!(record.len() + first > MAX_RECORD_BYTES);
        }
    }
    let ids: Vec<String> = lines_of(&sink.calls()).iter().map(|l| id_of(l)).collect();
    let expected: Vec<String> = (0..1_000).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected, "in stream order, each once");
    assert_eq!((report.archived, report.records), (1_000, records.len()));
}

#[tokio::test]
async fn a_packed_record_refused_every_time_fails_each_of_its_lines() {
    // Lines of 400 KB: two to a record. The record holding e2 and e3 is always refused.
    let sink = RecordingSink::new(Box::new(|_, record| {
        record
            .split_inclusive('\n')
            .any(|l| id_of(l) == "e3")
            .then(|| "InternalFailure".to_owned())
    }));
    let (response, report) = Archiver::new(&sink, 2, NO_WAIT)
        .archive(&processed(6, 400_000))
        .await;
    let calls = sink.calls();
    assert_eq!(calls.len(), 2, "one call, then the refused record alone");
    assert_eq!(calls[0].len(), 3);
    assert_eq!(
        lines_of(&calls[1..])
            .iter()
            .map(|l| id_of(l))
            .collect::<Vec<_>>(),
        vec!["e2", "e3"]
    );
    assert_eq!(
        response.batch_item_failures,
        vec![
            ItemFailure {
                item_identifier: format!("{:021}", 2)
            },
            ItemFailure {
                item_identifier: format!("{:021}", 3)
            },
        ]
    );
    assert_eq!(
        (
            report.archived,
            report.failed,
            report.resent,
            report.records
        ),
        (4, 2, 1, 3)
    );
}
