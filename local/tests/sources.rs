//! Event sources against real moto (SQS) and a fake function: partial batch responses,
//! visibility-timeout retries, batch size and batching window, redrive to a DLQ; schedules.
//!
//! Each SQS test starts its own `moto_server` on a free loopback port (killed when the test
//! ends), installing moto into `<repo>/.local/venv` first if it is missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::sources::schedule::CronExpression;
use tally_local::sources::{
    ScheduleExpression, ScheduleSpec, Scheduler, SqsMapping, SqsPoller, SqsStats,
};

// ---------------------------------------------------------------------------------------------
// moto

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `<repo>/.local/venv/bin/moto_server`, installing `moto[server]` if it is missing. Concurrent
/// installers are serialised by the `.local/.moto.install-lock` directory (holding the pid).
fn ensure_moto() -> Result<PathBuf> {
    let local = repo_root().join(".local");
    let venv = local.join("venv");
    let server = venv.join("bin").join("moto_server");
    if server.is_file() {
        return Ok(server);
    }
    std::fs::create_dir_all(&local)?;
    let lock = local.join(".moto.install-lock");
    let started = Instant::now();
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(lock.join("owner")).unwrap_or_default();
                let owner = owner.trim();
                if !owner.is_empty() && !Path::new("/proc").join(owner).exists() {
                    let _ = std::fs::remove_dir_all(&lock); // stale lock of a dead process
                    continue;
                }
                if started.elapsed() > Duration::from_secs(20 * 60) {
                    bail!("timed out waiting for {}", lock.display());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(err) => return Err(err).context("creating the moto install lock"),
        }
    }
    let result = (|| -> Result<()> {
        std::fs::write(lock.join("owner"), std::process::id().to_string())?;
        if server.is_file() {
            return Ok(()); // installed by someone else while we waited
        }
        let python = venv.join("bin").join("python");
        if !python.is_file() {
            let status = std::process::Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .stdin(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("python3 -m venv failed: {status}");
            }
        }
        let status = std::process::Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("pip install moto[server] failed: {status}");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&lock);
    result?;
    if !server.is_file() {
        bail!("{} is missing after installing moto", server.display());
    }
    Ok(server)
}

struct Moto {
    endpoint: String,
    _process: tokio::process::Child,
}

async fn start_moto() -> Result<Moto> {
    let server = tokio::task::spawn_blocking(ensure_moto).await??;
    let mut last_error = anyhow!("moto did not start");
    for _attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = tokio::process::Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                last_error = anyhow!("moto exited early on port {port}: {status}");
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Moto {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    _process: child,
                });
            }
            if Instant::now() > deadline {
                bail!("moto did not listen on port {port} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(last_error)
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

struct Queue {
    url: String,
    arn: String,
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, &str)],
) -> Result<Queue> {
    let mut request = sqs.create_queue().queue_name(name);
    for (key, value) in attributes {
        request = request.attributes(key.clone(), *value);
    }
    let url = request
        .send()
        .await?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let arn = queue_attribute(sqs, &url, QueueAttributeName::QueueArn).await?;
    Ok(Queue { url, arn })
}

async fn queue_attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
) -> Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await?;
    out.attributes
        .and_then(|mut a| a.remove(&name))
        .with_context(|| format!("queue has no {name:?}"))
}

/// Visible + in-flight messages.
async fn messages_in_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    let visible = queue_attribute(sqs, url, QueueAttributeName::ApproximateNumberOfMessages)
        .await?
        .parse::<u64>()?;
    let in_flight = queue_attribute(
        sqs,
        url,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    )
    .await?
    .parse::<u64>()?;
    Ok(visible + in_flight)
}

async fn send_bodies(sqs: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) -> Result<()> {
    for chunk in bodies.chunks(10) {
        let mut request = sqs.send_message_batch().queue_url(url);
        for (i, body) in chunk.iter().enumerate() {
            request = request.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()?,
            );
        }
        let out = request.send().await?;
        if !out.failed.is_empty() {
            bail!("SendMessageBatch failed for {:?}", out.failed);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A fake function

type Behaviour = dyn Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync;

#[derive(Debug, Clone)]
struct Call {
    function: String,
    event: Value,
    at: Instant,
}

struct FakeInvoker {
    calls: Mutex<Vec<Call>>,
    behaviour: Box<Behaviour>,
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl FakeInvoker {
    fn new(
        behaviour: impl Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Self::with_delay(Duration::ZERO, behaviour)
    }

    fn with_delay(
        delay: Duration,
        behaviour: impl Fn(&Value, usize) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FakeInvoker {
            calls: Mutex::new(Vec::new()),
            behaviour: Box::new(behaviour),
            delay,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every SQS record handed to the function so far, in order.
    fn records(&self) -> Vec<Value> {
        self.calls()
            .iter()
            .flat_map(|c| c.event["Records"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

#[async_trait]
impl Invoker for FakeInvoker {
    async fn invoke(&self, function: &str, event: Value) -> Result<Value, InvokeError> {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        let index = {
            let mut calls = self
                .calls
                .lock()
                .map_err(|_| InvokeError::Crashed("poisoned".into()))?;
            calls.push(Call {
                function: function.to_string(),
                event: event.clone(),
                at: Instant::now(),
            });
            calls.len() - 1
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = (self.behaviour)(&event, index);
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn body(record: &Value) -> &str {
    record["body"].as_str().unwrap_or_default()
}

fn receive_count(record: &Value) -> &str {
    record["attributes"]["ApproximateReceiveCount"]
        .as_str()
        .unwrap_or_default()
}

fn mapping(queue: &Queue) -> SqsMapping {
    let mut mapping = SqsMapping::new("process", &queue.url, &queue.arn);
    mapping.function_timeout = Duration::from_secs(1);
    mapping
}

// ---------------------------------------------------------------------------------------------
// SQS event-source mapping

#[tokio::test]
async fn partial_batch_failure_deletes_the_rest_and_redelivers_the_failed_one() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(
        &sqs,
        "partial",
        &[(QueueAttributeName::VisibilityTimeout, "2")],
    )
    .await?;
    let bodies: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    send_bodies(&sqs, &queue.url, &bodies[1..]).await?;
    // One message with attributes of each kind, to check their shape in the event.
    sqs.send_message()
        .queue_url(&queue.url)
        .message_body(&bodies[0])
        .message_attributes(
            "kind",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("order")
                .build()?,
        )
        .message_attributes(
            "count",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("3")
                .build()?,
        )
        .message_attributes(
            "raw",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(b"hi".to_vec()))
                .build()?,
        )
        .send()
        .await?;

    // The function fails m2 on its first delivery only.
    let invoker = FakeInvoker::new(|event, _| {
        let failures: Vec<Value> = event["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| body(r) == "m2" && receive_count(r) == "1")
            .map(|r| json!({ "itemIdentifier": r["messageId"] }))
            .collect();
        Ok(json!({ "batchItemFailures": failures }))
    });
    let mut m = mapping(&queue);
    m.batching_window = Duration::from_secs(1);
    m.report_batch_item_failures = true;
    let poller = SqsPoller::start(sqs.clone(), m, invoker.clone());

    wait_for("m2's second delivery", Duration::from_secs(30), || {
        invoker
            .records()
            .iter()
            .any(|r| body(r) == "m2" && receive_count(r) == "2")
    })
    .await?;
    // Let the poller delete it.
    wait_for("every message deleted", Duration::from_secs(10), || {
        poller.stats().messages_deleted == 5
    })
    .await?;
    let stats = poller.stop().await;
    assert_eq!(
        stats,
        SqsStats {
            batches_invoked: 2,
            messages_received: 6,
            messages_deleted: 5,
            messages_left_for_retry: 1,
            peak_pollers: 1,
            ..SqsStats::default()
        }
    );
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 0);

    let calls = invoker.calls();
    assert_eq!(calls.len(), 2, "one batch, then the redelivered message");
    assert!(calls.iter().all(|c| c.function == "process"));
    let first: Vec<&str> = calls[0].event["Records"]
        .as_array()
        .context("Records")?
        .iter()
        .map(body)
        .collect();
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["m0", "m1", "m2", "m3", "m4"]);
    let second = calls[1].event["Records"].as_array().context("Records")?;
    assert_eq!(second.len(), 1);
    assert_eq!(body(&second[0]), "m2");
    assert_eq!(receive_count(&second[0]), "2");
    // Not made visible early: it came back only after the 2 s visibility timeout.
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(
        gap >= Duration::from_millis(1500),
        "redelivered after {gap:?}"
    );

    // The event is Lambda's SQS event.
    for call in &calls {
        let typed: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(call.event.clone())?;
        for record in &typed.records {
            assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
            assert_eq!(record.event_source_arn.as_deref(), Some(queue.arn.as_str()));
            assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
            assert!(record.message_id.is_some() && record.receipt_handle.is_some());
            assert!(record.md5_of_body.is_some());
            for key in [
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
            ] {
                assert!(record.attributes.contains_key(key), "attribute {key}");
            }
        }
    }
    let m0 = calls[0].event["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| body(r) == "m0")
        .context("m0")?;
    assert_eq!(
        m0["messageAttributes"]["kind"],
        json!({"stringValue": "order", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
    );
    assert_eq!(m0["messageAttributes"]["count"]["dataType"], "Number");
    assert_eq!(m0["messageAttributes"]["raw"]["binaryValue"], "aGk=");
    assert_eq!(m0["messageAttributes"]["raw"]["dataType"], "Binary");
    let m1 = calls[0].event["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| body(r) == "m1")
        .context("m1")?;
    assert_eq!(m1["messageAttributes"], json!({}));

    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 0);
    Ok(())
}

#[tokio::test]
async fn invoke_error_leaves_every_message_for_the_visibility_timeout() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(
        &sqs,
        "failing",
        &[(QueueAttributeName::VisibilityTimeout, "6")],
    )
    .await?;
    let bodies: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
    send_bodies(&sqs, &queue.url, &bodies).await?;
    let invoker = FakeInvoker::new(|_, _| {
        Err(InvokeError::FunctionError {
            error_type: "Boom".into(),
            error_message: "it broke".into(),
        })
    });
    let poller = SqsPoller::start(sqs.clone(), mapping(&queue), invoker.clone());
    wait_for("the first batch", Duration::from_secs(15), || {
        poller.stats().batches_invoked >= 1
    })
    .await?;
    stop_and_check(
        poller,
        SqsStats {
            batches_invoked: 1,
            messages_received: 3,
            messages_deleted: 0,
            messages_left_for_retry: 3,
            invoke_errors: 1,
            peak_pollers: 1,
            ..SqsStats::default()
        },
    )
    .await?;
    assert_eq!(invoker.records().len(), 3);

    // Nothing deleted, and not made visible early: invisible now, back after the timeout with
    // ApproximateReceiveCount 2.
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 3);
    let now = sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .send()
        .await?;
    assert!(now.messages.unwrap_or_default().is_empty());
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while again.len() < 3 && Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        again.extend(out.messages.unwrap_or_default());
    }
    assert_eq!(again.len(), 3);
    for message in &again {
        let count = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .map(String::as_str);
        assert_eq!(count, Some("2"));
    }
    Ok(())
}

async fn stop_and_check(poller: SqsPoller, want: SqsStats) -> Result<()> {
    let started = Instant::now();
    let stats = poller.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(stats, want);
    Ok(())
}

#[tokio::test]
async fn invalid_partial_batch_response_fails_the_whole_batch() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(
        &sqs,
        "invalid-response",
        &[(QueueAttributeName::VisibilityTimeout, "6")],
    )
    .await?;
    send_bodies(&sqs, &queue.url, &["a".to_string(), "b".to_string()]).await?;
    let invoker = FakeInvoker::new(|_, _| {
        Ok(json!({ "batchItemFailures": [{ "itemIdentifier": "not-in-this-batch" }] }))
    });
    let mut m = mapping(&queue);
    m.report_batch_item_failures = true;
    m.batching_window = Duration::from_secs(1);
    let poller = SqsPoller::start(sqs.clone(), m, invoker.clone());
    wait_for("the first batch", Duration::from_secs(15), || {
        poller.stats().batches_invoked >= 1
    })
    .await?;
    let stats = poller.stop().await;
    assert_eq!(stats.messages_received, 2);
    assert_eq!(stats.messages_deleted, 0);
    assert_eq!(stats.messages_left_for_retry, 2);
    assert_eq!(stats.invalid_batch_responses, 1);
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 2);
    Ok(())
}

#[tokio::test]
async fn batch_size_and_batching_window_are_honoured() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(
        &sqs,
        "batched",
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await?;
    let bodies: Vec<String> = (0..25).map(|i| format!("b{i:02}")).collect();
    send_bodies(&sqs, &queue.url, &bodies).await?;
    let invoker = FakeInvoker::new(|_, _| Ok(Value::Null));
    let mut m = mapping(&queue);
    m.batch_size = 10;
    m.batching_window = Duration::from_secs(2);
    let poller = SqsPoller::start(sqs.clone(), m, invoker.clone());
    wait_for("25 messages deleted", Duration::from_secs(30), || {
        poller.stats().messages_deleted == 25
    })
    .await?;
    let stats = poller.stop().await;

    let calls = invoker.calls();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.event["Records"].as_array().map_or(0, Vec::len))
        .collect();
    assert!(sizes.iter().all(|&n| n <= 10), "batch sizes {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 25);
    // Full batches go at once; the last, partial one waits for the batching window.
    assert_eq!(sizes, [10, 10, 5]);
    let gap = calls[2].at.duration_since(calls[1].at);
    assert!(
        gap >= Duration::from_millis(1800),
        "last batch after {gap:?}"
    );
    let mut seen: Vec<String> = invoker
        .records()
        .iter()
        .map(|r| body(r).to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, bodies);
    assert_eq!(
        stats,
        SqsStats {
            batches_invoked: 3,
            messages_received: 25,
            messages_deleted: 25,
            peak_pollers: 1,
            ..SqsStats::default()
        }
    );
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_backlog_scales_pollers_out_to_maximum_concurrency_and_back() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(
        &sqs,
        "backlog",
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await?;
    let bodies: Vec<String> = (0..120).map(|i| format!("m{i:03}")).collect();
    send_bodies(&sqs, &queue.url, &bodies).await?;
    // Slow enough that one poller could not keep up: a backlog builds.
    let invoker = FakeInvoker::with_delay(Duration::from_millis(400), |_, _| Ok(Value::Null));
    let mut m = mapping(&queue);
    m.batch_size = 10;
    m.maximum_concurrency = 3;
    let poller = SqsPoller::start(sqs.clone(), m, invoker.clone());
    wait_for("120 messages deleted", Duration::from_secs(60), || {
        poller.stats().messages_deleted == 120
    })
    .await?;
    let running = invoker.max_running.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&running),
        "{running} invocations at once (maximum concurrency 3)"
    );
    // With the queue empty, the extra pollers stop.
    wait_for("one poller left", Duration::from_secs(20), || {
        poller.stats().pollers == 1
    })
    .await?;
    let stats = poller.stop().await;
    assert_eq!(stats.peak_pollers, 3);
    assert_eq!(stats.pollers, 0);
    // Each message handed over exactly once (no visibility timeout ran out).
    let mut seen: Vec<String> = invoker
        .records()
        .iter()
        .map(|r| body(r).to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, bodies);
    assert_eq!(stats.messages_received, 120);
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 0);
    Ok(())
}

#[tokio::test]
async fn zero_batching_window_invokes_with_what_one_receive_returned() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let queue = create_queue(&sqs, "unbatched", &[]).await?;
    let invoker = FakeInvoker::new(|_, _| Ok(Value::Null));
    let mut m = mapping(&queue);
    m.batch_size = 100;
    m.batching_window = Duration::ZERO;
    let poller = SqsPoller::start(sqs.clone(), m, invoker.clone());
    // Let the poller reach its long poll, then send three messages.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    send_bodies(&sqs, &queue.url, &["x".into(), "y".into(), "z".into()]).await?;
    wait_for("3 messages deleted", Duration::from_secs(15), || {
        poller.stats().messages_deleted == 3
    })
    .await?;
    poller.stop().await;
    let calls = invoker.calls();
    let latency = calls[0].at.duration_since(sent);
    assert!(
        latency < Duration::from_secs(2),
        "invoked {latency:?} after the send"
    );
    assert!(calls
        .iter()
        .all(|c| c.event["Records"].as_array().map_or(0, Vec::len) <= 10));
    assert_eq!(invoker.records().len(), 3);
    Ok(())
}

#[tokio::test]
async fn redrive_policy_moves_an_always_failing_message_to_the_dlq() -> Result<()> {
    let moto = start_moto().await?;
    let sqs = sqs_client(&moto.endpoint);
    let dlq = create_queue(&sqs, "work-dlq", &[]).await?;
    let redrive = json!({ "deadLetterTargetArn": dlq.arn, "maxReceiveCount": "2" }).to_string();
    let queue = create_queue(
        &sqs,
        "work",
        &[
            (QueueAttributeName::VisibilityTimeout, "1"),
            (QueueAttributeName::RedrivePolicy, &redrive),
        ],
    )
    .await?;
    send_bodies(&sqs, &queue.url, &["poison".to_string()]).await?;
    let invoker = FakeInvoker::new(|_, _| Err(InvokeError::Timeout { seconds: 1 }));
    let poller = SqsPoller::start(sqs.clone(), mapping(&queue), invoker.clone());

    let mut in_dlq = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_dlq.is_empty() && Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&dlq.url)
            .wait_time_seconds(1)
            .send()
            .await?;
        in_dlq.extend(out.messages.unwrap_or_default());
    }
    let stats = poller.stop().await;

    assert_eq!(in_dlq.len(), 1, "the message reached the DLQ");
    assert_eq!(in_dlq[0].body(), Some("poison"));
    let counts: Vec<String> = invoker
        .records()
        .iter()
        .map(|r| receive_count(r).to_string())
        .collect();
    assert_eq!(counts, ["1", "2"], "delivered maxReceiveCount times");
    assert_eq!(stats.messages_deleted, 0);
    assert_eq!(stats.invoke_errors, 2);
    assert_eq!(messages_in_queue(&sqs, &queue.url).await?, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Schedules

fn spec(name: &str, expression: ScheduleExpression) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_string(),
        function: "report".to_string(),
        expression,
        input: None,
        enabled: true,
    }
}

#[tokio::test]
async fn trigger_now_invokes_with_the_scheduled_event() -> Result<()> {
    let invoker = FakeInvoker::new(|_, _| Ok(json!({ "ok": true })));
    let mut constant = spec(
        "with-input",
        ScheduleExpression::parse("cron(0 3 * * ? *)")?,
    );
    constant.input = Some(json!({ "job": "compact" }));
    let scheduler = Scheduler::start(
        vec![
            spec("nightly", ScheduleExpression::parse("rate(1 minute)")?),
            constant,
        ],
        invoker.clone(),
    )?;

    let before = Utc::now();
    let result = scheduler.trigger_now("nightly").await;
    assert_eq!(result, Ok(json!({ "ok": true })));
    let calls = invoker.calls();
    assert_eq!(
        calls.len(),
        1,
        "rate(1 minute) has not fired on its own yet"
    );
    assert_eq!(calls[0].function, "report");
    let event = &calls[0].event;
    assert_eq!(event["version"], "0");
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["source"], "aws.events");
    assert_eq!(event["account"], "123456789012");
    assert_eq!(event["region"], "us-east-1");
    assert_eq!(
        event["resources"],
        json!(["arn:aws:events:us-east-1:123456789012:rule/nightly"])
    );
    assert_eq!(event["detail"], json!({}));
    uuid::Uuid::parse_str(event["id"].as_str().context("id")?)?;
    let time = event["time"].as_str().context("time")?;
    assert!(time.ends_with('Z') && time.len() == 20, "time {time}");
    let time: DateTime<Utc> = DateTime::parse_from_rfc3339(time)?.with_timezone(&Utc);
    assert!((time - before).num_seconds().abs() <= 2);
    let keys: Vec<&String> = event.as_object().context("object")?.keys().collect();
    assert_eq!(keys.len(), 9, "{keys:?}");

    // A constant Input replaces the event.
    scheduler.trigger_now("with-input").await?;
    assert_eq!(invoker.calls()[1].event, json!({ "job": "compact" }));

    // Unknown schedule.
    assert!(matches!(
        scheduler.trigger_now("missing").await,
        Err(InvokeError::UnknownFunction(_))
    ));
    let stats = scheduler.stats();
    assert_eq!((stats.fired, stats.succeeded, stats.failed), (2, 2, 0));
    scheduler.stop().await;
    Ok(())
}

#[tokio::test]
async fn trigger_now_returns_the_function_error() -> Result<()> {
    let invoker = FakeInvoker::new(|_, _| Err(InvokeError::Timeout { seconds: 3 }));
    let scheduler = Scheduler::start(
        vec![spec("tick", ScheduleExpression::parse("rate(5 minutes)")?)],
        invoker,
    )?;
    assert_eq!(
        scheduler.trigger_now("tick").await,
        Err(InvokeError::Timeout { seconds: 3 })
    );
    assert_eq!(scheduler.stats().failed, 1);
    scheduler.stop().await;
    Ok(())
}

#[test]
fn cron_next_firing_time() -> Result<()> {
    let at = |s: &str| -> Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    };
    // Weekdays at 12:00 UTC: from Saturday afternoon to Monday noon.
    let weekdays = ScheduleExpression::parse("cron(0 12 ? * MON-FRI *)")?;
    assert_eq!(
        weekdays.next_after(at("2024-05-04T15:00:00Z")?),
        Some(at("2024-05-06T12:00:00Z")?)
    );
    // 08:30 on the 1st of each quarter, crossing a year end.
    let quarterly = ScheduleExpression::parse("cron(30 8 1 JAN,APR,JUL,OCT ? *)")?;
    assert_eq!(
        quarterly.next_after(at("2024-10-01T08:30:00Z")?),
        Some(at("2025-01-01T08:30:00Z")?)
    );
    // Every 10 minutes from 18:00 to 18:59 on the last day of the month.
    let cron = CronExpression::parse("0/10 18 L * ? *").map_err(|e| anyhow!(e))?;
    assert_eq!(
        cron.next_after(at("2024-02-29T18:55:00Z")?),
        Some(at("2024-03-31T18:00:00Z")?)
    );
    assert!(ScheduleExpression::parse("cron(0 12 * * * *)").is_err());
    assert!(ScheduleExpression::parse("rate(1 minutes)").is_err());
    Ok(())
}

#[tokio::test]
async fn schedules_fire_on_time_without_waiting_for_the_function() -> Result<()> {
    // A slow function (700 ms) on a 200 ms rate: firings overlap instead of queueing.
    let invoker = FakeInvoker::with_delay(Duration::from_millis(700), |_, _| Ok(Value::Null));
    let mut disabled = spec("off", ScheduleExpression::Rate(Duration::from_millis(100)));
    disabled.enabled = false;
    let scheduler = Scheduler::start(
        vec![
            spec("fast", ScheduleExpression::Rate(Duration::from_millis(200))),
            disabled,
        ],
        invoker.clone(),
    )?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fired = scheduler.stats().fired;
    scheduler.stop().await;
    assert!((4..=6).contains(&fired), "fired {fired} times in 1.1 s");
    assert!(invoker.max_running.load(Ordering::SeqCst) >= 3);
    let calls = invoker.calls();
    assert!(calls.iter().all(
        |c| c.event["resources"] == json!(["arn:aws:events:us-east-1:123456789012:rule/fast"])
    ));
    // stop() waited for the invocations in flight.
    assert_eq!(invoker.running.load(Ordering::SeqCst), 0);
    let by_name: HashMap<&str, usize> = calls.iter().fold(HashMap::new(), |mut m, c| {
        let name = c.event["resources"][0].as_str().unwrap_or_default();
        *m.entry(name).or_default() += 1;
        m
    });
    assert_eq!(by_name.len(), 1, "the disabled schedule never fired");
    Ok(())
}
