//! The DynamoDB Streams event-source mapping against real DynamoDB Local (the template's
//! `EventsTable`, NEW_IMAGE stream) and moto (the template's `DeadLetterQueue` as the on-failure
//! destination), with a fake function that records events and scripts responses.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::sources::{OnFailure, StartingPosition, StreamMapping, StreamPoller};
use tally_local::{sdk_config, QueueInfo, Stack};

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Fixture {
    stack: Stack,
    table: String,
    stream_arn: String,
    streams: aws_sdk_dynamodbstreams::Client,
    dlq: QueueInfo,
}

async fn fixture(name: &str) -> Result<Fixture> {
    let stack = Stack::provision(name).await?;
    let table = stack.table("EventsTable")?.to_owned();
    let described = stack
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await?;
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .context("EventsTable has no stream")?
        .to_owned();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk_config(&stack.dynamodb_endpoint));
    let dlq = stack.queue("DeadLetterQueue")?.clone();
    Ok(Fixture {
        stack,
        table,
        stream_arn,
        streams,
        dlq,
    })
}

impl Fixture {
    /// `TRIM_HORIZON`, fast retries and polling.
    fn mapping(&self) -> StreamMapping {
        let mut mapping = StreamMapping::new("RollupFunction", &self.stream_arn);
        mapping.starting_position = StartingPosition::TrimHorizon;
        mapping.retry_backoff = Duration::from_millis(20);
        mapping.poll_interval = Duration::from_millis(100);
        mapping
    }

    fn on_failure(&self) -> OnFailure {
        OnFailure {
            queue_url: self.dlq.url.clone(),
            queue_arn: self.dlq.arn.clone(),
        }
    }

    fn start(&self, mapping: StreamMapping, fake: &Arc<Fake>) -> StreamPoller {
        let invoker: Arc<dyn Invoker> = fake.clone();
        StreamPoller::start(
            self.streams.clone(),
            self.stack.sqs.clone(),
            mapping,
            invoker,
        )
    }

    /// Puts `{eventId: id, n: n}` (INSERT, or MODIFY when it exists).
    async fn put(&self, id: &str, n: u32) -> Result<()> {
        self.stack
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("eventId", AttributeValue::S(id.into()))
            .item("n", AttributeValue::N(n.to_string()))
            .send()
            .await?;
        Ok(())
    }

    async fn put_all(&self, ids: &[&str]) -> Result<()> {
        for (n, id) in ids.iter().enumerate() {
            self.put(id, u32::try_from(n)?).await?;
        }
        Ok(())
    }

    /// Receives `count` failure records from the dead-letter queue.
    async fn failure_records(&self, count: usize) -> Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < count {
            if Instant::now() > deadline {
                bail!("only {} of {count} failure records arrived", out.len());
            }
            let received = self
                .stack
                .sqs
                .receive_message()
                .queue_url(&self.dlq.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            for message in received.messages() {
                out.push(serde_json::from_str(message.body().unwrap_or_default())?);
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// A fake function

type Script = dyn Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync;

struct Fake {
    calls: Mutex<Vec<Value>>,
    script: Box<Script>,
    /// How long each invocation takes.
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    /// `script(event, index of the call)` answers each invocation.
    fn new(
        script: impl Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Self::slow(Duration::ZERO, script)
    }

    /// Like [`Fake::new`], each invocation taking `delay`.
    fn slow(
        delay: Duration,
        script: impl Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            calls: Mutex::new(Vec::new()),
            script: Box::new(script),
            delay,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every record delivered, in delivery order (redeliveries included).
    fn records(&self) -> Vec<Value> {
        self.calls()
            .iter()
            .flat_map(|call| records(call).to_vec())
            .collect()
    }
}

#[async_trait]
impl Invoker for Fake {
    async fn invoke(&self, _function: &str, event: Value) -> Result<Value, InvokeError> {
        let index = {
            let mut calls = self
                .calls
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            calls.push(event.clone());
            calls.len() - 1
        };
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        (self.script)(&event, index)
    }
}

fn function_error() -> InvokeError {
    InvokeError::FunctionError {
        error_type: "Poison".into(),
        error_message: "cannot process this record".into(),
    }
}

fn records(event: &Value) -> &[Value] {
    event["Records"].as_array().map_or(&[], Vec::as_slice)
}

/// The `eventId`s of an event's records.
fn ids(event: &Value) -> Vec<String> {
    records(event).iter().map(record_id).collect()
}

fn record_id(record: &Value) -> String {
    record["dynamodb"]["Keys"]["eventId"]["S"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn seq(record: &Value) -> String {
    record["dynamodb"]["SequenceNumber"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn strs(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Numeric order of DynamoDB sequence numbers (decimal strings).
fn seq_less(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

fn time(value: &Value) -> Result<DateTime<Utc>> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("not a string: {value}"))?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Delivery and shape

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_records_in_order_in_lambdas_shape() -> Result<()> {
    let started = Utc::now();
    let fx = fixture("streams_shape").await?;
    let fake = Fake::new(|_, _| Ok(Value::Null));
    let poller = fx.start(fx.mapping(), &fake);

    let item = [
        ("eventId", AttributeValue::S("e0".into())),
        ("kind", AttributeValue::S("page_view".into())),
        ("n", AttributeValue::N("42".into())),
        ("tags", AttributeValue::Ss(vec!["a".into(), "b".into()])),
        ("scores", AttributeValue::Ns(vec!["1.5".into()])),
        (
            "meta",
            AttributeValue::M(
                [(
                    "list".to_owned(),
                    AttributeValue::L(vec![
                        AttributeValue::S("x".into()),
                        AttributeValue::N("1".into()),
                        AttributeValue::Null(true),
                        AttributeValue::Bool(false),
                    ]),
                )]
                .into(),
            ),
        ),
        (
            "raw",
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![1u8, 2, 3])),
        ),
    ];
    let mut put = fx.stack.dynamodb.put_item().table_name(&fx.table);
    for (name, value) in item {
        put = put.item(name, value);
    }
    put.send().await?;
    fx.put("e0", 43).await?; // MODIFY
    fx.put("e1", 1).await?; // INSERT
    fx.stack
        .dynamodb
        .delete_item()
        .table_name(&fx.table)
        .key("eventId", AttributeValue::S("e1".into()))
        .send()
        .await?; // REMOVE

    wait_until("4 records", Duration::from_secs(20), || {
        fake.records().len() >= 4
    })
    .await?;
    let stats = poller.stop().await;
    let delivered = fake.records();
    assert_eq!(delivered.len(), 4, "{delivered:#?}");
    let names: Vec<&str> = delivered
        .iter()
        .map(|r| r["eventName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "INSERT", "REMOVE"]);
    let order: Vec<String> = delivered.iter().map(record_id).collect();
    assert_eq!(order, strs(&["e0", "e0", "e1", "e1"]));
    for pair in delivered.windows(2) {
        assert!(
            seq_less(&seq(&pair[0]), &seq(&pair[1])),
            "out of order: {pair:#?}"
        );
    }

    // The first record, exactly; dynamic values copied from what was delivered.
    let first = &delivered[0];
    let created = first["dynamodb"]["ApproximateCreationDateTime"]
        .as_i64()
        .ok_or_else(|| anyhow!("ApproximateCreationDateTime is not an integer: {first}"))?;
    assert!(
        (started.timestamp() - 1..=Utc::now().timestamp() + 1).contains(&created),
        "ApproximateCreationDateTime {created} is not about now"
    );
    let expected = json!({
        "eventID": first["eventID"],
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": {"eventId": {"S": "e0"}},
            "NewImage": {
                "eventId": {"S": "e0"},
                "kind": {"S": "page_view"},
                "n": {"N": "42"},
                "tags": {"SS": ["a", "b"]},
                "scores": {"NS": ["1.5"]},
                "meta": {"M": {"list": {"L": [{"S": "x"}, {"N": "1"}, {"NULL": true}, {"BOOL": false}]}}},
                "raw": {"B": "AQID"}
            },
            "SequenceNumber": first["dynamodb"]["SequenceNumber"],
            "SizeBytes": first["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": fx.stream_arn,
    });
    assert_eq!(first, &expected);
    assert!(first["eventID"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(first["dynamodb"]["SizeBytes"]
        .as_i64()
        .is_some_and(|n| n > 0));

    // The same fields as the example record of AWS's guide ("Using AWS Lambda with Amazon
    // DynamoDB"), minus OldImage (a NEW_IMAGE stream), plus ApproximateCreationDateTime.
    let aws_example = json!({
        "eventID": "1",
        "eventVersion": "1.0",
        "dynamodb": {
            "ApproximateCreationDateTime": 1479499740,
            "Keys": {"Id": {"N": "101"}},
            "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "SequenceNumber": "111",
            "SizeBytes": 26
        },
        "awsRegion": "us-west-2",
        "eventName": "INSERT",
        "eventSourceARN": "arn:aws:dynamodb:us-west-2:111122223333:table/TestTable/stream/2015-05-11T21:21:33.291",
        "eventSource": "aws:dynamodb"
    });
    for record in &delivered[..3] {
        assert_eq!(keys(record), keys(&aws_example));
        assert_eq!(keys(&record["dynamodb"]), keys(&aws_example["dynamodb"]));
    }
    // REMOVE on a NEW_IMAGE stream: keys only.
    assert_eq!(
        keys(&delivered[3]["dynamodb"]),
        keys(
            &json!({"ApproximateCreationDateTime": 0, "Keys": 0, "SequenceNumber": 0, "SizeBytes": 0, "StreamViewType": 0})
        )
    );
    assert_eq!(
        delivered[1]["dynamodb"]["NewImage"]["n"],
        json!({"N": "43"})
    );

    assert_eq!(stats.records_delivered, 4);
    assert_eq!(stats.invocations, u64::try_from(fake.calls().len())?);
    assert_eq!((stats.retries, stats.discarded_batches), (0, 0));
    assert_eq!(stats.shards_opened, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_is_respected() -> Result<()> {
    let fx = fixture("streams_batch").await?;
    fx.put_all(&["e0", "e1", "e2", "e3", "e4", "e5", "e6"])
        .await?;
    let fake = Fake::new(|_, _| Ok(json!({})));
    let mut mapping = fx.mapping();
    mapping.batch_size = 3;
    let poller = fx.start(mapping, &fake);
    wait_until("7 records", Duration::from_secs(20), || {
        fake.records().len() >= 7
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = poller.stop().await;
    let batches: Vec<Vec<String>> = fake.calls().iter().map(ids).collect();
    assert_eq!(
        batches,
        [
            strs(&["e0", "e1", "e2"]),
            strs(&["e3", "e4", "e5"]),
            strs(&["e6"])
        ]
    );
    assert_eq!((stats.invocations, stats.records_delivered), (3, 7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelization_factor_runs_batches_of_a_shard_at_once_in_key_order() -> Result<()> {
    let fx = fixture("streams_parallel").await?;
    // Six items written four times each, interleaved: 24 records of one shard.
    for version in 0..4u32 {
        for key in 0..6 {
            fx.put(&format!("k{key}"), version).await?;
        }
    }
    let fx = &fx;
    let run = |factor: u32| async move {
        let fake = Fake::slow(Duration::from_millis(150), |_, _| Ok(json!({})));
        let mut mapping = fx.mapping();
        mapping.batch_size = 2;
        mapping.parallelization_factor = factor;
        let poller = fx.start(mapping, &fake);
        wait_until("24 records", Duration::from_secs(30), || {
            fake.records().len() >= 24
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = poller.stop().await;
        anyhow::Ok((fake, stats))
    };

    let (fake, stats) = run(3).await?;
    let at_once = fake.max_running.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&at_once),
        "{at_once} batches at once with factor 3"
    );
    assert_eq!(stats.records_delivered, 24, "each record once");
    // Each item's versions arrive in the order they were written.
    let mut versions: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for record in fake.records() {
        let n = record["dynamodb"]["NewImage"]["n"]["N"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .context("n")?;
        versions.entry(record_id(&record)).or_default().push(n);
    }
    assert_eq!(versions.len(), 6);
    for (key, seen) in &versions {
        assert_eq!(seen, &[0, 1, 2, 3], "{key}");
    }
    // The same records with factor 1: one batch at a time.
    let (fake, _) = run(1).await?;
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_records_written_before_the_start() -> Result<()> {
    let fx = fixture("streams_latest").await?;
    fx.put("before", 0).await?;
    let fake = Fake::new(|_, _| Ok(Value::Null));
    let mut mapping = fx.mapping();
    mapping.starting_position = StartingPosition::Latest;
    let poller = fx.start(mapping, &fake);
    wait_until("the shard to be opened", Duration::from_secs(20), || {
        poller.stats().shards_opened >= 1
    })
    .await?;
    fx.put("after", 1).await?;
    wait_until("a record", Duration::from_secs(20), || {
        !fake.records().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    poller.stop().await;
    let delivered: Vec<String> = fake.records().iter().map(record_id).collect();
    assert_eq!(delivered, strs(&["after"]));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_item_failures_retry_from_the_failed_record() -> Result<()> {
    let fx = fixture("streams_partial").await?;
    fx.put_all(&["e0", "e1", "e2", "e3", "e4"]).await?;
    let fake = Fake::new(|event, call| {
        let records = records(event);
        Ok(match call {
            // e3 and e2 failed: Lambda checkpoints before the lowest (e2).
            0 => json!({"batchItemFailures": [
                {"itemIdentifier": seq(&records[3])},
                {"itemIdentifier": seq(&records[2])}
            ]}),
            // An identifier that is not in the batch: the whole batch failed.
            1 => json!({"batchItemFailures": [{"itemIdentifier": "12345"}]}),
            _ => json!({"batchItemFailures": []}),
        })
    });
    let mut mapping = fx.mapping();
    mapping.report_batch_item_failures = true;
    let poller = fx.start(mapping, &fake);
    wait_until("3 invocations", Duration::from_secs(20), || {
        fake.calls().len() >= 3
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = poller.stop().await;
    let batches: Vec<Vec<String>> = fake.calls().iter().map(ids).collect();
    assert_eq!(
        batches,
        [
            strs(&["e0", "e1", "e2", "e3", "e4"]),
            strs(&["e2", "e3", "e4"]),
            strs(&["e2", "e3", "e4"]),
        ]
    );
    assert_eq!((stats.retries, stats.discarded_batches), (2, 0));
    assert_eq!(stats.records_delivered, 11);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_isolates_the_poison_record() -> Result<()> {
    let fx = fixture("streams_bisect").await?;
    let all = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"];
    fx.put_all(&all).await?;
    let fake = Fake::new(|event, _| {
        if ids(event).iter().any(|id| id == "e5") {
            Err(function_error())
        } else {
            Ok(Value::Null)
        }
    });
    let mut mapping = fx.mapping();
    mapping.bisect_on_error = true;
    mapping.maximum_retry_attempts = 1;
    mapping.on_failure = Some(fx.on_failure());
    let poller = fx.start(mapping, &fake);
    wait_until("e7", Duration::from_secs(20), || {
        fake.records().iter().any(|r| record_id(r) == "e7")
            && fake
                .calls()
                .last()
                .is_some_and(|c| ids(c).contains(&"e7".to_owned()))
            && fake.calls().len() >= 8
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = poller.stop().await;
    let batches: Vec<Vec<String>> = fake.calls().iter().map(ids).collect();
    assert_eq!(
        batches,
        [
            strs(&all),
            strs(&["e0", "e1", "e2", "e3"]),
            strs(&["e4", "e5", "e6", "e7"]),
            strs(&["e4", "e5"]),
            strs(&["e4"]),
            strs(&["e5"]),
            strs(&["e5"]), // the one retry (bisecting is not a retry)
            strs(&["e6", "e7"]),
        ]
    );
    assert_eq!(
        (stats.bisections, stats.retries, stats.discarded_batches),
        (3, 1, 1)
    );
    assert_eq!(stats.records_discarded, 1);

    let poison_seq = fake.calls()[5]
        .get("Records")
        .and_then(|r| r.get(0))
        .map(seq)
        .ok_or_else(|| anyhow!("no e5 record"))?;
    let failures = fx.failure_records(1).await?;
    let info = &failures[0]["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["startSequenceNumber"], json!(poison_seq));
    assert_eq!(info["endSequenceNumber"], json!(poison_seq));
    // e5 was in 5 invocations: the batch of 8, of 4, of 2, and twice on its own.
    assert_eq!(failures[0]["requestContext"]["approximateInvokeCount"], 5);
    assert_eq!(failures[0]["responseContext"]["functionError"], "Unhandled");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_the_on_failure_queue_and_processing_continues() -> Result<()> {
    let fx = fixture("streams_onfailure").await?;
    fx.put_all(&["e0", "e1", "e2"]).await?;
    let fake = Fake::new(|event, _| {
        if ids(event).iter().any(|id| id == "e1") {
            Err(InvokeError::Timeout { seconds: 3 })
        } else {
            Ok(Value::Null)
        }
    });
    let mut mapping = fx.mapping();
    mapping.batch_size = 2;
    mapping.maximum_retry_attempts = 2;
    mapping.on_failure = Some(fx.on_failure());
    let poller = fx.start(mapping, &fake);
    wait_until("e2", Duration::from_secs(20), || {
        fake.records().iter().any(|r| record_id(r) == "e2")
    })
    .await?;
    fx.put("e3", 3).await?;
    wait_until("e3", Duration::from_secs(20), || {
        fake.records().iter().any(|r| record_id(r) == "e3")
    })
    .await?;
    let stats = poller.stop().await;
    let calls = fake.calls();
    let batches: Vec<Vec<String>> = calls.iter().map(ids).collect();
    assert_eq!(
        batches,
        [
            strs(&["e0", "e1"]),
            strs(&["e0", "e1"]),
            strs(&["e0", "e1"]),
            strs(&["e2"]),
            strs(&["e3"]),
        ]
    );
    assert_eq!(
        (
            stats.retries,
            stats.discarded_batches,
            stats.failure_records_sent
        ),
        (2, 1, 1)
    );

    let failures = fx.failure_records(1).await?;
    let record = &failures[0];
    let discarded = records(&calls[0]);
    assert_eq!(
        keys(record),
        keys(
            &json!({"requestContext": 0, "responseContext": 0, "version": 0, "timestamp": 0, "DDBStreamBatchInfo": 0})
        )
    );
    assert_eq!(record["version"], "1.0");
    let context = &record["requestContext"];
    assert_eq!(
        keys(context),
        keys(
            &json!({"requestId": 0, "functionArn": 0, "condition": 0, "approximateInvokeCount": 0})
        )
    );
    assert_eq!(context["condition"], "RetryAttemptsExhausted");
    assert_eq!(context["approximateInvokeCount"], 3);
    assert!(context["requestId"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(
        context["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:RollupFunction"
    );
    assert_eq!(
        record["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"})
    );
    let timestamp = time(&record["timestamp"])?;
    assert!((Utc::now() - timestamp).num_seconds().abs() < 60);
    assert!(record["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('.')));
    let info = &record["DDBStreamBatchInfo"];
    assert!(info["shardId"]
        .as_str()
        .is_some_and(|s| s.starts_with("shardId-")));
    assert_eq!(info["startSequenceNumber"], json!(seq(&discarded[0])));
    assert_eq!(info["endSequenceNumber"], json!(seq(&discarded[1])));
    assert_eq!(info["batchSize"], 2);
    assert_eq!(info["streamArn"], json!(fx.stream_arn));
    let first = time(&info["approximateArrivalOfFirstRecord"])?;
    let last = time(&info["approximateArrivalOfLastRecord"])?;
    assert_eq!(
        first.timestamp(),
        discarded[0]["dynamodb"]["ApproximateCreationDateTime"]
            .as_i64()
            .unwrap_or_default()
    );
    assert!(first <= last);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_maximum_age_are_discarded_without_invoking() -> Result<()> {
    let fx = fixture("streams_age").await?;
    fx.put_all(&["e0", "e1"]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fake = Fake::new(|_, _| Ok(Value::Null));
    let mut mapping = fx.mapping();
    mapping.maximum_record_age = Some(Duration::from_secs(1));
    // Use DynamoDB Local's minute-rounded creation times as they are: the records are then at
    // least 1.5 s old, whatever second of the minute they were written in.
    mapping.creation_time_resolution = Duration::from_secs(1);
    mapping.on_failure = Some(fx.on_failure());
    let poller = fx.start(mapping, &fake);
    wait_until("a discarded batch", Duration::from_secs(20), || {
        poller.stats().failure_records_sent >= 1
    })
    .await?;
    let stats = poller.stop().await;
    assert_eq!(stats.invocations, 0);
    assert_eq!((stats.discarded_batches, stats.records_discarded), (1, 2));
    let failures = fx.failure_records(1).await?;
    assert_eq!(
        failures[0]["requestContext"]["condition"],
        "RecordAgeExceeded"
    );
    assert_eq!(failures[0]["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(failures[0]["DDBStreamBatchInfo"]["batchSize"], 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tumbling windows

/// A windowed function: counts records into `state.count` (a string, as `aws_lambda_events`'
/// `TimeWindowEventResponse` wants) and answers `{"state": ..}`.
fn count_into_state(event: &Value) -> Value {
    let before: usize = event["state"]["count"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    json!({"state": {"count": (before + records(event).len()).to_string()}, "batchItemFailures": []})
}

/// Sleeps until 150 ms after the start of the next `width`-second window (epoch-aligned), so
/// the next couple of seconds fall in one window.
async fn align_to_window(width: i64) {
    let now = Utc::now().timestamp_millis();
    let next = (now.div_euclid(width * 1000) + 1) * width * 1000 + 150;
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(next - now).unwrap_or_default(),
    ))
    .await;
}

fn is_final(call: &Value) -> bool {
    call["isFinalInvokeForWindow"] == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_window_carries_state_to_the_final_invocation() -> Result<()> {
    let fx = fixture("streams_window").await?;
    let fake = Fake::new(|event, _| Ok(count_into_state(event)));
    let mut mapping = fx.mapping();
    mapping.tumbling_window = Some(Duration::from_secs(3));
    let poller = fx.start(mapping, &fake);
    wait_until("the shard to be opened", Duration::from_secs(20), || {
        poller.stats().shards_opened >= 1
    })
    .await?;

    align_to_window(3).await;
    fx.put("e0", 0).await?;
    wait_until("e0", Duration::from_secs(10), || !fake.calls().is_empty()).await?;
    fx.put("e1", 1).await?;
    wait_until("the final invocation", Duration::from_secs(15), || {
        fake.calls().iter().any(is_final)
    })
    .await?;
    // A record of a later window starts a fresh state.
    fx.put("e2", 2).await?;
    wait_until("e2", Duration::from_secs(10), || {
        fake.records().iter().any(|r| record_id(r) == "e2")
    })
    .await?;
    let stats = poller.stop().await;

    let calls = fake.calls();
    assert!(calls.len() >= 4, "{calls:#?}");
    let (first, second, last) = (&calls[0], &calls[1], &calls[2]);
    assert_eq!(ids(first), strs(&["e0"]));
    assert_eq!(first["state"], json!({}));
    assert_eq!(ids(second), strs(&["e1"]));
    assert_eq!(second["state"], json!({"count": "1"}));
    assert!(!is_final(first) && !is_final(second));
    assert!(is_final(last), "{last:#?}");
    assert_eq!(ids(last), Vec::<String>::new());
    assert_eq!(last["state"], json!({"count": "2"}));
    for call in [first, second, last] {
        assert_eq!(call["window"], first["window"], "one window: {calls:#?}");
        assert_eq!(call["isWindowTerminatedEarly"], json!(false));
        assert_eq!(call["eventSourceARN"], json!(fx.stream_arn));
        assert!(call["shardId"]
            .as_str()
            .is_some_and(|s| s.starts_with("shardId-")));
        assert_eq!(
            keys(call),
            keys(
                &json!({"Records": 0, "window": 0, "state": 0, "shardId": 0, "eventSourceARN": 0, "isFinalInvokeForWindow": 0, "isWindowTerminatedEarly": 0})
            )
        );
    }
    let start = time(&first["window"]["start"])?;
    let end = time(&first["window"]["end"])?;
    assert_eq!((end - start).num_seconds(), 3);
    assert_eq!(start.timestamp() % 3, 0, "epoch-aligned");
    for record in records(first).iter().chain(records(second)) {
        let created = record["dynamodb"]["ApproximateCreationDateTime"]
            .as_i64()
            .unwrap_or_default();
        assert!((start.timestamp()..end.timestamp()).contains(&created));
    }
    let later = &calls[3];
    assert_eq!(ids(later), strs(&["e2"]));
    assert_eq!(later["state"], json!({}));
    assert!(time(&later["window"]["start"])? >= end);
    assert_eq!(stats.windows_closed, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_window_invocations_are_retried_with_the_same_state() -> Result<()> {
    let fx = fixture("streams_window_retry").await?;
    let fake = Fake::new(|event, call| match call {
        // The invocation with e1 fails once (after doing who knows what).
        1 => Err(function_error()),
        // The first final invocation times out.
        3 if is_final(event) => Err(InvokeError::Timeout { seconds: 3 }),
        _ => Ok(count_into_state(event)),
    });
    let mut mapping = fx.mapping();
    mapping.tumbling_window = Some(Duration::from_secs(3));
    let poller = fx.start(mapping, &fake);
    wait_until("the shard to be opened", Duration::from_secs(20), || {
        poller.stats().shards_opened >= 1
    })
    .await?;

    align_to_window(3).await;
    fx.put("e0", 0).await?;
    wait_until("e0", Duration::from_secs(10), || !fake.calls().is_empty()).await?;
    fx.put("e1", 1).await?;
    wait_until("two final invocations", Duration::from_secs(15), || {
        fake.calls().iter().filter(|c| is_final(c)).count() >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = poller.stop().await;

    let calls = fake.calls();
    assert_eq!(calls.len(), 5, "{calls:#?}");
    // e1's invocation failed and was retried with the same input: state and records.
    assert_eq!(ids(&calls[1]), strs(&["e1"]));
    assert_eq!(calls[1]["state"], json!({"count": "1"}));
    assert_eq!(calls[2]["state"], calls[1]["state"]);
    assert_eq!(calls[2]["Records"], calls[1]["Records"]);
    // The final invocation timed out and was retried with the same state; the count is exact.
    assert!(is_final(&calls[3]) && is_final(&calls[4]));
    assert_eq!(calls[3]["state"], json!({"count": "2"}));
    assert_eq!(calls[4]["state"], json!({"count": "2"}));
    assert_eq!(calls[3]["Records"], json!([]));
    assert_eq!(calls[4]["Records"], json!([]));
    for call in &calls {
        assert_eq!(call["window"], calls[0]["window"]);
    }
    assert_eq!((stats.retries, stats.invoke_errors), (2, 2));
    assert_eq!((stats.windows_closed, stats.discarded_batches), (1, 0));
    Ok(())
}
