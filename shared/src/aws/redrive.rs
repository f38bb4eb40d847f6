//! The dead-letter and work queues for a redrive: receive, send and delete in batches of 10,
//! each answered message by message.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::redrive::{DeadLetter, MessageAttribute, QueueError, RedriveQueues};

pub struct SqsRedrive {
    client: aws_sdk_sqs::Client,
    dead_letter_url: String,
    work_url: String,
}

impl SqsRedrive {
    pub fn new(config: &aws_config::SdkConfig, dead_letter_url: String, work_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            dead_letter_url,
            work_url,
        }
    }
}

fn unavailable<E: aws_sdk_sqs::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_sqs::error::SdkError<E, R>,
) -> QueueError {
    QueueError::Unavailable(super::describe(e))
}

fn to_sdk(attribute: &MessageAttribute) -> Option<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type(&attribute.data_type)
        .set_string_value(attribute.string_value.clone())
        .set_binary_value(attribute.binary_value.clone().map(Blob::new))
        .build()
        .ok()
}

fn from_sdk(
    attributes: Option<&HashMap<String, MessageAttributeValue>>,
) -> BTreeMap<String, MessageAttribute> {
    attributes
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            (
                name.clone(),
                MessageAttribute {
                    data_type: value.data_type().to_owned(),
                    string_value: value.string_value().map(str::to_owned),
                    binary_value: value.binary_value().map(|b| b.as_ref().to_vec()),
                },
            )
        })
        .collect()
}

/// Per message of `count`, whether its index (as the entry id) is among `ok_ids`.
fn answered(count: usize, ok_ids: impl Iterator<Item = String>) -> Vec<bool> {
    let mut ok = vec![false; count];
    for id in ok_ids {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| ok.get_mut(i)) {
            *slot = true;
        }
    }
    ok
}

#[async_trait]
impl RedriveQueues for SqsRedrive {
    /// A short poll first (it answers at once); an empty answer is confirmed by a 1 s long
    /// poll, because a short poll samples only some of SQS's servers and may miss messages.
    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        for wait_seconds in [0, 1] {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(max.clamp(1, 10) as i32)
                .visibility_timeout(visibility.as_secs() as i32)
                .message_attribute_names("All")
                .wait_time_seconds(wait_seconds)
                .send()
                .await
                .map_err(|e| unavailable(&e))?;
            let messages: Vec<DeadLetter> = output
                .messages()
                .iter()
                .filter_map(|m| {
                    Some(DeadLetter {
                        message_id: m.message_id()?.to_owned(),
                        receipt_handle: m.receipt_handle()?.to_owned(),
                        body: m.body().unwrap_or_default().to_owned(),
                        attributes: from_sdk(m.message_attributes()),
                    })
                })
                .collect();
            if !messages.is_empty() {
                return Ok(messages);
            }
        }
        Ok(Vec::new())
    }

    async fn send_to_work(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let attributes: HashMap<String, MessageAttributeValue> = m
                    .attributes
                    .iter()
                    .filter_map(|(name, value)| Some((name.clone(), to_sdk(value)?)))
                    .collect();
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(Some(attributes).filter(|a| !a.is_empty()))
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        if entries.is_empty() {
            return Ok(vec![false; messages.len()]);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.work_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(answered(
            messages.len(),
            output.successful().iter().map(|s| s.id().to_owned()),
        ))
    }

    async fn delete(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&m.receipt_handle)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        if entries.is_empty() {
            return Ok(vec![false; messages.len()]);
        }
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.dead_letter_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(answered(
            messages.len(),
            output.successful().iter().map(|s| s.id().to_owned()),
        ))
    }

    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dead_letter_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}
