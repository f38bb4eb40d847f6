//! Exactly-once rollups from the events stream.
//!
//! **Mechanism.** The stream mapping uses tumbling windows: Lambda checkpoints the `state` the
//! function returns together with the stream position, so a window's aggregates accumulate
//! exactly once in the state whatever the retries. On the window's final invoke the state is
//! written as **parts**: items keyed by (day, window start, shard, first sequence number in the
//! state, chunk), each holding that window's aggregates for one UTC day. A part is written with a
//! plain `PutItem` of deterministic content, so a retried or crashed flush rewrites the same items
//! and changes nothing: the part key is the idempotency marker the design notes call for, with no
//! transaction and no per-aggregate write. A window costs about one write unit per KB of its
//! aggregates (a busy hour is ~9 KB), instead of one `ADD` per aggregate per event.
//!
//! **Reading** a day merges its compacted snapshot (if any) with the parts newer than the
//! snapshot's cutoff. **Reconciliation** (scheduled) recomputes a *settled* day — no event of it
//! processed within the settle period — from the events table, reports the drift against what
//! the parts say (it should be zero), and writes the recomputation as the new snapshot, which
//! supersedes (and deletes) the parts it covers.

mod handler;
mod reconcile;
mod stored;
mod window;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use handler::{RollupError, RollupHandler, RollupInvocation, Task, TaskInput};
pub use reconcile::{ReconcileReport, Reconciler};
pub use window::{
    Accumulated, WindowError, WindowOutcome, WindowProcessor, WindowResult, MAX_PART_BYTES,
};

use crate::rollup::{Rollup, WindowAggregates};
use crate::store::StoreError;

/// One window's aggregates for one UTC day (one chunk of them when large).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePart {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub window_start_ms: i64,
    pub shard: String,
    pub first_sequence: String,
    pub chunk: u32,
    /// [`Rollup::encode`] of this chunk (hours of `day` only).
    pub body: String,
}

/// A compacted day: the recomputation from the events table as of `upto_ms`, in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactedDay {
    pub upto_ms: i64,
    /// [`Rollup::encode`] of the day's hours.
    pub chunks: Vec<String>,
    /// The same aggregates summed over the whole day ([`WindowAggregates::encode`]), which reads
    /// of whole days use: a tenth of the hours' size or less. Empty for a snapshot written before
    /// daily summaries existed (the next reconciliation adds them).
    pub daily: Vec<String>,
}

/// What a read of a whole day needs: its newest daily summary and every part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayTotals {
    pub upto_ms: i64,
    /// [`WindowAggregates::encode`] chunks of the summary.
    pub daily: Vec<String>,
    /// Every part, whether or not the summary covers it (`window_start_ms <= upto_ms`).
    pub parts: Vec<AggregatePart>,
}

impl DayTotals {
    /// The whole day's aggregates: the summary plus the parts newer than its cutoff.
    pub fn merged(&self) -> Result<WindowAggregates, crate::rollup::DecodeError> {
        let mut day = WindowAggregates::default();
        for chunk in &self.daily {
            day.merge(&WindowAggregates::decode(chunk)?);
        }
        for part in self
            .parts
            .iter()
            .filter(|p| p.window_start_ms > self.upto_ms)
        {
            for hour in Rollup::decode(&part.body)?.hours.values() {
                day.merge(hour);
            }
        }
        Ok(day)
    }
}

/// Everything stored for one day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredDay {
    /// The newest complete snapshot.
    pub compacted: Option<CompactedDay>,
    /// Every part, whether or not the snapshot supersedes it (`window_start_ms <= upto_ms`).
    pub parts: Vec<AggregatePart>,
    /// Sort keys of superseded snapshot versions, for cleanup.
    pub stale_snapshots: Vec<String>,
}

impl StoredDay {
    /// The day's aggregates: the snapshot plus the parts newer than its cutoff.
    pub fn merged(&self) -> Result<Rollup, crate::rollup::DecodeError> {
        let mut rollup = Rollup::default();
        let upto = self.compacted.as_ref().map_or(i64::MIN, |c| c.upto_ms);
        for chunk in self.compacted.iter().flat_map(|c| &c.chunks) {
            rollup.merge(&Rollup::decode(chunk)?);
        }
        for part in self.parts.iter().filter(|p| p.window_start_ms > upto) {
            rollup.merge(&Rollup::decode(&part.body)?);
        }
        Ok(rollup)
    }
}

/// Where aggregates live (the analytics table in AWS).
#[async_trait]
pub trait AggregateStore: Send + Sync {
    /// Idempotent: writing the same part twice leaves one item with the same content.
    async fn put_parts(&self, parts: &[AggregatePart]) -> Result<(), StoreError>;
    async fn read_day(&self, day: &str) -> Result<StoredDay, StoreError>;
    /// The day's newest complete daily summary and its parts, in one read (sort keys from the
    /// summaries on, skipping the hourly snapshot); `None` when the day has no summary yet.
    async fn read_day_totals(&self, day: &str) -> Result<Option<DayTotals>, StoreError>;
    /// Writes a new snapshot, then removes what it supersedes (older snapshots, covered parts).
    async fn write_compacted(
        &self,
        day: &str,
        compacted: &CompactedDay,
        superseded: &StoredDay,
    ) -> Result<(), StoreError>;
}

/// A stored, processed event as reconciliation reads it from the events table.
#[derive(Debug, Clone)]
pub struct ProcessedEvent {
    pub event_json: String,
    pub processed_at: DateTime<Utc>,
}

/// The source of truth, by hour (the events table's `byHourShard` index, every shard of the hour).
#[async_trait]
pub trait HourlyEvents: Send + Sync {
    /// Every `PROCESSED` event whose timestamp falls in `hour` (`YYYY-MM-DDTHH`).
    async fn processed_in_hour(&self, hour: &str) -> Result<Vec<ProcessedEvent>, StoreError>;
}

/// What the query side reads: one UTC day's aggregates, by hour or as a whole.
#[async_trait]
pub trait AggregateReader: Send + Sync {
    /// `day` is `YYYY-MM-DD`; a day with nothing stored is empty.
    async fn day(&self, day: &str) -> Result<Rollup, StoreError>;

    /// The whole day's aggregates, for reads that need no hour of it on its own.
    async fn whole_day(&self, day: &str) -> Result<WindowAggregates, StoreError> {
        Ok(summed(self.day(day).await?, day))
    }
}

/// `day`'s hours of `rollup`, summed.
fn summed(rollup: Rollup, day: &str) -> WindowAggregates {
    rollup.days().remove(day).unwrap_or_default()
}

fn unreadable(day: &str, e: crate::rollup::DecodeError) -> StoreError {
    StoreError::Unavailable(format!("aggregates of {day} unreadable: {e}"))
}

#[async_trait]
impl<T: AggregateStore + ?Sized> AggregateReader for T {
    async fn day(&self, day: &str) -> Result<Rollup, StoreError> {
        self.read_day(day)
            .await?
            .merged()
            .map_err(|e| unreadable(day, e))
    }

    /// The daily summary when the day has one (one small read), else the hours summed (a day
    /// not reconciled yet costs a second read).
    async fn whole_day(&self, day: &str) -> Result<WindowAggregates, StoreError> {
        match self.read_day_totals(day).await? {
            Some(totals) => totals.merged().map_err(|e| unreadable(day, e)),
            None => Ok(summed(self.day(day).await?, day)),
        }
    }
}
