//! Leads the scorer could not write. One lead that cannot be stored (its item too large, say,
//! or a write that kept failing) must not stop the others: it is recorded here with its reason,
//! the run goes on, and the lead is repaired by re-folding it from its stored events, which the
//! `RecomputeLeads` schedule tries every few minutes and ops can ask for at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// Characters of a reason kept.
pub const MAX_REASON_CHARS: usize = 500;

/// Failed leads one repair run re-folds at most; the next run takes the rest.
pub const REPAIR_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadFailure {
    pub lead_id: String,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
}

impl LeadFailure {
    pub fn new(lead_id: impl Into<String>, reason: &str, failed_at: DateTime<Utc>) -> Self {
        Self {
            lead_id: lead_id.into(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            failed_at,
        }
    }
}

/// Where failed leads are recorded (the analytics table in AWS: pk `LEADFAIL`, sk the lead id).
#[async_trait]
pub trait LeadFailures: Send + Sync {
    /// Records (or replaces) each lead's failure.
    async fn record_failures(&self, failures: &[LeadFailure]) -> Result<(), StoreError>;
    /// Up to `limit` recorded failures, in lead id order.
    async fn failures(&self, limit: usize) -> Result<Vec<LeadFailure>, StoreError>;
    /// Forgets these leads' failures (absent ones are ignored).
    async fn clear_failures(&self, lead_ids: &[String]) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: LeadFailures + ?Sized> LeadFailures for std::sync::Arc<T> {
    async fn record_failures(&self, failures: &[LeadFailure]) -> Result<(), StoreError> {
        (**self).record_failures(failures).await
    }
    async fn failures(&self, limit: usize) -> Result<Vec<LeadFailure>, StoreError> {
        (**self).failures(limit).await
    }
    async fn clear_failures(&self, lead_ids: &[String]) -> Result<(), StoreError> {
        (**self).clear_failures(lead_ids).await
    }
}
