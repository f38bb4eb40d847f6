//! A DynamoDB Streams event-source mapping that behaves like Lambda's.
//!
//! # Shards
//!
//! A coordinator task calls `DescribeStream` (all pages) at start, every
//! [`SHARD_REFRESH`] and whenever a shard is finished, and runs one worker per shard. A shard
//! is started only when it has no parent, its parent is no longer listed (trimmed), or its
//! parent has been read to its end and fully processed: parents before children, as Lambda
//! does. Shards found after the start are read from `TRIM_HORIZON`. With
//! [`StartingPosition::Latest`], shards that are already closed at the start are skipped and
//! open ones are read from `LATEST`.
//!
//! # Per shard
//!
//! `GetRecords` (up to 1000 records per call, 4 calls a second when caught up) fills an
//! in-memory buffer; records are delivered strictly in order, one invocation at a time; the
//! checkpoint (the last sequence number processed or discarded) only moves past records that
//! were processed successfully or discarded. An expired iterator is replaced by
//! `AFTER_SEQUENCE_NUMBER` of the last record read (the buffer holds everything after the
//! checkpoint), or of the checkpoint, or the starting position.
//!
//! A batch is up to `batch_size` records and at most 6 MiB of event; it is invoked when it is
//! full, when the shard has ended, or when the batching window (started by the first record
//! buffered, or by the end of the previous invocation) has elapsed; with no batching window, as
//! soon as records are read.
//!
//! # Errors (Lambda's rules)
//!
//! * An invocation error (function error, timeout, crash), an invalid partial batch response,
//!   or (with tumbling windows) a response without `state`: the batch failed. With
//!   `bisect_on_error` a failed batch of two or more records is split in half and each half is
//!   invoked (recursively, at once, without back-off); **splitting does not count as a retry**
//!   ("Splitting a batch does not count towards the retry quota"). Otherwise it is retried
//!   after a back-off (`retry_backoff`, doubling per retry, at most 64x).
//! * With `report_batch_item_failures`, a response naming records (by `SequenceNumber`) in
//!   `batchItemFailures` checkpoints up to (not including) the lowest one named and retries
//!   from there; that retry counts towards `maximum_retry_attempts` (the remaining records keep
//!   the retry count). A response naming the first record of the batch makes no progress and
//!   is a plain retry (no bisection).
//! * After `maximum_retry_attempts` retries (`-1`: forever) the (sub-)batch is discarded: with
//!   an `on_failure` queue one message per discarded batch is sent (Lambda's invocation record,
//!   [`FailureRecord`], condition `RetryAttemptsExhausted`; `approximateInvokeCount` is the
//!   number of invocations that included those records), then processing continues after it.
//!   Records older than `maximum_record_age` are discarded before invoking (condition
//!   `RecordAgeExceeded`).
//! * An unknown function (Lambda: the batch never reached the function) is retried forever
//!   without counting, like Lambda's service errors.
//!
//! # Tumbling windows
//!
//! With `tumbling_window`, each record belongs to the window (aligned to the epoch) of its
//! creation time; invocations carry `window`, `state`, `shardId`, `eventSourceARN`,
//! `isFinalInvokeForWindow` and `isWindowTerminatedEarly`, and hold records of one window only.
//! The `state` of the first invocation of a window is `{}`; the function must answer with
//! `{"state": {..}}` and that state is passed to the next invocation of the window on this
//! shard. The state is committed together with the checkpoint, so a failed invocation is
//! retried with the same input state and records (a partial batch response commits the
//! returned state with the records before the failed one). Once the window's end has passed
//! (wall clock) and every record of the window has been read (the shard is caught up, a later
//! record was read, or the shard ended), a final invocation (`isFinalInvokeForWindow: true`)
//! delivers the records not yet delivered (possibly none) with the accumulated state; after it
//! succeeds (or is discarded) the state is dropped. A returned state over 1 MiB makes the next
//! invocation a final one with no records and `isWindowTerminatedEarly: true`; the window then
//! continues with `{}`. When a shard ends its open window is closed (final invocation) and child
//! shards start fresh windows.
//!
//! # DynamoDB Local
//!
//! DynamoDB Local reports `ApproximateCreationDateTime` rounded down to the **minute** (real
//! DynamoDB: to the second), which would put every record of a short window into a window that
//! has already ended. With a stream ARN of DynamoDB Local (region `ddblocal`) the mapping
//! therefore estimates each record's creation time from when it first read it, within the
//! reported minute ([`estimate_creation_time`]), and puts that (whole seconds) in the event's
//! `ApproximateCreationDateTime`. Its `awsRegion` becomes `us-east-1` ([`crate::REGION`]).
//!
//! # ParallelizationFactor
//!
//! With a factor above 1 (and no tumbling window), each shard's records are read once and dealt
//! to that many lanes by a hash of their partition key (the table's `HASH` key, from
//! `DescribeStream`). Each lane batches, invokes, retries, bisects and discards on its own, one
//! invocation at a time, so records of one partition key stay in order while up to `factor`
//! batches of the shard run at once. A lane's checkpoint is its own; the shard is finished when
//! every lane is. Lambda keeps tumbling-window state per shard, so a windowed mapping runs one
//! lane (with a warning).
//!
//! # Not emulated
//!
//! Event filtering, checkpoints surviving a restart of the
//! mapping (a new poller starts from `starting_position`), the 6 MiB limit counting the state.
//! `function_timeout` is informational: the [`Invoker`] enforces it.

mod event;
mod shard;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::Shard;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::functions::StreamEventDef;
use crate::invoke::Invoker;

pub use event::{
    account_of, attribute_value_json, batch_item_failures, estimate_creation_time, function_arn,
    item_json, lambda_event, lambda_record, region_of, reported_creation_time, response_state,
    rfc3339, window_bounds, window_event, FailureRecord, WindowProperties,
};

/// Lambda's largest stream batch size.
pub const MAX_BATCH_SIZE: i32 = 10_000;
/// Lambda's default stream batch size.
pub const DEFAULT_BATCH_SIZE: i32 = 100;
/// Lambda's largest `MaximumBatchingWindowInSeconds`.
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);
/// Lambda's largest `TumblingWindowInSeconds`.
pub const MAX_TUMBLING_WINDOW: Duration = Duration::from_secs(900);
/// Lambda's largest `MaximumRetryAttempts` (besides -1, infinite).
pub const MAX_RETRY_ATTEMPTS: i64 = 10_000;
/// A tumbling-window state larger than this (serialised JSON) terminates the window early.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;
/// Lambda's synchronous invocation payload limit, which bounds a batch.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// How often the coordinator looks for new shards.
pub const SHARD_REFRESH: Duration = Duration::from_secs(2);
/// Lambda's largest `ParallelizationFactor`.
pub const MAX_PARALLELIZATION_FACTOR: u32 = 10;

/// `StartingPosition` of a stream mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartingPosition {
    /// All records in the stream.
    TrimHorizon,
    /// Only records written after the mapping started.
    #[default]
    Latest,
}

impl FromStr for StartingPosition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "TRIM_HORIZON" => Ok(StartingPosition::TrimHorizon),
            "LATEST" => Ok(StartingPosition::Latest),
            other => Err(format!(
                "unsupported StartingPosition {other:?} (TRIM_HORIZON or LATEST)"
            )),
        }
    }
}

/// The on-failure destination: an SQS queue (Lambda also allows SNS; the template uses SQS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnFailure {
    pub queue_url: String,
    pub queue_arn: String,
}

/// One DynamoDB stream event-source mapping (SAM `DynamoDB` event).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMapping {
    /// The function to invoke (the name the [`Invoker`] knows it by).
    pub function: String,
    /// The table's `LatestStreamArn`.
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    /// `BatchSize`: 1..=10000 (default 100). Values outside are clamped, with a warning.
    pub batch_size: i32,
    /// `MaximumBatchingWindowInSeconds` (0..=300 s).
    pub batching_window: Duration,
    /// `TumblingWindowInSeconds` (1..=900 s); `None` (or zero): no windows.
    pub tumbling_window: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts`: -1 = until the records expire (forever here), else 0..=10000.
    pub maximum_retry_attempts: i64,
    /// `MaximumRecordAgeInSeconds`; `None` = -1 (no limit).
    pub maximum_record_age: Option<Duration>,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// `DestinationConfig.OnFailure`.
    pub on_failure: Option<OnFailure>,
    /// The function's timeout (informational: the [`Invoker`] enforces it).
    pub function_timeout: Duration,
    /// First back-off before retrying a failed batch; doubles per retry (at most 64x).
    pub retry_backoff: Duration,
    /// Pause between `GetRecords` calls when a shard is caught up (Lambda: 4 per second).
    pub poll_interval: Duration,
    /// How coarse the stream's `ApproximateCreationDateTime` is: 1 s for DynamoDB, 60 s for
    /// DynamoDB Local (see the module docs). [`StreamMapping::new`] picks it from the ARN.
    pub creation_time_resolution: Duration,
    /// `ParallelizationFactor` (1..=10): batches of one shard in flight at once.
    pub parallelization_factor: u32,
}

impl StreamMapping {
    /// A mapping with Lambda's defaults: `LATEST`, batch size 100, no batching or tumbling
    /// window, no bisection, infinite retries, no partial batch responses, no destination, a
    /// 3 s function timeout; 1 s retry back-off, 250 ms polling.
    pub fn new(function: impl Into<String>, stream_arn: impl Into<String>) -> Self {
        let stream_arn = stream_arn.into();
        let creation_time_resolution = if stream_arn.split(':').nth(3) == Some("ddblocal") {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(1)
        };
        StreamMapping {
            function: function.into(),
            stream_arn,
            starting_position: StartingPosition::Latest,
            batch_size: DEFAULT_BATCH_SIZE,
            batching_window: Duration::ZERO,
            tumbling_window: None,
            bisect_on_error: false,
            maximum_retry_attempts: -1,
            maximum_record_age: None,
            report_batch_item_failures: false,
            on_failure: None,
            function_timeout: Duration::from_secs(3),
            retry_backoff: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            creation_time_resolution,
            parallelization_factor: 1,
        }
    }

    /// The mapping a template's `DynamoDB` event declares. The caller resolves the stream ARN
    /// and the on-failure queue (`def.on_failure_queue_logical_id`).
    pub fn from_event(
        def: &StreamEventDef,
        function: impl Into<String>,
        stream_arn: impl Into<String>,
        on_failure: Option<OnFailure>,
        function_timeout: Duration,
    ) -> Self {
        let mut mapping = StreamMapping::new(function, stream_arn);
        mapping.starting_position = def.starting_position.parse().unwrap_or_else(|err| {
            tracing::warn!(function = %mapping.function, "{err}; using LATEST");
            StartingPosition::Latest
        });
        mapping.batch_size = def.batch_size;
        mapping.batching_window = def.batching_window;
        mapping.tumbling_window = def.tumbling_window;
        mapping.bisect_on_error = def.bisect_on_error;
        mapping.maximum_retry_attempts = def.maximum_retry_attempts;
        mapping.report_batch_item_failures = def.report_batch_item_failures;
        mapping.on_failure = on_failure;
        mapping.function_timeout = function_timeout;
        mapping.parallelization_factor = def.parallelization_factor;
        mapping
    }
}

/// Counters of one poller, for tests and observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Invocations made (including retries, bisected halves and final window invocations).
    pub invocations: u64,
    /// Records handed to the function (a redelivered record counts again).
    pub records_delivered: u64,
    /// Re-invocations of a batch (or its remainder) after a failure; bisections not included.
    pub retries: u64,
    /// Failed batches split in two.
    pub bisections: u64,
    /// Batches given up (retries exhausted or records too old).
    pub discarded_batches: u64,
    /// Records in those batches.
    pub records_discarded: u64,
    /// Failure records sent to the on-failure queue.
    pub failure_records_sent: u64,
    /// Invocations that returned an error (function error, timeout, crash, unknown function).
    pub invoke_errors: u64,
    /// Tumbling windows closed by a final invocation (that succeeded or was discarded),
    /// including early terminations.
    pub windows_closed: u64,
    /// Shards whose first shard iterator was obtained (their records are being read).
    pub shards_opened: u64,
    /// Shards read to their end and fully processed.
    pub shards_finished: u64,
}

#[derive(Debug, Default)]
struct Counters {
    invocations: AtomicU64,
    records_delivered: AtomicU64,
    retries: AtomicU64,
    bisections: AtomicU64,
    discarded_batches: AtomicU64,
    records_discarded: AtomicU64,
    failure_records_sent: AtomicU64,
    invoke_errors: AtomicU64,
    windows_closed: AtomicU64,
    shards_opened: AtomicU64,
    shards_finished: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamStats {
            invocations: get(&self.invocations),
            records_delivered: get(&self.records_delivered),
            retries: get(&self.retries),
            bisections: get(&self.bisections),
            discarded_batches: get(&self.discarded_batches),
            records_discarded: get(&self.records_discarded),
            failure_records_sent: get(&self.failure_records_sent),
            invoke_errors: get(&self.invoke_errors),
            windows_closed: get(&self.windows_closed),
            shards_opened: get(&self.shards_opened),
            shards_finished: get(&self.shards_finished),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// What every shard worker of a mapping shares.
struct Ctx {
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    mapping: StreamMapping,
    invoker: Arc<dyn Invoker>,
    counters: Arc<Counters>,
    function_arn: String,
    /// The table's `HASH` key attribute, from `DescribeStream` (lanes deal records by it).
    hash_key: std::sync::OnceLock<String>,
}

/// A running DynamoDB stream event-source mapping. Stop it with [`StreamPoller::stop`];
/// dropping it asks the tasks to stop without waiting for them.
#[derive(Debug)]
pub struct StreamPoller {
    function: String,
    stream_arn: String,
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl StreamPoller {
    /// Spawns the mapping's tasks (on the current Tokio runtime) and returns at once.
    /// `streams` talks to DynamoDB Streams (DynamoDB Local), `sqs` to the on-failure queue.
    pub fn start(
        streams: aws_sdk_dynamodbstreams::Client,
        sqs: aws_sdk_sqs::Client,
        mapping: StreamMapping,
        invoker: Arc<dyn Invoker>,
    ) -> StreamPoller {
        let mapping = normalise(mapping);
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let function = mapping.function.clone();
        let stream_arn = mapping.stream_arn.clone();
        let ctx = Arc::new(Ctx {
            streams,
            sqs,
            function_arn: function_arn(&mapping.function, &mapping.stream_arn),
            mapping,
            invoker,
            counters: Arc::clone(&counters),
            hash_key: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn(coordinate(ctx, stop_rx));
        StreamPoller {
            function,
            stream_arn,
            stop_tx,
            task: Some(task),
            counters,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.counters.snapshot()
    }

    /// Stops the mapping: each shard finishes the invocation in flight (and, if that
    /// invocation exhausted the batch's retries, sends its failure record), then stops: no
    /// retries, no final window invocations, nothing else is flushed. Returns the final counters.
    pub async fn stop(mut self) -> StreamStats {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::error!(function = %self.function, stream = %self.stream_arn, "stream mapping task failed: {err}");
            }
        }
        self.counters.snapshot()
    }
}

impl Drop for StreamPoller {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}

/// Clamps the mapping into Lambda's limits, warning about what it changes.
fn normalise(mut m: StreamMapping) -> StreamMapping {
    if !(1..=MAX_BATCH_SIZE).contains(&m.batch_size) {
        let clamped = m.batch_size.clamp(1, MAX_BATCH_SIZE);
        tracing::warn!(function = %m.function, "stream batch size {} is outside 1..={MAX_BATCH_SIZE}; using {clamped}", m.batch_size);
        m.batch_size = clamped;
    }
    if m.batching_window > MAX_BATCHING_WINDOW {
        tracing::warn!(function = %m.function, "batching window {:?} is longer than Lambda's maximum; using {MAX_BATCHING_WINDOW:?}", m.batching_window);
        m.batching_window = MAX_BATCHING_WINDOW;
    }
    match m.tumbling_window {
        Some(w) if w.is_zero() => m.tumbling_window = None,
        Some(w) if w > MAX_TUMBLING_WINDOW => {
            tracing::warn!(function = %m.function, "tumbling window {w:?} is longer than Lambda's maximum; using {MAX_TUMBLING_WINDOW:?}");
            m.tumbling_window = Some(MAX_TUMBLING_WINDOW);
        }
        _ => {}
    }
    if !(-1..=MAX_RETRY_ATTEMPTS).contains(&m.maximum_retry_attempts) {
        let clamped = m.maximum_retry_attempts.clamp(-1, MAX_RETRY_ATTEMPTS);
        tracing::warn!(function = %m.function, "MaximumRetryAttempts {} is outside -1..={MAX_RETRY_ATTEMPTS}; using {clamped}", m.maximum_retry_attempts);
        m.maximum_retry_attempts = clamped;
    }
    if m.poll_interval.is_zero() {
        m.poll_interval = Duration::from_millis(10);
    }
    if !(1..=MAX_PARALLELIZATION_FACTOR).contains(&m.parallelization_factor) {
        let clamped = m
            .parallelization_factor
            .clamp(1, MAX_PARALLELIZATION_FACTOR);
        tracing::warn!(function = %m.function, "ParallelizationFactor {} is outside 1..={MAX_PARALLELIZATION_FACTOR}; using {clamped}", m.parallelization_factor);
        m.parallelization_factor = clamped;
    }
    if m.parallelization_factor > 1 && m.tumbling_window.is_some() {
        tracing::warn!(function = %m.function, "a tumbling window keeps its state per shard; ParallelizationFactor {} runs as 1", m.parallelization_factor);
        m.parallelization_factor = 1;
    }
    m
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardStatus {
    /// Waiting for its parent; will be read from this position.
    Pending(StartingPosition),
    Running,
    Finished,
}

#[derive(Debug)]
struct ShardEntry {
    parent: Option<String>,
    status: ShardStatus,
}

/// Discovers shards and runs one worker per shard, parents before children.
async fn coordinate(ctx: Arc<Ctx>, mut stop_rx: watch::Receiver<bool>) {
    let mapping = &ctx.mapping;
    tracing::info!(
        function = %mapping.function,
        stream = %mapping.stream_arn,
        starting_position = ?mapping.starting_position,
        batch_size = mapping.batch_size,
        tumbling_window = ?mapping.tumbling_window,
        bisect_on_error = mapping.bisect_on_error,
        maximum_retry_attempts = mapping.maximum_retry_attempts,
        report_batch_item_failures = mapping.report_batch_item_failures,
        parallelization_factor = mapping.parallelization_factor,
        "DynamoDB stream event-source mapping started"
    );
    let mut shards: HashMap<String, ShardEntry> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut described_once = false;
    let mut workers: JoinSet<String> = JoinSet::new();
    loop {
        if *stop_rx.borrow() {
            break;
        }
        match describe_shards(&ctx).await {
            Ok(found) => {
                for shard in found {
                    let Some(id) = shard.shard_id().map(str::to_owned) else {
                        continue;
                    };
                    if shards.contains_key(&id) {
                        continue;
                    }
                    let closed = shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some();
                    let status = match (described_once, mapping.starting_position) {
                        (false, StartingPosition::Latest) if closed => ShardStatus::Finished,
                        (false, StartingPosition::Latest) => {
                            ShardStatus::Pending(StartingPosition::Latest)
                        }
                        _ => ShardStatus::Pending(StartingPosition::TrimHorizon),
                    };
                    tracing::debug!(function = %mapping.function, shard = %id, parent = ?shard.parent_shard_id(), ?status, "found shard");
                    shards.insert(
                        id.clone(),
                        ShardEntry {
                            parent: shard.parent_shard_id().map(str::to_owned),
                            status,
                        },
                    );
                    order.push(id);
                }
                described_once = true;
            }
            Err(err) => {
                tracing::warn!(function = %mapping.function, stream = %mapping.stream_arn, "DescribeStream failed: {err}");
            }
        }
        // Start every pending shard whose parent is done (or unknown: trimmed from the stream).
        let ready: Vec<(String, StartingPosition)> = order
            .iter()
            .filter_map(|id| {
                let entry = shards.get(id)?;
                let ShardStatus::Pending(position) = entry.status else {
                    return None;
                };
                let parent_done = entry.parent.as_ref().is_none_or(|parent| {
                    shards
                        .get(parent)
                        .is_none_or(|p| p.status == ShardStatus::Finished)
                });
                parent_done.then(|| (id.clone(), position))
            })
            .collect();
        for (id, position) in ready {
            if let Some(entry) = shards.get_mut(&id) {
                entry.status = ShardStatus::Running;
            }
            let worker = shard::ShardWorker::new(Arc::clone(&ctx), id, position, stop_rx.clone());
            workers.spawn(worker.run());
        }
        tokio::select! {
            _ = stop_rx.changed() => {}
            Some(done) = workers.join_next(), if !workers.is_empty() => match done {
                Ok(id) => {
                    if !*stop_rx.borrow() {
                        if let Some(entry) = shards.get_mut(&id) {
                            entry.status = ShardStatus::Finished;
                        }
                        bump(&ctx.counters.shards_finished);
                        tracing::info!(function = %mapping.function, shard = %id, "shard finished");
                    }
                }
                Err(err) => tracing::error!(function = %mapping.function, "shard worker failed: {err}"),
            },
            () = tokio::time::sleep(SHARD_REFRESH) => {}
        }
    }
    while let Some(done) = workers.join_next().await {
        if let Err(err) = done {
            tracing::error!(function = %mapping.function, "shard worker failed: {err}");
        }
    }
    tracing::info!(function = %mapping.function, stream = %mapping.stream_arn, "DynamoDB stream event-source mapping stopped");
}

/// Every shard of the stream (all `DescribeStream` pages).
async fn describe_shards(ctx: &Ctx) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = ctx
            .streams
            .describe_stream()
            .stream_arn(&ctx.mapping.stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e).to_string())?;
        let Some(description) = out.stream_description else {
            return Ok(shards);
        };
        let hash_key = description
            .key_schema()
            .iter()
            .find(|k| k.key_type() == &aws_sdk_dynamodbstreams::types::KeyType::Hash)
            .map(|k| k.attribute_name().to_owned());
        if let Some(name) = hash_key {
            let _ = ctx.hash_key.set(name);
        }
        shards.extend(description.shards.unwrap_or_default());
        match description.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => return Ok(shards),
        }
    }
}
