//! The events table port: the first stored write of an `eventId` wins; failures are recorded
//! with their reason without ever overwriting a processed event.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Processed,
    Failed,
    DeadLetter,
    Rejected,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "PROCESSED",
            Self::Failed => "FAILED",
            Self::DeadLetter => "DEAD_LETTER",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PROCESSED" => Some(Self::Processed),
            "FAILED" => Some(Self::Failed),
            "DEAD_LETTER" => Some(Self::DeadLetter),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// Where a message came from: what ingest stamped on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub submission_id: String,
    pub correlation_id: String,
    pub received_at: DateTime<Utc>,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct ProcessedRecord {
    pub event: Event,
    /// The canonical JSON exactly as queued.
    pub event_json: String,
    pub provenance: Provenance,
    pub processed_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub event_id: String,
    pub status: EventStatus,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    pub provenance: Option<Provenance>,
    pub event: Option<Event>,
    pub event_json: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// Another submission already stored this `eventId`.
    Duplicate,
    /// This very submission was stored before (an SQS redelivery); nothing to count.
    Redelivered,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: throttling, timeouts, service errors.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A stored event as admin and tests see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event_id: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub event_json: Option<String>,
    pub submission_id: Option<String>,
    pub correlation_id: Option<String>,
    pub received_at: Option<String>,
    pub processed_at: Option<String>,
    pub failed_at: Option<String>,
    pub failure_reason: Option<String>,
    /// Every change of status, oldest first (at most the adapter's cap).
    pub history: Vec<StatusChange>,
    /// Changes not kept because the history was full.
    pub history_omitted: u32,
}

/// One entry of an event's status history.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// An [`EventStatus`] word, or `REPLAYED` when ops queued the event again.
    pub status: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Deliveries of the message so far (absent for a replay).
    pub attempts: Option<u32>,
    pub reason: Option<String>,
    pub correlation_id: Option<String>,
}

/// The history word of a replay.
pub const REPLAYED: &str = "REPLAYED";

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn store_processed(&self, record: &ProcessedRecord) -> Result<StoreOutcome, StoreError>;
    /// Records a failure unless the event is already `PROCESSED` (then it does nothing).
    async fn record_failure(&self, record: &FailureRecord) -> Result<(), StoreError>;
    /// Notes in the event's history that ops queued it again, unless it is `PROCESSED` by now
    /// or unknown (then it does nothing).
    async fn record_replay(
        &self,
        event_id: &str,
        at: DateTime<Utc>,
        correlation_id: &str,
    ) -> Result<(), StoreError>;
    async fn get(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError>;
}
