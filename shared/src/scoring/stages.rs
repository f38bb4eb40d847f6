//! Lead stage changes: what is published when a lead's stage moves, and the ports it goes
//! through.
//!
//! **When.** A lead's stage is the highest stage whose `minScore` its score reaches, its score
//! as of now (decay included). Every write of a lead (a stream batch, a recompute, the hourly
//! stage check that sees decay and changed thresholds) compares that stage with the one last
//! published, which is stored on the lead item. When they differ, one [`StageChange`] is due:
//! from the published stage to the current one. A redelivery or a recompute that changes
//! nothing finds the stages equal and publishes nothing; a late event that rewrites history
//! publishes the correction. A lead that crosses a threshold and back within one batch publishes
//! nothing: no write ever saw it in the other stage.
//!
//! **Exactly once into the outbox, at least once onto the bus.** The change is written in the
//! same transaction as the lead's state and its new published stage (an outbox item), so a
//! crash cannot lose it or record it twice. Then it is sent to the event bus; what the bus
//! accepted is deleted from the outbox, what it refused stays there and is sent again by the
//! next drain. A crash between the bus's answer and the delete sends a change twice, which
//! consumers can recognise by `(leadId, at)`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::serde_util::time;
use crate::store::StoreError;

/// The `detail-type` of a stage change on the event bus.
pub const STAGE_CHANGED: &str = "lead.stage_changed";

/// A lead's stage moved. Wire form (the event's `detail`):
/// `{"leadId", "from", "to", "score", "eventId", "at"}`; `from`/`to` are `null` below every
/// stage, `eventId` is `null` when no event caused it (decay, a changed threshold, a recompute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageChange {
    pub lead_id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The score as of `at`, decay included.
    pub score: i64,
    pub event_id: Option<String>,
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
}

/// A change waiting in the outbox, with the key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub key: String,
    pub change: StageChange,
}

/// Where stage changes wait until the bus has them (the analytics table in AWS).
#[async_trait]
pub trait StageOutbox: Send + Sync {
    /// Up to `limit` waiting changes, oldest first.
    async fn pending_changes(&self, limit: usize) -> Result<Vec<PendingChange>, StoreError>;
    async fn delete_changes(&self, keys: &[String]) -> Result<(), StoreError>;
}

/// The event bus (EventBridge in AWS).
#[async_trait]
pub trait StagePublisher: Send + Sync {
    /// Sends the changes; `Ok` holds, for each, whether the bus accepted it. Entries the bus
    /// refused are retried by the adapter before they are reported as refused.
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError>;
}

/// A bus that takes nothing: for the paths that publish nothing (reads, tests of other things).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBus;

#[async_trait]
impl StagePublisher for NoBus {
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        Ok(vec![false; changes.len()])
    }
}

#[async_trait]
impl<T: StagePublisher + ?Sized> StagePublisher for std::sync::Arc<T> {
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        (**self).publish(changes).await
    }
}

#[async_trait]
impl<T: StageOutbox + ?Sized> StageOutbox for std::sync::Arc<T> {
    async fn pending_changes(&self, limit: usize) -> Result<Vec<PendingChange>, StoreError> {
        (**self).pending_changes(limit).await
    }
    async fn delete_changes(&self, keys: &[String]) -> Result<(), StoreError> {
        (**self).delete_changes(keys).await
    }
}

/// The outbox key of a change recorded by the lead write that made `version`: oldest first,
/// unique per lead write.
pub fn outbox_key(change: &StageChange, version: u64) -> String {
    format!(
        "{:013}#{}#{version:012}",
        change.at.timestamp_millis().max(0),
        change.lead_id
    )
}
