//! The scoring rules: points per event type, score bounds and decay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::serde_util::decimal_number;
use crate::event::FieldError;

/// The largest magnitude of a rule's points.
pub const MAX_ABS_POINTS: i64 = 1_000_000;

/// The most rules one set holds: the set is one item, read by every scoring run and lead read.
pub const MAX_RULES: usize = 500;

/// The most lead stages a set holds.
pub const MAX_STAGES: usize = 10;

/// Most fraction digits of `percentPerDay`: keeps it exact as a JSON number.
const MAX_PERCENT_SCALE: u32 = 4;

/// Points for one event type. Wire form (docs/api.md, `GET /v1/rules`):
/// `{"eventType": "PAGE_VIEW", "points": 5, "active": true, "maxPerDay": null}`;
/// `maxPerDay` is `null` (or absent on input) when unlimited, `active` defaults to `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub event_type: String,
    pub points: i64,
    #[serde(default = "default_active")]
    pub active: bool,
    #[serde(default)]
    pub max_per_day: Option<u32>,
}

fn default_active() -> bool {
    true
}

impl Rule {
    /// An active rule without a daily cap.
    pub fn new(event_type: impl Into<String>, points: i64) -> Self {
        Self {
            event_type: event_type.into(),
            points,
            active: true,
            max_per_day: None,
        }
    }

    /// Points of an event of this rule's type that is the `seen_today`-th (0-based) event of the
    /// type on its UTC day: 0 when inactive or beyond `maxPerDay`.
    pub fn points_for(&self, seen_today: u32) -> i64 {
        match self.max_per_day {
            _ if !self.active => 0,
            Some(max) if seen_today >= max => 0,
            _ => self.points,
        }
    }
}

/// A named score threshold: a lead is in the highest stage whose `minScore` its score reaches.
/// Wire form `{"name": "MQL", "minScore": 100}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub min_score: i64,
}

impl Stage {
    pub fn new(name: impl Into<String>, min_score: i64) -> Self {
        Self {
            name: name.into(),
            min_score,
        }
    }
}

/// The default stages: `MQL` at 100, `SQL` at 300.
pub fn default_stages() -> Vec<Stage> {
    vec![Stage::new("MQL", 100), Stage::new("SQL", 300)]
}

/// Score decay: for every whole 24 h period past `afterDays` since the lead's last event, the
/// score loses `percentPerDay` percent. Wire form: `{"afterDays": 14, "percentPerDay": 2}`
/// (`percentPerDay` a JSON number; a decimal string is accepted on input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decay {
    pub after_days: u32,
    #[serde(with = "decimal_number")]
    pub percent_per_day: Decimal,
}

impl Decay {
    /// The score as of `now` for a lead whose last event was at `last_activity`.
    ///
    /// `d = max(0, whole_days − afterDays)`, where `whole_days` counts whole 24 h periods from
    /// `last_activity` to `now` (0 when `now` is earlier), and the result is
    /// `round_half_away_from_zero(score × (1 − percentPerDay/100)^d)`.
    ///
    /// The product is computed in `rust_decimal` and **rounded once, at the end** — not day by
    /// day — so the answer depends only on the stored score and the elapsed time, never on how
    /// often decay was materialised, and it is exact for every case a lead can reach (the factor
    /// for `percentPerDay = 2` needs `2·d` decimal places; beyond rust_decimal's 28, intermediate
    /// products are rounded to 28 places, far below anything that can move an integer result).
    /// Decay moves the score toward 0 and is not clamped again; with the usual bounds
    /// (`min ≤ 0 ≤ max`) it stays within them.
    pub fn apply(&self, score: i64, last_activity: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
        let whole_days = (now - last_activity).num_days().max(0);
        let d = whole_days.saturating_sub(i64::from(self.after_days));
        if d <= 0 || score == 0 {
            return score;
        }
        let p = self
            .percent_per_day
            .clamp(Decimal::ZERO, Decimal::ONE_HUNDRED);
        let factor = Decimal::ONE - p / Decimal::ONE_HUNDRED;
        Decimal::from(score)
            .checked_mul(pow(factor, d.unsigned_abs()))
            .map(|v| v.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
            .and_then(|v| v.to_i64())
            .unwrap_or(score)
    }
}

/// `base^exp` for `0 ≤ base ≤ 1` by squaring. Products never exceed 1, so nothing overflows;
/// products smaller than 10^-28 become 0.
fn pow(base: Decimal, mut exp: u64) -> Decimal {
    let mut result = Decimal::ONE;
    let mut square = base;
    while exp > 0 {
        if exp & 1 == 1 {
            result = result.checked_mul(square).unwrap_or(Decimal::ZERO);
        }
        exp >>= 1;
        if exp > 0 {
            square = square.checked_mul(square).unwrap_or(Decimal::ZERO);
        }
        if result.is_zero() {
            break;
        }
    }
    result
}

/// The whole rule set. Serializes as the `GET /v1/rules` body (see [`ScoreRules::to_api_json`])
/// and reads back from it; reading rejects a set that fails [`ScoreRules::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRules {
    /// Keyed by [`Rule::event_type`] (kept equal by [`ScoreRules::set_rule`]).
    pub rules: BTreeMap<String, Rule>,
    pub min: i64,
    pub max: i64,
    pub decay: Decay,
    /// In ascending `minScore` order, names and thresholds unique.
    pub stages: Vec<Stage>,
}

impl Default for ScoreRules {
    fn default() -> Self {
        Self::defaults()
    }
}

impl ScoreRules {
    /// The defaults (docs/api.md): `EMAIL_OPEN` +10, `PAGE_VIEW` +5, `FORM_SUBMISSION` +20, `DEMO_REQUEST`
    /// +50, `PURCHASE` +100, `REFUND` −100, all active and uncapped; score in 0..=1000; decay
    /// after 14 days, 2 % per day.
    pub fn defaults() -> Self {
        let defaults = [
            ("EMAIL_OPEN", 10),
            ("PAGE_VIEW", 5),
            ("FORM_SUBMISSION", 20),
            ("DEMO_REQUEST", 50),
            ("PURCHASE", 100),
            ("REFUND", -100),
        ];
        Self {
            rules: defaults
                .into_iter()
                .map(|(t, p)| (t.to_owned(), Rule::new(t, p)))
                .collect(),
            min: 0,
            max: 1000,
            decay: Decay {
                after_days: 14,
                percent_per_day: Decimal::TWO,
            },
            stages: default_stages(),
        }
    }

    /// The stage a score is in: the highest whose `minScore` it reaches (`None` below them all).
    pub fn stage_of(&self, score: i64) -> Option<&str> {
        self.stages
            .iter()
            .rev()
            .find(|s| score >= s.min_score)
            .map(|s| s.name.as_str())
    }

    /// The rule for an event type, if any (types are case-sensitive).
    pub fn rule(&self, event_type: &str) -> Option<&Rule> {
        self.rules.get(event_type)
    }

    /// Builder form of [`ScoreRules::set_rule`].
    #[must_use]
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.set_rule(rule);
        self
    }

    /// Adds or replaces the rule for `rule.event_type`; returns the one it replaced.
    pub fn set_rule(&mut self, rule: Rule) -> Option<Rule> {
        self.rules.insert(rule.event_type.clone(), rule)
    }

    /// Whether events of `event_type` are counted per UTC day: only types whose rule has a
    /// `maxPerDay` need it, so a lead's daily counts stay as few as the capped rules.
    pub fn caps_daily(&self, event_type: &str) -> bool {
        self.rule(event_type)
            .is_some_and(|rule| rule.max_per_day.is_some())
    }

    /// Points of an event of `event_type` that is the `seen_today`-th (0-based) event of its type
    /// on its UTC day; 0 for types without a rule.
    pub fn points(&self, event_type: &str, seen_today: u32) -> i64 {
        self.rule(event_type)
            .map_or(0, |rule| rule.points_for(seen_today))
    }

    /// `clamp(score + points, min, max)`; never panics, even for `min > max` (then `max` wins).
    pub fn clamp_add(&self, score: i64, points: i64) -> i64 {
        score.saturating_add(points).max(self.min).min(self.max)
    }

    /// Checks one rule, as `PUT /v1/rules/{eventType}` must: `eventType` matches
    /// `^[A-Za-z][A-Za-z0-9_.:-]{0,63}$`, `|points| ≤ 1 000 000`, `maxPerDay ≥ 1` when present.
    /// Paths are JSON pointers into the rule's wire form.
    pub fn validate_rule(rule: &Rule) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !is_event_type(&rule.event_type) {
            errors.push(FieldError::new(
                "/eventType",
                "must start with a letter and contain at most 64 letters, digits, _ . : -",
            ));
        }
        if rule.points.unsigned_abs() > MAX_ABS_POINTS.unsigned_abs() {
            errors.push(FieldError::new(
                "/points",
                "must be between -1000000 and 1000000",
            ));
        }
        if rule.max_per_day == Some(0) {
            errors.push(FieldError::new(
                "/maxPerDay",
                "must be at least 1 when given",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Checks the whole set: every rule (paths `/rules/<index in eventType order>/...`), each
    /// rule stored under its own type, `min ≤ max`, `0 ≤ percentPerDay ≤ 100` with at most 4
    /// decimal places.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.rules.len() > MAX_RULES {
            errors.push(FieldError::new(
                "/rules",
                format!("holds at most {MAX_RULES} rules; deactivate one instead of adding more"),
            ));
        }
        for (i, (key, rule)) in self.rules.iter().enumerate() {
            if let Err(rule_errors) = Self::validate_rule(rule) {
                errors.extend(
                    rule_errors
                        .into_iter()
                        .map(|e| FieldError::new(format!("/rules/{i}{}", e.path), e.message)),
                );
            }
            if *key != rule.event_type {
                errors.push(FieldError::new(
                    format!("/rules/{i}/eventType"),
                    "does not match the key the rule is stored under",
                ));
            }
        }
        if self.min > self.max {
            errors.push(FieldError::new("/score/min", "must not exceed max"));
        }
        let p = self.decay.percent_per_day;
        if p < Decimal::ZERO
            || p > Decimal::ONE_HUNDRED
            || p.normalize().scale() > MAX_PERCENT_SCALE
        {
            errors.push(FieldError::new(
                "/decay/percentPerDay",
                "must be between 0 and 100 with at most 4 decimal places",
            ));
        }
        errors.extend(self.stage_errors());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The stages' problems: at most [`MAX_STAGES`]; names `^[A-Za-z][A-Za-z0-9_-]{0,31}$`,
    /// unique; thresholds unique, ascending, within the score bounds.
    fn stage_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.stages.len() > MAX_STAGES {
            errors.push(FieldError::new(
                "/stages",
                format!("holds at most {MAX_STAGES} stages"),
            ));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if !is_stage_name(&stage.name) {
                errors.push(FieldError::new(
                    format!("/stages/{i}/name"),
                    "must start with a letter and contain at most 32 letters, digits, _ -",
                ));
            } else if self.stages[..i].iter().any(|s| s.name == stage.name) {
                errors.push(FieldError::new(
                    format!("/stages/{i}/name"),
                    "names another stage too",
                ));
            }
            if stage.min_score < self.min || stage.min_score > self.max {
                errors.push(FieldError::new(
                    format!("/stages/{i}/minScore"),
                    "must lie within the score's min and max",
                ));
            }
            if i > 0 && stage.min_score <= self.stages[i - 1].min_score {
                errors.push(FieldError::new(
                    format!("/stages/{i}/minScore"),
                    "must be above the stage before it (stages ascend by minScore)",
                ));
            }
        }
        errors
    }

    /// The `GET /v1/scoring` body: `{"score": {"min", "max"}, "decay", "stages", "version"}`.
    pub fn scoring_json(&self, version: u64) -> Value {
        serde_json::json!({
            "score": {"min": self.min, "max": self.max},
            "decay": self.decay,
            "stages": self.stages,
            "version": version,
        })
    }

    /// The `GET /v1/rules` body: `{"rules": [{"eventType", "points", "active", "maxPerDay"}],
    /// "score": {"min", "max"}, "decay": {"afterDays", "percentPerDay"}}`, rules sorted by
    /// `eventType` (byte order), `maxPerDay` `null` when unlimited.
    pub fn to_api_json(&self) -> Value {
        let mut body = serde_json::to_value(self).unwrap_or(Value::Null);
        // The stages belong to `GET /v1/scoring`; the stored form keeps them with the rules.
        if let Some(fields) = body.as_object_mut() {
            fields.remove("stages");
        }
        body
    }
}

fn is_stage_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest.len() <= 31
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        }
        None => false,
    }
}

fn is_event_type(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest.len() <= 63
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        }
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bounds {
    min: i64,
    max: i64,
}

#[derive(Serialize)]
struct ScoreRulesRef<'a> {
    rules: Vec<&'a Rule>,
    score: Bounds,
    decay: &'a Decay,
    stages: &'a [Stage],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreRulesWire {
    rules: Vec<Rule>,
    score: Bounds,
    decay: Decay,
    /// Absent from sets stored before stages existed: those get the defaults that fit their
    /// bounds.
    #[serde(default)]
    stages: Option<Vec<Stage>>,
}

impl Serialize for ScoreRules {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ScoreRulesRef {
            rules: self.rules.values().collect(),
            score: Bounds {
                min: self.min,
                max: self.max,
            },
            decay: &self.decay,
            stages: &self.stages,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ScoreRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = ScoreRulesWire::deserialize(d)?;
        let mut rules = BTreeMap::new();
        for rule in wire.rules {
            if rules.contains_key(&rule.event_type) {
                return Err(D::Error::custom("two rules for the same eventType"));
            }
            rules.insert(rule.event_type.clone(), rule);
        }
        let set = Self {
            rules,
            min: wire.score.min,
            max: wire.score.max,
            decay: wire.decay,
            stages: wire.stages.unwrap_or_else(|| {
                let (min, max) = (wire.score.min, wire.score.max);
                default_stages()
                    .into_iter()
                    .filter(|s| (min..=max).contains(&s.min_score))
                    .collect()
            }),
        };
        set.validate().map_err(|errors| {
            let list: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect();
            D::Error::custom(format!("invalid scoring rules: {}", list.join("; ")))
        })?;
        Ok(set)
    }
}
