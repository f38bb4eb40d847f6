//! Counting a batch of events fast: hash maps looked up with borrowed keys, so an event costs
//! about ten hash lookups and no allocation, where adding it to a [`Rollup`]'s sorted maps costs
//! ten owned keys and ten tree searches. [`Rollup::absorb`] then merges the batch's counters
//! (a few hundred per hour) into the sorted form the encoding and the stores use.

use chrono::DateTime;
use hashbrown::{Equivalent, HashMap};

use super::facts::{visit_counters, EventFacts};
use super::keys::{AggregateKey, DemographicKey, Dimension, Facet};
use super::totals::Totals;
use super::{Rollup, WindowAggregates};

const SECONDS_PER_HOUR: i64 = 3600;

/// Counters of a batch of events, by UTC hour.
#[derive(Debug, Default)]
pub struct RollupAccumulator {
    /// Keyed by hours since the epoch; named as `YYYY-MM-DDTHH` only when absorbed.
    hours: HashMap<i64, HourCounters>,
}

#[derive(Debug, Default)]
struct HourCounters {
    totals: HashMap<AggregateKey, Totals>,
    demographics: HashMap<DemographicKey, u64>,
}

/// An [`AggregateKey`] borrowed: same fields in the same order, so the derived hashes agree.
#[derive(Hash)]
struct AggregateKeyRef<'a> {
    dimension: Dimension,
    value: &'a str,
    event_type: &'a str,
}

impl Equivalent<AggregateKey> for AggregateKeyRef<'_> {
    fn equivalent(&self, key: &AggregateKey) -> bool {
        self.dimension == key.dimension
            && self.value == key.value
            && self.event_type == key.event_type
    }
}

/// A [`DemographicKey`] borrowed, likewise.
#[derive(Hash)]
struct DemographicKeyRef<'a> {
    source: &'a str,
    facet: Facet,
    band: &'a str,
}

impl Equivalent<DemographicKey> for DemographicKeyRef<'_> {
    fn equivalent(&self, key: &DemographicKey) -> bool {
        self.source == key.source && self.facet == key.facet && self.band == key.band
    }
}

impl RollupAccumulator {
    /// Counts one event into its UTC hour.
    pub fn add(&mut self, facts: &EventFacts<'_>) {
        let hour = facts.timestamp.timestamp().div_euclid(SECONDS_PER_HOUR);
        let counters = self.hours.entry(hour).or_default();
        let revenue = facts.revenue;
        let totals = &mut counters.totals;
        let demographics = &mut counters.demographics;
        visit_counters(
            facts,
            |dimension, value| {
                let key = AggregateKeyRef {
                    dimension,
                    value,
                    event_type: facts.event_type,
                };
                match totals.get_mut(&key) {
                    Some(t) => t.record(revenue),
                    None => totals
                        .entry(AggregateKey::new(dimension, value, facts.event_type))
                        .or_default()
                        .record(revenue),
                }
            },
            |facet, band| {
                let key = DemographicKeyRef {
                    source: facts.source,
                    facet,
                    band,
                };
                let n = match demographics.get_mut(&key) {
                    Some(n) => n,
                    None => demographics
                        .entry(DemographicKey::new(facts.source, facet, band))
                        .or_default(),
                };
                *n = n.saturating_add(1);
            },
        );
    }
}

impl Rollup {
    /// Adds a batch's counters, as if each of its events had been added here.
    pub fn absorb(&mut self, batch: RollupAccumulator) {
        for (hour, counters) in batch.hours {
            // The floor of a valid instant to its hour is valid; nothing is ever skipped here.
            let Some(start) = DateTime::from_timestamp(hour * SECONDS_PER_HOUR, 0) else {
                continue;
            };
            let window = self
                .hours
                .entry(start.format("%Y-%m-%dT%H").to_string())
                .or_default();
            window.absorb(counters);
        }
    }
}

impl WindowAggregates {
    fn absorb(&mut self, counters: HourCounters) {
        for (key, totals) in counters.totals {
            self.totals.entry(key).or_default().merge(&totals);
        }
        for (key, n) in counters.demographics {
            let mine = self.demographics.entry(key).or_default();
            *mine = mine.saturating_add(n);
        }
    }
}
