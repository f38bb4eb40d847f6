//! Hourly and daily rollups: the pure aggregation domain the stream consumer accumulates, the
//! analytics table stores and the query API reads.
//!
//! For each UTC window (an hour `YYYY-MM-DDTHH` or a day `YYYY-MM-DD`) a [`WindowAggregates`]
//! holds
//! - per event type, the count and exact revenue per currency ([`Totals`]) overall
//!   ([`Dimension::All`]) and by `campaignId`, `regionId`, `source`, `funnelStage` and the pair
//!   `source`+`funnelStage`, and — for revenue-bearing events only — `source`+`campaignId`. An
//!   event without a value for a dimension is not counted under it (it still is under `all`);
//! - per source, counts of events (of every type) by the acting user's age band, gender, country
//!   and follower band, `unknown` where the event says nothing.
//!
//! A [`Rollup`] is a set of hours, the state one stream window accumulates. Everything here is a
//! commutative monoid: adding events one by one, or merging rollups of any partition of them in
//! any order, gives identical aggregates (and identical encoded bytes), which is what lets a
//! retried or re-split batch converge on the recomputation from stored events.
//!
//! The compact JSON encoding (for Lambda tumbling-window state and for packing into DynamoDB
//! items) is described in [`encoding`]; the query-side reads are in [`query`].

mod accumulator;
pub mod encoding;
mod facts;
mod keys;
pub mod query;
mod totals;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::event::Event;
use facts::visit_counters;

pub use accumulator::RollupAccumulator;
pub use encoding::{DecodeError, SplitError};
pub use facts::{EventFacts, UserFacts};
pub use keys::{
    age_band, country_band, followers_band, gender_band, source_campaign_value,
    source_funnel_value, split_source_pair, AggregateKey, DemographicKey, Dimension, Facet,
    AGE_BANDS, FOLLOWER_BANDS, UNKNOWN,
};
pub use query::{Filter, Metric};
pub use totals::Totals;

/// The aggregates of one UTC window (an hour or a day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowAggregates {
    pub totals: BTreeMap<AggregateKey, Totals>,
    /// Events per `(source, facet, band)`.
    pub demographics: BTreeMap<DemographicKey, u64>,
}

impl WindowAggregates {
    /// Counts one event, whatever its timestamp (the caller picked the window).
    pub fn add(&mut self, event: &Event) {
        let facts = EventFacts::from(event);
        let revenue = facts.revenue;
        let totals = &mut self.totals;
        let demographics = &mut self.demographics;
        visit_counters(
            &facts,
            |dimension, value| {
                totals
                    .entry(AggregateKey::new(dimension, value, facts.event_type))
                    .or_default()
                    .record(revenue);
            },
            |facet, band| {
                let n = demographics
                    .entry(DemographicKey::new(facts.source, facet, band))
                    .or_default();
                *n = n.saturating_add(1);
            },
        );
    }

    pub fn merge(&mut self, other: &WindowAggregates) {
        for (key, totals) in &other.totals {
            match self.totals.get_mut(key) {
                Some(mine) => mine.merge(totals),
                None => {
                    self.totals.insert(key.clone(), totals.clone());
                }
            }
        }
        for (key, n) in &other.demographics {
            match self.demographics.get_mut(key) {
                Some(mine) => *mine = mine.saturating_add(*n),
                None => {
                    self.demographics.insert(key.clone(), *n);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty() && self.demographics.is_empty()
    }

    /// Number of counters (totals plus demographic counts).
    pub fn len(&self) -> usize {
        self.totals.len() + self.demographics.len()
    }
}

/// Aggregates by UTC hour (`YYYY-MM-DDTHH`): what one stream window accumulates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    pub hours: BTreeMap<String, WindowAggregates>,
}

impl Rollup {
    /// Counts one event into its UTC hour.
    pub fn add(&mut self, event: &Event) {
        self.hours
            .entry(event.hour_bucket())
            .or_default()
            .add(event);
    }

    pub fn merge(&mut self, other: &Rollup) {
        for (hour, window) in &other.hours {
            if window.is_empty() {
                continue;
            }
            match self.hours.get_mut(hour) {
                Some(mine) => mine.merge(window),
                None => {
                    self.hours.insert(hour.clone(), window.clone());
                }
            }
        }
    }

    /// The hours summed per UTC day (`YYYY-MM-DD`).
    pub fn days(&self) -> BTreeMap<String, WindowAggregates> {
        let mut days: BTreeMap<String, WindowAggregates> = BTreeMap::new();
        for (hour, window) in &self.hours {
            let day = hour.split_once('T').map_or(hour.as_str(), |(day, _)| day);
            days.entry(day.to_owned()).or_default().merge(window);
        }
        days
    }

    pub fn is_empty(&self) -> bool {
        self.hours.values().all(WindowAggregates::is_empty)
    }

    /// Number of counters over all hours.
    pub fn len(&self) -> usize {
        self.hours.values().map(WindowAggregates::len).sum()
    }
}
