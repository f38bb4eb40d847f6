//! The scheduled side: recompute settled days from the events table, report drift, and replace
//! the day's parts with the recomputation.

use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use super::window::chunk_hours;
use super::{AggregateStore, CompactedDay, HourlyEvents, MAX_PART_BYTES};
use crate::event::Event;
use crate::rollup::{Rollup, WindowAggregates};
use crate::store::StoreError;

/// Stream records are created a little after `processedAt` is stamped; parts whose window
/// starts after `cutoff + margin` hold only events stored after the recomputation read.
const WRITE_MARGIN_SECONDS: i64 = 60;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileReport {
    pub day: String,
    /// False when an event of the day was processed within the settle period (tried later).
    pub settled: bool,
    pub events: usize,
    /// Counters (aggregate keys and demographic bands, per hour) whose stored value differed.
    pub drift_counters: usize,
    /// Sum over hours of |stored − recomputed| event counts: events miscounted.
    pub drift_events: u64,
    pub written: bool,
}

pub struct Reconciler<A, H> {
    store: A,
    events: H,
    settle: Duration,
}

impl<A: AggregateStore, H: HourlyEvents> Reconciler<A, H> {
    pub fn new(store: A, events: H, settle: Duration) -> Self {
        Self {
            store,
            events,
            settle,
        }
    }

    pub async fn reconcile_day(
        &self,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport {
            day: day.to_owned(),
            ..Default::default()
        };
        let cutoff = now - self.settle;
        let mut expected = Rollup::default();
        for hour in 0..24 {
            for stored in self
                .events
                .processed_in_hour(&format!("{day}T{hour:02}"))
                .await?
            {
                if stored.processed_at > cutoff {
                    info!(day, "day not settled yet; reconcile later");
                    return Ok(report);
                }
                match serde_json::from_str::<Event>(&stored.event_json) {
                    Ok(event) => expected.add(&event),
                    Err(error) => warn!(%error, "stored event unreadable"),
                }
                report.events += 1;
            }
        }
        report.settled = true;

        let stored_day = self.store.read_day(day).await?;
        let current = stored_day
            .merged()
            .map_err(|e| StoreError::Unavailable(format!("stored aggregates unreadable: {e}")))?;
        (report.drift_counters, report.drift_events) = drift(&expected, &current);
        if report.drift_counters > 0 {
            warn!(
                day,
                counters = report.drift_counters,
                events = report.drift_events,
                "rollup drift repaired"
            );
        }
        let covered_parts = stored_day
            .parts
            .iter()
            .any(|p| p.window_start_ms <= cutoff.timestamp_millis() + WRITE_MARGIN_SECONDS * 1000);
        let lacks_summary = stored_day
            .compacted
            .as_ref()
            .is_some_and(|c| c.daily.is_empty());
        if report.drift_counters == 0
            && !covered_parts
            && !lacks_summary
            && stored_day.stale_snapshots.is_empty()
        {
            return Ok(report);
        }
        let hours: Vec<_> = expected.hours.iter().collect();
        let too_big = |e: crate::rollup::SplitError| StoreError::Unavailable(e.to_string());
        let mut daily: Vec<String> = expected
            .days()
            .remove(day)
            .unwrap_or_default()
            .split(MAX_PART_BYTES)
            .map_err(too_big)?
            .iter()
            .map(WindowAggregates::encode)
            .collect();
        if daily.is_empty() {
            // An empty day still gets its (empty) summary, so whole-day reads need no fallback.
            daily.push(WindowAggregates::default().encode());
        }
        let compacted = CompactedDay {
            upto_ms: cutoff.timestamp_millis() + WRITE_MARGIN_SECONDS * 1000,
            chunks: chunk_hours(&hours).map_err(|e| StoreError::Unavailable(e.to_string()))?,
            daily,
        };
        self.store
            .write_compacted(day, &compacted, &stored_day)
            .await?;
        report.written = true;
        Ok(report)
    }
}

/// (counters that differ, |Δ events| over the `all` totals) between two rollups.
pub(crate) fn drift(expected: &Rollup, stored: &Rollup) -> (usize, u64) {
    let mut counters = 0;
    let mut events = 0u64;
    let empty = Default::default();
    let hours: std::collections::BTreeSet<&String> =
        expected.hours.keys().chain(stored.hours.keys()).collect();
    for hour in hours {
        let e = expected.hours.get(hour).unwrap_or(&empty);
        let s = stored.hours.get(hour).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<_> = e.totals.keys().chain(s.totals.keys()).collect();
        for key in keys {
            let (a, b) = (e.totals.get(key), s.totals.get(key));
            if a != b {
                counters += 1;
                if key.dimension == crate::rollup::Dimension::All {
                    events += a.map_or(0, |t| t.count).abs_diff(b.map_or(0, |t| t.count));
                }
            }
        }
        let bands: std::collections::BTreeSet<_> =
            e.demographics.keys().chain(s.demographics.keys()).collect();
        counters += bands
            .into_iter()
            .filter(|k| e.demographics.get(*k) != s.demographics.get(*k))
            .count();
    }
    (counters, events)
}

#[async_trait::async_trait]
impl<A: AggregateStore, H: HourlyEvents> crate::repair::DayReconcile for Reconciler<A, H> {
    async fn reconcile(&self, day: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.reconcile_day(day, now).await?.settled)
    }
}
