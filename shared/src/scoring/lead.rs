//! The per-lead fold: its state, incremental application and full recompute.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::{Decay, ScoreRules};
use super::serde_util::{last_key, opt_time, time};
use crate::event::{Event, LeadProfile};

/// How many of the latest applied events keep their points (`recentEvents` of `GET /v1/leads/{id}`).
pub const RECENT_EVENTS: usize = 50;

/// Event types a lead counts one by one (`eventCounts`); events of further types are counted
/// together under [`OTHER_TYPES`]. Types are chosen by clients, so without this bound one lead
/// sent thousands of distinct types would outgrow DynamoDB's 400 KB item.
pub const MAX_COUNTED_TYPES: usize = 100;

/// The `eventCounts` key of the types past [`MAX_COUNTED_TYPES`] (no event type can be spelled
/// with parentheses).
pub const OTHER_TYPES: &str = "(other)";

/// A scored event of one lead, as the stream delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadEvent {
    pub lead_id: String,
    pub event: ScoredEvent,
}

/// What scoring needs of an event. Ordered by `(timestamp, eventId)` — the fold order — with the
/// type (and profile) as last tie-breaks only so that the order agrees with `Eq`. Wire form
/// `{"eventId", "type", "timestamp", "lead"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "time")]
    pub timestamp: DateTime<Utc>,
    /// The lead's profile as this event gives it, if it gives any.
    #[serde(default, rename = "lead", skip_serializing_if = "Option::is_none")]
    pub profile: Option<LeadProfile>,
}

impl ScoredEvent {
    pub fn new(
        event_id: impl Into<String>,
        event_type: impl Into<String>,
        timestamp: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: event_id.into(),
            event_type: event_type.into(),
            timestamp,
            profile: None,
        }
    }

    /// Builder: the profile fields this event carries.
    #[must_use]
    pub fn with_profile(mut self, profile: Option<LeadProfile>) -> Self {
        self.profile = profile.filter(|p| *p != LeadProfile::default());
        self
    }

    /// Reads what scoring needs from a stored canonical event's JSON, skipping the rest.
    pub fn from_stored_json(json: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Lean {
            event_id: String,
            #[serde(rename = "type")]
            event_type: String,
            #[serde(with = "time")]
            timestamp: DateTime<Utc>,
            #[serde(default)]
            lead: Option<LeadProfile>,
        }
        let lean: Lean = serde_json::from_str(json)?;
        Ok(Self::new(lean.event_id, lean.event_type, lean.timestamp).with_profile(lean.lead))
    }

    /// The fold order key, `(timestamp, eventId)`.
    pub fn sort_key(&self) -> (DateTime<Utc>, &str) {
        (self.timestamp, &self.event_id)
    }
}

impl Ord for ScoredEvent {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key()
            .cmp(&other.sort_key())
            .then_with(|| self.event_type.cmp(&other.event_type))
            .then_with(|| profile_key(&self.profile).cmp(&profile_key(&other.profile)))
    }
}

impl PartialOrd for ScoredEvent {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

type ProfileKey<'a> = Option<(Option<&'a str>, Option<&'a str>, Option<&'a str>)>;

fn profile_key(p: &Option<LeadProfile>) -> ProfileKey<'_> {
    p.as_ref()
        .map(|p| (p.email.as_deref(), p.name.as_deref(), p.company.as_deref()))
}

impl From<&Event> for ScoredEvent {
    fn from(e: &Event) -> Self {
        Self::new(e.event_id.clone(), e.event_type.clone(), e.timestamp)
            .with_profile(e.lead.clone())
    }
}

/// The result of [`LeadScore::apply`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The event was folded in. `points` is what the rules gave it after `maxPerDay`, inactive
    /// and unknown types — before clamping to the score bounds (the `points` of `recentEvents`).
    Applied { points: i64 },
    /// The event does not sort strictly after the last applied one; nothing changed. The caller
    /// re-folds the lead's history ([`LeadScore::fold`]).
    OutOfOrder,
}

/// The fold state of one lead; small, and stored with the lead. Wire form (camelCase):
/// `{"score", "last": {"timestamp", "eventId"} | null, "dayCounts", "eventCounts", "events",
/// "lastActivityAt", "profile", "recentPoints"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadScore {
    /// The score before decay, within the rules' bounds.
    pub score: i64,
    /// Sort key `(timestamp, eventId)` of the last applied event.
    #[serde(default, with = "last_key")]
    pub last: Option<(DateTime<Utc>, String)>,
    /// Events per type on the UTC day of `last` (every event of the type counts, scored or not),
    /// kept only for types whose rule has a `maxPerDay`: all the cap needs to go forward.
    #[serde(default)]
    pub day_counts: BTreeMap<String, u32>,
    /// All applied events per type: at most [`MAX_COUNTED_TYPES`] types, then [`OTHER_TYPES`].
    #[serde(default)]
    pub event_counts: BTreeMap<String, u64>,
    /// All applied events.
    #[serde(default)]
    pub events: u64,
    /// Timestamp of the last applied event (the time part of `last`).
    #[serde(default, with = "opt_time")]
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Each field as the latest event (in fold order) that carries it gives it.
    #[serde(default)]
    pub profile: LeadProfile,
    /// Points of the latest [`RECENT_EVENTS`] applied events, oldest first: with the lead's
    /// events read newest first from the events table they give `recentEvents`.
    #[serde(default)]
    pub recent_points: Vec<i64>,
    /// The fold's state as of an earlier event, kept for leads with many events: an event that
    /// arrives late but still after it is folded in by re-folding only the events since (see
    /// [`LeadScore::refold`]), not the whole history. Never nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Box<LeadScore>>,
}

/// How a re-fold keeps a checkpoint: only leads with at least `min_events` events keep one (a
/// short history is cheap to read whole, and the checkpoint doubles the item), as of the last
/// event at least `lag` older than the newest (late events usually arrive within seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub min_events: u64,
    pub lag: chrono::Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            min_events: 200,
            lag: chrono::Duration::seconds(10),
        }
    }
}

impl LeadScore {
    /// Folds `events` onto `base` (a checkpoint, or the empty state for a whole history): the
    /// events are put in fold order, one per id, and those at or before `base`'s last event are
    /// left out (they are in it). The result carries a new checkpoint under `policy`.
    pub fn refold(
        rules: &ScoreRules,
        base: LeadScore,
        events: impl IntoIterator<Item = ScoredEvent>,
        policy: CheckpointPolicy,
    ) -> LeadScore {
        let mut events = canonical_order(events);
        if let Some((ts, id)) = &base.last {
            events.retain(|e| e.sort_key() > (*ts, id.as_str()));
        }
        let mut state = base;
        state.checkpoint = None;
        let cut = events
            .last()
            .map(|newest| newest.timestamp - policy.lag)
            .unwrap_or_default();
        let split = events.partition_point(|e| e.timestamp <= cut);
        let recent = events.split_off(split);
        state.apply_sorted(rules, events);
        let checkpoint = (state.events > 0).then(|| state.clone());
        state.apply_sorted(rules, recent);
        if state.events >= policy.min_events {
            state.checkpoint = checkpoint.map(Box::new);
        }
        state
    }

    /// Folds `e` in if it sorts strictly after the last applied event; otherwise returns
    /// [`ApplyOutcome::OutOfOrder`] and changes nothing.
    pub fn apply(&mut self, rules: &ScoreRules, e: &ScoredEvent) -> ApplyOutcome {
        if let Some((last_ts, last_id)) = &self.last {
            if e.sort_key() <= (*last_ts, last_id.as_str()) {
                return ApplyOutcome::OutOfOrder;
            }
            if e.timestamp.date_naive() != last_ts.date_naive() {
                self.day_counts.clear();
            }
        }
        let points = if rules.caps_daily(&e.event_type) {
            let seen_today = self.day_counts.entry(e.event_type.clone()).or_insert(0);
            let points = rules.points(&e.event_type, *seen_today);
            *seen_today = seen_today.saturating_add(1);
            points
        } else {
            rules.points(&e.event_type, 0)
        };
        let counted_as = if self.event_counts.contains_key(&e.event_type)
            || self.event_counts.len() < MAX_COUNTED_TYPES
        {
            e.event_type.clone()
        } else {
            OTHER_TYPES.to_owned()
        };
        let count = self.event_counts.entry(counted_as).or_insert(0);
        *count = count.saturating_add(1);
        self.events = self.events.saturating_add(1);
        self.score = rules.clamp_add(self.score, points);
        self.last = Some((e.timestamp, e.event_id.clone()));
        self.last_activity_at = Some(e.timestamp);
        if let Some(profile) = &e.profile {
            merge_profile(&mut self.profile, profile);
        }
        if self.recent_points.len() >= RECENT_EVENTS {
            let excess = self.recent_points.len() + 1 - RECENT_EVENTS;
            self.recent_points.drain(..excess);
        }
        self.recent_points.push(points);
        ApplyOutcome::Applied { points }
    }

    /// Recomputes a lead from its whole history: sorts by `(timestamp, eventId)`, keeps one event
    /// per `eventId` (the earliest), and folds from 0. Returns the state and each applied event
    /// with its points (as in [`ApplyOutcome::Applied`]), in fold order.
    pub fn fold(
        rules: &ScoreRules,
        events: impl IntoIterator<Item = ScoredEvent>,
    ) -> (LeadScore, Vec<(ScoredEvent, i64)>) {
        let mut state = LeadScore::default();
        let applied = state.apply_sorted(rules, canonical_order(events));
        (state, applied)
    }

    /// The score as of `now`, after decay since the last event (see [`Decay::apply`]: whole
    /// 24 h periods, rounded once, half away from zero). A lead without events scores its
    /// undecayed score.
    pub fn decayed_score(&self, decay: &Decay, now: DateTime<Utc>) -> i64 {
        match self.last_activity_at {
            Some(last) => decay.apply(self.score, last, now),
            None => self.score,
        }
    }

    /// Applies events already in canonical order; stops at the first one out of order (which
    /// canonical order rules out).
    fn apply_sorted(
        &mut self,
        rules: &ScoreRules,
        events: Vec<ScoredEvent>,
    ) -> Vec<(ScoredEvent, i64)> {
        let mut applied = Vec::with_capacity(events.len());
        for e in events {
            match self.apply(rules, &e) {
                ApplyOutcome::Applied { points } => applied.push((e, points)),
                ApplyOutcome::OutOfOrder => break,
            }
        }
        applied
    }
}

fn merge_profile(into: &mut LeadProfile, from: &LeadProfile) {
    for (slot, value) in [
        (&mut into.email, &from.email),
        (&mut into.name, &from.name),
        (&mut into.company, &from.company),
    ] {
        if value.is_some() {
            slot.clone_from(value);
        }
    }
}

/// Fold order with one event per `eventId`: the earliest by `(timestamp, type)`, since a
/// redelivered event is the same event and must not count twice.
fn canonical_order(events: impl IntoIterator<Item = ScoredEvent>) -> Vec<ScoredEvent> {
    let mut events: Vec<ScoredEvent> = events.into_iter().collect();
    events.sort_by(|a, b| {
        a.event_id
            .cmp(&b.event_id)
            .then_with(|| a.timestamp.cmp(&b.timestamp))
            .then_with(|| a.event_type.cmp(&b.event_type))
    });
    events.dedup_by(|later, first| later.event_id == first.event_id);
    events.sort_unstable();
    events
}

/// The result of [`apply_batch`].
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    /// The new state and each new event with its points, in fold order.
    Incremental(Box<LeadScore>, Vec<(ScoredEvent, i64)>),
    /// Some new event sorts at or before the last applied one (an older event, or a redelivery
    /// of an applied one): the caller re-folds the lead's full history with [`LeadScore::fold`].
    NeedsRecompute,
}

/// Folds a batch of new events for one lead into its stored state (`None`: no events yet).
///
/// The batch is put in fold order (one event per `eventId`); if every event then sorts strictly
/// after the state's last applied event the result is [`BatchResult::Incremental`], which equals
/// `fold(history ∪ batch)` given that `eventId`s are unique in the store (docs/api.md: the first event
/// stored with an id wins). Otherwise [`BatchResult::NeedsRecompute`], which is always safe.
pub fn apply_batch(
    state: Option<LeadScore>,
    rules: &ScoreRules,
    new_events: Vec<ScoredEvent>,
) -> BatchResult {
    let events = canonical_order(new_events);
    let mut state = state.unwrap_or_default();
    if let (Some(first), Some((last_ts, last_id))) = (events.first(), &state.last) {
        if first.sort_key() <= (*last_ts, last_id.as_str()) {
            return BatchResult::NeedsRecompute;
        }
    }
    let expected = events.len();
    let applied = state.apply_sorted(rules, events);
    if applied.len() == expected {
        BatchResult::Incremental(Box::new(state), applied)
    } else {
        BatchResult::NeedsRecompute
    }
}
