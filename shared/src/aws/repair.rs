//! The repair's adapters: stream failure queues (SQS) and events by processing time (the hours
//! of the events table's `byHourShard` index, as reconciliation reads them, kept by `processedAt`).

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::{StreamExt, TryStreamExt};

use super::dynamo::DynamoEventStore;
use crate::aggregation::HourlyEvents;
use crate::event::Event;
use crate::repair::{FailureMessage, FailureQueue, ProcessedEvents, RepairEvent};
use crate::store::StoreError;

/// Hours of the index read at once.
const CONCURRENT_HOURS: usize = 16;

#[async_trait]
impl ProcessedEvents for DynamoEventStore {
    async fn processed_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        oldest_timestamp: DateTime<Utc>,
    ) -> Result<Vec<RepairEvent>, StoreError> {
        // Events are stamped at most 5 minutes ahead of their receipt, so none processed by `to`
        // is stamped after its next hour.
        let first = oldest_timestamp
            .duration_trunc(Duration::hours(1))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let hours: Vec<String> = (0..)
            .map(|h| first + Duration::hours(h))
            .take_while(|h| *h <= to + Duration::hours(1))
            .map(|h| h.format("%Y-%m-%dT%H").to_string())
            .collect();
        // The hour's processed events, as reconciliation reads them; kept when processed in
        // the window.
        let pages: Vec<Vec<RepairEvent>> = futures::stream::iter(hours)
            .map(|hour| async move {
                let events = self.processed_in_hour(&hour).await?;
                Ok::<_, StoreError>(
                    events
                        .into_iter()
                        .filter(|e| (from..=to).contains(&e.processed_at))
                        .filter_map(|e| {
                            let event: Event = serde_json::from_str(&e.event_json).ok()?;
                            Some(RepairEvent {
                                event_id: event.event_id,
                                timestamp: event.timestamp,
                                lead_id: event.lead_id,
                                event_json: e.event_json,
                            })
                        })
                        .collect(),
                )
            })
            .buffer_unordered(CONCURRENT_HOURS)
            .try_collect()
            .await?;
        let mut events: Vec<RepairEvent> = pages.into_iter().flatten().collect();
        events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        Ok(events)
    }
}

/// A stream consumer's failure queue.
pub struct SqsFailureQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsFailureQueue {
    pub fn new(config: &aws_config::SdkConfig, url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            url,
        }
    }
}

/// How long a received reference stays hidden: longer than one run can take (15 minutes).
const VISIBILITY_SECONDS: i32 = 900;

#[async_trait]
impl FailureQueue for SqsFailureQueue {
    async fn receive(&self, max: usize) -> Result<Vec<FailureMessage>, StoreError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(VISIBILITY_SECONDS)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(FailureMessage {
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn release(&self, receipt: &str) -> Result<(), StoreError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        Ok(())
    }
}
