//! Stage changes in AWS: the outbox in the analytics table, written in one transaction with the
//! lead, and the EventBridge bus they are sent to.
//!
//! - pk `STAGEOUT`, sk the change's outbox key (`<at ms>#<leadId>#<lead version>`): a change
//!   not yet accepted by the bus, `change` its JSON.
//! - The bus gets each change as an entry of `source` `tally`, `detail-type`
//!   `lead.stage_changed`, `detail` the change; `PutEvents` takes 10 entries a call, and only the
//!   entries its answer reports as failed are sent again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, ReturnConsumedCapacity, TransactWriteItem};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::batch::{delete, write_all};
use super::item::{n, query_all, s, text, Item};
use super::leads::{version_condition, DynamoLeads};
use crate::scoring::{
    LeadWriteError, PendingChange, StageChange, StageOutbox, StagePublisher, STAGE_CHANGED,
};
use crate::store::StoreError;

const OUTBOX_PK: &str = "STAGEOUT";
/// `PutEvents` takes at most 10 entries a call.
const PUT_EVENTS_BATCH: usize = 10;
/// Calls for one batch of entries before the ones still failing are left to the next drain.
const PUT_EVENTS_ATTEMPTS: u32 = 4;
/// The `source` of Tally's events on the bus.
pub const EVENT_SOURCE: &str = "tally";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DynamoLeads {
    /// The lead (conditional on its version) and the change's outbox item, in one transaction.
    pub(super) async fn put_with_change(
        &self,
        mut item: Item,
        expected: u64,
        key: &str,
        change: &StageChange,
    ) -> Result<(), LeadWriteError> {
        item.insert("version".into(), n(expected + 1));
        let (condition, values) = version_condition(expected);
        let lead = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| LeadWriteError::Store(unavailable(e)))?;
        let json =
            serde_json::to_string(change).map_err(|e| LeadWriteError::Store(unavailable(e)))?;
        let outbox = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Item::from([
                ("pk".to_owned(), s(OUTBOX_PK)),
                ("sk".to_owned(), s(key)),
                ("change".to_owned(), s(json)),
            ])))
            .build()
            .map_err(|e| LeadWriteError::Store(unavailable(e)))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(lead).build())
            .transact_items(TransactWriteItem::builder().put(outbox).build())
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await;
        match result {
            Ok(output) => {
                for c in output.consumed_capacity() {
                    super::batch::meter(&self.consumed_milli, Some(c));
                }
                Ok(())
            }
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
                    if cancelled
                        .cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed") =>
                {
                    Err(LeadWriteError::Conflict)
                }
                _ => Err(LeadWriteError::Store(StoreError::Unavailable(
                    super::describe(&e),
                ))),
            },
        }
    }
}

#[async_trait]
impl StageOutbox for DynamoLeads {
    async fn pending_changes(&self, limit: usize) -> Result<Vec<PendingChange>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(OUTBOX_PK))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        let items = query_all(query).await?;
        items
            .iter()
            .take(limit)
            .map(|item| {
                let change: StageChange = serde_json::from_str(text(item, "change").unwrap_or(""))
                    .map_err(|e| unavailable(format!("stage change unreadable: {e}")))?;
                Ok(PendingChange {
                    key: text(item, "sk").unwrap_or_default().to_owned(),
                    change,
                })
            })
            .collect()
    }

    async fn delete_changes(&self, keys: &[String]) -> Result<(), StoreError> {
        let requests = keys
            .iter()
            .map(|key| delete(OUTBOX_PK, key))
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }
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
