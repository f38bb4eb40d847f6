//! The leaderboard: every scored lead's score and last activity, kept on the lead item itself and
//! read through a write-sharded index of the analytics table (`byBoard`, partition key the lead's
//! shard, projecting only the score and the last activity). A leaderboard read merges the shards
//! and applies decay as of the read.
//!
//! Why an index whose keys never change rather than one sorted by score: an index entry whose
//! sort key changes costs two writes (delete and put) on every score change, three in all with
//! the lead; an entry whose keys stay put costs one, so a scored event costs two write units
//! (README, "Real-time scoring"). Ranking needs decay as of the read, which no stored order
//! gives anyway, so the read ranks in memory.
//!
//! Why shards: every lead write updates its index entry, and one index partition takes about
//! 1,000 writes a second; the shard spreads the leads over [`BOARD_SHARDS`] partitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Decay, LeadScore};

/// Shards of the leaderboard index. Changing it moves leads between shards: every lead's item
/// must then be rewritten (a recompute of every lead does it).
pub const BOARD_SHARDS: u32 = 32;

/// The shard of a lead: FNV-1a of its id, stable across processes and releases.
pub fn board_shard(lead_id: &str) -> u32 {
    crate::shards::shard_of(lead_id, BOARD_SHARDS)
}

/// One lead on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardEntry {
    /// The score before decay.
    pub score: i64,
    /// Last activity, epoch milliseconds.
    pub last_activity_ms: i64,
}

impl BoardEntry {
    pub fn of(state: &LeadScore) -> Self {
        Self {
            score: state.score,
            last_activity_ms: state.last_activity_at.map_or(0, |t| t.timestamp_millis()),
        }
    }

    pub fn last_activity(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.last_activity_ms).unwrap_or_default()
    }

    /// The score as of `now` (see [`Decay::apply`]).
    pub fn score_at(&self, decay: &Decay, now: DateTime<Utc>) -> i64 {
        decay.apply(self.score, self.last_activity(), now)
    }
}

/// A lead as the leaderboard index holds it: its entry, the stage last published for it, its
/// profile's company and its event count (what the companies report groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardLead {
    pub lead_id: String,
    pub entry: BoardEntry,
    pub stage: Option<String>,
    pub company: Option<String>,
    pub events: u64,
}

/// The leaderboard order as of `now`: decayed score descending, then lead id ascending.
pub fn ranked<'a>(
    entries: impl IntoIterator<Item = &'a (String, BoardEntry)>,
    decay: &Decay,
    now: DateTime<Utc>,
) -> Vec<(&'a str, i64, BoardEntry)> {
    let mut all: Vec<(&str, i64, BoardEntry)> = entries
        .into_iter()
        .map(|(id, e)| (id.as_str(), e.score_at(decay, now), *e))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use rust_decimal::Decimal;

    use super::*;

    fn decay() -> Decay {
        Decay {
            after_days: 14,
            percent_per_day: Decimal::TWO,
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(board_shard("email:a@x.io"), board_shard("email:a@x.io"));
        // FNV-1a of "a" is 0xe40c292c.
        assert_eq!(board_shard("a"), 0xe40c_292c % BOARD_SHARDS);
        let mut counts = [0u32; BOARD_SHARDS as usize];
        for i in 0..3200 {
            counts[board_shard(&format!("user:{i}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (50..150).contains(c)), "{counts:?}");
    }

    #[test]
    fn ranking_applies_decay_as_of_the_read_and_breaks_ties_by_id() {
        let now = DateTime::<Utc>::from_timestamp(1_764_000_000, 0).unwrap_or_default();
        let entry = |id: &str, score, days_ago: i64| {
            (
                id.to_owned(),
                BoardEntry {
                    score,
                    last_activity_ms: (now - Duration::days(days_ago)).timestamp_millis(),
                },
            )
        };
        let entries = [
            entry("b", 100, 0),
            entry("a", 100, 0),
            // 20 days idle: 6 days of 2 % decay, 100 × 0.98^6 = 88.58 → 89.
            entry("old", 100, 20),
            entry("c", 90, 1),
        ];
        let order: Vec<(&str, i64)> = ranked(&entries, &decay(), now)
            .into_iter()
            .map(|(id, s, _)| (id, s))
            .collect();
        assert_eq!(order, vec![("a", 100), ("b", 100), ("c", 90), ("old", 89)]);
    }
}
