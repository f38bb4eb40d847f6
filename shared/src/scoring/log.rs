//! The lead log: each stream window's scored events, stored as idempotent parts until the
//! scheduled scorer folds them into lead states (see [`super::Scorer`]).
//!
//! Why a log instead of updating each lead from the stream: a lead item costs at least one write
//! unit however small the change, so writing every lead touched in every window costs about as
//! many units as there are events (0.8 per event on the reference workload). A window's log part
//! costs one unit per KB of compressed entries (~0.02 per event), and the scorer writes each lead
//! once per run however many events it had.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::ScoredEvent;
use crate::event::LeadProfile;

/// Most entries one part (and one window state segment) holds: about 100 KB of state, under 40 KB
/// compressed, far below the 400 KB item and 1 MB window-state limits.
pub const MAX_LOG_ENTRIES: usize = 2000;

/// A scored event of one lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadEvent {
    pub lead_id: String,
    pub event: ScoredEvent,
}

/// One window's (or one segment of a window's) lead events. The key — window start, shard and
/// the sequence number of the segment's first record — is deterministic for a given window
/// re-run, so a retried flush rewrites the same item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadLogPart {
    pub window_start_ms: i64,
    pub shard: String,
    pub first_sequence: String,
    pub entries: Vec<LeadEvent>,
}

#[derive(Debug, thiserror::Error)]
#[error("lead log unreadable: {0}")]
pub struct LogDecodeError(String);

/// Wire form of an entry: `[leadId, eventId, type, epochMillis, profile|null]`.
type Wire = (String, String, String, i64, Option<LeadProfile>);

/// [`Wire`] borrowed, for encoding.
type WireRef<'a> = (&'a str, &'a str, &'a str, i64, Option<&'a LeadProfile>);

fn to_wire(e: &LeadEvent) -> WireRef<'_> {
    (
        &e.lead_id,
        &e.event.event_id,
        &e.event.event_type,
        e.event.timestamp.timestamp_millis(),
        e.event.profile.as_ref(),
    )
}

fn from_wire(w: Wire) -> Result<LeadEvent, LogDecodeError> {
    let (lead_id, event_id, event_type, ms, profile) = w;
    let timestamp = DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| LogDecodeError(format!("timestamp {ms} out of range")))?;
    Ok(LeadEvent {
        lead_id,
        event: ScoredEvent::new(event_id, event_type, timestamp).with_profile(profile),
    })
}

/// Compact JSON (an array of arrays), as carried in the window state.
pub fn encode_entries(entries: &[LeadEvent]) -> String {
    let wire: Vec<WireRef<'_>> = entries.iter().map(to_wire).collect();
    serde_json::to_string(&wire).unwrap_or_else(|_| "[]".to_owned())
}

pub fn decode_entries(text: &str) -> Result<Vec<LeadEvent>, LogDecodeError> {
    let wire: Vec<Wire> = serde_json::from_str(text).map_err(|e| LogDecodeError(e.to_string()))?;
    wire.into_iter().map(from_wire).collect()
}

/// [`encode_entries`], gzipped: the stored body of a part. Deterministic for the same entries.
/// The fastest level: the window path gzips every lead event, and the default level cost more
/// CPU than the rest of the batch together for 20% fewer bytes.
pub fn compress_entries(entries: &[LeadEvent]) -> Vec<u8> {
    let json = encode_entries(entries);
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(json.as_bytes());
    encoder.finish().unwrap_or_default()
}

/// Inflates a stored body; refuses more than 16 MiB of JSON (a part holds well under 1 MiB).
pub fn decompress_entries(body: &[u8]) -> Result<Vec<LeadEvent>, LogDecodeError> {
    let mut json = String::new();
    GzDecoder::new(body)
        .take(16 << 20)
        .read_to_string(&mut json)
        .map_err(|e| LogDecodeError(e.to_string()))?;
    decode_entries(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lead: &str, id: &str, ms: i64, email: Option<&str>) -> LeadEvent {
        let profile = email.map(|e| LeadProfile {
            email: Some(e.into()),
            ..Default::default()
        });
        LeadEvent {
            lead_id: lead.into(),
            event: ScoredEvent::new(
                id,
                "PAGE_VIEW",
                DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default(),
            )
            .with_profile(profile),
        }
    }

    #[test]
    fn entries_round_trip_plain_and_compressed() -> Result<(), LogDecodeError> {
        let entries = vec![
            entry("email:a@x.io", "e1", 1_764_000_000_123, Some("a@x.io")),
            entry("user:7", "e2", 1_764_000_000_456, None),
        ];
        assert_eq!(decode_entries(&encode_entries(&entries))?, entries);
        let body = compress_entries(&entries);
        assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip");
        assert_eq!(decompress_entries(&body)?, entries);
        assert_eq!(compress_entries(&entries), body, "deterministic");
        Ok(())
    }

    #[test]
    fn an_empty_profile_is_no_profile() {
        let e = entry("l", "e", 0, None);
        let empty = e.event.clone().with_profile(Some(LeadProfile::default()));
        assert_eq!(empty.profile, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decompress_entries(b"not gzip").is_err());
        assert!(decode_entries("[[1,2]]").is_err());
        assert!(decode_entries(r#"[["l","e","T",9223372036854775807,null]]"#).is_err());
    }
}
