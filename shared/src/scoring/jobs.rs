//! Recomputing every lead, asynchronously: `POST /v1/admin/leads/recompute` without a `leadId`
//! records a [`RecomputeJob`]; the rollup's `recompute-requested` task (scheduled every few
//! minutes) works through it one leaderboard shard at a time, saving its progress after each
//! shard, so a recompute of any size survives timeouts and crashes and resumes where it stopped.
//!
//! Re-folding a lead is idempotent, so a shard redone after a crash, or by two overlapping runs,
//! changes nothing. A new request replaces the job in progress and starts over: the rules may
//! have changed since, and the shards already done were folded under the old ones.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};

use super::board::BOARD_SHARDS;
use super::{load_or_init, LeadHistory, LeadStore, RuleStore, ScoreReport, Scorer};
use crate::store::StoreError;

/// A requested recompute of every lead and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecomputeJob {
    pub id: String,
    pub requested_at: DateTime<Utc>,
    /// Leaderboard shards below this one are done.
    pub next_shard: u32,
    /// Leads on the board when it was requested.
    pub leads: u64,
}

/// Where the one recompute job lives (the analytics table in AWS).
#[async_trait]
pub trait RecomputeJobs: Send + Sync {
    async fn current_job(&self) -> Result<Option<RecomputeJob>, StoreError>;
    /// Stores `job`, replacing any job in progress.
    async fn request_job(&self, job: &RecomputeJob) -> Result<(), StoreError>;
    /// Records that shards below `next_shard` are done, if `job_id` is still the job and its
    /// progress is behind; `false` when it is not (replaced, or advanced by another run).
    async fn advance_job(&self, job_id: &str, next_shard: u32) -> Result<bool, StoreError>;
    /// Removes the job if it is still `job_id`.
    async fn finish_job(&self, job_id: &str) -> Result<(), StoreError>;
}

/// What admin asks of scoring: one lead now, or all of them later.
#[async_trait]
pub trait LeadRecompute: Send + Sync {
    /// Re-folds one lead under the current rules; `false` when it has no events.
    async fn recompute_now(&self, lead_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Requests a recompute of every lead; the number of leads on the board now.
    async fn request_all(&self, job_id: String, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// How far one run got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// The job worked on (the last one, if a new request replaced it meanwhile).
    pub job_id: Option<String>,
    pub shards_done: u32,
    pub next_shard: u32,
    pub finished: bool,
}

impl<L, H, R> Scorer<L, H, R>
where
    L: LeadStore + RecomputeJobs,
    H: LeadHistory,
    R: RuleStore,
{
    /// Works on the requested job, if any, shard after shard until it is done or `budget` has
    /// passed (at least one shard per run, so every run makes progress).
    pub async fn run_requested(
        &self,
        now: DateTime<Utc>,
        budget: Duration,
    ) -> Result<(ScoreReport, JobProgress), StoreError> {
        let started = Instant::now();
        // Leads that could not be written are retried on every run, job or not.
        let mut report = self.repair_failed(now).await?;
        let mut progress = JobProgress::default();
        let Some(mut job) = self.leads.current_job().await? else {
            return Ok((report, progress));
        };
        let failed = self.failed_leads().await?;
        let mut rules = load_or_init(&self.rules).await?.rules;
        loop {
            progress.job_id = Some(job.id.clone());
            progress.next_shard = job.next_shard;
            if job.next_shard >= BOARD_SHARDS {
                self.leads.finish_job(&job.id).await?;
                progress.finished = true;
                break;
            }
            if progress.shards_done > 0 && started.elapsed() >= budget {
                break;
            }
            report.add(
                &self
                    .recompute_shard(&rules, job.next_shard, now, &failed)
                    .await?,
            );
            progress.shards_done += 1;
            if self.leads.advance_job(&job.id, job.next_shard + 1).await? {
                job.next_shard += 1;
                continue;
            }
            // Replaced by a new request (start over under its rules) or advanced by another run.
            let Some(current) = self.leads.current_job().await? else {
                break;
            };
            if current.id != job.id {
                rules = load_or_init(&self.rules).await?.rules;
            }
            job = current;
        }
        Ok((report, progress))
    }
}

impl<L, H, R> Scorer<L, H, R>
where
    L: LeadStore + RecomputeJobs,
    H: LeadHistory,
    R: RuleStore,
{
    /// Re-folds the leads stored without a leaderboard entry (after an upgrade from the scheduled
    /// scorer), page by page from `from`, until done or `budget` has passed; returns the report
    /// and where to continue (`None`: every such lead is on the board now).
    pub async fn reindex(
        &self,
        from: Option<String>,
        now: DateTime<Utc>,
        budget: Duration,
    ) -> Result<(ScoreReport, Option<String>), StoreError> {
        let started = Instant::now();
        let rules = load_or_init(&self.rules).await?.rules;
        let failed = self.failed_leads().await?;
        let mut report = ScoreReport::default();
        let mut next = from;
        loop {
            let (ids, after) = self.leads.unboarded_leads(next.take(), 500).await?;
            let targets = ids.into_iter().map(|id| (id, Vec::new())).collect();
            report.add(
                &self
                    .update_leads(&rules, targets, true, now, &failed)
                    .await?,
            );
            next = after;
            if next.is_none() || started.elapsed() >= budget {
                return Ok((report, next));
            }
        }
    }
}

#[async_trait]
impl<L, H, R> LeadRecompute for Scorer<L, H, R>
where
    L: LeadStore + RecomputeJobs,
    H: LeadHistory,
    R: RuleStore,
{
    async fn recompute_now(&self, lead_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.recompute_lead(lead_id, now).await?.leads > 0)
    }

    async fn request_all(&self, job_id: String, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let sizes: Vec<u64> = stream::iter(0..BOARD_SHARDS)
            .map(|shard| async move {
                Ok::<_, StoreError>(self.leads.shard_leads(shard).await?.len() as u64)
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let leads = sizes.iter().sum();
        let job = RecomputeJob {
            id: job_id,
            requested_at: now,
            next_shard: 0,
            leads,
        };
        self.leads.request_job(&job).await?;
        Ok(leads)
    }
}

#[async_trait]
impl<T: RecomputeJobs + ?Sized> RecomputeJobs for std::sync::Arc<T> {
    async fn current_job(&self) -> Result<Option<RecomputeJob>, StoreError> {
        (**self).current_job().await
    }
    async fn request_job(&self, job: &RecomputeJob) -> Result<(), StoreError> {
        (**self).request_job(job).await
    }
    async fn advance_job(&self, job_id: &str, next_shard: u32) -> Result<bool, StoreError> {
        (**self).advance_job(job_id, next_shard).await
    }
    async fn finish_job(&self, job_id: &str) -> Result<(), StoreError> {
        (**self).finish_job(job_id).await
    }
}
