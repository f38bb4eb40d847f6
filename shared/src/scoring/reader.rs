//! The read side of scoring: what the query API reads (lead states, the leaderboard) and how one
//! lead is shown as of the read — its stored state advanced by any event processed but not yet
//! folded (its stream batch is in flight).

use std::collections::HashMap;

use super::{ApplyOutcome, BoardEntry, BoardLead, LeadRecord, LeadScore, ScoreRules, ScoredEvent};
use crate::store::StoreError;
use async_trait::async_trait;

/// Lead states and the leaderboard, for reads.
#[async_trait]
pub trait LeadReader: Send + Sync {
    /// The stored states of these leads (absent ones left out).
    async fn leads(&self, lead_ids: &[&str]) -> Result<HashMap<String, LeadRecord>, StoreError>;
    /// Every lead on the leaderboard, in no particular order.
    async fn board_leads(&self) -> Result<Vec<BoardLead>, StoreError>;
    /// The ids of up to `limit` leads whose profile email is `email` (lowercased), among the leads
    /// whose id is not that email's own (`email:<address>`; see [`indexed_email`]).
    async fn leads_by_email(&self, email: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Every lead's leaderboard entry, in no particular order.
    async fn board(&self) -> Result<Vec<(String, BoardEntry)>, StoreError> {
        Ok(self
            .board_leads()
            .await?
            .into_iter()
            .map(|l| (l.lead_id, l.entry))
            .collect())
    }
}

/// The email under which a lead is found by search, when its id does not already say it: leads
/// posted without their own id are `email:<address>` and found by that id, so only the others
/// carry it (which keeps the index's writes to leads with ids of their own).
pub fn indexed_email(lead_id: &str, profile: &crate::event::LeadProfile) -> Option<String> {
    let email = profile_email(profile)?;
    (lead_id.strip_prefix("email:") != Some(email.as_str())).then_some(email)
}

/// A profile's email as searches compare it: trimmed and lowercased.
pub fn profile_email(profile: &crate::event::LeadProfile) -> Option<String> {
    profile.email.as_deref().map(normalized_email)
}

/// An email as searches compare it: trimmed and lowercased.
pub fn normalized_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// One event of `recentEvents`, with the points the rules gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    pub event: ScoredEvent,
    pub points: i64,
}

/// A lead as of the read.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadView {
    pub state: LeadScore,
    /// Newest first, at most [`super::RECENT_EVENTS`].
    pub recent: Vec<RecentEvent>,
    /// Events processed but not yet folded into the stored state, now applied.
    pub pending: usize,
}

/// Shows a lead: `stored` (if the scorer has written it) advanced by the events of `newest_first`
/// that sort after its last applied event, which the scorer has not folded yet. `newest_first`
/// holds every such event and then the latest applied ones; the applied ones take their points
/// from the state (`recent_points` lists the latest applied events' points, oldest first).
/// `None` when the lead has neither a state nor events.
pub fn lead_view(
    stored: Option<LeadScore>,
    newest_first: &[ScoredEvent],
    rules: &ScoreRules,
) -> Option<LeadView> {
    if stored.is_none() && newest_first.is_empty() {
        return None;
    }
    let mut state = stored.unwrap_or_default();
    let last = state.last.clone();
    let is_pending = |e: &ScoredEvent| {
        last.as_ref()
            .is_none_or(|(ts, id)| e.sort_key() > (*ts, id.as_str()))
    };
    let split = newest_first
        .iter()
        .position(|e| !is_pending(e))
        .unwrap_or(newest_first.len());
    let (pending, applied) = newest_first.split_at(split);

    let mut recent: Vec<RecentEvent> = applied
        .iter()
        .zip(state.recent_points.iter().rev())
        .map(|(event, points)| RecentEvent {
            event: event.clone(),
            points: *points,
        })
        .collect();
    let mut fresh = Vec::with_capacity(pending.len());
    for event in pending.iter().rev() {
        if let ApplyOutcome::Applied { points } = state.apply(rules, event) {
            fresh.push(RecentEvent {
                event: event.clone(),
                points,
            });
        }
    }
    let pending = fresh.len();
    fresh.reverse();
    fresh.append(&mut recent);
    fresh.truncate(super::RECENT_EVENTS);
    Some(LeadView {
        state,
        recent: fresh,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_764_000_000, 0).unwrap_or_default()
            + Duration::minutes(minutes)
    }

    fn ev(id: &str, ty: &str, minutes: i64) -> ScoredEvent {
        ScoredEvent::new(id, ty, at(minutes))
    }

    #[test]
    fn nothing_stored_and_no_events_is_no_lead() {
        assert_eq!(lead_view(None, &[], &ScoreRules::defaults()), None);
    }

    #[test]
    fn the_stored_state_is_advanced_by_events_the_scorer_has_not_folded() {
        let rules = ScoreRules::defaults();
        let history = [
            ev("a", "PAGE_VIEW", 0),
            ev("b", "PURCHASE", 1),
            ev("c", "REFUND", 2),
        ];
        // The scorer folded a and b; c and d (newer) are pending.
        let (stored, _) = LeadScore::fold(&rules, history[..2].to_vec());
        let pending = [ev("d", "EMAIL_OPEN", 3), history[2].clone()];
        let newest_first: Vec<ScoredEvent> = pending
            .iter()
            .cloned()
            .chain([history[1].clone(), history[0].clone()])
            .collect();
        let view = lead_view(Some(stored), &newest_first, &rules);
        let Some(view) = view else {
            panic!("a stored lead is shown");
        };
        // 5 + 100 − 100 + 10, as a fold of all four gives.
        let all: Vec<ScoredEvent> = newest_first.iter().rev().cloned().collect();
        let (expected, _) = LeadScore::fold(&rules, all);
        assert_eq!(view.state, expected);
        assert_eq!(view.state.score, 15);
        assert_eq!(view.pending, 2);
        let shown: Vec<(&str, i64)> = view
            .recent
            .iter()
            .map(|r| (r.event.event_id.as_str(), r.points))
            .collect();
        assert_eq!(shown, [("d", 10), ("c", -100), ("b", 100), ("a", 5)]);
    }

    #[test]
    fn a_lead_never_scored_is_folded_from_its_events_and_recent_is_capped() {
        let rules = ScoreRules::defaults();
        let newest_first: Vec<ScoredEvent> = (0..60)
            .rev()
            .map(|i| ev(&format!("e{i:02}"), "PAGE_VIEW", i))
            .collect();
        let Some(view) = lead_view(None, &newest_first, &rules) else {
            panic!("events make a lead");
        };
        assert_eq!(view.state.events, 60);
        assert_eq!(view.state.score, 300);
        assert_eq!(view.pending, 60);
        assert_eq!(view.recent.len(), super::super::RECENT_EVENTS);
        assert_eq!(view.recent[0].event.event_id, "e59");
    }
}
