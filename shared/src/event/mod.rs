//! The canonical event: its typed form, how client JSON (with every accepted spelling) becomes it,
//! and the rules both ingest and process check.

mod codes;
mod money;
mod normalize;
mod rules;

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use money::check_currency;
pub use money::Money;
pub use normalize::{normalize, NormalizeContext};
pub use rules::Limits;

/// Largest canonical event, serialized (docs/api.md).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// One failing field: a JSON pointer into the submitted item and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl FieldError {
    pub fn new(path: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunnelStage {
    Top,
    Middle,
    Bottom,
}

impl FunnelStage {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "top" => Some(Self::Top),
            "middle" => Some(Self::Middle),
            "bottom" => Some(Self::Bottom),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Top => "top",
            Self::Middle => "middle",
            Self::Bottom => "bottom",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeadProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Demographics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// ISO 3166-1 alpha-2, or a country name (≤64 chars) for marketing-publisher events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<u64>,
}

/// An event after aliases are resolved and every rule has passed. This is what travels on the
/// queue and what the events table stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "utc_millis")]
    pub timestamp: DateTime<Utc>,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<LeadProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel_stage: Option<FunnelStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Demographics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Event {
    /// Serializes the canonical form, refusing events over [`MAX_EVENT_BYTES`].
    pub fn to_canonical_json(&self) -> Result<String, FieldError> {
        let json = serde_json::to_string(self)
            .map_err(|_| FieldError::new("", "event cannot be serialized"))?;
        if json.len() > MAX_EVENT_BYTES {
            return Err(FieldError::new(
                "",
                format!(
                    "event is {} bytes serialized; the limit is {MAX_EVENT_BYTES}",
                    json.len()
                ),
            ));
        }
        Ok(json)
    }

    /// Checks a typed event (for instance one read back from the queue) against the same rules
    /// ingest applied, with `received_at` as the clock so time spent queued does not age it out.
    pub fn revalidate(
        &self,
        limits: &Limits,
        received_at: DateTime<Utc>,
    ) -> Result<(), Vec<FieldError>> {
        rules::check_event(self, limits, received_at)
    }

    /// `(timestamp, eventId)` is the scoring order; this string sorts the same way.
    pub fn sort_key(&self) -> String {
        sort_key(self.timestamp, &self.event_id)
    }

    /// UTC hour bucket `YYYY-MM-DDTHH`, the partition of the hourly index.
    pub fn hour_bucket(&self) -> String {
        self.timestamp.format("%Y-%m-%dT%H").to_string()
    }
}

/// Formats a UTC instant as RFC 3339 with milliseconds and `Z`, the one format of every response.
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses RFC 3339 with any offset, or epoch milliseconds, into UTC at millisecond precision.
pub fn parse_instant(value: &Value) -> Result<DateTime<Utc>, &'static str> {
    let t = match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| "must be an RFC 3339 timestamp or epoch milliseconds")?
            .with_timezone(&Utc),
        Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or("epoch milliseconds must be a whole number")?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .ok_or("epoch milliseconds out of range")?
        }
        _ => return Err("must be an RFC 3339 timestamp or epoch milliseconds"),
    };
    Ok(truncate_to_millis(t))
}

fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or(t)
}

mod utc_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_utc(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The stored sort key of `(timestamp, eventId)` (the `byLead` and `byHourShard` index order):
/// `<epoch ms, 13 digits>#<eventId>`. `#` sorts below every character an id may hold, so the
/// strings order as the pairs do (for times from 1970 on).
pub fn sort_key(timestamp: DateTime<Utc>, event_id: &str) -> String {
    format!("{:013}#{event_id}", timestamp.timestamp_millis().max(0))
}
