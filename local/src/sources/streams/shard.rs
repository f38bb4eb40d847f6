//! One shard of a stream mapping: reading, batching, windows, retries, bisection, discards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::event::{
    batch_item_failures, estimate_creation_time, lambda_event, lambda_record,
    reported_creation_time, response_state, window_bounds, window_event, FailureRecord,
    WindowProperties,
};
use super::{add, bump, Ctx, StartingPosition, MAX_PAYLOAD_BYTES, MAX_STATE_BYTES};
use crate::invoke::InvokeError;

/// Records per `GetRecords` call (the API's maximum).
const GET_RECORDS_LIMIT: i32 = 1000;
/// Pause after a failed DynamoDB Streams or SQS call.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Room left in the 6 MiB payload for the event's envelope.
const ENVELOPE_BYTES: usize = 16 * 1024;

/// A record as read, with its Lambda JSON built once.
#[derive(Debug, Clone)]
struct Rec {
    seq: String,
    /// A hash of the record's partition key: which lane takes it.
    partition: u64,
    /// The creation time the mapping uses (see `estimate_creation_time`).
    created: DateTime<Utc>,
    json: Value,
    size: usize,
}

/// The open tumbling window of the shard.
#[derive(Debug, Clone)]
struct OpenWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Committed together with the checkpoint.
    state: Value,
    /// The last state was over 1 MiB: the next invocation terminates the window early.
    terminate_early: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Invoke with the first `count` buffered records.
    Invoke {
        count: usize,
        kind: Kind,
    },
    /// Read more before deciding.
    Fetch,
    Wait(Duration),
    /// The shard ended and everything was processed.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Window {
        is_final: bool,
        terminated_early: bool,
    },
}

/// A part of the batch in delivery: the first `len` records of what is left.
#[derive(Debug, Clone, Copy)]
struct Span {
    len: usize,
    /// Retries already made (inherited by bisected halves and by a remainder).
    retries: i64,
    /// Invocations that included these records.
    invokes: u32,
}

/// How an invocation went.
#[derive(Debug)]
enum Verdict {
    Success {
        state: Option<Value>,
    },
    /// Records before `ok` succeeded (`ok` >= 1); retry from `ok`.
    Partial {
        ok: usize,
        state: Option<Value>,
    },
    Failed {
        /// `Unhandled` for function errors, timeouts and crashes.
        function_error: Option<String>,
        status_code: u16,
        /// Bisection applies (not to a partial response naming the first record).
        bisectable: bool,
        /// Counts towards `MaximumRetryAttempts` (not when the function was never reached).
        counts: bool,
    },
}

/// What a shard's reader hands one of its lanes (`ParallelizationFactor`).
enum LaneInput {
    Record(Rec),
    /// Whether the reader's last `GetRecords` found nothing new.
    CaughtUp(bool),
}

/// Records in flight from the reader to one lane; the reader waits when a lane is this far behind.
const LANE_BACKLOG: usize = 1000;

pub(super) struct ShardWorker {
    ctx: Arc<Ctx>,
    shard_id: String,
    /// A lane reads what its shard's reader deals it instead of the stream.
    feed: Option<tokio::sync::mpsc::Receiver<LaneInput>>,
    stop: super::super::StopSignal,
    start: StartingPosition,
    iterator: Option<String>,
    opened: bool,
    /// Records read and not yet processed or discarded, in order.
    buffer: VecDeque<Rec>,
    /// Sequence number of the last record read.
    last_read: Option<String>,
    /// Sequence number of the last record processed or discarded.
    checkpoint: Option<String>,
    previous_created: Option<DateTime<Utc>>,
    /// No more records will be read (the shard is closed and was read to its end, or is gone).
    ended: bool,
    /// The last `GetRecords` returned nothing.
    caught_up: bool,
    /// When the current batching window started.
    batch_started: Option<Instant>,
    /// When the last `GetRecords` call was made: Lambda polls a shard at most 4 times a second
    /// (`poll_interval`), however fast the function returns.
    last_fetch: Option<Instant>,
    window: Option<OpenWindow>,
}

impl ShardWorker {
    pub(super) fn new(
        ctx: Arc<Ctx>,
        shard_id: String,
        start: StartingPosition,
        stop_rx: watch::Receiver<bool>,
    ) -> Self {
        ShardWorker {
            ctx,
            shard_id,
            feed: None,
            stop: super::super::StopSignal::new(stop_rx),
            start,
            iterator: None,
            opened: false,
            buffer: VecDeque::new(),
            last_read: None,
            checkpoint: None,
            previous_created: None,
            ended: false,
            caught_up: false,
            batch_started: None,
            last_fetch: None,
            window: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.requested()
    }

    async fn pause(&mut self, duration: Duration) -> bool {
        self.stop.pause(duration).await
    }

    fn batch_size(&self) -> usize {
        usize::try_from(self.ctx.mapping.batch_size)
            .unwrap_or(1)
            .max(1)
    }

    /// Runs until the shard is finished or stop is requested; returns the shard id.
    pub(super) async fn run(self) -> String {
        let factor = self.ctx.mapping.parallelization_factor;
        if factor > 1 && self.feed.is_none() {
            return self.deal(factor as usize).await;
        }
        self.process().await
    }

    /// Reads the shard and deals its records to `factor` lanes by partition key, then waits for
    /// every lane to finish.
    async fn deal(mut self, factor: usize) -> String {
        let mut lanes = Vec::with_capacity(factor);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..factor {
            let (tx, rx) = tokio::sync::mpsc::channel(LANE_BACKLOG);
            let mut lane = ShardWorker::new(
                Arc::clone(&self.ctx),
                self.shard_id.clone(),
                self.start,
                self.stop.receiver(),
            );
            lane.feed = Some(rx);
            tasks.spawn(lane.process());
            lanes.push(tx);
        }
        tracing::debug!(function = %self.ctx.mapping.function, shard = %self.shard_id, lanes = factor, "reading shard into lanes");
        'reading: while !self.stopping() {
            self.fetch().await;
            while let Some(record) = self.buffer.pop_front() {
                let lane = &lanes[(record.partition % factor as u64) as usize];
                tokio::select! {
                    sent = lane.send(LaneInput::Record(record)) => if sent.is_err() { break 'reading },
                    _ = self.stop.stopped() => break 'reading,
                }
            }
            for lane in &lanes {
                let _ = lane.try_send(LaneInput::CaughtUp(self.caught_up));
            }
            if self.ended {
                break;
            }
            if self.caught_up && self.pause(self.ctx.mapping.poll_interval).await {
                break;
            }
        }
        // Closing the channels tells each lane the shard has ended (once it has drained them).
        drop(lanes);
        while tasks.join_next().await.is_some() {}
        self.shard_id
    }

    /// Batches and invokes the records of the shard (or of this lane) in order.
    async fn process(mut self) -> String {
        tracing::debug!(function = %self.ctx.mapping.function, shard = %self.shard_id, position = ?self.start, "reading shard");
        loop {
            if self.stopping() {
                break;
            }
            if !self.ended && self.buffer.len() <= self.batch_size() {
                self.fetch().await;
                if self.stopping() {
                    break;
                }
            }
            let step = if self.ctx.mapping.tumbling_window.is_some() {
                self.window_step()
            } else {
                self.plain_step()
            };
            match step {
                Step::Invoke { count, kind } => self.deliver(count, kind).await,
                Step::Fetch => {}
                Step::Wait(duration) => {
                    if self.pause(duration).await {
                        break;
                    }
                }
                Step::Finished => break,
            }
        }
        self.shard_id
    }

    // ------------------------------------------------------------------ reading

    /// One `GetRecords` call (opening an iterator first if needed); a lane takes what its
    /// reader has dealt it instead.
    async fn fetch(&mut self) {
        if let Some(feed) = self.feed.as_mut() {
            loop {
                match feed.try_recv() {
                    Ok(LaneInput::Record(record)) => {
                        if self.buffer.is_empty() {
                            self.batch_started = Some(Instant::now());
                        }
                        self.buffer.push_back(record);
                    }
                    Ok(LaneInput::CaughtUp(caught_up)) => self.caught_up = caught_up,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        self.ended = true;
                        return;
                    }
                }
            }
        }
        if let Some(last) = self.last_fetch {
            let next = last + self.ctx.mapping.poll_interval;
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() && self.pause(wait).await {
                return;
            }
        }
        self.last_fetch = Some(Instant::now());
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => match self.open_iterator().await {
                Some(iterator) => iterator,
                None => return,
            },
        };
        let result = self
            .ctx
            .streams
            .get_records()
            .shard_iterator(&iterator)
            .limit(GET_RECORDS_LIMIT)
            .send()
            .await;
        match result {
            Ok(out) => {
                let now = Utc::now();
                let n = out.records().len();
                for record in out.records() {
                    self.push(record, now);
                }
                self.iterator = out.next_shard_iterator;
                if self.iterator.is_none() {
                    tracing::debug!(function = %self.ctx.mapping.function, shard = %self.shard_id, "shard read to its end");
                    self.ended = true;
                }
                self.caught_up = n == 0;
            }
            Err(err) => {
                let service = err.as_service_error();
                if service.is_some_and(|e| e.is_expired_iterator_exception()) {
                    tracing::debug!(shard = %self.shard_id, "shard iterator expired; opening a new one");
                } else if service.is_some_and(|e| e.is_trimmed_data_access_exception()) {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "records after the checkpoint were trimmed from the stream; continuing from TRIM_HORIZON");
                    self.last_read = None;
                    self.checkpoint = None;
                    self.start = StartingPosition::TrimHorizon;
                } else if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "shard no longer exists");
                    self.ended = true;
                } else {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "GetRecords failed: {}", aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err));
                    self.iterator = Some(iterator);
                    self.pause(ERROR_BACKOFF).await;
                }
            }
        }
    }

    /// `AFTER_SEQUENCE_NUMBER` of the last record read (or of the checkpoint), else the
    /// starting position. `None` when there is nothing to read (or on error, after a pause).
    async fn open_iterator(&mut self) -> Option<String> {
        let after = self.last_read.clone().or_else(|| self.checkpoint.clone());
        let mut request = self
            .ctx
            .streams
            .get_shard_iterator()
            .stream_arn(&self.ctx.mapping.stream_arn)
            .shard_id(&self.shard_id);
        request = match (&after, self.start) {
            (Some(seq), _) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            (None, StartingPosition::TrimHorizon) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            (None, StartingPosition::Latest) => {
                request.shard_iterator_type(ShardIteratorType::Latest)
            }
        };
        match request.send().await {
            Ok(out) => {
                if !self.opened {
                    self.opened = true;
                    bump(&self.ctx.counters.shards_opened);
                }
                match out.shard_iterator {
                    Some(iterator) => Some(iterator),
                    None => {
                        self.ended = true;
                        None
                    }
                }
            }
            Err(err) => {
                let service = err.as_service_error();
                if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "shard no longer exists");
                    self.ended = true;
                } else if after.is_some()
                    && service.is_some_and(|e| e.is_trimmed_data_access_exception())
                {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "records after the checkpoint were trimmed; continuing from TRIM_HORIZON");
                    self.last_read = None;
                    self.checkpoint = None;
                    self.start = StartingPosition::TrimHorizon;
                } else {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "GetShardIterator failed: {}", aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err));
                    self.pause(ERROR_BACKOFF).await;
                }
                None
            }
        }
    }

    fn push(&mut self, record: &Record, read_at: DateTime<Utc>) {
        let Some(seq) = record
            .dynamodb()
            .and_then(|d| d.sequence_number())
            .map(str::to_owned)
        else {
            tracing::warn!(shard = %self.shard_id, "skipping a stream record without a sequence number");
            return;
        };
        let reported = reported_creation_time(record).unwrap_or(read_at);
        let created = estimate_creation_time(
            reported,
            self.ctx.mapping.creation_time_resolution,
            read_at,
            self.previous_created,
        );
        self.previous_created = Some(created);
        let json = lambda_record(record, &self.ctx.mapping.stream_arn, Some(created));
        let size = serde_json::to_vec(&json).map_or(0, |v| v.len());
        let partition = partition_hash(&json, self.ctx.hash_key.get().map(String::as_str));
        if self.buffer.is_empty() {
            self.batch_started = Some(Instant::now());
        }
        self.last_read = Some(seq.clone());
        self.buffer.push_back(Rec {
            seq,
            partition,
            created,
            json,
            size,
        });
    }

    // ------------------------------------------------------------------ deciding

    /// How many of the first `limit` buffered records fit in one batch (at least one).
    fn batch_len(&self, limit: usize, reserved: usize) -> usize {
        let budget = MAX_PAYLOAD_BYTES.saturating_sub(ENVELOPE_BYTES + reserved);
        let mut total = 0usize;
        let mut n = 0usize;
        for record in self.buffer.iter().take(limit.min(self.batch_size())) {
            total += record.size + 1;
            if n > 0 && total > budget {
                break;
            }
            n += 1;
        }
        n
    }

    fn batching_window_left(&self) -> Duration {
        let elapsed = self
            .batch_started
            .map_or(Duration::MAX, |started| started.elapsed());
        self.ctx.mapping.batching_window.saturating_sub(elapsed)
    }

    fn plain_step(&self) -> Step {
        if self.buffer.is_empty() {
            return if self.ended {
                Step::Finished
            } else {
                Step::Wait(self.ctx.mapping.poll_interval)
            };
        }
        let n = self.batch_len(self.buffer.len(), 0);
        let full = n >= self.batch_size() || n < self.buffer.len();
        let left = self.batching_window_left();
        if full || self.ended || left.is_zero() {
            Step::Invoke {
                count: n,
                kind: Kind::Plain,
            }
        } else if !self.caught_up {
            Step::Fetch
        } else {
            Step::Wait(left.min(self.ctx.mapping.poll_interval))
        }
    }

    fn window_step(&mut self) -> Step {
        let poll = self.ctx.mapping.poll_interval;
        let width = self
            .ctx
            .mapping
            .tumbling_window
            .unwrap_or(Duration::from_secs(1));
        if self.window.is_none() {
            let Some(first) = self.buffer.front() else {
                return if self.ended {
                    Step::Finished
                } else {
                    Step::Wait(poll)
                };
            };
            let (start, end) = window_bounds(first.created, width);
            self.window = Some(OpenWindow {
                start,
                end,
                state: json!({}),
                terminate_early: false,
            });
        }
        let Some(window) = &self.window else {
            return Step::Wait(poll);
        };
        if window.terminate_early {
            return Step::Invoke {
                count: 0,
                kind: Kind::Window {
                    is_final: true,
                    terminated_early: true,
                },
            };
        }
        let end = window.end;
        let state_bytes = serde_json::to_vec(&window.state).map_or(0, |v| v.len());
        let in_window = self.buffer.iter().take_while(|r| r.created < end).count();
        let later_record = in_window < self.buffer.len();
        let now = Utc::now();
        let over = now >= end || later_record || self.ended;
        // Every record of the window has been read.
        let complete = over && (later_record || self.ended || self.caught_up);
        let n = if in_window == 0 {
            0
        } else {
            self.batch_len(in_window, state_bytes)
        };
        if complete && n == in_window {
            return Step::Invoke {
                count: n,
                kind: Kind::Window {
                    is_final: true,
                    terminated_early: false,
                },
            };
        }
        let non_final = Kind::Window {
            is_final: false,
            terminated_early: false,
        };
        if n > 0 && n < in_window {
            // A full batch of this window.
            return Step::Invoke {
                count: n,
                kind: non_final,
            };
        }
        let left = self.batching_window_left();
        if n > 0 && !over && left.is_zero() {
            return Step::Invoke {
                count: n,
                kind: non_final,
            };
        }
        if !self.caught_up && !self.ended {
            return Step::Fetch;
        }
        let until_end = (end - now).to_std().unwrap_or(Duration::ZERO);
        let mut wait = poll.min(until_end.max(Duration::from_millis(10)));
        if n > 0 && !left.is_zero() {
            wait = wait.min(left);
        }
        Step::Wait(wait)
    }

    // ------------------------------------------------------------------ delivering

    /// Delivers the first `count` buffered records until each of them is processed or discarded
    /// (or stop is requested: the rest stays buffered, uncommitted).
    async fn deliver(&mut self, count: usize, kind: Kind) {
        let mut spans: VecDeque<Span> = VecDeque::from([Span {
            len: count,
            retries: 0,
            invokes: 0,
        }]);
        while let Some(mut span) = spans.pop_front() {
            if self.stopping() {
                return;
            }
            let is_final = matches!(kind, Kind::Window { is_final: true, .. }) && spans.is_empty();
            let terminated_early = matches!(
                kind,
                Kind::Window {
                    terminated_early: true,
                    ..
                }
            );
            if let Some(max_age) = self.ctx.mapping.maximum_record_age {
                let now = Utc::now();
                let expired = self
                    .buffer
                    .iter()
                    .take(span.len)
                    .take_while(|r| (now - r.created).to_std().is_ok_and(|age| age > max_age))
                    .count();
                if expired > 0 {
                    self.discard(expired, span.invokes, "RecordAgeExceeded", None, 200)
                        .await;
                    span.len -= expired;
                    if span.len == 0 && !is_final {
                        continue;
                    }
                }
            }

            let windowed = matches!(kind, Kind::Window { .. });
            let records: Vec<Value> = self
                .buffer
                .iter()
                .take(span.len)
                .map(|r| r.json.clone())
                .collect();
            let event = match &self.window {
                Some(window) if windowed => window_event(
                    records,
                    &WindowProperties {
                        start: window.start,
                        end: window.end,
                        state: &window.state,
                        shard_id: &self.shard_id,
                        stream_arn: &self.ctx.mapping.stream_arn,
                        is_final,
                        terminated_early,
                    },
                ),
                _ => lambda_event(records),
            };
            bump(&self.ctx.counters.invocations);
            add(&self.ctx.counters.records_delivered, span.len);
            span.invokes = span.invokes.saturating_add(1);
            tracing::debug!(function = %self.ctx.mapping.function, shard = %self.shard_id, records = span.len, is_final, "invoking with stream batch");
            let result = self
                .ctx
                .invoker
                .invoke(&self.ctx.mapping.function, event)
                .await;
            let verdict = self.judge(result, span.len, windowed);

            let (function_error, status_code, counts) = match verdict {
                Verdict::Success { state } => {
                    self.commit(span.len, state);
                    if is_final {
                        self.close_window(terminated_early);
                    } else if self.state_too_large() {
                        // Remaining spans are delivered after the early final invocation.
                        return;
                    }
                    continue;
                }
                Verdict::Partial { ok, state } => {
                    self.commit(ok, state);
                    span.len -= ok;
                    tracing::info!(function = %self.ctx.mapping.function, shard = %self.shard_id, processed = ok, remaining = span.len, "partial batch failure; retrying from the first failed record");
                    if self.state_too_large() {
                        return;
                    }
                    (None, 200, true)
                }
                Verdict::Failed {
                    function_error,
                    status_code,
                    bisectable,
                    counts,
                } => {
                    if self.ctx.mapping.bisect_on_error && bisectable && span.len >= 2 {
                        let first = span.len / 2;
                        bump(&self.ctx.counters.bisections);
                        tracing::info!(function = %self.ctx.mapping.function, shard = %self.shard_id, records = span.len, "batch failed; bisecting");
                        spans.push_front(Span {
                            len: span.len - first,
                            ..span
                        });
                        spans.push_front(Span { len: first, ..span });
                        continue;
                    }
                    (function_error, status_code, counts)
                }
            };

            // Retry, or give up.
            if !counts {
                if self
                    .pause(ERROR_BACKOFF.max(self.ctx.mapping.retry_backoff))
                    .await
                {
                    return;
                }
                spans.push_front(span);
                continue;
            }
            let max = self.ctx.mapping.maximum_retry_attempts;
            if max >= 0 && span.retries >= max {
                self.discard(
                    span.len,
                    span.invokes,
                    "RetryAttemptsExhausted",
                    function_error,
                    status_code,
                )
                .await;
                if is_final {
                    self.close_window(terminated_early);
                }
                continue;
            }
            span.retries += 1;
            bump(&self.ctx.counters.retries);
            let exponent = u32::try_from(span.retries - 1).unwrap_or(6).min(6);
            let backoff = self.ctx.mapping.retry_backoff.saturating_mul(1 << exponent);
            if self.pause(backoff).await {
                return;
            }
            spans.push_front(span);
        }
        if !self.buffer.is_empty() {
            // The next batching window starts when the invocation completes.
            self.batch_started = Some(Instant::now());
        }
    }

    fn judge(&self, result: Result<Value, InvokeError>, len: usize, windowed: bool) -> Verdict {
        let failed = |function_error: Option<&str>, bisectable: bool| Verdict::Failed {
            function_error: function_error.map(str::to_owned),
            status_code: 200,
            bisectable,
            counts: true,
        };
        let response = match result {
            Ok(response) => response,
            Err(InvokeError::UnknownFunction(name)) => {
                bump(&self.ctx.counters.invoke_errors);
                tracing::error!(shard = %self.shard_id, "no function named {name}; the batch will be retried until it exists");
                return Verdict::Failed {
                    function_error: None,
                    status_code: 404,
                    bisectable: false,
                    counts: false,
                };
            }
            Err(err) => {
                bump(&self.ctx.counters.invoke_errors);
                tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, records = len, "invocation failed: {err}");
                return failed(Some("Unhandled"), true);
            }
        };
        let state = if windowed {
            match response_state(&response) {
                Ok(state) => Some(state),
                Err(reason) => {
                    tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "invalid tumbling-window response ({reason}); the batch failed");
                    return failed(None, true);
                }
            }
        } else {
            None
        };
        if !self.ctx.mapping.report_batch_item_failures {
            return Verdict::Success { state };
        }
        let seqs: Vec<&str> = self
            .buffer
            .iter()
            .take(len)
            .map(|r| r.seq.as_str())
            .collect();
        match batch_item_failures(&response, &seqs) {
            Ok(None) => Verdict::Success { state },
            Ok(Some(0)) => failed(None, false),
            Ok(Some(ok)) => Verdict::Partial { ok, state },
            Err(reason) => {
                tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, "invalid partial batch response ({reason}); the whole batch failed");
                failed(None, true)
            }
        }
    }

    /// Checkpoints past the first `count` records and commits the window state with them.
    fn commit(&mut self, count: usize, state: Option<Value>) {
        for _ in 0..count {
            if let Some(record) = self.buffer.pop_front() {
                self.checkpoint = Some(record.seq);
            }
        }
        if let (Some(window), Some(state)) = (self.window.as_mut(), state) {
            window.state = state;
        }
    }

    /// After a commit: is the window's state over 1 MiB (the window terminates early)?
    fn state_too_large(&mut self) -> bool {
        let Some(window) = self.window.as_mut() else {
            return false;
        };
        let bytes = serde_json::to_vec(&window.state).map_or(0, |v| v.len());
        if bytes > MAX_STATE_BYTES {
            tracing::info!(function = %self.ctx.mapping.function, shard = %self.shard_id, bytes, "tumbling-window state over 1 MiB; terminating the window early");
            window.terminate_early = true;
        }
        window.terminate_early
    }

    /// After the final invocation of a window: drop its state. An early termination keeps the
    /// window open with a fresh state.
    fn close_window(&mut self, terminated_early: bool) {
        bump(&self.ctx.counters.windows_closed);
        if terminated_early {
            if let Some(window) = self.window.as_mut() {
                window.state = json!({});
                window.terminate_early = false;
            }
        } else {
            self.window = None;
        }
    }

    /// Gives up the first `count` buffered records: checkpoints past them and sends one
    /// failure record to the on-failure queue.
    async fn discard(
        &mut self,
        count: usize,
        invokes: u32,
        condition: &str,
        function_error: Option<String>,
        status_code: u16,
    ) {
        let records: Vec<Rec> = self.buffer.drain(..count.min(self.buffer.len())).collect();
        bump(&self.ctx.counters.discarded_batches);
        add(&self.ctx.counters.records_discarded, records.len());
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            tracing::error!(function = %self.ctx.mapping.function, shard = %self.shard_id, "a final window invocation without records failed {condition}; the window's state is dropped");
            return;
        };
        self.checkpoint = Some(last.seq.clone());
        let record = FailureRecord {
            request_id: uuid::Uuid::new_v4().to_string(),
            function_arn: self.ctx.function_arn.clone(),
            condition: condition.to_owned(),
            approximate_invoke_count: invokes,
            status_code,
            function_error,
            shard_id: self.shard_id.clone(),
            stream_arn: self.ctx.mapping.stream_arn.clone(),
            start_sequence_number: first.seq.clone(),
            end_sequence_number: last.seq.clone(),
            first_arrival: first.created,
            last_arrival: last.created,
            batch_size: records.len(),
            timestamp: Utc::now(),
        };
        let Some(destination) = self.ctx.mapping.on_failure.clone() else {
            tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, records = records.len(), first = %first.seq, last = %last.seq, "discarded a batch ({condition}); no on-failure destination");
            return;
        };
        tracing::warn!(function = %self.ctx.mapping.function, shard = %self.shard_id, records = records.len(), first = %first.seq, last = %last.seq, queue = %destination.queue_arn, "discarded a batch ({condition}); sending its failure record");
        let body = record.to_json().to_string();
        loop {
            let sent = self
                .ctx
                .sqs
                .send_message()
                .queue_url(&destination.queue_url)
                .message_body(&body)
                .send()
                .await;
            match sent {
                Ok(_) => {
                    bump(&self.ctx.counters.failure_records_sent);
                    return;
                }
                Err(err) => {
                    tracing::warn!(queue = %destination.queue_url, "sending a failure record failed: {}", aws_sdk_sqs::error::DisplayErrorContext(&err));
                    if self.pause(ERROR_BACKOFF).await {
                        tracing::error!(queue = %destination.queue_url, "stopping: failure record not sent: {body}");
                        return;
                    }
                }
            }
        }
    }
}

/// A hash of a record's partition key (`dynamodb.Keys.<hash_key>`), or of all its keys
/// when the key's name is not known.
fn partition_hash(record: &Value, hash_key: Option<&str>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let keys = &record["dynamodb"]["Keys"];
    let key = hash_key.map_or(keys, |name| &keys[name]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.to_string().hash(&mut hasher);
    hasher.finish()
}
