//! `archive`: every stored event to the archive's delivery stream (Firehose → S3), as NDJSON.
//!
//! Each stream record that stores a `PROCESSED` event (terminal, so one per event) becomes one
//! line: the canonical event exactly as stored, which carries its `eventId`, and a newline (the
//! delivery stream concatenates records as they come). Firehose bills every record rounded up to
//! 5 KB, so consecutive lines are packed into records of up to [`MAX_RECORD_BYTES`]: a line of
//! 600 bytes alone would be billed as 5 KB. Records go out with `PutRecordBatch`, at most 500
//! records and 4 MiB a call. Firehose answers per record; only the records it refused are sent
//! again, up to `max_attempts` calls in all with exponential backoff. The lines of what still
//! fails are reported as batch-item failures, so Lambda retries the batch from the first failed
//! line. Lines after it that were delivered are then delivered again: the archive is at least
//! once, and a reader keeps one line per `eventId` (README, "Archive").

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tracing::{info, warn};

use crate::observability::Metrics;
use crate::store::StoreError;
use crate::stream_window::{ItemFailure, StreamRecord};

/// `PutRecordBatch` limits.
pub const MAX_BATCH_RECORDS: usize = 500;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Firehose's largest record (before base64).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// Where archive lines go (a Firehose delivery stream in AWS).
#[async_trait]
pub trait ArchiveSink: Send + Sync {
    /// Sends `records` in one call (within the limits above). Per record, in order: `None` when
    /// it was accepted, else the error code it was refused with. `Err` when the call failed as
    /// a whole.
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError>;
}

#[async_trait]
impl<T: ArchiveSink + ?Sized> ArchiveSink for std::sync::Arc<T> {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        (**self).put_batch(records).await
    }
}

/// The stream event Lambda hands the function (only what the archive reads).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

/// The answer: the records to retry from (`ReportBatchItemFailures`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

/// Figures of one batch, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Lines delivered.
    pub archived: usize,
    /// Records that store no processed event (failures, removals): nothing to archive.
    pub skipped: usize,
    /// `PutRecordBatch` calls.
    pub calls: usize,
    /// Records sent again after Firehose refused them.
    pub resent: usize,
    /// Lines still refused after the last attempt (their stream records are reported failed).
    pub failed: usize,
    /// Firehose records the lines were packed into.
    pub records: usize,
}

pub struct Archiver<S> {
    sink: S,
    max_attempts: u32,
    backoff: Duration,
    record_bytes: usize,
}

impl<S: ArchiveSink> Archiver<S> {
    /// `max_attempts` calls at most for a line (at least one); the wait before the n-th retry is
    /// `backoff` × 2ⁿ⁻¹.
    pub fn new(sink: S, max_attempts: u32, backoff: Duration) -> Self {
        Self {
            sink,
            max_attempts: max_attempts.max(1),
            backoff,
            record_bytes: MAX_RECORD_BYTES,
        }
    }

    /// Packs lines into records of at most `bytes` (a longer line is a record of its own; 0
    /// sends one line a record).
    pub fn with_record_bytes(mut self, bytes: usize) -> Self {
        self.record_bytes = bytes.min(MAX_RECORD_BYTES);
        self
    }

    /// One invocation: archives the batch, then logs and emits its figures (EMF).
    pub async fn handle(&self, batch: &StreamBatch) -> BatchResponse {
        let started = Instant::now();
        let (response, report) = self.archive(batch).await;
        let mut metrics = Metrics::new("archive");
        metrics.count("RecordsArchived", report.archived as u64);
        metrics.count("FirehoseRecords", report.records as u64);
        metrics.count("ArchiveCalls", report.calls as u64);
        metrics.count("ArchiveResent", report.resent as u64);
        metrics.count("ArchiveFailed", report.failed as u64);
        metrics.duration("BatchDuration", started);
        info!(
            records = batch.records.len(),
            archived = report.archived,
            firehose_records = report.records,
            skipped = report.skipped,
            calls = report.calls,
            resent = report.resent,
            failed = report.failed,
            "batch archived"
        );
        metrics.flush();
        response
    }

    pub async fn archive(&self, batch: &StreamBatch) -> (BatchResponse, ArchiveReport) {
        let mut report = ArchiveReport::default();
        // (sequence number, line)
        let mut lines: Vec<(&str, Vec<u8>)> = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            match record.processed_event_json() {
                Some(json) => {
                    let mut line = Vec::with_capacity(json.len() + 1);
                    line.extend_from_slice(json.as_bytes());
                    line.push(b'\n');
                    lines.push((&record.dynamodb.sequence_number, line));
                }
                None => report.skipped += 1,
            }
        }
        let packed = pack(lines.iter().map(|(_, l)| l.as_slice()), self.record_bytes);
        report.records = packed.len();
        let record_bytes: Vec<&[u8]> = packed.iter().map(|(_, r)| r.as_slice()).collect();
        let pending: Vec<usize> = self
            .deliver(&record_bytes, &mut report)
            .await
            .into_iter()
            .flat_map(|r| packed[r].0.clone())
            .collect();
        report.failed = pending.len();
        report.archived = lines.len() - pending.len();
        if !pending.is_empty() {
            warn!(
                failed = pending.len(),
                "archive lines still refused; their records are retried"
            );
        }
        let batch_item_failures = pending
            .into_iter()
            .map(|i| ItemFailure {
                item_identifier: lines[i].0.to_owned(),
            })
            .collect();
        (
            BatchResponse {
                batch_item_failures,
            },
            report,
        )
    }

    /// Sends `records`, resending only what Firehose refuses, up to `max_attempts` calls a
    /// record. Returns the indexes of the records still refused; counts calls and resends in
    /// `report`.
    pub async fn deliver(&self, records: &[&[u8]], report: &mut ArchiveReport) -> Vec<usize> {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        for attempt in 0..self.max_attempts {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                report.resent += pending.len();
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
            let mut refused = Vec::new();
            for call in calls(&pending, |i| records[i].len()) {
                report.calls += 1;
                let batch = call.iter().map(|&i| records[i].to_vec()).collect();
                match self.sink.put_batch(batch).await {
                    Ok(results) => {
                        for (n, &i) in call.iter().enumerate() {
                            // A missing answer is a refusal: never assume delivery.
                            if !matches!(results.get(n), Some(None)) {
                                refused.push(i);
                            }
                        }
                    }
                    Err(error) => {
                        warn!(%error, records = call.len(), "archive call failed");
                        refused.extend_from_slice(call);
                    }
                }
            }
            pending = refused;
        }
        pending
    }
}

/// Consecutive `lines` joined into records of at most `max` bytes, each with the range of
/// lines it holds. A line longer than `max` is a record of its own.
fn pack<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    max: usize,
) -> Vec<(std::ops::Range<usize>, Vec<u8>)> {
    let mut records: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        match records.last_mut() {
            Some((range, record)) if record.len() + line.len() <= max => {
                range.end = i + 1;
                record.extend_from_slice(line);
            }
            _ => records.push((i..i + 1, line.to_vec())),
        }
    }
    records
}

/// `pending` split into calls within the record and byte limits, in order.
fn calls(pending: &[usize], size: impl Fn(usize) -> usize) -> Vec<&[usize]> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in pending.iter().enumerate() {
        let len = size(i);
        if n > start && (n - start == MAX_BATCH_RECORDS || bytes + len > MAX_BATCH_BYTES) {
            calls.push(&pending[start..n]);
            (start, bytes) = (n, 0);
        }
        bytes += len;
    }
    if start < pending.len() {
        calls.push(&pending[start..]);
    }
    calls
}

#[cfg(test)]
mod tests;
