//! A JSON body whose top-level array is counted while it is parsed: past `max` items the parse
//! stops, so a batch over the limit is refused before it is held in memory whole.

use std::cell::Cell;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

pub(super) enum Body {
    Array(Vec<Value>),
    Object(Value),
    /// A string, number, boolean or null.
    Scalar,
}

pub(super) fn parse(body: &[u8], max: usize) -> Result<Body, ApiError> {
    let overflow = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Counted {
        max,
        overflow: &overflow,
    }
    .deserialize(&mut deserializer)
    .and_then(|body| deserializer.end().map(|()| body));
    parsed.map_err(|e| {
        if overflow.get() {
            ApiError::PayloadTooLarge(format!(
                "a batch holds at most {max} events; this one has more"
            ))
        } else {
            ApiError::InvalidJson(format!(
                "body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        }
    })
}

struct Counted<'a> {
    max: usize,
    overflow: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Counted<'_> {
    type Value = Body;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counted<'_> {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            if items.len() == self.max {
                self.overflow.set(true);
                return Err(de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(Body::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Body::Object)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Body, E> {
        Ok(Body::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Body, E> {
        Ok(Body::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Body, E> {
        Ok(Body::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Body, E> {
        Ok(Body::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Body, E> {
        Ok(Body::Scalar)
    }

    fn visit_unit<E>(self) -> Result<Body, E> {
        Ok(Body::Scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_parsing_and_stops_past_the_limit() {
        let status = |body: &str| {
            parse(body.as_bytes(), 3)
                .map(|_| 200)
                .unwrap_or_else(|e| e.status())
        };
        assert!(matches!(parse(b"[1, {\"a\": 2}, []]", 3), Ok(Body::Array(v)) if v.len() == 3));
        assert_eq!(status("[1, 2, 3, 4]"), 413);
        // The item past the limit is never reached if the parse stops there: the tail after it
        // may be anything, and the answer is still 413, not a JSON error.
        assert_eq!(status("[1, 2, 3, 4, this is not json"), 413);
        assert_eq!(status("[1, 2, 3"), 400);
        assert_eq!(status("[1] trailing"), 400);
        assert!(matches!(
            parse(b"{\"type\": \"A\"}", 3),
            Ok(Body::Object(Value::Object(_)))
        ));
        assert!(matches!(parse(b"\"text\"", 3), Ok(Body::Scalar)));
        assert!(matches!(parse(b"null", 3), Ok(Body::Scalar)));
    }
}
