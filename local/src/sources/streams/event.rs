//! Lambda's JSON shapes for DynamoDB stream event-source mappings, and the windowing arithmetic.
//! Pure functions, no I/O.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodbstreams::primitives::Blob;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// Account id used in ARNs when the stream ARN does not carry a real one.
const DEFAULT_ACCOUNT: &str = "123456789012";

/// One attribute value in DynamoDB JSON: `{"S": ".."}`, `{"N": ".."}`, `{"B": "<base64>"}`,
/// `{"SS": [..]}`, `{"NS": [..]}`, `{"BS": [..]}`, `{"M": {..}}`, `{"L": [..]}`,
/// `{"NULL": true}`, `{"BOOL": b}`. A variant this SDK does not know becomes `null`.
pub fn attribute_value_json(value: &AttributeValue) -> Value {
    let b64 = |blob: &Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(blob.as_ref()))
    };
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => {
            json!({ "L": l.iter().map(attribute_value_json).collect::<Vec<_>>() })
        }
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        _ => Value::Null,
    }
}

/// An item (or key) in DynamoDB JSON: `{"name": {"S": ".."}, ..}`.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(name, value)| (name.clone(), attribute_value_json(value)))
            .collect(),
    )
}

/// The region of an ARN (`arn:aws:dynamodb:<region>:..`); DynamoDB Local's `ddblocal` and
/// anything else that is not a region name become [`crate::REGION`].
pub fn region_of(arn: &str) -> &str {
    match arn.split(':').nth(3) {
        Some(region) if region.contains('-') => region,
        _ => crate::REGION,
    }
}

/// The account of an ARN; DynamoDB Local's `000000000000` is kept, a missing one becomes
/// `123456789012` (the local stack's `AWS::AccountId`).
pub fn account_of(arn: &str) -> &str {
    match arn.split(':').nth(4) {
        Some(account) if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) => {
            account
        }
        _ => DEFAULT_ACCOUNT,
    }
}

/// `arn:aws:lambda:<region>:<account>:function:<name>`, region and account taken from the
/// stream ARN.
pub fn function_arn(function: &str, stream_arn: &str) -> String {
    format!(
        "arn:aws:lambda:{}:{}:function:{function}",
        region_of(stream_arn),
        account_of(stream_arn)
    )
}

/// A stream record's `ApproximateCreationDateTime` as reported (no estimation), if any.
pub fn reported_creation_time(record: &Record) -> Option<DateTime<Utc>> {
    let at = record.dynamodb()?.approximate_creation_date_time()?;
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

/// One record of Lambda's DynamoDB event:
///
/// ```json
/// {"eventID": "..", "eventName": "INSERT|MODIFY|REMOVE", "eventVersion": "1.1",
///  "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
///  "dynamodb": {"ApproximateCreationDateTime": 1700000000, "Keys": {..}, "NewImage": {..},
///               "OldImage": {..}, "SequenceNumber": "..", "SizeBytes": 26,
///               "StreamViewType": "NEW_IMAGE"},
///  "eventSourceARN": "<stream arn>"}
/// ```
///
/// `NewImage` / `OldImage` appear only when the record has them (per `StreamViewType` and
/// event name); `userIdentity` only for TTL deletions. `awsRegion` is the stream ARN's region
/// ([`region_of`]). `ApproximateCreationDateTime` is whole epoch seconds: `created` when given
/// (the mapping's estimate, see [`estimate_creation_time`]), else the record's own value rounded
/// down to the second.
pub fn lambda_record(record: &Record, stream_arn: &str, created: Option<DateTime<Utc>>) -> Value {
    let mut dynamodb = Map::new();
    if let Some(change) = record.dynamodb() {
        if let Some(at) = created.or_else(|| reported_creation_time(record)) {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(at.timestamp()));
        }
        dynamodb.insert(
            "Keys".into(),
            change.keys().map(item_json).unwrap_or_else(|| json!({})),
        );
        if let Some(image) = change.new_image() {
            dynamodb.insert("NewImage".into(), item_json(image));
        }
        if let Some(image) = change.old_image() {
            dynamodb.insert("OldImage".into(), item_json(image));
        }
        if let Some(seq) = change.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(seq));
        }
        dynamodb.insert("SizeBytes".into(), json!(change.size_bytes().unwrap_or(0)));
        if let Some(view) = change.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    let mut out = Map::new();
    out.insert(
        "eventID".into(),
        json!(record.event_id().unwrap_or_default()),
    );
    out.insert(
        "eventName".into(),
        json!(record.event_name().map(|n| n.as_str()).unwrap_or_default()),
    );
    out.insert(
        "eventVersion".into(),
        json!(record.event_version().unwrap_or("1.1")),
    );
    out.insert("eventSource".into(), json!("aws:dynamodb"));
    out.insert("awsRegion".into(), json!(region_of(stream_arn)));
    out.insert("dynamodb".into(), Value::Object(dynamodb));
    out.insert("eventSourceARN".into(), json!(stream_arn));
    if let Some(identity) = record.user_identity() {
        out.insert(
            "userIdentity".into(),
            json!({
                "type": identity.r#type().unwrap_or_default(),
                "principalId": identity.principal_id().unwrap_or_default(),
            }),
        );
    }
    Value::Object(out)
}

/// Lambda's DynamoDB event for a batch of records (each built by [`lambda_record`]).
pub fn lambda_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

/// Lambda's DynamoDB event with tumbling-window properties (`DynamodbTimeWindowEvent`):
/// `Records` plus `window` (`start`/`end`, RFC 3339), `state`, `shardId`, `eventSourceARN`,
/// `isFinalInvokeForWindow` and `isWindowTerminatedEarly`.
pub fn window_event(records: Vec<Value>, window: &WindowProperties<'_>) -> Value {
    json!({
        "Records": records,
        "window": {
            "start": rfc3339(window.start),
            "end": rfc3339(window.end),
        },
        "state": window.state,
        "shardId": window.shard_id,
        "eventSourceARN": window.stream_arn,
        "isFinalInvokeForWindow": window.is_final,
        "isWindowTerminatedEarly": window.terminated_early,
    })
}

/// The tumbling-window part of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowProperties<'a> {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub state: &'a Value,
    pub shard_id: &'a str,
    pub stream_arn: &'a str,
    pub is_final: bool,
    pub terminated_early: bool,
}

/// RFC 3339 in UTC with a `Z`, seconds precision unless there is a fraction
/// (`2020-07-30T17:00:00Z`).
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The tumbling window `[start, end)` that holds `at`: windows are aligned to the Unix epoch
/// (60 s windows start at :00, 900 s windows at :00/:15/:30/:45). Millisecond arithmetic; a
/// zero `window` is treated as 1 ms.
pub fn window_bounds(at: DateTime<Utc>, window: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    let width = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
    let start_ms = at.timestamp_millis().div_euclid(width) * width;
    let start = DateTime::from_timestamp_millis(start_ms).unwrap_or(at);
    let end = DateTime::from_timestamp_millis(start_ms.saturating_add(width)).unwrap_or(at);
    (start, end)
}

/// The creation time the mapping uses for a record (for windows, record age and the event's
/// `ApproximateCreationDateTime`), rounded down to the second like DynamoDB's own.
///
/// `resolution` is how coarse the stream's `ApproximateCreationDateTime` is. Real DynamoDB
/// reports seconds (`resolution` <= 1 s: the reported value is used as is). DynamoDB Local
/// rounds it down to the minute, which would put every record of a short tumbling window in a
/// window that has already ended; there the time is estimated as the moment the mapping first
/// read the record, kept inside the reported interval `[reported, reported + resolution)` and
/// never before the previous record of the shard (`previous`), so windows never go backwards.
pub fn estimate_creation_time(
    reported: DateTime<Utc>,
    resolution: Duration,
    first_read: DateTime<Utc>,
    previous: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let estimate = if resolution <= Duration::from_secs(1) {
        reported
    } else {
        let span = chrono::Duration::from_std(resolution)
            .unwrap_or_else(|_| chrono::Duration::seconds(60))
            - chrono::Duration::milliseconds(1);
        let upper = reported + span;
        let mut estimate = first_read.clamp(reported, upper);
        if let Some(previous) = previous {
            if previous > estimate && previous <= upper {
                estimate = previous;
            }
        }
        estimate
    };
    DateTime::from_timestamp(estimate.timestamp(), 0).unwrap_or(estimate)
}

/// Parses a stream partial batch response (`{"batchItemFailures":[{"itemIdentifier":
/// "<SequenceNumber>"}]}`) with Lambda's rules, given the batch's sequence numbers in order.
///
/// `Ok(None)`: complete success (a `null` response, an object without `batchItemFailures`, or a
/// `null` / empty list). `Ok(Some(i))`: the records from index `i` on must be retried (`i` is
/// the lowest failed sequence number; Lambda checkpoints just before it). `Err(reason)`:
/// complete failure (not an object, `batchItemFailures` not a list, an entry without a
/// non-empty string `itemIdentifier`, or one that names no record of the batch).
pub fn batch_item_failures(
    response: &Value,
    sequence_numbers: &[&str],
) -> Result<Option<usize>, String> {
    let object = match response {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        other => return Err(format!("response is not a JSON object: {other}")),
    };
    let items = match object.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
    };
    let mut lowest: Option<usize> = None;
    for item in items {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => {
                return Err(format!(
                    "entry without a non-empty string itemIdentifier: {item}"
                ))
            }
        };
        let index = sequence_numbers
            .iter()
            .position(|seq| *seq == id.as_str())
            .ok_or_else(|| {
                format!("itemIdentifier {id:?} is not a sequence number of the batch")
            })?;
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    Ok(lowest)
}

/// The tumbling-window `state` of a function response: `Ok(object)`; `null` counts as `{}`.
/// `Err` when the response has no `state` (Lambda treats that as a failed invocation) or it is
/// not an object.
pub fn response_state(response: &Value) -> Result<Value, String> {
    match response.get("state") {
        Some(Value::Object(state)) => Ok(Value::Object(state.clone())),
        Some(Value::Null) => Ok(json!({})),
        Some(other) => Err(format!("state is not a JSON object: {other}")),
        None => Err("the response has no state (required with tumbling windows)".into()),
    }
}

/// What Lambda sends to a stream mapping's on-failure destination for a discarded batch (the
/// records themselves are not included, only where they are in the stream).
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    pub request_id: String,
    pub function_arn: String,
    /// `RetryAttemptsExhausted` or `RecordAgeExceeded`.
    pub condition: String,
    /// How many invocations included these records.
    pub approximate_invoke_count: u32,
    pub status_code: u16,
    /// `Unhandled` when the last invocation failed; `None` when the function answered (with
    /// item failures or an invalid response) or was never invoked.
    pub function_error: Option<String>,
    pub shard_id: String,
    pub stream_arn: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub first_arrival: DateTime<Utc>,
    pub last_arrival: DateTime<Utc>,
    pub batch_size: usize,
    pub timestamp: DateTime<Utc>,
}

impl FailureRecord {
    /// ```json
    /// {"requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
    ///  "responseContext": {"statusCode", "executedVersion": "$LATEST", "functionError"?},
    ///  "version": "1.0", "timestamp": "2019-11-14T00:13:49.717Z",
    ///  "DDBStreamBatchInfo": {"shardId", "startSequenceNumber", "endSequenceNumber",
    ///    "approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord", "batchSize",
    ///    "streamArn"}}
    /// ```
    pub fn to_json(&self) -> Value {
        let mut response = Map::new();
        response.insert("statusCode".into(), json!(self.status_code));
        response.insert("executedVersion".into(), json!("$LATEST"));
        if let Some(error) = &self.function_error {
            response.insert("functionError".into(), json!(error));
        }
        json!({
            "requestContext": {
                "requestId": self.request_id,
                "functionArn": self.function_arn,
                "condition": self.condition,
                "approximateInvokeCount": self.approximate_invoke_count,
            },
            "responseContext": Value::Object(response),
            "version": "1.0",
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": self.start_sequence_number,
                "endSequenceNumber": self.end_sequence_number,
                "approximateArrivalOfFirstRecord": self.first_arrival.to_rfc3339_opts(SecondsFormat::Secs, true),
                "approximateArrivalOfLastRecord": self.last_arrival.to_rfc3339_opts(SecondsFormat::Secs, true),
                "batchSize": self.batch_size,
                "streamArn": self.stream_arn,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::DateTime as SmithyDateTime;
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    fn at(s: &str) -> anyhow::Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() -> anyhow::Result<()> {
        let minute = Duration::from_secs(60);
        assert_eq!(
            window_bounds(at("2024-05-01T12:34:56.789Z")?, minute),
            (at("2024-05-01T12:34:00Z")?, at("2024-05-01T12:35:00Z")?)
        );
        // The start belongs to the window, the end to the next one.
        assert_eq!(
            window_bounds(at("2024-05-01T12:35:00Z")?, minute).0,
            at("2024-05-01T12:35:00Z")?
        );
        assert_eq!(
            window_bounds(at("2024-05-01T12:34:59.999Z")?, minute).1,
            at("2024-05-01T12:35:00Z")?
        );
        // 15-minute windows start at :00, :15, :30, :45.
        assert_eq!(
            window_bounds(at("2024-05-01T12:44:59Z")?, Duration::from_secs(900)),
            (at("2024-05-01T12:30:00Z")?, at("2024-05-01T12:45:00Z")?)
        );
        // Short windows: 2 s windows start at even seconds, 3 s ones at multiples of 3.
        assert_eq!(
            window_bounds(at("2024-05-01T12:00:07.5Z")?, Duration::from_secs(2)),
            (at("2024-05-01T12:00:06Z")?, at("2024-05-01T12:00:08Z")?)
        );
        assert_eq!(
            window_bounds(at("2024-05-01T12:00:07.5Z")?, Duration::from_secs(3)),
            (at("2024-05-01T12:00:06Z")?, at("2024-05-01T12:00:09Z")?)
        );
        // 7 s windows do not align with minutes, only with the epoch.
        let (start, end) = window_bounds(at("2024-05-01T12:00:00Z")?, Duration::from_secs(7));
        assert_eq!(start.timestamp() % 7, 0);
        assert_eq!((end - start).num_seconds(), 7);
        assert!(start <= at("2024-05-01T12:00:00Z")? && at("2024-05-01T12:00:00Z")? < end);
        assert_eq!(rfc3339(start), "2024-05-01T11:59:56Z"); // 1714564800 % 7 == 4
        Ok(())
    }

    #[test]
    fn creation_time_estimates() -> anyhow::Result<()> {
        let minute = Duration::from_secs(60);
        let second = Duration::from_secs(1);
        let reported = at("2024-05-01T12:34:00Z")?;
        // Second resolution (real DynamoDB): the reported time, whatever the read time.
        assert_eq!(
            estimate_creation_time(
                at("2024-05-01T12:34:07.4Z")?,
                second,
                at("2024-05-01T13:00:00Z")?,
                None
            ),
            at("2024-05-01T12:34:07Z")?
        );
        // Minute resolution (DynamoDB Local): the read time, rounded down to the second...
        assert_eq!(
            estimate_creation_time(reported, minute, at("2024-05-01T12:34:17.9Z")?, None),
            at("2024-05-01T12:34:17Z")?
        );
        // ...but never after the reported minute (a backlog read later)...
        assert_eq!(
            estimate_creation_time(reported, minute, at("2024-05-01T12:50:00Z")?, None),
            at("2024-05-01T12:34:59Z")?
        );
        // ...nor before it (clock skew)...
        assert_eq!(
            estimate_creation_time(reported, minute, at("2024-05-01T12:33:59Z")?, None),
            reported
        );
        // ...nor before the previous record of the shard.
        assert_eq!(
            estimate_creation_time(
                reported,
                minute,
                at("2024-05-01T12:34:10Z")?,
                Some(at("2024-05-01T12:34:20Z")?)
            ),
            at("2024-05-01T12:34:20Z")?
        );
        Ok(())
    }

    #[test]
    fn partial_batch_responses() {
        let seqs = ["100", "200", "300"];
        assert_eq!(batch_item_failures(&Value::Null, &seqs), Ok(None));
        assert_eq!(batch_item_failures(&json!({}), &seqs), Ok(None));
        assert_eq!(batch_item_failures(&json!({"state": {}}), &seqs), Ok(None));
        assert_eq!(
            batch_item_failures(&json!({"batchItemFailures": null}), &seqs),
            Ok(None)
        );
        assert_eq!(
            batch_item_failures(&json!({"batchItemFailures": []}), &seqs),
            Ok(None)
        );
        assert_eq!(
            batch_item_failures(
                &json!({"batchItemFailures": [{"itemIdentifier": "300"}, {"itemIdentifier": "200"}]}),
                &seqs
            ),
            Ok(Some(1))
        );
        for bad in [
            json!("ok"),
            json!({"batchItemFailures": {}}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemIdentifier": 200}]}),
            json!({"batchItemFailures": [{"itemId": "200"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "999"}]}),
        ] {
            assert!(batch_item_failures(&bad, &seqs).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_response_state() {
        assert_eq!(
            response_state(&json!({"state": {"a": "1"}})),
            Ok(json!({"a": "1"}))
        );
        assert_eq!(response_state(&json!({"state": null})), Ok(json!({})));
        assert!(response_state(&json!({"batchItemFailures": []})).is_err());
        assert!(response_state(&json!({"state": "x"})).is_err());
        assert!(response_state(&Value::Null).is_err());
    }

    #[test]
    fn arns() {
        let local = "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/2024-01-01T00:00:00.000";
        assert_eq!(region_of(local), "us-east-1");
        assert_eq!(
            function_arn("Rollup", local),
            "arn:aws:lambda:us-east-1:000000000000:function:Rollup"
        );
        let real = "arn:aws:dynamodb:eu-west-1:111122223333:table/t/stream/2024";
        assert_eq!(
            function_arn("f", real),
            "arn:aws:lambda:eu-west-1:111122223333:function:f"
        );
        assert_eq!(
            function_arn("f", "stream"),
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
    }

    #[test]
    fn attribute_values_in_dynamodb_json() {
        let item = HashMap::from([
            ("s".to_owned(), AttributeValue::S("x".into())),
            ("n".to_owned(), AttributeValue::N("1.5".into())),
            ("b".to_owned(), AttributeValue::B(Blob::new(vec![1u8, 2]))),
            (
                "ss".to_owned(),
                AttributeValue::Ss(vec!["a".into(), "b".into()]),
            ),
            ("ns".to_owned(), AttributeValue::Ns(vec!["1".into()])),
            (
                "bs".to_owned(),
                AttributeValue::Bs(vec![Blob::new(vec![255u8])]),
            ),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([(
                    "l".to_owned(),
                    AttributeValue::L(vec![
                        AttributeValue::Null(true),
                        AttributeValue::Bool(false),
                    ]),
                )])),
            ),
        ]);
        assert_eq!(
            item_json(&item),
            json!({
                "s": {"S": "x"}, "n": {"N": "1.5"}, "b": {"B": "AQI="},
                "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1"]}, "bs": {"BS": ["/w=="]},
                "m": {"M": {"l": {"L": [{"NULL": true}, {"BOOL": false}]}}}
            })
        );
    }

    #[test]
    fn record_shape_matches_the_aws_example() -> anyhow::Result<()> {
        // The MODIFY record of the example event in AWS's "Using AWS Lambda with Amazon
        // DynamoDB" guide, plus the ApproximateCreationDateTime every real record carries.
        let expected = json!({
            "eventID": "2",
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-west-2",
            "dynamodb": {
                "ApproximateCreationDateTime": 1479499740,
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
                "OldImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "SequenceNumber": "222",
                "SizeBytes": 59,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-west-2:111122223333:table/TestTable/stream/2015-05-11T21:21:33.291"
        });
        let id = AttributeValue::N("101".into());
        let record = Record::builder()
            .event_id("2")
            .event_name(OperationType::Modify)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-west-2")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(SmithyDateTime::from_secs(1479499740))
                    .keys("Id", id.clone())
                    .new_image("Message", AttributeValue::S("This item has changed".into()))
                    .new_image("Id", id.clone())
                    .old_image("Message", AttributeValue::S("New item!".into()))
                    .old_image("Id", id)
                    .sequence_number("222")
                    .size_bytes(59)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build();
        let arn = "arn:aws:dynamodb:us-west-2:111122223333:table/TestTable/stream/2015-05-11T21:21:33.291";
        assert_eq!(lambda_record(&record, arn, None), expected);
        // An estimated creation time replaces the reported one.
        let estimated =
            DateTime::from_timestamp(1479499777, 0).ok_or_else(|| anyhow::anyhow!("time"))?;
        assert_eq!(
            lambda_record(&record, arn, Some(estimated))["dynamodb"]["ApproximateCreationDateTime"],
            json!(1479499777)
        );
        Ok(())
    }

    #[test]
    fn window_event_shape() -> anyhow::Result<()> {
        let state = json!({"1": "state1"});
        let event = window_event(
            vec![json!({"eventID": "1"})],
            &WindowProperties {
                start: at("2020-07-30T17:00:00Z")?,
                end: at("2020-07-30T17:05:00Z")?,
                state: &state,
                shard_id: "shard123456789",
                stream_arn: "stream-ARN",
                is_final: false,
                terminated_early: false,
            },
        );
        // The DynamodbTimeWindowEvent example of AWS's guide, records elided.
        assert_eq!(
            event,
            json!({
                "Records": [{"eventID": "1"}],
                "window": {"start": "2020-07-30T17:00:00Z", "end": "2020-07-30T17:05:00Z"},
                "state": {"1": "state1"},
                "shardId": "shard123456789",
                "eventSourceARN": "stream-ARN",
                "isFinalInvokeForWindow": false,
                "isWindowTerminatedEarly": false
            })
        );
        Ok(())
    }

    #[test]
    fn failure_record_shape() -> anyhow::Result<()> {
        let record = FailureRecord {
            request_id: "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81".into(),
            function_arn: "arn:aws:lambda:us-east-2:123456789012:function:myfunction".into(),
            condition: "RetryAttemptsExhausted".into(),
            approximate_invoke_count: 1,
            status_code: 200,
            function_error: Some("Unhandled".into()),
            shard_id: "shardId-00000001573689847184-864758bb".into(),
            stream_arn: "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388".into(),
            start_sequence_number: "800000000003126276362".into(),
            end_sequence_number: "800000000003126276362".into(),
            first_arrival: at("2019-11-14T00:13:19Z")?,
            last_arrival: at("2019-11-14T00:13:19Z")?,
            batch_size: 1,
            timestamp: at("2019-11-14T00:13:49.717Z")?,
        };
        // The invocation record example of AWS's guide, verbatim.
        let expected = json!({
            "requestContext": {
                "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 1
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled"
            },
            "version": "1.0",
            "timestamp": "2019-11-14T00:13:49.717Z",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-00000001573689847184-864758bb",
                "startSequenceNumber": "800000000003126276362",
                "endSequenceNumber": "800000000003126276362",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
                "batchSize": 1,
                "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"
            }
        });
        assert_eq!(record.to_json(), expected);
        Ok(())
    }
}
