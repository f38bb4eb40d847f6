use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};

use super::item::{add_counters, n, number, query_all, s, text, Item};
use crate::counters::{CounterDelta, CounterSink};
use crate::event::format_utc;
use crate::store::{
    EventStatus, EventStore, FailureRecord, ProcessedRecord, Provenance, StatusChange, StoreError,
    StoreOutcome, StoredEvent, REPLAYED,
};

/// First write of an `eventId` wins, but a recorded failure may be replaced by a later success.
const UNLESS_PROCESSED: &str = "attribute_not_exists(eventId) OR #status <> :processed";

/// What only an unprocessed event carries (`failureStatus` keys the `byFailure` index).
const FAILURE_ATTRIBUTES: [&str; 3] = ["failureStatus", "failureReason", "failedAt"];

pub struct DynamoEventStore {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
}

impl DynamoEventStore {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
        }
    }

    /// Sets `set`, removes `remove` and appends `change` (if any) to the history, unless the
    /// event is processed; then it returns the stored item and changes nothing. A history
    /// already [`MAX_HISTORY_ENTRIES`] long is not appended to: the write is made again without
    /// the entry and counts it in `historyOmitted`, so a status write never fails for the
    /// history's sake.
    async fn update_unless_processed(
        &self,
        event_id: &str,
        set: Item,
        remove: &[&str],
        change: Option<AttributeValue>,
    ) -> Result<Option<Item>, StoreError> {
        let Some(change) = change else {
            return self
                .try_update(event_id, set, remove, History::Untouched)
                .await;
        };
        match self
            .try_update(event_id, set.clone(), remove, History::Append(change))
            .await?
        {
            Some(existing) if history_is_full(&existing) && !is_processed(&existing) => {
                self.try_update(event_id, set, remove, History::CountOmitted)
                    .await
            }
            outcome => Ok(outcome),
        }
    }

    /// One attempt of [`Self::update_unless_processed`].
    async fn try_update(
        &self,
        event_id: &str,
        set: Item,
        remove: &[&str],
        history: History,
    ) -> Result<Option<Item>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("eventId", s(event_id))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processed", s(EventStatus::Processed.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let mut clauses = Vec::new();
        let mut counted = String::new();
        request = match history {
            History::Append(change) => {
                clauses.push(HISTORY_APPEND.to_owned());
                history_values(request, change)
                    .condition_expression(format!("({UNLESS_PROCESSED}) AND {HISTORY_HAS_ROOM}"))
                    .expression_attribute_values(":maxHistory", n(MAX_HISTORY_ENTRIES))
            }
            History::CountOmitted => {
                counted = " ADD historyOmitted :one".to_owned();
                request
                    .condition_expression(UNLESS_PROCESSED)
                    .expression_attribute_values(":one", n(1))
            }
            History::Untouched => request.condition_expression(UNLESS_PROCESSED),
        };
        for (i, (name, value)) in set.into_iter().enumerate() {
            let placeholder = if name == "status" {
                "#status".to_owned()
            } else {
                let placeholder = format!("#a{i}");
                request = request.expression_attribute_names(&placeholder, name);
                placeholder
            };
            clauses.push(format!("{placeholder} = :a{i}"));
            request = request.expression_attribute_values(format!(":a{i}"), value);
        }
        let mut expression = format!("SET {}", clauses.join(", "));
        if !remove.is_empty() {
            expression.push_str(" REMOVE ");
            expression.push_str(&remove.join(", "));
        }
        expression.push_str(&counted);
        let result = request.update_expression(expression).send().await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Some(c.item().cloned().unwrap_or_default()))
                }
                _ => Err(super::store_unavailable(&e)),
            },
        }
    }
}

/// What a status write does to the event's history.
enum History {
    Append(AttributeValue),
    /// The history is full: count the entry in `historyOmitted` instead.
    CountOmitted,
    /// Nothing: the processed entry is read from the item's own attributes
    /// ([`read_history`]), so the write stays under 1 KB more often (a write unit per KB).
    Untouched,
}

/// Appends `:change` to the history (created on first use).
const HISTORY_APPEND: &str = "#history = list_append(if_not_exists(#history, :noHistory), :change)";

/// Entries an event's history keeps: its receive count's worth of failures (10 by default) and
/// far more replays than ops ever make; later changes are counted in `historyOmitted`.
pub const MAX_HISTORY_ENTRIES: usize = 50;

const HISTORY_HAS_ROOM: &str = "(attribute_not_exists(#history) OR size(#history) < :maxHistory)";

fn is_processed(item: &Item) -> bool {
    text(item, "status") == Some(EventStatus::Processed.as_str())
}

fn history_is_full(item: &Item) -> bool {
    matches!(item.get("history"), Some(AttributeValue::L(entries)) if entries.len() >= MAX_HISTORY_ENTRIES)
}

fn history_values(
    request: UpdateItemFluentBuilder,
    change: AttributeValue,
) -> UpdateItemFluentBuilder {
    request
        .expression_attribute_names("#history", "history")
        .expression_attribute_values(":noHistory", AttributeValue::L(Vec::new()))
        .expression_attribute_values(":change", AttributeValue::L(vec![change]))
}

/// One history entry: `{status, at, attempts?, reason?, correlationId?}`.
fn status_change(
    status: &str,
    at: DateTime<Utc>,
    attempts: Option<u32>,
    reason: Option<&str>,
    correlation_id: Option<&str>,
) -> AttributeValue {
    let mut entry = Item::new();
    entry.insert("status".into(), s(status));
    entry.insert("at".into(), s(format_utc(at)));
    if let Some(attempts) = attempts {
        entry.insert("attempts".into(), n(attempts));
    }
    if let Some(reason) = reason {
        entry.insert("reason".into(), s(clipped(reason, MAX_HISTORY_REASON)));
    }
    if let Some(id) = correlation_id {
        entry.insert("correlationId".into(), s(id));
    }
    AttributeValue::M(entry)
}

/// Characters of a reason each history entry keeps, so that retries cannot grow an event's item
/// toward DynamoDB's 400 KB (the item's own `failureReason` keeps the latest in full).
const MAX_HISTORY_REASON: usize = 500;

fn clipped(text: &str, max_chars: usize) -> &str {
    text.char_indices()
        .nth(max_chars)
        .map_or(text, |(end, _)| &text[..end])
}

/// The stored history, ended by the processed entry when the event is processed: that entry
/// is not stored (events stored before it was dropped keep theirs), but made from the item's
/// `processedAt`, `attempts` and `correlationId`.
fn read_history(item: &Item) -> Vec<StatusChange> {
    let mut history = stored_history(item);
    let processed = EventStatus::Processed.as_str();
    if is_processed(item) && history.last().is_none_or(|h| h.status != processed) {
        if let Some(at) = text(item, "processedAt") {
            history.push(StatusChange {
                status: processed.to_owned(),
                at: at.to_owned(),
                attempts: number(item, "attempts").and_then(|a| u32::try_from(a).ok()),
                reason: None,
                correlation_id: text(item, "correlationId").map(str::to_owned),
            });
        }
    }
    history
}

fn stored_history(item: &Item) -> Vec<StatusChange> {
    let Some(AttributeValue::L(entries)) = item.get("history") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let AttributeValue::M(entry) = entry else {
                return None;
            };
            Some(StatusChange {
                status: text(entry, "status")?.to_owned(),
                at: text(entry, "at")?.to_owned(),
                attempts: number(entry, "attempts").and_then(|a| u32::try_from(a).ok()),
                reason: text(entry, "reason").map(str::to_owned),
                correlation_id: text(entry, "correlationId").map(str::to_owned),
            })
        })
        .collect()
}

fn provenance_attributes(item: &mut Item, p: &Provenance) {
    item.insert("submissionId".into(), s(&p.submission_id));
    item.insert("correlationId".into(), s(&p.correlation_id));
    item.insert("receivedAt".into(), s(format_utc(p.received_at)));
    item.insert("attempts".into(), n(p.attempts));
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn store_processed(&self, record: &ProcessedRecord) -> Result<StoreOutcome, StoreError> {
        let event = &record.event;
        let mut item = Item::new();
        item.insert("status".into(), s(EventStatus::Processed.as_str()));
        // Only what is read back: the canonical event carries its type, source and timestamp.
        item.insert("event".into(), s(&record.event_json));
        provenance_attributes(&mut item, &record.provenance);
        item.insert("processedAt".into(), s(format_utc(record.processed_at)));
        // Index keys exist only on processed events, so rollups and scoring never see failures.
        let sort = event.sort_key();
        item.insert(
            "hourShard".into(),
            s(hour_shard(&event.hour_bucket(), &event.event_id)),
        );
        item.insert("eventSort".into(), s(&sort));
        if let Some(lead) = &event.lead_id {
            item.insert("leadId".into(), s(lead));
            item.insert("leadSort".into(), s(sort));
        }
        // A recorded failure's index key and reason go: the history keeps them.
        let stored = self
            .update_unless_processed(&event.event_id, item, &FAILURE_ATTRIBUTES, None)
            .await?;
        Ok(match stored {
            None => StoreOutcome::Stored,
            Some(existing) => {
                let same_submission = matches!(
                    existing.get("submissionId"),
                    Some(AttributeValue::S(id)) if *id == record.provenance.submission_id
                );
                if same_submission {
                    StoreOutcome::Redelivered
                } else {
                    StoreOutcome::Duplicate
                }
            }
        })
    }

    async fn record_failure(&self, record: &FailureRecord) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("status".into(), s(record.status.as_str()));
        item.insert("failureStatus".into(), s(record.status.as_str()));
        item.insert("failureReason".into(), s(&record.reason));
        item.insert("failedAt".into(), s(format_utc(record.failed_at)));
        if let (Some(event), Some(json)) = (&record.event, &record.event_json) {
            // The failure listing (`byFailure`) shows the type.
            item.insert("type".into(), s(&event.event_type));
            item.insert("event".into(), s(json));
        }
        match &record.provenance {
            Some(p) => provenance_attributes(&mut item, p),
            None => {
                item.insert("attempts".into(), n(1));
            }
        }
        let change = status_change(
            record.status.as_str(),
            record.failed_at,
            Some(record.provenance.as_ref().map_or(1, |p| p.attempts)),
            Some(&record.reason),
            record
                .provenance
                .as_ref()
                .map(|p| p.correlation_id.as_str()),
        );
        // A processed event keeps its record: the condition failing is the expected no-op.
        self.update_unless_processed(&record.event_id, item, &[], Some(change))
            .await
            .map(|_| ())
    }

    async fn record_replay(
        &self,
        event_id: &str,
        at: DateTime<Utc>,
        correlation_id: &str,
    ) -> Result<(), StoreError> {
        let change = status_change(REPLAYED, at, None, None, Some(correlation_id));
        let update = |append: bool| {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("eventId", s(event_id))
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":processed", s(EventStatus::Processed.as_str()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            const KNOWN: &str = "attribute_exists(eventId) AND #status <> :processed";
            if append {
                history_values(request, change.clone())
                    .update_expression(format!("SET {HISTORY_APPEND}"))
                    .condition_expression(format!("{KNOWN} AND {HISTORY_HAS_ROOM}"))
                    .expression_attribute_values(":maxHistory", n(MAX_HISTORY_ENTRIES))
            } else {
                request
                    .update_expression("ADD historyOmitted :one")
                    .condition_expression(KNOWN)
                    .expression_attribute_values(":one", n(1))
            }
        };
        for append in [true, false] {
            match update(append).send().await {
                Ok(_) => return Ok(()),
                Err(e) => match e.as_service_error() {
                    // A full history: count the replay instead.
                    Some(UpdateItemError::ConditionalCheckFailedException(c))
                        if append
                            && c.item()
                                .is_some_and(|i| history_is_full(i) && !is_processed(i)) =>
                    {
                        continue
                    }
                    // Processed meanwhile (or unknown): its history ends with how it was processed.
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => return Ok(()),
                    _ => return Err(super::store_unavailable(&e)),
                },
            }
        }
        Ok(())
    }

    async fn get(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("eventId", s(event_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let text = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let Some(status) = text("status").as_deref().and_then(EventStatus::parse) else {
            return Err(StoreError::Unavailable(format!(
                "event {event_id} has no valid status"
            )));
        };
        Ok(Some(StoredEvent {
            event_id: event_id.to_owned(),
            status,
            attempts: match item.get("attempts") {
                Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
                _ => 0,
            },
            event_json: text("event"),
            submission_id: text("submissionId"),
            correlation_id: text("correlationId"),
            received_at: text("receivedAt"),
            processed_at: text("processedAt"),
            failed_at: text("failedAt"),
            failure_reason: text("failureReason"),
            history: read_history(&item),
            history_omitted: number(&item, "historyOmitted")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
        }))
    }
}

/// Shards of each hour in the `byHourShard` index: every event of an hour would otherwise write
/// one index partition (about 1,000 write units a second); 32 take about 32,000 events a second.
/// Changing it moves events between shards: every event's item must then be rewritten.
pub const HOUR_SHARDS: u32 = 32;

/// The `byHourShard` partition of an event: its hour (`YYYY-MM-DDTHH`) and a shard of its id.
pub fn hour_shard(hour: &str, event_id: &str) -> String {
    format!(
        "{hour}#{:02}",
        crate::shards::shard_of(event_id, HOUR_SHARDS)
    )
}

#[async_trait]
impl crate::aggregation::HourlyEvents for DynamoEventStore {
    /// Reads the hour's shards in parallel.
    async fn processed_in_hour(
        &self,
        hour: &str,
    ) -> Result<Vec<crate::aggregation::ProcessedEvent>, StoreError> {
        let shards: Vec<Vec<Item>> = futures::stream::iter(0..HOUR_SHARDS)
            .map(|shard| {
                query_all(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .index_name("byHourShard")
                        .key_condition_expression("hourShard = :shard")
                        .expression_attribute_values(":shard", s(format!("{hour}#{shard:02}")))
                        .projection_expression("#event, processedAt")
                        .expression_attribute_names("#event", "event"),
                )
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(shards
            .iter()
            .flatten()
            .filter_map(|item| {
                let processed_at =
                    chrono::DateTime::parse_from_rfc3339(text(item, "processedAt")?).ok()?;
                Some(crate::aggregation::ProcessedEvent {
                    event_json: text(item, "event")?.to_owned(),
                    processed_at: processed_at.with_timezone(&chrono::Utc),
                })
            })
            .collect())
    }
}

#[async_trait]
impl crate::scoring::LeadHistory for DynamoEventStore {
    async fn lead_events(
        &self,
        lead_id: &str,
    ) -> Result<Vec<crate::scoring::ScoredEvent>, StoreError> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name("byLead")
                .key_condition_expression("leadId = :lead")
                .expression_attribute_values(":lead", s(lead_id))
                .projection_expression("#event")
                .expression_attribute_names("#event", "event"),
        )
        .await?;
        scored_events(&items)
    }

    async fn latest_events(
        &self,
        lead_id: &str,
        after: Option<(chrono::DateTime<chrono::Utc>, &str)>,
        older: usize,
    ) -> Result<Vec<crate::scoring::ScoredEvent>, StoreError> {
        let newest_first = |condition: &str| {
            self.client
                .query()
                .table_name(&self.table)
                .index_name("byLead")
                .key_condition_expression(format!("leadId = :lead{condition}"))
                .expression_attribute_values(":lead", s(lead_id))
                .scan_index_forward(false)
                .projection_expression("#event")
                .expression_attribute_names("#event", "event")
        };
        let Some((ts, id)) = after else {
            return scored_events(&query_all(newest_first("")).await?);
        };
        let after = s(crate::event::sort_key(ts, id));
        let mut items = query_all(
            newest_first(" AND leadSort > :after")
                .expression_attribute_values(":after", after.clone()),
        )
        .await?;
        if older > 0 {
            let output = newest_first(" AND leadSort <= :after")
                .expression_attribute_values(":after", after)
                .limit(i32::try_from(older).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            items.extend(output.items().iter().cloned());
        }
        scored_events(&items)
    }

    async fn events_after(
        &self,
        lead_id: &str,
        after: Option<(chrono::DateTime<chrono::Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<crate::scoring::ScoredEvent>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("byLead")
            .expression_attribute_values(":lead", s(lead_id))
            .projection_expression("#event")
            .expression_attribute_names("#event", "event");
        query = match after {
            Some((ts, id)) => query
                .key_condition_expression("leadId = :lead AND leadSort > :after")
                .expression_attribute_values(":after", s(crate::event::sort_key(ts, id))),
            None => query.key_condition_expression("leadId = :lead"),
        };
        // A page of `limit` items may come back in several 1 MB pages.
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = query
                .clone()
                .limit(
                    i32::try_from(limit - items.len().min(limit))
                        .unwrap_or(i32::MAX)
                        .max(1),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            items.extend(output.items().iter().cloned());
            start = output
                .last_evaluated_key()
                .cloned()
                .filter(|k| !k.is_empty());
            if start.is_none() || items.len() >= limit {
                break;
            }
        }
        items.truncate(limit);
        scored_events(&items)
    }
}

fn scored_events(items: &[Item]) -> Result<Vec<crate::scoring::ScoredEvent>, StoreError> {
    items
        .iter()
        .filter_map(|item| text(item, "event"))
        .map(|json| {
            crate::scoring::ScoredEvent::from_stored_json(json)
                .map_err(|e| StoreError::Unavailable(format!("stored event unreadable: {e}")))
        })
        .collect()
}

/// Counters live in the analytics table, spread over shards so no single item is hot.
pub struct DynamoCounters {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

const COUNTER_PK: &str = "COUNTERS#pipeline";
const COUNTER_SHARDS: u8 = 16;

impl DynamoCounters {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
        }
    }
}

#[async_trait]
impl CounterSink for DynamoCounters {
    async fn add(&self, delta: &CounterDelta) -> Result<(), StoreError> {
        let entries = delta.entries();
        if entries.is_empty() {
            return Ok(());
        }
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(COUNTER_PK))
            .key(
                "sk",
                s(format!("shard#{:02}", fastrand::u8(0..COUNTER_SHARDS))),
            );
        let (request, add) = add_counters(request, &entries);
        request
            .update_expression(add)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::store_unavailable(&e))
    }

    async fn totals(&self) -> Result<CounterDelta, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(COUNTER_PK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let mut totals = CounterDelta::default();
        for item in output.items() {
            for (name, value) in item {
                let AttributeValue::N(v) = value else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match name.as_str() {
                    "processed" => totals.processed += v,
                    "duplicate" => totals.duplicate += v,
                    "failed" => totals.failed += v,
                    "rejected" => totals.rejected += v,
                    "deadLettered" => totals.dead_lettered += v,
                    other if totals.latency.add_attribute(other, v) => {}
                    other => {
                        totals.add_by_source(other, v);
                    }
                }
            }
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_clipped_on_a_character_boundary() {
        assert_eq!(super::clipped("short", 500), "short");
        assert_eq!(super::clipped("ééé", 2), "éé");
        assert_eq!(super::clipped(&"x".repeat(600), 500).len(), 500);
    }
}
