//! Lead scoring: the pure domain behind `GET /v1/rules`, `GET /v1/leads` and
//! `GET /v1/leads/{leadId}` (docs/api.md, "Scoring").
//!
//! A lead's score is a pure function of its stored events and the rules, so every recompute gives
//! the same answer:
//!
//! - the lead's events are folded in `(timestamp, eventId)` order, starting at 0, with
//!   `s = clamp(s + points(e), min, max)`;
//! - of each event type only the first `maxPerDay` events of one UTC day score; later ones give 0
//!   but still count as events;
//! - inactive types and types without a rule give 0 (and still count as events);
//! - decay is applied when the score is read (see [`Decay::apply`]).
//!
//! The fold state, [`LeadScore`], is small and serializable so it can be stored next to the lead
//! and advanced incrementally ([`LeadScore::apply`], [`apply_batch`]) as long as new events sort
//! after the last applied one. Anything else (an event older than the last applied one, a
//! redelivered event) asks the caller to re-fold the lead's history ([`LeadScore::fold`]), which
//! gives exactly the state the increments would have reached.
//!
//! Nothing here performs I/O or knows about AWS; [`RuleStore`] is the port the rules are kept
//! behind.

mod board;
mod failures;
mod jobs;
mod lead;
#[cfg(any(test, feature = "test-utils"))]
mod memory;
mod reader;
mod rules;
mod scorer;
mod serde_util;
mod stage_check;
mod stage_stream;
mod stages;
mod store;
mod timeline;

pub use board::{board_shard, ranked, BoardEntry, BoardLead, BOARD_SHARDS};
pub use failures::{LeadFailure, LeadFailures, MAX_REASON_CHARS, REPAIR_BATCH};
pub use jobs::{JobProgress, LeadRecompute, RecomputeJob, RecomputeJobs};
pub use lead::{
    apply_batch, ApplyOutcome, BatchResult, CheckpointPolicy, LeadEvent, LeadScore, ScoredEvent,
    MAX_COUNTED_TYPES, OTHER_TYPES, RECENT_EVENTS,
};
#[cfg(any(test, feature = "test-utils"))]
pub use memory::{MemoryBus, MemoryHistory, MemoryLeads, MemoryRules};
pub use reader::{
    indexed_email, lead_view, normalized_email, profile_email, LeadReader, LeadView, RecentEvent,
};
pub use rules::{
    default_stages, Decay, Rule, ScoreRules, Stage, MAX_ABS_POINTS, MAX_RULES, MAX_STAGES,
};
pub use scorer::{
    LeadHistory, LeadRecord, LeadStore, LeadWrite, LeadWriteError, ScoreReport, Scorer,
};
pub use stage_stream::{
    publish_stage_changes, stage_change_of, ItemFailure, StageStreamEvent, StageStreamOutcome,
    StageStreamResponse,
};
pub use stages::{StageChange, StagePublisher, STAGE_CHANGED};
pub use store::{
    load_or_init, put_rule, put_rule_at, put_settings, RuleStore, RuleStoreError, ScoringSettings,
    VersionedRules,
};
pub use timeline::{explain, ExplainedEvent, RemovedBy, TimelineState};

#[cfg(test)]
mod tests;
