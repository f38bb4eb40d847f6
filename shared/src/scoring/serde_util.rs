//! Serde helpers for the scoring types. `chrono` is built without its `serde` feature and
//! `rust_decimal` serializes as a string by default, so the wire forms are spelled out here.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// RFC 3339 in UTC with `Z`: milliseconds (like stored events) when the instant has whole
/// milliseconds, otherwise as many fraction digits as needed, so every instant round-trips.
pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    let format = if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
        SecondsFormat::Millis
    } else {
        SecondsFormat::AutoSi
    };
    t.to_rfc3339_opts(format, true)
}

fn parse_time<E: de::Error>(s: &str) -> Result<DateTime<Utc>, E> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| E::custom("expected an RFC 3339 timestamp"))
}

/// `DateTime<Utc>` as an RFC 3339 string.
pub(crate) mod time {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse_time(&s)
    }
}

/// `Option<DateTime<Utc>>` as an RFC 3339 string or `null`.
pub(crate) mod opt_time {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&format_time(t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse_time(&s))
            .transpose()
    }
}

/// The sort key of the last applied event, `Option<(timestamp, eventId)>`, as
/// `{"timestamp": "...", "eventId": "..."}` or `null`.
pub(crate) mod last_key {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct KeyRef<'a> {
        timestamp: String,
        event_id: &'a str,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Key {
        timestamp: String,
        event_id: String,
    }

    pub(crate) fn serialize<S: Serializer>(
        key: &Option<(DateTime<Utc>, String)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match key {
            Some((t, id)) => s.serialize_some(&KeyRef {
                timestamp: format_time(t),
                event_id: id,
            }),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(DateTime<Utc>, String)>, D::Error> {
        Option::<Key>::deserialize(d)?
            .map(|k| Ok((parse_time(&k.timestamp)?, k.event_id)))
            .transpose()
    }
}

/// A `Decimal` as a JSON number: an integer when it is whole, otherwise the `f64` nearest to it.
/// Callers keep such decimals short (see `Decay` validation), for which the `f64`'s shortest
/// representation is the decimal itself, so the text on the wire is exact. Reads accept a number
/// or a decimal string.
pub(crate) mod decimal_number {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        let d = d.normalize();
        if d.fract().is_zero() {
            if let Some(i) = d.to_i64() {
                return s.serialize_i64(i);
            }
        }
        match d.to_f64() {
            Some(f) => s.serialize_f64(f),
            None => Err(serde::ser::Error::custom("decimal out of range")),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(DecimalVisitor)
    }

    struct DecimalVisitor;

    impl Visitor<'_> for DecimalVisitor {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal number")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
            if !v.is_finite() {
                return Err(E::custom("expected a finite number"));
            }
            // `f64`'s `Display` is the shortest text that reads back as the same `f64` and never
            // uses an exponent, so `2.5` stays 2.5 and `0.1` stays 0.1 (not 0.1000000000000000055…).
            self.visit_str(&v.to_string())
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
            v.parse::<Decimal>()
                .map(|d| d.normalize())
                .map_err(|_| E::custom("expected a decimal number"))
        }
    }
}
