//! The scheduled side: recompute settled days from the events table, report drift, and replace
//! the day's parts with the recomputation.
//!
//! Reading a day's events is what reconciliation costs (about 0.07 read units an event), so a
//! run reads as little as answers the question: a day reconciled before and given no part since
//! is not read again, and a day that turns out unsettled is read newest hour first, so the run
//! stops at the first event still settling instead of after the day's settled hours.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tracing::{info, warn};

use super::window::chunk_hours;
use super::{AggregateStore, CompactedDay, HourlyEvents, MAX_PART_BYTES};
use crate::event::{Event, Limits};
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
    /// True when the day was not read: reconciled before, and no part written for it since.
    pub unchanged: bool,
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

    /// What the schedule runs: [`Self::reconcile_day`], unless the day is unchanged since its
    /// last reconciliation. Every event the rollup counts for a day after its snapshot's cutoff
    /// lands in a part newer than the snapshot, so a day with a complete snapshot and no part
    /// has had nothing counted since it was last recomputed; the hourly schedule would
    /// otherwise read yesterday in full every hour. What never reached the rollup (a stream
    /// batch sent to the failure queue) is the repair's, which reconciles those days in full.
    pub async fn reconcile_if_changed(
        &self,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport, StoreError> {
        if unchanged_since_reconciled(&self.store.read_day(day).await?) {
            info!(day, "unchanged since its last reconciliation; not read");
            return Ok(ReconcileReport {
                day: day.to_owned(),
                settled: true,
                unchanged: true,
                ..Default::default()
            });
        }
        // The full run reads the day again, after its events, so that parts flushed while the
        // events were read are compared too: one more query, and only for a changed day.
        self.reconcile_day(day, now).await
    }

    /// Recomputes `day` from every one of its events, whatever was reconciled before.
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
        // Newest first: the events still settling are the latest ones.
        for hour in hours_that_can_hold_events(day, now).into_iter().rev() {
            for stored in self.events.processed_in_hour(&hour).await? {
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
        // A day without a complete snapshot gets one, even an empty day: then the next runs
        // find it unchanged instead of reading its hours again.
        let lacks_summary = stored_day
            .compacted
            .as_ref()
            .is_none_or(|c| c.daily.is_empty());
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
        let mut chunks = chunk_hours(&hours).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if chunks.is_empty() {
            // A snapshot is found by its chunks: an empty day's is one empty chunk.
            chunks.push(Rollup::default().encode());
        }
        let compacted = CompactedDay {
            upto_ms: cutoff.timestamp_millis() + WRITE_MARGIN_SECONDS * 1000,
            chunks,
            daily,
        };
        self.store
            .write_compacted(day, &compacted, &stored_day)
            .await?;
        report.written = true;
        Ok(report)
    }
}

/// A complete snapshot (with its daily summary) and nothing written since or left to clean.
fn unchanged_since_reconciled(stored: &super::StoredDay) -> bool {
    stored
        .compacted
        .as_ref()
        .is_some_and(|c| !c.daily.is_empty())
        && stored.parts.is_empty()
        && stored.stale_snapshots.is_empty()
}

/// `day`'s hours (`YYYY-MM-DDTHH`), oldest first, without those that start after the latest
/// timestamp an event can carry by `now` (the API takes none more than a few minutes ahead).
fn hours_that_can_hold_events(day: &str, now: DateTime<Utc>) -> Vec<String> {
    let latest = now + Duration::seconds(Limits::default().max_future_skew_seconds);
    let midnight = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    (0..24)
        .filter(|hour| midnight.is_none_or(|m| m + Duration::hours(*hour) <= latest))
        .map(|hour| format!("{day}T{hour:02}"))
        .collect()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Duration, Utc};

    use super::super::{
        AggregatePart, AggregateStore, CompactedDay, DayTotals, HourlyEvents, ProcessedEvent,
        StoredDay,
    };
    use super::Reconciler;
    use crate::rollup::Rollup;
    use crate::store::StoreError;

    /// The events table by hour, noting every hour read.
    #[derive(Default)]
    struct Hours {
        events: BTreeMap<String, Vec<ProcessedEvent>>,
        reads: Mutex<Vec<String>>,
    }

    impl Hours {
        fn with(mut self, id: &str, timestamp: &str, processed_at: DateTime<Utc>) -> Self {
            let event_json = serde_json::json!({
                "eventId": id, "type": "PAGE_VIEW", "timestamp": timestamp, "source": "api"
            })
            .to_string();
            self.events
                .entry(timestamp[..13].to_owned())
                .or_default()
                .push(ProcessedEvent {
                    event_json,
                    processed_at,
                });
            self
        }

        fn reads(&self) -> Vec<String> {
            self.reads.lock().map(|r| r.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl HourlyEvents for Hours {
        async fn processed_in_hour(&self, hour: &str) -> Result<Vec<ProcessedEvent>, StoreError> {
            if let Ok(mut reads) = self.reads.lock() {
                reads.push(hour.to_owned());
            }
            Ok(self.events.get(hour).cloned().unwrap_or_default())
        }
    }

    /// One day's aggregates, compacted the way the analytics table's adapter does it.
    #[derive(Default)]
    struct Day(Mutex<StoredDay>);

    impl Day {
        fn stored(&self) -> StoredDay {
            self.0.lock().map(|d| d.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl AggregateStore for Day {
        async fn put_parts(&self, parts: &[AggregatePart]) -> Result<(), StoreError> {
            if let Ok(mut day) = self.0.lock() {
                day.parts.extend_from_slice(parts);
            }
            Ok(())
        }
        async fn read_day(&self, _: &str) -> Result<StoredDay, StoreError> {
            Ok(self.stored())
        }
        async fn read_day_totals(&self, _: &str) -> Result<Option<DayTotals>, StoreError> {
            Ok(None)
        }
        async fn write_compacted(
            &self,
            _: &str,
            compacted: &CompactedDay,
            _: &StoredDay,
        ) -> Result<(), StoreError> {
            if let Ok(mut day) = self.0.lock() {
                day.parts.retain(|p| p.window_start_ms > compacted.upto_ms);
                day.compacted = Some(compacted.clone());
                day.stale_snapshots.clear();
            }
            Ok(())
        }
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_day_unchanged_since_its_reconciliation_is_not_read_again(
    ) -> Result<(), Box<dyn Error>> {
        let now = at("2026-12-05T12:00:00Z");
        let hours = Hours::default()
            .with("a", "2026-12-04T02:10:00Z", now - Duration::hours(30))
            .with("b", "2026-12-04T10:00:00Z", now - Duration::hours(20))
            .with("c", "2026-12-04T23:59:00Z", now - Duration::hours(12));
        let reconciler = Reconciler::new(Day::default(), hours, Duration::minutes(20));
        let day = "2026-12-04";

        let first = reconciler.reconcile_if_changed(day, now).await?;
        assert!(
            first.settled && first.written && !first.unchanged,
            "{first:?}"
        );
        assert_eq!((first.events, reconciler.events.reads().len()), (3, 24));

        // The next hourly run: nothing counted for the day since, so nothing is read.
        let next = reconciler
            .reconcile_if_changed(day, now + Duration::hours(1))
            .await?;
        assert!(next.settled && next.unchanged && !next.written, "{next:?}");
        assert_eq!((next.events, reconciler.events.reads().len()), (0, 24));

        // A full run reads it whatever.
        let full = reconciler
            .reconcile_day(day, now + Duration::hours(1))
            .await?;
        assert!(!full.unchanged && full.drift_counters == 0, "{full:?}");
        assert_eq!((full.events, reconciler.events.reads().len()), (3, 48));

        // A part written for the day after the snapshot: the day is read again, and what the
        // part counts that no event backs is drift.
        let mut late = Rollup::default();
        let counted_again = reconciler
            .events
            .events
            .get("2026-12-04T10")
            .and_then(|events| events.first())
            .ok_or("event b")?;
        late.add(&serde_json::from_str(&counted_again.event_json)?);
        let upto = reconciler
            .store
            .stored()
            .compacted
            .ok_or("a snapshot")?
            .upto_ms;
        reconciler
            .store
            .put_parts(&[AggregatePart {
                day: day.into(),
                window_start_ms: upto + 1,
                shard: "s".into(),
                first_sequence: "1".into(),
                chunk: 0,
                body: late.encode(),
            }])
            .await?;
        let changed = reconciler
            .reconcile_if_changed(day, now + Duration::hours(2))
            .await?;
        assert!(!changed.unchanged && changed.written, "{changed:?}");
        assert_eq!(changed.drift_events, 1, "{changed:?}");
        assert_eq!(reconciler.events.reads().len(), 72);
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_settled_day_gets_a_snapshot_and_is_not_read_again(
    ) -> Result<(), Box<dyn Error>> {
        let now = at("2026-12-05T12:00:00Z");
        let reconciler = Reconciler::new(Day::default(), Hours::default(), Duration::minutes(20));
        let first = reconciler.reconcile_if_changed("2026-12-04", now).await?;
        assert!(first.settled && first.written, "{first:?}");
        let snapshot = reconciler.store.stored().compacted.ok_or("a snapshot")?;
        assert_eq!(
            (snapshot.chunks.len(), snapshot.daily.len()),
            (1, 1),
            "an empty snapshot and summary"
        );
        let next = reconciler
            .reconcile_if_changed("2026-12-04", now + Duration::hours(1))
            .await?;
        assert!(next.unchanged, "{next:?}");
        assert_eq!(reconciler.events.reads().len(), 24);
        Ok(())
    }

    #[tokio::test]
    async fn an_unsettled_day_is_read_from_its_newest_hour_only_as_far_as_needed(
    ) -> Result<(), Box<dyn Error>> {
        let now = at("2026-12-05T12:10:00Z");
        let hours = Hours::default()
            .with("old", "2026-12-05T03:00:00Z", now - Duration::hours(9))
            .with("fresh", "2026-12-05T11:58:00Z", now - Duration::minutes(1));
        let reconciler = Reconciler::new(Day::default(), hours, Duration::minutes(20));

        let report = reconciler.reconcile_if_changed("2026-12-05", now).await?;
        assert!(!report.settled && !report.written, "{report:?}");
        // Hour 12 may already hold events (stamped up to 5 minutes ahead); 13 and later cannot.
        assert_eq!(
            reconciler.events.reads(),
            ["2026-12-05T12", "2026-12-05T11"],
            "read newest first, stopping at the unsettled event"
        );
        assert!(reconciler.store.stored().compacted.is_none());
        Ok(())
    }
}
