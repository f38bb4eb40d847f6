//! The hourly stage check: stages that moved without an event. Decay lowers a quiet lead's score
//! day by day, and a change of the stage thresholds moves leads at once; neither writes the lead,
//! so the check compares every lead's stage as of now (from the leaderboard index) with the one
//! last published, and writes only the leads that differ (the stream publishes their changes).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{load_or_init, LeadHistory, LeadStore, RuleStore, ScoreReport, Scorer, BOARD_SHARDS};
use crate::store::StoreError;

impl<L: LeadStore, H: LeadHistory, R: RuleStore> Scorer<L, H, R> {
    /// Re-writes the leads whose stage as of `now` is not the one last published.
    pub async fn check_stages(&self, now: DateTime<Utc>) -> Result<ScoreReport, StoreError> {
        let rules = load_or_init(&self.rules).await?.rules;
        let failed = self.failed_leads().await?;
        let mut report = ScoreReport::default();
        for shard in 0..BOARD_SHARDS {
            let moved: BTreeMap<String, Vec<_>> = self
                .leads
                .shard_board(shard)
                .await?
                .into_iter()
                .filter(|lead| {
                    let score = lead.entry.score_at(&rules.decay, now);
                    rules.stage_of(score) != lead.stage.as_deref()
                })
                .map(|lead| (lead.lead_id, Vec::new()))
                .collect();
            if !moved.is_empty() {
                // No new events: each lead's state is written back as it is, with its stage.
                report.add(
                    &self
                        .update_leads(&rules, moved, false, now, &failed)
                        .await?,
                );
            }
        }
        Ok(report)
    }
}
