//! Real-time scoring: fold each stream batch's events into their leads' states the moment the
//! batch arrives, recompute leads from their stored history, and keep the leaderboard index.
//!
//! **Why per batch, on the lead item.** A lead's state is small (a few hundred bytes), so
//! writing it costs one write unit, and its leaderboard entry (score and last activity, projected
//! into an index whose keys never change) one more: two units per scored event, fewer when a
//! batch holds several events of one lead, since each lead is written once per batch. A log
//! folded on a schedule was cheaper (0.4 units per event every 30 minutes) but up to 35 minutes
//! late; the batch path is within seconds, and its cost does not depend on how often anyone
//! reads.
//!
//! **Exactly once.** A lead's state is written only as a function of its stored events: new
//! events that all sort after the state's last applied one are folded in ([`apply_batch`]);
//! anything else — a late event, or an event applied before because a retried, bisected or
//! redelivered batch carries it again, or a crash landed some lead writes and not others —
//! re-folds the lead's history from the events table: from the checkpoint the state keeps
//! when every new event sorts after it (busy leads, whose events arrive a little out of order),
//! else from the first event. Every write is conditional on the version read, so concurrent
//! invocations cannot interleave.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use tracing::warn;

use super::{
    apply_batch, load_or_init, BatchResult, BoardLead, CheckpointPolicy, LeadEvent, LeadFailure,
    LeadFailures, LeadScore, RuleStore, ScoreRules, ScoredEvent, StageChange, REPAIR_BATCH,
};
use crate::store::StoreError;

/// A lead's stored state, the stage last published for it, and its version (0: not stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadRecord {
    pub state: LeadScore,
    pub version: u64,
    pub stage: Option<String>,
}

/// One lead write: the state, the stage it publishes, and the change that publishing is (on the
/// item, where the analytics table's stream carries it to the bus).
#[derive(Debug, Clone, Copy)]
pub struct LeadWrite<'a> {
    pub lead_id: &'a str,
    pub state: &'a LeadScore,
    pub stage: Option<&'a str>,
    pub change: Option<&'a StageChange>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeadWriteError {
    /// The item changed since its version was read.
    #[error("changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where lead states (each with its leaderboard entry) and the leads that could not be written
/// live (the analytics table in AWS).
#[async_trait]
pub trait LeadStore: LeadFailures {
    /// The stored states of these leads (absent ones left out).
    async fn get_leads(&self, lead_ids: &[&str])
        -> Result<HashMap<String, LeadRecord>, StoreError>;
    /// Writes the lead (and with it its leaderboard entry, its stage and the change that moved
    /// it, if any) as version `expected + 1` if the stored version is still `expected`.
    async fn write_lead(&self, write: LeadWrite<'_>, expected: u64) -> Result<(), LeadWriteError>;
    /// [`LeadStore::write_lead`] of a state alone, no stage published.
    async fn put_lead(
        &self,
        lead_id: &str,
        state: &LeadScore,
        expected: u64,
    ) -> Result<(), LeadWriteError> {
        let write = LeadWrite {
            lead_id,
            state,
            stage: None,
            change: None,
        };
        self.write_lead(write, expected).await
    }
    /// The leads of one leaderboard shard.
    async fn shard_board(&self, shard: u32) -> Result<Vec<BoardLead>, StoreError>;
    /// Leads stored without their leaderboard entry (written before the leaderboard index
    /// existed), up to about `limit`, from `from` (a key this method returned) on; and where the
    /// next page starts (`None`: done). Stores that always write the entry have none.
    async fn unboarded_leads(
        &self,
        _from: Option<String>,
        _limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        Ok((Vec::new(), None))
    }
    /// The ids of the leads in one leaderboard shard.
    async fn shard_leads(&self, shard: u32) -> Result<Vec<String>, StoreError> {
        Ok(self
            .shard_board(shard)
            .await?
            .into_iter()
            .map(|l| l.lead_id)
            .collect())
    }
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
    /// In fold order: up to `limit` events of the lead that sort after `after` (from the first
    /// when `None`).
    async fn events_after(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError>;
}

/// What one lead's update wrote.
struct LeadUpdate {
    /// Re-folded from history rather than advanced.
    recomputed: bool,
    conflicts: usize,
    /// Whether this write recorded a stage change.
    changed_stage: bool,
}

/// Figures of one batch or task, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreReport {
    pub events: usize,
    pub leads: usize,
    /// Leads re-folded from their history (late or repeated events, or asked for).
    pub recomputed: usize,
    /// Writes that lost a race and were redone.
    pub conflicts: usize,
    /// Leads that could not be written: recorded with their reason, repaired later.
    pub failed: usize,
    /// Leads recorded as failed before that were written now.
    pub repaired: usize,
    /// Stage changes recorded (on their leads, for the stream to publish).
    pub stage_changes: usize,
}

impl ScoreReport {
    pub(super) fn add(&mut self, other: &ScoreReport) {
        self.events += other.events;
        self.leads += other.leads;
        self.recomputed += other.recomputed;
        self.conflicts += other.conflicts;
        self.failed += other.failed;
        self.repaired += other.repaired;
        self.stage_changes += other.stage_changes;
    }
}

/// Lead writes in flight at once.
const CONCURRENCY: usize = 16;
/// How long to wait for the history index before reading it again (times the attempt).
const INDEX_LAG_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Reads of a history index that lags the lead's state before trusting it (1.5 s in all).
const INDEX_LAG_WAITS: usize = 5;
/// Attempts at a versioned write before giving up (the lead is then recorded as failed).
const MAX_ATTEMPTS: usize = 8;

pub struct Scorer<L, H, R> {
    pub(super) leads: L,
    history: H,
    pub(super) rules: R,
    checkpoints: CheckpointPolicy,
}

/// Events a re-fold from a checkpoint reads at most; a longer suffix re-folds the whole history.
const SUFFIX_LIMIT: usize = 20_000;

/// Whether every event sorts after the checkpoint's last event.
fn sorts_after(checkpoint: &LeadScore, events: &[ScoredEvent]) -> bool {
    checkpoint
        .last
        .as_ref()
        .is_some_and(|(ts, id)| events.iter().all(|e| e.sort_key() > (*ts, id.as_str())))
}

impl<L: LeadStore, H: LeadHistory, R: RuleStore> Scorer<L, H, R> {
    pub fn new(leads: L, history: H, rules: R) -> Self {
        Self {
            leads,
            history,
            rules,
            checkpoints: CheckpointPolicy::default(),
        }
    }

    /// How re-folds keep checkpoints (tests use small ones).
    #[must_use]
    pub fn with_checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoints = policy;
        self
    }

    /// What a re-fold starts from: the checkpoint and the events since it, or (without one, or
    /// when the events since are too many) the empty state and the whole history.
    async fn history_since(
        &self,
        lead_id: &str,
        checkpoint: Option<LeadScore>,
    ) -> Result<(LeadScore, Vec<ScoredEvent>), StoreError> {
        if let Some(base) = checkpoint {
            if let Some((ts, id)) = &base.last {
                let since = self
                    .history
                    .events_after(lead_id, Some((*ts, id.as_str())), SUFFIX_LIMIT)
                    .await?;
                if since.len() < SUFFIX_LIMIT {
                    return Ok((base, since));
                }
            }
        }
        Ok((
            LeadScore::default(),
            self.history.lead_events(lead_id).await?,
        ))
    }

    /// Folds one stream batch's lead events into their leads, each lead written once.
    pub async fn score_events(
        &self,
        events: Vec<LeadEvent>,
        now: DateTime<Utc>,
    ) -> Result<ScoreReport, StoreError> {
        if events.is_empty() {
            return Ok(ScoreReport::default());
        }
        let rules = load_or_init(&self.rules).await?.rules;
        let mut by_lead: BTreeMap<String, Vec<ScoredEvent>> = BTreeMap::new();
        let count = events.len();
        for LeadEvent { lead_id, event } in events {
            by_lead.entry(lead_id).or_default().push(event);
        }
        let failed = self.failed_leads().await?;
        let mut report = self
            .update_leads(&rules, by_lead, false, now, &failed)
            .await?;
        report.events = count;
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
        let targets = self
            .leads
            .shard_leads(shard)
            .await?
            .into_iter()
            .map(|id| (id, Vec::new()))
            .collect();
        self.update_leads(rules, targets, true, now, failed).await
    }

    /// Folds events into these leads: incrementally when they all sort after the stored state
    /// (unless `force_recompute`), otherwise by re-folding the lead's history plus them.
    ///
    /// A lead that cannot be written does not stop the others: it is
    /// recorded as failed with its reason, and its events stay in the events table for the
    /// repair to re-fold. Leads of `failed` (recorded as failed before) that are written now are
    /// cleared. Only a failure to record a failure fails the run, so nothing is dropped unseen.
    pub(super) async fn update_leads(
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
                        .fold_lead(rules, lead_id.clone(), events, force_recompute, first, now)
                        .await;
                    (lead_id, result)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut report = ScoreReport::default();
        // Written now, or with neither a state nor events (nothing left to repair).
        let mut done = Vec::new();
        let mut failures = Vec::new();
        let mut changes = 0;
        for (lead_id, result) in results {
            match result {
                Ok(Some(update)) => {
                    report.leads += 1;
                    report.recomputed += usize::from(update.recomputed);
                    report.conflicts += update.conflicts;
                    changes += usize::from(update.changed_stage);
                    done.push(lead_id);
                }
                Ok(None) => done.push(lead_id),
                Err(e) => {
                    warn!(lead_id, error = %e, "lead not written; recorded for repair");
                    failures.push(LeadFailure::new(lead_id, &e.to_string(), now));
                }
            }
        }
        if !failures.is_empty() {
            self.leads.record_failures(&failures).await?;
        }
        let repaired: Vec<String> = done.into_iter().filter(|id| failed.contains(id)).collect();
        if !repaired.is_empty() {
            self.leads.clear_failures(&repaired).await?;
        }
        report.failed = failures.len();
        report.repaired = repaired.len();
        report.stage_changes = changes;
        Ok(report)
    }

    /// Folds and writes one lead until the versioned write succeeds (`first`: its stored
    /// record as already read, `None` if absent). `None` for a lead with neither a stored state
    /// nor events.
    async fn fold_lead(
        &self,
        rules: &ScoreRules,
        lead_id: String,
        new_events: Vec<ScoredEvent>,
        force_recompute: bool,
        first: Option<LeadRecord>,
        now: DateTime<Utc>,
    ) -> Result<Option<LeadUpdate>, StoreError> {
        let mut stored = first;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                stored = self.leads.get_leads(&[&lead_id]).await?.remove(&lead_id);
            }
            let version = stored.as_ref().map_or(0, |r| r.version);
            let published = stored.as_ref().and_then(|r| r.stage.clone());
            let applied_before = stored.as_ref().map(|r| {
                let last_id = r.state.last.as_ref().map(|(_, id)| id.clone());
                (r.state.events, last_id)
            });
            // A checkpoint of the stored state that every new event sorts after: a late event
            // re-folds only the events since it (not under a forced recompute: the rules may
            // have changed since the checkpoint was folded).
            let checkpoint = stored
                .as_ref()
                .and_then(|r| r.state.checkpoint.as_deref())
                .filter(|c| !force_recompute && sorts_after(c, &new_events))
                .cloned();
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
                    let (base, mut history) = self.history_since(&lead_id, checkpoint).await?;
                    // Stored events are never deleted, so a history that lacks the last event
                    // the state applied, or holds fewer events than it applied, means the index
                    // has not caught up with an earlier batch: folding it now would drop that
                    // event. Wait for the index instead; past the waits, the history is the
                    // truth (events removed by hand, a state from a foreign writer).
                    if let Some((applied, Some(last_id))) = &applied_before {
                        let seen = base.events.saturating_add(history.len() as u64);
                        let behind = (!history.iter().any(|e| &e.event_id == last_id)
                            && base.last.as_ref().is_none_or(|(_, id)| id != last_id))
                            || seen < *applied;
                        if behind && attempt < INDEX_LAG_WAITS {
                            warn!(
                                lead_id,
                                attempt,
                                applied,
                                history = seen,
                                "lead history index behind the lead; reading it again"
                            );
                            tokio::time::sleep(INDEX_LAG_PAUSE * (attempt as u32 + 1)).await;
                            continue;
                        }
                    }
                    // The index read is eventually consistent: the new events are stored, so
                    // they join the history even if the index does not show them yet.
                    history.extend(new_events.iter().cloned());
                    LeadScore::refold(rules, base, history, self.checkpoints)
                }
            };
            if version == 0 && state.events == 0 {
                return Ok(None);
            }
            let score = state.decayed_score(&rules.decay, now);
            let stage = rules.stage_of(score).filter(|_| state.events > 0);
            let change = (stage != published.as_deref()).then(|| StageChange {
                lead_id: lead_id.clone(),
                from: published.clone(),
                to: stage.map(str::to_owned),
                score,
                event_id: new_events.iter().max().map(|e| e.event_id.clone()),
                at: now,
            });
            let write = LeadWrite {
                lead_id: &lead_id,
                state: &state,
                stage,
                change: change.as_ref(),
            };
            match self.leads.write_lead(write, version).await {
                Ok(()) => {
                    return Ok(Some(LeadUpdate {
                        recomputed,
                        conflicts: attempt,
                        changed_stage: change.is_some(),
                    }))
                }
                Err(LeadWriteError::Conflict) => {
                    warn!(lead_id, attempt, "lead changed concurrently; folding again");
                }
                Err(LeadWriteError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "lead kept changing concurrently, or its history index stayed behind; recorded for repair"
                .into(),
        ))
    }
}

#[async_trait]
impl<T: LeadStore + ?Sized> LeadStore for std::sync::Arc<T> {
    async fn get_leads(
        &self,
        lead_ids: &[&str],
    ) -> Result<HashMap<String, LeadRecord>, StoreError> {
        (**self).get_leads(lead_ids).await
    }
    async fn write_lead(&self, write: LeadWrite<'_>, expected: u64) -> Result<(), LeadWriteError> {
        (**self).write_lead(write, expected).await
    }
    async fn shard_board(&self, shard: u32) -> Result<Vec<BoardLead>, StoreError> {
        (**self).shard_board(shard).await
    }
    async fn unboarded_leads(
        &self,
        from: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        (**self).unboarded_leads(from, limit).await
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
    async fn events_after(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError> {
        (**self).events_after(lead_id, after, limit).await
    }
}

#[cfg(test)]
#[path = "scorer_tests.rs"]
mod tests;
