//! The opaque cursors of the paged lead routes: URL-safe base64 of a small JSON object that
//! carries the time its pagination started, valid for [`CURSOR_LIFETIME_SECS`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a cursor can be used.
const CURSOR_LIFETIME_SECS: i64 = 3600;

pub(super) const CURSOR_EXPIRED: &str = "has expired; start again without a cursor";
const NOT_OURS: &str = "is not a cursor this API issued";

pub(super) fn encode<T: Serialize>(cursor: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// The cursor in `text`, if this API issued it and it is fresh as of `now`; `as_of_ms` reads the
/// time its pagination started. The message names what is wrong, for a 400 naming `cursor`.
pub(super) fn decode<T: DeserializeOwned>(
    text: &str,
    now: DateTime<Utc>,
    as_of_ms: impl Fn(&T) -> i64,
) -> Result<T, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| NOT_OURS)?;
    let cursor: T = serde_json::from_slice(&bytes).map_err(|_| NOT_OURS)?;
    // Checked: the cursor is the client's to forge, and any time must be a 400, not a panic.
    let fresh = now
        .timestamp_millis()
        .checked_sub(as_of_ms(&cursor))
        .is_some_and(|age_ms| (0..=CURSOR_LIFETIME_SECS * 1000).contains(&age_ms));
    if fresh {
        Ok(cursor)
    } else {
        Err(CURSOR_EXPIRED)
    }
}
