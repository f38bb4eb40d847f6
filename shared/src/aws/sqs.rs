use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use futures::stream::{self, StreamExt};
use tracing::warn;

use crate::queue::{EventQueue, OutboundMessage, SendReport};
use crate::retry::MessageVisibility;
use crate::store::StoreError;

/// SQS limits per `SendMessageBatch` call.
const MAX_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024;
const ATTEMPTS: u32 = 4;
const CONCURRENT_CALLS: usize = 8;

pub struct SqsEventQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsEventQueue {
    pub fn new(config: &aws_config::SdkConfig, queue_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            queue_url,
        }
    }

    /// Sends one packed batch, retrying only entries SQS reports `Failed` without sender fault.
    /// Returns the indexes that were not queued.
    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
        mut pending: Vec<usize>,
    ) -> Vec<usize> {
        let mut permanent = Vec::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
            // An entry that cannot even be built is a permanent failure, never a silent drop.
            let mut entries: Vec<SendMessageBatchRequestEntry> = Vec::with_capacity(pending.len());
            pending.retain(|i| match messages.get(*i).and_then(|m| entry(*i, m)) {
                Some(e) => {
                    entries.push(e);
                    true
                }
                None => {
                    permanent.push(*i);
                    false
                }
            });
            if entries.is_empty() {
                break;
            }
            let result = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(output) => {
                    let mut retry = Vec::new();
                    for failed in output.failed() {
                        let Ok(index) = failed.id().parse::<usize>() else {
                            continue;
                        };
                        warn!(
                            code = failed.code(),
                            sender_fault = failed.sender_fault(),
                            attempt,
                            "SQS entry failed"
                        );
                        if failed.sender_fault() {
                            permanent.push(index);
                        } else {
                            retry.push(index);
                        }
                    }
                    pending = retry;
                }
                Err(e) => warn!(error = %super::describe(&e), attempt, "SendMessageBatch failed"),
            }
            if pending.is_empty() {
                break;
            }
        }
        permanent.extend(pending);
        permanent
    }
}

fn entry(index: usize, message: &OutboundMessage) -> Option<SendMessageBatchRequestEntry> {
    let attribute = |data_type: &str, value: &str| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .string_value(value)
            .build()
            .ok()
    };
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(&message.body)
        .message_attributes(
            "correlationId",
            attribute("String", &message.correlation_id)?,
        )
        .message_attributes(
            "eventCount",
            attribute("Number", &message.events.to_string())?,
        );
    if let Some(event_type) = &message.event_type {
        entry = entry.message_attributes("eventType", attribute("String", event_type)?);
    }
    if let Some(source) = &message.source {
        entry = entry.message_attributes("source", attribute("String", source)?);
    }
    entry.build().ok()
}

/// Groups message indexes into batches of at most 10 entries and 256 KiB.
pub(crate) fn pack(messages: &[OutboundMessage]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        let size = m.billed_size();
        if !current.is_empty() && (current.len() == MAX_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    async fn send(&self, messages: &[OutboundMessage]) -> SendReport {
        let mut failed: Vec<usize> = stream::iter(pack(messages))
            .map(|batch| self.send_batch(messages, batch))
            .buffer_unordered(CONCURRENT_CALLS)
            .flat_map(stream::iter)
            .collect()
            .await;
        failed.sort_unstable();
        SendReport { failed }
    }
}

/// Sets when failed messages of the work queue become visible again (the backoff of
/// [`crate::retry`]), ten per `ChangeMessageVisibilityBatch`.
pub struct SqsVisibility {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsVisibility {
    pub fn new(config: &aws_config::SdkConfig, queue_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            queue_url,
        }
    }
}

#[async_trait]
impl MessageVisibility for SqsVisibility {
    async fn delay(&self, messages: &[(String, u32)]) -> Result<usize, StoreError> {
        let mut refused = 0;
        for chunk in messages.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (receipt, seconds))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(i32::try_from(*seconds).unwrap_or(i32::MAX))
                        .build()
                        .map_err(|e| StoreError::Unavailable(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            for failure in output.failed() {
                warn!(
                    id = failure.id(),
                    code = failure.code(),
                    "visibility not changed"
                );
            }
            refused += output.failed().len();
        }
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> OutboundMessage {
        OutboundMessage {
            body: "x".repeat(bytes),
            correlation_id: "c".into(),
            event_type: Some("T".into()),
            source: Some("api".into()),
            events: 1,
        }
    }

    #[test]
    fn packs_by_count_and_by_size() {
        let small: Vec<_> = (0..25).map(|_| message(100)).collect();
        assert_eq!(
            pack(&small).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        // 33 KiB bodies: ten would exceed 256 KiB, so batches hold seven.
        let large: Vec<_> = (0..10).map(|_| message(33 * 1024)).collect();
        let batches = pack(&large);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![7, 3]);
        for b in &batches {
            assert!(b.iter().map(|i| large[*i].billed_size()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        assert!(pack(&[]).is_empty());
    }
}
