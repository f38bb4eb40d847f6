//! Pipeline counters, written once per request or batch rather than once per event.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::store::StoreError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub accepted_by_source: BTreeMap<String, u64>,
    pub processed: u64,
    pub duplicate: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
}

impl CounterDelta {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Attribute name and amount for every non-zero counter.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .accepted_by_source
            .iter()
            .map(|(source, n)| (format!("accepted.{source}"), *n))
            .collect();
        for (name, n) in [
            ("processed", self.processed),
            ("duplicate", self.duplicate),
            ("failed", self.failed),
            ("rejected", self.rejected),
            ("deadLettered", self.dead_lettered),
        ] {
            out.push((name.to_owned(), n));
        }
        out.retain(|(_, n)| *n > 0);
        out
    }

    pub fn merge(&mut self, other: &CounterDelta) {
        for (source, n) in &other.accepted_by_source {
            *self.accepted_by_source.entry(source.clone()).or_default() += n;
        }
        self.processed += other.processed;
        self.duplicate += other.duplicate;
        self.failed += other.failed;
        self.rejected += other.rejected;
        self.dead_lettered += other.dead_lettered;
    }
}

#[async_trait]
pub trait CounterSink: Send + Sync {
    async fn add(&self, delta: &CounterDelta) -> Result<(), StoreError>;
    /// Sum over all shards, for metrics endpoints and tests.
    async fn totals(&self) -> Result<CounterDelta, StoreError>;
}
