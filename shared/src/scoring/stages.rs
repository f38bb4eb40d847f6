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
//! **Published from the analytics table's stream.** The change is written on the lead item, in
//! the lead's own write (`stage` and `stageChange`, no extra write unit), and the `stages`
//! function, a consumer of the analytics table's stream, sends each change it sees to the event
//! bus ([`super::StageStream`]). Only writes that happened reach the stream, once each, so a
//! write that lost a race or a crash before the write publishes nothing, and a crash after it
//! still publishes: the stream keeps the record until the consumer has sent it. A consumer retry
//! after the bus took some of a batch sends those again, which consumers can recognise by
//! `(leadId, at)`.

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

/// The event bus (EventBridge in AWS).
#[async_trait]
pub trait StagePublisher: Send + Sync {
    /// Sends the changes; `Ok` holds, for each, whether the bus accepted it. Entries the bus
    /// refused are retried by the adapter before they are reported as refused.
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError>;
}

#[async_trait]
impl<T: StagePublisher + ?Sized> StagePublisher for std::sync::Arc<T> {
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        (**self).publish(changes).await
    }
}
