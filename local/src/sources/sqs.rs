//! An SQS event-source mapping that behaves like Lambda's.
//!
//! The poller long-polls the queue, gathers a batch (up to `batch_size` messages, or until the
//! batching window has elapsed since the first message of the batch arrived), invokes the
//! function synchronously with the SQS event Lambda builds, and then:
//!
//! * invoke OK, without `ReportBatchItemFailures`: deletes every message of the batch;
//! * invoke OK, with `ReportBatchItemFailures`: deletes every message not named in the
//!   response's `batchItemFailures` (see [`batch_item_failures`] for Lambda's parsing rules);
//! * invoke error (function error, timeout, crash, unknown function): deletes nothing.
//!
//! Messages that are not deleted are left alone (their visibility is not changed): they become
//! visible again when the queue's visibility timeout expires, and the queue's redrive policy
//! moves them to the dead-letter queue after `maxReceiveCount` receives — exactly as with Lambda.
//!
//! Pollers scale like Lambda's: one to start with; each poller whose batch came back full (a
//! backlog) starts another, up to `maximum_concurrency` (`ScalingConfig.MaximumConcurrency`,
//! capped by the function's concurrency); an extra poller that finds the queue empty stops.
//! Each poller has one batch in flight at a time, so at most `maximum_concurrency` invocations
//! run at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::invoke::Invoker;

/// Lambda's largest SQS batch size.
pub const MAX_BATCH_SIZE: i32 = 10_000;
/// Lambda's default SQS batch size.
pub const DEFAULT_BATCH_SIZE: i32 = 10;
/// Lambda's largest `MaximumBatchingWindowInSeconds`.
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);
/// Longest `WaitTimeSeconds` used, so that [`SqsPoller::stop`] is prompt.
const MAX_WAIT_SECONDS: i32 = 2;
/// `ReceiveMessage` returns at most this many messages per call.
const RECEIVE_MAX: i32 = 10;
/// Pause after a failed SQS call before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Pause between short polls while the last (sub-second) part of a batching window runs out.
const SHORT_POLL_PAUSE: Duration = Duration::from_millis(100);
/// Region used when the queue ARN does not name one.
const DEFAULT_REGION: &str = "us-east-1";

/// One SQS event-source mapping (an `AWS::Lambda::EventSourceMapping` / SAM `SQS` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMapping {
    /// The function to invoke (the name the [`Invoker`] knows it by).
    pub function: String,
    pub queue_url: String,
    /// Put into each record's `eventSourceARN`; its region becomes `awsRegion`.
    pub queue_arn: String,
    /// `BatchSize`: 1..=10000 (default 10). Values outside are clamped, with a warning.
    pub batch_size: i32,
    /// `MaximumBatchingWindowInSeconds` (0..=300 s). Zero: invoke with what one receive returned.
    pub batching_window: Duration,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// The function's timeout; the queue's visibility timeout should be at least this long.
    pub function_timeout: Duration,
    /// Most pollers (so concurrent invocations) at once: `ScalingConfig.MaximumConcurrency`
    /// capped by the function's concurrency.
    pub maximum_concurrency: u32,
}

impl SqsMapping {
    /// A mapping with Lambda's defaults: batch size 10, no batching window, no partial batch
    /// responses, a 3 s function timeout.
    pub fn new(
        function: impl Into<String>,
        queue_url: impl Into<String>,
        queue_arn: impl Into<String>,
    ) -> Self {
        SqsMapping {
            function: function.into(),
            queue_url: queue_url.into(),
            queue_arn: queue_arn.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            batching_window: Duration::ZERO,
            report_batch_item_failures: false,
            function_timeout: Duration::from_secs(3),
            maximum_concurrency: 1,
        }
    }
}

/// Counters of one poller, for tests and observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqsStats {
    /// Invocations made (one per batch).
    pub batches_invoked: u64,
    /// Messages handed to the function (a redelivered message counts again).
    pub messages_received: u64,
    /// Messages deleted after the function processed them.
    pub messages_deleted: u64,
    /// Messages deliberately not deleted (failed batch or reported item failure); they come back
    /// after the visibility timeout.
    pub messages_left_for_retry: u64,
    /// Invocations that returned an error (function error, timeout, crash, unknown function).
    pub invoke_errors: u64,
    /// Invocations whose partial batch response was invalid (whole batch treated as failed).
    pub invalid_batch_responses: u64,
    /// Messages whose deletion SQS refused or that could not be deleted (they come back too).
    pub delete_failures: u64,
    /// Pollers running now.
    pub pollers: u64,
    /// The most pollers that ran at once.
    pub peak_pollers: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches_invoked: AtomicU64,
    messages_received: AtomicU64,
    messages_deleted: AtomicU64,
    messages_left_for_retry: AtomicU64,
    invoke_errors: AtomicU64,
    invalid_batch_responses: AtomicU64,
    delete_failures: AtomicU64,
    pollers: AtomicU64,
    peak_pollers: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SqsStats {
        SqsStats {
            batches_invoked: self.batches_invoked.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            messages_deleted: self.messages_deleted.load(Ordering::Relaxed),
            messages_left_for_retry: self.messages_left_for_retry.load(Ordering::Relaxed),
            invoke_errors: self.invoke_errors.load(Ordering::Relaxed),
            invalid_batch_responses: self.invalid_batch_responses.load(Ordering::Relaxed),
            delete_failures: self.delete_failures.load(Ordering::Relaxed),
            pollers: self.pollers.load(Ordering::Relaxed),
            peak_pollers: self.peak_pollers.load(Ordering::Relaxed),
        }
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// A running SQS event-source mapping. Stop it with [`SqsPoller::stop`]; dropping it asks the
/// polling task to stop without waiting for it.
#[derive(Debug)]
pub struct SqsPoller {
    function: String,
    queue_url: String,
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl SqsPoller {
    /// Spawns the polling task (on the current Tokio runtime) and returns at once.
    pub fn start(sqs: aws_sdk_sqs::Client, mapping: SqsMapping, invoker: Arc<dyn Invoker>) -> Self {
        let mapping = normalise(mapping);
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let function = mapping.function.clone();
        let queue_url = mapping.queue_url.clone();
        let poll = Poll {
            sqs,
            mapping,
            invoker,
            counters: Arc::clone(&counters),
            stop: super::StopSignal::new(stop_rx),
            extra: Arc::default(),
        };
        let task = tokio::spawn(poll.run());
        SqsPoller {
            function,
            queue_url,
            stop_tx,
            task: Some(task),
            counters,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SqsStats {
        self.counters.snapshot()
    }

    /// Stops polling: a receive in progress (at most a couple of seconds) and the batch in
    /// flight (including messages already gathered for it) are finished first. Returns the
    /// final counters.
    pub async fn stop(mut self) -> SqsStats {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::error!(function = %self.function, queue = %self.queue_url, "SQS poller task failed: {err}");
            }
        }
        self.counters.snapshot()
    }
}

impl Drop for SqsPoller {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}

/// Clamps the mapping into Lambda's limits, warning about what it changes.
fn normalise(mut mapping: SqsMapping) -> SqsMapping {
    if !(1..=MAX_BATCH_SIZE).contains(&mapping.batch_size) {
        let clamped = mapping.batch_size.clamp(1, MAX_BATCH_SIZE);
        tracing::warn!(
            function = %mapping.function,
            "SQS batch size {} is outside 1..={MAX_BATCH_SIZE}; using {clamped}",
            mapping.batch_size
        );
        mapping.batch_size = clamped;
    }
    if mapping.batching_window > MAX_BATCHING_WINDOW {
        tracing::warn!(
            function = %mapping.function,
            "SQS batching window {:?} is longer than Lambda's maximum; using {MAX_BATCHING_WINDOW:?}",
            mapping.batching_window
        );
        mapping.batching_window = MAX_BATCHING_WINDOW;
    }
    if mapping.batch_size > RECEIVE_MAX && mapping.batching_window.is_zero() {
        tracing::warn!(
            function = %mapping.function,
            "SQS batch size {} > 10 needs a batching window (Lambda requires MaximumBatchingWindowInSeconds >= 1); batches will hold what one receive returns",
            mapping.batch_size
        );
    }
    mapping
}

#[derive(Clone)]
struct Poll {
    sqs: aws_sdk_sqs::Client,
    mapping: SqsMapping,
    invoker: Arc<dyn Invoker>,
    counters: Arc<Counters>,
    stop: super::StopSignal,
    /// The extra pollers started so far; the first poller waits for them when it stops.
    extra: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Poll {
    fn stopping(&self) -> bool {
        self.stop.requested()
    }

    async fn pause(&mut self, duration: Duration) -> bool {
        self.stop.pause(duration).await
    }

    async fn run(mut self) {
        tracing::info!(
            function = %self.mapping.function,
            queue = %self.mapping.queue_url,
            batch_size = self.mapping.batch_size,
            batching_window = ?self.mapping.batching_window,
            report_batch_item_failures = self.mapping.report_batch_item_failures,
            maximum_concurrency = self.mapping.maximum_concurrency,
            "SQS event-source mapping started"
        );
        self.check_visibility_timeout().await;
        self.poll(true).await;
        loop {
            let extra: Vec<JoinHandle<()>> = self
                .extra
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
                .collect();
            if extra.is_empty() {
                break;
            }
            for task in extra {
                if let Err(err) = task.await {
                    tracing::error!(function = %self.mapping.function, "an SQS poller task failed: {err}");
                }
            }
        }
        tracing::info!(
            function = %self.mapping.function,
            queue = %self.mapping.queue_url,
            "SQS event-source mapping stopped"
        );
    }

    /// One poller's loop. The first poller runs until stopped; an extra one also ends when it
    /// finds the queue empty.
    async fn poll(&mut self, first: bool) {
        if first {
            self.counters.pollers.fetch_add(1, Ordering::Relaxed);
            self.counters.peak_pollers.fetch_max(1, Ordering::Relaxed);
        }
        let batch_size = usize::try_from(self.mapping.batch_size).unwrap_or(1);
        while !self.stopping() {
            let batch = self.gather(!first).await;
            if batch.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            if batch.len() >= batch_size.min(RECEIVE_MAX as usize) {
                self.scale_out();
            }
            self.process(batch).await;
        }
        self.counters.pollers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Starts another poller if the mapping allows one more.
    fn scale_out(&self) {
        let limit = u64::from(self.mapping.maximum_concurrency.max(1));
        // Counted before it starts, so two pollers scaling out at once cannot pass the limit.
        let Ok(before) =
            self.counters
                .pollers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                })
        else {
            return;
        };
        self.counters
            .peak_pollers
            .fetch_max(before + 1, Ordering::Relaxed);
        let mut poller = self.clone();
        let task = tokio::spawn(async move { poller.poll(false).await });
        let mut extra = self.extra.lock().unwrap_or_else(PoisonError::into_inner);
        extra.retain(|task| !task.is_finished());
        extra.push(task);
    }

    /// Lambda requires the queue's visibility timeout to be at least the function timeout.
    async fn check_visibility_timeout(&self) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.mapping.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await;
        let visibility = match attributes {
            Ok(out) => out
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout).cloned())
                .and_then(|v| v.parse::<u64>().ok()),
            Err(err) => {
                tracing::warn!(
                    queue = %self.mapping.queue_url,
                    "could not read the queue's visibility timeout: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&err)
                );
                return;
            }
        };
        if let Some(seconds) = visibility {
            if Duration::from_secs(seconds) < self.mapping.function_timeout {
                tracing::warn!(
                    function = %self.mapping.function,
                    queue = %self.mapping.queue_url,
                    "queue visibility timeout ({seconds} s) is shorter than the function timeout ({:?}); Lambda rejects this mapping, and messages may be delivered again while still being processed",
                    self.mapping.function_timeout
                );
            }
        }
    }

    /// Receives up to `batch_size` messages, or until the batching window (started by the
    /// first message) has elapsed. Returns an empty batch on stop, and with `give_up_when_empty`
    /// also when a long poll found the queue empty.
    async fn gather(&mut self, give_up_when_empty: bool) -> Vec<Message> {
        let batch_size = usize::try_from(self.mapping.batch_size).unwrap_or(1);
        let mut batch: Vec<Message> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            if self.stopping() || batch.len() >= batch_size {
                return batch;
            }
            let wait_seconds = match deadline {
                None => MAX_WAIT_SECONDS,
                Some(deadline) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return batch;
                    }
                    i32::try_from(remaining.as_secs())
                        .unwrap_or(MAX_WAIT_SECONDS)
                        .min(MAX_WAIT_SECONDS)
                }
            };
            let want = i32::try_from(batch_size - batch.len())
                .unwrap_or(RECEIVE_MAX)
                .min(RECEIVE_MAX);
            match self.receive(want, wait_seconds).await {
                Ok(messages) => {
                    let got = messages.len();
                    if got > 0 && deadline.is_none() {
                        deadline = Some(Instant::now() + self.mapping.batching_window);
                    }
                    for message in messages {
                        add_to_batch(&mut batch, message);
                    }
                    if !batch.is_empty() && self.mapping.batching_window.is_zero() {
                        return batch;
                    }
                    if got == 0 && batch.is_empty() && give_up_when_empty {
                        return batch;
                    }
                    if got == 0 && wait_seconds == 0 {
                        // Short poll in the last sub-second of the window: pause briefly.
                        let remaining = deadline
                            .map(|d| d.saturating_duration_since(Instant::now()))
                            .unwrap_or(SHORT_POLL_PAUSE);
                        if self.pause(remaining.min(SHORT_POLL_PAUSE)).await {
                            return batch;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        function = %self.mapping.function,
                        queue = %self.mapping.queue_url,
                        "SQS ReceiveMessage failed: {err}"
                    );
                    if !batch.is_empty() || self.pause(ERROR_BACKOFF).await {
                        return batch;
                    }
                }
            }
        }
    }

    async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.mapping.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| aws_sdk_sqs::error::DisplayErrorContext(&err).to_string())?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn process(&self, batch: Vec<Message>) {
        let function = &self.mapping.function;
        let event = lambda_event(&batch, &self.mapping.queue_arn);
        add(&self.counters.messages_received, batch.len());
        self.counters
            .batches_invoked
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            function = %function,
            queue = %self.mapping.queue_url,
            messages = batch.len(),
            "invoking with SQS batch"
        );
        let result = self.invoker.invoke(function, event).await;
        let failed: BTreeSet<String> = match result {
            Err(err) => {
                self.counters.invoke_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    function = %function,
                    messages = batch.len(),
                    "invocation failed, the whole batch will be retried after the visibility timeout: {err}"
                );
                all_ids(&batch)
            }
            Ok(response) if self.mapping.report_batch_item_failures => {
                let ids: Vec<&str> = batch.iter().filter_map(|m| m.message_id()).collect();
                match batch_item_failures(&response, &ids) {
                    Ok(failed) => {
                        if !failed.is_empty() {
                            tracing::info!(
                                function = %function,
                                failed = failed.len(),
                                messages = batch.len(),
                                "function reported batch item failures; they will be retried after the visibility timeout"
                            );
                        }
                        failed
                    }
                    Err(reason) => {
                        self.counters
                            .invalid_batch_responses
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            function = %function,
                            messages = batch.len(),
                            "invalid partial batch response ({reason}); the whole batch will be retried"
                        );
                        all_ids(&batch)
                    }
                }
            }
            Ok(_) => BTreeSet::new(),
        };
        let (to_delete, kept): (Vec<&Message>, Vec<&Message>) = batch
            .iter()
            .partition(|m| m.message_id().is_some_and(|id| !failed.contains(id)));
        add(&self.counters.messages_left_for_retry, kept.len());
        self.delete(&to_delete).await;
    }

    async fn delete(&self, messages: &[&Message]) {
        for chunk in messages.chunks(10) {
            let mut request = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.mapping.queue_url);
            let mut entries = 0usize;
            for (index, message) in chunk.iter().enumerate() {
                let Some(receipt) = message.receipt_handle() else {
                    self.counters
                        .delete_failures
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let entry = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build();
                match entry {
                    Ok(entry) => {
                        request = request.entries(entry);
                        entries += 1;
                    }
                    Err(err) => {
                        self.counters
                            .delete_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("could not build a delete entry: {err}");
                    }
                }
            }
            if entries == 0 {
                continue;
            }
            match request.send().await {
                Ok(out) => {
                    add(&self.counters.messages_deleted, out.successful.len());
                    add(&self.counters.delete_failures, out.failed.len());
                    for failure in &out.failed {
                        tracing::warn!(
                            queue = %self.mapping.queue_url,
                            "SQS refused to delete a processed message ({}: {}); it will be delivered again",
                            failure.code,
                            failure.message.as_deref().unwrap_or("")
                        );
                    }
                }
                Err(err) => {
                    add(&self.counters.delete_failures, entries);
                    tracing::warn!(
                        queue = %self.mapping.queue_url,
                        "SQS DeleteMessageBatch failed; {entries} processed messages will be delivered again: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&err)
                    );
                }
            }
        }
    }
}

/// Adds a message to a batch; a message received twice within one batch (its visibility timeout
/// ran out during the batching window) keeps one record with the newest receipt handle.
fn add_to_batch(batch: &mut Vec<Message>, message: Message) {
    let existing = message
        .message_id()
        .and_then(|id| batch.iter().position(|m| m.message_id() == Some(id)));
    match existing {
        Some(index) => batch[index] = message,
        None => batch.push(message),
    }
}

fn all_ids(batch: &[Message]) -> BTreeSet<String> {
    batch
        .iter()
        .filter_map(|m| m.message_id().map(str::to_string))
        .collect()
}

/// Lambda's SQS event for a batch of received messages:
/// `{"Records":[{"messageId","receiptHandle","body","attributes","messageAttributes","md5OfBody",
/// "eventSource":"aws:sqs","eventSourceARN","awsRegion"}]}`. `awsRegion` is the queue ARN's region.
pub fn lambda_event(messages: &[Message], queue_arn: &str) -> Value {
    let region = queue_arn
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REGION);
    let records: Vec<Value> = messages
        .iter()
        .map(|m| record(m, queue_arn, region))
        .collect();
    json!({ "Records": records })
}

fn record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = message
        .attributes()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(name, value)| (name.as_str().to_string(), Value::String(value.clone())))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .map(message_attributes_json)
        .unwrap_or_default();
    json!({
        "messageId": message.message_id().unwrap_or_default(),
        "receiptHandle": message.receipt_handle().unwrap_or_default(),
        "body": message.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

fn message_attributes_json(
    attributes: &HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>,
) -> Map<String, Value> {
    let b64 = |blob: &aws_sdk_sqs::primitives::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(blob.as_ref()))
    };
    attributes
        .iter()
        .map(|(name, value)| {
            let mut out = Map::new();
            if let Some(s) = value.string_value() {
                out.insert("stringValue".into(), Value::String(s.to_string()));
            }
            if let Some(b) = value.binary_value() {
                out.insert("binaryValue".into(), b64(b));
            }
            out.insert(
                "stringListValues".into(),
                Value::Array(
                    value
                        .string_list_values()
                        .iter()
                        .map(|s| Value::String(s.clone()))
                        .collect(),
                ),
            );
            out.insert(
                "binaryListValues".into(),
                Value::Array(value.binary_list_values().iter().map(b64).collect()),
            );
            out.insert(
                "dataType".into(),
                Value::String(value.data_type().to_string()),
            );
            (name.clone(), Value::Object(out))
        })
        .collect()
}

/// Parses a partial batch response (`{"batchItemFailures":[{"itemIdentifier":"<messageId>"}]}`)
/// with Lambda's rules, given the message ids of the batch.
///
/// Complete success (empty set): a `null` response, an object without `batchItemFailures`, or a
/// `null` / empty `batchItemFailures`. Complete failure (`Err`, with the reason): a response that
/// is not an object, a `batchItemFailures` that is not a list, an entry without a string
/// `itemIdentifier` (missing, `null`, wrong key name), an empty `itemIdentifier`, or one that
/// names no message of the batch. Otherwise the set of message ids to retry.
pub fn batch_item_failures(
    response: &Value,
    batch_message_ids: &[&str],
) -> Result<BTreeSet<String>, String> {
    let object = match response {
        Value::Null => return Ok(BTreeSet::new()),
        Value::Object(object) => object,
        other => return Err(format!("response is not a JSON object: {other}")),
    };
    let items = match object.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
    };
    let mut failed = BTreeSet::new();
    for item in items {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(id)) => id,
            _ => return Err(format!("entry without a string itemIdentifier: {item}")),
        };
        if id.is_empty() {
            return Err("empty itemIdentifier".to_string());
        }
        if !batch_message_ids.contains(&id.as_str()) {
            return Err(format!(
                "itemIdentifier {id:?} is not a message of the batch"
            ));
        }
        failed.insert(id.clone());
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn partial_batch_response_success_shapes() {
        let ids = ["a", "b"];
        assert_eq!(batch_item_failures(&Value::Null, &ids), Ok(set(&[])));
        assert_eq!(batch_item_failures(&json!({}), &ids), Ok(set(&[])));
        assert_eq!(
            batch_item_failures(&json!({"batchItemFailures": null}), &ids),
            Ok(set(&[]))
        );
        assert_eq!(
            batch_item_failures(&json!({"batchItemFailures": []}), &ids),
            Ok(set(&[]))
        );
        assert_eq!(
            batch_item_failures(
                &json!({"batchItemFailures": [{"itemIdentifier": "b"}]}),
                &ids
            ),
            Ok(set(&["b"]))
        );
    }

    #[test]
    fn partial_batch_response_failure_shapes() {
        let ids = ["a", "b"];
        for bad in [
            json!("ok"),
            json!([1]),
            json!({"batchItemFailures": "a"}),
            json!({"batchItemFailures": [{"itemIdentifier": "c"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemId": "a"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "zz"}]}),
        ] {
            assert!(batch_item_failures(&bad, &ids).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_shape_matches_lambda() -> anyhow::Result<()> {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh")
            .body("hello")
            .md5_of_body("5d41402abc4b2a76b9719d911017c592")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1545082649183")
            .message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("x")
                    .build()?,
            )
            .message_attributes(
                "raw",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![1u8, 2, 3]))
                    .build()?,
            )
            .build();
        let event = lambda_event(&[message], "arn:aws:sqs:eu-west-1:123456789012:q");
        let record = &event["Records"][0];
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(record["awsRegion"], "eu-west-1");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
        assert_eq!(
            record["messageAttributes"]["kind"],
            json!({"stringValue": "x", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
        );
        assert_eq!(record["messageAttributes"]["raw"]["binaryValue"], "AQID");
        let typed: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(event)?;
        assert_eq!(typed.records[0].body.as_deref(), Some("hello"));
        Ok(())
    }
}
