//! The events table's sparse `byFailure` index (failureStatus, failedAt): failed events by
//! status, newest first, a page at a time.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::Select;

use super::item::{number, s, text, Item};
use super::DynamoEventStore;
use crate::admin::{FailedEvent, FailedEvents, FailedKey, FailedPage};
use crate::store::{EventStatus, StoreError};

impl DynamoEventStore {
    /// A query of one status's partition of the failure index.
    fn by_failure(&self, status: EventStatus) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name("byFailure")
            .key_condition_expression("failureStatus = :status")
            .expression_attribute_values(":status", s(status.as_str()))
    }
}

#[async_trait]
impl FailedEvents for DynamoEventStore {
    async fn failed(
        &self,
        status: EventStatus,
        limit: u32,
        after: Option<&FailedKey>,
    ) -> Result<FailedPage, StoreError> {
        let start_key = after.map(|key| {
            Item::from([
                ("eventId".to_owned(), s(&key.event_id)),
                ("failureStatus".to_owned(), s(status.as_str())),
                ("failedAt".to_owned(), s(&key.failed_at)),
            ])
        });
        let output = self
            .by_failure(status)
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let events = output
            .items()
            .iter()
            .filter_map(|item| {
                Some(FailedEvent {
                    event_id: text(item, "eventId")?.to_owned(),
                    event_type: text(item, "type").map(str::to_owned),
                    status: text(item, "status")?.to_owned(),
                    failure_reason: text(item, "failureReason").map(str::to_owned),
                    attempts: number(item, "attempts").unwrap_or(0).max(0) as u32,
                    failed_at: text(item, "failedAt").map(str::to_owned),
                })
            })
            .collect();
        let next = output.last_evaluated_key().and_then(|key| {
            Some(FailedKey {
                event_id: text(key, "eventId")?.to_owned(),
                failed_at: text(key, "failedAt")?.to_owned(),
            })
        });
        Ok(FailedPage { events, next })
    }

    async fn count(&self, status: EventStatus, cap: u64) -> Result<u64, StoreError> {
        let mut counted = 0u64;
        let mut start_key = None;
        loop {
            let output = self
                .by_failure(status)
                .select(Select::Count)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            counted = counted.saturating_add(output.count().max(0) as u64);
            start_key = output.last_evaluated_key().cloned();
            if counted >= cap || start_key.is_none() {
                return Ok(counted.min(cap));
            }
        }
    }
}
