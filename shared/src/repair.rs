//! `repair`: re-derives what a failed stream batch should have produced, from the events table
//! alone. After their retries, the `rollup` and `archive` stream mappings leave only a reference
//! to the batch in their failure queues (`RollupFailureQueue`, `ArchiveFailureQueue`), and the
//! stream's records expire after 24 hours. Each reference gives the time its records arrived in
//! the stream, which is when their events were stored; so, for each reference:
//!
//! 1. the events processed in that time (a minute's margin either side) are read from the
//!    events table (the `byHourShard` index, over every hour such an event can be stamped with);
//! 2. rollup failures: every day those events fall on is reconciled (recomputed from its
//!    events), and every lead among them is re-folded from its events;
//!    archive failures: every one of those events is sent to the archive again (readers keep
//!    one line per `eventId`);
//! 3. the reference is deleted, unless part of it could not be done yet: a day still receiving
//!    events (not settled) or a write that failed leaves it for the next run.
//!
//! Doing more than the batch held is harmless: reconciling, re-folding and re-archiving are
//! idempotent.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::archive::{ArchiveReport, ArchiveSink, Archiver};
use crate::observability::Metrics;
use crate::scoring::LeadRecompute;
use crate::store::StoreError;

/// A failure reference waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureMessage {
    pub receipt: String,
    pub body: String,
}

/// A stream consumer's failure queue.
#[async_trait]
pub trait FailureQueue: Send + Sync {
    /// Up to 10 references, hidden from other readers while this run works on them.
    async fn receive(&self, max: usize) -> Result<Vec<FailureMessage>, StoreError>;
    async fn delete(&self, receipt: &str) -> Result<(), StoreError>;
    /// Makes a received reference visible again now.
    async fn release(&self, receipt: &str) -> Result<(), StoreError>;
}

/// A stored event as the repair needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairEvent {
    pub event_id: String,
    pub timestamp: DateTime<Utc>,
    pub lead_id: Option<String>,
    /// The canonical JSON as stored (an archive line without its newline).
    pub event_json: String,
}

/// The source of truth, by processing time.
#[async_trait]
pub trait ProcessedEvents: Send + Sync {
    /// Every event processed in `[from, to]`, looking at event timestamps from
    /// `oldest_timestamp` on.
    async fn processed_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        oldest_timestamp: DateTime<Utc>,
    ) -> Result<Vec<RepairEvent>, StoreError>;
}

/// Recomputes one UTC day's aggregates from its events; `false` when the day is not settled
/// (events were processed in it too recently to be sure none is still in flight).
#[async_trait]
pub trait DayReconcile: Send + Sync {
    async fn reconcile(&self, day: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// Which failure queue a run works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consumer {
    Rollup,
    Archive,
}

/// The invocation: `{"queue"?: "rollup"|"archive", "maxRecords"?: 1-100, "dryRun"?: bool}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepairRequest {
    /// Both queues when absent (rollup first).
    #[serde(default)]
    pub queue: Option<Consumer>,
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    #[serde(default)]
    pub dry_run: bool,
}

fn default_max_records() -> usize {
    10
}

pub const MAX_RECORDS: usize = 100;

/// What one queue's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueReport {
    /// References read.
    pub records: usize,
    /// References fully repaired and deleted.
    pub repaired: usize,
    /// References left for a later run (a day not settled, a write that failed).
    pub left: usize,
    /// References whose body is not a stream failure record (left in the queue for a person).
    pub unreadable: usize,
    /// Events found processed in the references' times.
    pub events: usize,
    pub days_reconciled: usize,
    pub days_not_settled: usize,
    pub leads_recomputed: usize,
    pub lines_archived: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollup: Option<QueueReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<QueueReport>,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("bad input: {0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct RepairPorts {
    pub rollup_failures: Arc<dyn FailureQueue>,
    pub archive_failures: Arc<dyn FailureQueue>,
    pub events: Arc<dyn ProcessedEvents>,
    pub days: Arc<dyn DayReconcile>,
    pub leads: Arc<dyn LeadRecompute>,
    pub archive: Arc<dyn ArchiveSink>,
}

/// How far before its processing an event can be stamped: the maximum event age, plus the
/// dead-letter queue's 14 days (a replayed event keeps its original receive time).
fn oldest_timestamp(from: DateTime<Utc>, max_event_age_days: u32) -> DateTime<Utc> {
    from - Duration::days(i64::from(max_event_age_days) + 15)
}

/// The arrival times of a stream failure record's batch, widened by a minute either side.
pub fn batch_window(body: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let value: Value = serde_json::from_str(body).ok()?;
    let info = value.get("DDBStreamBatchInfo")?;
    let at = |key: &str| {
        info.get(key)?
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let (first, last) = (
        at("approximateArrivalOfFirstRecord")?,
        at("approximateArrivalOfLastRecord")?,
    );
    (first <= last).then(|| (first - Duration::minutes(1), last + Duration::minutes(1)))
}

pub struct Repairer {
    ports: RepairPorts,
    archiver: Archiver<Arc<dyn ArchiveSink>>,
    max_event_age_days: u32,
}

impl Repairer {
    pub fn new(ports: RepairPorts, max_event_age_days: u32) -> Self {
        let archiver = Archiver::new(
            ports.archive.clone(),
            4,
            std::time::Duration::from_millis(200),
        );
        Self {
            ports,
            archiver,
            max_event_age_days,
        }
    }

    /// One invocation, from its JSON input.
    pub async fn invoke(
        &self,
        input: Value,
        now: DateTime<Utc>,
    ) -> Result<RepairReport, RepairError> {
        let input = if input.is_null() {
            Value::Object(Default::default())
        } else {
            input
        };
        let request: RepairRequest =
            serde_json::from_value(input).map_err(|e| RepairError::Input(e.to_string()))?;
        if !(1..=MAX_RECORDS).contains(&request.max_records) {
            return Err(RepairError::Input(format!(
                "maxRecords must be 1 to {MAX_RECORDS}"
            )));
        }
        let mut report = RepairReport {
            dry_run: request.dry_run,
            ..Default::default()
        };
        for consumer in [Consumer::Rollup, Consumer::Archive] {
            if request.queue.is_some_and(|q| q != consumer) {
                continue;
            }
            let queue_report = self.run_queue(consumer, &request, now).await?;
            info!(?consumer, ?queue_report, "repair run");
            let mut metrics = Metrics::new("repair");
            metrics.property(
                "queue",
                match consumer {
                    Consumer::Rollup => "rollup",
                    Consumer::Archive => "archive",
                },
            );
            metrics.count("RepairRecords", queue_report.records as u64);
            metrics.count("RepairRepaired", queue_report.repaired as u64);
            metrics.count("RepairLeft", queue_report.left as u64);
            metrics.count("RepairUnreadable", queue_report.unreadable as u64);
            metrics.count("RepairEvents", queue_report.events as u64);
            metrics.flush();
            match consumer {
                Consumer::Rollup => report.rollup = Some(queue_report),
                Consumer::Archive => report.archive = Some(queue_report),
            }
        }
        Ok(report)
    }

    async fn run_queue(
        &self,
        consumer: Consumer,
        request: &RepairRequest,
        now: DateTime<Utc>,
    ) -> Result<QueueReport, RepairError> {
        let queue = match consumer {
            Consumer::Rollup => &self.ports.rollup_failures,
            Consumer::Archive => &self.ports.archive_failures,
        };
        let mut report = QueueReport::default();
        // A dry run changes nothing: it hands every reference it read back at the end, so the
        // real run can follow at once.
        let mut counted = Vec::new();
        while report.records < request.max_records {
            let messages = queue
                .receive((request.max_records - report.records).min(10))
                .await?;
            if messages.is_empty() {
                break;
            }
            for message in messages {
                report.records += 1;
                let Some((from, to)) = batch_window(&message.body) else {
                    warn!(
                        "a failure queue message is not a stream failure record; left for a person"
                    );
                    report.unreadable += 1;
                    if request.dry_run {
                        counted.push(message.receipt);
                    }
                    continue;
                };
                let events = self
                    .ports
                    .events
                    .processed_between(from, to, oldest_timestamp(from, self.max_event_age_days))
                    .await?;
                report.events += events.len();
                if request.dry_run {
                    report.left += 1;
                    counted.push(message.receipt);
                    continue;
                }
                let done = match consumer {
                    Consumer::Rollup => self.rederive(&events, now, &mut report).await,
                    Consumer::Archive => self.rearchive(&events, &mut report).await,
                };
                if done {
                    queue.delete(&message.receipt).await?;
                    report.repaired += 1;
                } else {
                    report.left += 1;
                }
            }
        }
        for receipt in &counted {
            queue.release(receipt).await?;
        }
        Ok(report)
    }

    /// Reconciles the events' days and re-folds their leads; `false` when something is left.
    async fn rederive(
        &self,
        events: &[RepairEvent],
        now: DateTime<Utc>,
        report: &mut QueueReport,
    ) -> bool {
        let mut done = true;
        let days: BTreeSet<String> = events
            .iter()
            .map(|e| e.timestamp.format("%Y-%m-%d").to_string())
            .collect();
        for day in days {
            match self.ports.days.reconcile(&day, now).await {
                Ok(true) => report.days_reconciled += 1,
                Ok(false) => {
                    report.days_not_settled += 1;
                    done = false;
                }
                Err(e) => {
                    warn!(day, error = %e, "day not reconciled; the reference stays");
                    done = false;
                }
            }
        }
        let leads: BTreeSet<&str> = events.iter().filter_map(|e| e.lead_id.as_deref()).collect();
        for lead in leads {
            match self.ports.leads.recompute_now(lead, now).await {
                Ok(_) => report.leads_recomputed += 1,
                Err(e) => {
                    warn!(lead, error = %e, "lead not re-folded; the reference stays");
                    done = false;
                }
            }
        }
        done
    }

    /// Sends every event's line to the archive again; `false` when some are still refused.
    async fn rearchive(&self, events: &[RepairEvent], report: &mut QueueReport) -> bool {
        let lines: Vec<Vec<u8>> = events
            .iter()
            .map(|e| {
                let mut line = e.event_json.clone().into_bytes();
                line.push(b'\n');
                line
            })
            .collect();
        // One line a record, unlike the stream's archiver: a repair is rare, and a refusal
        // then leaves exactly one event's line unarchived.
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let mut archive = ArchiveReport::default();
        let refused = self.archiver.deliver(&refs, &mut archive).await;
        report.lines_archived += lines.len() - refused.len();
        refused.is_empty()
    }
}

#[cfg(test)]
mod tests;
