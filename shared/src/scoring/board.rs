//! The leaderboard index: every scored lead's score and last activity, in a fixed number of
//! shards by a stable hash of the lead id. The scorer rewrites the shards its leads fall in; the
//! daily decay task materialises each entry's decayed score; a leaderboard read merges the
//! shards and applies decay as of the read.
//!
//! Why shards of compact entries rather than a secondary index on the lead items: an index whose
//! sort key is the score costs two more write units (delete and put in the index) every time a
//! lead's score changes, tripling the scorer's writes. A shard entry is ~40 bytes compressed.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::{Decay, LeadScore};

/// Shards of the leaderboard. Changing it moves leads between shards: the recompute-all task
/// rebuilds the board, but a change needs the old shards deleted first.
pub const BOARD_SHARDS: u32 = 32;

/// The shard of a lead: FNV-1a of its id, stable across processes and releases.
pub fn board_shard(lead_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in lead_id.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % BOARD_SHARDS
}

/// One lead on the board. Wire form `{"s": score, "a": lastActivityMillis, "d": decayed}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardEntry {
    /// The score before decay.
    #[serde(rename = "s")]
    pub score: i64,
    /// Last activity, epoch milliseconds.
    #[serde(rename = "a")]
    pub last_activity_ms: i64,
    /// The score after decay as of the shard's `decayed_as_of` (materialised daily).
    #[serde(rename = "d")]
    pub decayed: i64,
}

impl BoardEntry {
    pub fn of(state: &LeadScore, decay: &Decay, now: DateTime<Utc>) -> Self {
        Self {
            score: state.score,
            last_activity_ms: state.last_activity_at.map_or(0, |t| t.timestamp_millis()),
            decayed: state.decayed_score(decay, now),
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

/// One shard of the board, with the version its next write must be based on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardShard {
    pub entries: BTreeMap<String, BoardEntry>,
    /// When decay was last materialised for every entry (epoch milliseconds; 0: never).
    pub decayed_as_of_ms: i64,
    /// 0: not stored yet.
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("leaderboard shard unreadable: {0}")]
pub struct BoardDecodeError(String);

impl BoardShard {
    /// Gzipped JSON `{"leadId": entry, ...}`; deterministic.
    pub fn compress(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&self.entries).unwrap_or_default();
        let mut encoder =
            GzEncoder::new(Vec::with_capacity(json.len() / 3), Compression::default());
        let _ = encoder.write_all(&json);
        encoder.finish().unwrap_or_default()
    }

    pub fn decompress(body: &[u8]) -> Result<BTreeMap<String, BoardEntry>, BoardDecodeError> {
        let mut json = Vec::new();
        GzDecoder::new(body)
            .take(64 << 20)
            .read_to_end(&mut json)
            .map_err(|e| BoardDecodeError(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| BoardDecodeError(e.to_string()))
    }

    /// Sets every entry's decayed score as of `now`; returns how many decayed below their score.
    pub fn materialise_decay(&mut self, decay: &Decay, now: DateTime<Utc>) -> usize {
        self.decayed_as_of_ms = now.timestamp_millis();
        self.entries
            .values_mut()
            .map(|e| {
                e.decayed = e.score_at(decay, now);
                usize::from(e.decayed != e.score)
            })
            .sum()
    }
}

/// The leaderboard order as of `now`: decayed score descending, then lead id ascending.
pub fn ranked<'a>(
    shards: impl IntoIterator<Item = &'a BoardShard>,
    decay: &Decay,
    now: DateTime<Utc>,
) -> Vec<(&'a str, i64, BoardEntry)> {
    let mut all: Vec<(&str, i64, BoardEntry)> = shards
        .into_iter()
        .flat_map(|s| s.entries.iter())
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
    fn shard_round_trips_compressed() -> Result<(), BoardDecodeError> {
        let mut shard = BoardShard::default();
        shard.entries.insert(
            "l1".into(),
            BoardEntry {
                score: 120,
                last_activity_ms: 1_764_000_000_000,
                decayed: 100,
            },
        );
        assert_eq!(BoardShard::decompress(&shard.compress())?, shard.entries);
        assert!(BoardShard::decompress(b"nope").is_err());
        Ok(())
    }

    #[test]
    fn ranking_applies_decay_as_of_the_read_and_breaks_ties_by_id() {
        let now = DateTime::<Utc>::from_timestamp(1_764_000_000, 0).unwrap_or_default();
        let entry = |score, days_ago: i64| BoardEntry {
            score,
            last_activity_ms: (now - Duration::days(days_ago)).timestamp_millis(),
            decayed: score,
        };
        let mut shard = BoardShard::default();
        shard.entries.insert("b".into(), entry(100, 0));
        shard.entries.insert("a".into(), entry(100, 0));
        // 20 days idle: 6 days of 2 % decay, 100 × 0.98^6 = 88.58 → 89.
        shard.entries.insert("old".into(), entry(100, 20));
        shard.entries.insert("c".into(), entry(90, 1));
        let order: Vec<(&str, i64)> = ranked([&shard], &decay(), now)
            .into_iter()
            .map(|(id, s, _)| (id, s))
            .collect();
        assert_eq!(order, vec![("a", 100), ("b", 100), ("c", 90), ("old", 89)]);
        assert_eq!(shard.materialise_decay(&decay(), now), 1);
        assert_eq!(shard.entries["old"].decayed, 89);
        assert_eq!(shard.entries["a"].decayed, 100);
    }
}
