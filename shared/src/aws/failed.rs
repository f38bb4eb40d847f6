//! The events table's sparse `byFailure` index (failureStatus, failedAt): failed events by
//! status, newest first, a page at a time.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::item::{number, s, text, Item};
use super::DynamoEventStore;
use crate::admin::{FailedEvent, FailedEvents, FailedPage};
use crate::store::{EventStatus, StoreError};

/// The index's key attributes, which make up a page token.
const KEY: [&str; 3] = ["eventId", "failureStatus", "failedAt"];

fn token(key: &Item) -> Option<String> {
    let strings: BTreeMap<&str, &str> = KEY
        .iter()
        .map(|k| Some((*k, text(key, k)?)))
        .collect::<Option<_>>()?;
    serde_json::to_string(&strings).ok()
}

fn start_key(token: &str) -> Result<Item, StoreError> {
    let strings: BTreeMap<String, String> = serde_json::from_str(token)
        .map_err(|_| StoreError::Unavailable("malformed page token".into()))?;
    if strings.len() != KEY.len() || KEY.iter().any(|k| !strings.contains_key(*k)) {
        return Err(StoreError::Unavailable("malformed page token".into()));
    }
    Ok(strings.into_iter().map(|(k, v)| (k, s(v))).collect())
}

#[async_trait]
impl FailedEvents for DynamoEventStore {
    async fn failed(
        &self,
        status: EventStatus,
        limit: u32,
        after: Option<&str>,
    ) -> Result<FailedPage, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("byFailure")
            .key_condition_expression("failureStatus = :status")
            .expression_attribute_values(":status", s(status.as_str()))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(after.map(start_key).transpose()?)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
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
        let next = match output.last_evaluated_key() {
            Some(key) => Some(
                token(key).ok_or_else(|| StoreError::Unavailable("index key missing".into()))?,
            ),
            None => None,
        };
        Ok(FailedPage { events, next })
    }
}
