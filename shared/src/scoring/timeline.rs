//! Scores that explain themselves: a lead's events in fold order, each with the points it gave,
//! what a `maxPerDay` cap or the score's clamp took away, the running score and the stage after
//! it (`GET /v1/leads/{leadId}/timeline`).
//!
//! The fold runs on the same [`LeadScore::apply`] the scorer uses, so the timeline's last score
//! is the lead's score before decay. A page ends with the fold's running state (score, last
//! event, the day's per-type counts), which the next page's cursor carries: a page reads only its
//! own events, however long the history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::serde_util::last_key;
use super::{ApplyOutcome, LeadScore, ScoreRules, ScoredEvent};

/// Why points were taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RemovedBy {
    #[serde(rename = "maxPerDay")]
    MaxPerDay,
    #[serde(rename = "clamp")]
    Clamp,
}

/// One event as the fold saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedEvent {
    pub event: ScoredEvent,
    /// What the event changed the score by.
    pub points: i64,
    /// What its rule would have given minus what it gave, and what took it.
    pub removed: Option<(i64, RemovedBy)>,
    /// The score after it.
    pub score: i64,
    pub stage: Option<String>,
}

/// The fold's state between two pages. Wire form (inside the cursor):
/// `{"s": score, "l": {"timestamp", "eventId"}, "d": {"TYPE": n}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineState {
    #[serde(rename = "s")]
    pub score: i64,
    #[serde(rename = "l", default, with = "last_key")]
    pub last: Option<(DateTime<Utc>, String)>,
    #[serde(rename = "d", default)]
    pub day_counts: BTreeMap<String, u32>,
}

/// Explains `events` (in fold order, after `state.last`) from `state` on; returns them and the
/// state after the last one. Events that do not sort after the state's last event (a repeated
/// id) are left out, as the fold leaves them out.
pub fn explain(
    rules: &ScoreRules,
    state: TimelineState,
    events: Vec<ScoredEvent>,
) -> (Vec<ExplainedEvent>, TimelineState) {
    let mut fold = LeadScore {
        score: state.score,
        last: state.last,
        day_counts: state.day_counts,
        ..LeadScore::default()
    };
    let mut explained = Vec::with_capacity(events.len());
    for event in events {
        let before = fold.score;
        let ApplyOutcome::Applied { points: capped } = fold.apply(rules, &event) else {
            continue;
        };
        let intended = rules
            .rule(&event.event_type)
            .filter(|r| r.active)
            .map_or(0, |r| r.points);
        let given = fold.score - before;
        let removed = if capped != intended {
            Some((intended - capped, RemovedBy::MaxPerDay))
        } else if given != capped {
            Some((capped - given, RemovedBy::Clamp))
        } else {
            None
        };
        explained.push(ExplainedEvent {
            stage: rules.stage_of(fold.score).map(str::to_owned),
            event,
            points: given,
            removed,
            score: fold.score,
        });
    }
    let next = TimelineState {
        score: fold.score,
        last: fold.last,
        day_counts: fold.day_counts,
    };
    (explained, next)
}
