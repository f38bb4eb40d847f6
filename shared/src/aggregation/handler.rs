//! The rollup function's entry: a stream window invocation or a scheduled task.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::{AggregateStore, HourlyEvents, Reconciler, WindowError, WindowProcessor};
use crate::observability::Metrics;
use crate::request_cost::RequestCost;
use crate::scoring::{
    LeadHistory, LeadRecompute, LeadStore, RecomputeJobs, RuleStore, ScoreReport, Scorer,
};
use crate::store::StoreError;
use crate::stream_window::WindowEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Recompute settled days of aggregates from the events table, repair and report drift.
    Reconcile,
    /// Re-fold one lead (`leadId`) from its stored events under the current rules now, or
    /// request a recompute of every lead and start it.
    Recompute,
    /// Continue the requested recompute of every lead, if there is one.
    #[serde(rename = "recompute-requested")]
    RecomputeRequested,
    /// Publish the stage changes decay and changed thresholds made (no event writes them).
    Stages,
    /// Put the leads stored before the leaderboard index on it (once, after an upgrade):
    /// re-folds them from their events; `from` continues where the last run stopped.
    Reindex,
}

/// A task invocation's input, e.g. `{"task": "reconcile", "days": 31}`,
/// `{"task": "recompute", "leadId": "email:a@example.com"}`.
#[derive(Debug, Clone)]
pub struct TaskInput {
    pub task: Task,
    /// Reconcile the last `days` UTC days, today included (default 2).
    pub days: Option<u32>,
    /// Or exactly this day (`YYYY-MM-DD`).
    pub day: Option<String>,
    /// Read every day in full, even one unchanged since its last reconciliation.
    pub full: bool,
    /// Recompute only this lead.
    pub lead_id: Option<String>,
    /// Where a reindex continues (`next` of the run before).
    pub from: Option<String>,
}

/// Everything the function can be invoked with, read in one pass (no untagged buffering): a
/// scheduled task's constant input (`task`, `days`, `day`) or a stream window (the rest).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupInvocation {
    #[serde(default)]
    pub task: Option<Task>,
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub day: Option<String>,
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub lead_id: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(rename = "Records", default)]
    pub records: Vec<crate::stream_window::StreamRecord>,
    #[serde(default)]
    pub window: Option<crate::stream_window::TimeWindow>,
    #[serde(default)]
    pub state: Option<Value>,
    #[serde(default)]
    pub shard_id: Option<String>,
    #[serde(default)]
    pub is_final_invoke_for_window: bool,
    #[serde(default)]
    pub is_window_terminated_early: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("input is neither a stream window nor a task: {0}")]
    BadInput(String),
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct RollupHandler<A, L, H, R> {
    window: WindowProcessor<Arc<A>>,
    reconciler: Reconciler<Arc<A>, Arc<H>>,
    scorer: Scorer<Arc<L>, Arc<H>, R>,
    recompute_budget: std::time::Duration,
}

impl<A, L, H, R> RollupHandler<A, L, H, R>
where
    A: AggregateStore + 'static,
    L: LeadStore + RecomputeJobs + 'static,
    H: HourlyEvents + LeadHistory + 'static,
    R: RuleStore,
{
    pub fn new(
        aggregates: Arc<A>,
        leads: Arc<L>,
        events: Arc<H>,
        rules: R,
        settle: Duration,
    ) -> Self {
        Self {
            window: WindowProcessor::new(aggregates.clone()),
            reconciler: Reconciler::new(aggregates, events.clone(), settle),
            scorer: Scorer::new(leads, events, rules),
            recompute_budget: std::time::Duration::from_secs(60),
        }
    }

    /// How long a recompute run may start new leaderboard shards.
    #[must_use]
    pub fn with_recompute_budget(mut self, budget: std::time::Duration) -> Self {
        self.recompute_budget = budget;
        self
    }

    pub fn scorer(&self) -> &Scorer<Arc<L>, Arc<H>, R> {
        &self.scorer
    }

    pub async fn handle(&self, input: Value) -> Result<Value, RollupError> {
        let invocation: RollupInvocation =
            serde_json::from_value(input).map_err(|e| RollupError::BadInput(e.to_string()))?;
        self.handle_invocation(invocation, Utc::now()).await
    }

    pub async fn handle_invocation(
        &self,
        input: RollupInvocation,
        now: DateTime<Utc>,
    ) -> Result<Value, RollupError> {
        let mut metrics = Metrics::new("rollup");
        let result = if let Some(task) = input.task {
            let task = TaskInput {
                task,
                days: input.days,
                day: input.day,
                full: input.full,
                lead_id: input.lead_id,
                from: input.from,
            };
            // A task's DynamoDB cost is its price (reconciliation reads days of events).
            let (result, cost) = RequestCost::measure(self.task(task, now, &mut metrics)).await;
            cost.add_to(&mut metrics);
            result
        } else {
            if input.window.is_none() && input.records.is_empty() {
                tracing::warn!("invoked with neither a task nor a stream window; nothing to do");
            }
            let event = WindowEvent {
                records: input.records,
                window: input.window,
                state: input.state,
                shard_id: input.shard_id,
                is_final_invoke_for_window: input.is_final_invoke_for_window,
                is_window_terminated_early: input.is_window_terminated_early,
            };
            // Scores do not wait for the window: the batch's leads are written before the
            // window's state is answered or flushed. A failure of either fails the batch, and
            // Lambda retries it with the window state it had, so the aggregates count nothing
            // twice and the leads (written already, or not) re-fold to the same states.
            let mut accumulated = self.window.accumulate(&event)?;
            let lead_events = std::mem::take(&mut accumulated.lead_events);
            metrics.count("LeadEvents", lead_events.len() as u64);
            if !lead_events.is_empty() {
                let report = self.scorer.score_events(lead_events, now).await?;
                score_metrics(&report, &mut metrics);
            }
            let result = self.window.finish(accumulated).await?;
            let outcome = &result.outcome;
            metrics.count("RollupRecords", outcome.records as u64);
            metrics.count("RollupEvents", outcome.events as u64);
            metrics.count("RollupSkippedRecords", outcome.skipped as u64);
            metrics.count("RollupPartsWritten", outcome.parts_written as u64);
            serde_json::to_value(result.response).map_err(|e| RollupError::BadInput(e.to_string()))
        };
        metrics.flush();
        result
    }

    async fn task(
        &self,
        task: TaskInput,
        now: DateTime<Utc>,
        metrics: &mut Metrics,
    ) -> Result<Value, RollupError> {
        match task.task {
            Task::Reconcile => {
                let days: Vec<String> = match &task.day {
                    Some(day) => vec![day.clone()],
                    None => (0..task.days.unwrap_or(2).max(1))
                        .map(|back| {
                            (now - Duration::days(i64::from(back)))
                                .format("%Y-%m-%d")
                                .to_string()
                        })
                        .collect(),
                };
                let mut reports = Vec::new();
                for day in days {
                    let report = if task.full {
                        self.reconciler.reconcile_day(&day, now).await?
                    } else {
                        self.reconciler.reconcile_if_changed(&day, now).await?
                    };
                    metrics.count("DaysReconciled", u64::from(report.settled));
                    metrics.count("DaysUnchanged", u64::from(report.unchanged));
                    metrics.count("RollupDriftCounters", report.drift_counters as u64);
                    metrics.count("RollupDriftEvents", report.drift_events);
                    info!(day = %report.day, settled = report.settled, unchanged = report.unchanged, events = report.events, drift = report.drift_counters, written = report.written, "reconciled");
                    reports.push(json!({
                        "day": report.day, "settled": report.settled, "unchanged": report.unchanged, "events": report.events,
                        "driftCounters": report.drift_counters, "driftEvents": report.drift_events, "written": report.written,
                    }));
                }
                Ok(json!({"task": "reconcile", "days": reports}))
            }
            Task::Recompute => match &task.lead_id {
                Some(lead_id) => {
                    let report = self.scorer.recompute_lead(lead_id, now).await?;
                    Ok(score_result("recompute", &report, metrics))
                }
                None => {
                    let job_id = uuid::Uuid::now_v7().to_string();
                    let leads = self.scorer.request_all(job_id, now).await?;
                    info!(leads, "recompute of every lead requested");
                    self.run_requested(now, metrics).await
                }
            },
            Task::RecomputeRequested => self.run_requested(now, metrics).await,
            Task::Reindex => {
                let (report, next) = self
                    .scorer
                    .reindex(task.from, now, self.recompute_budget)
                    .await?;
                let mut result = score_result("reindex", &report, metrics);
                result["next"] = json!(next);
                Ok(result)
            }
            Task::Stages => {
                let report = self.scorer.check_stages(now).await?;
                Ok(score_result("stages", &report, metrics))
            }
        }
    }

    async fn run_requested(
        &self,
        now: DateTime<Utc>,
        metrics: &mut Metrics,
    ) -> Result<Value, RollupError> {
        let (report, progress) = self
            .scorer
            .run_requested(now, self.recompute_budget)
            .await?;
        metrics.count("RecomputeShards", u64::from(progress.shards_done));
        let mut result = score_result("recompute-requested", &report, metrics);
        if let Some(job_id) = &progress.job_id {
            info!(
                job_id,
                shards = progress.shards_done,
                next_shard = progress.next_shard,
                finished = progress.finished,
                "recompute job"
            );
            result["job"] = json!({
                "id": job_id, "shardsDone": progress.shards_done,
                "nextShard": progress.next_shard, "finished": progress.finished,
            });
        }
        Ok(result)
    }
}

fn score_metrics(report: &ScoreReport, metrics: &mut Metrics) {
    metrics.count("LeadEventsScored", report.events as u64);
    metrics.count("LeadsWritten", report.leads as u64);
    metrics.count("LeadsRecomputed", report.recomputed as u64);
    metrics.count("LeadWriteConflicts", report.conflicts as u64);
    metrics.count("LeadWriteFailures", report.failed as u64);
    metrics.count("LeadsRepaired", report.repaired as u64);
    metrics.count("StageChanges", report.stage_changes as u64);
}

fn score_result(task: &str, report: &ScoreReport, metrics: &mut Metrics) -> Value {
    score_metrics(report, metrics);
    info!(
        task,
        events = report.events,
        leads = report.leads,
        recomputed = report.recomputed,
        conflicts = report.conflicts,
        failed = report.failed,
        repaired = report.repaired,
        stage_changes = report.stage_changes,
        "scores updated"
    );
    json!({
        "task": task, "events": report.events, "leads": report.leads,
        "recomputed": report.recomputed, "conflicts": report.conflicts,
        "failed": report.failed, "repaired": report.repaired,
        "stageChanges": report.stage_changes,
    })
}

#[async_trait::async_trait]
impl<T: AggregateStore + ?Sized> AggregateStore for Arc<T> {
    async fn put_parts(&self, parts: &[super::AggregatePart]) -> Result<(), StoreError> {
        (**self).put_parts(parts).await
    }

    async fn read_day(&self, day: &str) -> Result<super::StoredDay, StoreError> {
        (**self).read_day(day).await
    }

    async fn read_day_totals(&self, day: &str) -> Result<Option<super::DayTotals>, StoreError> {
        (**self).read_day_totals(day).await
    }

    async fn write_compacted(
        &self,
        day: &str,
        compacted: &super::CompactedDay,
        superseded: &super::StoredDay,
    ) -> Result<(), StoreError> {
        (**self).write_compacted(day, compacted, superseded).await
    }
}

#[async_trait::async_trait]
impl<T: HourlyEvents + ?Sized> HourlyEvents for Arc<T> {
    async fn processed_in_hour(
        &self,
        hour: &str,
    ) -> Result<Vec<super::ProcessedEvent>, StoreError> {
        (**self).processed_in_hour(hour).await
    }
}
