//! What one request and its answer bill, service by service, the way AWS's price lists count.

use serde_json::Value;

use super::Unit;

/// The emulator behind a metering proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    /// moto: SQS, Firehose and Secrets Manager (AWS JSON, named by `X-Amz-Target`) and S3 (REST).
    Moto,
    EventBridge,
    /// The local HTTP API, in front of the functions.
    HttpApi,
}

/// One request and the answer to it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub method: &'a str,
    /// `X-Amz-Target`, for the AWS JSON protocols.
    pub target: Option<&'a str>,
    pub request: &'a [u8],
    pub status: u16,
    pub response: &'a [u8],
}

/// SQS and EventBridge bill each 64 KB chunk of a payload as one request or event.
const CHUNK_64K: usize = 64 * 1024;
/// HTTP APIs meter requests in 512 KB increments.
const CHUNK_512K: usize = 512 * 1024;
/// Firehose rounds every record up to the next 5 KB.
const FIREHOSE_RECORD_ROUNDING: usize = 5 * 1024;

const DYNAMODB_READS: &[&str] = &[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
];
const DYNAMODB_WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

fn operation(target: Option<&str>) -> &str {
    target
        .and_then(|t| t.rsplit_once('.'))
        .map_or("", |(_, op)| op)
}

/// The request with `ReturnConsumedCapacity: INDEXES`, for a DynamoDB data-plane call, so the
/// answer gives each table's and index's units. `None` leaves the request as it is.
pub fn ask_for_index_capacity(target: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    let op = operation(target);
    if !DYNAMODB_READS.contains(&op) && !DYNAMODB_WRITES.contains(&op) {
        return None;
    }
    let mut request: Value = serde_json::from_slice(body).ok()?;
    request
        .as_object_mut()?
        .insert("ReturnConsumedCapacity".into(), "INDEXES".into());
    serde_json::to_vec(&request).ok()
}

/// The units `exchange` bills on `service`.
pub fn units(service: Service, exchange: &Exchange<'_>) -> Vec<(Unit, f64)> {
    match service {
        Service::DynamoDb => dynamodb(exchange),
        Service::Moto => match exchange.target {
            Some("AmazonSQS.ReceiveMessage") if !has_messages(exchange.response) => {
                vec![(Unit::SqsEmptyReceives, 1.0)]
            }
            Some(t) if t.starts_with("AmazonSQS.") => vec![(
                Unit::SqsRequests,
                chunks(
                    exchange.request.len().max(exchange.response.len()),
                    CHUNK_64K,
                ),
            )],
            Some(t) if t.starts_with("Firehose_") => firehose(exchange),
            Some(t) if t.starts_with("secretsmanager.") => {
                vec![(Unit::SecretsManagerCalls, 1.0)]
            }
            Some(t) => vec![(Unit::Unpriced(t.to_owned()), 1.0)],
            None => vec![(s3_tier(exchange.method), 1.0)],
        },
        Service::EventBridge => eventbridge(exchange),
        Service::HttpApi => vec![(
            Unit::ApiRequests,
            chunks(exchange.request.len(), CHUNK_512K),
        )],
    }
}

fn has_messages(response: &[u8]) -> bool {
    serde_json::from_slice::<Value>(response)
        .ok()
        .and_then(|r| r["Messages"].as_array().map(|m| !m.is_empty()))
        .unwrap_or(false)
}

/// At least one unit, one more for every started `size` bytes past the first.
fn chunks(bytes: usize, size: usize) -> f64 {
    bytes.div_ceil(size).max(1) as f64
}

fn s3_tier(method: &str) -> Unit {
    match method {
        "PUT" | "POST" | "COPY" => Unit::S3Tier1,
        // LIST is a GET on the bucket; it is billed like a PUT. Counted as a GET here: the
        // functions never list.
        _ => Unit::S3Tier2,
    }
}

fn dynamodb(exchange: &Exchange<'_>) -> Vec<(Unit, f64)> {
    let op = operation(exchange.target);
    let write = DYNAMODB_WRITES.contains(&op);
    if !write && !DYNAMODB_READS.contains(&op) {
        return vec![(Unit::Unpriced(format!("dynamodb:{op}")), 1.0)];
    }
    let unit = |table: String| {
        if write {
            Unit::DynamoWrite(table)
        } else {
            Unit::DynamoRead(table)
        }
    };
    let response: Value = serde_json::from_slice(exchange.response).unwrap_or(Value::Null);
    if exchange.status >= 400 {
        return failed_write(op, exchange.request, &response)
            .into_iter()
            .map(|(table, units)| (unit(table), units))
            .collect();
    }
    let capacity = match &response["ConsumedCapacity"] {
        Value::Array(list) => list.clone(),
        Value::Object(_) => vec![response["ConsumedCapacity"].clone()],
        _ => Vec::new(),
    };
    let mut units = Vec::new();
    for c in &capacity {
        let Some(table) = c["TableName"].as_str() else {
            continue;
        };
        let Some(base) = c["Table"]["CapacityUnits"].as_f64() else {
            // Only the total: everything on the table.
            units.push((
                unit(table.to_owned()),
                c["CapacityUnits"].as_f64().unwrap_or(0.0),
            ));
            continue;
        };
        units.push((unit(table.to_owned()), base));
        for kind in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
            for (index, c) in c[kind].as_object().into_iter().flatten() {
                let amount = c["CapacityUnits"].as_f64().unwrap_or(0.0);
                units.push((unit(format!("{table}/{index}")), amount));
            }
        }
    }
    units
}

/// A refused write is billed although its answer reports nothing: a failed condition costs
/// at least one write unit, a cancelled transaction two per item (its prepare phase). Estimated
/// from the request, at the minimum item size.
fn failed_write(op: &str, request: &[u8], response: &Value) -> Vec<(String, f64)> {
    let error = response["__type"].as_str().unwrap_or_default();
    let request: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    if error.ends_with("ConditionalCheckFailedException") {
        return request["TableName"]
            .as_str()
            .map(|t| vec![(t.to_owned(), 1.0)])
            .unwrap_or_default();
    }
    if error.ends_with("TransactionCanceledException") && op == "TransactWriteItems" {
        return request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                item.as_object()?
                    .values()
                    .find_map(|action| action["TableName"].as_str())
                    .map(|t| (t.to_owned(), 2.0))
            })
            .collect();
    }
    Vec::new()
}

fn firehose(exchange: &Exchange<'_>) -> Vec<(Unit, f64)> {
    let request: Value = serde_json::from_slice(exchange.request).unwrap_or(Value::Null);
    let records: Vec<&Value> = match operation(exchange.target) {
        "PutRecordBatch" => request["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        "PutRecord" => vec![&request["Record"]],
        op => return vec![(Unit::Unpriced(format!("firehose:{op}")), 1.0)],
    };
    let billed: usize = records
        .iter()
        .filter_map(|r| r["Data"].as_str())
        .map(|data| decoded_len(data).div_ceil(FIREHOSE_RECORD_ROUNDING) * FIREHOSE_RECORD_ROUNDING)
        .sum();
    vec![(Unit::FirehoseBytes, billed as f64)]
}

/// The length of base64 `data` once decoded.
fn decoded_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

fn eventbridge(exchange: &Exchange<'_>) -> Vec<(Unit, f64)> {
    if operation(exchange.target) != "PutEvents" {
        return vec![(Unit::Unpriced("events:other".into()), 1.0)];
    }
    let request: Value = serde_json::from_slice(exchange.request).unwrap_or(Value::Null);
    let events: f64 = request["Entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| chunks(entry.to_string().len(), CHUNK_64K))
        .sum();
    vec![(Unit::EventBridgeEvents, events)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exchange<'a>(
        target: &'a str,
        request: &'a [u8],
        status: u16,
        response: &'a [u8],
    ) -> Exchange<'a> {
        Exchange {
            method: "POST",
            target: Some(target),
            request,
            status,
            response,
        }
    }

    #[test]
    fn dynamodb_requests_ask_for_capacity_by_index() {
        let body = br#"{"TableName":"events","Item":{}}"#;
        let rewritten = ask_for_index_capacity(Some("DynamoDB_20120810.PutItem"), body)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        assert_eq!(
            rewritten,
            Some(json!({"TableName": "events", "Item": {}, "ReturnConsumedCapacity": "INDEXES"}))
        );
        assert_eq!(
            ask_for_index_capacity(Some("DynamoDB_20120810.DescribeTable"), body),
            None
        );
    }

    #[test]
    fn dynamodb_units_are_split_by_table_and_index() {
        let response = json!({"ConsumedCapacity": [
            {"TableName": "events", "CapacityUnits": 4.0, "Table": {"CapacityUnits": 2.0},
             "GlobalSecondaryIndexes": {"byLead": {"CapacityUnits": 1.0}, "byHourShard": {"CapacityUnits": 1.0}}},
            {"TableName": "analytics", "CapacityUnits": 2.0}
        ]})
        .to_string();
        let units = dynamodb(&exchange(
            "DynamoDB_20120810.TransactWriteItems",
            b"{}",
            200,
            response.as_bytes(),
        ));
        assert_eq!(
            units,
            vec![
                (Unit::DynamoWrite("events".into()), 2.0),
                (Unit::DynamoWrite("events/byHourShard".into()), 1.0),
                (Unit::DynamoWrite("events/byLead".into()), 1.0),
                (Unit::DynamoWrite("analytics".into()), 2.0),
            ]
        );
        let query =
            json!({"ConsumedCapacity": {"TableName": "events", "CapacityUnits": 0.5}}).to_string();
        assert_eq!(
            dynamodb(&exchange(
                "DynamoDB_20120810.Query",
                b"{}",
                200,
                query.as_bytes()
            )),
            vec![(Unit::DynamoRead("events".into()), 0.5)]
        );
    }

    #[test]
    fn refused_writes_are_still_billed() {
        let failed =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}"#;
        assert_eq!(
            dynamodb(&exchange(
                "DynamoDB_20120810.PutItem",
                br#"{"TableName":"events"}"#,
                400,
                failed
            )),
            vec![(Unit::DynamoWrite("events".into()), 1.0)]
        );
        let cancelled =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException"}"#;
        let request = json!({"TransactItems": [
            {"Put": {"TableName": "analytics"}}, {"Update": {"TableName": "analytics"}}
        ]})
        .to_string();
        let units = dynamodb(&exchange(
            "DynamoDB_20120810.TransactWriteItems",
            request.as_bytes(),
            400,
            cancelled,
        ));
        assert_eq!(units.iter().map(|(_, n)| n).sum::<f64>(), 4.0);
        let throttled = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}"#;
        assert!(dynamodb(&exchange(
            "DynamoDB_20120810.PutItem",
            b"{}",
            400,
            throttled
        ))
        .is_empty());
    }

    #[test]
    fn sqs_counts_64k_chunks_of_the_larger_payload() {
        let small = vec![b'x'; 1_000];
        let large = vec![b'x'; 200 * 1024];
        let units = |req: &[u8], resp: &[u8]| {
            super::units(
                Service::Moto,
                &exchange("AmazonSQS.SendMessageBatch", req, 200, resp),
            )
        };
        assert_eq!(units(&small, &small), vec![(Unit::SqsRequests, 1.0)]);
        let receive = |resp: &[u8]| {
            super::units(
                Service::Moto,
                &exchange("AmazonSQS.ReceiveMessage", b"{}", 200, resp),
            )
        };
        assert_eq!(receive(b"{}"), vec![(Unit::SqsEmptyReceives, 1.0)]);
        assert_eq!(
            receive(br#"{"Messages":[{"Body":"x"}]}"#),
            vec![(Unit::SqsRequests, 1.0)]
        );
        assert_eq!(units(&large, &small), vec![(Unit::SqsRequests, 4.0)]);
        assert_eq!(units(&small, &large), vec![(Unit::SqsRequests, 4.0)]);
    }

    #[test]
    fn firehose_rounds_each_record_up_to_5k() {
        use base64::Engine as _;
        let encode = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![b'a'; n]);
        let request = json!({"Records": [{"Data": encode(1)}, {"Data": encode(5120)}, {"Data": encode(5121)}]}).to_string();
        let units = super::units(
            Service::Moto,
            &exchange(
                "Firehose_20150804.PutRecordBatch",
                request.as_bytes(),
                200,
                b"{}",
            ),
        );
        assert_eq!(units, vec![(Unit::FirehoseBytes, (5120 * 4) as f64)]);
    }

    #[test]
    fn s3_eventbridge_and_the_http_api() {
        let put = Exchange {
            method: "PUT",
            target: None,
            request: b"data",
            status: 200,
            response: b"",
        };
        assert_eq!(units(Service::Moto, &put), vec![(Unit::S3Tier1, 1.0)]);
        let entries =
            json!({"Entries": [{"Detail": "{}"}, {"Detail": "x".repeat(70_000)}]}).to_string();
        assert_eq!(
            units(
                Service::EventBridge,
                &exchange("AWSEvents.PutEvents", entries.as_bytes(), 200, b"{}")
            ),
            vec![(Unit::EventBridgeEvents, 3.0)]
        );
        let body = vec![b'x'; 600 * 1024];
        assert_eq!(
            units(
                Service::HttpApi,
                &Exchange {
                    method: "POST",
                    target: None,
                    request: &body,
                    status: 202,
                    response: b""
                }
            ),
            vec![(Unit::ApiRequests, 2.0)]
        );
    }
}
