//! The work queue: the envelope an accepted event travels in, and the port ingest sends through.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::format_utc;

/// Message body. `submissionId` is fresh per accepted submission, so the processor can tell a
/// redelivery of this message (same id) from a second event with the same `eventId` (a duplicate).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    pub submission_id: String,
    pub received_at: String,
    pub correlation_id: String,
    #[serde(borrow)]
    pub event: &'a RawValue,
}

impl<'a> Envelope<'a> {
    pub fn encode(
        submission_id: String,
        received_at: DateTime<Utc>,
        correlation_id: &str,
        event_json: &'a str,
    ) -> Result<String, serde_json::Error> {
        let event = serde_json::from_str::<&RawValue>(event_json)?;
        serde_json::to_string(&Envelope {
            submission_id,
            received_at: format_utc(received_at),
            correlation_id: correlation_id.to_owned(),
            event,
        })
    }
}

/// One message to send; attributes let consumers route and log without parsing the body.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub body: String,
    pub correlation_id: String,
    pub event_type: String,
    pub source: String,
}

impl OutboundMessage {
    /// Bytes SQS counts against its 256 KiB message and batch limits (body plus attributes).
    pub fn billed_size(&self) -> usize {
        const ATTRIBUTE_OVERHEAD: usize = 64;
        self.body.len()
            + self.correlation_id.len()
            + self.event_type.len()
            + self.source.len()
            + ATTRIBUTE_OVERHEAD
    }
}

/// Which messages (by index into the slice sent) could not be queued after retries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendReport {
    pub failed: Vec<usize>,
}

#[async_trait]
pub trait EventQueue: Send + Sync {
    /// Queues every message, retrying only what the queue reports as failed.
    async fn send(&self, messages: &[OutboundMessage]) -> SendReport;
}
