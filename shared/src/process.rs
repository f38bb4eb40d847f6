//! The SQS-triggered processor: re-validate, store once, record failures, report exactly the
//! messages worth retrying.
//!
//! A message carries many events. Each event is stored, rejected or failed on its own; a message
//! is retried when any of its events failed transiently. On a retry its stored events are
//! recognised by their submission id ([`StoreOutcome::Redelivered`]) and its rejected ones by
//! their record, so neither is counted twice, and only the failed ones are stored anew. Its
//! duplicates leave no record, so the duplicates counter counts them again (a metric only).

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::Value;
use tracing::{error, info, warn, Instrument};

use std::collections::BTreeMap;

use crate::counters::{CountedSources, CounterDelta, CounterSink};
use crate::event::{Event, FieldError, Limits};
use crate::observability::Metrics;
use crate::queue::Envelope;
use crate::retry::{Backoff, MessageVisibility};
use crate::store::{
    EventStatus, EventStore, FailureRecord, ProcessedRecord, Provenance, StoreOutcome,
};

/// Events of one batch stored at once; conditional puts cannot be batched (BatchWriteItem has
/// no conditions and a transaction would fail every event for one duplicate), so they run
/// concurrently instead.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub message_id: String,
    pub body: String,
    /// SQS `ApproximateReceiveCount`: 1 on first delivery.
    pub receive_count: u32,
    /// What SQS needs to change this delivery's visibility (empty when unknown).
    pub receipt_handle: String,
}

#[derive(Debug, thiserror::Error)]
#[error("SQS record {0} has no messageId; the batch is failed whole so nothing is lost")]
pub struct MissingMessageId(usize);

/// Lambda's SQS event → inbound messages.
pub fn inbound_messages(event: SqsEvent) -> Result<Vec<InboundMessage>, MissingMessageId> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let receive_count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            Ok(InboundMessage {
                message_id: record.message_id.ok_or(MissingMessageId(i))?,
                body: record.body.unwrap_or_default(),
                receive_count,
                receipt_handle: record.receipt_handle.unwrap_or_default(),
            })
        })
        .collect()
}

pub fn batch_response(failed_message_ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed_message_ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// With the time from acceptance to storage.
    Stored {
        latency_ms: u64,
    },
    Duplicate,
    Redelivered,
    Rejected,
    /// Transient; retried by SQS. `dead` when this was the last receive before the DLQ.
    Failed {
        dead: bool,
    },
}

pub struct Processor<S, C> {
    store: S,
    counters: C,
    /// Labels events by source in the counters when their message does not say how ingest did.
    counted: CountedSources,
    limits: Limits,
    max_receive_count: u32,
    /// Without it, a failed message waits out the queue's visibility timeout.
    backoff: Option<(Arc<dyn MessageVisibility>, Backoff)>,
}

impl<S: EventStore, C: CounterSink> Processor<S, C> {
    pub fn new(store: S, counters: C, limits: Limits, max_receive_count: u32) -> Self {
        Self {
            store,
            counters,
            counted: CountedSources::default(),
            limits,
            max_receive_count,
            backoff: None,
        }
    }

    /// The sources counted by name (ingest's `COUNTED_SOURCES`), for events whose message
    /// carries no labels: replays, and messages queued before labels were.
    pub fn with_counted_sources(mut self, counted: CountedSources) -> Self {
        self.counted = counted;
        self
    }

    /// Failed messages come back after `backoff`'s delay for their delivery count instead of
    /// the queue's visibility timeout.
    pub fn with_backoff(
        mut self,
        visibility: Arc<dyn MessageVisibility>,
        backoff: Backoff,
    ) -> Self {
        self.backoff = Some((visibility, backoff));
        self
    }

    /// Processes a batch; returns the ids of the messages SQS should deliver again.
    pub async fn process(&self, messages: Vec<InboundMessage>) -> Vec<String> {
        let started = std::time::Instant::now();
        let units: Vec<(usize, Unit)> = messages
            .iter()
            .enumerate()
            .flat_map(|(index, message)| units(message).into_iter().map(move |u| (index, u)))
            .collect();
        let fates: Vec<(usize, Option<String>, Fate)> = stream::iter(units)
            .map(|(index, unit)| {
                let message = &messages[index];
                let label = self.label(&unit);
                async move { (index, label, self.one(message, unit).await) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let mut delta = CounterDelta::default();
        let mut retry = vec![false; messages.len()];
        for (index, label, fate) in fates {
            let by_source = |counts: &mut BTreeMap<String, u64>| {
                if let Some(label) = &label {
                    *counts.entry(label.clone()).or_default() += 1;
                }
            };
            match fate {
                Fate::Stored { latency_ms } => {
                    delta.processed += 1;
                    by_source(&mut delta.processed_by_source);
                    delta.latency.record(latency_ms);
                }
                Fate::Duplicate => delta.duplicate += 1,
                Fate::Redelivered => {}
                Fate::Rejected => delta.rejected += 1,
                Fate::Failed { dead } => {
                    delta.failed += 1;
                    by_source(&mut delta.failed_by_source);
                    delta.dead_lettered += u64::from(dead);
                    retry[index] = true;
                }
            }
        }
        let (failed, retries): (Vec<String>, Vec<(String, u32)>) = messages
            .into_iter()
            .zip(retry)
            .filter(|(_, retry)| *retry)
            .map(|(m, _)| (m.message_id, (m.receipt_handle, m.receive_count)))
            .unzip();
        let mut metrics = Metrics::new("process");
        metrics.count("EventsProcessed", delta.processed);
        metrics.count("EventsDuplicate", delta.duplicate);
        metrics.count("EventsRejected", delta.rejected);
        metrics.count("EventsFailed", delta.failed);
        metrics.count("EventsDeadLettered", delta.dead_lettered);
        self.back_off(&retries, &mut metrics).await;
        metrics.duration("BatchDuration", started);
        if !delta.is_empty() {
            if let Err(e) = self.counters.add(&delta).await {
                warn!(error = %e, "pipeline counters not updated");
                metrics.count("CounterWriteFailures", 1);
            }
        }
        metrics.flush();
        info!(
            processed = delta.processed,
            duplicates = delta.duplicate,
            rejected = delta.rejected,
            failed = delta.failed,
            messages_failed = failed.len(),
            "batch processed"
        );
        failed
    }

    /// Sets when each failed message comes back. A message whose visibility cannot be set is
    /// still retried, only later (after the queue's visibility timeout), so this never fails
    /// the batch.
    async fn back_off(&self, retries: &[(String, u32)], metrics: &mut Metrics) {
        let Some((visibility, backoff)) = &self.backoff else {
            return;
        };
        let mut rng = fastrand::Rng::new();
        let delays: Vec<(String, u32)> = retries
            .iter()
            .filter(|(receipt, _)| !receipt.is_empty())
            .map(|(receipt, count)| (receipt.clone(), backoff.delay(*count, &mut rng)))
            .collect();
        if delays.is_empty() {
            return;
        }
        let refused = match visibility.delay(&delays).await {
            Ok(refused) => refused,
            Err(e) => {
                warn!(error = %e, "retry delays not set; the visibility timeout applies");
                delays.len()
            }
        };
        metrics.count("RetriesDelayed", (delays.len() - refused) as u64);
        metrics.count("RetryDelayFailures", refused as u64);
    }

    async fn one(&self, message: &InboundMessage, unit: Unit) -> Fate {
        let now = Utc::now();
        let span = tracing::info_span!("message", message_id = %message.message_id, correlation_id = %unit.correlation_id);
        async {
            match unit.decoded {
                Ok(decoded) => match decoded
                    .event
                    .revalidate(&self.limits, decoded.provenance.received_at)
                {
                    Ok(()) => self.store(decoded, message.receive_count, now).await,
                    Err(errors) => {
                        let reason = describe(&errors);
                        let record = FailureRecord {
                            event_id: decoded.event.event_id.clone(),
                            status: EventStatus::Rejected,
                            reason,
                            failed_at: now,
                            provenance: Some(decoded.provenance),
                            event: Some(decoded.event),
                            event_json: Some(decoded.event_json),
                        };
                        self.reject(record, message.receive_count).await
                    }
                },
                Err(rejection) => {
                    let record = FailureRecord {
                        event_id: rejection.event_id.unwrap_or(unit.fallback_id),
                        status: EventStatus::Rejected,
                        reason: rejection.reason,
                        failed_at: now,
                        provenance: None,
                        event: None,
                        event_json: None,
                    };
                    self.reject(record, message.receive_count).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn store(&self, decoded: Decoded, receive_count: u32, now: DateTime<Utc>) -> Fate {
        let record = ProcessedRecord {
            event: decoded.event,
            event_json: decoded.event_json,
            provenance: decoded.provenance,
            processed_at: now,
        };
        match self.store.store_processed(&record).await {
            Ok(StoreOutcome::Stored) => Fate::Stored {
                latency_ms: (now - record.provenance.received_at)
                    .num_milliseconds()
                    .max(0) as u64,
            },
            Ok(StoreOutcome::Duplicate) => {
                info!(event_id = %record.event.event_id, "duplicate eventId; nothing changed");
                Fate::Duplicate
            }
            Ok(StoreOutcome::Redelivered) => Fate::Redelivered,
            Err(e) => {
                let dead = receive_count >= self.max_receive_count;
                let status = if dead {
                    EventStatus::DeadLetter
                } else {
                    EventStatus::Failed
                };
                warn!(event_id = %record.event.event_id, error = %e, attempt = receive_count, dead, "event not stored");
                let failure = FailureRecord {
                    event_id: record.event.event_id.clone(),
                    status,
                    reason: format!("attempt {receive_count}: {e}"),
                    failed_at: now,
                    provenance: Some(record.provenance),
                    event: Some(record.event),
                    event_json: Some(record.event_json),
                };
                if let Err(e) = self.store.record_failure(&failure).await {
                    error!(error = %e, status = status.as_str(), "failure could not be recorded");
                }
                Fate::Failed { dead }
            }
        }
    }

    /// Invalid data is recorded and not retried; only a failure to record it is retried.
    async fn reject(&self, record: FailureRecord, receive_count: u32) -> Fate {
        if receive_count > 1 && self.rejected_before(&record).await {
            // The message came back for a sibling's sake; this rejection is already counted.
            return Fate::Redelivered;
        }
        warn!(event_id = %record.event_id, reason = %record.reason, "event rejected");
        match self.store.record_failure(&record).await {
            Ok(()) => Fate::Rejected,
            Err(e) => {
                error!(error = %e, "rejection could not be recorded; message will be retried");
                Fate::Failed {
                    dead: receive_count >= self.max_receive_count,
                }
            }
        }
    }

    /// The source label a decoded event is counted under: ingest's, when its message carries
    /// one that could be (the event's source, or the shared label), else by this list.
    fn label(&self, unit: &Unit) -> Option<String> {
        let decoded = unit.decoded.as_ref().ok()?;
        let source = decoded.event.source.as_str();
        Some(match decoded.counted_as.as_deref() {
            Some(label) if label == source || label == CountedSources::OTHER => label.to_owned(),
            _ => self.counted.label(source, false).to_owned(),
        })
    }

    /// Whether an earlier delivery of this very submission recorded this rejection.
    async fn rejected_before(&self, record: &FailureRecord) -> bool {
        let Some(provenance) = &record.provenance else {
            // Undecodable: no submission to compare; recording again only adds to its history.
            return false;
        };
        match self.store.get(&record.event_id).await {
            Ok(Some(stored)) => {
                stored.status == EventStatus::Rejected
                    && stored.submission_id.as_deref() == Some(provenance.submission_id.as_str())
            }
            _ => false,
        }
    }
}

/// One event of a message, decoded or not.
struct Unit {
    decoded: Result<Decoded, Rejection>,
    correlation_id: String,
    /// The id its failure record takes when the event has no valid id of its own.
    fallback_id: String,
}

struct Decoded {
    event: Event,
    event_json: String,
    provenance: Provenance,
    /// The label ingest counted its acceptance under, if the message says.
    counted_as: Option<String>,
}

struct Rejection {
    event_id: Option<String>,
    reason: String,
}

/// Parses the envelope into its events, each decoded on its own.
fn units(message: &InboundMessage) -> Vec<Unit> {
    let fallback = format!("sqs:{}", message.message_id);
    let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(&message.body) else {
        return vec![Unit {
            decoded: Err(Rejection {
                event_id: None,
                reason: "message body is not a Tally envelope".into(),
            }),
            correlation_id: String::new(),
            fallback_id: fallback,
        }];
    };
    let submissions = envelope.submissions();
    if submissions.is_empty() {
        return vec![Unit {
            decoded: Err(Rejection {
                event_id: None,
                reason: "message carries no event".into(),
            }),
            correlation_id: envelope.correlation_id.clone(),
            fallback_id: fallback,
        }];
    }
    let received_at =
        DateTime::parse_from_rfc3339(&envelope.received_at).map(|t| t.with_timezone(&Utc));
    let single = submissions.len() == 1;
    submissions
        .into_iter()
        .enumerate()
        .map(|(i, (submission_id, raw))| {
            let raw = raw.get();
            let decoded = match (serde_json::from_str::<Event>(raw), received_at) {
                (Ok(event), Ok(received_at)) => Ok(Decoded {
                    event,
                    counted_as: envelope.counted_as(i).map(str::to_owned),
                    event_json: raw.to_owned(),
                    provenance: Provenance {
                        submission_id,
                        correlation_id: envelope.correlation_id.clone(),
                        received_at,
                        attempts: message.receive_count,
                    },
                }),
                (Err(e), _) => Err(Rejection {
                    event_id: plausible_event_id(raw),
                    reason: format!("event does not match the canonical form: {e}"),
                }),
                (_, Err(_)) => Err(Rejection {
                    event_id: plausible_event_id(raw),
                    reason: "receivedAt is not RFC 3339".into(),
                }),
            };
            Unit {
                decoded,
                correlation_id: envelope.correlation_id.clone(),
                fallback_id: if single {
                    fallback.clone()
                } else {
                    format!("{fallback}:{i}")
                },
            }
        })
        .collect()
}

/// The `eventId` of an undecodable event, if it is a valid id (so the record lands under it).
fn plausible_event_id(raw: &str) -> Option<String> {
    let value: Value = serde_json::from_str(raw).ok()?;
    let id = value.get("eventId")?.as_str()?;
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b));
    valid.then(|| id.to_owned())
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}
