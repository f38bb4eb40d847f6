//! Pipeline counters, written once per request or batch rather than once per event.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::store::StoreError;

/// Sources the accepted counter counts one by one. `source` is chosen by clients, and each
/// source counted is an attribute of the counter items and a series of `/metrics`: the built-in
/// routes' (`api`, `facebook`, `tiktok`), the configured webhook sources and the sources listed
/// here are counted by name, every other under [`CountedSources::OTHER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedSources(BTreeSet<String>);

impl Default for CountedSources {
    fn default() -> Self {
        Self(BTreeSet::from(["web".to_owned()]))
    }
}

impl CountedSources {
    /// The label of every source not counted by name (no source can be spelled so).
    pub const OTHER: &'static str = "(other)";
    /// Sources a list may name.
    pub const MAX: usize = 50;
    const BUILT_IN: [&'static str; 3] = ["api", "facebook", "tiktok"];

    /// Comma-separated source names, each `^[a-z0-9_-]{1,32}$`, at most [`Self::MAX`].
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut sources = BTreeSet::new();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let valid = name.len() <= 32
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                return Err(format!(
                    "{name:?} is not a source (1-32 of a-z, 0-9, _ and -)"
                ));
            }
            sources.insert(name.to_owned());
        }
        if sources.len() > Self::MAX {
            return Err(format!("at most {} sources", Self::MAX));
        }
        Ok(Self(sources))
    }

    /// The label `source` is counted under; `is_webhook` tells whether it is a configured
    /// webhook source.
    pub fn label<'a>(&self, source: &'a str, is_webhook: bool) -> &'a str {
        if is_webhook || Self::BUILT_IN.contains(&source) || self.0.contains(source) {
            source
        } else {
            Self::OTHER
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub accepted_by_source: BTreeMap<String, u64>,
    pub processed: u64,
    /// `processed` and `failed` by the label the events' acceptance was counted under.
    pub processed_by_source: BTreeMap<String, u64>,
    pub failed_by_source: BTreeMap<String, u64>,
    pub duplicate: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    /// Time from acceptance (`receivedAt`) to storage of each processed event.
    pub latency: LatencyHistogram,
}

/// Upper bounds (milliseconds) of the processing-time buckets; the last bucket is unbounded.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
];

/// Processing times as counters a sharded `ADD` can keep: their sum and a count per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub sum_ms: u64,
    /// One count per bound of [`LATENCY_BOUNDS_MS`], then the unbounded bucket.
    pub buckets: [u64; LATENCY_BOUNDS_MS.len() + 1],
}

/// The bucket of a histogram with upper `bounds` (inclusive, ascending) that `ms` falls in;
/// `bounds.len()` is the unbounded one.
pub fn bucket_of(bounds: &[u64], ms: u64) -> usize {
    bounds
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(bounds.len())
}

/// The stored attribute of bucket `i` of a histogram with `bounds`: `<prefix>le<ms>`, or
/// `<prefix>inf` for the unbounded one.
pub fn bucket_attribute(bounds: &[u64], prefix: &str, i: usize) -> String {
    match bounds.get(i) {
        Some(bound) => format!("{prefix}le{bound}"),
        None => format!("{prefix}inf"),
    }
}

/// The bucket whose attribute ([`bucket_attribute`]) is `name`.
pub fn bucket_named(bounds: &[u64], prefix: &str, name: &str) -> Option<usize> {
    (0..=bounds.len()).find(|i| bucket_attribute(bounds, prefix, *i) == name)
}

impl LatencyHistogram {
    pub fn record(&mut self, ms: u64) {
        self.sum_ms += ms;
        self.buckets[bucket_of(&LATENCY_BOUNDS_MS, ms)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn mean_ms(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum_ms as f64 / count as f64)
    }

    /// The upper bound of the bucket that holds the `p`-quantile (0 < p ≤ 1); `None` when
    /// empty, and the last bound when it falls in the unbounded bucket.
    pub fn quantile_bound_ms(&self, p: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (count as f64 * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(900_000));
            }
        }
        Some(900_000)
    }

    /// The counter attribute of bucket `i`.
    fn attribute(i: usize) -> String {
        bucket_attribute(&LATENCY_BOUNDS_MS, "latency.", i)
    }

    /// Adds a stored counter (`latencySumMs`, `latency.le<ms>`, `latency.inf`); false when the
    /// name is not one of them.
    pub fn add_attribute(&mut self, name: &str, value: u64) -> bool {
        if name == "latencySumMs" {
            self.sum_ms += value;
            return true;
        }
        match bucket_named(&LATENCY_BOUNDS_MS, "latency.", name) {
            Some(i) => {
                self.buckets[i] += value;
                true
            }
            None => false,
        }
    }
}

/// Attribute prefixes of the by-source counters (`accepted.` is the accepted counter's).
const ACCEPTED_BY: &str = "accepted.";
const PROCESSED_BY: &str = "processedBy.";
const FAILED_BY: &str = "failedBy.";

impl CounterDelta {
    /// Adds a stored by-source counter (`accepted.<source>`, `processedBy.<source>`,
    /// `failedBy.<source>`); false when the name is none of them.
    pub fn add_by_source(&mut self, name: &str, value: u64) -> bool {
        for (prefix, counts) in [
            (ACCEPTED_BY, &mut self.accepted_by_source),
            (PROCESSED_BY, &mut self.processed_by_source),
            (FAILED_BY, &mut self.failed_by_source),
        ] {
            if let Some(source) = name.strip_prefix(prefix) {
                *counts.entry(source.to_owned()).or_default() += value;
                return true;
            }
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Attribute name and amount for every non-zero counter.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .accepted_by_source
            .iter()
            .map(|(source, n)| (format!("{ACCEPTED_BY}{source}"), *n))
            .collect();
        for (prefix, counts) in [
            (PROCESSED_BY, &self.processed_by_source),
            (FAILED_BY, &self.failed_by_source),
        ] {
            out.extend(counts.iter().map(|(s, n)| (format!("{prefix}{s}"), *n)));
        }
        for (name, n) in [
            ("processed", self.processed),
            ("duplicate", self.duplicate),
            ("failed", self.failed),
            ("rejected", self.rejected),
            ("deadLettered", self.dead_lettered),
            ("latencySumMs", self.latency.sum_ms),
        ] {
            out.push((name.to_owned(), n));
        }
        for (i, n) in self.latency.buckets.iter().enumerate() {
            out.push((LatencyHistogram::attribute(i), *n));
        }
        out.retain(|(_, n)| *n > 0);
        out
    }

    pub fn merge(&mut self, other: &CounterDelta) {
        for (mine, theirs) in [
            (&mut self.accepted_by_source, &other.accepted_by_source),
            (&mut self.processed_by_source, &other.processed_by_source),
            (&mut self.failed_by_source, &other.failed_by_source),
        ] {
            for (source, n) in theirs {
                *mine.entry(source.clone()).or_default() += n;
            }
        }
        self.processed += other.processed;
        self.duplicate += other.duplicate;
        self.failed += other.failed;
        self.rejected += other.rejected;
        self.dead_lettered += other.dead_lettered;
        self.latency.sum_ms += other.latency.sum_ms;
        for (mine, theirs) in self.latency.buckets.iter_mut().zip(&other.latency.buckets) {
            *mine += theirs;
        }
    }
}

#[async_trait]
pub trait CounterSink: Send + Sync {
    async fn add(&self, delta: &CounterDelta) -> Result<(), StoreError>;
    /// Sum over all shards, for metrics endpoints and tests.
    async fn totals(&self) -> Result<CounterDelta, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_buckets_and_read_back_from_their_attributes() {
        let mut delta = CounterDelta::default();
        for ms in [
            40, 100, 101, 900, 4_000, 4_000, 7_000, 7_000, 7_000, 2_000_000,
        ] {
            delta.latency.record(ms);
        }
        assert_eq!(delta.latency.count(), 10);
        assert_eq!(delta.latency.mean_ms(), Some(203_014.1));
        assert_eq!(delta.latency.quantile_bound_ms(0.5), Some(5_000));
        assert_eq!(delta.latency.quantile_bound_ms(0.8), Some(10_000));
        assert_eq!(delta.latency.quantile_bound_ms(0.95), Some(900_000));
        assert_eq!(delta.latency.quantile_bound_ms(0.1), Some(100));
        let mut read_back = LatencyHistogram::default();
        for (name, n) in delta.entries() {
            if name.starts_with("latency") {
                assert!(read_back.add_attribute(&name, n), "{name}");
            }
        }
        assert_eq!(read_back, delta.latency);
        assert!(!read_back.add_attribute("processed", 1));
        assert_eq!(LatencyHistogram::default().quantile_bound_ms(0.95), None);
    }
}
