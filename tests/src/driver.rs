//! Delivers queue messages to a handler the way Lambda's SQS event source does: receive a batch,
//! pass it as an `SqsEvent`, delete what succeeded, and leave reported failures on the queue
//! (made visible again at once so tests need not wait out the visibility timeout).

use std::future::Future;

use anyhow::{Context, Result};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

pub struct QueueDriver {
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
}

impl QueueDriver {
    pub fn new(sqs: aws_sdk_sqs::Client, url: &str, arn: &str) -> Self {
        Self {
            sqs,
            url: url.to_owned(),
            arn: arn.to_owned(),
        }
    }

    /// One poll of up to 10 messages. Returns how many were delivered.
    pub async fn poll_once<F, Fut>(&self, handler: F) -> Result<usize>
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: Future<Output = Result<SqsBatchResponse>>,
    {
        let messages = receive(&self.sqs, &self.url, 10, 30).await?;
        if messages.is_empty() {
            return Ok(0);
        }
        let event: SqsEvent = serde_json::from_value(tally_local::sources::sqs::lambda_event(
            &messages, &self.arn,
        ))
        .context("building the SQS event")?;
        let failed: Vec<String> = match handler(event).await {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            // A handler error fails the whole batch, as in Lambda.
            Err(_) => messages
                .iter()
                .filter_map(|m| m.message_id.clone())
                .collect(),
        };
        for m in &messages {
            let id = m.message_id.as_deref().unwrap_or_default();
            let handle = m.receipt_handle.as_deref().unwrap_or_default();
            if failed.iter().any(|f| f == id) {
                self.sqs
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .context("ChangeMessageVisibility")?;
            } else {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .context("DeleteMessage")?;
            }
        }
        Ok(messages.len())
    }

    /// Polls until the queue yields nothing; returns the number of deliveries made.
    pub async fn drain<F, Fut>(&self, mut handler: F) -> Result<usize>
    where
        F: FnMut(SqsEvent) -> Fut,
        Fut: Future<Output = Result<SqsBatchResponse>>,
    {
        let mut deliveries = 0;
        let mut empty_polls = 0;
        while empty_polls < 2 {
            match self.poll_once(&mut handler).await? {
                0 => empty_polls += 1,
                n => {
                    deliveries += n;
                    empty_polls = 0;
                }
            }
        }
        Ok(deliveries)
    }
}

/// Receives up to `max` messages with all attributes.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    visibility: i32,
) -> Result<Vec<Message>> {
    let output = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .visibility_timeout(visibility)
        .wait_time_seconds(0)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .context("ReceiveMessage")?;
    Ok(output.messages.unwrap_or_default())
}
