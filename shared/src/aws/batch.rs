//! `BatchWriteItem` with its partial-failure field checked, and write-unit accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, DeleteRequest, PutRequest, ReturnConsumedCapacity,
    WriteRequest,
};

use super::item::Item;
use crate::store::StoreError;

const BATCH: usize = 25;
const ATTEMPTS: u32 = 8;

/// Adds reported capacity to a meter kept in thousandths of a unit (DynamoDB reports fractions).
pub(crate) fn meter(meter: &AtomicU64, consumed: Option<&ConsumedCapacity>) {
    if let Some(units) = consumed.and_then(ConsumedCapacity::capacity_units) {
        meter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }
}

/// `BatchWriteItem` in groups of 25, retrying exactly the `UnprocessedItems` with backoff.
pub(crate) async fn write_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    requests: Vec<WriteRequest>,
    consumed_milli: &AtomicU64,
) -> Result<(), StoreError> {
    for group in requests.chunks(BATCH) {
        let mut pending = group.to_vec();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
            }
            let output = client
                .batch_write_item()
                .request_items(table, pending.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            for c in output.consumed_capacity() {
                meter(consumed_milli, Some(c));
            }
            pending = output
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "{} writes left unprocessed after retries",
                pending.len()
            )));
        }
    }
    Ok(())
}

pub(crate) fn put(item: Item) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

pub(crate) fn delete(pk: &str, sk: &str) -> Result<WriteRequest, StoreError> {
    let delete = DeleteRequest::builder()
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}
