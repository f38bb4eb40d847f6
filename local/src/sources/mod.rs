//! Event sources that invoke functions on their own: SQS event-source mappings and schedules.
//!
//! * [`sqs`]: polls a queue like Lambda's SQS event-source mapping (batch size, batching window,
//!   `ReportBatchItemFailures`, deletes on success, leaves failures to the visibility timeout and
//!   the queue's redrive policy).
//! * [`schedule`]: EventBridge `rate(..)` / `cron(..)` schedules that invoke a function
//!   asynchronously with the scheduled event (or a constant input), plus "trigger it now".

pub mod schedule;
pub mod sqs;
pub mod streams;

pub use schedule::{ScheduleError, ScheduleExpression, ScheduleSpec, Scheduler, SchedulerStats};
pub use sqs::{SqsMapping, SqsPoller, SqsStats};
pub use streams::{OnFailure, StartingPosition, StreamMapping, StreamPoller, StreamStats};

/// A poller's stop request, shared by its tasks.
#[derive(Debug, Clone)]
pub(crate) struct StopSignal(tokio::sync::watch::Receiver<bool>);

impl StopSignal {
    pub(crate) fn new(receiver: tokio::sync::watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    pub(crate) fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Another handle on the same request, for a task this one starts.
    pub(crate) fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.clone()
    }

    /// Waits until stop is requested (forever if the requester is gone without asking).
    pub(crate) async fn stopped(&mut self) {
        while !self.requested() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Sleeps, returning early (with `true`) when stop is requested.
    pub(crate) async fn pause(&mut self, duration: std::time::Duration) -> bool {
        if self.requested() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => self.requested(),
            _ = self.0.changed() => true,
        }
    }
}
