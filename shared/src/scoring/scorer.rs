//! The scheduled side of scoring: fold pending lead-log parts into lead states, recompute leads
//! from their stored history, keep the leaderboard shards, materialise decay.
//!
//! **Exactly once.** A lead's state is written only as a function of its stored events: new
//! events that all sort after the state's last applied one are folded in ([`apply_batch`]);
//! anything else — a late event, or an event applied before because a crashed run or a
//! re-flushed window left its part behind — re-folds the lead's whole history from the events
//! table. Every write is conditional on the version read, so concurrent runs cannot interleave,
//! and a part is deleted only after its leads are written: a crash anywhere leaves parts that
//! the next run folds again, harmlessly.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use tracing::warn;

use super::board::{board_shard, BoardEntry, BoardShard, BOARD_SHARDS};
use super::log::{LeadEvent, LeadLogPart};
use super::{
    apply_batch, load_or_init, BatchResult, LeadFailure, LeadFailures, LeadScore, RuleStore,
    ScoreRules, ScoredEvent, REPAIR_BATCH,
};
use crate::store::StoreError;

/// A lead's stored state and its version (0: not stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadRecord {
    pub state: LeadScore,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeadWriteError {
    /// The item changed since its version was read.
    #[error("changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the stream side writes lead-log parts: all the rollup's window path needs.
#[async_trait]
pub trait LeadLogSink: Send + Sync {
    /// Idempotent: the same part twice leaves one item with the same content.
    async fn put_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError>;
}

/// Where lead states, the lead log, the leaderboard and the leads that could not be written live
/// (the analytics table in AWS).
#[async_trait]
pub trait LeadStore: LeadLogSink + LeadFailures {
    /// Up to `limit` pending parts, oldest window first.
    async fn pending_log(&self, limit: usize) -> Result<Vec<LeadLogPart>, StoreError>;
    async fn delete_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError>;
    /// The stored states of these leads (absent ones left out).
    async fn get_leads(&self, lead_ids: &[&str])
        -> Result<HashMap<String, LeadRecord>, StoreError>;
    /// Writes `state` as version `expected + 1` if the stored version is still `expected`.
    async fn put_lead(
        &self,
        lead_id: &str,
        state: &LeadScore,
        expected: u64,
    ) -> Result<(), LeadWriteError>;
    async fn get_board(&self, shard: u32) -> Result<BoardShard, StoreError>;
    /// Writes the shard as version `shard.version + 1` if the stored version is still
    /// `shard.version`.
    async fn put_board(&self, shard: u32, board: &BoardShard) -> Result<(), LeadWriteError>;
}

/// The source of truth for one lead (the events table's `byLead` index).
#[async_trait]
pub trait LeadHistory: Send + Sync {
    /// Every processed event of the lead.
    async fn lead_events(&self, lead_id: &str) -> Result<Vec<ScoredEvent>, StoreError>;
    /// Newest first: every event of the lead that sorts after `after` (all of them when `None`),
    /// then up to `older` events that do not.
    async fn latest_events(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        older: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError>;
}

/// What one lead's update wrote.
struct LeadUpdate {
    lead_id: String,
    state: LeadScore,
    /// Re-folded from history rather than advanced.
    recomputed: bool,
    conflicts: usize,
}

/// A page's report and the leads written in full (state and leaderboard entry).
struct WrittenLeads {
    summary: ScoreReport,
    written_ids: Vec<String>,
}

/// Figures of one run, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreReport {
    pub parts: usize,
    pub events: usize,
    pub leads: usize,
    /// Leads re-folded from their history (late or repeated events, or asked for).
    pub recomputed: usize,
    /// Writes that lost a race and were redone.
    pub conflicts: usize,
    pub board_shards: usize,
    /// Leads whose materialised score is below their score (decay task).
    pub decayed: usize,
    /// Leads that could not be written: recorded with their reason, repaired later.
    pub failed: usize,
    /// Leads recorded as failed before that were written now.
    pub repaired: usize,
}

impl ScoreReport {
    pub(super) fn add(&mut self, other: &ScoreReport) {
        self.parts += other.parts;
        self.events += other.events;
        self.leads += other.leads;
        self.recomputed += other.recomputed;
        self.conflicts += other.conflicts;
        self.board_shards += other.board_shards;
        self.decayed += other.decayed;
        self.failed += other.failed;
        self.repaired += other.repaired;
    }
}

/// Parts one page of a run folds (fewer when a query page of 1 MB holds fewer). A lead touched
/// in two pages is written twice, so pages are large: at most 50 × 2,000 events in memory.
const PARTS_PER_PAGE: usize = 50;
/// Lead writes in flight at once.
const CONCURRENCY: usize = 16;
/// Attempts at a versioned write before giving up (the next run redoes it).
const MAX_ATTEMPTS: usize = 8;

pub struct Scorer<L, H, R> {
    pub(super) leads: L,
    history: H,
    pub(super) rules: R,
    /// Parts one run folds at most; the next scheduled run continues.
    max_parts_per_run: usize,
}

impl<L: LeadStore, H: LeadHistory, R: RuleStore> Scorer<L, H, R> {
    pub fn new(leads: L, history: H, rules: R) -> Self {
        Self {
            leads,
            history,
            rules,
            max_parts_per_run: 500,
        }
    }

    #[must_use]
    pub fn with_max_parts_per_run(mut self, max: usize) -> Self {
        self.max_parts_per_run = max.max(1);
        self
    }

    /// Folds pending lead-log parts into lead states and the board, oldest first.
    pub async fn fold_pending(&self, now: DateTime<Utc>) -> Result<ScoreReport, StoreError> {
        let rules = load_or_init(&self.rules).await?.rules;
        let failed = self.failed_leads().await?;
        let mut report = ScoreReport::default();
        while report.parts < self.max_parts_per_run {
            let page = PARTS_PER_PAGE.min(self.max_parts_per_run - report.parts);
            let parts = self.leads.pending_log(page).await?;
            if parts.is_empty() {
                break;
            }
            let mut by_lead: BTreeMap<String, Vec<ScoredEvent>> = BTreeMap::new();
            for entry in parts.iter().flat_map(|p| &p.entries) {
                let LeadEvent { lead_id, event } = entry;
                by_lead
                    .entry(lead_id.clone())
                    .or_default()
                    .push(event.clone());
                report.events += 1;
            }
            let page = self
                .update_leads(&rules, by_lead, false, now, &failed)
                .await?;
            report.add(&page);
            self.leads.delete_log(&parts).await?;
            report.parts += parts.len();
        }
        Ok(report)
    }

    /// Re-folds one lead from its stored history under the current rules.
    pub async fn recompute_lead(
        &self,
        lead_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ScoreReport, StoreError> {
        let rules = load_or_init(&self.rules).await?.rules;
        let targets = BTreeMap::from([(lead_id.to_owned(), Vec::new())]);
        // Whether or not it failed before: a successful re-fold clears any record.
        let failed = HashSet::from([lead_id.to_owned()]);
        self.update_leads(&rules, targets, true, now, &failed).await
    }

    /// Re-folds the leads recorded as failed (the oldest [`REPAIR_BATCH`] by lead id) from
    /// their stored events; those written are cleared, the others keep their new reason.
    pub async fn repair_failed(&self, now: DateTime<Utc>) -> Result<ScoreReport, StoreError> {
        let failures = self.leads.failures(REPAIR_BATCH).await?;
        if failures.is_empty() {
            return Ok(ScoreReport::default());
        }
        let rules = load_or_init(&self.rules).await?.rules;
        let failed: HashSet<String> = failures.iter().map(|f| f.lead_id.clone()).collect();
        let targets = failed.iter().map(|id| (id.clone(), Vec::new())).collect();
        self.update_leads(&rules, targets, true, now, &failed).await
    }

    /// The ids of every lead recorded as failed (a run clears those it writes).
    pub(super) async fn failed_leads(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .leads
            .failures(usize::MAX)
            .await?
            .into_iter()
            .map(|f| f.lead_id)
            .collect())
    }

    /// Re-folds every lead of one leaderboard shard under `rules`.
    pub(super) async fn recompute_shard(
        &self,
        rules: &ScoreRules,
        shard: u32,
        now: DateTime<Utc>,
        failed: &HashSet<String>,
    ) -> Result<ScoreReport, StoreError> {
        let board = self.leads.get_board(shard).await?;
        let targets = board
            .entries
            .into_keys()
            .map(|id| (id, Vec::new()))
            .collect();
        self.update_leads(rules, targets, true, now, failed).await
    }

    /// Materialises every board entry's decayed score as of `now`.
    pub async fn materialise_decay(&self, now: DateTime<Utc>) -> Result<ScoreReport, StoreError> {
        let rules = load_or_init(&self.rules).await?.rules;
        let mut report = ScoreReport::default();
        for shard in 0..BOARD_SHARDS {
            let mut attempts = 0;
            loop {
                let mut board = self.leads.get_board(shard).await?;
                if board.version == 0 {
                    break;
                }
                let decayed = board.materialise_decay(&rules.decay, now);
                match self.leads.put_board(shard, &board).await {
                    Ok(()) => {
                        report.board_shards += 1;
                        report.decayed += decayed;
                        report.leads += board.entries.len();
                        break;
                    }
                    Err(LeadWriteError::Conflict) if attempts + 1 < MAX_ATTEMPTS => {
                        attempts += 1;
                        report.conflicts += 1;
                    }
                    Err(LeadWriteError::Conflict) => return Err(gave_up("leaderboard shard")),
                    Err(LeadWriteError::Store(e)) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    /// Folds events into these leads: incrementally when they all sort after the stored state
    /// (unless `force_recompute`), otherwise by re-folding the lead's history plus them.
    ///
    /// A lead that cannot be written (nor its leaderboard shard) does not stop the others: it is
    /// recorded as failed with its reason, and its events stay in the events table for the
    /// repair to re-fold. Leads of `failed` (recorded as failed before) that are written now are
    /// cleared. Only a failure to record a failure fails the run, so nothing is dropped unseen.
    async fn update_leads(
        &self,
        rules: &ScoreRules,
        by_lead: BTreeMap<String, Vec<ScoredEvent>>,
        force_recompute: bool,
        now: DateTime<Utc>,
        failed: &HashSet<String>,
    ) -> Result<ScoreReport, StoreError> {
        let ids: Vec<&str> = by_lead.keys().map(String::as_str).collect();
        let mut stored = self.leads.get_leads(&ids).await?;
        let results: Vec<(String, Result<Option<LeadUpdate>, StoreError>)> = stream::iter(by_lead)
            .map(|(lead_id, events)| {
                let first = stored.remove(&lead_id);
                async move {
                    let result = self
                        .write_lead(rules, lead_id.clone(), events, force_recompute, first)
                        .await;
                    (lead_id, result)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut written = Vec::new();
        // Leads with neither a state nor events: nothing to write, nothing left to repair.
        let mut empty = Vec::new();
        let mut failures = Vec::new();
        for (lead_id, result) in results {
            match result {
                Ok(Some(update)) => written.push(update),
                Ok(None) => empty.push(lead_id),
                Err(e) => {
                    warn!(lead_id, error = %e, "lead not written; recorded for repair");
                    failures.push(LeadFailure::new(lead_id, &e.to_string(), now));
                }
            }
        }
        let (mut report, board_failures) = self.finish(rules, written, now).await?;
        failures.extend(board_failures);
        if !failures.is_empty() {
            self.leads.record_failures(&failures).await?;
        }
        let failed_now: HashSet<&str> = failures.iter().map(|f| f.lead_id.as_str()).collect();
        let repaired: Vec<String> = report
            .written_ids
            .drain(..)
            .chain(empty)
            .filter(|id| failed.contains(id) && !failed_now.contains(id.as_str()))
            .collect();
        if !repaired.is_empty() {
            self.leads.clear_failures(&repaired).await?;
        }
        report.summary.failed = failures.len();
        report.summary.repaired = repaired.len();
        Ok(report.summary)
    }

    /// Writes the leaderboard entries of the leads written. A shard that cannot be written
    /// records its leads as failed (a re-fold writes them again).
    async fn finish(
        &self,
        rules: &ScoreRules,
        results: Vec<LeadUpdate>,
        now: DateTime<Utc>,
    ) -> Result<(WrittenLeads, Vec<LeadFailure>), StoreError> {
        let mut report = ScoreReport {
            leads: results.len(),
            ..Default::default()
        };
        let mut by_shard: BTreeMap<u32, Vec<(String, BoardEntry)>> = BTreeMap::new();
        for update in results {
            report.recomputed += usize::from(update.recomputed);
            report.conflicts += update.conflicts;
            by_shard
                .entry(board_shard(&update.lead_id))
                .or_default()
                .push((
                    update.lead_id,
                    BoardEntry::of(&update.state, &rules.decay, now),
                ));
        }
        report.board_shards = by_shard.len();
        let outcomes: Vec<(Vec<String>, Result<usize, StoreError>)> = stream::iter(by_shard)
            .map(|(shard, entries)| async move {
                let ids = entries.iter().map(|(id, _)| id.clone()).collect();
                (ids, self.update_board(shard, entries).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut written_ids = Vec::new();
        let mut failures = Vec::new();
        for (ids, outcome) in outcomes {
            match outcome {
                Ok(conflicts) => {
                    report.conflicts += conflicts;
                    written_ids.extend(ids);
                }
                Err(e) => {
                    warn!(error = %e, leads = ids.len(), "leaderboard shard not written; its leads are recorded for repair");
                    let reason = format!("leaderboard: {e}");
                    failures.extend(ids.into_iter().map(|id| LeadFailure::new(id, &reason, now)));
                }
            }
        }
        report.leads = report.leads.saturating_sub(failures.len());
        Ok((
            WrittenLeads {
                summary: report,
                written_ids,
            },
            failures,
        ))
    }

    /// Folds and writes one lead until the versioned write succeeds (`first`: its stored
    /// record as already read, `None` if absent). `None` for a lead with neither a stored state
    /// nor events.
    async fn write_lead(
        &self,
        rules: &ScoreRules,
        lead_id: String,
        new_events: Vec<ScoredEvent>,
        force_recompute: bool,
        first: Option<LeadRecord>,
    ) -> Result<Option<LeadUpdate>, StoreError> {
        let mut stored = first;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                stored = self.leads.get_leads(&[&lead_id]).await?.remove(&lead_id);
            }
            let version = stored.as_ref().map_or(0, |r| r.version);
            let incremental = match (force_recompute, stored.take()) {
                (true, _) => None,
                (false, record) => {
                    match apply_batch(record.map(|r| r.state), rules, new_events.clone()) {
                        BatchResult::Incremental(state, _) => Some(*state),
                        BatchResult::NeedsRecompute => None,
                    }
                }
            };
            let recomputed = incremental.is_none();
            let state = match incremental {
                Some(state) => state,
                None => {
                    // The index read is eventually consistent: the new events are stored, so
                    // they join the history even if the index does not show them yet.
                    let mut history = self.history.lead_events(&lead_id).await?;
                    history.extend(new_events.iter().cloned());
                    LeadScore::fold(rules, history).0
                }
            };
            if version == 0 && state.events == 0 {
                return Ok(None);
            }
            match self.leads.put_lead(&lead_id, &state, version).await {
                Ok(()) => {
                    return Ok(Some(LeadUpdate {
                        lead_id,
                        state,
                        recomputed,
                        conflicts: attempt,
                    }))
                }
                Err(LeadWriteError::Conflict) => {
                    warn!(lead_id, attempt, "lead changed concurrently; folding again");
                }
                Err(LeadWriteError::Store(e)) => return Err(e),
            }
        }
        Err(gave_up("lead"))
    }

    async fn update_board(
        &self,
        shard: u32,
        entries: Vec<(String, BoardEntry)>,
    ) -> Result<usize, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut board = self.leads.get_board(shard).await?;
            for (lead_id, entry) in &entries {
                if entry.last_activity_ms == 0 {
                    board.entries.remove(lead_id);
                } else {
                    board.entries.insert(lead_id.clone(), *entry);
                }
            }
            match self.leads.put_board(shard, &board).await {
                Ok(()) => return Ok(attempt),
                Err(LeadWriteError::Conflict) => continue,
                Err(LeadWriteError::Store(e)) => return Err(e),
            }
        }
        Err(gave_up("leaderboard shard"))
    }
}

fn gave_up(what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{what} kept changing concurrently; the next run retries"
    ))
}

#[async_trait]
impl<T: LeadLogSink + ?Sized> LeadLogSink for std::sync::Arc<T> {
    async fn put_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError> {
        (**self).put_log(parts).await
    }
}

#[async_trait]
impl<T: LeadStore + ?Sized> LeadStore for std::sync::Arc<T> {
    async fn pending_log(&self, limit: usize) -> Result<Vec<LeadLogPart>, StoreError> {
        (**self).pending_log(limit).await
    }
    async fn delete_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError> {
        (**self).delete_log(parts).await
    }
    async fn get_leads(
        &self,
        lead_ids: &[&str],
    ) -> Result<HashMap<String, LeadRecord>, StoreError> {
        (**self).get_leads(lead_ids).await
    }
    async fn put_lead(
        &self,
        lead_id: &str,
        state: &LeadScore,
        expected: u64,
    ) -> Result<(), LeadWriteError> {
        (**self).put_lead(lead_id, state, expected).await
    }
    async fn get_board(&self, shard: u32) -> Result<BoardShard, StoreError> {
        (**self).get_board(shard).await
    }
    async fn put_board(&self, shard: u32, board: &BoardShard) -> Result<(), LeadWriteError> {
        (**self).put_board(shard, board).await
    }
}

#[async_trait]
impl<T: LeadHistory + ?Sized> LeadHistory for std::sync::Arc<T> {
    async fn lead_events(&self, lead_id: &str) -> Result<Vec<ScoredEvent>, StoreError> {
        (**self).lead_events(lead_id).await
    }
    async fn latest_events(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        older: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError> {
        (**self).latest_events(lead_id, after, older).await
    }
}

#[cfg(test)]
#[path = "scorer_tests.rs"]
mod tests;
