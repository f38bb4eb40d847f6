//! The stream side: accumulate a tumbling window's aggregates in the window state and flush them
//! as idempotent parts on the final invoke. Each batch's lead events are handed back to the
//! caller, which scores them at once (scores do not wait for the window).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tracing::{info, warn};

use super::stored::ParsedEvent;
use super::{AggregatePart, AggregateStore};
use crate::rollup::{Rollup, RollupAccumulator, WindowAggregates};
use crate::scoring::LeadEvent;
use crate::store::StoreError;
use crate::stream_window::{WindowEvent, WindowResponse};

/// Largest part body; DynamoDB items stop at 400 KB.
pub const MAX_PART_BYTES: usize = 300 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The state is not one this function wrote: a bug or a foreign mapping. Failing makes
    /// Lambda retry and, after the retries, send the batch to the on-failure destination.
    #[error("window state is unreadable: {0}")]
    BadState(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the rollup carries between invocations of one window.
#[derive(Debug, Default, PartialEq)]
struct WindowState {
    /// Sequence number of the first record folded into this state: with the shard and the
    /// window start it names the parts, so a re-run of the same window writes the same keys.
    first: Option<String>,
    rollup: Rollup,
}

impl WindowState {
    fn decode(state: Option<&Value>) -> Result<Self, WindowError> {
        let Some(Value::Object(map)) = state else {
            return Ok(Self::default());
        };
        if map.is_empty() {
            return Ok(Self::default());
        }
        let first = map.get("first").and_then(Value::as_str).map(str::to_owned);
        let rollup = match map.get("rollup").and_then(Value::as_str) {
            Some(text) => Rollup::decode(text).map_err(|e| WindowError::BadState(e.to_string()))?,
            None => Rollup::default(),
        };
        // A state written before scoring moved out of the window may hold only lead events
        // ("leads"), which are no longer kept: after such an upgrade a recompute of every lead
        // scores them (README, "Upgrading").
        if rollup.is_empty() && !map.contains_key("leads") {
            return Err(WindowError::BadState("no rollup".into()));
        }
        Ok(Self { first, rollup })
    }

    /// Lambda's `state` is a JSON object; the rollup rides in it as a compact string.
    fn encode(&self) -> Value {
        let mut state = serde_json::Map::new();
        if !self.rollup.is_empty() {
            state.insert("first".into(), json!(self.first));
            state.insert("rollup".into(), json!(self.rollup.encode()));
        }
        if !state.is_empty() {
            state.insert("v".into(), json!(2));
        }
        Value::Object(state)
    }
}

pub struct WindowProcessor<A> {
    store: A,
}

/// Per-invocation figures for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WindowOutcome {
    pub records: usize,
    pub events: usize,
    pub skipped: usize,
    pub parts_written: usize,
}

/// What one invocation gives back: the answer to Lambda, its figures, and the batch's lead
/// events (events without a lead are aggregated only) for the scorer.
pub struct WindowResult {
    pub response: WindowResponse,
    pub outcome: WindowOutcome,
    pub lead_events: Vec<LeadEvent>,
}

/// A batch counted into its window's state, before the flush: the caller scores its lead events
/// in between, so that a flush that fails comes after the lead writes (and the retry finds them
/// done).
pub struct Accumulated {
    state: WindowState,
    outcome: WindowOutcome,
    /// The batch's lead events (events without a lead are aggregated only).
    pub lead_events: Vec<LeadEvent>,
    closing: bool,
    shard: String,
    window_start: String,
}

impl<A: AggregateStore> WindowProcessor<A> {
    pub fn new(store: A) -> Self {
        Self { store }
    }

    /// [`WindowProcessor::accumulate`] then [`WindowProcessor::finish`].
    pub async fn handle(&self, event: &WindowEvent) -> Result<WindowResult, WindowError> {
        let mut accumulated = self.accumulate(event)?;
        let lead_events = std::mem::take(&mut accumulated.lead_events);
        let mut result = self.finish(accumulated).await?;
        result.lead_events = lead_events;
        Ok(result)
    }

    /// Counts the batch into the window's state and collects its lead events.
    pub fn accumulate(&self, event: &WindowEvent) -> Result<Accumulated, WindowError> {
        let mut state = WindowState::decode(event.state.as_ref())?;
        let mut outcome = WindowOutcome {
            records: event.records.len(),
            ..Default::default()
        };
        let mut batch = RollupAccumulator::default();
        let mut lead_events = Vec::new();
        for record in &event.records {
            let Some(json) = record.processed_event_json() else {
                continue;
            };
            match ParsedEvent::parse(json) {
                Ok(parsed) => {
                    let sequence = &record.dynamodb.sequence_number;
                    state.first.get_or_insert_with(|| sequence.clone());
                    batch.add(&parsed.facts());
                    outcome.events += 1;
                    if let Some(lead) = parsed.into_lead_event() {
                        lead_events.push(lead);
                    }
                }
                // Our own stored form failing to parse is a bug; reconciliation reports it as drift.
                Err(error) => {
                    warn!(sequence = %record.dynamodb.sequence_number, %error, "stored event unreadable; skipped");
                    outcome.skipped += 1;
                }
            }
        }
        state.rollup.absorb(batch);
        Ok(Accumulated {
            state,
            outcome,
            lead_events,
            closing: event.is_final_invoke_for_window || event.is_window_terminated_early,
            shard: event.shard_id.clone().unwrap_or_default(),
            window_start: event
                .window
                .as_ref()
                .map(|w| w.start.clone())
                .unwrap_or_default(),
        })
    }

    /// The answer to Lambda: the state to carry on, or, on the window's final invoke, its
    /// aggregates written as parts. (The result's `lead_events` is empty: they were taken.)
    pub async fn finish(&self, accumulated: Accumulated) -> Result<WindowResult, WindowError> {
        let Accumulated {
            state,
            mut outcome,
            closing,
            shard,
            window_start,
            ..
        } = accumulated;
        if !closing {
            return Ok(WindowResult {
                response: WindowResponse {
                    state: state.encode(),
                    batch_item_failures: Vec::new(),
                },
                outcome,
                lead_events: Vec::new(),
            });
        }
        if let (Some(first), false) = (&state.first, state.rollup.is_empty()) {
            // Needed only to name parts; an unreadable start fails the flush.
            let window_start_ms = chrono::DateTime::parse_from_rfc3339(&window_start)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    WindowError::BadState(format!("window start {window_start:?} is not RFC 3339"))
                })?;
            let parts = parts(&state.rollup, window_start_ms, &shard, first)?;
            self.store.put_parts(&parts).await?;
            outcome.parts_written = parts.len();
        }
        if outcome.parts_written > 0 {
            info!(
                parts = outcome.parts_written,
                window_start, shard, "window flushed"
            );
        }
        Ok(WindowResult {
            response: WindowResponse {
                state: json!({}),
                batch_item_failures: Vec::new(),
            },
            outcome,
            lead_events: Vec::new(),
        })
    }
}

/// Splits a window's rollup into per-day parts of at most [`MAX_PART_BYTES`], deterministically.
pub(crate) fn parts(
    rollup: &Rollup,
    window_start_ms: i64,
    shard: &str,
    first: &str,
) -> Result<Vec<AggregatePart>, WindowError> {
    let mut by_day: BTreeMap<&str, Vec<(&String, &WindowAggregates)>> = BTreeMap::new();
    for (hour, aggregates) in &rollup.hours {
        by_day
            .entry(hour.get(..10).unwrap_or(hour))
            .or_default()
            .push((hour, aggregates));
    }
    let mut out = Vec::new();
    for (day, hours) in by_day {
        for (chunk, body) in chunk_hours(&hours)?.into_iter().enumerate() {
            out.push(AggregatePart {
                day: day.to_owned(),
                window_start_ms,
                shard: shard.to_owned(),
                first_sequence: first.to_owned(),
                chunk: chunk as u32,
                body,
            });
        }
    }
    Ok(out)
}

/// Packs hours (split when one alone is too big) into encoded rollups of bounded size.
pub(crate) fn chunk_hours(
    hours: &[(&String, &WindowAggregates)],
) -> Result<Vec<String>, WindowError> {
    let mut chunks = Vec::new();
    let mut current = Rollup::default();
    for (hour, aggregates) in hours {
        let pieces = (*aggregates)
            .clone()
            .split(MAX_PART_BYTES / 2)
            .map_err(|e| WindowError::BadState(e.to_string()))?;
        for piece in pieces {
            let mut candidate = Rollup::default();
            candidate.merge(&current);
            candidate
                .hours
                .entry((*hour).clone())
                .or_default()
                .merge(&piece);
            if !current.is_empty() && candidate.encoded_len() > MAX_PART_BYTES {
                chunks.push(std::mem::take(&mut current).encode());
                current.hours.insert((*hour).clone(), piece);
            } else {
                current = candidate;
            }
        }
    }
    if !current.is_empty() {
        chunks.push(current.encode());
    }
    Ok(chunks)
}
