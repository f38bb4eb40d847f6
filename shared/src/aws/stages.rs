//! The EventBridge bus stage changes go to: each change an entry of `source` `tally`,
//! `detail-type` `lead.stage_changed`, `detail` the change. `PutEvents` takes 10 entries a call,
//! and only the entries its answer reports as failed are sent again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::scoring::{StageChange, StagePublisher, STAGE_CHANGED};
use crate::store::StoreError;

/// `PutEvents` takes at most 10 entries a call.
const PUT_EVENTS_BATCH: usize = 10;
/// Calls for one batch of entries before the ones still failing are left to the next drain.
const PUT_EVENTS_ATTEMPTS: u32 = 4;
/// The `source` of Tally's events on the bus.
pub const EVENT_SOURCE: &str = "tally";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The EventBridge bus stage changes go to.
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
    /// Entries the bus refused and that were sent again (for logs and tests).
    resent: Arc<AtomicU64>,
}

impl EventBridgeBus {
    pub fn new(config: &aws_config::SdkConfig, bus_name: String) -> Self {
        Self {
            client: aws_sdk_eventbridge::Client::new(config),
            bus_name,
            resent: Arc::default(),
        }
    }

    pub fn resent(&self) -> u64 {
        self.resent.load(Ordering::Relaxed)
    }

    /// One call's worth (≤ 10) of changes, resending only the entries reported as failed.
    async fn put_batch(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        let mut accepted = vec![false; changes.len()];
        let mut pending: Vec<usize> = (0..changes.len()).collect();
        for attempt in 0..PUT_EVENTS_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                self.resent
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let entries = pending
                .iter()
                .map(|&i| {
                    let detail = serde_json::to_string(&changes[i]).map_err(unavailable)?;
                    Ok(PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus_name)
                        .source(EVENT_SOURCE)
                        .detail_type(STAGE_CHANGED)
                        .detail(detail)
                        .build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let output = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
            let results = output.entries();
            let mut still = Vec::new();
            for (n, &i) in pending.iter().enumerate() {
                // An entry without an id, or with an error code, failed (FailedEntryCount counts
                // them); the answer lists the entries in the order sent.
                let ok = results
                    .get(n)
                    .is_some_and(|r| r.error_code().is_none() && r.event_id().is_some());
                if ok {
                    accepted[i] = true;
                } else {
                    still.push(i);
                }
            }
            if output.failed_entry_count() == 0 && still.is_empty() {
                break;
            }
            pending = still;
        }
        Ok(accepted)
    }
}

#[async_trait]
impl StagePublisher for EventBridgeBus {
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        let mut accepted = Vec::with_capacity(changes.len());
        for batch in changes.chunks(PUT_EVENTS_BATCH) {
            accepted.extend(self.put_batch(batch).await?);
        }
        Ok(accepted)
    }
}
