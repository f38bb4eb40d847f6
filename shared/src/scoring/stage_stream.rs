//! The `stages` function: reads the analytics table's stream and sends every lead stage change
//! it finds to the event bus.
//!
//! A record counts when it is a lead item (`pk` `LEAD#…`, `sk` `STATE`) whose new image carries
//! a `stageChange` and whose stage differs from the old image's: the write that recorded the
//! change. Every other record (aggregates, counters, a lead write without a change, a removal) is
//! skipped. Changes go to the bus in stream order; when the bus still refuses one after the
//! adapter's retries, the batch answers that record as its first failure, so Lambda retries the
//! batch from it (`ReportBatchItemFailures`) and nothing after it is lost.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::{StageChange, StagePublisher};
use crate::store::StoreError;

/// The stream event Lambda hands the function; only what is read is typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StageStreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StageStreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StageStreamRecord {
    pub dynamodb: StageStreamData,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StageStreamData {
    pub sequence_number: String,
    #[serde(default)]
    pub new_image: Option<Value>,
    #[serde(default)]
    pub old_image: Option<Value>,
}

/// The answer to Lambda: the first record not published, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageStreamResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Figures of one batch, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageStreamOutcome {
    pub records: usize,
    /// Changes found in the batch.
    pub changes: usize,
    /// Changes the bus took.
    pub published: usize,
    /// Records whose change was unreadable (a bug; logged and skipped).
    pub unreadable: usize,
}

/// A string attribute of an image (`{"S": "…"}`).
fn string<'a>(image: Option<&'a Value>, name: &str) -> Option<&'a str> {
    image?.get(name)?.get("S")?.as_str()
}

/// The change a record carries, if it is a lead write that changed the stage.
pub fn stage_change_of(
    record: &StageStreamRecord,
) -> Option<Result<StageChange, serde_json::Error>> {
    let new = record.dynamodb.new_image.as_ref();
    let old = record.dynamodb.old_image.as_ref();
    if !string(new, "pk")?.starts_with("LEAD#") || string(new, "sk")? != "STATE" {
        return None;
    }
    let change = string(new, "stageChange")?;
    if string(old, "stage") == string(new, "stage") {
        return None;
    }
    Some(serde_json::from_str(change))
}

/// Sends the changes of one stream batch.
pub async fn publish_stage_changes(
    bus: &dyn StagePublisher,
    event: &StageStreamEvent,
) -> Result<(StageStreamResponse, StageStreamOutcome), StoreError> {
    let mut outcome = StageStreamOutcome {
        records: event.records.len(),
        ..StageStreamOutcome::default()
    };
    let mut found: Vec<(&str, StageChange)> = Vec::new();
    for record in &event.records {
        match stage_change_of(record) {
            None => {}
            Some(Ok(change)) => found.push((&record.dynamodb.sequence_number, change)),
            Some(Err(error)) => {
                warn!(sequence = %record.dynamodb.sequence_number, %error, "stage change unreadable; skipped");
                outcome.unreadable += 1;
            }
        }
    }
    outcome.changes = found.len();
    if found.is_empty() {
        return Ok((StageStreamResponse::default(), outcome));
    }
    let changes: Vec<StageChange> = found.iter().map(|(_, c)| c.clone()).collect();
    let accepted = bus.publish(&changes).await?;
    outcome.published = accepted.iter().filter(|ok| **ok).count();
    let first_refused =
        found
            .iter()
            .zip(&accepted)
            .find(|(_, ok)| !**ok)
            .map(|((sequence, _), _)| ItemFailure {
                item_identifier: (*sequence).to_owned(),
            });
    Ok((
        StageStreamResponse {
            batch_item_failures: first_refused.into_iter().collect(),
        },
        outcome,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scoring::MemoryBus;

    fn record(seq: &str, old: Option<Value>, new: Value) -> Value {
        json!({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": seq, "OldImage": old, "NewImage": new}})
    }

    fn lead(stage: Option<&str>, change: Option<&str>) -> Value {
        let mut image = json!({"pk": {"S": "LEAD#l1"}, "sk": {"S": "STATE"}, "state": {"S": "{}"}});
        if let Some(stage) = stage {
            image["stage"] = json!({"S": stage});
        }
        if let Some(to) = change {
            let change = json!({"leadId": "l1", "from": null, "to": to, "score": 100,
                                "eventId": "e1", "at": "2026-11-20T10:00:00.000Z"});
            image["stageChange"] = json!({"S": change.to_string()});
        }
        image
    }

    #[tokio::test]
    async fn only_lead_writes_that_moved_the_stage_are_published() -> Result<(), StoreError> {
        let event: StageStreamEvent = serde_json::from_value(json!({"Records": [
            // The write that recorded MQL.
            record("1", Some(lead(None, None)), lead(Some("MQL"), Some("MQL"))),
            // A later write that kept the stage (no change attribute any more).
            record("2", Some(lead(Some("MQL"), Some("MQL"))), lead(Some("MQL"), None)),
            // An aggregate part, and a counter.
            record("3", None, json!({"pk": {"S": "AGG#2026-11-20"}, "sk": {"S": "P#1"}})),
            record("4", None, json!({"pk": {"S": "COUNTERS#pipeline"}, "sk": {"S": "s1"}})),
        ]}))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let bus = MemoryBus::default();
        let (response, outcome) = publish_stage_changes(&bus, &event).await?;
        assert_eq!(response, StageStreamResponse::default());
        assert_eq!(
            (outcome.records, outcome.changes, outcome.published),
            (4, 1, 1)
        );
        let published = bus.published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].to.as_deref(), Some("MQL"));
        assert_eq!(published[0].event_id.as_deref(), Some("e1"));
        Ok(())
    }

    #[tokio::test]
    async fn the_sample_batch_publishes_its_one_change() -> Result<(), StoreError> {
        let text = include_str!("../../../events/stages-stream-batch.json");
        let event: StageStreamEvent =
            serde_json::from_str(text).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let bus = MemoryBus::default();
        let (response, outcome) = publish_stage_changes(&bus, &event).await?;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(
            (outcome.records, outcome.changes, outcome.published),
            (2, 1, 1)
        );
        let change = bus
            .published()
            .pop()
            .ok_or_else(|| StoreError::Unavailable("none".into()))?;
        assert_eq!(
            (
                change.lead_id.as_str(),
                change.from,
                change.to.as_deref(),
                change.score
            ),
            ("email:ada@example.com", None, Some("MQL"), 105)
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_change_fails_the_batch_from_its_record() -> Result<(), StoreError> {
        let event: StageStreamEvent = serde_json::from_value(json!({"Records": [
            record("10", None, lead(Some("MQL"), Some("MQL"))),
            record("11", Some(lead(Some("MQL"), None)), lead(Some("SQL"), Some("SQL"))),
        ]}))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let bus = MemoryBus::default();
        bus.refuse_every_other(true);
        let (response, outcome) = publish_stage_changes(&bus, &event).await?;
        assert_eq!(outcome.published, 1);
        assert_eq!(
            response.batch_item_failures,
            vec![ItemFailure {
                item_identifier: "11".into()
            }],
            "Lambda retries from the refused record"
        );
        bus.set_down(true);
        assert!(
            publish_stage_changes(&bus, &event).await.is_err(),
            "a bus that is down fails the batch"
        );
        Ok(())
    }
}
