//! Redrive: dead-lettered messages back to the work queue, as they are (body and attributes,
//! so the envelope keeps its `submissionId` and the message its correlation id).
//!
//! Receive, send, delete: a message is deleted from the dead-letter queue only once the work
//! queue has it. If the delete then fails, the message reappears in the dead-letter queue after
//! its visibility timeout and a later redrive sends it again; `process` recognises the second
//! copy as a redelivery of the same submission, so it is stored and counted once. This works on
//! every SQS (the local emulator has no `StartMessageMoveTask`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::observability::Metrics;

/// One message as received from the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// A message attribute, kept as SQS gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageAttribute {
    /// `String`, `Number`, `Binary` (optionally with a custom suffix).
    pub data_type: String,
    pub string_value: Option<String>,
    pub binary_value: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Worth retrying later: throttling, timeouts, service errors.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// The two queues a redrive works on.
#[async_trait]
pub trait RedriveQueues: Send + Sync {
    /// Up to `max` (at most 10) messages of the dead-letter queue, hidden for `visibility`.
    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<DeadLetter>, QueueError>;
    /// Sends the messages to the work queue unchanged; per message, whether it was queued.
    async fn send_to_work(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError>;
    /// Deletes received messages from the dead-letter queue; per message, whether it was.
    async fn delete(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError>;
    /// Messages waiting in the dead-letter queue (SQS's approximate count).
    async fn dead_letter_depth(&self) -> Result<u64, QueueError>;
}

#[async_trait]
impl<T: RedriveQueues + ?Sized> RedriveQueues for std::sync::Arc<T> {
    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        (**self).receive(max, visibility).await
    }

    async fn send_to_work(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        (**self).send_to_work(messages).await
    }

    async fn delete(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        (**self).delete(messages).await
    }

    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        (**self).dead_letter_depth().await
    }
}

/// What ops asks for (`POST /v1/admin/redrive`, or the redrive function's input).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default = "default_max_messages")]
    pub max_messages: u32,
    #[serde(default)]
    pub dry_run: bool,
    /// Messages moved per second at most (default 100), so a large redrive does not flood the
    /// work queue's consumer.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
}

pub const MAX_MESSAGES_LIMIT: u32 = 100_000;

fn default_max_messages() -> u32 {
    1000
}

fn default_rate() -> u32 {
    100
}

impl Default for RedriveRequest {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
            dry_run: false,
            rate_per_second: default_rate(),
        }
    }
}

impl RedriveRequest {
    /// Every field out of range, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=MAX_MESSAGES_LIMIT).contains(&self.max_messages) {
            problems.push(("maxMessages", format!("must be 1 to {MAX_MESSAGES_LIMIT}")));
        }
        if !(1..=3000).contains(&self.rate_per_second) {
            problems.push(("ratePerSecond", "must be 1 to 3000".to_owned()));
        }
        problems
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    /// Messages now on the work queue and gone from the dead-letter queue.
    pub moved: u64,
    /// Messages left in the dead-letter queue (approximate, as SQS counts).
    pub remaining: u64,
    /// Messages that could not be sent (they stay in the dead-letter queue).
    pub failed: u64,
    pub dry_run: bool,
}

/// How long a received message stays hidden while it is moved: longer than a send and a delete.
const VISIBILITY: Duration = Duration::from_secs(60);

/// Why an invocation's input is refused: every problem, by field.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("invalid redrive request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl<Q: RedriveQueues> Redriver<Q> {
    /// The redrive function's invocation: `{"maxMessages"?, "dryRun"?, "ratePerSecond"?}`.
    pub async fn invoke(&self, input: serde_json::Value) -> Result<RedriveReport, RedriveError> {
        let request: RedriveRequest = if input.is_null() {
            RedriveRequest::default()
        } else {
            serde_json::from_value(input).map_err(|e| RedriveError::Invalid(e.to_string()))?
        };
        let problems = request.problems();
        if !problems.is_empty() {
            let described: Vec<String> = problems.iter().map(|(f, m)| format!("{f} {m}")).collect();
            return Err(RedriveError::Invalid(described.join("; ")));
        }
        Ok(self.redrive(&request).await?)
    }
}

pub struct Redriver<Q> {
    queues: Q,
}

impl<Q: RedriveQueues> Redriver<Q> {
    pub fn new(queues: Q) -> Self {
        Self { queues }
    }

    /// Moves up to `max_messages`, at most `rate_per_second`; a dry run only counts.
    pub async fn redrive(&self, request: &RedriveRequest) -> Result<RedriveReport, QueueError> {
        let started = Instant::now();
        let mut report = RedriveReport {
            dry_run: request.dry_run,
            ..RedriveReport::default()
        };
        if !request.dry_run {
            self.move_messages(request, &mut report).await?;
        }
        report.remaining = self.queues.dead_letter_depth().await?;
        let mut metrics = Metrics::new("redrive");
        metrics.count("MessagesRedriven", report.moved);
        metrics.count("RedriveFailures", report.failed);
        metrics.duration("RedriveDuration", started.into_std());
        info!(
            moved = report.moved,
            failed = report.failed,
            remaining = report.remaining,
            dry_run = report.dry_run,
            "redrive finished"
        );
        metrics.flush();
        Ok(report)
    }

    async fn move_messages(
        &self,
        request: &RedriveRequest,
        report: &mut RedriveReport,
    ) -> Result<(), QueueError> {
        let started = Instant::now();
        let max = u64::from(request.max_messages);
        // Messages received but not sent stay hidden until their visibility ends: counting them
        // keeps one redrive from receiving them again and looping.
        let mut handled = 0u64;
        while handled < max {
            let wanted = (max - handled).min(10) as u32;
            let batch = self.queues.receive(wanted, VISIBILITY).await?;
            if batch.is_empty() {
                break;
            }
            handled += batch.len() as u64;
            let sent = self.queues.send_to_work(&batch).await?;
            let queued: Vec<DeadLetter> = batch
                .iter()
                .zip(sent.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, ok)| **ok)
                .map(|(m, _)| m.clone())
                .collect();
            report.failed += (batch.len() - queued.len()) as u64;
            if queued.len() < batch.len() {
                warn!(
                    failed = batch.len() - queued.len(),
                    "messages not sent to the work queue stay dead-lettered"
                );
            }
            if !queued.is_empty() {
                let deleted = self.queues.delete(&queued).await?;
                let removed = deleted.iter().filter(|d| **d).count();
                if removed < queued.len() {
                    // Already on the work queue: a later redrive sends them again, and process
                    // recognises the copy as the same submission.
                    warn!(
                        undeleted = queued.len() - removed,
                        "moved messages not deleted from the dead-letter queue"
                    );
                }
                report.moved += queued.len() as u64;
            }
            // The rate limit: the time `handled` messages take at `rate_per_second`.
            let due = Duration::from_secs_f64(handled as f64 / f64::from(request.rate_per_second));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
