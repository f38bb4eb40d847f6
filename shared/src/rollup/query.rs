//! Reads the query API makes of a window's aggregates (one window, or several merged into one
//! for a range).

use std::collections::BTreeMap;

use super::{source_funnel_value, AggregateKey, Dimension, Facet, Totals, WindowAggregates};
use crate::event::FunnelStage;

/// Which events a bucket counts: all of them, those with one dimension value, or those with a
/// source and a funnel stage (the one combination the API supports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Is(Dimension, String),
    SourceFunnelStage {
        source: String,
        funnel_stage: FunnelStage,
    },
}

impl Filter {
    /// The `(dimension, value)` of the counters that answer this filter.
    fn key(&self) -> (Dimension, String) {
        match self {
            Self::All => (Dimension::All, String::new()),
            Self::Is(dimension, value) => (*dimension, value.clone()),
            Self::SourceFunnelStage {
                source,
                funnel_stage,
            } => (
                Dimension::SourceFunnelStage,
                source_funnel_value(source, *funnel_stage),
            ),
        }
    }
}

/// What `top` ranks by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    Count,
    /// Revenue in one currency; values with no revenue in it are left out.
    Revenue(String),
}

impl WindowAggregates {
    /// Totals per event type of the events the filter selects.
    pub fn buckets_for(&self, filter: &Filter) -> BTreeMap<String, Totals> {
        let (dimension, value) = filter.key();
        self.totals
            .range(AggregateKey::new(dimension, value.as_str(), "")..)
            .take_while(|(key, _)| key.dimension == dimension && key.value == value)
            .map(|(key, totals)| (key.event_type.clone(), totals.clone()))
            .collect()
    }

    /// Values of `dimension` with their totals over `event_type` (or every type), best first by
    /// `metric`, ties by value ascending. The caller truncates to its limit.
    pub fn top(
        &self,
        dimension: Dimension,
        event_type: Option<&str>,
        metric: &Metric,
    ) -> Vec<(String, Totals)> {
        let mut ranked: Vec<(String, Totals)> = self
            .by_value(dimension, event_type)
            .into_iter()
            .filter(|(_, totals)| match metric {
                Metric::Count => true,
                Metric::Revenue(currency) => totals.revenue.contains_key(currency),
            })
            .map(|(value, totals)| (value.to_owned(), totals))
            .collect();
        ranked.sort_by(|(a_value, a), (b_value, b)| {
            let by_metric = match metric {
                Metric::Count => b.count.cmp(&a.count),
                Metric::Revenue(currency) => b.revenue_in(currency).cmp(&a.revenue_in(currency)),
            };
            by_metric.then_with(|| a_value.cmp(b_value))
        });
        ranked
    }

    /// Each value of `dimension` with its totals over `event_type` (or every type).
    pub fn by_value(
        &self,
        dimension: Dimension,
        event_type: Option<&str>,
    ) -> BTreeMap<&str, Totals> {
        let mut by_value: BTreeMap<&str, Totals> = BTreeMap::new();
        let counters = self
            .totals
            .range(AggregateKey::new(dimension, "", "")..)
            .take_while(|(key, _)| key.dimension == dimension)
            .filter(|(key, _)| event_type.is_none_or(|ty| key.event_type == ty));
        for (key, totals) in counters {
            by_value
                .entry(key.value.as_str())
                .or_default()
                .merge(totals);
        }
        by_value
    }

    /// Event counts per band of one facet, for one source or summed over all sources.
    pub fn facet_counts(&self, source: Option<&str>, facet: Facet) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let selected = self
            .demographics
            .iter()
            .filter(|(key, _)| key.facet == facet && source.is_none_or(|s| key.source == s));
        for (key, n) in selected {
            let sum = counts.entry(key.band.clone()).or_default();
            *sum = sum.saturating_add(*n);
        }
        counts
    }
}
