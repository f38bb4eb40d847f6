//! The compact, deterministic JSON encoding of aggregates: Lambda tumbling-window `state` carries
//! it (≤ 1 MB per shard) and DynamoDB items store it (≤ 400 KB, billed per KB written).
//!
//! A window:
//!
//! ```text
//! {"t": {"<dimension code>": {"<value>": {"<type>": COUNTER}}},
//!  "d": {"<source>": {"<facet code>": {"<band>": n}}}}
//!
//! COUNTER = n                           no event carried revenue
//!         | [n, {"USD": "12.50", ...}]  every counted event carried revenue
//!         | [n, {"USD": "12.50"}, k]    k of the n events carried revenue
//! ```
//!
//! - Dimension codes: `a` all (value `""`), `c` campaignId, `f` funnelStage, `r` regionId,
//!   `s` source, `sc` source+campaignId (revenue-bearing events only, value `"web|c1"`), `sf`
//!   source+funnelStage (value `"web|top"`). Facet codes: `a` age, `c` country,
//!   `f` followers, `g` gender.
//! - Nothing is joined with a separator: each free-form value (campaign, region, country, gender,
//!   the pair) is a JSON object key of its own, so `|`, `%`, quotes or any unicode need no escaping
//!   beyond JSON's own. Nesting also writes each dimension code, value and source once rather than
//!   once per counter.
//! - Amounts are decimal strings exactly as `Decimal` prints them (scale kept: `"1.0000"`,
//!   `"-0.0001"`), never JSON numbers; counts are JSON integers.
//! - A section without counters is left out; the empty window is `{}`. Object keys sort bytewise
//!   at every level, so equal aggregates always encode to the same bytes.
//!
//! A rollup is `{"<YYYY-MM-DDTHH>": WINDOW, ...}`.
//!
//! Decoding is strict about the shape (unknown sections, codes, non-integer counts, amounts that
//! are numbers or not in canonical form are errors), so corrupt state is noticed, not half-read.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{AggregateKey, DemographicKey, Dimension, Facet, Rollup, Totals, WindowAggregates};

const TOTALS: &str = "t";
const DEMOGRAPHICS: &str = "d";

/// Encoded aggregates that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid aggregates encoding at {path:?}: {reason}")]
pub struct DecodeError {
    /// JSON pointer to the offending member.
    pub path: String,
    pub reason: &'static str,
}

/// A single counter does not fit in a chunk of the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a counter needs a {needed}-byte chunk, more than the {max_bytes} bytes allowed")]
pub struct SplitError {
    pub needed: usize,
    pub max_bytes: usize,
}

impl WindowAggregates {
    pub fn to_json(&self) -> Value {
        let mut totals: BTreeMap<&str, BTreeMap<&str, Map<String, Value>>> = BTreeMap::new();
        for (key, counter) in &self.totals {
            totals
                .entry(key.dimension.code())
                .or_default()
                .entry(key.value.as_str())
                .or_default()
                .insert(key.event_type.clone(), counter_json(counter));
        }
        let mut demographics: BTreeMap<&str, BTreeMap<&str, Map<String, Value>>> = BTreeMap::new();
        for (key, n) in &self.demographics {
            demographics
                .entry(key.source.as_str())
                .or_default()
                .entry(key.facet.code())
                .or_default()
                .insert(key.band.clone(), Value::from(*n));
        }
        let mut window = Map::new();
        if !totals.is_empty() {
            window.insert(TOTALS.to_owned(), nested(totals));
        }
        if !demographics.is_empty() {
            window.insert(DEMOGRAPHICS.to_owned(), nested(demographics));
        }
        Value::Object(window)
    }

    pub fn from_json(value: &Value) -> Result<Self, DecodeError> {
        decode_window(value, None)
    }

    /// The compact encoding as a string.
    pub fn encode(&self) -> String {
        self.to_json().to_string()
    }

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|_| DecodeError {
            path: String::new(),
            reason: "not JSON",
        })?;
        Self::from_json(&value)
    }

    /// Bytes of [`encode`](Self::encode).
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }

    /// Splits into chunks that each encode to at most `max_bytes` and merge back to `self`
    /// (chunks hold disjoint counters). Greedy over the counters in key order, with exact sizes:
    /// every chunk but the last is full, in that its successor's first counter would not fit.
    /// No chunks for an empty window; an error when one counter alone is too big.
    pub fn split(self, max_bytes: usize) -> Result<Vec<WindowAggregates>, SplitError> {
        let mut packer = Packer::new(max_bytes);
        for (key, counter) in self.totals {
            let leaf = member_len(&key.event_type, &counter_json(&counter));
            let cost = packer.fit(|p| p.totals_cost(&key, leaf))?;
            packer.size += cost;
            packer.last_totals = Some((key.dimension, key.value.clone()));
            packer.chunk.totals.insert(key, counter);
        }
        for (key, n) in self.demographics {
            let leaf = member_len(&key.band, &Value::from(n));
            let cost = packer.fit(|p| p.demographics_cost(&key, leaf))?;
            packer.size += cost;
            packer.last_demographics = Some((key.source.clone(), key.facet));
            packer.chunk.demographics.insert(key, n);
        }
        Ok(packer.finish())
    }
}

impl Rollup {
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.hours
                .iter()
                .map(|(hour, window)| (hour.clone(), window.to_json()))
                .collect(),
        )
    }

    pub fn from_json(value: &Value) -> Result<Self, DecodeError> {
        let hours = value.as_object().ok_or_else(|| DecodeError {
            path: String::new(),
            reason: "a rollup is an object of hours",
        })?;
        let mut rollup = Rollup::default();
        for (hour, window) in hours {
            if !is_hour_key(hour) {
                return Err(error(&[hour], "an hour is YYYY-MM-DDTHH"));
            }
            rollup
                .hours
                .insert(hour.clone(), decode_window(window, Some(hour))?);
        }
        Ok(rollup)
    }

    /// The compact encoding as a string.
    pub fn encode(&self) -> String {
        self.to_json().to_string()
    }

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|_| DecodeError {
            path: String::new(),
            reason: "not JSON",
        })?;
        Self::from_json(&value)
    }

    /// Bytes of [`encode`](Self::encode).
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

fn counter_json(totals: &Totals) -> Value {
    if totals.revenue.is_empty() && totals.revenue_events == 0 {
        return Value::from(totals.count);
    }
    let revenue: Map<String, Value> = totals
        .revenue
        .iter()
        .map(|(currency, amount)| (currency.clone(), Value::String(amount.to_string())))
        .collect();
    let mut counter = vec![Value::from(totals.count), Value::Object(revenue)];
    if totals.revenue_events != totals.count {
        counter.push(Value::from(totals.revenue_events));
    }
    Value::Array(counter)
}

fn nested(levels: BTreeMap<&str, BTreeMap<&str, Map<String, Value>>>) -> Value {
    Value::Object(
        levels
            .into_iter()
            .map(|(outer, inner)| {
                let inner: Map<String, Value> = inner
                    .into_iter()
                    .map(|(key, leaves)| (key.to_owned(), Value::Object(leaves)))
                    .collect();
                (outer.to_owned(), Value::Object(inner))
            })
            .collect(),
    )
}

fn decode_window(value: &Value, hour: Option<&str>) -> Result<WindowAggregates, DecodeError> {
    let at = |parts: &[&str], reason| {
        let mut path: Vec<&str> = hour.into_iter().collect();
        path.extend_from_slice(parts);
        error(&path, reason)
    };
    let mut window = WindowAggregates::default();
    let sections = value.as_object().ok_or_else(|| at(&[], OBJECT))?;
    for (section, body) in sections {
        let section = section.as_str();
        match section {
            TOTALS => {
                let dimensions = body.as_object().ok_or_else(|| at(&[section], OBJECT))?;
                for (code, values) in dimensions {
                    let dimension = Dimension::from_code(code)
                        .ok_or_else(|| at(&[section, code], "unknown dimension code"))?;
                    let values = values
                        .as_object()
                        .ok_or_else(|| at(&[section, code], OBJECT))?;
                    for (value, types) in values {
                        let types = types
                            .as_object()
                            .ok_or_else(|| at(&[section, code, value], OBJECT))?;
                        for (ty, counter) in types {
                            let totals = decode_counter(counter)
                                .map_err(|reason| at(&[section, code, value, ty], reason))?;
                            window.totals.insert(
                                AggregateKey::new(dimension, value.as_str(), ty.as_str()),
                                totals,
                            );
                        }
                    }
                }
            }
            DEMOGRAPHICS => {
                let sources = body.as_object().ok_or_else(|| at(&[section], OBJECT))?;
                for (source, facets) in sources {
                    let facets = facets
                        .as_object()
                        .ok_or_else(|| at(&[section, source], OBJECT))?;
                    for (code, bands) in facets {
                        let facet = Facet::from_code(code)
                            .ok_or_else(|| at(&[section, source, code], "unknown facet code"))?;
                        let bands = bands
                            .as_object()
                            .ok_or_else(|| at(&[section, source, code], OBJECT))?;
                        for (band, n) in bands {
                            let n = decode_count(n)
                                .map_err(|reason| at(&[section, source, code, band], reason))?;
                            window.demographics.insert(
                                DemographicKey::new(source.as_str(), facet, band.as_str()),
                                n,
                            );
                        }
                    }
                }
            }
            _ => return Err(at(&[section], "unknown section")),
        }
    }
    Ok(window)
}

const OBJECT: &str = "expected an object";

fn decode_counter(value: &Value) -> Result<Totals, &'static str> {
    const SHAPE: &str = "a counter is a count, [count, revenue] or [count, revenue, revenueEvents]";
    let (count, revenue, revenue_events) = match value {
        Value::Number(_) => (value, None, None),
        Value::Array(items) => match items.as_slice() {
            [count] => (count, None, None),
            [count, revenue] => (count, Some(revenue), None),
            [count, revenue, events] => (count, Some(revenue), Some(events)),
            _ => return Err(SHAPE),
        },
        _ => return Err(SHAPE),
    };
    let count = decode_count(count)?;
    let revenue_events = match (revenue, revenue_events) {
        (_, Some(events)) => decode_count(events)?,
        (Some(_), None) => count,
        (None, None) => 0,
    };
    let revenue = match revenue {
        None => BTreeMap::new(),
        Some(Value::Object(amounts)) => amounts
            .iter()
            .map(|(currency, amount)| Ok((currency.clone(), decode_amount(amount)?)))
            .collect::<Result<_, &'static str>>()?,
        Some(_) => return Err("revenue is an object of currency to decimal string"),
    };
    Ok(Totals {
        count,
        revenue_events,
        revenue,
    })
}

fn decode_count(value: &Value) -> Result<u64, &'static str> {
    value.as_u64().ok_or("a count is a whole number from 0")
}

/// Only the text `Decimal` itself prints is accepted, so decoding and re-encoding is the identity.
fn decode_amount(value: &Value) -> Result<Decimal, &'static str> {
    const CANONICAL: &str = "an amount is a canonical decimal string such as \"-12.50\"";
    let text = value.as_str().ok_or(CANONICAL)?;
    let amount = Decimal::from_str(text).map_err(|_| CANONICAL)?;
    if amount.to_string() != text || (amount.is_zero() && amount.is_sign_negative()) {
        return Err(CANONICAL);
    }
    Ok(amount)
}

fn is_hour_key(hour: &str) -> bool {
    NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
        .is_ok_and(|t| t.format("%Y-%m-%dT%H").to_string() == hour)
}

/// A [`DecodeError`] at the JSON pointer made of `parts`.
fn error(parts: &[&str], reason: &'static str) -> DecodeError {
    let path = parts
        .iter()
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect();
    DecodeError { path, reason }
}

/// Encoded bytes of a string, quotes and escapes included.
fn string_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(s.len() + 2, |json| json.len())
}

/// Encoded bytes of the object member `"key":value`.
fn member_len(key: &str, value: &Value) -> usize {
    string_len(key) + 1 + value.to_string().len()
}

/// Encoded bytes of a member opening a nested object, `"key":{}`.
fn opening_len(key: &str) -> usize {
    string_len(key) + 3
}

/// Fills chunks in key order, tracking each chunk's exact encoded size. Because counters arrive
/// sorted, a counter shares its enclosing objects with the chunk's previous counter or opens new
/// ones, and its cost follows from that alone.
struct Packer {
    max_bytes: usize,
    chunks: Vec<WindowAggregates>,
    chunk: WindowAggregates,
    /// Encoded bytes of `chunk`.
    size: usize,
    last_totals: Option<(Dimension, String)>,
    last_demographics: Option<(String, Facet)>,
}

/// `{}`, the empty window.
const EMPTY_WINDOW_LEN: usize = 2;

impl Packer {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            chunks: Vec::new(),
            chunk: WindowAggregates::default(),
            size: EMPTY_WINDOW_LEN,
            last_totals: None,
            last_demographics: None,
        }
    }

    /// The cost of the next counter in this chunk, after starting a new chunk if it does not fit.
    fn fit(&mut self, cost: impl Fn(&Self) -> usize) -> Result<usize, SplitError> {
        let mut needed = self.size + cost(self);
        if needed > self.max_bytes && !self.chunk.is_empty() {
            self.start_chunk();
            needed = self.size + cost(self);
        }
        if needed > self.max_bytes {
            return Err(SplitError {
                needed,
                max_bytes: self.max_bytes,
            });
        }
        Ok(needed - self.size)
    }

    fn totals_cost(&self, key: &AggregateKey, leaf: usize) -> usize {
        let code = key.dimension.code();
        match &self.last_totals {
            Some((dimension, value)) if *dimension == key.dimension && *value == key.value => {
                1 + leaf
            }
            Some((dimension, _)) if *dimension == key.dimension => {
                1 + opening_len(&key.value) + leaf
            }
            Some(_) => 1 + opening_len(code) + opening_len(&key.value) + leaf,
            None => {
                usize::from(!self.chunk.demographics.is_empty())
                    + opening_len(TOTALS)
                    + opening_len(code)
                    + opening_len(&key.value)
                    + leaf
            }
        }
    }

    fn demographics_cost(&self, key: &DemographicKey, leaf: usize) -> usize {
        let code = key.facet.code();
        match &self.last_demographics {
            Some((source, facet)) if *source == key.source && *facet == key.facet => 1 + leaf,
            Some((source, _)) if *source == key.source => 1 + opening_len(code) + leaf,
            Some(_) => 1 + opening_len(&key.source) + opening_len(code) + leaf,
            None => {
                usize::from(!self.chunk.totals.is_empty())
                    + opening_len(DEMOGRAPHICS)
                    + opening_len(&key.source)
                    + opening_len(code)
                    + leaf
            }
        }
    }

    fn start_chunk(&mut self) {
        let full = std::mem::take(&mut self.chunk);
        if !full.is_empty() {
            self.chunks.push(full);
        }
        self.size = EMPTY_WINDOW_LEN;
        self.last_totals = None;
        self.last_demographics = None;
    }

    fn finish(mut self) -> Vec<WindowAggregates> {
        self.start_chunk();
        self.chunks
    }
}
