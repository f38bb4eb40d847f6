//! The work queue: the envelope accepted events travel in (many to a message), and the port
//! ingest sends through.

use std::ops::Range;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::event::format_utc;

/// Most events one message carries.
pub const MAX_EVENTS_PER_MESSAGE: usize = 100;
/// Most bytes of one message body: one SQS billing unit (64 KiB) and one Lambda record.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What an envelope adds to its events: ids, times, field names (generously rounded up).
const ENVELOPE_BYTES: usize = 512;

/// Message body: one or more accepted events of one submission.
///
/// `submissionId` is fresh per message, and the `i`-th event's submission is
/// `<submissionId>/<i>`, so the processor can tell a redelivery of this message (same id) from a
/// second event with the same `eventId` (a duplicate). Bodies written before events were packed
/// carry one `event` and use `submissionId` as it is; they are still read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    pub submission_id: String,
    pub received_at: String,
    pub correlation_id: String,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<&'a RawValue>,
    /// The pipeline counters' source label of each event, as ingest counted its acceptance,
    /// so `process` counts it under the same one. Absent from replays and older messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted_as: Vec<String>,
}

impl<'a> Envelope<'a> {
    /// The events with the submission id of each.
    pub fn submissions(&self) -> Vec<(String, &'a RawValue)> {
        let mut out: Vec<(String, &'a RawValue)> = self
            .event
            .map(|event| (self.submission_id.clone(), event))
            .into_iter()
            .collect();
        out.extend(
            self.events
                .iter()
                .enumerate()
                .map(|(i, event)| (format!("{}/{i}", self.submission_id), *event)),
        );
        out
    }

    /// The counters' source label of the `i`-th submission, when ingest gave one per event.
    pub fn counted_as(&self, i: usize) -> Option<&str> {
        (self.counted_as.len() == self.submissions_len())
            .then(|| self.counted_as.get(i).map(String::as_str))
            .flatten()
    }

    fn submissions_len(&self) -> usize {
        usize::from(self.event.is_some()) + self.events.len()
    }
}

/// One accepted event, ready to be packed.
#[derive(Debug, Clone, Copy)]
pub struct QueuedEvent<'a> {
    /// The canonical JSON.
    pub json: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    /// The source label ingest counted the event under, when it counted it.
    pub counted_as: Option<&'a str>,
}

/// A message and the events (a range of the packed slice) it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub message: OutboundMessage,
    pub events: Range<usize>,
}

/// Packs events, in order, into as few messages as [`MAX_EVENTS_PER_MESSAGE`] and
/// [`MAX_MESSAGE_BYTES`] allow. An event is at most 32 KiB, so each fits a message of its own.
pub fn pack_events(
    events: &[QueuedEvent<'_>],
    correlation_id: &str,
    received_at: DateTime<Utc>,
) -> Result<Vec<Packed>, serde_json::Error> {
    let mut packed = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut bytes = ENVELOPE_BYTES + correlation_id.len();
        while end < events.len() && end - start < MAX_EVENTS_PER_MESSAGE {
            // The event, its comma, and its quoted label and comma.
            let size =
                events[end].json.len() + 1 + events[end].counted_as.map_or(0, |l| l.len() + 3);
            if end > start && bytes + size > MAX_MESSAGE_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        packed.push(Packed {
            message: message(&events[start..end], correlation_id, received_at)?,
            events: start..end,
        });
        start = end;
    }
    Ok(packed)
}

fn message(
    events: &[QueuedEvent<'_>],
    correlation_id: &str,
    received_at: DateTime<Utc>,
) -> Result<OutboundMessage, serde_json::Error> {
    let raw = events
        .iter()
        .map(|e| serde_json::from_str::<&RawValue>(e.json))
        .collect::<Result<Vec<_>, _>>()?;
    let body = serde_json::to_string(&Envelope {
        submission_id: Uuid::now_v7().to_string(),
        received_at: format_utc(received_at),
        correlation_id: correlation_id.to_owned(),
        event: None,
        events: raw,
        counted_as: events
            .iter()
            .map(|e| e.counted_as.map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default(),
    })?;
    // Attributes name the type and source when every event shares them (a DLQ is easier to
    // browse); a mixed message leaves them out.
    Ok(OutboundMessage {
        body,
        correlation_id: correlation_id.to_owned(),
        event_type: uniform(events.iter().map(|e| e.event_type)),
        source: uniform(events.iter().map(|e| e.source)),
        events: events.len(),
    })
}

/// The value every item has, if they agree.
fn uniform<'e>(mut values: impl Iterator<Item = &'e str>) -> Option<String> {
    let first = values.next()?;
    values.all(|v| v == first).then(|| first.to_owned())
}

/// One message to send; attributes let consumers route and log without parsing the body.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub body: String,
    pub correlation_id: String,
    /// The events' type, when they all have the same.
    pub event_type: Option<String>,
    /// The events' source, when they all have the same.
    pub source: Option<String>,
    /// How many events the body carries.
    pub events: usize,
}

impl OutboundMessage {
    /// Bytes SQS counts against its 256 KiB message and batch limits (body plus attributes).
    pub fn billed_size(&self) -> usize {
        const ATTRIBUTE_OVERHEAD: usize = 96;
        self.body.len()
            + self.correlation_id.len()
            + self.event_type.as_ref().map_or(0, String::len)
            + self.source.as_ref().map_or(0, String::len)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: usize, kind: &str, padding: usize) -> String {
        serde_json::json!({"eventId": format!("e{id}"), "type": kind, "pad": "x".repeat(padding)})
            .to_string()
    }

    fn queued<'a>(jsons: &'a [String], kind: &'a str) -> Vec<QueuedEvent<'a>> {
        jsons
            .iter()
            .map(|json| QueuedEvent {
                json,
                event_type: kind,
                source: "api",
                counted_as: Some("api"),
            })
            .collect()
    }

    #[test]
    fn packs_by_count_in_order_and_every_event_keeps_its_own_submission() {
        let jsons: Vec<String> = (0..250).map(|i| event(i, "A", 10)).collect();
        let packed = pack_events(&queued(&jsons, "A"), "corr", Utc::now()).unwrap_or_default();
        let ranges: Vec<Range<usize>> = packed.iter().map(|p| p.events.clone()).collect();
        assert_eq!(ranges, [0..100, 100..200, 200..250]);
        let mut seen = Vec::new();
        for p in &packed {
            assert_eq!(p.message.events, p.events.len());
            assert_eq!(p.message.event_type.as_deref(), Some("A"));
            let envelope: Envelope<'_> = serde_json::from_str(&p.message.body)
                .unwrap_or_else(|e| panic!("{e}: {}", p.message.body));
            assert_eq!(envelope.correlation_id, "corr");
            for (i, (submission, raw)) in envelope.submissions().into_iter().enumerate() {
                assert_eq!(submission, format!("{}/{i}", envelope.submission_id));
                seen.push(raw.get().to_owned());
            }
        }
        assert_eq!(seen, jsons, "every event once, in order");
    }

    #[test]
    fn packs_by_size_within_one_billing_chunk() {
        // 20 KiB events: three fit 64 KiB, a fourth would not.
        let jsons: Vec<String> = (0..7).map(|i| event(i, "A", 20 * 1024)).collect();
        let packed = pack_events(&queued(&jsons, "A"), "c", Utc::now()).unwrap_or_default();
        let sizes: Vec<usize> = packed.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(packed
            .iter()
            .all(|p| p.message.body.len() <= MAX_MESSAGE_BYTES));
        // The largest event the API accepts travels alone.
        let big = vec![event(0, "A", 32 * 1024 - 64), event(1, "A", 32 * 1024 - 64)];
        let packed = pack_events(&queued(&big, "A"), "c", Utc::now()).unwrap_or_default();
        assert_eq!(packed.len(), 2);
        assert!(pack_events(&[], "c", Utc::now())
            .unwrap_or_default()
            .is_empty());
    }

    #[test]
    fn mixed_messages_name_no_type_and_old_single_event_bodies_still_read() {
        let jsons = vec![event(0, "A", 0), event(1, "B", 0)];
        let mut events = queued(&jsons, "A");
        events[1].event_type = "B";
        let packed = pack_events(&events, "c", Utc::now()).unwrap_or_default();
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].message.event_type, None);
        assert_eq!(packed[0].message.source.as_deref(), Some("api"));

        let old = r#"{"submissionId":"s-1","receivedAt":"2026-12-01T00:00:00.000Z","correlationId":"c","event":{"eventId":"e0","type":"A"}}"#;
        let envelope: Envelope<'_> = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        let submissions = envelope.submissions();
        assert_eq!(submissions.len(), 1);
        assert_eq!(
            submissions[0].0, "s-1",
            "the old form keeps its submission id"
        );
    }

    #[test]
    fn labels_travel_with_their_events_only_when_every_event_has_one() {
        let jsons: Vec<String> = (0..3).map(|i| event(i, "A", 0)).collect();
        let mut events = queued(&jsons, "A");
        events[1].counted_as = Some("(other)");
        let packed = pack_events(&events, "c", Utc::now()).unwrap_or_default();
        let envelope: Envelope<'_> =
            serde_json::from_str(&packed[0].message.body).unwrap_or_else(|e| panic!("{e}"));
        let labels: Vec<Option<&str>> = (0..4).map(|i| envelope.counted_as(i)).collect();
        assert_eq!(labels, [Some("api"), Some("(other)"), Some("api"), None]);

        // A replay counts nothing at ingest: no labels at all.
        events[1].counted_as = None;
        let packed = pack_events(&events, "c", Utc::now()).unwrap_or_default();
        assert!(!packed[0].message.body.contains("countedAs"));

        // Labels count against the 64 KiB: 100 events of 600 bytes fit one message, but not
        // with 32-character labels.
        let label = "x".repeat(32);
        let jsons: Vec<String> = (0..100).map(|i| event(i, "A", 600)).collect();
        let mut events = queued(&jsons, "A");
        for e in &mut events {
            e.counted_as = Some(&label);
        }
        let packed = pack_events(&events, "c", Utc::now()).unwrap_or_default();
        assert!(packed.len() > 1);
        assert!(packed
            .iter()
            .all(|p| p.message.body.len() <= MAX_MESSAGE_BYTES));
    }
}
