//! The DynamoDB-stream event Lambda hands a function with tumbling windows, and its answer.
//! Only what the rollup reads is typed: each record's sequence number and new image.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
    #[serde(default)]
    pub window: Option<TimeWindow>,
    /// What the previous invocation of this window returned as `state` (`{}` or absent at first).
    #[serde(default)]
    pub state: Option<Value>,
    #[serde(default)]
    pub shard_id: Option<String>,
    #[serde(default)]
    pub is_final_invoke_for_window: bool,
    #[serde(default)]
    pub is_window_terminated_early: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimeWindow {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: Option<ChangeKind>,
    pub dynamodb: StreamData,
}

/// A record's `eventName`. Read as a word rather than a string: a batch has thousands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeKind {
    Insert,
    Modify,
    Remove,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamData {
    pub sequence_number: String,
    #[serde(default)]
    pub new_image: Option<NewImage>,
}

/// The two attributes the rollup reads; every other attribute of the image is skipped unparsed
/// (a 10,000-record batch carries megabytes of them).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewImage {
    #[serde(default)]
    pub status: Option<StatusAttribute>,
    #[serde(default)]
    pub event: Option<StringAttribute>,
}

/// The `status` attribute, read as a word (`{"S": "PROCESSED"}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusAttribute {
    #[serde(rename = "S", default)]
    pub s: Option<StoredStatus>,
}

/// Only `PROCESSED` matters to the stream consumers; every other status reads as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum StoredStatus {
    #[serde(rename = "PROCESSED")]
    Processed,
    #[serde(other)]
    Other,
}

/// A DynamoDB-JSON attribute; only the string form (`{"S": ...}`) carries a value here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StringAttribute {
    #[serde(rename = "S", default)]
    pub s: Option<String>,
}

impl StreamRecord {
    /// The canonical event JSON of a record that stores a `PROCESSED` event. `PROCESSED` is
    /// terminal (the store's condition never rewrites it), so each event yields exactly one such
    /// record: its INSERT, or the MODIFY that replaced a recorded failure.
    pub fn processed_event_json(&self) -> Option<&str> {
        let image = self.dynamodb.new_image.as_ref()?;
        let status = image.status.as_ref()?.s?;
        if self.event_name == Some(ChangeKind::Remove) || status != StoredStatus::Processed {
            return None;
        }
        image.event.as_ref()?.s.as_deref()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowResponse {
    pub state: Value,
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(name: &str, status: &str) -> Value {
        json!({
            "eventID": "1", "eventName": name, "eventSource": "aws:dynamodb",
            "dynamodb": {"SequenceNumber": "100", "Keys": {"eventId": {"S": "e1"}},
                "NewImage": {"eventId": {"S": "e1"}, "status": {"S": status}, "event": {"S": "{\"eventId\":\"e1\"}"}}}
        })
    }

    #[test]
    fn only_processed_images_yield_events() -> Result<(), serde_json::Error> {
        let event: WindowEvent = serde_json::from_value(json!({
            "Records": [record("INSERT", "PROCESSED"), record("INSERT", "FAILED"), record("MODIFY", "PROCESSED"), record("REMOVE", "PROCESSED")],
            "window": {"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T10:05:00Z"},
            "state": {}, "shardId": "shard-1", "eventSourceARN": "arn", "isFinalInvokeForWindow": true, "isWindowTerminatedEarly": false
        }))?;
        let found: Vec<bool> = event
            .records
            .iter()
            .map(|r| r.processed_event_json().is_some())
            .collect();
        assert_eq!(found, vec![true, false, true, false]);
        assert!(event.is_final_invoke_for_window && !event.is_window_terminated_early);
        assert_eq!(event.shard_id.as_deref(), Some("shard-1"));
        Ok(())
    }

    #[test]
    fn response_shape() -> Result<(), serde_json::Error> {
        let r = WindowResponse {
            state: json!({"a": 1}),
            batch_item_failures: vec![ItemFailure {
                item_identifier: "7".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&r)?,
            json!({"state": {"a": 1}, "batchItemFailures": [{"itemIdentifier": "7"}]})
        );
        Ok(())
    }
}
